//! Cost of one `Balancer::pick()` + `Lease::finish(Outcome::Success)` pair.
//!
//! Health probes are off, so every endpoint is up from the start and nothing is ever contacted:
//! the endpoints (`http://127.0.0.1:10001...`) are only addresses. A pick sends no request.
//!
//! Cases:
//! - default policy (P2C peak-EWMA) with 4, 64 and 1024 endpoints in one site, on 1 thread and on
//!   2 threads hammering the same balancer;
//! - `Policy::Least` and `Policy::RoundRobin` with 4 and 1024 endpoints, 1 thread, for comparison.
//!
//! The 2-thread figure is the time of one pair *as seen by one thread* while the other thread does
//! the same thing (wall time of N pairs per thread / N). The aggregate throughput of the two
//! threads is twice the reciprocal.
//!
//! Goal (issue): ≤ 50 ns per pair at 4 endpoints, ≤ 100 ns at 1024, default policy.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sidekick::{Balancer, Outcome, Policy};
use tokio::runtime::Runtime;

/// Longest a thread waits for its partner at the start line before going on alone.
const RENDEZVOUS_LIMIT: Duration = Duration::from_secs(5);

/// One site of `n` endpoints on consecutive loopback ports starting at 10001.
fn site_spec(n: usize) -> String {
    format!("http://127.0.0.1:{{10001...{}}}", 10_000 + n)
}

fn build(rt: &Runtime, n: usize, policy: Policy) -> Balancer {
    let _guard = rt.enter();
    let balancer = Balancer::builder()
        .site(site_spec(n))
        .health_check(false)
        .policy(policy)
        .build()
        .expect("balancer builds");
    let eps = balancer.endpoints();
    assert_eq!(eps.len(), n, "every endpoint of the site is listed");
    assert!(
        eps.iter().all(|e| e.state == sidekick::EndpointState::Up),
        "with probes off every endpoint starts up"
    );
    balancer
}

/// The measured operation.
#[inline(always)]
fn pick_finish(balancer: &Balancer) {
    let lease = balancer.pick().expect("an endpoint is available");
    black_box(lease.id());
    lease.finish(Outcome::Success);
}

fn run_pairs(balancer: &Balancer, iters: u64) {
    for _ in 0..iters {
        pick_finish(black_box(balancer));
    }
}

/// Spin (bounded by [`RENDEZVOUS_LIMIT`]) until `parties` threads have arrived at `gate` for this
/// `round`. Spinning instead of parking keeps the start skew of the two threads small.
fn rendezvous(gate: &AtomicUsize, round: usize, parties: usize) {
    gate.fetch_add(1, Ordering::AcqRel);
    let target = round * parties;
    let deadline = Instant::now() + RENDEZVOUS_LIMIT;
    while gate.load(Ordering::Acquire) < target {
        if Instant::now() >= deadline {
            break;
        }
        std::hint::spin_loop();
    }
}

/// A second thread that runs `iters` pairs on request, starting together with the caller.
struct Partner {
    jobs: Option<mpsc::Sender<(usize, u64)>>,
    done: mpsc::Receiver<Duration>,
    gate: Arc<AtomicUsize>,
    round: usize,
    handle: Option<thread::JoinHandle<()>>,
}

impl Partner {
    fn start(balancer: Balancer) -> Partner {
        let (jobs_tx, jobs_rx) = mpsc::channel::<(usize, u64)>();
        let (done_tx, done_rx) = mpsc::channel::<Duration>();
        let gate = Arc::new(AtomicUsize::new(0));
        let g = gate.clone();
        let handle = thread::Builder::new()
            .name("pick-partner".into())
            .spawn(move || {
                // Ends when the sender is dropped (see `Drop`).
                while let Ok((round, iters)) = jobs_rx.recv() {
                    rendezvous(&g, round, 2);
                    let t = Instant::now();
                    run_pairs(&balancer, iters);
                    if done_tx.send(t.elapsed()).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn partner thread");
        Partner {
            jobs: Some(jobs_tx),
            done: done_rx,
            gate,
            round: 0,
            handle: Some(handle),
        }
    }

    /// Run `iters` pairs here and `iters` pairs on the partner at the same time; the mean of the
    /// two threads' own wall times.
    fn run(&mut self, balancer: &Balancer, iters: u64) -> Duration {
        self.round += 1;
        self.jobs
            .as_ref()
            .expect("partner running")
            .send((self.round, iters))
            .expect("partner alive");
        rendezvous(&self.gate, self.round, 2);
        let t = Instant::now();
        run_pairs(balancer, iters);
        let mine = t.elapsed();
        let theirs = self.done.recv().expect("partner reports");
        (mine + theirs) / 2
    }
}

impl Drop for Partner {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn assert_idle(balancer: &Balancer) {
    assert!(
        balancer.endpoints().iter().all(|e| e.inflight == 0),
        "every lease was finished"
    );
}

fn bench_pick(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    let mut group = c.benchmark_group("pick_finish");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(100);

    // Default policy, 1 and 2 threads.
    for n in [4usize, 64, 1024] {
        let balancer = build(&rt, n, Policy::default());
        group.bench_with_input(BenchmarkId::new("p2c/1thread", n), &n, |b, _| {
            b.iter(|| pick_finish(&balancer))
        });
        assert_idle(&balancer);

        let mut partner = Partner::start(balancer.clone());
        group.bench_with_input(BenchmarkId::new("p2c/2threads", n), &n, |b, _| {
            b.iter_custom(|iters| partner.run(&balancer, iters))
        });
        drop(partner);
        assert_idle(&balancer);
    }

    // The bindings' shape: the caller measures the latency (no clock read at finish).
    for n in [4usize, 1024] {
        let balancer = build(&rt, n, Policy::default());
        group.bench_with_input(
            BenchmarkId::new("p2c_caller_latency/1thread", n),
            &n,
            |b, _| {
                b.iter(|| {
                    let lease = black_box(&balancer).pick().expect("pick");
                    // A caller's latency is at most the time since the pick (the estimate then
                    // relaxes between samples, as it does in service); 1 ns is such a figure.
                    lease.finish_with_latency(Outcome::Success, Duration::from_nanos(1));
                })
            },
        );
        assert_idle(&balancer);
    }

    // Other policies, 1 thread.
    for (name, policy) in [
        ("least/1thread", Policy::Least),
        ("round_robin/1thread", Policy::RoundRobin),
    ] {
        for n in [4usize, 1024] {
            let balancer = build(&rt, n, policy);
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| pick_finish(&balancer))
            });
            assert_idle(&balancer);
        }
    }

    group.finish();
    drop(rt);
}

criterion_group! {
    name = benches;
    // No HTML plots: they cost seconds per benchmark and the run must stay short.
    config = Criterion::default().without_plots();
    targets = bench_pick
}
criterion_main!(benches);
