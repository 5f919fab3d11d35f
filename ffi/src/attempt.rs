//! The attempts handle: the engine's retry policy for a request sent by the caller's own client.
//!
//! A Go `RoundTripper`, a Java client or a C program sends with its own HTTP stack and asks the
//! engine, after each attempt, whether to stop or where to go next: the same rules (idempotency,
//! replayable bodies, `max_attempts`, `retry_statuses`, the 16-attempt cap) and the same retry
//! budget, one per balancer, as the Rust integrations.

use std::ffi::{c_char, CStr};

use sidekick::retry::{self, Attempts, Decision, GiveUpReason, RetryReason};

use crate::balancer::{balancer_arg, sidekick_balancer};
use crate::error::{sidekick_error, sidekick_status, Failure};
use crate::ffi::{self, Castable};
use crate::lease::{outcome_of, sidekick_lease, sidekick_outcome, LeaseObj};

/// The attempts of one request, from `sidekick_attempts_new`: the endpoints tried, the attempts
/// made and the request's facts. Freed by `sidekick_attempts_free`.
///
/// Used by one thread at a time (it may move between threads); may outlive its balancer.
#[derive(Debug)]
pub struct sidekick_attempts {
    _private: [u8; 0],
}

impl Castable for sidekick_attempts {
    type RustType = Attempts;
}

/// What to do after an attempt (the `decision` of `sidekick_attempts_decide`): one of the
/// `SIDEKICK_DECISION_*` values.
pub type sidekick_decision = u32;

/// Hand the answer to the caller; `*next` is the attempt's lease, still open: finish it
/// (`sidekick_lease_finish`, with your latency) or free it.
pub const SIDEKICK_DECISION_DONE: sidekick_decision = 0;
/// Send the request again to the endpoint of the new lease in `*next` (the previous lease was
/// finished with the outcome); `*reason` is `connect`, `status`, `reset` or `timeout`.
pub const SIDEKICK_DECISION_RETRY: sidekick_decision = 1;
/// Hand the last attempt's result (response or error) to the caller; the lease was finished with
/// the outcome and `*next` is NULL. `*reason` is `not-idempotent`, `not-replayable`,
/// `max-attempts`, `no-endpoint`, `budget-exhausted` or `not-retryable`.
pub const SIDEKICK_DECISION_GIVE_UP: sidekick_decision = 2;

fn retry_reason(r: RetryReason) -> &'static CStr {
    match r {
        RetryReason::Connect => c"connect",
        RetryReason::Status => c"status",
        RetryReason::Reset => c"reset",
        RetryReason::Timeout => c"timeout",
        _ => c"retry",
    }
}

fn give_up_reason(r: GiveUpReason) -> &'static CStr {
    match r {
        GiveUpReason::NotIdempotent => c"not-idempotent",
        GiveUpReason::NotReplayable => c"not-replayable",
        GiveUpReason::MaxAttempts => c"max-attempts",
        GiveUpReason::NoEndpoint => c"no-endpoint",
        GiveUpReason::BudgetExhausted => c"budget-exhausted",
        GiveUpReason::NotRetryable => c"not-retryable",
        _ => c"give-up",
    }
}

/// Start the attempts of one request and count it in the balancer's retry budget.
///
/// - `method`: the request's method, e.g. `"GET"` (case-sensitive, as in HTTP);
/// - `idempotency_key`: the request carries an `Idempotency-Key` (or `X-Idempotency-Key`)
///   header, which makes any method idempotent;
/// - `replayable`: the body can be sent again (no body, or one you keep in memory).
///
/// Then `sidekick_attempts_pick` the first lease, send, and after each attempt follow
/// `sidekick_attempts_decide`.
///
/// Ownership: the caller owns `*out` (free it with `sidekick_attempts_free`). NULL:
/// `SIDEKICK_STATUS_NULL_ARGUMENT` for `b`, `method` or `out`; a `method` that is not UTF-8 gives
/// `SIDEKICK_STATUS_INVALID_ARGUMENT`. Threads: any, concurrently. Panics: `SIDEKICK_STATUS_PANIC`.
#[no_mangle]
pub extern "C" fn sidekick_attempts_new(
    b: *const sidekick_balancer,
    method: *const c_char,
    idempotency_key: bool,
    replayable: bool,
    out: *mut *mut sidekick_attempts,
    err: *mut *mut sidekick_error,
) -> sidekick_status {
    ffi::status_boundary(err, || {
        let obj = balancer_arg(b)?;
        let method = match ffi::try_str(method) {
            Ok(Some(m)) => m,
            Ok(None) => return Err(Failure::null("method")),
            Err(()) => return Err(Failure::invalid("method is not UTF-8")),
        };
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let idempotent = retry::is_idempotent_method(method, idempotency_key);
        let attempts = obj.balancer().attempts(idempotent, replayable);
        ffi::write_out(out, ffi::to_boxed_mut_ptr::<sidekick_attempts>(attempts));
        Ok(())
    })
}

/// The lease of the first attempt (or of the next endpoint not tried yet, if called again).
///
/// Returns `SIDEKICK_STATUS_NO_ENDPOINT` when no endpoint is available. Ownership: the caller
/// owns `*out` (end it with `sidekick_attempts_decide`, `sidekick_lease_finish` or
/// `sidekick_lease_free`). NULL: `SIDEKICK_STATUS_NULL_ARGUMENT` for `a` or `out`. Threads: the
/// attempts' user. Panics: `SIDEKICK_STATUS_PANIC`.
#[no_mangle]
pub extern "C" fn sidekick_attempts_pick(
    a: *mut sidekick_attempts,
    out: *mut *mut sidekick_lease,
    err: *mut *mut sidekick_error,
) -> sidekick_status {
    ffi::status_boundary(err, || {
        let attempts = ffi::try_mut(a).ok_or_else(|| Failure::null("a"))?;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let lease = attempts.pick()?;
        ffi::write_out(
            out,
            ffi::to_boxed_mut_ptr::<sidekick_lease>(LeaseObj::new(lease)),
        );
        Ok(())
    })
}

