//! Passive ejection, its bound, and the way back.
//!
//! Active probes are slow to notice a dead backend (up to an interval plus jitter); the traffic
//! itself notices at once. So:
//!
//! - a **connection-level failure** (refused, reset before any response, connect or TLS timeout)
//!   ejects the endpoint immediately;
//! - a run of `eject_after` consecutive **failed responses** whose status is in the user's
//!   `eject_statuses` set ejects it too (the set is empty by default: an HTTP answer proves the
//!   backend is alive, and a `503 SlowDown` is load, not death).
//!
//! **Ejection is bounded.** Passive signals can lie — a client-side problem (file descriptors, a
//! local firewall) makes *every* backend look dead. The rule: within a site, passive ejection may
//! take out at most `max_ejected_share` (default 50 %) of the endpoints the probes say are up,
//! counted *after* the candidate ejection, and never the last one. An endpoint the rule keeps in
//! rotation still carries its failure penalty in the load score, so it receives little traffic.
//! Only active probes (or its own successes) can empty a site — and then traffic fails over to the
//! next site.
//!
//! **The way back.** With probes on, an ejected endpoint returns on its next passing probe. With
//! probes off it returns through a *single trial request* after a jittered exponential backoff
//! (`eject_backoff`, 1 s doubling to 60 s by default): exactly one request is let through; success
//! re-admits the endpoint, failure ejects it again with a doubled backoff.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Ejection settings (the builder's `eject_*` options).
#[derive(Clone, Debug)]
pub(crate) struct EjectConfig {
    pub(crate) statuses: Vec<u16>,
    pub(crate) after: u32,
    pub(crate) max_share: f64,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
}

impl Default for EjectConfig {
    fn default() -> Self {
        EjectConfig {
            statuses: Vec::new(),
            after: 5,
            max_share: 0.5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Why an endpoint was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EjectReason {
    /// The connection could not be established or broke before any response.
    Connect,
    /// The attempt timed out.
    Timeout,
    /// `eject_after` consecutive answers with a status in `eject_statuses`.
    Status,
}

impl EjectReason {
    /// A short, stable name (`connect`, `timeout`, `status`), for metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            EjectReason::Connect => "connect",
            EjectReason::Timeout => "timeout",
            EjectReason::Status => "status",
        }
    }
}

/// May one more endpoint of a site be ejected? `up` = endpoints the probes say are up (or all,
/// with probes off), `ejected` = those already ejected among them.
pub(crate) fn may_eject(up: usize, ejected: usize, max_share: f64) -> bool {
    if up == 0 {
        return false;
    }
    let after = ejected + 1;
    after < up && (after as f64) <= (up as f64) * max_share + 1e-9
}

/// Jittered exponential backoff before the trial request: `base × 2^(n-1)` capped at `max`, then
/// scaled by a factor uniform in `[0.5, 1.0)` so that many clients do not retry in step. `n` is the
/// number of ejections in a row (≥ 1); `u` is uniform in `[0, 1)`.
pub(crate) fn backoff(base: Duration, max: Duration, n: u32, u: f64) -> Duration {
    let exp = n.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << exp).min(max);
    raw.mul_f64(0.5 + 0.5 * u.clamp(0.0, 1.0))
}

// ===== the per-endpoint state machine =====

/// What the probes say about an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// Not probed yet (out of rotation until the first passing probe).
    Unknown,
    /// In rotation, as far as the probes know.
    Up,
    /// The probes say it is down.
    Down,
}

/// Where an ejected endpoint stands with its single trial request (probes off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trial {
    /// No trial: not ejected, or its backoff is still running.
    None,
    /// The backoff is over: the next pick that meets the endpoint takes the trial.
    Ready,
    /// A request has taken the trial and not finished yet.
    Claimed,
}

/// What a finished request says about its endpoint, as the ejection rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// The caller gave up: nothing is learnt (a claimed trial is handed back).
    Cancelled,
    /// An answer or an error that says nothing about the connection; `failed` as the load score
    /// counts it.
    Plain {
        /// Counted as a failure.
        failed: bool,
    },
    /// A response status.
    Status {
        /// In the failure statuses (load score).
        failed: bool,
        /// In `eject_statuses`: counts toward `eject_after`.
        ejecting: bool,
    },
    /// The connection failed, broke before the response or timed out.
    Broken(EjectReason),
}

