//! A fixed number of sequential 1 KiB GETs through one client, for counting instructions
//! under callgrind: the tower layer's cost per request, without the machine's noise.
//!
//! The criterion bench (`benches/layer.rs`) measures time and CPU, which move with the load of
//! a shared machine; an instruction count does not. Run this under `valgrind --tool=callgrind`
//! for each client with two request counts and divide the difference of the totals by the
//! difference of the counts: start-up, the in-process server's setup and the warm-up cancel out,
//! leaving the instructions of one request (client, server and kernel-facing code together, so
//! `layer − baseline` is what the layer adds). `floor` is the minimal balancing layer of
//! `benches/support/floor.rs` (pick, URI, finish, nothing else): `floor − baseline` is what no
//! layer over the engine can avoid.
//!
//! ```text
//! cargo build --release --features client --example layer_ir
//! for path in baseline layer client floor; do for n in 2000 4000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!       target/release/examples/layer_ir $path $n 2>&1 | grep 'refs'
//! done; done
//! ```
//!
//! One current-thread runtime runs the server and the client, so the count is deterministic up
//! to the kernel's timing of readiness. A second thread, idle until the end, makes the process
//! multi-threaded for every client alike, as any process with a multi-thread runtime is: the C
//! library takes slower paths (malloc's locking, system calls' cancellation points) in a
//! multi-threaded process, and the balancer's head-wait watchdog thread would otherwise switch
//! them on for the balanced clients only.

use std::convert::Infallible;
use std::process::ExitCode;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sidekick::service::{RetryBody, SidekickLayer};
use sidekick::Balancer;
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};

#[path = "../benches/support/floor.rs"]
mod floor;

/// Requests before the counted ones (connection set-up, first-use costs).
const WARM_UP: usize = 500;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "layer".into());
    let count: usize = match args.next().map(|n| n.parse()) {
        None => 2000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("layer_ir: bad request count: {e}");
            return ExitCode::from(2);
        }
    };
    if !matches!(path.as_str(), "baseline" | "layer" | "client" | "floor") {
        eprintln!("layer_ir: the client is one of baseline, layer, client, floor (got {path:?})");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("layer_ir: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (stop, idle) = std::sync::mpsc::channel::<()>();
    let idle = std::thread::spawn(move || {
        // Returns when `stop` is dropped.
        let _ = idle.recv();
    });
    let result = rt.block_on(run(&path, count));
    drop(stop);
    let _ = idle.join();
    match result {
        Ok(bytes) => {
            println!("{path}: {count} requests, {bytes} body bytes");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("layer_ir: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: &str, count: usize) -> Result<usize, Box<dyn std::error::Error>> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let body = Bytes::from(vec![b'x'; 1024]);
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let site = format!("http://{addr}");
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let mut total = 0;
    match path {
        "baseline" => {
            let client: HyperClient<_, Full<Bytes>> =
                HyperClient::builder(TokioExecutor::new()).build(http);
            let url: http::Uri = format!("{site}/obj").parse()?;
            for _ in 0..WARM_UP + count {
                let req = Request::get(url.clone()).body(Full::new(Bytes::new()))?;
                let resp = client.request(req).await?;
                total += resp.into_body().collect().await?.to_bytes().len();
            }
        }
        "layer" => {
            let balancer = Balancer::builder()
                .site(&site)
                .health_check(false)
                .build()?;
            let inner: HyperClient<_, RetryBody<Full<Bytes>>> =
                HyperClient::builder(TokioExecutor::new()).build(http);
            let svc = SidekickLayer::new(balancer).layer(inner);
            // Parsed once, as the baseline's URL is: a request's URI is the caller's cost.
            let path: http::Uri = "/obj".parse()?;
            for _ in 0..WARM_UP + count {
                let req = Request::get(path.clone()).body(Full::new(Bytes::new()))?;
                let resp = svc.clone().oneshot(req).await?;
                total += resp.into_body().collect().await?.to_bytes().len();
            }
        }
        "floor" => {
            let balancer = Balancer::builder()
                .site(&site)
                .health_check(false)
                .build()?;
            let inner: HyperClient<_, Full<Bytes>> =
                HyperClient::builder(TokioExecutor::new()).build(http);
            let svc = floor::Floor::new(balancer, inner);
            let path: http::Uri = "/obj".parse()?;
            for _ in 0..WARM_UP + count {
                let req = Request::get(path.clone()).body(Full::new(Bytes::new()))?;
                let resp = svc.clone().oneshot(req).await.map_err(|e| e.to_string())?;
                total += resp.into_body().collect().await?.to_bytes().len();
            }
            if let Some(e) = svc.balancer().endpoints().iter().find(|e| e.failures > 0) {
                return Err(format!("the floor's requests failed: {e:?}").into());
            }
        }
        _ => {
            let client = sidekick::Client::builder()
                .site(&site)
                .health_check(false)
                .build_client()?;
            for _ in 0..WARM_UP + count {
                let resp = client.get("/obj").await?;
                total += resp.into_body().collect().await?.to_bytes().len();
            }
        }
    }
    server.abort();
    Ok(total)
}
