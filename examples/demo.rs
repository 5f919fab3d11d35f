//! A self-contained tour of sidekick: two sites of three in-process backends each, one
//! `sidekick::Client` over them, eight workers sending GETs non-stop, and a scenario that kills
//! and restarts backends while the traffic keeps flowing.
//!
//! ```text
//! cargo run --release --example demo
//! RUST_LOG=sidekick=debug cargo run --release --example demo     # the library's own log too
//! ```
//!
//! Loopback only, nothing to install, about 20 s. Phases:
//!
//! 1. steady: every backend up;
//! 2. one backend of site 1 is killed: its share goes to its two neighbours, no request fails;
//! 3. the rest of site 1 is killed: all traffic fails over to site 2;
//! 4. site 1 is restarted on the same ports: traffic comes back to it.
//!
//! After each phase a table shows where the requests went. "failed attempts" are attempts that
//! broke on that backend and were retried on another one, so the caller never saw them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::error::Error;
use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sidekick::{EndpointState, Event};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};

const SITES: usize = 2;
const PER_SITE: usize = 3;
const WORKERS: usize = 8;
const PHASE: Duration = Duration::from_secs(5);
const HEALTH_PATH: &str = "/health";
const HEALTH_INTERVAL: Duration = Duration::from_millis(300);
/// A request that takes longer than this counts as failed (none should come close).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How many error messages are kept per phase, to show what failed.
const KEPT_ERRORS: usize = 5;

type BoxError = Box<dyn Error + Send + Sync>;

// ===== demo backends =====

/// A tiny HTTP/1.1 server on 127.0.0.1: `/health` answers 200, any other path answers 200 with
/// the backend's name as the body. It can be killed (listener closed, open connections dropped)
/// and restarted on the same port.
struct Backend {
    name: Arc<str>,
    site: usize,
    addr: SocketAddr,
    /// The accept loop of the current run; it owns every connection task.
    server: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Backend {
    async fn start(name: String, site: usize) -> io::Result<Backend> {
        let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .map_err(|e| io::Error::new(e.kind(), format!("{name}: cannot listen: {e}")))?;
        let addr = listener.local_addr()?;
        let name: Arc<str> = name.into();
        let task = tokio::spawn(serve(listener, name.clone()));
        Ok(Backend {
            name,
            site,
            addr,
            server: Mutex::new(Some(task)),
        })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn is_running(&self) -> bool {
        lock(&self.server).is_some()
    }

    /// Crash it: the listener closes (new connections are refused) and every open connection is
    /// dropped (requests on them break). Returns once the accept loop is gone.
    async fn kill(&self) {
        let task = lock(&self.server).take();
        if let Some(task) = task {
            task.abort();
            // Aborting drops the accept loop's future, and with it the listener and the JoinSet
            // of connection tasks, which aborts them too.
            let _ = task.await;
        }
    }

    /// Serve again on the same port (retrying the bind for up to 2 s).
    async fn restart(&self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let mut tries = 0;
        let listener = loop {
            match bind(self.addr) {
                Ok(l) => break l,
                Err(_) if tries < 40 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("{}: cannot listen on {} again: {e}", self.name, self.addr),
                    ))
                }
            }
        };
        let task = tokio::spawn(serve(listener, self.name.clone()));
        *lock(&self.server) = Some(task);
        Ok(())
    }
}

