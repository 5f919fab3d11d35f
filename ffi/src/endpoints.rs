//! The endpoint list: a snapshot of every endpoint's state, with accessors by index.

use std::ffi::{c_char, CStr, CString};

use sidekick::{EndpointInfo, EndpointState};

use crate::error::c_string;
use crate::ffi::{self, Castable};

/// A snapshot of a balancer's endpoints, from `sidekick_balancer_endpoints`: `count` entries,
/// site by site, read with the `sidekick_endpoint_list_*` accessors by index (0 to count-1).
///
/// Owned by the caller; free it with `sidekick_endpoint_list_free`. Immutable: its accessors may
/// be called from any thread at once. Strings it returns stay valid until it is freed.
#[derive(Debug)]
pub struct sidekick_endpoint_list {
    _private: [u8; 0],
}

#[derive(Debug)]
struct Entry {
    info: EndpointInfo,
    url: CString,
    last_error: Option<CString>,
}

#[derive(Debug)]
pub(crate) struct EndpointList(Vec<Entry>);

impl EndpointList {
    pub(crate) fn new(infos: Vec<EndpointInfo>) -> EndpointList {
        EndpointList(
            infos
                .into_iter()
                .map(|info| Entry {
                    url: c_string(&info.url),
                    last_error: info.last_error.as_deref().map(c_string),
                    info,
                })
                .collect(),
        )
    }
}

impl Castable for sidekick_endpoint_list {
    type RustType = EndpointList;
}

fn entry<'a>(list: *const sidekick_endpoint_list, i: usize) -> Option<&'a Entry> {
    ffi::try_ref(list).and_then(|l| l.0.get(i))
}

fn state_str(s: EndpointState) -> &'static CStr {
    match s {
        EndpointState::Up => c"up",
        EndpointState::Down => c"down",
        EndpointState::Ejected => c"ejected",
        EndpointState::Trial => c"trial",
        _ => c"unknown",
    }
}

/// The number of endpoints in the list.
///
/// NULL `list`: 0. Threads: any, concurrently. Panics: 0.
#[no_mangle]
pub extern "C" fn sidekick_endpoint_list_count(list: *const sidekick_endpoint_list) -> usize {
    ffi::boundary(|| ffi::try_ref(list).map_or(0, |l| l.0.len()))
}

/// Endpoint `i`'s URL, e.g. `"http://10.0.0.1:9000"`.
///
/// Ownership: borrowed from `list`, valid until it is freed. NULL `list` or `i` out of range:
/// NULL. Threads: any, concurrently. Panics: NULL.
#[no_mangle]
pub extern "C" fn sidekick_endpoint_list_url(
    list: *const sidekick_endpoint_list,
    i: usize,
) -> *const c_char {
    ffi::boundary(|| entry(list, i).map_or(std::ptr::null(), |e| e.url.as_ptr()))
}

/// Endpoint `i`'s id (as `sidekick_lease_id` gives).
///
/// NULL `list` or `i` out of range: 0. Threads: any, concurrently. Panics: 0.
#[no_mangle]
pub extern "C" fn sidekick_endpoint_list_id(list: *const sidekick_endpoint_list, i: usize) -> u64 {
    ffi::boundary(|| entry(list, i).map_or(0, |e| e.info.id))
}

/// Endpoint `i`'s site index, 0 for the first.
///
/// NULL `list` or `i` out of range: 0. Threads: any, concurrently. Panics: 0.
#[no_mangle]
pub extern "C" fn sidekick_endpoint_list_site(
    list: *const sidekick_endpoint_list,
    i: usize,
) -> u32 {
    ffi::boundary(|| entry(list, i).map_or(0, |e| u32::try_from(e.info.site).unwrap_or(u32::MAX)))
}

/// Endpoint `i`'s state: `"up"` (in rotation), `"down"` (probes fail), `"unknown"` (not probed
/// yet), `"ejected"` (passive ejection) or `"trial"` (ejected, its trial request due).
///
/// Ownership: static, never free it. NULL `list` or `i` out of range: NULL.
/// Threads: any, concurrently. Panics: NULL.
#[no_mangle]
pub extern "C" fn sidekick_endpoint_list_state(
    list: *const sidekick_endpoint_list,
    i: usize,
) -> *const c_char {
    ffi::boundary(|| entry(list, i).map_or(std::ptr::null(), |e| state_str(e.info.state).as_ptr()))
}

/// Endpoint `i`'s requests in flight when the list was made.
///
/// NULL `list` or `i` out of range: 0. Threads: any, concurrently. Panics: 0.
#[no_mangle]
pub extern "C" fn sidekick_endpoint_list_inflight(
    list: *const sidekick_endpoint_list,
    i: usize,
) -> u32 {
    ffi::boundary(|| entry(list, i).map_or(0, |e| e.info.inflight))
}

/// Endpoint `i`'s finished requests (every outcome but cancellations).
///
/// NULL `list` or `i` out of range: 0. Threads: any, concurrently. Panics: 0.
#[no_mangle]
pub extern "C" fn sidekick_endpoint_list_requests(
    list: *const sidekick_endpoint_list,
    i: usize,
) -> u64 {
    ffi::boundary(|| entry(list, i).map_or(0, |e| e.info.requests))
}

/// Endpoint `i`'s failed requests (connect errors, resets, timeouts, failure statuses).
///
/// NULL `list` or `i` out of range: 0. Threads: any, concurrently. Panics: 0.
#[no_mangle]
pub extern "C" fn sidekick_endpoint_list_failures(
    list: *const sidekick_endpoint_list,
    i: usize,
) -> u64 {
    ffi::boundary(|| entry(list, i).map_or(0, |e| e.info.failures))
}

/// Times passive ejection took endpoint `i` out.
///
/// NULL `list` or `i` out of range: 0. Threads: any, concurrently. Panics: 0.
#[no_mangle]
pub extern "C" fn sidekick_endpoint_list_ejections(
    list: *const sidekick_endpoint_list,
    i: usize,
) -> u64 {
    ffi::boundary(|| entry(list, i).map_or(0, |e| e.info.ejections))
}

/// Endpoint `i`'s current latency estimate in microseconds, or -1 before its first sample.
///
/// NULL `list` or `i` out of range: -1. Threads: any, concurrently. Panics: 0.
#[no_mangle]
pub extern "C" fn sidekick_endpoint_list_latency_us(
    list: *const sidekick_endpoint_list,
    i: usize,
) -> i64 {
    ffi::boundary(|| {
        entry(list, i)
            .and_then(|e| e.info.latency)
            .map_or(-1, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    })
}

/// Endpoint `i`'s last probe or request error, or NULL when there was none.
///
/// Ownership: borrowed from `list`, valid until it is freed. NULL `list` or `i` out of range:
/// NULL. Threads: any, concurrently. Panics: NULL.
#[no_mangle]
pub extern "C" fn sidekick_endpoint_list_last_error(
    list: *const sidekick_endpoint_list,
    i: usize,
) -> *const c_char {
    ffi::boundary(|| {
        entry(list, i)
            .and_then(|e| e.last_error.as_ref())
            .map_or(std::ptr::null(), |s| s.as_ptr())
    })
}

/// Free an endpoint list.
///
/// Ownership: consumes `list`; strings borrowed from it become invalid. NULL: does nothing.
/// Threads: any, once no other thread reads the list. Panics: never unwinds.
#[no_mangle]
pub extern "C" fn sidekick_endpoint_list_free(list: *mut sidekick_endpoint_list) {
    ffi::boundary(|| drop(ffi::try_take(list)))
}
