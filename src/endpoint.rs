//! One backend endpoint: its address, what the probes and the traffic say about it, its load.
//!
//! Everything on the request path is an atomic, so picking and reporting never take a lock; the
//! rare state changes (up, down, ejected, returned) go through the balancer, which rebuilds the
//! site's list of available endpoints.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use tokio_util::sync::CancellationToken;

use crate::balance::{Candidate, Load};
use crate::site::Target;

pub(crate) const HEALTH_UNKNOWN: u8 = 0;
pub(crate) const HEALTH_UP: u8 = 1;
pub(crate) const HEALTH_DOWN: u8 = 2;

pub(crate) const TRIAL_NONE: u8 = 0;
pub(crate) const TRIAL_READY: u8 = 1;
pub(crate) const TRIAL_CLAIMED: u8 = 2;

/// A stable identifier of an endpoint within one balancer, as carried by a
/// [`Lease`](crate::Lease) and an [`EndpointInfo`].
pub type EndpointId = u64;

/// What the balancer currently thinks of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndpointState {
    /// Not probed yet: out of rotation until the first passing probe.
    Unknown,
    /// In rotation.
    Up,
    /// The probes say it is down.
    Down,
    /// Taken out of rotation by passive ejection.
    Ejected,
    /// Ejected, with its single trial request due or under way (probes off).
    Trial,
}

impl EndpointState {
    /// A short, stable name (`unknown`, `up`, `down`, `ejected`, `trial`).
    pub fn as_str(&self) -> &'static str {
        match self {
            EndpointState::Unknown => "unknown",
            EndpointState::Up => "up",
            EndpointState::Down => "down",
            EndpointState::Ejected => "ejected",
            EndpointState::Trial => "trial",
        }
    }
}

impl std::fmt::Display for EndpointState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of one endpoint, for monitoring (see [`Balancer::endpoints`](crate::Balancer::endpoints)).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EndpointInfo {
    /// Identifier, stable for the life of the endpoint.
    pub id: EndpointId,
    /// The endpoint URL, e.g. `http://10.0.0.1:9000`.
    pub url: String,
    /// Index of its site, 0 for the first.
    pub site: usize,
    /// Current state.
    pub state: EndpointState,
    /// Requests in flight.
    pub inflight: u32,
    /// The current latency estimate, `None` before the first sample.
    pub latency: Option<Duration>,
    /// Requests finished (all outcomes but cancellations).
    pub requests: u64,
    /// Requests that failed (connect errors, resets, timeouts, failure statuses).
    pub failures: u64,
    /// Times passive ejection took it out.
    pub ejections: u64,
    /// The last probe or request error, if any.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) ejections: AtomicU64,
}

pub(crate) struct Endpoint {
    pub(crate) id: EndpointId,
    /// What finishing a request needs (clock, load settings, status sets, site averages).
    pub(crate) shared: std::sync::Arc<crate::balancer::Shared>,
    /// The balancer, for the rare state changes; weak so that endpoints never keep it alive.
    pub(crate) core: std::sync::Weak<crate::balancer::Core>,
    pub(crate) site: usize,
    /// Index of the site target this endpoint comes from (several with DNS fan-out).
    pub(crate) origin: usize,
    pub(crate) target: Target,
    pub(crate) url: String,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    /// Base path without trailing `/`, prefixed to request paths; "" when none.
    pub(crate) base_path: String,
    pub(crate) probe_uri: Option<http::Uri>,
    /// For an address fanned out from a host name: the `Host` to send when the caller gave none.
    pub(crate) virtual_host: Option<http::HeaderValue>,
    /// `Host` header for probes (the original host name for a fanned-out address).
    pub(crate) probe_host: String,
    pub(crate) load: Load,
    pub(crate) health: AtomicU8,
    pub(crate) ejected: AtomicBool,
    /// Ejections in a row, for the backoff exponent; reset by a success.
    pub(crate) eject_streak: AtomicU32,
    /// A request failed on it (connect, reset, timeout) since its last probe: with optimistic
    /// probing, the next probe is due.
    pub(crate) suspect: AtomicBool,
    pub(crate) trial: AtomicU8,
    /// Consecutive answers with a status in the ejection set.
    pub(crate) fail_run: AtomicU32,
    pub(crate) stats: Stats,
    /// When it last left rotation (ns since the balancer's epoch), `u64::MAX` while up.
    pub(crate) down_since: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
    pub(crate) cancel: CancellationToken,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// May a request be sent here now? Up and not ejected, or ejected with its trial due.
    #[inline]
    pub(crate) fn pickable(&self) -> bool {
        if self.ejected.load(Ordering::Acquire) {
            self.trial.load(Ordering::Acquire) == TRIAL_READY
        } else {
            self.health.load(Ordering::Acquire) == HEALTH_UP
        }
    }

    /// Should it be in the site's list of available endpoints?
    pub(crate) fn listed(&self) -> bool {
        self.pickable()
    }

    /// Take the endpoint for one request; fails only when it is a trial someone else took.
    #[inline]
    pub(crate) fn acquire(&self) -> bool {
        if self.ejected.load(Ordering::Acquire) {
            self.trial
                .compare_exchange(
                    TRIAL_READY,
                    TRIAL_CLAIMED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        } else {
            true
        }
    }

    pub(crate) fn state(&self) -> EndpointState {
        if self.ejected.load(Ordering::Acquire) {
            return match self.trial.load(Ordering::Acquire) {
                TRIAL_NONE => EndpointState::Ejected,
                _ => EndpointState::Trial,
            };
        }
        match self.health.load(Ordering::Acquire) {
            HEALTH_UP => EndpointState::Up,
            HEALTH_DOWN => EndpointState::Down,
            _ => EndpointState::Unknown,
        }
    }

    pub(crate) fn set_last_error(&self, msg: String) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(msg);
        }
    }

    pub(crate) fn info(
        &self,
        now_ns: u64,
        seed_ns: f64,
        cfg: &crate::balance::LoadConfig,
    ) -> EndpointInfo {
        let latency = self
            .load
            .is_measured()
            .then(|| Duration::from_nanos(self.load.estimate(now_ns, seed_ns, cfg) as u64));
        EndpointInfo {
            id: self.id,
            url: self.url.clone(),
            site: self.site,
            state: self.state(),
            inflight: self.load.inflight(),
            latency,
            requests: self.stats.requests.load(Ordering::Relaxed),
            failures: self.stats.failures.load(Ordering::Relaxed),
            ejections: self.stats.ejections.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|g| g.clone()),
        }
    }
}

impl Candidate for std::sync::Arc<Endpoint> {
    #[inline]
    fn load(&self) -> &Load {
        &self.load
    }

    #[inline]
    fn wants_trial(&self) -> bool {
        self.ejected.load(Ordering::Relaxed) && self.trial.load(Ordering::Relaxed) == TRIAL_READY
    }
}
