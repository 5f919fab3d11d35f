//! Time for the request path, read cheaply.
//!
//! A pick needs the time only to let latency estimates decay (a time constant of seconds), so it
//! reads the kernel's coarse monotonic clock (a few nanoseconds, millisecond resolution). A latency
//! is measured with the precise monotonic clock: one read when the lease is taken, one when it is
//! finished. Both are `CLOCK_MONOTONIC`, so their readings compare.
//!
//! [`Clock::Tokio`] follows tokio's clock instead, so that `tokio::time::pause()` drives the
//! balancer too (tests and simulations; see `Builder::tokio_clock`).

/// Where the balancer reads the time. Readings are nanoseconds on one monotonic scale.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Clock {
    /// The system's monotonic clock.
    System,
    /// tokio's clock, from this origin.
    Tokio(tokio::time::Instant),
}

fn read(id: rustix::time::ClockId) -> u64 {
    let ts = rustix::time::clock_gettime(id);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

impl Clock {
    /// Precise now, for latencies.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self {
            Clock::System => read(rustix::time::ClockId::Monotonic),
            Clock::Tokio(origin) => tokio::time::Instant::now()
                .saturating_duration_since(*origin)
                .as_nanos() as u64,
        }
    }

    /// Now to within a few milliseconds, cheaper; never ahead of [`Clock::now`].
    #[inline]
    pub(crate) fn coarse(&self) -> u64 {
        match self {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Clock::System => read(rustix::time::ClockId::MonotonicCoarse),
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            Clock::System => read(rustix::time::ClockId::Monotonic),
            Clock::Tokio(_) => self.now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_and_precise_share_one_scale() {
        let c = Clock::System;
        let a = c.coarse();
        let b = c.now();
        assert!(a <= b, "coarse {a} ahead of precise {b}");
        assert!(b - a < 100_000_000, "clocks 100 ms apart");
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_pause() {
        let c = Clock::Tokio(tokio::time::Instant::now());
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        assert_eq!(c.now() / 1_000_000_000, 5);
        assert_eq!(c.coarse(), c.now());
    }
}
