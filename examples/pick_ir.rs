//! A fixed number of `pick` + `finish` pairs, for counting instructions under callgrind.
//!
//! Wall time on a shared machine moves with the load; an instruction count does not. Run this
//! twice under `valgrind --tool=callgrind` with two pair counts and divide the difference of
//! the totals by the difference of the counts: start-up, the balancer's construction and the
//! warm-up cancel out, leaving the instructions of one pair.
//!
//! ```text
//! cargo build --release --example pick_ir
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/pick_ir 1024 finish 100000
//! ```
//!
//! Arguments: the number of endpoints (one site, default policy, probes off), the finish kind
//! (`finish`: the lease measures the latency; `latency`: the caller gives it), the number of
//! pairs after a warm-up of 10 000.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Duration;

use sidekick::{Balancer, Outcome};

/// Pairs run before the counted ones: first-use costs (thread-local seeding, lazy state).
const WARM_UP: u64 = 10_000;

/// The finish a pair ends with.
#[derive(Clone, Copy)]
enum Finish {
    /// `Lease::finish`: a clock read at the finish.
    Measured,
    /// `Lease::finish_with_latency`: the caller's figure.
    Given,
}

fn pairs(balancer: &Balancer, finish: Finish, count: u64) -> Result<(), sidekick::Error> {
    for _ in 0..count {
        let lease = black_box(balancer).pick()?;
        black_box(lease.id());
        match finish {
            Finish::Measured => lease.finish(Outcome::Success),
            Finish::Given => {
                // A caller's latency is at most the time since the pick (the estimate then
                // relaxes between samples, as it does in service); 1 ns is such a figure.
                lease.finish_with_latency(Outcome::Success, Duration::from_nanos(1))
            }
        }
    }
    Ok(())
}

fn parse(args: &[String]) -> Result<(usize, Finish, u64), String> {
    let [endpoints, finish, count] = args else {
        return Err("usage: pick_ir ENDPOINTS finish|latency PAIRS".into());
    };
    let endpoints: usize = endpoints
        .parse()
        .ok()
        .filter(|n| (1..=60_000).contains(n))
        .ok_or_else(|| format!("ENDPOINTS `{endpoints}`: expected 1..=60000"))?;
    let finish = match finish.as_str() {
        "finish" => Finish::Measured,
        "latency" => Finish::Given,
        other => return Err(format!("finish kind `{other}`: expected finish or latency")),
    };
    let count = count.parse().map_err(|e| format!("PAIRS `{count}`: {e}"))?;
    Ok((endpoints, finish, count))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (endpoints, finish, count) = match parse(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _guard = rt.enter();
    let spec = format!("http://127.0.0.1:{{10001...{}}}", 10_000 + endpoints);
    let built = Balancer::builder().site(spec).health_check(false).build();
    let balancer = match built {
        Ok(b) => b,
        Err(e) => {
            eprintln!("balancer: {e}");
            return ExitCode::FAILURE;
        }
    };
    match pairs(&balancer, finish, WARM_UP).and_then(|()| pairs(&balancer, finish, count)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pick: {e}");
            ExitCode::FAILURE
        }
    }
}
