//! The load score of an endpoint: a peak-EWMA latency estimate times the requests in flight.
//!
//! - the latency estimate is a *peak* EWMA: a sample above the estimate replaces it at once (slow
//!   endpoints are noticed on the first slow answer), a lower sample is blended in with a weight that
//!   grows with the time since the previous sample (`decay`, default 10 s) and is at least 10 %, so
//!   a one-off peak fades after tens of samples under steady traffic;
//! - failures (connect errors, timeouts, `5xx`/`429` answers) are recorded as a *penalty* latency
//!   (default 1 s) instead of their real, often tiny, duration, so a backend that fails fast never
//!   looks cheapest — a black hole that plain peak-EWMA would create;
//! - between samples the estimate relaxes toward the site's typical latency, so a penalised endpoint
//!   is tried again after a while instead of being starved forever;
//! - an endpoint never measured is seeded with the site's typical latency (or `default_rtt` when the
//!   site has no sample yet): not zero, which would flood it, nor huge, which would starve it.
//!
//! Everything is an atomic: recording a sample and reading a score take no lock.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Tunables of the load score, shared by every endpoint of a balancer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoadConfig {
    /// Time constant of the EWMA, in nanoseconds.
    pub(crate) decay_ns: f64,
    /// Seed for a site with no sample yet, in nanoseconds.
    pub(crate) default_rtt_ns: f64,
    /// Latency recorded for a failure, in nanoseconds.
    pub(crate) penalty_ns: f64,
}

/// `e^-x` for `x >= 0`, cheap enough for the pick path. Accurate to well under 1 % — the
/// estimate is a heuristic — and exact at 0.
#[inline]
fn decay_weight(elapsed_ns: f64, decay_ns: f64) -> f64 {
    let x = elapsed_ns / decay_ns;
    if x <= 0.0 {
        1.0
    } else if x < 0.01 {
        // The common case (samples milliseconds apart, a decay of seconds): a short series,
        // within 2e-7 of exp(-x) and much cheaper.
        1.0 - x + 0.5 * x * x
    } else if x > 30.0 {
        0.0
    } else {
        (-x).exp()
    }
}

/// The least weight a new, lower sample gets in the peak-EWMA.
const MIN_SAMPLE_WEIGHT: f64 = 0.1;

/// Lock-free peak-EWMA latency estimate plus an in-flight counter for one endpoint.
#[derive(Debug, Default)]
pub(crate) struct Load {
    inflight: AtomicU32,
    /// f64 bits, nanoseconds.
    ewma: AtomicU64,
    /// Nanoseconds since the balancer's epoch of the last sample.
    stamp: AtomicU64,
    measured: AtomicBool,
}

impl Load {
    pub(crate) fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    pub(crate) fn start(&self) {
        self.inflight.fetch_add(1, Ordering::Relaxed);
    }

    /// One request finished. Called once per `start` (a lease finishes once).
    pub(crate) fn end(&self) {
        let prev = self.inflight.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(prev > 0, "in-flight count underflow");
    }

    /// The latency estimate at `now_ns`, relaxed toward `seed_ns` since the last sample.
    #[inline]
    pub(crate) fn estimate(&self, now_ns: u64, seed_ns: f64, cfg: &LoadConfig) -> f64 {
        if !self.measured.load(Ordering::Relaxed) {
            return seed_ns;
        }
        let ewma = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        let stamp = self.stamp.load(Ordering::Relaxed);
        let w = decay_weight(now_ns.saturating_sub(stamp) as f64, cfg.decay_ns);
        seed_ns + (ewma - seed_ns) * w
    }

    /// The P2C score: estimate × (in-flight + 1).
    #[inline]
    pub(crate) fn cost(&self, now_ns: u64, seed_ns: f64, cfg: &LoadConfig) -> f64 {
        self.estimate(now_ns, seed_ns, cfg) * (f64::from(self.inflight()) + 1.0)
    }

