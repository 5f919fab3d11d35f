//! State changes delivered to a C callback.

use std::ffi::{c_char, c_void, CString};

use crate::error::c_string;
use crate::ffi::EventSink;

/// What happened to an endpoint (the `kind` of a `sidekick_event`). Handle unknown values
/// (a `default:` branch): later versions may add kinds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sidekick_event_kind {
    /// The probes say the endpoint is up: it entered rotation (`downtime_ms` is set).
    SIDEKICK_EVENT_KIND_UP = 1,
    /// The probes say the endpoint is down (`reason` is the probe's error).
    SIDEKICK_EVENT_KIND_DOWN = 2,
    /// Passive ejection took the endpoint out of rotation (`reason`: `connect`, `timeout`, `status`).
    SIDEKICK_EVENT_KIND_EJECTED = 3,
    /// An ejected endpoint is back in rotation.
    SIDEKICK_EVENT_KIND_RETURNED = 4,
    /// The request helper retries on another endpoint after a failure on this one (`attempt` is
    /// the attempt that failed, `reason`: `connect`, `reset`, `timeout` or `status`; `site` is 0).
    SIDEKICK_EVENT_KIND_RETRY = 5,
    /// The request helper wanted to retry but the retry budget is spent (`site` is 0).
    SIDEKICK_EVENT_KIND_BUDGET_EXHAUSTED = 6,
    /// An endpoint joined a site at run time (`sidekick_balancer_add_endpoint`, ...).
    SIDEKICK_EVENT_KIND_ADDED = 7,
    /// An endpoint left its site at run time: it is no longer picked.
    SIDEKICK_EVENT_KIND_REMOVED = 8,
    /// An event this version of the C API does not know.
    SIDEKICK_EVENT_KIND_OTHER = 99,
}

/// One event, passed to a `sidekick_event_callback`. Every pointer in it is borrowed and valid
/// only until the callback returns: copy what you keep.
#[repr(C)]
#[derive(Debug)]
pub struct sidekick_event {
    /// What happened.
    pub kind: sidekick_event_kind,
    /// The endpoint URL (never NULL).
    pub endpoint: *const c_char,
    /// Index of the endpoint's site, 0 for the first.
    pub site: u32,
    /// Why (see `sidekick_event_kind`), or NULL.
    pub reason: *const c_char,
    /// `SIDEKICK_EVENT_KIND_UP`: how long the endpoint was out of rotation, in milliseconds.
    pub downtime_ms: u64,
    /// `SIDEKICK_EVENT_KIND_RETRY`: the attempt that failed (1 for the first).
    pub attempt: u32,
}

/// Called on every endpoint state change and retry (set with `sidekick_options.on_event`).
///
/// It runs on the balancer's runtime threads (probe results) and on the threads that call
/// `sidekick_lease_finish` / `sidekick_balancer_request` (ejections, retries), possibly on several
/// threads at once: it must be thread-safe, quick and non-blocking. It must not call
/// `sidekick_balancer_free`, `sidekick_balancer_ready` or `sidekick_balancer_request` (they would
/// deadlock or fail with `SIDEKICK_STATUS_RUNTIME`). `event` is valid only during the call.
pub type sidekick_event_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const sidekick_event)>;

/// Turn an engine event into its C form and hand it to the sink.
pub(crate) fn deliver(sink: &EventSink, event: &sidekick::Event) {
    use sidekick::Event;
    use sidekick_event_kind::*;
    let (kind, endpoint, site, reason, downtime_ms, attempt): (
        _,
        &str,
        usize,
        Option<&str>,
        u64,
        u32,
    ) = match event {
        Event::Up {
            endpoint,
            site,
            downtime,
        } => (
            SIDEKICK_EVENT_KIND_UP,
            endpoint,
            *site,
            None,
            u64::try_from(downtime.as_millis()).unwrap_or(u64::MAX),
            0,
        ),
        Event::Down {
            endpoint,
            site,
            reason,
        } => (
            SIDEKICK_EVENT_KIND_DOWN,
            endpoint,
            *site,
            Some(reason),
            0,
            0,
        ),
        Event::Ejected {
            endpoint,
            site,
            reason,
        } => (
            SIDEKICK_EVENT_KIND_EJECTED,
            endpoint,
            *site,
            Some(reason.as_str()),
            0,
            0,
        ),
        Event::Returned { endpoint, site } => {
            (SIDEKICK_EVENT_KIND_RETURNED, endpoint, *site, None, 0, 0)
        }
        Event::Retry {
            endpoint,
            attempt,
            reason,
        } => (
            SIDEKICK_EVENT_KIND_RETRY,
            endpoint,
            0,
            Some(reason),
            0,
            *attempt,
        ),
        Event::BudgetExhausted { endpoint } => (
            SIDEKICK_EVENT_KIND_BUDGET_EXHAUSTED,
            endpoint,
            0,
            None,
            0,
            0,
        ),
        Event::Added { endpoint, site } => (SIDEKICK_EVENT_KIND_ADDED, endpoint, *site, None, 0, 0),
        Event::Removed { endpoint, site } => {
            (SIDEKICK_EVENT_KIND_REMOVED, endpoint, *site, None, 0, 0)
        }
        _ => (SIDEKICK_EVENT_KIND_OTHER, "", 0, None, 0, 0),
    };
    let endpoint = c_string(endpoint);
    let reason: Option<CString> = reason.map(c_string);
    let ev = sidekick_event {
        kind,
        endpoint: endpoint.as_ptr(),
        site: u32::try_from(site).unwrap_or(u32::MAX),
        reason: reason.as_ref().map_or(std::ptr::null(), |r| r.as_ptr()),
        downtime_ms,
        attempt,
    };
    sink.deliver(&ev);
}
