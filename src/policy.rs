//! Choosing an endpoint inside a site: the [`Policy`], and the selection it makes among the
//! site's available endpoints by their load score (`load`).
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
//! - between samples the estimate relaxes toward half the site's typical latency, with a time
//!   constant of `decay / 8`, so an endpoint penalised by a one-off slow answer or a failure is
//!   tried again within the decay period instead of being starved (see `load`'s module docs);
//! - an endpoint never measured is seeded with the site's typical latency (or `default_rtt` when the
//!   site has no sample yet): not zero, which would flood it, nor huge, which would starve it.
//!
//! The other policies are `least` (fewest requests in flight, ties broken at random; it scans the
//! site, O(n)), `round-robin` and `random`.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::Error;
use crate::load::{Load, LoadConfig};

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
///
/// An endpoint in slow start, with a weight `w` below 1, keeps the policy's choice only with
/// probability `w`; otherwise the policy chooses again among the others (and the first choice
/// stands when there is no other). Its share of picks is so `w` times what it would be, whatever
/// the policy, at the cost of one atomic read per pick when no endpoint is in slow start.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn select<C: Candidate>(
    policy: Policy,
    list: &[C],
    rr: &AtomicUsize,
    now_ns: u64,
    seed_ns: f64,
    cfg: &LoadConfig,
    eligible: impl Fn(&C) -> bool,
) -> Option<usize> {
    let first = select_once(policy, list, rr, now_ns, seed_ns, cfg, &eligible)?;
    let w = list[first].load().weight(now_ns, cfg);
    if w >= 1.0 || crate::random::f64() < w {
        return Some(first);
    }
    let chosen = &list[first];
    let other = select_once(policy, list, rr, now_ns, seed_ns, cfg, |c: &C| {
        !std::ptr::eq(c, chosen) && eligible(c)
    });
    Some(other.unwrap_or(first))
}

/// One choice of `policy`, weights aside (see [`select`]).
#[allow(clippy::too_many_arguments)]
#[inline]
fn select_once<C: Candidate>(
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
                let (a, b, coin) = crate::random::two_below(n);
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
                            if coin {
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
            // Two passes and one random draw: the fewest in flight and how many tie at it, then
            // the tie drawn uniformly (a draw per tie, as reservoir sampling takes, costs more
            // than the second pass on a large site where most endpoints are idle).
            let mut best_inflight = u32::MAX;
            let mut ties = 0usize;
            for c in list.iter().filter(|c| eligible(c)) {
                let f = c.load().inflight();
                if f < best_inflight {
                    best_inflight = f;
                    ties = 1;
                } else if f == best_inflight {
                    ties += 1;
                }
            }
            if ties == 0 {
                return None;
            }
            let mut k = crate::random::below(ties);
            for (i, c) in list.iter().enumerate() {
                // In flight may have moved since the first pass: a candidate at or below the
                // minimum counts, so the pass ends even then.
                if eligible(c) && c.load().inflight() <= best_inflight {
                    if k == 0 {
                        return Some(i);
                    }
                    k -= 1;
                }
            }
            // Every tie left between the passes: any endpoint still eligible will do.
            scan_from(list, 0, &eligible)
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
        LoadConfig::new(10_000.0 * MS, 10.0 * MS, 1_000.0 * MS, 0)
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
    fn p2c_never_picks_the_worst_of_two() {
        let c = cfg();
        let list = cands(2);
        list[0].load.observe(100.0 * MS, 0, MS, &c);
        list[1].load.observe(1.0 * MS, 0, MS, &c);
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

    #[test]
    fn an_endpoint_in_slow_start_gets_its_weight_times_its_share() {
        let mut c = cfg();
        c.slow_start_ns = 1_000;
        let list = cands(4);
        // Weight 0.1 + 0.9 × 0.5 = 0.55 at the middle of the ramp.
        list[0].load.begin_ramp(0, &c).expect("on");
        let rr = AtomicUsize::new(0);
        for p in [Policy::PeakEwma, Policy::Random, Policy::RoundRobin] {
            let mut counts = [0u32; 4];
            for _ in 0..20_000 {
                counts[select(p, &list, &rr, 500, MS, &c, ok).unwrap()] += 1;
            }
            // Fair share 5000: 0.55 × 5000 = 2750 expected for the ramping one (round-robin, whose
            // second choice moves its counter on, gives it about 3100).
            assert!((2_400..3_300).contains(&counts[0]), "{p}: {counts:?}");
            // After the window it is back to its fair share.
            let mut after = 0u32;
            for _ in 0..20_000 {
                after += u32::from(select(p, &list, &rr, 2_000, MS, &c, ok).unwrap() == 0);
            }
            assert!((4_500..5_500).contains(&after), "{p}: {after}");
        }
        // Alone (or the only eligible one), it is still chosen.
        let one = cands(2);
        one[0].load.begin_ramp(0, &c).expect("on");
        let only0 = |x: &C| std::ptr::eq(x, &one[0]);
        for _ in 0..100 {
            assert_eq!(
                select(Policy::PeakEwma, &one, &rr, 0, MS, &c, only0),
                Some(0)
            );
        }
    }
}
