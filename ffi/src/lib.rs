//! # sidekick-ffi — the C ABI of the sidekick load balancer
//!
//! JVM, Go and C services keep their own HTTP stacks and ask the engine which endpoint to use:
//!
//! 1. build a `sidekick_balancer` from sidekick-syntax sites and options (a `sidekick_options`
//!    struct or a `key=value` config string); it owns a small tokio runtime whose threads run
//!    the health probes;
//! 2. `sidekick_balancer_pick` hands out a `sidekick_lease` carrying the endpoint's URL;
//! 3. send the request with your own client, then `sidekick_lease_finish` with the outcome
//!    and latency, which feeds load, health and passive ejection.
//!
//! The generated header is `include/sidekick.h`; `README.md` states the conventions (ownership,
//! NULL, panics, threading) that every function follows.
//!
//! Layout: one module per C object; every `unsafe` operation of the crate lives in the private
//! `ffi` module (pointer casts, C strings, callbacks), and every exported body runs inside its
//! panic boundary.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
// C names: `sidekick_balancer`, `sidekick_status`, ...
#![allow(non_camel_case_types)]

mod attempt;
mod balancer;
mod endpoints;
mod error;
mod event;
mod ffi;
mod lease;
mod membership;
mod options;
mod request;

pub use attempt::{
    sidekick_attempts, sidekick_decision, SIDEKICK_DECISION_DONE, SIDEKICK_DECISION_GIVE_UP,
    SIDEKICK_DECISION_RETRY,
};
pub use balancer::sidekick_balancer;
pub use endpoints::sidekick_endpoint_list;
pub use error::{sidekick_error, sidekick_status};
pub use event::{sidekick_event, sidekick_event_callback, sidekick_event_kind};
pub use lease::{
    sidekick_lease, sidekick_outcome, SIDEKICK_OUTCOME_CANCELLED, SIDEKICK_OUTCOME_CONNECT,
    SIDEKICK_OUTCOME_FAILED, SIDEKICK_OUTCOME_RESET, SIDEKICK_OUTCOME_STATUS,
    SIDEKICK_OUTCOME_SUCCESS, SIDEKICK_OUTCOME_TIMEOUT,
};
pub use options::{sidekick_options, SIDEKICK_OPTIONS_VERSION};
pub use request::sidekick_response;

use std::ffi::c_char;

/// The version of this library (the version shared by every sidekick artifact, see
/// `CHANGELOG.md`), as a static NUL-terminated string.
///
/// Ownership: static, never free it. Threads: any. Never fails.
#[no_mangle]
pub extern "C" fn sidekick_version() -> *const c_char {
    ffi::boundary(|| concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast())
}
