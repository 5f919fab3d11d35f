//! Hedged requests: when a request's first attempt has not answered after a delay, a second
//! attempt goes to another endpoint, the first answer wins and the other attempt is dropped.
//!
//! A hedge cuts the tail that one slow endpoint adds (a GC pause, a cold disk, a noisy
//! neighbour) at the price of a few extra requests. Hedging is opt-in and follows the rules of
//! a retry, because it *is* one sent early:
//!
//! - only an idempotent request whose body can be replayed is hedged (the same [`Facts`] as a
//!   retry after sending);
//! - every hedge is charged to the balancer's retry budget before it is sent; when the budget
//!   says no there is no hedge (and an [`Event::BudgetExhausted`](crate::Event)): in an outage,
//!   when every endpoint is slow, hedges cannot multiply the load;
//! - a hedge goes to an endpoint the request has not tried, and at most `hedge_max` hedges are
//!   sent per request.
//!
//! The delay is either fixed (`hedge_delay`) or a percentile of the site's recent latencies
//! (`hedge_percentile`, e.g. 95: hedge the slowest 5 %), measured here from the answers of the
//! requests themselves over the last 5 to 10 s. With both set, the fixed delay is the floor of
//! the percentile and stands in for it until enough latencies are known.
//!
//! The decision lives here and in [`Attempts::hedge_delay`](super::Attempts::hedge_delay) /
//! [`Attempts::hedge`](super::Attempts::hedge), so that every loop that can run two attempts at
//! once (the tower layer and [`Client`](crate::Client), hence the C and Python clients) asks the
//! engine rather than restating the rule.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::balancer::Balancer;

use super::policy::Facts;

/// The most hedges one request may send (`hedge_max` is checked against it).
pub const MAX_HEDGES: u32 = 8;

/// A percentile is used only once the site's window holds at least this many latencies.
const MIN_SAMPLES: u64 = 20;

/// Each window covers this long; the percentile reads the current and the previous one.
const WINDOW_NS: u64 = 5_000_000_000;

/// A site's percentile is computed again at most this often.
const RECOMPUTE_NS: u64 = 50_000_000;

/// Latencies are counted in units of 2^10 ns (about 1 µs).
const UNIT_SHIFT: u32 = 10;
/// Sub-buckets per power of two (2^3: a bucket is at most 12.5 % wide).
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Enough buckets for any `u64` latency.
const BUCKETS: usize = SUB + (64 - SUB_BITS as usize) * SUB;

/// Hedging settings (the builder's `hedge_*` options).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct HedgeConfig {
    /// Fixed delay; with a percentile, its floor.
    pub(crate) delay: Option<Duration>,
    /// Percentile of the site's recent latencies, 0 (off) to 100.
    pub(crate) percentile: f64,
    /// Hedges per request.
    pub(crate) max: u32,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            delay: None,
            percentile: 0.0,
            max: 1,
        }
    }
}

impl HedgeConfig {
    /// Whether hedging is on at all.
    pub(crate) fn enabled(&self) -> bool {
        self.delay.is_some() || self.percentile > 0.0
    }

    /// Whether latencies must be recorded (a percentile is asked for).
    pub(crate) fn tracks_latency(&self) -> bool {
        self.percentile > 0.0
    }
}

/// Whether a request that has sent `sent` hedges may send one more (whenever that is): hedging
/// is on, the request is idempotent and replayable, and fewer than `max` hedges were sent.
pub(crate) fn allowed(cfg: &HedgeConfig, facts: Facts, sent: u32) -> bool {
    cfg.enabled() && facts.idempotent && facts.replayable && sent < cfg.max
}

