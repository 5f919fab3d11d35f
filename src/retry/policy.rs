//! The rule itself, pure and I/O-free: given a request's facts, its history and the last
//! attempt's outcome, may it go to another endpoint?
//!
//! [`judge`] answers without picking and without touching the budget: those are the two effects
//! [`Attempts::decide`](super::Attempts::decide) adds (pick the next endpoint, excluding the ones
//! tried; withdraw from the budget when [`Verdict::Retry`] says the retry is charged).

use crate::balancer::Outcome;

/// At most this many attempts for one request, connect failures included.
pub const MAX_CONNECT_ATTEMPTS: u32 = 16;

/// Why a request goes to another endpoint (also the `reason` of
/// [`Event::Retry`](crate::Event::Retry)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryReason {
    /// The connection could not be established and the body is intact: nothing was sent.
    Connect,
    /// The endpoint answered with one of the balancer's `retry_statuses`.
    Status,
    /// The exchange broke after sending.
    Reset,
    /// No answer in time.
    Timeout,
}

impl RetryReason {
    /// `connect`, `status`, `reset` or `timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Status => "status",
            RetryReason::Reset => "reset",
            RetryReason::Timeout => "timeout",
        }
    }
}

/// Why the last attempt's result goes back to the caller although it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// It was (possibly) received and its method is not idempotent.
    NotIdempotent,
    /// It was (possibly) received and its body cannot be sent again.
    NotReplayable,
    /// `max_attempts` attempts reached a backend, or [`MAX_CONNECT_ATTEMPTS`] were made.
    MaxAttempts,
    /// Every available endpoint was tried.
    NoEndpoint,
    /// The retry budget is spent.
    BudgetExhausted,
    /// The failure is not one a retry can fix ([`Outcome::Failed`], [`Outcome::Cancelled`]).
    NotRetryable,
}

impl GiveUpReason {
    /// `not-idempotent`, `not-replayable`, `max-attempts`, `no-endpoint`, `budget-exhausted` or
    /// `not-retryable`.
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::NotIdempotent => "not-idempotent",
            GiveUpReason::NotReplayable => "not-replayable",
            GiveUpReason::MaxAttempts => "max-attempts",
            GiveUpReason::NoEndpoint => "no-endpoint",
            GiveUpReason::BudgetExhausted => "budget-exhausted",
            GiveUpReason::NotRetryable => "not-retryable",
        }
    }
}

/// What does not change between the attempts of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The method (or an idempotency key) makes repeating the request safe:
    /// see [`is_idempotent`](super::is_idempotent).
    pub idempotent: bool,
    /// The body can be sent again (it is empty or buffered).
    pub replayable: bool,
}

/// The attempts made so far for one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Attempts made, the last one included.
    pub attempts: u32,
    /// Attempts that (possibly) reached a backend, the last one included: every attempt but a
    /// connect failure with the body intact.
    pub sent: u32,
}

impl History {
    /// Count one more attempt that ended with `outcome`; `body_intact` is false when the
    /// attempt consumed some of the body. Returns whether the attempt reached a backend.
    pub fn record(&mut self, outcome: Outcome, body_intact: bool) -> bool {
        self.attempts = self.attempts.saturating_add(1);
        let sent = !(outcome == Outcome::Connect && body_intact);
        if sent {
            self.sent = self.sent.saturating_add(1);
        }
        sent
    }
}

/// The balancer's limits on retrying (`max_attempts`, `retry_statuses`).
#[derive(Clone, Copy, Debug)]
pub struct Limits<'a> {
    /// Attempts that may reach a backend, the first one included.
    pub max_attempts: u32,
    /// Answers retried on another endpoint.
    pub statuses: &'a [u16],
}

/// The rule's answer for one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The answer is the caller's (a response whose status is not retried, or a success).
    Done,
    /// Another endpoint may get the request; `charged` says whether the retry must withdraw
    /// from the budget (it loads a backend again: every retry but a connect failure's).
    Retry {
        /// Why.
        reason: RetryReason,
        /// Whether the budget is asked.
        charged: bool,
    },
    /// The last attempt's result goes back to the caller, for this reason.
    GiveUp(GiveUpReason),
}

