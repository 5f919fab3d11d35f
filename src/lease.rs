//! A [`Lease`]: one attempt's claim on the endpoint a pick chose, finished with its
//! [`Outcome`].
//!
//! The request path runs one way: the balancer picks and hands out a lease; the caller sends
//! and finishes the lease with what happened; the endpoint enters it in its load score and its
//! ejection rules. A lease holds a counted reference to its endpoint and nothing else: no lock,
//! and not the balancer (finishing after the balancer is gone is harmless).

use std::sync::Arc;
use std::time::Duration;

use crate::endpoint::{Endpoint, EndpointId};
use crate::load::ns_f64;
use crate::outcome::Outcome;
use crate::target::Target;

/// One request's claim on an endpoint. Holds no lock; counts as one request in flight until it
/// is finished or dropped.
pub struct Lease {
    ep: Arc<Endpoint>,
    start_ns: u64,
    done: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("endpoint", &self.ep.url)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// A lease on `ep`, taken at `start_ns` (its in-flight count already raised).
    pub(crate) fn new(ep: Arc<Endpoint>, start_ns: u64) -> Self {
        Lease {
            ep,
            start_ns,
            done: false,
        }
    }

    /// The endpoint URL, e.g. `http://10.0.0.1:9000` (with its base path, if any).
    pub fn url(&self) -> &str {
        &self.ep.url
    }

    /// The endpoint's identifier, for [`Balancer::pick_excluding`](crate::Balancer::pick_excluding).
    pub fn id(&self) -> EndpointId {
        self.ep.id
    }

    /// The index of the endpoint's site (0 for the first).
    pub fn site(&self) -> usize {
        self.ep.site_index()
    }

    /// The endpoint's parsed address.
    pub fn target(&self) -> &Target {
        &self.ep.target
    }

    pub(crate) fn scheme(&self) -> &http::uri::Scheme {
        &self.ep.scheme
    }

    pub(crate) fn authority(&self) -> &http::uri::Authority {
        &self.ep.authority
    }

    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn virtual_host(&self) -> Option<&http::HeaderValue> {
        self.ep.virtual_host.as_ref()
    }

    /// When the lease was taken (the balancer's clock, ns).
    pub(crate) fn started_ns(&self) -> u64 {
        self.start_ns
    }

    pub(crate) fn base_path(&self) -> &str {
        &self.ep.base_path
    }

    /// Report the outcome; the latency is measured from the pick.
    pub fn finish(mut self, outcome: Outcome) {
        let now = self.ep.ledger.clock.now();
        self.done = true;
        let latency = ns_f64(now.saturating_sub(self.start_ns));
        self.ep.finish(outcome, latency, now);
    }

    /// Report the outcome with a latency measured by the caller (e.g. time to first byte),
    /// no longer than the time since the pick. No clock is read: the sample is dated at the
    /// pick plus `latency`.
    pub fn finish_with_latency(mut self, outcome: Outcome, latency: Duration) {
        self.done = true;
        // Through u64: a u128 to f64 conversion is a library call; 2^64 ns is 584 years.
        let latency_ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        // The sample is dated when the answer came, as far as the lease can tell: its start
        // plus the latency — no clock read. A latency longer than the time since the pick only
        // delays the estimate's relaxation by the difference.
        let at = self.start_ns.saturating_add(latency_ns);
        self.ep.finish(outcome, latency_ns as f64, at);
    }
}

impl Lease {
    /// An attempt another one outran (a hedge answered first): nothing is held against the
    /// endpoint (no request, no failure, no ejection), but the time it has taken so far is a
    /// lower bound on its answer and is observed as a latency. Without it a slow endpoint whose
    /// attempts are always outrun would look as fast as its last completed answer, and a
    /// latency-aware policy would keep sending first attempts to it.
    pub(crate) fn finish_outrun(mut self) {
        let now = self.ep.ledger.clock.now();
        self.done = true;
        let latency = now.saturating_sub(self.start_ns) as f64;
        self.ep.finish_outrun(latency, now);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.done {
            self.ep.finish(Outcome::Cancelled, 0.0, 0);
        }
    }
}