async fn serve(listener: TcpListener, name: Arc<str>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let name = name.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| answer(name.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                // E.g. out of file descriptors: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn answer(
    name: Arc<str>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = if req.uri().path() == HEALTH_PATH {
        Bytes::from_static(b"ok")
    } else {
        Bytes::from(name.to_string())
    };
    Ok(Response::new(Full::new(body)))
}

// ===== counting =====

/// Counters shared by the workers and the event callback.
struct Stats {
    /// Per backend: answers it gave.
    answered: Vec<AtomicU64>,
    /// Per backend: attempts that failed on it and were retried on another backend.
    retried: Vec<AtomicU64>,
    /// Requests the caller saw fail.
    failed: AtomicU64,
    /// Retries refused by the retry budget.
    budget_refusals: AtomicU64,
    /// The first error messages of the current phase.
    errors: Mutex<Vec<String>>,
}

/// A snapshot of the counters, for differences between phases.
#[derive(Clone, Default)]
struct Counts {
    answered: Vec<u64>,
    retried: Vec<u64>,
    failed: u64,
    budget_refusals: u64,
}

impl Stats {
    fn new(backends: usize) -> Stats {
        Stats {
            answered: (0..backends).map(|_| AtomicU64::new(0)).collect(),
            retried: (0..backends).map(|_| AtomicU64::new(0)).collect(),
            failed: AtomicU64::new(0),
            budget_refusals: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
        }
    }

    fn fail(&self, msg: impl FnOnce() -> String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = lock(&self.errors);
        if errors.len() < KEPT_ERRORS {
            errors.push(msg());
        }
    }

    fn snapshot(&self) -> Counts {
        let load = |v: &Vec<AtomicU64>| v.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        Counts {
            answered: load(&self.answered),
            retried: load(&self.retried),
            failed: self.failed.load(Ordering::Relaxed),
            budget_refusals: self.budget_refusals.load(Ordering::Relaxed),
        }
    }
}

impl Counts {
    fn since(&self, earlier: &Counts) -> Counts {
        let diff = |a: &[u64], b: &[u64]| a.iter().zip(b).map(|(x, y)| x - y).collect();
        Counts {
            answered: diff(&self.answered, &earlier.answered),
            retried: diff(&self.retried, &earlier.retried),
            failed: self.failed - earlier.failed,
            budget_refusals: self.budget_refusals - earlier.budget_refusals,
        }
    }

    fn total(&self) -> u64 {
        self.answered.iter().sum::<u64>() + self.failed
    }

    fn site_share(&self, backends: &[Backend], site: usize) -> f64 {
        let answered: u64 = self.answered.iter().sum();
        let of_site: u64 = backends
            .iter()
            .zip(&self.answered)
            .filter(|(b, _)| b.site == site)
            .map(|(_, n)| n)
            .sum();
        percent(of_site, answered)
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// An error and its causes on one line.
fn chain(e: &(dyn Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let _ = write!(msg, ": {s}");
        cur = s.source();
    }
    msg
}

// ===== load =====

async fn fetch(client: &sidekick::Client) -> Result<Bytes, BoxError> {
    let resp = client.get("/demo/object").await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!("status {status}").into());
    }
    Ok(body)
}

async fn worker(
    client: sidekick::Client,
    by_name: Arc<HashMap<String, usize>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(REQUEST_TIMEOUT, fetch(&client)).await {
            Ok(Ok(body)) => {
                let name = String::from_utf8_lossy(&body);
                match by_name.get(name.as_ref()) {
                    Some(&i) => {
                        stats.answered[i].fetch_add(1, Ordering::Relaxed);
                    }
                    None => stats.fail(|| format!("answer from an unknown backend: {name:?}")),
                }
            }
            Ok(Err(e)) => stats.fail(|| chain(&*e)),
            Err(_) => stats.fail(|| format!("no answer within {REQUEST_TIMEOUT:?}")),
        }
    }
}

// ===== reporting =====

struct Clock(Instant);

impl Clock {
    fn stamp(&self) -> String {
        format!("[{:>6.2}s]", self.0.elapsed().as_secs_f64())
    }
}

fn print_table(
    title: &str,
    took: Duration,
    counts: &Counts,
    backends: &[Backend],
    balancer: &sidekick::Balancer,
    errors: &[String],
) {
    let states: HashMap<String, EndpointState> = balancer
        .endpoints()
        .into_iter()
        .map(|e| (e.url.trim_end_matches('/').to_string(), e.state))
        .collect();
    let answered: u64 = counts.answered.iter().sum();
    println!();
    println!(
        "── {title} ── {:.1} s, {} requests, {} failed",
        took.as_secs_f64(),
        counts.total(),
        counts.failed
    );
    println!(
        "   {:<10} {:<8} {:<10} {:>9} {:>7} {:>16}",
        "backend", "process", "balancer", "answered", "share", "failed attempts"
    );
    for (i, b) in backends.iter().enumerate() {
        let process = if b.is_running() { "running" } else { "killed" };
        let state = states
            .get(&b.url())
            .map_or("?", |s: &EndpointState| s.as_str());
        println!(
            "   {:<10} {:<8} {:<10} {:>9} {:>6.1}% {:>16}",
            b.name,
            process,
            state,
            counts.answered[i],
            percent(counts.answered[i], answered),
            counts.retried[i]
        );
    }
    if backends
        .iter()
        .zip(&counts.answered)
        .any(|(b, &n)| !b.is_running() && n > 0)
    {
        println!("   (a killed backend's answers were sent before the kill)");
    }
    let sites: Vec<String> = (0..SITES)
        .map(|s| format!("site {}: {:.1}%", s + 1, counts.site_share(backends, s)))
        .collect();
    println!("   {}", sites.join("   "));
    if counts.budget_refusals > 0 {
        println!(
            "   retries refused by the retry budget: {}",
            counts.budget_refusals
        );
    }
    for e in errors {
        println!("   error: {e}");
    }
}