    /// Record one latency sample (peak-sensitive).
    pub(crate) fn observe(&self, rtt_ns: f64, now_ns: u64, cfg: &LoadConfig) {
        let rtt_ns = rtt_ns.max(1.0);
        let next = if self.measured.load(Ordering::Relaxed) {
            let prev = f64::from_bits(self.ewma.load(Ordering::Relaxed));
            let stamp = self.stamp.load(Ordering::Relaxed);
            if rtt_ns > prev {
                rtt_ns
            } else {
                // Time-based weight, but every sample moves the estimate by at least
                // `MIN_SAMPLE_WEIGHT`: under steady traffic a one-off peak (the first request,
                // which pays for the TCP connection) fades within tens of samples instead of
                // pinning the estimate for a whole decay period.
                let w = decay_weight(now_ns.saturating_sub(stamp) as f64, cfg.decay_ns)
                    .min(1.0 - MIN_SAMPLE_WEIGHT);
                prev * w + rtt_ns * (1.0 - w)
            }
        } else {
            rtt_ns
        };
        // Racing writers may lose a sample; the estimate is a heuristic and stays sane.
        self.ewma.store(next.to_bits(), Ordering::Relaxed);
        self.stamp.store(now_ns, Ordering::Relaxed);
        self.measured.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_measured(&self) -> bool {
        self.measured.load(Ordering::Relaxed)
    }

    /// Forget all samples (used when an endpoint comes back after being down).
    pub(crate) fn reset(&self) {
        self.measured.store(false, Ordering::Relaxed);
    }
}

/// The site average takes at most one sample per this many nanoseconds.
const SITE_SAMPLE_NS: u64 = 1_000_000;

/// The typical latency of a site: a plain EWMA of its successful samples, used to seed unmeasured
/// endpoints and as the level penalised estimates relax toward.
#[derive(Debug, Default)]
pub(crate) struct SiteLoad {
    ewma: AtomicU64,
    stamp: AtomicU64,
    measured: AtomicBool,
}

impl SiteLoad {
    #[inline]
    pub(crate) fn seed(&self, cfg: &LoadConfig) -> f64 {
        if self.measured.load(Ordering::Relaxed) {
            f64::from_bits(self.ewma.load(Ordering::Relaxed))
        } else {
            cfg.default_rtt_ns
        }
    }

    pub(crate) fn observe(&self, rtt_ns: f64, now_ns: u64, cfg: &LoadConfig) {
        let rtt_ns = rtt_ns.max(1.0);
        let measured = self.measured.load(Ordering::Relaxed);
        let stamp = self.stamp.load(Ordering::Relaxed);
        // Written by every finishing request of the site, from every thread: sample it at most
        // once per `SITE_SAMPLE_NS` to keep that cache line quiet.
        if measured && now_ns.saturating_sub(stamp) < SITE_SAMPLE_NS {
            return;
        }
        let next = if measured {
            let prev = f64::from_bits(self.ewma.load(Ordering::Relaxed));
            // A site-wide average over many endpoints: blend, with at least a 5 % step so a
            // busy site still follows changes.
            let w = decay_weight(now_ns.saturating_sub(stamp) as f64, cfg.decay_ns).min(0.95);
            prev * w + rtt_ns * (1.0 - w)
        } else {
            rtt_ns
        };
        self.ewma.store(next.to_bits(), Ordering::Relaxed);
        self.stamp.store(now_ns, Ordering::Relaxed);
        self.measured.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1_000_000.0;

    fn cfg() -> LoadConfig {
        LoadConfig {
            decay_ns: 10_000.0 * MS,
            default_rtt_ns: 10.0 * MS,
            penalty_ns: 1_000.0 * MS,
        }
    }

    #[test]
    fn peak_is_taken_at_once_and_low_samples_blend() {
        let l = Load::default();
        let c = cfg();
        l.observe(10.0 * MS, 0, &c);
        l.observe(100.0 * MS, 1, &c);
        assert_eq!(l.estimate(1, 0.0, &c), 100.0 * MS);
        // One decay period later a 10 ms sample moves the estimate about 63 % of the way down.
        let t = (10_000.0 * MS) as u64;
        l.observe(10.0 * MS, t, &c);
        let e = f64::from_bits(l.ewma.load(Ordering::Relaxed));
        assert!((e - (10.0 + 90.0 * (-1f64).exp()) * MS).abs() < MS, "{e}");
    }

    #[test]
    fn a_one_off_peak_fades_under_steady_traffic() {
        let l = Load::default();
        let c = cfg();
        l.observe(5.0 * MS, 0, &c); // first request: connection setup
        for i in 1..=40u64 {
            l.observe(0.5 * MS, i * 1_000, &c); // 40 fast answers within 40 µs
        }
        let e = f64::from_bits(l.ewma.load(Ordering::Relaxed));
        assert!(e < 0.6 * MS, "peak still pins the estimate: {e}");
    }

    #[test]
    fn estimate_relaxes_toward_seed() {
        let l = Load::default();
        let c = cfg();
        l.observe(1_000.0 * MS, 0, &c);
        let seed = 5.0 * MS;
        let early = l.estimate(1, seed, &c);
        let late = l.estimate((1_000_000.0 * MS) as u64, seed, &c);
        assert!(early > 900.0 * MS);
        assert!((late - seed).abs() < 0.01 * MS);
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
