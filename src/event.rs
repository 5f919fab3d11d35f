//! What the balancer tells the outside: state changes, retries and hedges, as [`Event`]s.
//!
//! Every event is logged through `tracing` and handed to the callback set with
//! [`Builder::on_event`](crate::Builder::on_event), if any. The engine's parts report to the
//! balancer; only the balancer emits.

use std::sync::Arc;
use std::time::Duration;

use crate::failover::EjectReason;

/// A state change or a retry, delivered to the callback set with [`Builder::on_event`](crate::Builder::on_event) (and always
/// emitted as a `tracing` event).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// The probes say the endpoint is up (it entered rotation).
    Up {
        /// Endpoint URL.
        endpoint: String,
        /// Site index.
        site: usize,
        /// How long it was out of rotation (since start for the first time).
        downtime: Duration,
    },
    /// The probes say the endpoint is down.
    Down {
        /// Endpoint URL.
        endpoint: String,
        /// Site index.
        site: usize,
        /// The probe's error.
        reason: String,
    },
    /// Passive ejection took the endpoint out of rotation.
    Ejected {
        /// Endpoint URL.
        endpoint: String,
        /// Site index.
        site: usize,
        /// Why.
        reason: EjectReason,
    },
    /// An ejected endpoint is back in rotation.
    Returned {
        /// Endpoint URL.
        endpoint: String,
        /// Site index.
        site: usize,
    },
    /// A request is retried on another endpoint after failing on this one.
    Retry {
        /// The endpoint that failed.
        endpoint: String,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// Why: `connect`, `reset`, `timeout` or `status`.
        reason: &'static str,
    },
    /// An endpoint joined a site at run time (see [`membership`](crate::membership)). With
    /// probes on it takes traffic after its first passing probe ([`Event::Up`]).
    Added {
        /// Endpoint URL (a host name fanned out by DNS: the host name's URL).
        endpoint: String,
        /// Site index.
        site: usize,
    },
    /// An endpoint left its site at run time: it is no longer picked, its tasks end.
    Removed {
        /// Endpoint URL.
        endpoint: String,
        /// Site index (where it was).
        site: usize,
    },
    /// A retry or a hedge was refused because the retry budget is spent.
    BudgetExhausted {
        /// The endpoint that failed (for a hedge: the one that would have been hedged to).
        endpoint: String,
    },
    /// A request's attempt had not answered after the hedge delay: one more attempt was sent
    /// to another endpoint (charged to the retry budget).
    HedgeSent {
        /// The endpoint the hedge goes to.
        endpoint: String,
        /// The endpoint of the attempt hedged (still in flight).
        hedged: String,
        /// Which hedge of the request this is (1 for the first).
        hedge: u32,
    },
    /// A hedge answered before the attempt it hedged; that attempt was dropped.
    HedgeWon {
        /// The endpoint of the hedge that answered.
        endpoint: String,
    },
    /// An endpoint that came back (up again, out of ejection, or added) begins its slow start:
    /// its share of picks ramps up over `window` (see `Builder::slow_start`).
    SlowStartBegan {
        /// Endpoint URL.
        endpoint: String,
        /// Site index.
        site: usize,
        /// How long the ramp lasts.
        window: Duration,
    },
    /// The endpoint's slow start is over: it gets its full share.
    SlowStartEnded {
        /// Endpoint URL.
        endpoint: String,
        /// Site index.
        site: usize,
    },
    /// With graded spill-over (`Builder::site_spillover`), the share of traffic each site gets
    /// changed.
    SiteShares {
        /// Per site, in order, the percentage of picks it gets (they add up to 100, or are all
        /// 0 when no site has an available endpoint).
        shares: Vec<u32>,
    },
}

/// The callback set with `Builder::on_event`.
pub(crate) type EventFn = Arc<dyn Fn(&Event) + Send + Sync>;

/// Log `ev` through `tracing`, then hand it to `callback`.
pub(crate) fn emit(callback: Option<&EventFn>, ev: Event) {
    match &ev {
        Event::Up {
            endpoint,
            site,
            downtime,
        } => tracing::info!(endpoint = %endpoint, site = site + 1, ?downtime, "endpoint up"),
        Event::Down {
            endpoint,
            site,
            reason,
        } => tracing::warn!(endpoint = %endpoint, site = site + 1, %reason, "endpoint down"),
        Event::Ejected {
            endpoint,
            site,
            reason,
        } => {
            tracing::warn!(endpoint = %endpoint, site = site + 1, reason = reason.as_str(), "endpoint ejected")
        }
        Event::Returned { endpoint, site } => {
            tracing::info!(endpoint = %endpoint, site = site + 1, "endpoint returned")
        }
        Event::Retry {
            endpoint,
            attempt,
            reason,
        } => {
            tracing::debug!(endpoint = %endpoint, attempt, reason, "retrying on another endpoint")
        }
        Event::BudgetExhausted { endpoint } => {
            tracing::debug!(endpoint = %endpoint, "retry budget exhausted")
        }
        Event::HedgeSent {
            endpoint,
            hedged,
            hedge,
        } => {
            tracing::debug!(endpoint = %endpoint, hedged = %hedged, hedge, "hedge sent")
        }
        Event::HedgeWon { endpoint } => {
            tracing::debug!(endpoint = %endpoint, "hedge won")
        }
        Event::Added { endpoint, site } => {
            tracing::info!(endpoint = %endpoint, site = site + 1, "endpoint added")
        }
        Event::Removed { endpoint, site } => {
            tracing::info!(endpoint = %endpoint, site = site + 1, "endpoint removed")
        }
        Event::SlowStartBegan {
            endpoint,
            site,
            window,
        } => {
            tracing::info!(endpoint = %endpoint, site = site + 1, ?window, "slow start began")
        }
        Event::SlowStartEnded { endpoint, site } => {
            tracing::info!(endpoint = %endpoint, site = site + 1, "slow start ended")
        }
        Event::SiteShares { shares } => {
            tracing::info!(?shares, "site shares changed (percent per site)")
        }
    }
    if let Some(f) = callback {
        f(&ev);
    }
}