/// The rule, pure: how long to wait before the next hedge of a request, or `None` for no hedge.
///
/// `sent` is the number of hedges the request has sent; `percentile` the site's latency at the
/// configured percentile, when enough is known. No hedge for a request that is not idempotent
/// or not replayable, when hedging is off, or after `max` hedges. With a percentile, the delay
/// is that latency, never below the fixed delay; without a known percentile, the fixed delay
/// (none: no hedge).
pub(crate) fn delay(
    cfg: &HedgeConfig,
    facts: Facts,
    sent: u32,
    percentile: Option<Duration>,
) -> Option<Duration> {
    if !allowed(cfg, facts, sent) {
        return None;
    }
    match (percentile.filter(|_| cfg.tracks_latency()), cfg.delay) {
        (Some(p), Some(floor)) => Some(p.max(floor)),
        (Some(p), None) => Some(p),
        (None, fixed) => fixed,
    }
}

/// How many hedges a balancer has sent, and how they went: see [`Balancer::hedge_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HedgeStats {
    /// Hedges sent (each charged to the retry budget).
    pub sent: u64,
    /// Requests answered by a hedge rather than by the attempt it hedged.
    pub won: u64,
    /// Hedges not sent because the retry budget was spent.
    pub refused: u64,
}

/// The balancer's hedging state: its settings, the sites' recent latencies, the counts.
#[derive(Debug)]
pub(crate) struct Hedging {
    pub(crate) cfg: HedgeConfig,
    /// Per site index; grown on first use of an index.
    sites: RwLock<Vec<Arc<Latencies>>>,
    pub(crate) sent: AtomicU64,
    pub(crate) won: AtomicU64,
    pub(crate) refused: AtomicU64,
}

