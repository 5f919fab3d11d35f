//! GETs of a 1 KiB body over loopback: hyper-util's legacy client straight to one backend
//! (baseline) against the same client behind `SidekickLayer`, and against `sidekick::Client`.
//!
//! One in-process hyper HTTP/1.1 server (keep-alive) on 127.0.0.1:0 answers every request with
//! 1 KiB; it is stopped (its task aborted, which drops every connection task) at the end. Server
//! and clients share one multi-thread tokio runtime.
//!
//! Two variants, each measured with criterion for all three clients in the same run:
//! - `sequential`: one request at a time, the whole body read;
//! - `concurrent16`: 16 requests in flight per iteration (`join_all`), as a loaded client does;
//!   criterion reports the time of the 16 (and the throughput in requests/s).
//!
//! Criterion measures one client after the other, so on a noisy machine drift between them easily
//! exceeds the few percent the goal is about. After the criterion groups, an *interleaved* pass
//! alternates short blocks of the clients (rotating their order) and prints, per variant,
//! the median µs/request of each and the median of the per-round ratios
//! `baseline time / sidekick time` — each ratio from blocks measured back to back — and, on Linux,
//! the process CPU time per request (all threads, from `/proc/self/task/*/schedstat`), which
//! preemption by other processes does not inflate, and the calling thread's share of it (the
//! thread that polls the clients' futures, where the layer's own work runs; the rest is the
//! runtime's workers and the kernel work of waking and parking them).
//!
//! Two reference clients, in the interleaved pass only, put the figures in context: the bare
//! client called the way tower calls a service (`clone().oneshot(req)`: what the idiom alone
//! costs), and the *floor*, a minimal layer written here that does only what any balancing
//! layer must do per request — pick an endpoint through the engine, point the URI at it, finish
//! the lease when the head arrives — unboxed, without retries, head-wait bounds or anything
//! else. What the floor costs over the baseline, no balancing layer can avoid.
//!
//! Goal (issue 15): the layer adds ≤ 0.5 µs of CPU per request and keeps ≥ 0.99× the bare
//! client's rate (baseline time / layer time).

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
/// Interleaved pass: rounds per variant, and a wall-clock cap per variant.
const PAIRED_ROUNDS: usize = 300;
const PAIRED_CAP: Duration = Duration::from_secs(12);

type Baseline = HyperClient<HttpConnector, Full<Bytes>>;
type Layered = Sidekick<HyperClient<HttpConnector, RetryBody<Full<Bytes>>>>;

// ===== the floor: the least a balancing layer does per request =====

#[path = "support/floor.rs"]
mod floor;
use floor::Floor;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Baseline,
    Layer,
    Client,
    /// Reference: the bare client called as a tower service (`clone().oneshot(req)`).
    TowerBaseline,
    /// Reference: the minimal balancing layer ([`Floor`]).
    Floor,
}

impl Path {
    /// The clients criterion measures.
    const MAIN: [Path; 3] = [Path::Baseline, Path::Layer, Path::Client];
    /// Every client, in the interleaved pass.
    const ALL: [Path; 5] = [
        Path::Baseline,
        Path::Layer,
        Path::Client,
        Path::TowerBaseline,
        Path::Floor,
    ];

    fn name(self) -> &'static str {
        match self {
            Path::Baseline => "baseline_hyper",
            Path::Layer => "sidekick_layer",
            Path::Client => "sidekick_client",
            Path::TowerBaseline => "ref_hyper_via_tower",
            Path::Floor => "ref_floor_layer",
        }
    }
}

struct Clients {
    /// The baseline's URL and the balanced paths' path, each parsed once: a request's URI is
    /// the caller's cost, the same for every client.
    url: http::Uri,
    path: http::Uri,
    baseline: Baseline,
    layered: Layered,
    client: sidekick::Client,
    tower: Baseline,
    floor: Floor<Baseline>,
}

