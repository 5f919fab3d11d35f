//! The lease handle: one request's claim on an endpoint, ended by a report.

use std::cell::OnceCell;
use std::ffi::{c_char, CString};
use std::time::Duration;

use sidekick::Outcome;

use crate::error::{c_string, sidekick_status, Failure};
use crate::ffi::{self, Castable};

/// How a request sent to a leased endpoint ended (the `outcome` of `sidekick_lease_finish`):
/// one of the `SIDEKICK_OUTCOME_*` values.
pub type sidekick_outcome = u32;

/// It worked: a response the caller is happy with (`status` is ignored).
pub const SIDEKICK_OUTCOME_SUCCESS: sidekick_outcome = 0;
/// A response arrived with HTTP status `status` (100-599); the balancer classifies it (by
/// default 5xx and 429 count as failures; `eject_statuses` may eject). Report every response
/// this way when in doubt.
pub const SIDEKICK_OUTCOME_STATUS: sidekick_outcome = 1;
/// The connection could not be established (nothing was sent): ejects the endpoint. Retry on
/// another endpoint with `sidekick_balancer_pick_excluding`.
pub const SIDEKICK_OUTCOME_CONNECT: sidekick_outcome = 2;
/// The connection broke after the request was sent, before a response: ejects the endpoint.
pub const SIDEKICK_OUTCOME_RESET: sidekick_outcome = 3;
/// No response within the caller's deadline: ejects the endpoint.
pub const SIDEKICK_OUTCOME_TIMEOUT: sidekick_outcome = 4;
/// Failed for a reason that says nothing about the connection: counts as a failure, no ejection.
pub const SIDEKICK_OUTCOME_FAILED: sidekick_outcome = 5;
/// The caller gave up for its own reasons: nothing is learnt (same as `sidekick_lease_free`).
pub const SIDEKICK_OUTCOME_CANCELLED: sidekick_outcome = 6;

/// One request's claim on an endpoint, from `sidekick_balancer_pick`: counts as one request in
/// flight until it is ended, exactly once, by `sidekick_lease_finish` or `sidekick_lease_free`.
///
/// A lease may be moved to and ended on another thread, but must not be used by two threads at
/// once. It may outlive its balancer (ending it then is harmless).
#[derive(Debug)]
pub struct sidekick_lease {
    _private: [u8; 0],
}

#[derive(Debug)]
pub(crate) struct LeaseObj {
    lease: sidekick::Lease,
    /// The URL as a C string, made on the first `sidekick_lease_url` (a pick + finish that never
    /// asks for it does not pay for the copy).
    url: OnceCell<CString>,
}

impl LeaseObj {
    pub(crate) fn new(lease: sidekick::Lease) -> LeaseObj {
        LeaseObj {
            lease,
            url: OnceCell::new(),
        }
    }

    /// The engine's lease, to end it through the attempt policy.
    pub(crate) fn into_lease(self) -> sidekick::Lease {
        self.lease
    }
}

impl Castable for sidekick_lease {
    type RustType = LeaseObj;
}

/// The endpoint URL to send the request to, e.g. `"http://10.0.0.1:9000"` (with the endpoint's
/// base path, if its site spec had one; no trailing `/`). Append the request's path and query.
///
/// Ownership: borrowed from `lease`; valid until the lease is finished or freed.
/// NULL: returns NULL when `lease` is NULL. Threads: the lease's user (not concurrently with
/// another use of the same lease). Panics: returns NULL.
#[no_mangle]
pub extern "C" fn sidekick_lease_url(lease: *const sidekick_lease) -> *const c_char {
    ffi::boundary(|| match ffi::try_ref(lease) {
        Some(l) => l.url.get_or_init(|| c_string(l.lease.url())).as_ptr(),
        None => std::ptr::null(),
    })
}

/// The endpoint's id (never 0), stable for the balancer's life: pass it to
/// `sidekick_balancer_pick_excluding` to retry elsewhere, or match it against
/// `sidekick_endpoint_list_id`.
///
/// NULL: returns 0. Threads: any (the value is fixed; no other use of the lease may be freeing
/// it). Panics: returns 0.
#[no_mangle]
pub extern "C" fn sidekick_lease_id(lease: *const sidekick_lease) -> u64 {
    ffi::boundary(|| ffi::try_ref(lease).map_or(0, |l| l.lease.id()))
}

