//! One backend endpoint: its address, what the probes and the traffic say about it, its load.
//!
//! Everything on the request path is an atomic, so picking and reporting never take a lock.
//! Finishing a request feeds the load score and the endpoint's `Standing`; the rare state
//! changes that need the whole site's view (eject within the bound, readmit) are handed to a
//! `Steward` (the balancer), which the endpoint knows only through that trait and only weakly.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::failover::{Health, Signal, Standing, StandingCell, Step, Trial};
use crate::load::{Load, LoadConfig};
use crate::outcome::{Classes, Outcome};
use crate::policy::Candidate;
use crate::site::SiteLink;
use crate::target::Target;

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
    /// Its weight in selection, 1.0 but during a slow start, when it ramps from 0.1 to 1.0
    /// (see [`Builder::slow_start`](crate::Builder::slow_start)).
    pub weight: f64,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Requests that ended cancelled: the `requests` statistic is the load's ends less these.
    pub(crate) cancelled: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) ejections: AtomicU64,
}

/// What finishing a request needs, shared by every endpoint of a balancer (so a lease holds one
/// reference, to its endpoint, and nothing shared by all).
pub(crate) struct Ledger {
    pub(crate) clock: Clock,
    pub(crate) load_cfg: LoadConfig,
    pub(crate) classes: Classes,
    pub(crate) eject_after: u32,
}

/// Carries out the state changes a finished request asks for: the balancer, which sees the
/// whole site (the ejection bound) and emits the events.
pub(crate) trait Steward: Send + Sync {
    /// Apply `step` to `ep`.
    fn step(&self, ep: &Arc<Endpoint>, step: Step);
}

pub(crate) struct Endpoint {
    pub(crate) id: EndpointId,
    /// What finishing a request needs (clock, load settings, status sets, site averages).
    pub(crate) ledger: Arc<Ledger>,
    /// The balancer's side of the rare state changes; weak, so that endpoints never keep it
    /// alive (a lease finished after the balancer is gone changes nothing).
    pub(crate) steward: Weak<dyn Steward>,
    /// Its site's position and typical latency.
    pub(crate) site: Arc<SiteLink>,
    /// The site member this endpoint comes from (several endpoints with DNS fan-out).
    pub(crate) origin: u64,
    /// Shared with the site member it comes from (one copy per endpoint).
    pub(crate) target: Arc<Target>,
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
    /// Health, ejection, trial, and the runs that lead to them (see [`Standing`]).
    pub(crate) standing: StandingCell,
    /// A request failed on it (connect, reset, timeout) since its last probe: with optimistic
    /// probing, the next probe is due.
    pub(crate) suspect: AtomicBool,
    pub(crate) stats: Stats,
    /// When it last left rotation (ns since the balancer's epoch), `u64::MAX` while up.
    pub(crate) down_since: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
    /// Cancelled when the endpoint leaves its site (or the balancer is dropped): ends its probe
    /// task and trial timer.
    pub(crate) cancel: CancellationToken,
    /// Added to a site that already had endpoints (membership change, DNS): its first entry
    /// into rotation begins a slow start, like a return.
    pub(crate) joined_late: bool,
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
        self.standing.pickable()
    }

    /// Take the endpoint for one request; fails only when it is a trial someone else took.
    #[inline]
    pub(crate) fn acquire(&self) -> bool {
        if !self.standing.ejected() {
            return true;
        }
        self.standing.apply(Standing::claim).is_some()
    }

    /// The index of its site, 0 for the first.
    #[inline]
    pub(crate) fn site_index(&self) -> usize {
        self.site.index()
    }

    /// It left its site (a membership change) or its balancer is gone: no state change applies
    /// to it any more, though its outstanding leases still finish.
    pub(crate) fn retired(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The probes' verdict is still unknown.
    pub(crate) fn unprobed(&self) -> bool {
        self.standing.load().health == Health::Unknown
    }

    pub(crate) fn state(&self) -> EndpointState {
        let s = self.standing.load();
        if s.ejected {
            return match s.trial {
                Trial::None => EndpointState::Ejected,
                _ => EndpointState::Trial,
            };
        }
        match s.health {
            Health::Up => EndpointState::Up,
            Health::Down => EndpointState::Down,
            Health::Unknown => EndpointState::Unknown,
        }
    }

    /// Account for one finished request: in-flight count, statistics, latency, the ejection
    /// rules; hands the rare state changes to the steward.
    pub(crate) fn finish(self: &Arc<Self>, outcome: Outcome, latency_ns: f64, now: u64) {
        self.load.end();
        let ledger = &*self.ledger;
        let signal = ledger.classes.signal(outcome);
        let eject_after = ledger.eject_after;
        // Most requests leave the standing as it is (a success on an endpoint in rotation):
        // decide on one read, and only write, by compare-and-swap, when the rules change it.
        let step = if signal == (Signal::Plain { failed: false }) && self.standing.settled() {
            None
        } else {
            let seen = self.standing.load();
            let (next, step) = seen.finished(signal, eject_after);
            if next == seen {
                step
            } else {
                self.standing
                    .apply(|s| Some(s.finished(signal, eject_after).0))
                    .and_then(|(old, _)| old.finished(signal, eject_after).1)
            }
        };
        if outcome == Outcome::Cancelled {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let seed = self.site.load.seed(&ledger.load_cfg);
        if signal.failed() {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            let penalty = latency_ns.max(ledger.load_cfg.penalty_ns);
            self.load.observe(penalty, now, seed, &ledger.load_cfg);
        } else {
            self.load.observe(latency_ns, now, seed, &ledger.load_cfg);
            self.site.load.observe(latency_ns, now, &ledger.load_cfg);
        }
        if let Some(step) = step {
            // The balancer may be gone (its last handle dropped while this lease was out).
            if let Some(steward) = self.steward.upgrade() {
                steward.step(self, step);
            }
        }
    }

    /// An attempt outrun by a hedge: finished as cancelled, its elapsed time observed as a
    /// latency (see [`Lease::finish_outrun`](crate::Lease)).
    pub(crate) fn finish_outrun(self: &Arc<Self>, latency_ns: f64, now: u64) {
        self.finish(Outcome::Cancelled, latency_ns, now);
        let cfg = &self.ledger.load_cfg;
        self.load
            .observe(latency_ns, now, self.site.load.seed(cfg), cfg);
    }

    pub(crate) fn set_last_error(&self, msg: String) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(msg);
        }
    }

    pub(crate) fn info(&self, now_ns: u64, seed_ns: f64, cfg: &LoadConfig) -> EndpointInfo {
        let latency = self
            .load
            .is_measured()
            .then(|| Duration::from_nanos(self.load.estimate(now_ns, seed_ns, cfg) as u64));
        EndpointInfo {
            id: self.id,
            url: self.url.clone(),
            site: self.site_index(),
            state: self.state(),
            inflight: self.load.inflight(),
            latency,
            requests: {
                // Cancellations first, as the ends they are part of happened before them.
                let cancelled = self.stats.cancelled.load(Ordering::Relaxed);
                self.load.ended().saturating_sub(cancelled)
            },
            failures: self.stats.failures.load(Ordering::Relaxed),
            ejections: self.stats.ejections.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|g| g.clone()),
            weight: self.load.weight(now_ns, cfg),
        }
    }
}

impl Candidate for Arc<Endpoint> {
    #[inline]
    fn load(&self) -> &Load {
        &self.load
    }

    #[inline]
    fn wants_trial(&self) -> bool {
        self.standing.wants_trial()
    }
}
