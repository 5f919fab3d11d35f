//! Choosing an endpoint inside a site.
//!
//! The default policy is *power of two choices* (P2C) over a *peak-EWMA* load score, the design
//! Finagle and linkerd use and tower ships: draw two distinct endpoints at random and send to the
//! cheaper one. Drawing two instead of scanning all keeps a pick O(1) whatever the number of
//! endpoints, and avoids the herding that "always the least loaded" causes when many clients see
//! the same numbers at the same time.
//!
//! The score of an endpoint is `latency estimate × (in-flight + 1)`:
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
//! The other policies are `least` (fewest requests in flight, ties broken at random; it scans the
//! site, O(n)), `round-robin` and `random`.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::error::Error;

/// How an endpoint is chosen among the available endpoints of a site.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Policy {
    /// Power of two choices over peak-EWMA latency × (in-flight + 1), failures penalised. Default.
    #[default]
    PeakEwma,
    /// Fewest requests in flight; ties broken at random. Scans the site (O(n)).
    Least,
    /// Each available endpoint in turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
}

impl FromStr for Policy {
    type Err = Error;

    /// Accepts `p2c`, `peak-ewma`, `ewma`, `least`, `round-robin`, `rr` and `random`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "p2c" | "peak-ewma" | "ewma" | "peakewma" => Ok(Policy::PeakEwma),
            "least" | "least-requests" => Ok(Policy::Least),
            "round-robin" | "roundrobin" | "rr" => Ok(Policy::RoundRobin),
            "random" => Ok(Policy::Random),
            other => Err(Error::config(format!(
                "unknown policy `{other}`: expected p2c, least, round-robin or random"
            ))),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::PeakEwma => "p2c",
            Policy::Least => "least",
            Policy::RoundRobin => "round-robin",
            Policy::Random => "random",
        })
    }
}

// ===== load tracking =====

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

// ===== selection =====

/// What a selection needs to know about each candidate.
pub(crate) trait Candidate {
    fn load(&self) -> &Load;
    /// True for an ejected endpoint whose single trial request is due: a draw that meets it takes
    /// it, so the trial happens even though its score is still penalised.
    fn wants_trial(&self) -> bool {
        false
    }
}

/// Pick an index into `list` with `policy`. `list` holds the site's available endpoints; entries
/// may have become ineligible since the list was built, or be excluded by the caller, so every
/// policy re-checks eligibility and falls back to a scan when its O(1) draws all miss.
#[allow(clippy::too_many_arguments)]
pub(crate) fn select<C: Candidate>(
    policy: Policy,
    list: &[C],
    rr: &AtomicUsize,
    now_ns: u64,
    seed_ns: f64,
    cfg: &LoadConfig,
    eligible: impl Fn(&C) -> bool,
) -> Option<usize> {
    let n = list.len();
    match n {
        0 => return None,
        1 => return eligible(&list[0]).then_some(0),
        _ => {}
    }
    match policy {
        Policy::PeakEwma => {
            // A few rounds of two draws; a miss happens only when entries went stale.
            for _ in 0..3 {
                let a = crate::random::below(n);
                let mut b = crate::random::below(n - 1);
                if b >= a {
                    b += 1;
                }
                match (eligible(&list[a]), eligible(&list[b])) {
                    (true, true) => {
                        if list[a].wants_trial() {
                            return Some(a);
                        }
                        if list[b].wants_trial() {
                            return Some(b);
                        }
                        let ca = list[a].load().cost(now_ns, seed_ns, cfg);
                        let cb = list[b].load().cost(now_ns, seed_ns, cfg);
                        // Scores within 1 % are a tie: estimates are noisy, and a fixed winner
                        // would get every request while the other idles.
                        let tie = (ca - cb).abs() <= TIE_TOLERANCE * ca.max(cb);
                        return Some(if tie {
                            if crate::random::bool() {
                                a
                            } else {
                                b
                            }
                        } else if ca < cb {
                            a
                        } else {
                            b
                        });
                    }
                    (true, false) => return Some(a),
                    (false, true) => return Some(b),
                    (false, false) => continue,
                }
            }
            scan_from(list, crate::random::below(n), &eligible)
        }
        Policy::Random => {
            for _ in 0..3 {
                let a = crate::random::below(n);
                if eligible(&list[a]) {
                    return Some(a);
                }
            }
            scan_from(list, crate::random::below(n), &eligible)
        }
        Policy::RoundRobin => {
            let start = rr.fetch_add(1, Ordering::Relaxed) % n;
            scan_from(list, start, &eligible)
        }
        Policy::Least => {
            let mut best: Option<usize> = None;
            let mut best_inflight = u32::MAX;
            let mut ties = 0u32;
            for (i, c) in list.iter().enumerate() {
                if !eligible(c) {
                    continue;
                }
                let f = c.load().inflight();
                if f < best_inflight {
                    best = Some(i);
                    best_inflight = f;
                    ties = 1;
                } else if f == best_inflight {
                    // Reservoir sampling: each tied endpoint ends up chosen with equal chance.
                    ties += 1;
                    if crate::random::below(ties as usize) == 0 {
                        best = Some(i);
                    }
                }
            }
            best
        }
    }
}

