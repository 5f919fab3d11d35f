//! The attempts of one request, driven by the caller's own loop: [`Balancer::attempts`].
//!
//! [`Attempts`] applies [`judge`](super::judge) and adds its two effects: it picks the next
//! endpoint (never one already tried, falling over to the next site) and charges the balancer's
//! budget. It holds no body, no future and no HTTP type, so any async (or blocking) loop can use
//! it: the tower layer, the aws connector, the reqwest middleware, the sidecar, and the C and
//! Python bindings.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::balancer::{Balancer, Core, Lease, Outcome};
use crate::endpoint::EndpointId;
use crate::error::Error;
use crate::event::Event;

use super::hedge;
use super::policy::{judge, Facts, GiveUpReason, History, Limits, RetryReason, Verdict};

/// What to do after an attempt, from [`Attempts::decide`].
#[derive(Debug)]
#[must_use = "a Retry holds the next lease, a Done the lease to finish"]
pub enum Decision {
    /// Hand the answer to the caller. The lease is returned unfinished: finish it when the
    /// answer is complete enough to judge (usually at once, with the same outcome, or later with
    /// [`Lease::finish_with_latency`]). Dropping it counts as cancelled.
    Done(Lease),
    /// Send the request again, to the endpoint of this lease (already picked, excluding every
    /// endpoint tried). The previous lease was finished with its outcome.
    Retry(Lease, RetryReason),
    /// Hand the last attempt's result (its response or its error) to the caller, for this
    /// reason. The lease was finished with its outcome.
    GiveUp(GiveUpReason),
}

/// The attempts of one request: see [`Balancer::attempts`].
pub struct Attempts {
    core: Arc<Core>,
    facts: Facts,
    history: History,
    /// Endpoints already tried; allocated only when a request is retried or hedged.
    tried: Vec<EndpointId>,
    /// Hedges sent, and their endpoints (to tell a hedge's win).
    hedges: Vec<EndpointId>,
}

impl std::fmt::Debug for Attempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempts")
            .field("facts", &self.facts)
            .field("history", &self.history)
            .field("tried", &self.tried)
            .field("hedges", &self.hedges)
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// Start the attempts of one request, counting it in the retry budget.
    ///
    /// - `idempotent`: repeating the request is safe ([`is_idempotent`](super::is_idempotent));
    /// - `replayable`: its body can be sent again (empty, or buffered by the caller).
    ///
    /// Then [`Attempts::pick`] the first endpoint, send, and after each attempt follow
    /// [`Attempts::decide`]:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), sidekick::Error> {
    /// use sidekick::retry::Decision;
    /// use sidekick::Outcome;
    ///
    /// let balancer = sidekick::Balancer::builder()
    ///     .site("http://127.0.0.1:{9001...9003}")
    ///     .health_check(false)
    ///     .build()?;
    /// let mut attempts = balancer.attempts(true, true);
    /// let mut lease = attempts.pick()?;
    /// // Say the first endpoint answers 503 and the second 200.
    /// let mut answers = [Outcome::Status(503), Outcome::Status(200)].into_iter();
    /// loop {
    ///     // ... send the request to lease.url() with any HTTP stack ...
    ///     let outcome = answers.next().unwrap_or(Outcome::Status(200));
    ///     match attempts.decide(lease, outcome, true) {
    ///         Decision::Retry(next, reason) => {
    ///             println!("again on {} after {}", next.url(), reason.as_str());
    ///             lease = next;
    ///         }
    ///         Decision::Done(done) => {
    ///             done.finish(outcome); // or later, with your own latency
    ///             break;
    ///         }
    ///         Decision::GiveUp(why) => {
    ///             println!("returning the last result: {}", why.as_str());
    ///             break;
    ///         }
    ///     }
    /// }
    /// assert_eq!(attempts.attempts(), 2);
    /// # Ok(()) }
    /// ```
    pub fn attempts(&self, idempotent: bool, replayable: bool) -> Attempts {
        let core = self.core.clone();
        core.budget.deposit(core.coarse_ns());
        Attempts {
            core,
            facts: Facts {
                idempotent,
                replayable,
            },
            history: History::default(),
            tried: Vec::new(),
            hedges: Vec::new(),
        }
    }
}

impl Attempts {
    /// The balancer these attempts belong to.
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The lease of the first attempt (the next endpoint not tried yet, if called again).
    /// Fails with [`Error::is_no_endpoint`] when no endpoint is available.
    pub fn pick(&mut self) -> Result<Lease, Error> {
        self.core.pick(&self.tried)
    }

    /// After the attempt sent to `lease` ended with `outcome`, what next. `body_intact` is true
    /// when the attempt consumed none of the request body (always true for a replayable body):
    /// only then does a connect failure prove that nothing was sent.
    ///
    /// A retry picks the next endpoint first (none left: [`GiveUpReason::NoEndpoint`]), then,
    /// when the retry loads a backend again (anything but a connect failure with the body
    /// intact), withdraws from the budget ([`GiveUpReason::BudgetExhausted`] and an
    /// [`Event::BudgetExhausted`](crate::Event::BudgetExhausted) when it is spent). A retry
    /// emits [`Event::Retry`](crate::Event::Retry). See [`Decision`] for who finishes `lease`.
    pub fn decide(&mut self, lease: Lease, outcome: Outcome, body_intact: bool) -> Decision {
        self.history.record(outcome, body_intact);
        let limits = Limits {
            max_attempts: self.core.cfg.retry.max_attempts,
            statuses: &self.core.cfg.retry.statuses,
        };
        let (reason, charged) =
            match judge(&limits, self.facts, &self.history, outcome, body_intact) {
                Verdict::Done => {
                    self.answered(&lease);
                    return Decision::Done(lease);
                }
                Verdict::GiveUp(why) => {
                    lease.finish(outcome);
                    return Decision::GiveUp(why);
                }
                Verdict::Retry { reason, charged } => (reason, charged),
            };
        self.exclude(lease.id());
        let url = lease.url().to_string();
        lease.finish(outcome);
        let Ok(next) = self.core.pick(&self.tried) else {
            return Decision::GiveUp(GiveUpReason::NoEndpoint);
        };
        if charged && !self.core.budget.withdraw(self.core.coarse_ns()) {
            self.core.emit_budget_exhausted(&url);
            return Decision::GiveUp(GiveUpReason::BudgetExhausted);
        }
        self.core
            .emit_retry(&url, self.history.attempts, reason.as_str());
        Decision::Retry(next, reason)
    }