impl Signal {
    /// Whether the load score counts it as a failure (a cancellation is not counted at all).
    pub(crate) fn failed(self) -> bool {
        match self {
            Signal::Cancelled => false,
            Signal::Plain { failed } | Signal::Status { failed, .. } => failed,
            Signal::Broken(_) => true,
        }
    }
}

/// A state change that a finished request asks of the balancer (it needs the site's view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Eject the endpoint, if the bound lets it go.
    Eject(EjectReason),
    /// Its trial request failed: eject it again with a longer backoff.
    TrialFailed(EjectReason),
    /// Its trial request succeeded: back in rotation.
    Readmit,
}

/// Everything the ejection and return rules remember about one endpoint, as a plain value.
///
/// Every rule is a pure method from one `Standing` to the next, so the rules are tested without
/// I/O or threads; an endpoint keeps its standing in one atomic word ([`StandingCell`]) and
/// applies the rules with compare-and-swap, so the request path never takes a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Standing {
    /// The probes' verdict (with probes off, `Up` from the start).
    pub(crate) health: Health,
    /// Taken out of rotation by passive ejection.
    pub(crate) ejected: bool,
    /// The trial request, while ejected.
    pub(crate) trial: Trial,
    /// Ejections in a row, the backoff exponent; a success ends the run.
    pub(crate) streak: u16,
    /// Consecutive answers with a status in `eject_statuses`.
    pub(crate) fail_run: u32,
}

impl Standing {
    /// A new endpoint: unknown until probed, or up when probes are off.
    pub(crate) fn new(probed: bool) -> Self {
        Standing {
            health: if probed { Health::Unknown } else { Health::Up },
            ejected: false,
            trial: Trial::None,
            streak: 0,
            fail_run: 0,
        }
    }

    /// May a request be sent now? Up and not ejected, or ejected with its trial due.
    #[inline]
    pub(crate) fn pickable(self) -> bool {
        if self.ejected {
            self.trial == Trial::Ready
        } else {
            self.health == Health::Up
        }
    }

    /// An ejected endpoint whose trial is due (the request path asks the cell, see
    /// [`StandingCell::wants_trial`]).
    #[cfg(test)]
    pub(crate) fn wants_trial(self) -> bool {
        self.ejected && self.trial == Trial::Ready
    }

    /// Up by the probes and ejected: what the ejection bound counts.
    pub(crate) fn up_and_ejected(self) -> (bool, bool) {
        let up = self.health == Health::Up;
        (up, up && self.ejected)
    }

    /// A pick takes the endpoint: always, unless it is ejected, where only its due trial may be
    /// taken (once). `None`: not available to this pick.
    #[inline]
    pub(crate) fn claim(self) -> Option<Standing> {
        match (self.ejected, self.trial) {
            (false, _) => Some(self),
            (true, Trial::Ready) => Some(Standing {
                trial: Trial::Claimed,
                ..self
            }),
            (true, _) => None,
        }
    }

    /// A request finished: the new standing, and the change it asks of the balancer.
    /// `eject_after` is the run of ejecting statuses that ejects.
    pub(crate) fn finished(self, signal: Signal, eject_after: u32) -> (Standing, Option<Step>) {
        let mut next = self;
        let was_trial = self.ejected && self.trial == Trial::Claimed;
        let (failed, eject) = match signal {
            Signal::Cancelled => {
                if was_trial {
                    // The trial told us nothing: let another request try.
                    next.trial = Trial::Ready;
                }
                return (next, None);
            }
            Signal::Plain { failed } => (failed, None),
            Signal::Status { failed, ejecting } => {
                let eject = if ejecting {
                    next.fail_run = next.fail_run.saturating_add(1);
                    (next.fail_run >= eject_after).then_some(EjectReason::Status)
                } else {
                    next.fail_run = 0;
                    None
                };
                (failed, eject)
            }
            Signal::Broken(reason) => (true, Some(reason)),
        };
        let step = match (eject, was_trial, failed) {
            (Some(reason), true, _) => Some(Step::TrialFailed(reason)),
            (Some(reason), false, _) => Some(Step::Eject(reason)),
            // Failed without an ejection reason (e.g. a 500): still not healthy enough.
            (None, true, true) => Some(Step::TrialFailed(EjectReason::Status)),
            (None, true, false) => Some(Step::Readmit),
            (None, false, failed) => {
                if !failed && next.fail_run == 0 {
                    next.streak = 0;
                }
                None
            }
        };
        (next, step)
    }

