//! Time for the request path, read cheaply.
//!
//! Every pick reads the time once (it dates the lease and lets latency estimates decay), and
//! every finish once more (the latency). Through the vDSO, `clock_gettime(CLOCK_MONOTONIC)`
//! costs about 20 ns on the reference box — a sixth of a whole pick + finish. Reading the CPU's
//! time-stamp counter (`rdtsc`) costs a third of that, and the kernel already keeps
//! `CLOCK_MONOTONIC` on it when it trusts it: so on Linux/x86-64, when the kernel's clock source
//! is `tsc` (it checked the counter is invariant and in step across CPUs), the balancer reads
//! the counter and scales it to nanoseconds itself.
//!
//! The scale is measured, not assumed: the first reading pairs the counter with
//! `CLOCK_MONOTONIC`, and the first reading at least [`CALIBRATION_NS`] later pairs them again;
//! until then readings come from `clock_gettime`, and from then on from the counter, anchored
//! at the second pair, so the two sources meet without a jump. Every reading of a balancer comes
//! from the one source at a time (the precise and the coarse ones alike), so a latency or an
//! elapsed time is always a difference of readings on one scale. Should the counter ever go
//! back (it restarts when some machines resume), the balancer gives it up for good and reads
//! `clock_gettime` again. Elsewhere (another OS or architecture, a kernel on another clock
//! source, a container without `/sys`) nothing changes: `clock_gettime`, with the kernel's
//! coarse clock where millisecond resolution is enough. The clock source is looked at once, at
//! the first reading.
//!
//! [`Clock::Tokio`] follows tokio's clock instead, so that `tokio::time::pause()` drives the
//! balancer too (tests and simulations; see `Builder::tokio_clock`).

/// Where the balancer reads the time. Readings are nanoseconds on one monotonic scale.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Clock {
    /// The system's monotonic clock (through the time-stamp counter when calibrated).
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

fn monotonic() -> u64 {
    read(rustix::time::ClockId::Monotonic)
}

/// The counter watched against `CLOCK_MONOTONIC` for at least this long before it stands in
/// for it: with the pairs taken to within ~20 ns, the scale is off by well under a millionth.
const CALIBRATION_NS: u64 = 100_000_000;

impl Clock {
    /// Precise now, for latencies.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self {
            Clock::System => system_now(),
            Clock::Tokio(origin) => tokio::time::Instant::now()
                .saturating_duration_since(*origin)
                .as_nanos() as u64,
        }
    }

    /// Now to within a few milliseconds, cheaper where the counter is not used; never ahead of
    /// [`Clock::now`].
    #[inline]
    pub(crate) fn coarse(&self) -> u64 {
        match self {
            Clock::System => system_coarse(),
            Clock::Tokio(_) => self.now(),
        }
    }
}

#[inline]
fn system_now() -> u64 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if let Some(ns) = tsc::read() {
        return ns;
    }
    let ns = monotonic();
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    tsc::observe(ns);
    ns
}

#[inline]
fn system_coarse() -> u64 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if let Some(ns) = tsc::read() {
        return ns;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return read(rustix::time::ClockId::MonotonicCoarse);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return monotonic();
}

/// Counter ticks to nanoseconds: `ns0 + (ticks - ticks0) × mult / 2^SHIFT`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Scale {
    ticks0: u64,
    ns0: u64,
    /// Nanoseconds per tick, in units of 2^-[`SHIFT`].
    mult: u64,
}

/// A counter this far behind the anchor went back; far beyond the skew between CPUs a kernel
/// accepts when it keeps time on the counter (about 0.3 ms at 3 GHz).
const BEHIND_TICKS: u64 = 1 << 20;

/// The fixed point of [`Scale::mult`]: 40 bits of fraction (a 20 ns tick still fits in 64 bits).
const SHIFT: u32 = 40;

impl Scale {
    /// The scale through two (ticks, ns) pairs, anchored at the later; `None` unless both
    /// advanced and the rate is one a time-stamp counter can have (50 MHz to 20 GHz).
    fn between(first: (u64, u64), second: (u64, u64)) -> Option<Scale> {
        let ticks = second.0.checked_sub(first.0).filter(|&t| t > 0)?;
        let ns = second.1.checked_sub(first.1).filter(|&n| n > 0)?;
        let mult = (u128::from(ns) << SHIFT) / u128::from(ticks);
        let sane = (1u128 << SHIFT) / 20..=(1u128 << SHIFT) * 20;
        if !sane.contains(&mult) {
            return None;
        }
        Some(Scale {
            ticks0: second.0,
            ns0: second.1,
            mult: u64::try_from(mult).ok()?,
        })
    }

