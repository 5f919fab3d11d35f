//! A reqwest client spread over three backends with `SidekickMiddleware`, under reqwest-retry;
//! the backend in use is stopped halfway and no request fails.
//!
//! ```text
//! cargo run --example reqwest --features reqwest
//! ```
//!
//! Self-contained: three small HTTP servers on 127.0.0.1 answer with their name and the `Host`
//! they received. The client addresses a virtual base URL, `http://api.cluster.local`; the
//! middleware sends each request to a backend and keeps that `Host` (the default
//! `HostPolicy::Keep`).

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::RetryTransientMiddleware;
use sidekick::reqwest::SidekickMiddleware;
use sidekick::Balancer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Serve `name` on 127.0.0.1:0 until the returned task is aborted.
async fn backend(name: &'static str) -> Result<(SocketAddr, JoinHandle<()>), std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let host = req
                        .headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    let body = format!("{name} (Host: {host}) {}", req.uri().path());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut servers = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        servers.push(backend(name).await?);
    }
    let site = servers
        .iter()
        .map(|(addr, _)| format!("http://{addr}"))
        .collect::<Vec<_>>()
        .join(",");

    // Probes are off (these backends have no health endpoint): passive ejection alone takes a
    // dead backend out after its first refused connection.
    let balancer = Balancer::builder()
        .site(&site)
        .health_check(false)
        .build()?;
    let retry = ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(10), Duration::from_millis(200))
        .build_with_max_retries(3);
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        // Outside: each retry goes through the balancer again and picks again.
        .with(RetryTransientMiddleware::new_with_policy(retry))
        .with(SidekickMiddleware::new(balancer.clone()))
        .build();

    let names = ["alpha", "beta", "gamma"];
    let mut failed = 0;
    let mut last = "";
    for i in 0..60 {
        if i == 30 {
            // Stop the backend that answered last: it is in the balancer's favour.
            if let Some(n) = names.iter().position(|n| *n == last) {
                let (addr, task) = &servers[n];
                task.abort();
                println!("-- stopped {last} ({addr}) --");
            }
        }
        let url = format!("http://api.cluster.local/items/{i}");
        match client.get(&url).send().await {
            Ok(resp) => {
                let text = resp.text().await?;
                last = names
                    .iter()
                    .copied()
                    .find(|n| text.starts_with(n))
                    .unwrap_or("");
                if i % 10 == 0 || (30..33).contains(&i) {
                    println!("GET {url} -> {text}");
                }
            }
            Err(e) => {
                failed += 1;
                println!("GET {url} failed: {e}");
            }
        }
    }
    println!("\nfailed requests: {failed}");
    for e in balancer.endpoints() {
        println!(
            "{:<24} {:>8} requests: {:>3}  failures: {}",
            e.url,
            e.state.as_str(),
            e.requests,
            e.failures
        );
    }
    for (_, task) in servers {
        task.abort();
    }
    Ok(())
}
