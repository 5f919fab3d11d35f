//! `sidekick`: the localhost HTTP sidecar load balancer, command-line compatible with MinIO's
//! sidekick. Everything but reading the command line lives in `sidekick::sidecar`.
//!
//! ```text
//! cargo install sidekick-lb --features sidecar     # or `cargo install --path . --features sidecar`
//! sidekick --demo
//! sidekick --health-path /minio/health/ready http://minio{1...4}:9000
//! ```

use std::process::ExitCode;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    unsafe extern "C" {
        /// glibc: give free heap memory back to the system; 1 when some was.
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }

    /// Memory freed by closed connections goes back to the system (see `sidecar::trim`).
    pub fn release() -> bool {
        // SAFETY: malloc_trim takes a plain size, has no preconditions and is thread-safe.
        unsafe { malloc_trim(0) == 1 }
    }
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    sidekick::sidecar::trim::set_release(glibc::release);
    // `args_os`: an argument that is not UTF-8 is a usage error, not a panic.
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "sidekick".into());
    sidekick::sidecar::main_os(&argv0, args)
}
