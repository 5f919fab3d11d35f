//! The shared cache's benefit and cost: 100 GETs of one 32 MiB object by 4 concurrent clients
//! (aws-sdk-s3 over sidekick's HTTP client) through the sidecar, with the cache off, then on,
//! in the same run against the same origin. Prints the origin's body bytes and the request
//! latencies (time to the last body byte: p50, p99, mean) of both modes, and their ratios.
//!
//! The origin is an s3s-fs process behind the tests' conditional front (it answers `304` to a
//! matching `If-None-Match`, as S3 and MinIO do, and counts the body bytes it passes on); the
//! cache store is a second s3s-fs process over its own data directory. Everything runs on
//! this machine, on loopback, and the sidecar shares the bench's Tokio runtime: the figures
//! compare the two modes with each other, they are not a capacity test. The cache starts cold,
//! so the cache-on figures include the misses that fill it.
//!
//! Run: `cargo bench --bench cache --features sidecar` (needs s3s-fs, see `tests/support/s3.rs`).

#[path = "../tests/support/cache.rs"]
mod cache_support;
#[path = "../tests/support/s3.rs"]
#[allow(dead_code)]
mod s3;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_support::{object, s3_client, CacheRig, ORIGIN_BUCKET};
use s3::SECRET_KEY;
use sidekick::sidecar::{parse_args, Command, Console, ConsoleOpts, Sidecar};

const OBJECT: usize = 32 << 20;
const CLIENTS: usize = 4;
const REQUESTS: usize = 100;

struct Run {
    origin_bytes: u64,
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Run {
    fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        let i = ((l.len() as f64 - 1.0) * p).round() as usize;
        l[i.min(l.len() - 1)]
    }

    fn mean(&self) -> Duration {
        self.latencies.iter().sum::<Duration>() / self.latencies.len().max(1) as u32
    }
}

async fn sidecar(rig: &CacheRig, cache: bool) -> Sidecar {
    let args = [
        "--address",
        "127.0.0.1:0",
        "--health-path",
        "/health",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([rig.front.url()]);
    let Ok(Command::Run(cfg)) = parse_args(args) else {
        panic!("bad flags");
    };
    let mut cfg = *cfg;
    if cache {
        cfg.cache = Some(rig.cache_config(1 << 20));
    }
    let console = Arc::new(Console::new(
        ConsoleOpts::from_config(&cfg, false),
        Box::new(std::io::sink()),
    ));
    let sc = Sidecar::start(cfg, Some(console))
        .await
        .unwrap_or_else(|e| panic!("sidecar: {e}"));
    sc.balancer()
        .ready(Duration::from_secs(10))
        .await
        .expect("origin up");
    if let Some(c) = sc.cache() {
        assert!(
            c.wait_healthy(Duration::from_secs(10)).await,
            "cache store up"
        );
    }
    sc
}

async fn run(rig: &CacheRig, sc: &Sidecar) -> Run {
    let url = format!("http://{}", sc.local_addr());
    let before = rig.front.body_bytes();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let s3 = s3_client(&url, SECRET_KEY);
        let n = (0..REQUESTS).filter(|i| i % CLIENTS == c).count();
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let out = s3
                    .get_object()
                    .bucket(ORIGIN_BUCKET)
                    .key("bench")
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("GET: {e:?}"));
                let mut body = out.body;
                let mut len = 0usize;
                while let Some(chunk) = body.next().await {
                    len += chunk.expect("body").len();
                }
                assert_eq!(len, OBJECT, "whole body");
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut latencies = Vec::with_capacity(REQUESTS);
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r.expect("client task"));
    }
    Run {
        origin_bytes: rig.front.body_bytes() - before,
        latencies,
        wall: start.elapsed(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let rig = CacheRig::start().await;
        rig.put("bench", object(OBJECT, 42), None).await;

        let off = sidecar(&rig, false).await;
        let r_off = run(&rig, &off).await;
        off.shutdown().await;

        let on = sidecar(&rig, true).await;
        let r_on = run(&rig, &on).await;
        let m = on.cache().map(|c| c.metrics()).unwrap_or_default();
        on.shutdown().await;

        println!(
            "cache bench: {REQUESTS} GETs of a {} MiB object by {CLIENTS} clients",
            OBJECT >> 20
        );
        for (name, r) in [("cache off", &r_off), ("cache on", &r_on)] {
            println!(
                "{name:>9}: origin body bytes {:>11} ({:>6.1} MiB)  latency p50 {:>9}  p99 {:>9}  mean {:>9}  wall {:>9}",
                r.origin_bytes,
                r.origin_bytes as f64 / (1 << 20) as f64,
                ms(r.pct(0.5)),
                ms(r.pct(0.99)),
                ms(r.mean()),
                ms(r.wall),
            );
        }
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
        println!(
            "    ratio (on/off): origin bytes {:.3}  p50 {:.2}  p99 {:.2}  mean {:.2}",
            ratio(r_on.origin_bytes as f64, r_off.origin_bytes as f64),
            ratio(r_on.pct(0.5).as_secs_f64(), r_off.pct(0.5).as_secs_f64()),
            ratio(r_on.pct(0.99).as_secs_f64(), r_off.pct(0.99).as_secs_f64()),
            ratio(r_on.mean().as_secs_f64(), r_off.mean().as_secs_f64()),
        );
        println!(
            "cache counters: hits {} misses {} revalidations {} stores {} store_aborts {} store_errors {} served from cache {} bytes",
            m.hits, m.misses, m.revalidations, m.stores, m.store_aborts, m.store_errors, m.cache_bytes
        );
    });
}
