//! GETs of a 1 KiB body over loopback: hyper-util's legacy client straight to one backend
//! (baseline) against the same client behind `SidekickLayer`, and against `sidekick::Client`.
//!
//! One in-process hyper HTTP/1.1 server (keep-alive) on 127.0.0.1:0 answers every request with
//! 1 KiB; it is stopped (its task aborted, which drops every connection task) at the end.
//!
//! Two variants, each measured for all three clients in the same run:
//! - `sequential`: one request at a time, the whole body read;
//! - `concurrent16`: 16 requests in flight per iteration (`join_all`), as a loaded client does;
//!   criterion reports the time of the 16 (throughput in requests/s).
//!
//! Goal (issue): baseline time / layer time ≥ 0.97.

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::future::join_all;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sidekick::service::{RetryBody, Sidekick, SidekickLayer};
use sidekick::Balancer;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::task::{JoinHandle, JoinSet};
use tower::{Layer, ServiceExt};

const BODY_LEN: usize = 1024;
const PATH: &str = "/obj";
const CONCURRENCY: usize = 16;
/// The server stops accepting after this many connections (the pools reuse a few dozen).
const MAX_ACCEPTS: usize = 100_000;

type Baseline = HyperClient<HttpConnector, Full<Bytes>>;
type Layered = Sidekick<HyperClient<HttpConnector, RetryBody<Full<Bytes>>>>;

// ===== the backend =====

/// Start the 1 KiB server on 127.0.0.1:0; returns its address and the task to abort.
async fn start_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let body = Bytes::from(vec![b'x'; BODY_LEN]);
    let task = tokio::spawn(async move {
        // Dropped with this task on abort, which aborts every connection task.
        let mut conns = JoinSet::new();
        for _ in 0..MAX_ACCEPTS {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            conns.spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
            // Forget finished connections (bounded by the set's size).
            while conns.try_join_next().is_some() {}
        }
        // Out of accepts: keep serving the open connections until aborted.
        while conns.join_next().await.is_some() {}
    });
    (addr, task)
}

// ===== clients =====

fn connector() -> HttpConnector {
    // Same connector for the baseline and the layer; TCP_NODELAY like sidekick's own connector.
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http
}

fn baseline_client() -> Baseline {
    HyperClient::builder(TokioExecutor::new()).build(connector())
}

fn layered_client(balancer: Balancer) -> Layered {
    let inner: HyperClient<HttpConnector, RetryBody<Full<Bytes>>> =
        HyperClient::builder(TokioExecutor::new()).build(connector());
    SidekickLayer::new(balancer).layer(inner)
}

async fn read_all(resp: Response<Incoming>) -> usize {
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes();
    debug_assert_eq!(bytes.len(), BODY_LEN);
    bytes.len()
}

async fn get_baseline(client: &Baseline, url: &http::Uri) -> usize {
    let req = Request::get(url.clone())
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = client.request(req).await.expect("baseline GET");
    read_all(resp).await
}

async fn get_layered(svc: &Layered) -> usize {
    let req = Request::get(PATH)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = svc.clone().oneshot(req).await.expect("layer GET");
    read_all(resp).await
}

async fn get_client(client: &sidekick::Client) -> usize {
    let resp = client.get(PATH).await.expect("sidekick::Client GET");
    read_all(resp).await
}

// ===== benches =====

fn bench_layer(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    let (addr, server) = rt.block_on(start_server());
    let site = format!("http://{addr}");
    let url: http::Uri = format!("{site}{PATH}").parse().expect("url");

    let (baseline, layered, client) = {
        let _guard = rt.enter();
        let balancer = Balancer::builder()
            .site(&site)
            .health_check(false)
            .build()
            .expect("balancer");
        let client = sidekick::Client::builder()
            .site(&site)
            .health_check(false)
            .build_client()
            .expect("sidekick::Client");
        (baseline_client(), layered_client(balancer), client)
    };

    // Every path works and returns the whole body before anything is timed.
    rt.block_on(async {
        assert_eq!(get_baseline(&baseline, &url).await, BODY_LEN);
        assert_eq!(get_layered(&layered).await, BODY_LEN);
        assert_eq!(get_client(&client).await, BODY_LEN);
    });

    {
        let mut group = c.benchmark_group("get_1KiB/sequential");
        group
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(5))
            .sample_size(60)
            .throughput(Throughput::Elements(1));
        group.bench_function("baseline_hyper", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(get_baseline(&baseline, &url).await) })
        });
        group.bench_function("sidekick_layer", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(get_layered(&layered).await) })
        });
        group.bench_function("sidekick_client", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(get_client(&client).await) })
        });
        group.finish();
    }

    {
        let mut group = c.benchmark_group("get_1KiB/concurrent16");
        group
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(5))
            .sample_size(60)
            .throughput(Throughput::Elements(CONCURRENCY as u64));
        group.bench_function("baseline_hyper", |b| {
            b.to_async(&rt).iter(|| async {
                let n: usize = join_all((0..CONCURRENCY).map(|_| get_baseline(&baseline, &url)))
                    .await
                    .into_iter()
                    .sum();
                black_box(n)
            })
        });
        group.bench_function("sidekick_layer", |b| {
            b.to_async(&rt).iter(|| async {
                let n: usize = join_all((0..CONCURRENCY).map(|_| get_layered(&layered)))
                    .await
                    .into_iter()
                    .sum();
                black_box(n)
            })
        });
        group.bench_function("sidekick_client", |b| {
            b.to_async(&rt).iter(|| async {
                let n: usize = join_all((0..CONCURRENCY).map(|_| get_client(&client)))
                    .await
                    .into_iter()
                    .sum();
                black_box(n)
            })
        });
        group.finish();
    }

    // Nothing failed or was retried on the balanced paths.
    for (name, b) in [("layer", layered.balancer()), ("client", client.balancer())] {
        for e in b.endpoints() {
            assert_eq!(e.failures, 0, "{name}: {e:?}");
            assert_eq!(e.inflight, 0, "{name}: {e:?}");
        }
    }

    server.abort();
    rt.block_on(async {
        let _ = server.await;
    });
    drop((baseline, layered, client));
    drop(rt);
}

criterion_group!(benches, bench_layer);
criterion_main!(benches);