    /// Passive ejection, once the bound has allowed it: only an endpoint that is up and not
    /// ejected yet can go. Starts a trial backoff of `streak` ejections in a row.
    pub(crate) fn eject(self) -> Option<Standing> {
        (self.health == Health::Up && !self.ejected).then_some(Standing {
            ejected: true,
            trial: Trial::None,
            fail_run: 0,
            streak: self.streak.saturating_add(1),
            ..self
        })
    }

    /// The trial request failed: out again, with one more ejection in the run.
    pub(crate) fn trial_failed(self) -> Standing {
        Standing {
            trial: Trial::None,
            streak: self.streak.saturating_add(1),
            ..self
        }
    }

    /// The trial backoff is over: the next pick may take the trial.
    pub(crate) fn trial_due(self) -> Option<Standing> {
        self.ejected.then_some(Standing {
            trial: Trial::Ready,
            ..self
        })
    }

    /// Back in rotation after a passed trial or probe. `None` when it was not ejected.
    pub(crate) fn readmit(self) -> Option<Standing> {
        self.ejected.then_some(Standing {
            ejected: false,
            trial: Trial::None,
            fail_run: 0,
            ..self
        })
    }

    /// The probes changed their verdict: it rules over passive ejection, which ends.
    pub(crate) fn probed(self, health: Health) -> Standing {
        Standing {
            health,
            ejected: false,
            trial: Trial::None,
            fail_run: if health == Health::Up {
                0
            } else {
                self.fail_run
            },
            ..self
        }
    }

    // Packing into one word: fail_run in bits 0-31, streak in 32-47, health in 48-49, trial in
    // 50-51, ejected in 52 (the masks below name the fields the request path reads).

    fn pack(self) -> u64 {
        let health = match self.health {
            Health::Unknown => 0u64,
            Health::Up => 1,
            Health::Down => 2,
        };
        let trial = match self.trial {
            Trial::None => 0u64,
            Trial::Ready => 1,
            Trial::Claimed => 2,
        };
        u64::from(self.fail_run)
            | u64::from(self.streak) << 32
            | health << 48
            | trial << 50
            | u64::from(self.ejected) << 52
    }

    fn unpack(w: u64) -> Standing {
        Standing {
            fail_run: w as u32,
            streak: (w >> 32) as u16,
            health: match (w >> 48) & 3 {
                1 => Health::Up,
                2 => Health::Down,
                _ => Health::Unknown,
            },
            trial: match (w >> 50) & 3 {
                1 => Trial::Ready,
                2 => Trial::Claimed,
                _ => Trial::None,
            },
            ejected: (w >> 52) & 1 == 1,
        }
    }
}

/// `fail_run` and `streak` in a packed [`Standing`].
const RUN_BITS: u64 = (1 << 48) - 1;
const HEALTH_BITS: u64 = 3 << 48;
const HEALTH_UP: u64 = 1 << 48;
const TRIAL_BITS: u64 = 3 << 50;
const TRIAL_READY: u64 = 1 << 50;
const EJECTED: u64 = 1 << 52;

/// One endpoint's [`Standing`], in one atomic word: read without a lock, changed by
/// compare-and-swap.
#[derive(Debug)]
pub(crate) struct StandingCell(AtomicU64);

impl StandingCell {
    pub(crate) fn new(s: Standing) -> Self {
        StandingCell(AtomicU64::new(s.pack()))
    }

    #[inline]
    pub(crate) fn load(&self) -> Standing {
        Standing::unpack(self.0.load(Ordering::Acquire))
    }

    // The request path's questions, answered from the word's bits without unpacking it (see
    // `Standing::pack` for the layout); a test holds each to its `Standing` counterpart.

    /// [`Standing::pickable`].
    #[inline]
    pub(crate) fn pickable(&self) -> bool {
        let w = self.0.load(Ordering::Acquire);
        if w & EJECTED != 0 {
            w & TRIAL_BITS == TRIAL_READY
        } else {
            w & HEALTH_BITS == HEALTH_UP
        }
    }

    /// [`Standing::wants_trial`].
    #[inline]
    pub(crate) fn wants_trial(&self) -> bool {
        self.0.load(Ordering::Acquire) & (EJECTED | TRIAL_BITS) == EJECTED | TRIAL_READY
    }

    /// `Standing::ejected`.
    #[inline]
    pub(crate) fn ejected(&self) -> bool {
        self.0.load(Ordering::Acquire) & EJECTED != 0
    }

