//! The load score of an endpoint: a peak-EWMA latency estimate times the requests in flight,
//! and the weight of an endpoint in slow start.
//!
//! - the latency estimate is a *peak* EWMA: a sample above the estimate replaces it at once (slow
//!   endpoints are noticed on the first slow answer), a lower sample is blended in with a weight that
//!   grows with the time since the previous sample (`decay`, default 10 s) and is at least 10 %, so
//!   a one-off peak fades after tens of samples under steady traffic;
//! - failures (connect errors, timeouts, `5xx`/`429` answers) are recorded as a *penalty* latency
//!   (default 1 s) instead of their real, often tiny, duration, so a backend that fails fast never
//!   looks cheapest — a black hole that plain peak-EWMA would create;
//! - an endpoint never measured is seeded with the site's typical latency (or `default_rtt` when the
//!   site has no sample yet): not zero, which would flood it, nor huge, which would starve it.
//!
//! # Forgiveness: what an estimate does while nobody asks
//!
//! An endpoint whose estimate is high is not picked, so it gets no sample that could lower the
//! estimate: whatever the estimate does *between* samples decides whether a one-off slow answer
//! is forgiven. Relaxing toward the site's typical latency (where the busy peers already sit)
//! is not enough: the idle endpoint approaches its peers from above and never looks cheaper —
//! 3 endpoints at ~1 ms, one answering once in 50 ms, got 0 of ~50,000 sequential picks over a
//! minute (it would take `decay × ln(4900)` ≈ 85 s to come within the 1 % tie of its peers).
//!
//! So between samples the estimate relaxes toward **half** the site's typical latency, with a
//! time constant of **`decay / 8`** (1.25 s by default). Half the typical is below the busy
//! peers, so an idle endpoint's score crosses theirs after a bounded time,
//! `decay / 8 × ln(2 × peak / typical − 1)`: 5.7 s for a 50× peak, 9.5 s for a 1 s failure
//! penalty among 1 ms peers (within the 10 s decay), after which one request measures it again.
//! The first sample then blends from the relaxed value (not the stale peak): a healthy answer
//! puts it back level with its peers and it gets its fair share at once; a still-slow one is
//! taken at its peak again and the endpoint waits another such period — so a backend that stays
//! slow or failing costs one request per period, not a share of the traffic. The floor is half
//! the typical and not zero so that the in-flight factor still counts: a backend that hangs is
//! never scored below half its peers per request in flight, and requests do not pile up on it.
//! Busy endpoints, sampled every few milliseconds, drift by a fraction of a percent between
//! samples; the estimate of the typical endpoint is unchanged. (Finagle and tower relax toward
//! zero with the decay's own time constant: 39 s for the 50× peak, and hanging backends pile up.)
//!
//! # Slow start
//!
//! An endpoint that comes back (out of ejection, back up, or newly added) may be given a weight
//! that ramps linearly from 10 % to 100 % over the `slow_start` window (off by default); the
//! selection (`policy`) turns a weight below 1 into a proportionally smaller share of picks.
//!
//! Everything is an atomic: recording a sample and reading a score take no lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// Tunables of the load score, shared by every endpoint of a balancer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoadConfig {
    /// The EWMA's decay rate, the reciprocal of its time constant, per nanosecond (a product
    /// on the pick path where a quotient would cost a division).
    decay_rate: f64,
    /// The rate at which an idle estimate relaxes (`RELAX_SPEEDUP` times the decay rate).
    relax_rate: f64,
    /// Seed for a site with no sample yet, in nanoseconds.
    pub(crate) default_rtt_ns: f64,
    /// Latency recorded for a failure, in nanoseconds.
    pub(crate) penalty_ns: f64,
    /// Length of the slow-start ramp, in nanoseconds; 0: no slow start.
    pub(crate) slow_start_ns: u64,
}

impl LoadConfig {
    /// The tunables for an EWMA time constant of `decay_ns`.
    pub(crate) fn new(
        decay_ns: f64,
        default_rtt_ns: f64,
        penalty_ns: f64,
        slow_start_ns: u64,
    ) -> LoadConfig {
        LoadConfig {
            decay_rate: 1.0 / decay_ns,
            relax_rate: RELAX_SPEEDUP / decay_ns,
            default_rtt_ns,
            penalty_ns,
            slow_start_ns,
        }
    }
}

/// A span of nanoseconds as `f64`, by way of `i64`: one instruction on x86-64, where a `u64`
/// takes five (spans past 292 years are clamped).
#[inline]
pub(crate) fn ns_f64(ns: u64) -> f64 {
    ns.min(i64::MAX as u64) as i64 as f64
}