impl Hedging {
    pub(crate) fn new(cfg: HedgeConfig) -> Self {
        Hedging {
            cfg,
            sites: RwLock::new(Vec::new()),
            sent: AtomicU64::new(0),
            won: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    fn site(&self, site: usize) -> Arc<Latencies> {
        let found = match self.sites.read() {
            Ok(g) => g.get(site).cloned(),
            Err(p) => p.into_inner().get(site).cloned(),
        };
        if let Some(l) = found {
            return l;
        }
        let mut g = match self.sites.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        while g.len() <= site {
            g.push(Arc::new(Latencies::new()));
        }
        g[site].clone()
    }

    /// Count one answer of site `site` that took `latency_ns` (only when a percentile is asked
    /// for: otherwise nothing is kept).
    pub(crate) fn record(&self, site: usize, latency_ns: u64, now_ns: u64) {
        if self.cfg.tracks_latency() {
            self.site(site).record(latency_ns, now_ns);
        }
    }

    /// The site's latency at the configured percentile, when enough is known.
    pub(crate) fn percentile(&self, site: usize, now_ns: u64) -> Option<Duration> {
        if !self.cfg.tracks_latency() {
            return None;
        }
        self.site(site)
            .percentile(self.cfg.percentile, now_ns)
            .map(Duration::from_nanos)
    }

    pub(crate) fn stats(&self) -> HedgeStats {
        HedgeStats {
            sent: self.sent.load(Ordering::Relaxed),
            won: self.won.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

impl Balancer {
    /// How many hedges were sent, won and refused by the budget since the balancer was built
    /// (see [`retry`](crate::retry) and the builder's `hedge_delay`).
    pub fn hedge_stats(&self) -> HedgeStats {
        self.core.hedging.stats()
    }
}

// ===== the latency window =====

/// One window of a site's latencies: a log-linear histogram, lock-free.
#[derive(Debug)]
struct Window {
    /// The window's number (`now / WINDOW_NS + 1`; 0: never used).
    epoch: AtomicU64,
    counts: Box<[AtomicU32]>,
}

impl Window {
    fn new() -> Self {
        Window {
            epoch: AtomicU64::new(0),
            counts: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

/// A site's recent latencies: two windows, the current one and the previous one.
#[derive(Debug)]
struct Latencies {
    windows: [Window; 2],
    /// The last percentile computed (ns) and when (ns; 0: never).
    cached: AtomicU64,
    cached_at: AtomicU64,
}

/// The bucket of a latency.
fn bucket(latency_ns: u64) -> usize {
    let v = latency_ns >> UNIT_SHIFT;
    if v < SUB as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS
    let m = ((v >> (e - SUB_BITS)) as usize) & (SUB - 1);
    SUB + (e - SUB_BITS) as usize * SUB + m
}

/// The largest latency (ns) of a bucket, so that a percentile is never under-estimated.
fn bucket_top(i: usize) -> u64 {
    if i < SUB {
        return ((i as u64) + 1) << UNIT_SHIFT;
    }
    let e = ((i - SUB) / SUB) as u32; // exponent - SUB_BITS
    let m = ((i - SUB) % SUB) as u128;
    // The bucket holds the units [(SUB + m) << e, (SUB + m + 1) << e).
    let top = ((SUB as u128 + m + 1) << e) << UNIT_SHIFT;
    u64::try_from(top).unwrap_or(u64::MAX)
}

impl Latencies {
    fn new() -> Self {
        Latencies {
            windows: [Window::new(), Window::new()],
            cached: AtomicU64::new(0),
            cached_at: AtomicU64::new(0),
        }
    }

    /// The current window, emptied first when it belonged to an older epoch.
    fn current(&self, now_ns: u64) -> &Window {
        let epoch = now_ns / WINDOW_NS + 1;
        let w = &self.windows[(epoch % 2) as usize];
        let seen = w.epoch.load(Ordering::Acquire);
        if seen != epoch
            && w.epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for c in w.counts.iter() {
                c.store(0, Ordering::Relaxed);
            }
        }
        w
    }

    fn record(&self, latency_ns: u64, now_ns: u64) {
        let w = self.current(now_ns);
        w.counts[bucket(latency_ns)].fetch_add(1, Ordering::Relaxed);
    }

    /// The latency at percentile `p` (0–100] over the current and the previous window, in ns;
    /// `None` with fewer than [`MIN_SAMPLES`] latencies.
    fn percentile(&self, p: f64, now_ns: u64) -> Option<u64> {
        let at = self.cached_at.load(Ordering::Acquire);
        if at != 0 && now_ns >= at && now_ns - at < RECOMPUTE_NS {
            return Some(self.cached.load(Ordering::Acquire));
        }
        let epoch = now_ns / WINDOW_NS + 1;
        let live: Vec<&Window> = self
            .windows
            .iter()
            .filter(|w| {
                let e = w.epoch.load(Ordering::Acquire);
                e != 0 && e <= epoch && e + 1 >= epoch
            })
            .collect();
        let count = |i: usize| -> u64 {
            live.iter()
                .map(|w| u64::from(w.counts[i].load(Ordering::Relaxed)))
                .sum()
        };
        let total: u64 = (0..BUCKETS).map(count).sum();
        if total < MIN_SAMPLES {
            // Not cached: the first latencies count as soon as they are in.
            return None;
        }
        let value = {
            let rank = ((p.clamp(0.0, 100.0) / 100.0) * total as f64)
                .ceil()
                .max(1.0) as u64;
            let mut seen = 0u64;
            let mut found = bucket_top(BUCKETS - 1);
            for i in 0..BUCKETS {
                seen += count(i);
                if seen >= rank {
                    found = bucket_top(i);
                    break;
                }
            }
            found
        };
        self.cached.store(value, Ordering::Release);
        self.cached_at.store(now_ns.max(1), Ordering::Release);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const GET: Facts = Facts {
        idempotent: true,
        replayable: true,
    };

    fn cfg(delay: Option<u64>, percentile: f64, max: u32) -> HedgeConfig {
        HedgeConfig {
            delay: delay.map(Duration::from_millis),
            percentile,
            max,
        }
    }

    #[test]
    fn off_by_default_and_only_for_idempotent_replayable_requests() {
        let d = Some(Duration::from_millis(7));
        assert_eq!(delay(&HedgeConfig::default(), GET, 0, d), None);
        let on = cfg(Some(10), 0.0, 1);
        assert_eq!(delay(&on, GET, 0, None), Some(Duration::from_millis(10)));
        let post = Facts {
            idempotent: false,
            replayable: true,
        };
        assert_eq!(delay(&on, post, 0, None), None);
        let streamed = Facts {
            idempotent: true,
            replayable: false,
        };
        assert_eq!(delay(&on, streamed, 0, None), None);
        // At most `max` hedges.
        assert_eq!(delay(&on, GET, 1, None), None);
        assert!(delay(&cfg(Some(10), 0.0, 2), GET, 1, None).is_some());
    }

    #[test]
    fn percentile_with_a_fixed_floor() {
        let p = |ms| Some(Duration::from_millis(ms));
        // Percentile only: nothing until it is known.
        let pct = cfg(None, 95.0, 1);
        assert_eq!(delay(&pct, GET, 0, None), None);
        assert_eq!(delay(&pct, GET, 0, p(3)), p(3));
        // Both: the fixed delay is the floor, and stands in while the percentile is unknown.
        let both = cfg(Some(5), 95.0, 1);
        assert_eq!(delay(&both, GET, 0, p(3)), p(5));
        assert_eq!(delay(&both, GET, 0, p(30)), p(30));
        assert_eq!(delay(&both, GET, 0, None), p(5));
        // A percentile handed in while none is configured is ignored.
        assert_eq!(delay(&cfg(Some(5), 0.0, 1), GET, 0, p(30)), p(5));
    }

    #[test]
    fn buckets_cover_and_bound_their_latencies() {
        let mut last = 0;
        for ns in [
            0,
            1023,
            1024,
            5_000,
            99_999,
            MS,
            3 * MS,
            100 * MS,
            7_000 * MS,
            u64::MAX,
        ] {
            let b = bucket(ns);
            assert!(b < BUCKETS, "{ns}");
            assert!(b >= last, "{ns}: buckets grow with latency");
            last = b;
            let top = bucket_top(b);
            assert!(
                top >= ns || ns > u64::MAX / 2,
                "{ns} above its bucket's top {top}"
            );
            // At most 12.5 % (plus one unit) above the latency.
            if ns > 10_000 && ns < u64::MAX / 2 {
                assert!(
                    (top as f64) <= ns as f64 * 1.125 + 1024.0,
                    "{ns}: top {top}"
                );
            }
        }
    }

    #[test]
    fn percentile_of_recent_latencies() {
        let l = Latencies::new();
        let t0 = 10 * WINDOW_NS;
        for _ in 0..10 {
            l.record(MS, t0);
        }
        // Too few samples.
        assert_eq!(l.percentile(95.0, t0), None);
        // 90 fast, 10 slow: p50 is fast, p95 slow, p90 fast.
        for _ in 0..80 {
            l.record(MS, t0);
        }
        for _ in 0..10 {
            l.record(100 * MS, t0);
        }
        let at = |p, t| l.percentile(p, t).map(|ns| ns / MS);
        assert_eq!(at(50.0, t0 + RECOMPUTE_NS), Some(1));
        assert_eq!(at(95.0, t0 + 2 * RECOMPUTE_NS), Some(100));
        assert_eq!(at(90.0, t0 + 3 * RECOMPUTE_NS), Some(1));
        // Cached within RECOMPUTE_NS.
        assert_eq!(at(50.0, t0 + 3 * RECOMPUTE_NS + 1), Some(1));
        // The previous window still counts; two windows later everything is forgotten.
        assert_eq!(at(95.0, t0 + WINDOW_NS), Some(100));
        assert_eq!(at(95.0, t0 + 2 * WINDOW_NS), None);
    }

    #[test]
    fn hedging_keeps_nothing_without_a_percentile() {
        let h = Hedging::new(cfg(Some(5), 0.0, 1));
        for _ in 0..100 {
            h.record(0, MS, WINDOW_NS);
        }
        assert_eq!(h.percentile(0, WINDOW_NS), None);
        assert!(h.sites.read().unwrap().is_empty());
        let h = Hedging::new(cfg(None, 50.0, 1));
        for _ in 0..100 {
            h.record(2, MS, WINDOW_NS);
        }
        assert_eq!(
            h.percentile(2, WINDOW_NS).map(|d| d.as_nanos() as u64 / MS),
            Some(1)
        );
        assert_eq!(h.percentile(0, WINDOW_NS), None);
        assert_eq!(h.stats(), HedgeStats::default());
    }
}