impl Clients {
    /// Build the clients for the backend at `site` (call inside the runtime).
    fn new(site: &str) -> Clients {
        let url = format!("{site}{PATH}").parse().expect("url");
        let baseline = HyperClient::builder(TokioExecutor::new()).build(connector());
        let balancer = Balancer::builder()
            .site(site)
            .health_check(false)
            .build()
            .expect("balancer");
        let inner: HyperClient<HttpConnector, RetryBody<Full<Bytes>>> =
            HyperClient::builder(TokioExecutor::new()).build(connector());
        let layered = SidekickLayer::new(balancer).layer(inner);
        let client = sidekick::Client::builder()
            .site(site)
            .health_check(false)
            .build_client()
            .expect("sidekick::Client");
        let floor = Floor::new(
            Balancer::builder()
                .site(site)
                .health_check(false)
                .build()
                .expect("balancer"),
            HyperClient::builder(TokioExecutor::new()).build(connector()),
        );
        Clients {
            url,
            path: PATH.parse().expect("path"),
            baseline,
            layered,
            client,
            tower: HyperClient::builder(TokioExecutor::new()).build(connector()),
            floor,
        }
    }

    /// One GET, whole body read; returns the body length.
    async fn one(&self, path: Path) -> usize {
        let resp = match path {
            Path::Baseline => {
                let req = Request::get(self.url.clone())
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                self.baseline.request(req).await.expect("baseline GET")
            }
            Path::Layer => {
                let req = Request::get(self.path.clone())
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                self.layered.clone().oneshot(req).await.expect("layer GET")
            }
            Path::Client => self.client.get(PATH).await.expect("sidekick::Client GET"),
            Path::TowerBaseline => {
                let req = Request::get(self.url.clone())
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                self.tower.clone().oneshot(req).await.expect("tower GET")
            }
            Path::Floor => {
                let req = Request::get(self.path.clone())
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                self.floor.clone().oneshot(req).await.expect("floor GET")
            }
        };
        assert_eq!(resp.status(), StatusCode::OK);
        let len = resp
            .into_body()
            .collect()
            .await
            .expect("read body")
            .to_bytes()
            .len();
        debug_assert_eq!(len, BODY_LEN);
        len
    }

    /// `concurrency` GETs in flight at once (1: a single GET); returns the bytes read.
    async fn batch(&self, path: Path, concurrency: usize) -> usize {
        if concurrency == 1 {
            self.one(path).await
        } else {
            join_all((0..concurrency).map(|_| self.one(path)))
                .await
                .into_iter()
                .sum()
        }
    }
}

// ===== interleaved comparison =====

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// CPU time (ns) of the calling thread (Linux `/proc/thread-self/schedstat`).
fn thread_cpu() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// CPU time (ns) and times scheduled in, summed over this process's threads (Linux
/// `/proc/self/task/*/schedstat`); `None` elsewhere.
fn cpu_snapshot() -> Option<(u64, u64)> {
    let mut ns = 0u64;
    let mut runs = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        let mut it = text
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        ns += it.next().unwrap_or(0);
        let _wait = it.next();
        runs += it.next().unwrap_or(0);
    }
    Some((ns, runs))
}