/// The index of the endpoint's site, 0 for the first.
///
/// NULL: returns 0. Threads: as `sidekick_lease_id`. Panics: returns 0.
#[no_mangle]
pub extern "C" fn sidekick_lease_site(lease: *const sidekick_lease) -> u32 {
    ffi::boundary(|| {
        ffi::try_ref(lease).map_or(0, |l| u32::try_from(l.lease.site()).unwrap_or(u32::MAX))
    })
}

pub(crate) fn outcome_of(outcome: sidekick_outcome, status: u16) -> Result<Outcome, Failure> {
    Ok(match outcome {
        SIDEKICK_OUTCOME_SUCCESS => Outcome::Success,
        SIDEKICK_OUTCOME_STATUS if (100..=599).contains(&status) => Outcome::Status(status),
        SIDEKICK_OUTCOME_STATUS => {
            return Err(Failure::invalid(format!(
                "status {status} is not an HTTP status (100-599)"
            )))
        }
        SIDEKICK_OUTCOME_CONNECT => Outcome::Connect,
        SIDEKICK_OUTCOME_RESET => Outcome::Reset,
        SIDEKICK_OUTCOME_TIMEOUT => Outcome::Timeout,
        SIDEKICK_OUTCOME_FAILED => Outcome::Failed,
        SIDEKICK_OUTCOME_CANCELLED => Outcome::Cancelled,
        other => return Err(Failure::invalid(format!("unknown outcome {other}"))),
    })
}

/// Report how the request went and end the lease: feeds the endpoint's latency estimate, load,
/// statistics and passive ejection.
///
/// - `outcome`: a `SIDEKICK_OUTCOME_*` value; `status` is the HTTP status for
///   `SIDEKICK_OUTCOME_STATUS` (ignored otherwise).
/// - `latency_us`: the request's latency in microseconds as you measured it (e.g. to the response
///   head); 0 lets the balancer measure from the pick to this call.
///
/// Ownership: always consumes `lease`, even on failure: with an unknown `outcome` or a `status`
/// outside 100-599 it returns `SIDEKICK_STATUS_INVALID_ARGUMENT` and ends the lease as cancelled.
/// NULL: `SIDEKICK_STATUS_NULL_ARGUMENT`. Threads: any (not concurrently with another use of the
/// same lease). May call the event callback (an ejection) on this thread.
/// Panics: `SIDEKICK_STATUS_PANIC` (the lease is then released as cancelled).
#[no_mangle]
pub extern "C" fn sidekick_lease_finish(
    lease: *mut sidekick_lease,
    outcome: sidekick_outcome,
    status: u16,
    latency_us: u64,
) -> sidekick_status {
    ffi::status_boundary(std::ptr::null_mut(), || {
        let obj = ffi::try_take(lease).ok_or_else(|| Failure::null("lease"))?;
        // On a bad outcome the lease drops here: the engine counts it as cancelled.
        let outcome = outcome_of(outcome, status)?;
        let LeaseObj { lease, .. } = *obj;
        match latency_us {
            0 => lease.finish(outcome),
            us => lease.finish_with_latency(outcome, Duration::from_micros(us)),
        }
        Ok(())
    })
}

/// End a lease without a report (the request was not sent, or you gave up): counts as cancelled,
/// nothing is learnt about the endpoint.
///
/// Ownership: consumes `lease`. NULL: does nothing. Threads: any (not concurrently with another
/// use of the same lease). Panics: never unwinds.
#[no_mangle]
pub extern "C" fn sidekick_lease_free(lease: *mut sidekick_lease) {
    ffi::boundary(|| drop(ffi::try_take(lease)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_and_reject_bad_values() {
        assert_eq!(
            outcome_of(SIDEKICK_OUTCOME_SUCCESS, 0).unwrap(),
            Outcome::Success
        );
        assert_eq!(
            outcome_of(SIDEKICK_OUTCOME_STATUS, 503).unwrap(),
            Outcome::Status(503)
        );
        assert!(outcome_of(SIDEKICK_OUTCOME_STATUS, 42).is_err());
        assert!(outcome_of(SIDEKICK_OUTCOME_STATUS, 600).is_err());
        assert!(outcome_of(7, 200).is_err());
        assert_eq!(
            outcome_of(SIDEKICK_OUTCOME_CANCELLED, 0).unwrap(),
            Outcome::Cancelled
        );
    }
}