/// Judge the attempt just recorded in `history` (see [`History::record`]).
///
/// - A connect failure with the body intact (nothing was sent) is retried for any request,
///   up to [`MAX_CONNECT_ATTEMPTS`] attempts, free of budget.
/// - A response is [`Verdict::Done`] unless its status is in `limits.statuses`.
/// - A retryable status, a reset, a timeout, or a connect failure that consumed the body is
///   retried only for an idempotent request with a replayable body, while fewer than
///   `limits.max_attempts` attempts reached a backend (and fewer than [`MAX_CONNECT_ATTEMPTS`]
///   were made); the retry is charged to the budget.
/// - [`Outcome::Failed`] and [`Outcome::Cancelled`] are never retried.
///
/// When several reasons forbid a retry, the first of this order is given: not retryable,
/// not idempotent, not replayable, max attempts.
pub fn judge(
    limits: &Limits<'_>,
    facts: Facts,
    history: &History,
    outcome: Outcome,
    body_intact: bool,
) -> Verdict {
    let reason = match outcome {
        Outcome::Success => return Verdict::Done,
        Outcome::Status(s) if !limits.statuses.contains(&s) => return Verdict::Done,
        Outcome::Status(_) => RetryReason::Status,
        Outcome::Connect if body_intact => {
            return if history.attempts < MAX_CONNECT_ATTEMPTS {
                Verdict::Retry {
                    reason: RetryReason::Connect,
                    charged: false,
                }
            } else {
                Verdict::GiveUp(GiveUpReason::MaxAttempts)
            };
        }
        Outcome::Connect => RetryReason::Connect,
        Outcome::Reset => RetryReason::Reset,
        Outcome::Timeout => RetryReason::Timeout,
        Outcome::Failed | Outcome::Cancelled => return Verdict::GiveUp(GiveUpReason::NotRetryable),
    };
    if !facts.idempotent {
        Verdict::GiveUp(GiveUpReason::NotIdempotent)
    } else if !facts.replayable {
        Verdict::GiveUp(GiveUpReason::NotReplayable)
    } else if history.sent >= limits.max_attempts || history.attempts >= MAX_CONNECT_ATTEMPTS {
        Verdict::GiveUp(GiveUpReason::MaxAttempts)
    } else {
        Verdict::Retry {
            reason,
            charged: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits<'static> = Limits {
        max_attempts: 3,
        statuses: &[502, 503, 504],
    };
    const GET: Facts = Facts {
        idempotent: true,
        replayable: true,
    };

    fn after(outcomes: &[(Outcome, bool)], facts: Facts) -> Verdict {
        let mut h = History::default();
        let mut v = Verdict::Done;
        for &(o, intact) in outcomes {
            h.record(o, intact);
            v = judge(&LIMITS, facts, &h, o, intact);
        }
        v
    }

    #[test]
    fn answers_are_done_unless_retried_statuses() {
        assert_eq!(after(&[(Outcome::Status(200), true)], GET), Verdict::Done);
        assert_eq!(after(&[(Outcome::Status(500), true)], GET), Verdict::Done);
        assert_eq!(after(&[(Outcome::Success, true)], GET), Verdict::Done);
        assert_eq!(
            after(&[(Outcome::Status(503), true)], GET),
            Verdict::Retry {
                reason: RetryReason::Status,
                charged: true
            }
        );
    }

    #[test]
    fn connect_failures_are_free_and_bounded() {
        let post = Facts {
            idempotent: false,
            replayable: false,
        };
        let one = [(Outcome::Connect, true)];
        assert_eq!(
            after(&one, post),
            Verdict::Retry {
                reason: RetryReason::Connect,
                charged: false
            }
        );
        let many = [(Outcome::Connect, true); MAX_CONNECT_ATTEMPTS as usize];
        assert_eq!(
            after(&many, post),
            Verdict::GiveUp(GiveUpReason::MaxAttempts)
        );
        // A connect failure that consumed the body counts as sent.
        assert_eq!(
            after(&[(Outcome::Connect, false)], post),
            Verdict::GiveUp(GiveUpReason::NotIdempotent)
        );
    }

    #[test]
    fn sent_failures_need_idempotent_replayable_and_room() {
        let reset = [(Outcome::Reset, false)];
        assert_eq!(
            after(&reset, GET),
            Verdict::Retry {
                reason: RetryReason::Reset,
                charged: true
            }
        );
        let streamed = Facts {
            idempotent: true,
            replayable: false,
        };
        assert_eq!(
            after(&reset, streamed),
            Verdict::GiveUp(GiveUpReason::NotReplayable)
        );
        let three = [(Outcome::Timeout, true); 3];
        assert_eq!(
            after(&three, GET),
            Verdict::GiveUp(GiveUpReason::MaxAttempts)
        );
        // Connect failures do not use up max_attempts.
        let mixed = [
            (Outcome::Connect, true),
            (Outcome::Connect, true),
            (Outcome::Timeout, true),
            (Outcome::Status(502), true),
        ];
        assert_eq!(
            after(&mixed, GET),
            Verdict::Retry {
                reason: RetryReason::Status,
                charged: true
            }
        );
        assert_eq!(
            after(&[(Outcome::Failed, true)], GET),
            Verdict::GiveUp(GiveUpReason::NotRetryable)
        );
    }
}