    /// [`decide`](Self::decide) for a caller that hands the answer (response or error) over as
    /// it is: the lease of the next attempt, or `None` when the answer goes to the caller, the
    /// lease then finished with `outcome` (by `decide` for a give-up, here for a done).
    pub(crate) fn settle(
        &mut self,
        lease: Lease,
        outcome: Outcome,
        body_intact: bool,
    ) -> Option<Lease> {
        match self.decide(lease, outcome, body_intact) {
            Decision::Retry(next, _) => Some(next),
            Decision::Done(done) => {
                done.finish(outcome);
                None
            }
            Decision::GiveUp(_) => None,
        }
    }

    /// How long to wait for an answer from the attempts in flight before [`Attempts::hedge`]
    /// sends one more, for a request whose latest attempt went to site `site`; `None`: no
    /// (further) hedge for this request.
    ///
    /// `None` unless hedging is on (the builder's `hedge_delay` or `hedge_percentile`), the
    /// request is idempotent and replayable, and fewer than `hedge_max` hedges were sent. The
    /// delay is `hedge_delay`, or the site's recent latency at `hedge_percentile` (never below
    /// `hedge_delay` when both are set): see the [`retry`](super) module documentation.
    pub fn hedge_delay(&self, site: usize) -> Option<Duration> {
        let h = &self.core.hedging;
        if !h.cfg.enabled() {
            return None;
        }
        let pct = h.percentile(site, self.core.now_ns());
        hedge::delay(&h.cfg, self.facts, self.hedges.len() as u32, pct)
    }

    /// Send a hedge now: the lease of another endpoint for a second (third, ...) concurrent
    /// attempt, while the attempts of the leases `in_flight` (the first one: the attempt
    /// hedged) still wait for their answers. Send the request to it as to any attempt, pass
    /// whichever answer comes first to [`Attempts::decide`], and once it says
    /// [`Decision::Done`], drop the other attempts (a dropped lease finishes as
    /// [`Outcome::Cancelled`]: not held against its endpoint).
    ///
    /// `None` (no hedge) when [`Attempts::hedge_delay`] would say so, when every endpoint was
    /// tried or is in flight, or when the retry budget is spent: a hedge is charged like a
    /// retry (then [`Event::BudgetExhausted`](crate::Event::BudgetExhausted) is emitted and
    /// [`HedgeStats::refused`](super::HedgeStats) counts it). A hedge sent emits
    /// [`Event::HedgeSent`](crate::Event::HedgeSent); an answer from it that wins emits
    /// [`Event::HedgeWon`](crate::Event::HedgeWon).
    pub fn hedge(&mut self, in_flight: &[&Lease]) -> Option<Lease> {
        let core = self.core.clone();
        let h = &core.hedging;
        if !hedge::allowed(&h.cfg, self.facts, self.hedges.len() as u32) {
            return None;
        }
        for lease in in_flight {
            self.exclude(lease.id());
        }
        let next = core.pick(&self.tried).ok()?;
        if !core.budget.withdraw(core.coarse_ns()) {
            h.refused.fetch_add(1, Ordering::Relaxed);
            core.emit_budget_exhausted(next.url());
            return None;
        }
        self.exclude(next.id());
        self.hedges.push(next.id());
        h.sent.fetch_add(1, Ordering::Relaxed);
        core.emit(Event::HedgeSent {
            endpoint: next.url().to_string(),
            hedged: in_flight
                .first()
                .map(|l| l.url().to_string())
                .unwrap_or_default(),
            hedge: self.hedges.len() as u32,
        });
        Some(next)
    }

    /// An attempt's answer goes to the caller: feed the site's latencies, tell a hedge's win.
    fn answered(&self, lease: &Lease) {
        let h = &self.core.hedging;
        if h.cfg.tracks_latency() {
            let now = self.core.now_ns();
            h.record(lease.site(), now.saturating_sub(lease.started_ns()), now);
        }
        if self.hedges.contains(&lease.id()) {
            h.won.fetch_add(1, Ordering::Relaxed);
            self.core.emit(Event::HedgeWon {
                endpoint: lease.url().to_string(),
            });
        }
    }

    /// Hedges sent so far.
    pub fn hedges(&self) -> u32 {
        self.hedges.len() as u32
    }

    /// Never pick `endpoint` for this request (e.g. the node whose answer broke, when the
    /// request fetches the rest of that answer elsewhere).
    pub fn exclude(&mut self, endpoint: EndpointId) {
        if !self.tried.contains(&endpoint) {
            self.tried.push(endpoint);
        }
    }

    /// Attempts made so far (decided ones).
    pub fn attempts(&self) -> u32 {
        self.history.attempts
    }

    /// Attempts so far that (possibly) reached a backend.
    pub fn sent(&self) -> u32 {
        self.history.sent
    }

    /// The endpoints tried and not to be picked again.
    pub fn tried(&self) -> &[EndpointId] {
        &self.tried
    }
}