    /// Nanoseconds at `ticks`: a reading of another CPU a hair behind the anchor counts as the
    /// anchor; `None` when the counter is far behind it (it went back, as when a machine resumes
    /// and its counter restarts).
    #[inline]
    fn at(&self, ticks: u64) -> Option<u64> {
        if ticks.saturating_add(BEHIND_TICKS) < self.ticks0 {
            return None;
        }
        let d = ticks.saturating_sub(self.ticks0);
        Some(
            self.ns0
                .saturating_add(((u128::from(d) * u128::from(self.mult)) >> SHIFT) as u64),
        )
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod tsc {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;

    use super::{monotonic, Scale, CALIBRATION_NS};

    /// The first (ticks, ns) pair; `None` inside when the counter is not to be used.
    static ANCHOR: OnceLock<Option<(u64, u64)>> = OnceLock::new();
    /// The scale once calibrated; `None` inside when calibration failed for good.
    static SCALE: OnceLock<Option<Scale>> = OnceLock::new();

    /// Two counter reads around a clock read closer than this give a pair (about 15 µs at
    /// 3 GHz; a pair is usually taken within a few dozen ticks).
    const BRACKET_TICKS: u64 = 50_000;

    /// Set for good when the counter went back: from then on `clock_gettime` serves (a step of
    /// at most the scale's drift from `CLOCK_MONOTONIC`, once).
    static GIVEN_UP: AtomicBool = AtomicBool::new(false);

    #[inline]
    fn scale() -> Option<&'static Scale> {
        SCALE.get().and_then(Option::as_ref)
    }

    /// Now from the counter, once it is calibrated and while it is trusted.
    #[inline]
    pub(super) fn read() -> Option<u64> {
        let scale = scale()?;
        if GIVEN_UP.load(Ordering::Relaxed) {
            return None;
        }
        let ns = scale.at(ticks());
        if ns.is_none() {
            GIVEN_UP.store(true, Ordering::Relaxed);
        }
        ns
    }

    #[inline]
    pub(super) fn ticks() -> u64 {
        safe_arch::read_timestamp_counter()
    }

    /// The kernel keeps its own clocks on the counter: it found it invariant and in step
    /// across CPUs.
    pub(super) fn trusted() -> bool {
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .is_ok_and(|s| s.trim() == "tsc")
    }

    /// (ticks, ns) taken as close together as a few tries manage; `None` when every try was
    /// interrupted.
    fn pair() -> Option<(u64, u64)> {
        let mut best: Option<(u64, u64, u64)> = None;
        for _ in 0..5 {
            let a = ticks();
            let ns = monotonic();
            let b = ticks();
            let Some(width) = b.checked_sub(a).filter(|&w| w < BRACKET_TICKS) else {
                continue;
            };
            if best.is_none_or(|(w, _, _)| width < w) {
                best = Some((width, a + width / 2, ns));
            }
        }
        best.map(|(_, t, ns)| (t, ns))
    }

    /// A `clock_gettime` reading `ns` was just taken: pair the counter with the clock the first
    /// time, and once [`CALIBRATION_NS`] have passed since, a second time to fix the scale.
    pub(super) fn observe(ns: u64) {
        if SCALE.get().is_some() {
            return;
        }
        let Some((t0, ns0)) = *ANCHOR.get_or_init(|| if trusted() { pair() } else { None }) else {
            return;
        };
        if ns.saturating_sub(ns0) < CALIBRATION_NS {
            return;
        }
        if let Some(second) = pair() {
            let _ = SCALE.set(Scale::between((t0, ns0), second));
        }
    }

    /// Whether readings come from the counter now (for tests).
    #[cfg(test)]
    pub(super) fn in_use() -> bool {
        read().is_some()
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

    #[test]
    fn a_scale_converts_ticks_at_the_measured_rate() {
        // 3 GHz: 3 ticks a nanosecond.
        let s = Scale::between((1_000, 5_000), (3_001_000, 1_005_000)).expect("a sane rate");
        assert_eq!(
            s.at(3_001_000),
            Some(1_005_000),
            "the anchor is the later pair"
        );
        let second = s.at(3_001_000 + 3_000_000_000).expect("ahead");
        assert!(second.abs_diff(1_005_000 + 1_000_000_000) <= 1, "{second}");
        // An hour later the fixed-point rate is still within a microsecond.
        let hour = 3_600_000_000_000u64;
        let at = s.at(3_001_000 + 3 * hour).expect("ahead");
        assert!(at.abs_diff(1_005_000 + hour) < 1_000, "{at}");
        // A reading a hair behind the anchor (another CPU) is the anchor, not a wrap.
        assert_eq!(s.at(2_999_000), Some(1_005_000));
        // A counter that restarted (a resume) is no reading at all.
        assert_eq!(s.at(5), None);
        assert_eq!(s.at(3_001_000 - BEHIND_TICKS - 1), None);
    }

    #[test]
    fn a_scale_needs_both_sources_to_advance_at_a_plausible_rate() {
        for (first, second, why) in [
            ((10, 10), (10, 20), "counter stood still"),
            ((10, 10), (20, 10), "clock stood still"),
            ((20, 10), (10, 20), "counter went back"),
            ((0, 0), (1, 1_000), "1 GHz clock, 1 MHz counter"),
            ((0, 0), (1_000, 1), "1 THz counter"),
        ] {
            assert_eq!(Scale::between(first, second), None, "{why}");
        }
        assert!(Scale::between((0, 0), (2_500, 1_000)).is_some(), "2.5 GHz");
    }

    #[test]
    fn the_system_clock_keeps_to_clock_monotonic() {
        // Two readings 150 ms apart calibrate the counter where the kernel trusts it.
        let c = Clock::System;
        let first = c.now();
        std::thread::sleep(std::time::Duration::from_millis(150));
        let second = c.now();
        assert!(second >= first + 150_000_000, "{first} then {second}");
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        if tsc::trusted() {
            // Another test of this process may have calibrated it first; either way it is now.
            assert!(tsc::in_use(), "the kernel trusts the counter; so do we");
        }
        // Whatever the source, readings stay within a millisecond of CLOCK_MONOTONIC and never
        // go back.
        let mut last = 0;
        for _ in 0..1_000 {
            let before = monotonic();
            let coarse = c.coarse();
            let ours = c.now();
            let after = monotonic();
            assert!(
                ours + 1_000_000 >= before && ours <= after + 1_000_000,
                "{before} {ours} {after}"
            );
            assert!(ours >= last, "went back: {last} then {ours}");
            assert!(
                coarse <= ours,
                "coarse {coarse} ahead of precise {ours} read after it"
            );
            last = ours;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_pause() {
        let c = Clock::Tokio(tokio::time::Instant::now());
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        assert_eq!(c.now() / 1_000_000_000, 5);
        assert_eq!(c.coarse(), c.now());
    }
}
