//! Measurements of the selection features on loopback backends, printed as tables for the README.
//!
//! ```text
//! cargo run --release --example lab -- slow-start   # a returning backend's share per 100 ms
//! cargo run --release --example lab -- spillover    # site 1 at 1 of 4 healthy: p99 and failures
//! ```
//!
//! Every backend is an in-process HTTP/1.1 server on 127.0.0.1 with a fixed service time and,
//! for the spill-over scenario, a fixed concurrency: beyond `limit` requests in flight it answers
//! `503` at once (a backend sized for its share of the traffic). `/health` answers 200 or 503 as
//! the scenario sets it. Load comes from closed-loop workers through one `sidekick::Client`.

use std::convert::Infallible;
use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sidekick::{Client, EndpointState, Event};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

type BoxError = Box<dyn Error + Send + Sync>;

const HEALTH_PATH: &str = "/health";
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

// ===== lab backends =====

/// What a lab backend knows and counts.
struct Server {
    /// Time taken by every answer.
    service: Duration,
    /// Most requests in flight before it answers 503 (`usize::MAX`: no limit).
    limit: usize,
    inflight: AtomicUsize,
    healthy: AtomicBool,
    served: AtomicU64,
    refused: AtomicU64,
}

/// A lab backend on 127.0.0.1: its state and its accept loop (aborted on drop).
struct Lab {
    server: Arc<Server>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Lab {
    async fn start(service: Duration, limit: usize) -> Result<Lab, BoxError> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let addr = listener.local_addr()?;
        let server = Arc::new(Server {
            service,
            limit,
            inflight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            served: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept(listener, server.clone()));
        Ok(Lab { server, addr, task })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn served(&self) -> u64 {
        self.server.served.load(Ordering::Relaxed)
    }
}

async fn accept(listener: TcpListener, server: Arc<Server>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let server = server.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| answer(server.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Releases a request's slot when its answer is done, however it ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn answer(
    server: Arc<Server>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = |s: StatusCode| -> Result<Response<Full<Bytes>>, Infallible> {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = s;
        Ok(r)
    };
    if req.uri().path() == HEALTH_PATH {
        return if server.healthy.load(Ordering::Relaxed) {
            status(StatusCode::OK)
        } else {
            status(StatusCode::SERVICE_UNAVAILABLE)
        };
    }
    let _slot = Slot(&server.inflight);
    if server.inflight.fetch_add(1, Ordering::Relaxed) >= server.limit {
        server.refused.fetch_add(1, Ordering::Relaxed);
        return status(StatusCode::SERVICE_UNAVAILABLE);
    }
    tokio::time::sleep(server.service).await;
    server.served.fetch_add(1, Ordering::Relaxed);
    status(StatusCode::OK)
}

fn site_of(labs: &[Lab]) -> String {
    labs.iter().map(Lab::url).collect::<Vec<_>>().join(",")
}

/// Wait (at most 5 s) until the balancer sees every endpoint in the state `want` gives it.
async fn settle(c: &Client, want: impl Fn(&str) -> EndpointState) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c
        .balancer()
        .endpoints()
        .iter()
        .all(|e| e.state == want(&e.url))
    {
        if Instant::now() > deadline {
            return Err("the endpoints never reached the scenario's states".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// What the workers saw.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failed: u64,
}

/// `workers` closed-loop workers sending GETs through `c` until `stop`.
async fn drive(c: &Client, workers: usize, stop: Instant) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let (c, tally) = (c.clone(), tally.clone());
        set.spawn(async move {
            // Bounded by time, and by count as a backstop.
            for _ in 0..10_000_000u64 {
                if Instant::now() >= stop {
                    break;
                }
                let t = Instant::now();
                let ok = match c.get("/obj").await {
                    Ok(resp) => {
                        let ok = resp.status() == StatusCode::OK;
                        ok && resp.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                };
                let mut g = tally.lock().unwrap_or_else(|p| p.into_inner());
                if ok {
                    g.latencies.push(t.elapsed());
                } else {
                    g.failed += 1;
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let mut g = tally.lock().unwrap_or_else(|p| p.into_inner());
    std::mem::take(&mut *g)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

// ===== slow start =====

/// 4 backends (1 ms service time), 8 workers; backend 4 is down, then passes its probes again.
/// Its share per 100 ms from its return, with and without a 1 s slow start.
async fn slow_start() -> Result<(), BoxError> {
    const WINDOW: Duration = Duration::from_secs(1);
    const BUCKET: Duration = Duration::from_millis(100);
    const BUCKETS: usize = 15;
    let mut columns = Vec::new();
    for ramp in [Some(WINDOW), None] {
        let mut labs = Vec::new();
        for _ in 0..4 {
            labs.push(Lab::start(Duration::from_millis(1), usize::MAX).await?);
        }
        labs[3].server.healthy.store(false, Ordering::Relaxed);
        let back = labs[3].url();
        let returned: Arc<Mutex<Option<Instant>>> = Arc::default();
        let seen = returned.clone();
        let watched = back.clone();
        let c = Client::builder()
            .site(site_of(&labs))
            .health_path(HEALTH_PATH)
            .health_interval(PROBE_INTERVAL)
            .slow_start(ramp)
            .on_event(move |ev| {
                if let Event::Up { endpoint, .. } = ev {
                    if *endpoint == watched {
                        *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    }
                }
            })
            .build_client()?;
        settle(&c, |u| {
            if u == back {
                EndpointState::Down
            } else {
                EndpointState::Up
            }
        })
        .await?;
        let load = {
            let c = c.clone();
            let stop = Instant::now() + Duration::from_secs(4);
            tokio::spawn(async move { drive(&c, 8, stop).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        labs[3].server.healthy.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(2);
        let t0 = loop {
            if let Some(t) = *returned.lock().unwrap_or_else(|p| p.into_inner()) {
                break t;
            }
            if Instant::now() > deadline {
                return Err("the backend never came back".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let mut shares = Vec::new();
        let mut last = (labs[3].served(), labs.iter().map(Lab::served).sum::<u64>());
        for k in 1..=BUCKETS {
            tokio::time::sleep_until((t0 + BUCKET * k as u32).into()).await;
            let now = (labs[3].served(), labs.iter().map(Lab::served).sum::<u64>());
            let (mine, all) = (now.0 - last.0, now.1 - last.1);
            shares.push((mine as f64 / all.max(1) as f64, all));
            last = now;
        }
        let tally = load.await?;
        if tally.failed > 0 {
            eprintln!("note: {} requests failed", tally.failed);
        }
        columns.push(shares);
    }
    println!("returning backend's share of requests (4 backends, fair share 25 %), 8 workers");
    println!();
    println!("| since its return | slow start 1 s | no slow start | requests in the 100 ms |");
    println!("| --- | --- | --- | --- |");
    let (ramped, plain) = (&columns[0], &columns[1]);
    for (k, (&(on, n), &(off, _))) in ramped.iter().zip(plain).enumerate() {
        println!(
            "| {}–{} ms | {:.1} % | {:.1} % | {n} |",
            k * 100,
            (k + 1) * 100,
            on * 100.0,
            off * 100.0
        );
    }
    Ok(())
}

// ===== graded spill-over =====

/// Two sites of 4 backends, each serving 5 ms answers to at most 4 requests at once (503
/// beyond); site 1 is down to 1 healthy backend. 12 workers for 3 s, all-or-nothing against
/// graded spill-over.
async fn spillover() -> Result<(), BoxError> {
    const SERVICE: Duration = Duration::from_millis(5);
    const LIMIT: usize = 4;
    const WORKERS: usize = 12;
    println!(
        "site 1 at 1 of 4 healthy, site 2 healthy; every backend {} ms per answer, at most {LIMIT} \
         in flight (503 beyond); {WORKERS} workers for 3 s; default retries (3 attempts, budget)",
        SERVICE.as_millis()
    );
    println!();
    println!("| mode | requests | failed | p50 ms | p99 ms | 503s answered | site 1 share |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for graded in [false, true] {
        let mut s1 = Vec::new();
        let mut s2 = Vec::new();
        for _ in 0..4 {
            s1.push(Lab::start(SERVICE, LIMIT).await?);
            s2.push(Lab::start(SERVICE, LIMIT).await?);
        }
        for lab in &s1[1..] {
            lab.server.healthy.store(false, Ordering::Relaxed);
        }
        let down: Vec<String> = s1[1..].iter().map(Lab::url).collect();
        let c = Client::builder()
            .sites([site_of(&s1), site_of(&s2)])
            .health_path(HEALTH_PATH)
            .health_interval(PROBE_INTERVAL)
            .site_spillover(graded)
            .build_client()?;
        settle(&c, |u| {
            if down.iter().any(|d| d == u) {
                EndpointState::Down
            } else {
                EndpointState::Up
            }
        })
        .await?;
        let mut tally = drive(&c, WORKERS, Instant::now() + Duration::from_secs(3)).await;
        tally.latencies.sort_unstable();
        let refused: u64 = s1
            .iter()
            .chain(&s2)
            .map(|l| l.server.refused.load(Ordering::Relaxed))
            .sum();
        let (n1, n2): (u64, u64) = (
            s1.iter().map(Lab::served).sum(),
            s2.iter().map(Lab::served).sum(),
        );
        let total = tally.latencies.len() as u64 + tally.failed;
        println!(
            "| {} | {total} | {} ({:.2} %) | {} | {} | {refused} | {:.1} % |",
            if graded {
                "graded spill-over"
            } else {
                "all-or-nothing"
            },
            tally.failed,
            tally.failed as f64 * 100.0 / total.max(1) as f64,
            ms(percentile(&tally.latencies, 0.50)),
            ms(percentile(&tally.latencies, 0.99)),
            n1 as f64 * 100.0 / (n1 + n2).max(1) as f64,
        );
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let what = std::env::args().nth(1).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match what.as_str() {
        "slow-start" => rt.block_on(slow_start()),
        "spillover" => rt.block_on(spillover()),
        other => {
            Err(format!("unknown scenario `{other}`: run with `slow-start` or `spillover`").into())
        }
    }
}