// ===== the scenario =====

#[derive(Clone, Copy)]
enum Step {
    Nothing,
    Kill(&'static [usize]),
    Restart(&'static [usize]),
}

struct Phase {
    title: &'static str,
    step: Step,
}

/// Indexes into the backend list: site 1 is 0..3, site 2 is 3..6.
const PHASES: [Phase; 4] = [
    Phase {
        title: "a) steady, all up",
        step: Step::Nothing,
    },
    Phase {
        title: "b) site1-b1 killed",
        step: Step::Kill(&[0]),
    },
    Phase {
        title: "c) all of site 1 killed",
        step: Step::Kill(&[1, 2]),
    },
    Phase {
        title: "d) site 1 restarted",
        step: Step::Restart(&[0, 1, 2]),
    },
];

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();

    let clock = Arc::new(Clock(Instant::now()));

    // 1. Demo backends.
    let mut backends = Vec::with_capacity(SITES * PER_SITE);
    for s in 0..SITES {
        for b in 0..PER_SITE {
            backends.push(Backend::start(format!("site{}-b{}", s + 1, b + 1), s).await?);
        }
    }
    let backends = Arc::new(backends);
    let by_url: Arc<HashMap<String, usize>> = Arc::new(
        backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.url(), i))
            .collect(),
    );
    let by_name: Arc<HashMap<String, usize>> = Arc::new(
        backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.to_string(), i))
            .collect(),
    );
    println!(
        "sidekick demo: {SITES} sites × {PER_SITE} backends on 127.0.0.1, {WORKERS} workers, \
         phases of {} s",
        PHASE.as_secs()
    );
    let mut site_specs = Vec::with_capacity(SITES);
    for s in 0..SITES {
        let urls: Vec<String> = backends
            .iter()
            .filter(|b| b.site == s)
            .map(Backend::url)
            .collect();
        println!("  site {}: {}", s + 1, urls.join(","));
        site_specs.push(urls.join(","));
    }
    println!();

    // 2. The client, with an event callback that prints state changes and counts retries.
    let stats = Arc::new(Stats::new(backends.len()));
    let on_event = {
        let clock = clock.clone();
        let stats = stats.clone();
        let backends = backends.clone();
        let by_url = by_url.clone();
        move |ev: &Event| {
            let find = |url: &str| by_url.get(url.trim_end_matches('/')).copied();
            let name = |url: &str| {
                find(url).map_or_else(|| url.to_string(), |i| backends[i].name.to_string())
            };
            match ev {
                Event::Up {
                    endpoint, downtime, ..
                } => println!(
                    "{} {:<9} up (out of rotation for {:.2} s)",
                    clock.stamp(),
                    name(endpoint),
                    downtime.as_secs_f64()
                ),
                Event::Down {
                    endpoint, reason, ..
                } => {
                    println!("{} {:<9} down: {reason}", clock.stamp(), name(endpoint))
                }
                Event::Ejected {
                    endpoint, reason, ..
                } => println!(
                    "{} {:<9} ejected ({} failure)",
                    clock.stamp(),
                    name(endpoint),
                    reason.as_str()
                ),
                Event::Returned { endpoint, .. } => {
                    println!(
                        "{} {:<9} returned to rotation",
                        clock.stamp(),
                        name(endpoint)
                    )
                }
                Event::Retry { endpoint, .. } => {
                    if let Some(i) = find(endpoint) {
                        stats.retried[i].fetch_add(1, Ordering::Relaxed);
                    }
                }
                Event::BudgetExhausted { .. } => {
                    stats.budget_refusals.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    };
    let mut builder = sidekick::Client::builder();
    for spec in &site_specs {
        builder = builder.site(spec);
    }
    let client = builder
        .health_path(HEALTH_PATH)
        .health_interval(HEALTH_INTERVAL)
        .on_event(on_event)
        .build_client()?;
    let balancer = client.balancer().clone();
    balancer
        .ready(Duration::from_secs(5))
        .await
        .map_err(|e| format!("no demo backend came up within 5 s: {e}"))?;
    // Give every endpoint its first probe, so the steady phase starts with all six in rotation.
    let all_up = Instant::now() + Duration::from_secs(3);
    while Instant::now() < all_up
        && !balancer
            .endpoints()
            .iter()
            .all(|e| e.state == EndpointState::Up)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 3. The load.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = JoinSet::new();
    for _ in 0..WORKERS {
        workers.spawn(worker(
            client.clone(),
            by_name.clone(),
            stats.clone(),
            stop.clone(),
        ));
    }
    println!("{} load started: {WORKERS} workers", clock.stamp());

    // 4. The scenario.
    let mut results: Vec<PhaseResult> = Vec::with_capacity(PHASES.len());
    let mut before = stats.snapshot();
    for phase in &PHASES {
        let started = Instant::now();
        lock(&stats.errors).clear();
        match phase.step {
            Step::Nothing => {}
            Step::Kill(which) => {
                for &i in which {
                    println!("{} >>> killing {}", clock.stamp(), backends[i].name);
                }
                join_all(which.iter().map(|&i| backends[i].kill())).await;
            }
            Step::Restart(which) => {
                for &i in which {
                    println!("{} >>> restarting {}", clock.stamp(), backends[i].name);
                }
                for r in join_all(which.iter().map(|&i| backends[i].restart())).await {
                    r?;
                }
            }
        }
        let after_step = stats.snapshot();
        tokio::time::sleep(PHASE.saturating_sub(started.elapsed())).await;
        let now = stats.snapshot();
        let counts = now.since(&before);
        let errors = lock(&stats.errors).clone();
        print_table(
            phase.title,
            started.elapsed(),
            &counts,
            &backends,
            &balancer,
            &errors,
        );
        println!();
        results.push(PhaseResult {
            title: phase.title,
            after_step: now.since(&after_step),
            counts,
        });
        before = now;
    }

    // Stop the load and wait for every worker.
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = workers.join_next().await {
        if let Err(e) = joined {
            return Err(format!("a load worker crashed: {e}").into());
        }
    }

    // 5. Summary.
    let total: u64 = results.iter().map(|r| r.counts.total()).sum();
    let failed: u64 = results.iter().map(|r| r.counts.failed).sum();
    let retried: u64 = results
        .iter()
        .map(|r| r.counts.retried.iter().sum::<u64>())
        .sum();
    println!("══ summary ══");
    println!(
        "   {total} requests, {failed} failed ({:.3}%), {retried} attempts retried on another \
         backend",
        percent(failed, total)
    );
    println!(
        "   {:<26} {:>9} {:>7} {:>8} {:>8} {:>9}",
        "phase", "requests", "failed", "site 1", "site 2", "site1-b1"
    );
    for PhaseResult {
        title, counts: c, ..
    } in &results
    {
        println!(
            "   {:<26} {:>9} {:>7} {:>7.1}% {:>7.1}% {:>8.1}%",
            title,
            c.total(),
            c.failed,
            c.site_share(&backends, 0),
            c.site_share(&backends, 1),
            percent(c.answered[0], c.answered.iter().sum())
        );
    }
    let verdict = expectations(&results);
    if verdict.is_empty() {
        println!(
            "   as expected: no failed request, no traffic to dead backends, failover and back"
        );
    } else {
        for v in &verdict {
            println!("   unexpected: {v}");
        }
    }

    // Shut down: the client's probes stop with its last handle, the backends with their kill.
    drop(balancer);
    drop(client);
    for b in backends.iter() {
        b.kill().await;
    }
    Ok(())
}

/// One phase's traffic: the whole phase, and the part after its kill or restart completed.
struct PhaseResult {
    title: &'static str,
    counts: Counts,
    after_step: Counts,
}

/// What the scenario should show; returns the departures from it.
fn expectations(results: &[PhaseResult]) -> Vec<String> {
    let mut out = Vec::new();
    let site1 = |c: &Counts| c.answered[..PER_SITE].iter().sum::<u64>();
    let all = |c: &Counts| c.answered.iter().sum::<u64>();
    for r in results {
        if r.counts.failed > 0 {
            out.push(format!("{}: {} failed requests", r.title, r.counts.failed));
        }
        if r.counts.total() == 0 {
            out.push(format!("{}: no request got through", r.title));
        }
    }
    if let [a, b, c, d] = results {
        if site1(&a.counts) == 0 || site1(&a.counts) != all(&a.counts) {
            out.push(format!("{}: site 1 should take all the traffic", a.title));
        }
        // Once a kill has returned, a killed backend may still be credited with an answer it sent
        // just before: at most one per worker.
        let in_flight = WORKERS as u64;
        if b.after_step.answered[0] > in_flight {
            out.push(format!("{}: the killed site1-b1 kept answering", b.title));
        }
        if site1(&c.after_step) > in_flight {
            out.push(format!("{}: the killed site 1 kept answering", c.title));
        }
        if site1(&d.counts) * 2 < all(&d.counts) {
            out.push(format!("{}: traffic did not come back to site 1", d.title));
        }
    }
    out
}