/// After the attempt sent to `lease` ended with `outcome` (a `SIDEKICK_OUTCOME_*`; `status` for
/// `SIDEKICK_OUTCOME_STATUS`), what next: `*decision` is a `SIDEKICK_DECISION_*`, `*reason` a
/// static string saying why (empty for DONE), `*next` the lease to use (see the decisions).
///
/// `intact`: the attempt consumed none of the request body (always true for a replayable one);
/// only then does a connect failure prove that nothing was sent.
///
/// Retries go to an endpoint not tried before, within `max_attempts` (connect failures with
/// the body intact excepted), and a retry that loads a backend again withdraws from the
/// balancer's retry budget. Emits the retry and budget events.
///
/// Ownership: always consumes `lease`, even on failure (then it ends as cancelled); the caller
/// owns `*next` when it is not NULL. NULL: `SIDEKICK_STATUS_NULL_ARGUMENT` for `a`, `lease`,
/// `decision`, `reason` or `next`. An unknown outcome or a status outside 100-599:
/// `SIDEKICK_STATUS_INVALID_ARGUMENT`. Outputs are written only on success. Threads: the
/// attempts' user; may call the event callback on this thread. Panics: `SIDEKICK_STATUS_PANIC`.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub extern "C" fn sidekick_attempts_decide(
    a: *mut sidekick_attempts,
    lease: *mut sidekick_lease,
    outcome: sidekick_outcome,
    status: u16,
    intact: bool,
    decision: *mut sidekick_decision,
    reason: *mut *const c_char,
    next: *mut *mut sidekick_lease,
    err: *mut *mut sidekick_error,
) -> sidekick_status {
    ffi::status_boundary(err, || {
        // Taken first: consumed whatever happens next.
        let lease = ffi::try_take(lease).ok_or_else(|| Failure::null("lease"))?;
        let attempts = ffi::try_mut(a).ok_or_else(|| Failure::null("a"))?;
        for (ptr_is_null, name) in [
            (decision.is_null(), "decision"),
            (reason.is_null(), "reason"),
            (next.is_null(), "next"),
        ] {
            if ptr_is_null {
                return Err(Failure::null(name));
            }
        }
        let outcome = outcome_of(outcome, status)?;
        let (code, why, lease) = match attempts.decide(lease.into_lease(), outcome, intact) {
            Decision::Done(l) => (SIDEKICK_DECISION_DONE, c"", Some(l)),
            Decision::Retry(l, r) => (SIDEKICK_DECISION_RETRY, retry_reason(r), Some(l)),
            Decision::GiveUp(r) => (SIDEKICK_DECISION_GIVE_UP, give_up_reason(r), None),
        };
        ffi::write_out(decision, code);
        ffi::write_out(reason, why.as_ptr());
        let handle = match lease {
            Some(l) => ffi::to_boxed_mut_ptr::<sidekick_lease>(LeaseObj::new(l)),
            None => std::ptr::null_mut(),
        };
        ffi::write_out(next, handle);
        Ok(())
    })
}

/// The attempts decided so far.
///
/// NULL: 0. Threads: the attempts' user. Panics: 0.
#[no_mangle]
pub extern "C" fn sidekick_attempts_count(a: *const sidekick_attempts) -> u32 {
    ffi::boundary(|| ffi::try_ref(a).map_or(0, Attempts::attempts))
}

/// Free the attempts of a request (its leases are independent and stay valid).
///
/// Ownership: consumes `a`. NULL: does nothing. Threads: not concurrently with another use of
/// `a`. Panics: never unwinds.
#[no_mangle]
pub extern "C" fn sidekick_attempts_free(a: *mut sidekick_attempts) {
    ffi::boundary(|| drop(ffi::try_take(a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::SIDEKICK_OUTCOME_CONNECT;

    #[test]
    fn reasons_are_the_engines_names() {
        for r in [
            RetryReason::Connect,
            RetryReason::Status,
            RetryReason::Reset,
            RetryReason::Timeout,
        ] {
            assert_eq!(retry_reason(r).to_str().ok(), Some(r.as_str()));
        }
        for r in [
            GiveUpReason::NotIdempotent,
            GiveUpReason::NotReplayable,
            GiveUpReason::MaxAttempts,
            GiveUpReason::NoEndpoint,
            GiveUpReason::BudgetExhausted,
            GiveUpReason::NotRetryable,
        ] {
            assert_eq!(give_up_reason(r).to_str().ok(), Some(r.as_str()));
        }
    }

    #[test]
    fn bad_arguments_are_refused_and_the_lease_consumed() {
        let mut d = 9;
        let mut why: *const c_char = std::ptr::null();
        let mut next: *mut sidekick_lease = std::ptr::null_mut();
        let st = sidekick_attempts_decide(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            SIDEKICK_OUTCOME_CONNECT,
            0,
            true,
            &mut d,
            &mut why,
            &mut next,
            std::ptr::null_mut(),
        );
        assert_eq!(st, sidekick_status::SIDEKICK_STATUS_NULL_ARGUMENT);
        assert_eq!(d, 9);
        assert!(next.is_null());
    }
}
