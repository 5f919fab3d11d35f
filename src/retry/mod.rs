//! The attempt policy: when a failed request may be tried again, where, and how much retrying
//! the whole balancer may do. Written once here and followed by every integration (the tower
//! layer, the aws connector, the reqwest middleware, the sidecar) and every binding (C, Go,
//! Java, Python), so that they cannot drift apart.
//!
//! - [`classify`] turns a transport error into an [`Outcome`](crate::Outcome);
//! - [`judge`] is the rule, pure: request [`Facts`], attempt [`History`], the last outcome →
//!   [`Verdict`];
//! - [`Balancer::attempts`](crate::Balancer::attempts) gives a request's [`Attempts`], which
//!   applies the rule, picks the next endpoint and charges the budget: [`Decision`].
//!
//! A request is retried **on another endpoint**, never twice on the same one:
//!
//! - **nothing was sent** (the connection could not be established and the body is intact): any
//!   method. These retries load no backend and cost no budget: they are limited only by the
//!   number of endpoints (every endpoint at most once) and [`MAX_CONNECT_ATTEMPTS`];
//! - **sent, then failed** (reset, timeout, or a status in `retry_statuses`, default
//!   502/503/504): only idempotent requests whose body can be replayed (the tower layer buffers
//!   bodies up to `retry_buffer`, 64 KiB by default), at most `max_attempts` attempts that
//!   reached a backend, and only while the retry budget allows.
//!
//! # Idempotency: RFC 9110 methods, or an idempotency key
//!
//! A request is idempotent when its method is one of RFC 9110 §9.2.2 (GET, HEAD, PUT, DELETE,
//! OPTIONS, TRACE), **or** when it carries an `Idempotency-Key` (or `X-Idempotency-Key`) header
//! ([`is_idempotent`], [`has_idempotency_key`]). The key is counted because the client that
//! sets it declares the request safe to repeat: the IETF draft
//! *draft-ietf-httpapi-idempotency-key-header* defines it as the means by which a server
//! makes a POST or PATCH retry safe, and Go's `net/http` already retries such requests on that
//! ground. A client that sends a key to a server that ignores it has asked for retries it should
//! not have asked for; that is its call, as it is in Go. (Until this module, only the Go binding
//! counted the key; the engine and the other bindings now do too.)
//!
//! # Why a budget and not only a maximum of attempts
//!
//! `max_attempts = 3` alone lets a client triple its load exactly when the backends are struggling,
//! and layers of clients multiply that. The budget caps retries at a share of recent traffic
//! (`ratio`, default 20 % over the last 10 s) plus a small floor (`min_per_sec`, default 10 per
//! second) so that a quiet client can still retry. Finagle and Envoy use the same shape. There is
//! one budget per balancer, shared by every caller of it: every request counts once when its
//! [`Attempts`] start, and every retry that loads a backend again withdraws once.

mod attempts;
mod budget;
mod classify;
mod policy;

pub use attempts::{Attempts, Decision};
pub(crate) use budget::Budget;
pub use classify::classify;
pub use policy::{
    judge, Facts, GiveUpReason, History, Limits, RetryReason, Verdict, MAX_CONNECT_ATTEMPTS,
};

use http::{HeaderMap, Method};

/// Retry settings (the builder's `retry_*` and `max_attempts` options).
#[derive(Clone, Debug)]
pub(crate) struct RetryConfig {
    pub(crate) max_attempts: u32,
    pub(crate) statuses: Vec<u16>,
    pub(crate) buffer: usize,
    pub(crate) budget_ratio: f64,
    pub(crate) budget_min_per_sec: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            statuses: vec![502, 503, 504],
            buffer: 64 * 1024,
            budget_ratio: 0.2,
            budget_min_per_sec: 10,
        }
    }
}

/// Whether repeating a request with this method is safe: an RFC 9110 §9.2.2 method, or any
/// method when `has_idempotency_key` (see the [module documentation](self)).
pub fn is_idempotent(method: &Method, has_idempotency_key: bool) -> bool {
    is_idempotent_method(method.as_str(), has_idempotency_key)
}

/// [`is_idempotent`] of a method given by name (for bindings), e.g. `"GET"`; method names are
/// case-sensitive, as in HTTP.
pub fn is_idempotent_method(method: &str, has_idempotency_key: bool) -> bool {
    has_idempotency_key
        || matches!(
            method,
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
        )
}

/// `Idempotency-Key`, made once: looking a header up by a `&str` parses the name every time.
static IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");
/// `X-Idempotency-Key`.
static X_IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("x-idempotency-key");

/// Whether `headers` hold an `Idempotency-Key` or `X-Idempotency-Key` header.
pub fn has_idempotency_key(headers: &HeaderMap) -> bool {
    headers.contains_key(&IDEMPOTENCY_KEY) || headers.contains_key(&X_IDEMPOTENCY_KEY)
}

/// [`is_idempotent`] of a request's method and headers (the headers are looked at only when the
/// method alone does not make it idempotent).
pub fn is_idempotent_request(method: &Method, headers: &HeaderMap) -> bool {
    is_idempotent(method, false) || has_idempotency_key(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods_and_keys() {
        for m in ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"] {
            assert!(is_idempotent(&m.parse().unwrap(), false), "{m}");
        }
        assert!(!is_idempotent(&Method::POST, false));
        assert!(!is_idempotent(&Method::PATCH, false));
        assert!(is_idempotent(&Method::POST, true));
        assert!(!is_idempotent_method("get", false));
        assert!(is_idempotent_method("PATCH", true));
        let mut h = HeaderMap::new();
        assert!(!is_idempotent_request(&Method::POST, &h));
        h.insert("x-idempotency-key", "k1".parse().unwrap());
        assert!(is_idempotent_request(&Method::POST, &h));
    }
}
