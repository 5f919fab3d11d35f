//! `sidekick`: the localhost HTTP sidecar load balancer, command-line compatible with MinIO's
//! sidekick. Everything but reading the command line lives in `sidekick::sidecar`.
//!
//! ```text
//! cargo run --release --features sidecar --example sidekick -- --demo
//! cargo run --release --features sidecar --example sidekick -- --health-path /minio/health/ready http://minio{1...4}:9000
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_else(|| "sidekick".to_string());
    sidekick::sidecar::main(&argv0, args)
}
