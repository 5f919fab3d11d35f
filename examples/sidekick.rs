//! `sidekick`: the localhost HTTP sidecar load balancer, command-line compatible with MinIO's
//! sidekick. Everything but reading the command line lives in `sidekick::sidecar`.
//!
//! ```text
//! cargo run --release --features sidecar --example sidekick -- --demo
//! cargo run --release --features sidecar --example sidekick -- --health-path /minio/health/ready http://minio{1...4}:9000
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    // `args_os`: an argument that is not UTF-8 is a usage error, not a panic.
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "sidekick".into());
    sidekick::sidecar::main_os(&argv0, args)
}