/// Relative difference under which two P2C scores count as equal.
const TIE_TOLERANCE: f64 = 0.01;

fn scan_from<C>(list: &[C], start: usize, eligible: &impl Fn(&C) -> bool) -> Option<usize> {
    let n = list.len();
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| eligible(&list[i]))
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

    struct C {
        load: Load,
        ok: bool,
    }
    impl Candidate for C {
        fn load(&self) -> &Load {
            &self.load
        }
    }
    fn ok(c: &C) -> bool {
        c.ok
    }
    fn cands(n: usize) -> Vec<C> {
        (0..n)
            .map(|_| C {
                load: Load::default(),
                ok: true,
            })
            .collect()
    }

    #[test]
    fn policy_parses_and_names_bad_value() {
        assert_eq!("least".parse::<Policy>().unwrap(), Policy::Least);
        assert_eq!("P2C".parse::<Policy>().unwrap(), Policy::PeakEwma);
        assert_eq!("rr".parse::<Policy>().unwrap(), Policy::RoundRobin);
        let e = "fastest".parse::<Policy>().unwrap_err();
        assert!(e.is_config() && e.to_string().contains("fastest"));
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

    #[test]
    fn p2c_never_picks_the_worst_of_two() {
        let c = cfg();
        let list = cands(2);
        list[0].load.observe(100.0 * MS, 0, &c);
        list[1].load.observe(1.0 * MS, 0, &c);
        let rr = AtomicUsize::new(0);
        for _ in 0..200 {
            assert_eq!(select(Policy::PeakEwma, &list, &rr, 0, MS, &c, ok), Some(1));
        }
    }

    #[test]
    fn p2c_spreads_over_equal_endpoints() {
        let c = cfg();
        let list = cands(4);
        let rr = AtomicUsize::new(0);
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            let i = select(Policy::PeakEwma, &list, &rr, 0, MS, &c, ok).unwrap();
            counts[i] += 1;
        }
        for n in counts {
            assert!((700..1300).contains(&n), "{counts:?}");
        }
    }

    #[test]
    fn ineligible_entries_are_skipped_by_every_policy() {
        let c = cfg();
        let mut list = cands(5);
        for (i, e) in list.iter_mut().enumerate() {
            e.ok = i == 3;
        }
        let rr = AtomicUsize::new(0);
        for p in [
            Policy::PeakEwma,
            Policy::Least,
            Policy::RoundRobin,
            Policy::Random,
        ] {
            for _ in 0..50 {
                assert_eq!(select(p, &list, &rr, 0, MS, &c, ok), Some(3), "{p}");
            }
        }
        list[3].ok = false;
        for p in [Policy::PeakEwma, Policy::Least] {
            assert_eq!(select(p, &list, &rr, 0, MS, &c, ok), None);
        }
    }

    #[test]
    fn least_picks_fewest_inflight_with_random_ties() {
        let c = cfg();
        let list = cands(3);
        list[0].load.start();
        let rr = AtomicUsize::new(0);
        let mut seen = [0u32; 3];
        for _ in 0..300 {
            seen[select(Policy::Least, &list, &rr, 0, MS, &c, ok).unwrap()] += 1;
        }
        assert_eq!(seen[0], 0);
        assert!(seen[1] > 100 && seen[2] > 100, "{seen:?}");
    }

    #[test]
    fn round_robin_cycles() {
        let c = cfg();
        let list = cands(3);
        let rr = AtomicUsize::new(0);
        let picks: Vec<_> = (0..6)
            .map(|_| select(Policy::RoundRobin, &list, &rr, 0, MS, &c, ok).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }
}
