//! Hedged requests against a tail: four in-process backends, one of which answers 10 % of its
//! requests after 100 ms; a closed-loop GET load through `sidekick::Client`, with hedging off
//! and on. Prints p50, p99, p99.9 and the extra requests the hedges cost.
//!
//! ```text
//! cargo run --release --example hedge_lab                 # 20,000 requests per row
//! cargo run --release --example hedge_lab -- 50000 16     # requests per row, workers
//! ```
//!
//! Loopback only. Each row builds a fresh client (probes off; power of two choices, then
//! round-robin, which does not steer away from the slow backend), warms it up with 1,000
//! requests, then measures. "extra" counts the requests the backends received
//! beyond one per call (hedges; no retries happen here), "won" the calls a hedge answered.

use std::convert::Infallible;
use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Backends in the site.
const BACKENDS: usize = 4;
/// Every this-many-th request of the slow backend is delayed.
const SLOW_EVERY: u64 = 10;
const SLOW_DELAY: Duration = Duration::from_millis(100);
const WARMUP: usize = 1_000;
/// Upper bounds on the command line's numbers.
const MAX_REQUESTS: usize = 10_000_000;
const MAX_WORKERS: usize = 1_024;

/// An HTTP/1.1 backend on 127.0.0.1:0. Dropping it stops its tasks.
struct Backend {
    url: String,
    hits: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn backend(slow: bool) -> Result<Backend, Box<dyn Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let accept = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let counter = counter.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                            let n = counter.fetch_add(1, Ordering::Relaxed);
                            async move {
                                if slow && n % SLOW_EVERY == SLOW_EVERY - 1 {
                                    tokio::time::sleep(SLOW_DELAY).await;
                                }
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Ok(Backend { url, hits, accept })
}

/// One row of the table.
struct Row {
    policy: sidekick::Policy,
    name: &'static str,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
    extra: f64,
    slow_share: f64,
    sent: u64,
    won: u64,
    refused: u64,
    failed: u64,
}

/// `n` requests over `workers` closed-loop workers; every latency, sorted, and the failures.
async fn run(client: &sidekick::Client, n: usize, workers: usize) -> (Vec<Duration>, u64) {
    let next = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let (c, next) = (client.clone(), next.clone());
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0u64;
            while (next.fetch_add(1, Ordering::Relaxed) as usize) < n {
                let t = Instant::now();
                let ok = match c.get("/obj").await {
                    Ok(resp) => resp.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    lat.push(t.elapsed());
                } else {
                    failed += 1;
                }
            }
            (lat, failed)
        });
    }
    let mut all = Vec::with_capacity(n);
    let mut failed = 0;
    while let Some(done) = set.join_next().await {
        if let Ok((lat, f)) = done {
            all.extend(lat);
            failed += f;
        }
    }
    all.sort_unstable();
    (all, failed)
}

fn at(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

async fn row(
    policy: sidekick::Policy,
    name: &'static str,
    backends: &[Backend],
    n: usize,
    workers: usize,
    tweak: fn(sidekick::Builder) -> sidekick::Builder,
) -> Result<Row, Box<dyn Error>> {
    let site = backends
        .iter()
        .map(|b| b.url.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let builder = sidekick::Client::builder()
        .site(site)
        .health_check(false)
        .policy(policy);
    let client = tweak(builder).build_client()?;
    run(&client, WARMUP, workers).await;
    let hits = |i: usize| backends[i].hits.load(Ordering::Relaxed);
    let before: Vec<u64> = (0..backends.len()).map(hits).collect();
    let stats0 = client.balancer().hedge_stats();
    let (lat, failed) = run(&client, n, workers).await;
    let got: Vec<u64> = (0..backends.len()).map(|i| hits(i) - before[i]).collect();
    let total: u64 = got.iter().sum();
    let stats = client.balancer().hedge_stats();
    Ok(Row {
        policy,
        name,
        p50: at(&lat, 50.0),
        p99: at(&lat, 99.0),
        p999: at(&lat, 99.9),
        max: lat.last().copied().unwrap_or_default(),
        extra: 100.0 * (total as f64 - n as f64) / n as f64,
        slow_share: 100.0 * got[0] as f64 / total.max(1) as f64,
        sent: stats.sent - stats0.sent,
        won: stats.won - stats0.won,
        refused: stats.refused - stats0.refused,
        failed,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn arg(i: usize, default: usize, max: usize) -> Result<usize, Box<dyn Error>> {
    match std::env::args().nth(i) {
        None => Ok(default),
        Some(a) => match a.parse::<usize>() {
            Ok(v) if (1..=max).contains(&v) => Ok(v),
            _ => {
                Err(format!("argument {i}: `{a}` is not a whole number within 1 and {max}").into())
            }
        },
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let n = arg(1, 20_000, MAX_REQUESTS)?;
    let workers = arg(2, 8, MAX_WORKERS)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut backends = Vec::with_capacity(BACKENDS);
        for i in 0..BACKENDS {
            backends.push(backend(i == 0).await?);
        }
        println!(
            "{BACKENDS} backends, the first answers 1 request in {SLOW_EVERY} after {} ms; \
             {n} GETs per row, {workers} workers\n",
            SLOW_DELAY.as_millis()
        );
        type Tweak = fn(sidekick::Builder) -> sidekick::Builder;
        let settings: [(&'static str, Tweak); 4] = [
            ("off (default)", |b| b),
            ("hedge_delay=10ms", |b| b.hedge_delay(Duration::from_millis(10))),
            ("hedge_percentile=95", |b| b.hedge_percentile(95.0)),
            ("hedge_percentile=99, hedge_delay=2ms", |b| {
                b.hedge_percentile(99.0).hedge_delay(Duration::from_millis(2))
            }),
        ];
        let mut rows = Vec::new();
        for policy in [sidekick::Policy::PeakEwma, sidekick::Policy::RoundRobin] {
            for (name, tweak) in settings {
                rows.push(row(policy, name, &backends, n, workers, tweak).await?);
            }
        }
        println!(
            "| policy | hedging | p50 ms | p99 ms | p99.9 ms | max ms | extra requests | slow backend's share | hedges sent / won / refused | failed |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {} | {} | {} | {} | {} | {:.2} % | {:.1} % | {} / {} / {} | {} |",
                r.policy,
                r.name,
                ms(r.p50),
                ms(r.p99),
                ms(r.p999),
                ms(r.max),
                r.extra,
                r.slow_share,
                r.sent,
                r.won,
                r.refused,
                r.failed
            );
        }
        Ok::<(), Box<dyn Error>>(())
    })
}