/// `e^-x` for `x >= 0`, cheap enough for the pick path. Accurate to well under 1 % — the
/// estimate is a heuristic — and exact at 0.
#[inline]
fn decay_weight(elapsed_ns: f64, rate: f64) -> f64 {
    let x = elapsed_ns * rate;
    if x <= 0.0 {
        1.0
    } else if x < 0.01 {
        // The common case (samples milliseconds apart, a decay of seconds): a short series,
        // within 2e-7 of exp(-x) and much cheaper.
        1.0 - x + 0.5 * x * x
    } else if x > 30.0 {
        0.0
    } else {
        exp_neg(x)
    }
}

/// `e^-x` for `x` in `[0, 30]`, to a relative 2e-7, without the library's `exp` (a call, and
/// exactness the estimate has no use for): `e^-x = 2^-y` with `16·y = 16·q + j + r` (`q`, `j`
/// whole, `j < 16`, `r` in `[0, 1)`), so `2^-q` is built from exponent bits, `2^(-j/16)` read
/// from a table and `2^(-r/16) = e^-t` (`t < 0.044`) taken from a short series. A short
/// dependency chain matters more than the instruction count: it is taken whenever an endpoint
/// went unsampled for more than `decay / 800`, which under light traffic is every pick.
#[inline]
fn exp_neg(x: f64) -> f64 {
    let y16 = x * (16.0 * std::f64::consts::LOG2_E);
    // `x >= 0`: truncation is the floor.
    let m = y16 as i64;
    let t = (y16 - m as f64) * (std::f64::consts::LN_2 / 16.0);
    // e^-t to the third power of t: within t^4 / 24 < 1.5e-7.
    let p = 1.0 - t * (1.0 - t * (0.5 - t * (1.0 / 6.0)));
    // `m >> 4` is in [0, 43] for `x <= 30`: a normal power of two.
    let scale = f64::from_bits(((1023 - (m >> 4)) as u64) << 52);
    p * TWO_POW_NEG_SIXTEENTHS[(m & 15) as usize] * scale
}

/// `2^(-j/16)` for `j` in `0..16`.
const TWO_POW_NEG_SIXTEENTHS: [f64; 16] = [
    1.0,
    0.9576032806985737,
    0.9170040432046712,
    0.8781260801866497,
    0.8408964152537145,
    0.8052451659746271,
    0.7711054127039704,
    0.7384130729697497,
    std::f64::consts::FRAC_1_SQRT_2,
    0.6771277734684463,
    0.6484197773255048,
    0.620928906036742,
    0.5946035575013605,
    0.5693943173783458,
    0.5452538663326288,
    0.5221368912137069,
];

/// The least weight a new, lower sample gets in the peak-EWMA.
const MIN_SAMPLE_WEIGHT: f64 = 0.1;

/// Between samples an estimate relaxes with a time constant of `decay / RELAX_SPEEDUP`...
const RELAX_SPEEDUP: f64 = 8.0;

/// ... toward this share of the site's typical latency (see the module docs).
const RELAX_FLOOR: f64 = 0.5;

/// The weight an endpoint has when its slow start begins.
pub(crate) const MIN_RAMP_WEIGHT: f64 = 0.1;

/// The bits of an estimate with no sample yet (0.0: samples are clamped to at least 1 ns).
const UNMEASURED: u64 = 0;

/// Lock-free peak-EWMA latency estimate plus the requests in flight on one endpoint.
///
/// In flight is kept as two running totals, requests started and requests ended, so that a
/// finish costs one atomic add that also counts the request (the endpoint's `requests`
/// statistic is derived from the ends): a counter of its own would be another add per request.
#[derive(Debug, Default)]
pub(crate) struct Load {
    started: AtomicU64,
    ended: AtomicU64,
    /// f64 bits, nanoseconds; [`UNMEASURED`] before the first sample (a sample is at least
    /// 1 ns), so that one load answers both questions.
    ewma: AtomicU64,
    /// Nanoseconds since the balancer's epoch of the last sample.
    stamp: AtomicU64,
    /// Start of the slow-start ramp plus one (ns since the balancer's epoch); 0: no ramp.
    ramp: AtomicU64,
}

