//! The Rust figure next to the C and Go ones: one `Balancer::pick()` + `Lease::finish(Success)`
//! pair, in ns, with the same setup as `bench/bench.c` and the Go `BenchmarkPickDone` (one site of
//! 4 endpoints, probes off, default policy, one thread).
//!
//! `cargo build --release --bench pick_finish`, then run the binary with an optional pair count
//! (ffi/test.sh does both); `cargo bench --bench pick_finish` works too.

use std::hint::black_box;
use std::time::Instant;

use sidekick::{Balancer, Outcome};

fn run(balancer: &Balancer, pairs: u64) {
    for _ in 0..pairs {
        let lease = black_box(balancer)
            .pick()
            .expect("an endpoint is available");
        black_box(lease.id());
        lease.finish(Outcome::Success);
    }
}

fn main() {
    // `cargo bench` passes `--bench`: take the first argument that is a number.
    let pairs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000_000)
        .clamp(1, 100_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let balancer = Balancer::builder()
        .site("http://127.0.0.1:{10001...10004}")
        .health_check(false)
        .runtime(rt.handle().clone())
        .build()
        .expect("balancer");
    run(&balancer, pairs / 10); // warm-up
    let start = Instant::now();
    run(&balancer, pairs);
    let ns = start.elapsed().as_nanos() as f64 / pairs as f64;
    println!(
        "Rust pick+finish:          {ns:6.1} ns/pair ({pairs} pairs, 4 endpoints, p2c, 1 thread)"
    );
}