/// Alternate blocks of `batches` batches of each client, rotating the order every round (and
/// reversing it every other round); print the median µs/request of each and the median
/// per-round ratio baseline / client.
fn interleaved(rt: &Runtime, clients: &Clients, label: &str, concurrency: usize, batches: usize) {
    const N: usize = Path::ALL.len();
    let per_block = (batches * concurrency) as f64;
    let mut us: [Vec<f64>; N] = Default::default();
    let mut cpu: [Vec<f64>; N] = Default::default();
    let mut sw: [Vec<f64>; N] = Default::default();
    let mut own: [Vec<f64>; N] = Default::default();
    let mut ratio: [Vec<f64>; N] = Default::default();
    let start = Instant::now();
    for round in 0..PAIRED_ROUNDS {
        if start.elapsed() > PAIRED_CAP {
            break;
        }
        let mut this = [0f64; N];
        for k in 0..N {
            let k = if round % 2 == 0 { k } else { N - 1 - k };
            let i = (k + round / 2) % N;
            let path = Path::ALL[i];
            let t0 = thread_cpu();
            let c0 = cpu_snapshot();
            let t = Instant::now();
            rt.block_on(async {
                for _ in 0..batches {
                    black_box(clients.batch(path, concurrency).await);
                }
            });
            this[i] = t.elapsed().as_secs_f64() * 1e6 / per_block;
            if let (Some(a), Some(b)) = (c0, cpu_snapshot()) {
                cpu[i].push(b.0.saturating_sub(a.0) as f64 / 1e3 / per_block);
                sw[i].push(b.1.saturating_sub(a.1) as f64 / per_block);
            }
            if let (Some(a), Some(b)) = (t0, thread_cpu()) {
                own[i].push(b.saturating_sub(a) as f64 / 1e3 / per_block);
            }
        }
        for i in 0..N {
            us[i].push(this[i]);
            ratio[i].push(this[0] / this[i]);
        }
    }
    let rounds = ratio[0].len();
    let med = |v: &mut [Vec<f64>; N]| -> [f64; N] {
        let mut out = [f64::NAN; N];
        for (o, v) in out.iter_mut().zip(v.iter_mut()) {
            *o = median(v);
        }
        out
    };
    let (us, cpu, sw, own, ratio) = (
        med(&mut us),
        med(&mut cpu),
        med(&mut sw),
        med(&mut own),
        med(&mut ratio),
    );
    println!(
        "interleaved {label}: {rounds} rounds × {} req/client/round | median µs/req: {} {:.2}, {} {:.2}, {} {:.2} | median ratio baseline/ours: layer {:.3}, client {:.3}",
        per_block as usize,
        Path::Baseline.name(),
        us[0],
        Path::Layer.name(),
        us[1],
        Path::Client.name(),
        us[2],
        ratio[1],
        ratio[2],
    );
    println!(
        "  {label}: process CPU µs/req (all threads, schedstat) {:.2?}, thread sched-ins/req {:.2?}, calling thread CPU µs/req {:.2?} [baseline, layer, client]",
        &cpu[..3],
        &sw[..3],
        &own[..3],
    );
    println!(
        "  {label} references: {} {:.2} µs/req (ratio {:.3}), process CPU {:.2}, calling thread {:.2}; {} {:.2} µs/req (ratio {:.3}), process CPU {:.2}, calling thread {:.2}",
        Path::TowerBaseline.name(),
        us[3],
        ratio[3],
        cpu[3],
        own[3],
        Path::Floor.name(),
        us[4],
        ratio[4],
        cpu[4],
        own[4],
    );
}

// ===== benches =====

fn bench_layer(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    let (addr, server) = rt.block_on(start_server());
    let site = format!("http://{addr}");
    let clients = {
        let _guard = rt.enter();
        Clients::new(&site)
    };

    // Every path works and returns the whole body before anything is timed.
    rt.block_on(async {
        for path in Path::ALL {
            assert_eq!(clients.one(path).await, BODY_LEN, "{path:?}");
        }
    });

    for (group_name, concurrency) in [
        ("get_1KiB/sequential", 1),
        ("get_1KiB/concurrent16", CONCURRENCY),
    ] {
        let mut group = c.benchmark_group(group_name);
        group
            .warm_up_time(Duration::from_millis(1500))
            .measurement_time(Duration::from_secs(5))
            .sample_size(60)
            .throughput(Throughput::Elements(concurrency as u64));
        for path in Path::MAIN {
            group.bench_function(path.name(), |b| {
                b.to_async(&rt)
                    .iter(|| async { black_box(clients.batch(path, concurrency).await) })
            });
        }
        group.finish();
    }

    // Blocks of a few ms: short enough to share the machine's noise, long enough to time.
    interleaved(&rt, &clients, "sequential", 1, 200);
    interleaved(&rt, &clients, "concurrent16", CONCURRENCY, 8);

    // Nothing failed, was retried or leaked on the balanced paths.
    for (name, b) in [
        ("layer", clients.layered.balancer()),
        ("client", clients.client.balancer()),
        ("floor", clients.floor.balancer()),
    ] {
        for e in b.endpoints() {
            assert_eq!(e.failures, 0, "{name}: {e:?}");
            assert_eq!(e.inflight, 0, "{name}: {e:?}");
        }
    }

    server.abort();
    rt.block_on(async {
        let _ = server.await;
    });
    drop(clients);
    drop(rt);
}

criterion_group! {
    name = benches;
    // No HTML plots: they cost seconds per benchmark and the run must stay short.
    config = Criterion::default().without_plots();
    targets = bench_layer
}
criterion_main!(benches);