impl Load {
    #[inline]
    pub(crate) fn inflight(&self) -> u32 {
        // Ends first: every end read was preceded by its start, so the difference is not
        // negative (saturating all the same: the two loads are not one snapshot).
        let ended = self.ended.load(Ordering::Relaxed);
        let started = self.started.load(Ordering::Relaxed);
        u32::try_from(started.saturating_sub(ended)).unwrap_or(u32::MAX)
    }

    #[inline]
    pub(crate) fn start(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// One request finished. Called once per `start` (a lease finishes once).
    #[inline]
    pub(crate) fn end(&self) {
        let prev = self.ended.fetch_add(1, Ordering::Relaxed);
        debug_assert!(
            prev < self.started.load(Ordering::Relaxed),
            "more ends than starts"
        );
    }

    /// Requests ended so far, whatever their outcome.
    pub(crate) fn ended(&self) -> u64 {
        self.ended.load(Ordering::Relaxed)
    }

    /// The latency estimate at `now_ns`: the last one, relaxed since its sample toward half the
    /// site's typical latency `seed_ns` (see the module docs).
    #[inline]
    pub(crate) fn estimate(&self, now_ns: u64, seed_ns: f64, cfg: &LoadConfig) -> f64 {
        let bits = self.ewma.load(Ordering::Relaxed);
        if bits == UNMEASURED {
            return seed_ns;
        }
        let stamp = self.stamp.load(Ordering::Relaxed);
        relax(
            f64::from_bits(bits),
            now_ns.saturating_sub(stamp),
            seed_ns,
            cfg,
        )
    }

    /// The P2C score: estimate × (in-flight + 1).
    #[inline]
    pub(crate) fn cost(&self, now_ns: u64, seed_ns: f64, cfg: &LoadConfig) -> f64 {
        self.estimate(now_ns, seed_ns, cfg) * (f64::from(self.inflight()) + 1.0)
    }

    /// Record one latency sample (peak-sensitive). A lower sample is blended with the estimate
    /// as relaxed at `now_ns` (what picks saw), not with the last sample's stale value.
    pub(crate) fn observe(&self, rtt_ns: f64, now_ns: u64, seed_ns: f64, cfg: &LoadConfig) {
        let rtt_ns = rtt_ns.max(1.0);
        let bits = self.ewma.load(Ordering::Relaxed);
        let next = if bits != UNMEASURED {
            let stamp = self.stamp.load(Ordering::Relaxed);
            let prev = relax(
                f64::from_bits(bits),
                now_ns.saturating_sub(stamp),
                seed_ns,
                cfg,
            );
            if rtt_ns > prev {
                rtt_ns
            } else {
                // Time-based weight, but every sample moves the estimate by at least
                // `MIN_SAMPLE_WEIGHT`: under steady traffic a one-off peak (the first request,
                // which pays for the TCP connection) fades within tens of samples instead of
                // pinning the estimate for a whole decay period.
                let w = decay_weight(ns_f64(now_ns.saturating_sub(stamp)), cfg.decay_rate)
                    .min(1.0 - MIN_SAMPLE_WEIGHT);
                prev * w + rtt_ns * (1.0 - w)
            }
        } else {
            rtt_ns
        };
        // Racing writers may lose a sample; the estimate is a heuristic and stays sane.
        self.ewma.store(next.to_bits(), Ordering::Relaxed);
        self.stamp.store(now_ns, Ordering::Relaxed);
    }

    pub(crate) fn is_measured(&self) -> bool {
        self.ewma.load(Ordering::Relaxed) != UNMEASURED
    }

    /// Forget all samples (used when an endpoint comes back after being down).
    pub(crate) fn reset(&self) {
        self.ewma.store(UNMEASURED, Ordering::Relaxed);
    }

    /// Begin a slow-start ramp at `now_ns` (restarting one under way). Returns the ramp's key
    /// for [`Load::end_ramp`], or `None` when slow start is off.
    pub(crate) fn begin_ramp(&self, now_ns: u64, cfg: &LoadConfig) -> Option<u64> {
        if cfg.slow_start_ns == 0 {
            return None;
        }
        let key = now_ns.saturating_add(1);
        self.ramp.store(key, Ordering::Relaxed);
        Some(key)
    }

    /// End the ramp begun with `key`; false when another ramp replaced it or none is running.
    pub(crate) fn end_ramp(&self, key: u64) -> bool {
        self.ramp
            .compare_exchange(key, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// True while a slow-start ramp is running (begun and not ended).
    #[cfg(test)]
    pub(crate) fn in_ramp(&self) -> bool {
        self.ramp.load(Ordering::Relaxed) != 0
    }

    /// The endpoint's weight at `now_ns`: 1 outside slow start, else rising linearly from
    /// [`MIN_RAMP_WEIGHT`] to 1 over the window.
    #[inline]
    pub(crate) fn weight(&self, now_ns: u64, cfg: &LoadConfig) -> f64 {
        // The configuration first: without slow start, no read of the ramp.
        if cfg.slow_start_ns == 0 {
            return 1.0;
        }
        let key = self.ramp.load(Ordering::Relaxed);
        if key == 0 {
            return 1.0;
        }
        ramp_weight(now_ns.saturating_sub(key - 1), cfg.slow_start_ns)
    }
}

/// `ewma` recorded `elapsed_ns` ago, relaxed toward `RELAX_FLOOR × seed_ns`.
#[inline]
fn relax(ewma: f64, elapsed_ns: u64, seed_ns: f64, cfg: &LoadConfig) -> f64 {
    let floor = seed_ns * RELAX_FLOOR;
    let w = decay_weight(ns_f64(elapsed_ns), cfg.relax_rate);
    floor + (ewma - floor) * w
}

/// The slow-start weight `elapsed_ns` into a ramp of `window_ns` (> 0).
#[inline]
pub(crate) fn ramp_weight(elapsed_ns: u64, window_ns: u64) -> f64 {
    if elapsed_ns >= window_ns {
        return 1.0;
    }
    MIN_RAMP_WEIGHT + (1.0 - MIN_RAMP_WEIGHT) * (elapsed_ns as f64 / window_ns as f64)
}

/// The site average takes at most one sample per this many nanoseconds.
const SITE_SAMPLE_NS: u64 = 1_000_000;

/// The typical latency of a site: a plain EWMA of its successful samples, used to seed unmeasured
/// endpoints and to set the level idle estimates relax toward (half of it).
#[derive(Debug, Default)]
pub(crate) struct SiteLoad {
    /// f64 bits, nanoseconds; [`UNMEASURED`] before the first sample.
    ewma: AtomicU64,
    stamp: AtomicU64,
}

impl SiteLoad {
    #[inline]
    pub(crate) fn seed(&self, cfg: &LoadConfig) -> f64 {
        match self.ewma.load(Ordering::Relaxed) {
            UNMEASURED => cfg.default_rtt_ns,
            bits => f64::from_bits(bits),
        }
    }

    pub(crate) fn observe(&self, rtt_ns: f64, now_ns: u64, cfg: &LoadConfig) {
        let rtt_ns = rtt_ns.max(1.0);
        let bits = self.ewma.load(Ordering::Relaxed);
        let stamp = self.stamp.load(Ordering::Relaxed);
        let measured = bits != UNMEASURED;
        // Written by every finishing request of the site, from every thread: sample it at most
        // once per `SITE_SAMPLE_NS` to keep that cache line quiet.
        if measured && now_ns.saturating_sub(stamp) < SITE_SAMPLE_NS {
            return;
        }
        let next = if measured {
            let prev = f64::from_bits(bits);
            // A site-wide average over many endpoints: blend, with at least a 5 % step so a
            // busy site still follows changes.
            let w = decay_weight(ns_f64(now_ns.saturating_sub(stamp)), cfg.decay_rate).min(0.95);
            prev * w + rtt_ns * (1.0 - w)
        } else {
            rtt_ns
        };
        self.ewma.store(next.to_bits(), Ordering::Relaxed);
        self.stamp.store(now_ns, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_exponential_is_within_its_bound() {
        let mut worst = 0.0f64;
        for i in 0..=300_000 {
            let x = f64::from(i) * 1e-4;
            let rel = (exp_neg(x) / (-x).exp() - 1.0).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
        assert_eq!(exp_neg(0.0), 1.0);
        // The pieces join: continuous at the series' end and at the cut-off.
        assert!((decay_weight(0.0099, 1.0) - decay_weight(0.0101, 1.0)).abs() < 3e-4);
        assert!(decay_weight(30.0, 1.0) < 1e-12 && decay_weight(30.1, 1.0) == 0.0);
    }

    const MS: f64 = 1_000_000.0;

    fn cfg() -> LoadConfig {
        LoadConfig::new(10_000.0 * MS, 10.0 * MS, 1_000.0 * MS, 0)
    }

    #[test]
    fn peak_is_taken_at_once_and_low_samples_blend() {
        let l = Load::default();
        let c = cfg();
        l.observe(10.0 * MS, 0, 0.0, &c);
        l.observe(100.0 * MS, 1, 0.0, &c);
        assert!((l.estimate(1, 0.0, &c) - 100.0 * MS).abs() < 0.001 * MS);
        // A tenth of a decay period later (the idle estimate has relaxed 1 - e^-0.8 of the way
        // toward the floor, 0 here), a 10 ms sample is blended in with the least weight, 10 %.
        let t = (1_000.0 * MS) as u64;
        let relaxed = 100.0 * MS * (-0.8f64).exp();
        l.observe(10.0 * MS, t, 0.0, &c);
        let e = f64::from_bits(l.ewma.load(Ordering::Relaxed));
        let w = (-0.1f64).exp().min(1.0 - MIN_SAMPLE_WEIGHT);
        let want = relaxed * w + 10.0 * MS * (1.0 - w);
        assert!((e - want).abs() < 0.01 * MS, "{e} {want}");
    }

    #[test]
    fn a_one_off_peak_fades_under_steady_traffic() {
        let l = Load::default();
        let c = cfg();
        l.observe(5.0 * MS, 0, 0.5 * MS, &c); // first request: connection setup
        for i in 1..=40u64 {
            l.observe(0.5 * MS, i * 1_000, 0.5 * MS, &c); // 40 fast answers within 40 µs
        }
        let e = f64::from_bits(l.ewma.load(Ordering::Relaxed));
        assert!(e < 0.6 * MS, "peak still pins the estimate: {e}");
    }

    #[test]
    fn an_idle_estimate_relaxes_below_the_typical_within_the_decay() {
        let l = Load::default();
        let c = cfg();
        let typical = 1.0 * MS;
        l.observe(50.0 * MS, 0, typical, &c);
        assert!(l.estimate(1, typical, &c) > 49.9 * MS);
        // decay/8 × ln(2 × 50 - 1) = 5.74 s: level with the typical endpoint...
        let cross = (1_250.0 * MS * 99f64.ln()) as u64;
        let at = l.estimate(cross, typical, &c);
        assert!((at - typical).abs() < 0.001 * MS, "{at}");
        // ... and below it (cheaper, so picked) before the decay period is over.
        assert!(l.estimate((10_000.0 * MS) as u64, typical, &c) < 0.6 * typical);
        // Long idle: at the floor, half the typical.
        let late = l.estimate((1_000_000.0 * MS) as u64, typical, &c);
        assert!((late - 0.5 * typical).abs() < 0.001 * MS, "{late}");
    }

    #[test]
    fn the_first_healthy_sample_after_forgiveness_is_taken_as_is() {
        let l = Load::default();
        let c = cfg();
        let typical = 1.0 * MS;
        l.observe(50.0 * MS, 0, typical, &c);
        // Picked again once relaxed below its peers: the 1 ms answer is above the relaxed
        // estimate, so it replaces it (peak rule) instead of blending with the stale 50 ms.
        let t = (8_000.0 * MS) as u64;
        l.observe(1.0 * MS, t, typical, &c);
        assert!((l.estimate(t, typical, &c) - typical).abs() < 0.001 * MS);
    }

    #[test]
    fn ramp_rises_linearly_from_its_floor_and_ends() {
        let l = Load::default();
        let mut c = cfg();
        assert_eq!(l.begin_ramp(5, &c), None, "slow start off");
        assert_eq!(l.weight(5, &c), 1.0);
        c.slow_start_ns = 1_000;
        let key = l.begin_ramp(100, &c).expect("on");
        assert!(l.in_ramp());
        assert!((l.weight(100, &c) - MIN_RAMP_WEIGHT).abs() < 1e-9);
        assert!((l.weight(600, &c) - 0.55).abs() < 1e-9);
        assert_eq!(l.weight(1_100, &c), 1.0);
        assert_eq!(l.weight(50, &c), MIN_RAMP_WEIGHT, "clock before the start");
        // A newer ramp is not ended by the older one's key.
        let newer = l.begin_ramp(200, &c).expect("on");
        assert!(!l.end_ramp(key));
        assert!(l.end_ramp(newer));
        assert!(!l.in_ramp());
        assert_eq!(l.weight(300, &c), 1.0);
    }

    #[test]
    fn unmeasured_uses_seed_and_inflight_multiplies() {
        let l = Load::default();
        let c = cfg();
        assert_eq!(l.cost(0, 7.0, &c), 7.0);
        l.start();
        l.start();
        assert_eq!(l.cost(0, 7.0, &c), 21.0);
        l.end();
        l.end();
        assert_eq!(l.inflight(), 0);
    }
}