    /// In rotation with no run under way (no ejecting statuses in a row, no ejections in a
    /// row): a plain success leaves such a standing as it is, with nothing to do
    /// ([`Standing::finished`]) — the common case, decided on one load.
    #[inline]
    pub(crate) fn settled(&self) -> bool {
        self.0.load(Ordering::Acquire) & (EJECTED | RUN_BITS) == 0
    }

    /// Apply `rule` atomically; returns the standing it was applied to and the one it made, or
    /// `None` when the rule declined. A rule that returns its input unchanged writes nothing.
    pub(crate) fn apply(
        &self,
        mut rule: impl FnMut(Standing) -> Option<Standing>,
    ) -> Option<(Standing, Standing)> {
        let mut made = None;
        let old = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                // A failed exchange runs the rule again on the newer standing.
                made = None;
                let old = Standing::unpack(w);
                let new = rule(old)?;
                made = Some(new);
                (new != old).then(|| new.pack())
            });
        match (old, made) {
            (Ok(w), Some(new)) => Some((Standing::unpack(w), new)),
            // Declined, or unchanged (fetch_update saw `None` from the closure).
            (Err(w), Some(new)) if Standing::unpack(w) == new => Some((new, new)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_answers_as_the_standing_does() {
        let mut seen = 0;
        for health in [Health::Unknown, Health::Up, Health::Down] {
            for trial in [Trial::None, Trial::Ready, Trial::Claimed] {
                for ejected in [false, true] {
                    for (streak, fail_run) in [(0, 0), (1, 0), (0, 1), (u16::MAX, u32::MAX)] {
                        let s = Standing {
                            health,
                            ejected,
                            trial,
                            streak,
                            fail_run,
                        };
                        let cell = StandingCell::new(s);
                        assert_eq!(cell.load(), s);
                        assert_eq!(cell.pickable(), s.pickable(), "{s:?}");
                        assert_eq!(cell.wants_trial(), s.wants_trial(), "{s:?}");
                        assert_eq!(cell.ejected(), s.ejected, "{s:?}");
                        if cell.settled() {
                            seen += 1;
                            let (next, step) = s.finished(Signal::Plain { failed: false }, 3);
                            assert_eq!((next, step), (s, None), "{s:?}");
                        } else {
                            assert!(s.ejected || s.streak != 0 || s.fail_run != 0, "{s:?}");
                        }
                    }
                }
            }
        }
        assert_eq!(seen, 9, "every health and trial with no run, not ejected");
    }

    #[test]
    fn bound_keeps_the_last_endpoint_and_the_share() {
        // 4 up: 1 and 2 may go (≤ 50 %), a third may not.
        assert!(may_eject(4, 0, 0.5));
        assert!(may_eject(4, 1, 0.5));
        assert!(!may_eject(4, 2, 0.5));
        // 2 up: one may go, the last never.
        assert!(may_eject(2, 0, 0.5));
        assert!(!may_eject(2, 1, 0.5));
        assert!(!may_eject(1, 0, 1.0));
        assert!(!may_eject(0, 0, 1.0));
        // share 1.0 still keeps one.
        assert!(may_eject(3, 1, 1.0));
        assert!(!may_eject(3, 2, 1.0));
        // share 0 ejects nothing.
        assert!(!may_eject(10, 0, 0.0));
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let b = Duration::from_secs(1);
        let m = Duration::from_secs(60);
        assert_eq!(backoff(b, m, 1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(b, m, 2, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(b, m, 3, 0.999_999).as_millis(), 3999);
        assert_eq!(backoff(b, m, 20, 0.0), Duration::from_secs(30));
        assert_eq!(backoff(b, m, u32::MAX, 0.0), Duration::from_secs(30));
        for n in 1..10 {
            let lo = backoff(b, m, n, 0.0);
            let hi = backoff(b, m, n, 0.999);
            assert!(lo <= hi && hi <= m);
        }
    }

    const UP: Standing = Standing {
        health: Health::Up,
        ejected: false,
        trial: Trial::None,
        streak: 0,
        fail_run: 0,
    };

    fn status(ejecting: bool) -> Signal {
        Signal::Status {
            failed: true,
            ejecting,
        }
    }

    #[test]
    fn a_broken_connection_asks_for_ejection_at_once() {
        let (s, step) = UP.finished(Signal::Broken(EjectReason::Connect), 5);
        assert_eq!(step, Some(Step::Eject(EjectReason::Connect)));
        let s = s.eject().expect("up endpoints can be ejected");
        assert!(s.ejected && !s.pickable());
        assert_eq!(s.streak, 1);
        // Ejecting twice does nothing; a down endpoint is the probes' business.
        assert_eq!(s.eject(), None);
        assert_eq!(UP.probed(Health::Down).eject(), None);
    }

    #[test]
    fn ejecting_statuses_must_come_in_a_run() {
        let mut s = UP;
        for _ in 0..2 {
            let (n, step) = s.finished(status(true), 3);
            assert_eq!(step, None);
            s = n;
        }
        // Another status breaks the run.
        let (n, step) = s.finished(status(false), 3);
        assert_eq!((n.fail_run, step), (0, None));
        s = n;
        for i in 1..=3 {
            let (n, step) = s.finished(status(true), 3);
            s = n;
            let want = (i == 3).then_some(Step::Eject(EjectReason::Status));
            assert_eq!(step, want, "answer {i}");
        }
        assert_eq!(s.eject().map(|e| e.fail_run), Some(0));
    }

    #[test]
    fn trial_readmits_on_success_and_backs_off_on_failure() {
        let ejected = UP.eject().expect("ejected");
        assert_eq!(ejected.claim(), None, "no trial before the backoff ends");
        let due = ejected.trial_due().expect("due");
        assert!(due.pickable() && due.wants_trial());
        let claimed = due.claim().expect("the first pick takes it");
        assert_eq!(claimed.claim(), None, "only one trial at a time");
        // Cancelled: handed back.
        let (back, step) = claimed.finished(Signal::Cancelled, 5);
        assert_eq!((back.trial, step), (Trial::Ready, None));
        // A 500 on the trial: out again, one more in the run.
        let (s, step) = claimed.finished(Signal::Plain { failed: true }, 5);
        assert_eq!(step, Some(Step::TrialFailed(EjectReason::Status)));
        let again = s.trial_failed();
        assert_eq!((again.streak, again.trial), (2, Trial::None));
        // A success on the next trial: back in rotation, and the next success ends the run.
        let claimed = again.trial_due().and_then(Standing::claim).expect("trial");
        let (s, step) = claimed.finished(Signal::Plain { failed: false }, 5);
        assert_eq!(step, Some(Step::Readmit));
        let s = s.readmit().expect("was ejected");
        assert!(s.pickable() && !s.ejected);
        assert_eq!(s.streak, 2);
        let (s, step) = s.finished(Signal::Plain { failed: false }, 5);
        assert_eq!((s.streak, step), (0, None));
        assert_eq!(s.readmit(), None, "readmitting twice does nothing");
    }

    #[test]
    fn a_trial_that_breaks_is_ejected_again_with_its_reason() {
        let claimed = UP
            .eject()
            .and_then(Standing::trial_due)
            .and_then(Standing::claim)
            .expect("trial");
        let (_, step) = claimed.finished(Signal::Broken(EjectReason::Timeout), 5);
        assert_eq!(step, Some(Step::TrialFailed(EjectReason::Timeout)));
    }

    #[test]
    fn probes_rule_over_ejection() {
        let s = Standing::new(true);
        assert!(!s.pickable(), "unknown until probed");
        assert!(
            Standing::new(false).pickable(),
            "probes off: up from the start"
        );
        let ejected = s.probed(Health::Up).eject().expect("ejected");
        let up = ejected.probed(Health::Up);
        assert!(up.pickable() && !up.ejected && up.trial == Trial::None);
        let down = ejected.probed(Health::Down);
        assert!(!down.pickable() && !down.ejected);
    }

    #[test]
    fn packing_round_trips() {
        let samples = [
            Standing::new(true),
            UP,
            Standing {
                health: Health::Down,
                ejected: true,
                trial: Trial::Claimed,
                streak: u16::MAX,
                fail_run: u32::MAX,
            },
            Standing {
                health: Health::Up,
                ejected: true,
                trial: Trial::Ready,
                streak: 7,
                fail_run: 3,
            },
        ];
        for s in samples {
            assert_eq!(Standing::unpack(s.pack()), s);
        }
    }

    #[test]
    fn cell_applies_rules_and_reports_declines() {
        let cell = StandingCell::new(UP);
        let (old, new) = cell.apply(Standing::eject).expect("applied");
        assert!(!old.ejected && new.ejected);
        assert!(cell.load().ejected);
        assert_eq!(cell.apply(Standing::eject), None, "declined");
        // A rule that changes nothing reports the standing unchanged.
        let (old, new) = cell.apply(Some).expect("unchanged");
        assert_eq!(old, new);
    }
}
