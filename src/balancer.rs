//! The balancer: sites of endpoints, picks, outcomes, and the tasks that keep state fresh.
//!
//! A [`Balancer`] is a cheap handle (`Arc` inside). It owns one probe task per endpoint (and one
//! DNS task per fanned-out host name); they stop when the last handle is dropped. An outstanding
//! [`Lease`] does not keep them alive, and finishing it afterwards is harmless.
//!
//! # Sites are ordered tiers
//!
//! All traffic goes to the first site that has an available endpoint; the next site only gets
//! traffic while every earlier one has none, and traffic returns as soon as an earlier site
//! recovers. This is sidekick's site failover, unchanged: a second site is typically a replica
//! cluster in another zone.
//!
//! # Cost of a pick
//!
//! Each site keeps a list of its available endpoints, rebuilt on the rare state changes; a pick
//! reads it through an `ArcSwap` (no lock) and draws two entries, so its cost does not depend on
//! the number of endpoints. Nothing is locked across a request: a [`Lease`] only holds a counted
//! reference to its endpoint.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::balance::{self, LoadConfig, SiteLoad};
use crate::builder::Builder;
use crate::builder::Config;
use crate::clock::Clock;
use crate::endpoint::{
    Endpoint, EndpointId, EndpointInfo, HEALTH_DOWN, HEALTH_UNKNOWN, HEALTH_UP, TRIAL_CLAIMED,
    TRIAL_NONE, TRIAL_READY,
};
use crate::error::{Error, Kind};
use crate::failover::{self, EjectReason};
use crate::health::{self, ProbeConfig, Prober, Verdict};
use crate::retry::Budget;
use crate::site::Target;
use crate::transport::ServerNames;

/// What to do with the `Host` header when a request is sent to an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostPolicy {
    /// Keep the caller's `Host` (or, when it has none, the authority of the caller's URI). This is
    /// what S3 needs: SigV4 signs the `Host` header. Default.
    #[default]
    Keep,
    /// Set `Host` to the chosen endpoint's authority.
    Rewrite,
}

/// How a request sent to a leased endpoint ended, reported with [`Lease::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// It worked (a response the caller is happy with).
    Success,
    /// A response arrived with this status; the balancer classifies it (5xx and 429 count as
    /// failures for the load score, the `eject_statuses` set can eject).
    Status(u16),
    /// The connection could not be established: nothing was sent. Ejects the endpoint.
    Connect,
    /// The connection broke after the request was sent, before a response. Ejects the endpoint.
    Reset,
    /// No response within the caller's deadline. Ejects the endpoint.
    Timeout,
    /// The request failed for a reason that says nothing about the connection (counts as a
    /// failure in the load score; does not eject).
    Failed,
    /// The caller gave up for its own reasons; nothing is learnt about the endpoint.
    Cancelled,
}

/// A state change or a retry, delivered to the callback set with [`Builder::on_event`] (and always
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
    /// A retry was refused because the retry budget is spent.
    BudgetExhausted {
        /// The endpoint that failed.
        endpoint: String,
    },
}

pub(crate) type EventFn = Arc<dyn Fn(&Event) + Send + Sync>;

/// Resolves a host name to its addresses, for DNS fan-out.
pub(crate) type ResolveFn = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<std::net::IpAddr>>> + Send>>
        + Send
        + Sync,
>;

// ===== core state =====

#[derive(Default)]
pub(crate) struct SiteState {
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    pub(crate) available: Vec<Arc<Endpoint>>,
}

pub(crate) struct Site {
    pub(crate) targets: Vec<Target>,
    pub(crate) probe_path: String,
    pub(crate) state: ArcSwap<SiteState>,
    pub(crate) rr: AtomicUsize,
    /// Serialises state changes of this site (never held on the request path).
    pub(crate) lock: Mutex<()>,
}

/// A set of HTTP statuses, tested in O(1) on the request path.
#[derive(Clone, Debug, Default)]
pub(crate) struct StatusSet([u64; 10]);

impl StatusSet {
    pub(crate) fn new(statuses: &[u16]) -> Self {
        let mut set = StatusSet::default();
        for &s in statuses {
            if let Some(w) = set.0.get_mut(usize::from(s) / 64) {
                *w |= 1 << (s % 64);
            }
        }
        set
    }

    #[inline]
    pub(crate) fn contains(&self, s: u16) -> bool {
        self.0
            .get(usize::from(s) / 64)
            .is_some_and(|w| w & (1 << (s % 64)) != 0)
    }
}

/// What finishing a lease needs, reachable from every endpoint without going through the
/// balancer (so a lease holds one reference, to its endpoint, and nothing shared by all).
pub(crate) struct Shared {
    pub(crate) clock: Clock,
    pub(crate) load_cfg: LoadConfig,
    pub(crate) failure: StatusSet,
    pub(crate) eject_statuses: StatusSet,
    pub(crate) eject_after: u32,
    /// Typical latency per site.
    pub(crate) site_loads: Vec<SiteLoad>,
}

pub(crate) struct Core {
    /// A weak link to this very core, for tasks that must not keep it alive.
    pub(crate) me: Weak<Core>,
    pub(crate) cfg: Config,
    pub(crate) shared: Arc<Shared>,
    pub(crate) probe_cfg: Arc<ProbeConfig>,
    pub(crate) sites: Vec<Site>,
    pub(crate) budget: Budget,
    pub(crate) cancel: CancellationToken,
    pub(crate) changed: tokio::sync::watch::Sender<u64>,
    pub(crate) events: Option<EventFn>,
    pub(crate) resolver: Option<ResolveFn>,
    pub(crate) prober: Option<Prober>,
    pub(crate) names: ServerNames,
    pub(crate) runtime: Handle,
    pub(crate) next_id: AtomicU64,
}

impl Drop for Core {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub(crate) fn lock(m: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Core {
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        self.shared.clock.now()
    }

    #[inline]
    pub(crate) fn coarse_ns(&self) -> u64 {
        self.shared.clock.coarse()
    }

    fn emit(&self, ev: Event) {
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
        }
        if let Some(f) = &self.events {
            f(&ev);
        }
    }

    pub(crate) fn emit_retry(&self, endpoint: &str, attempt: u32, reason: &'static str) {
        self.emit(Event::Retry {
            endpoint: endpoint.to_string(),
            attempt,
            reason,
        });
    }

    pub(crate) fn emit_budget_exhausted(&self, endpoint: &str) {
        self.emit(Event::BudgetExhausted {
            endpoint: endpoint.to_string(),
        });
    }

    pub(crate) fn make_endpoint(
        &self,
        site_idx: usize,
        origin: usize,
        target: Target,
        server_name: Option<&str>,
    ) -> Result<Arc<Endpoint>, Error> {
        let site = &self.sites[site_idx];
        let scheme: http::uri::Scheme = target
            .scheme()
            .parse()
            .map_err(|e| Error::config(format!("endpoint {target}: {e}")))?;
        let authority: http::uri::Authority = target
            .authority()
            .parse()
            .map_err(|e| Error::config(format!("endpoint {target}: {e}")))?;
        let probe_authority = match self.cfg.probe.port {
            Some(p) => {
                let h = target.host();
                if h.contains(':') {
                    format!("[{h}]:{p}")
                } else {
                    format!("{h}:{p}")
                }
            }
            None => authority.as_str().to_string(),
        };
        let probe_host_for_requests = match server_name {
            Some(name) if target.authority().ends_with(&format!(":{}", target.port())) => {
                format!("{name}:{}", target.port())
            }
            Some(name) => name.to_string(),
            None => String::new(),
        };
        let probe_host = match server_name {
            Some(name) => {
                let port = self.cfg.probe.port.unwrap_or(target.port());
                format!("{name}:{port}")
            }
            None => probe_authority.clone(),
        };
        let probe_uri = if self.cfg.probe.enabled {
            let s = format!(
                "{}://{}{}{}",
                target.scheme(),
                probe_authority,
                target.path(),
                site.probe_path
            );
            Some(s.parse::<http::Uri>().map_err(|e| {
                Error::config(format!(
                    "endpoint {target} with health path {}: {e}",
                    site.probe_path
                ))
            })?)
        } else {
            None
        };
        if let Some(name) = server_name {
            self.names
                .insert(authority.as_str().to_string(), name.to_string());
        }
        let health = if self.cfg.probe.enabled {
            HEALTH_UNKNOWN
        } else {
            HEALTH_UP
        };
        Ok(Arc::new(Endpoint {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            shared: self.shared.clone(),
            core: self.me.clone(),
            site: site_idx,
            origin,
            // Never the userinfo: URLs end up in logs and metrics.
            url: format!(
                "{}://{}{}",
                target.scheme(),
                target.authority(),
                target.path()
            ),
            base_path: target.path().to_string(),
            target,
            scheme,
            authority,
            probe_uri,
            virtual_host: server_name
                .and_then(|_| http::HeaderValue::from_str(&probe_host_for_requests).ok()),
            probe_host,
            load: Default::default(),
            health: health.into(),
            ejected: false.into(),
            eject_streak: 0.into(),
            suspect: false.into(),
            trial: TRIAL_NONE.into(),
            fail_run: 0.into(),
            stats: Default::default(),
            down_since: 0.into(),
            last_error: Mutex::new(None),
            cancel: self.cancel.child_token(),
        }))
    }

    pub(crate) fn start_probe(self: &Arc<Self>, ep: &Arc<Endpoint>) {
        if let Some(prober) = &self.prober {
            let fut = health::run(
                Arc::downgrade(self),
                ep.clone(),
                self.probe_cfg.clone(),
                prober.clone(),
                ep.cancel.clone(),
            );
            self.runtime.spawn(fut);
        }
    }

    /// Create the endpoints of every site and start their tasks.
    pub(crate) fn populate(self: &Arc<Self>) {
        for (si, site) in self.sites.iter().enumerate() {
            let mut eps = Vec::new();
            for (origin, t) in site.targets.iter().enumerate() {
                let fan_out = self.cfg.rr_dns && t.host().parse::<std::net::IpAddr>().is_err();
                if fan_out {
                    self.runtime.spawn(crate::dns::dns_task(
                        Arc::downgrade(self),
                        si,
                        origin,
                        t.clone(),
                        self.cancel.clone(),
                    ));
                    continue;
                }
                match self.make_endpoint(si, origin, t.clone(), None) {
                    Ok(ep) => eps.push(ep),
                    Err(e) => tracing::error!(error = %e, "endpoint skipped"),
                }
            }
            for ep in &eps {
                self.start_probe(ep);
            }
            let _g = lock(&site.lock);
            self.publish(site, eps);
        }
    }

    /// Store a new endpoint list for a site and its derived available list. Call with the site
    /// lock held.
    pub(crate) fn publish(&self, site: &Site, endpoints: Vec<Arc<Endpoint>>) {
        let available = endpoints.iter().filter(|e| e.listed()).cloned().collect();
        site.state.store(Arc::new(SiteState {
            endpoints,
            available,
        }));
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn republish(&self, site: &Site) {
        let eps = site.state.load().endpoints.clone();
        self.publish(site, eps);
    }

    // ----- picking -----

    pub(crate) fn pick(&self, exclude: &[EndpointId]) -> Result<Lease, Error> {
        // One precise read: it dates the lease (for its latency) and drives the decay.
        let now = self.now_ns();
        for (site, load) in self.sites.iter().zip(&self.shared.site_loads) {
            let st = site.state.load();
            if st.available.is_empty() {
                continue;
            }
            let seed = load.seed(&self.shared.load_cfg);
            for _ in 0..4 {
                let chosen = balance::select(
                    self.cfg.policy,
                    &st.available,
                    &site.rr,
                    now,
                    seed,
                    &self.shared.load_cfg,
                    |e| e.pickable() && !exclude.contains(&e.id),
                );
                let Some(i) = chosen else { break };
                let ep = &st.available[i];
                if ep.acquire() {
                    ep.load.start();
                    return Ok(Lease {
                        ep: ep.clone(),
                        start_ns: now,
                        done: false,
                    });
                }
            }
        }
        Err(Error::no_endpoint())
    }

    pub(crate) fn any_available(&self) -> bool {
        self.sites
            .iter()
            .any(|s| s.state.load().available.iter().any(|e| e.pickable()))
    }

    /// Ready for traffic: some site has an available endpoint, and every site before it has
    /// had its verdict (no endpoint there still waiting for its first probe) — so that early
    /// requests do not go to a fallback site only because the preferred one is not probed yet.
    pub(crate) fn settled(&self) -> bool {
        for site in &self.sites {
            let st = site.state.load();
            if st.available.iter().any(|e| e.pickable()) {
                return true;
            }
            if st
                .endpoints
                .iter()
                .any(|e| e.health.load(Ordering::Acquire) == HEALTH_UNKNOWN)
            {
                return false;
            }
        }
        false
    }

    // ----- outcomes -----

    /// The slow half of finishing a lease: state changes that take the site lock.
    pub(crate) fn after_finish(&self, ep: &Arc<Endpoint>, after: AfterFinish) {
        match after {
            AfterFinish::Eject(reason) => {
                // Whether or not the bound lets it go, optimistic probing must look again.
                ep.suspect.store(true, Ordering::Release);
                self.eject(ep, reason);
            }
            AfterFinish::TrialFailed(reason) => self.trial_failed(ep, reason),
            AfterFinish::Readmit => self.readmit(ep),
        }
    }

    /// Passive ejection, within the bound. Returns whether the endpoint was ejected.
    pub(crate) fn eject(self: &Core, ep: &Arc<Endpoint>, reason: EjectReason) -> bool {
        if ep.ejected.load(Ordering::Acquire) || ep.health.load(Ordering::Acquire) != HEALTH_UP {
            return false;
        }
        let site = &self.sites[ep.site];
        let _g = lock(&site.lock);
        if ep.ejected.load(Ordering::Acquire) {
            return false;
        }
        let st = site.state.load();
        let up = st
            .endpoints
            .iter()
            .filter(|e| e.health.load(Ordering::Acquire) == HEALTH_UP)
            .count();
        let ejected = st
            .endpoints
            .iter()
            .filter(|e| {
                e.health.load(Ordering::Acquire) == HEALTH_UP && e.ejected.load(Ordering::Acquire)
            })
            .count();
        if !failover::may_eject(up, ejected, self.cfg.eject.max_share) {
            tracing::debug!(endpoint = %ep.url, up, ejected, "ejection refused: site would be emptied");
            return false;
        }
        ep.trial.store(TRIAL_NONE, Ordering::Release);
        ep.ejected.store(true, Ordering::Release);
        ep.fail_run.store(0, Ordering::Release);
        ep.stats.ejections.fetch_add(1, Ordering::Relaxed);
        let streak = ep.eject_streak.fetch_add(1, Ordering::AcqRel) + 1;
        self.republish(site);
        drop(_g);
        self.emit(Event::Ejected {
            endpoint: ep.url.clone(),
            site: ep.site,
            reason,
        });
        if !self.cfg.probe.enabled {
            self.schedule_trial(ep, streak);
        }
        true
    }

    fn trial_failed(&self, ep: &Arc<Endpoint>, reason: EjectReason) {
        let streak = ep.eject_streak.fetch_add(1, Ordering::AcqRel) + 1;
        ep.trial.store(TRIAL_NONE, Ordering::Release);
        ep.stats.ejections.fetch_add(1, Ordering::Relaxed);
        {
            let site = &self.sites[ep.site];
            let _g = lock(&site.lock);
            self.republish(site);
        }
        self.emit(Event::Ejected {
            endpoint: ep.url.clone(),
            site: ep.site,
            reason,
        });
        self.schedule_trial(ep, streak);
    }

    fn schedule_trial(&self, ep: &Arc<Endpoint>, streak: u32) {
        let delay = failover::backoff(
            self.cfg.eject.backoff_base,
            self.cfg.eject.backoff_max,
            streak,
            fastrand::f64(),
        );
        // The task must not keep the balancer alive: it holds only the endpoint and a weak link.
        let weak = self.me.clone();
        let ep = ep.clone();
        let cancel = ep.cancel.clone();
        self.runtime.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => {
                    if let Some(core) = weak.upgrade() {
                        core.trial_due(&ep);
                    }
                }
            }
        });
    }

    fn trial_due(&self, ep: &Arc<Endpoint>) {
        if !ep.ejected.load(Ordering::Acquire) {
            return;
        }
        let site = &self.sites[ep.site];
        let _g = lock(&site.lock);
        ep.load.reset();
        ep.trial.store(TRIAL_READY, Ordering::Release);
        self.republish(site);
    }

    fn readmit(&self, ep: &Arc<Endpoint>) {
        let site = &self.sites[ep.site];
        {
            let _g = lock(&site.lock);
            if !ep.ejected.load(Ordering::Acquire) {
                return;
            }
            ep.ejected.store(false, Ordering::Release);
            ep.trial.store(TRIAL_NONE, Ordering::Release);
            ep.fail_run.store(0, Ordering::Release);
            self.republish(site);
        }
        self.emit(Event::Returned {
            endpoint: ep.url.clone(),
            site: ep.site,
        });
    }

    // ----- probe results -----

    pub(crate) fn set_probe_verdict(&self, ep: &Arc<Endpoint>, v: Verdict, err: Option<String>) {
        let site = &self.sites[ep.site];
        let now = self.now_ns();
        let was_ejected;
        {
            let _g = lock(&site.lock);
            let new = match v {
                Verdict::Up => HEALTH_UP,
                Verdict::Down => HEALTH_DOWN,
                Verdict::Unknown => HEALTH_UNKNOWN,
            };
            ep.health.store(new, Ordering::Release);
            was_ejected = ep.ejected.swap(false, Ordering::AcqRel);
            ep.trial.store(TRIAL_NONE, Ordering::Release);
            if v == Verdict::Up {
                ep.load.reset();
                ep.fail_run.store(0, Ordering::Release);
            }
            self.republish(site);
        }
        let downtime_start = ep.down_since.swap(
            if v == Verdict::Up { u64::MAX } else { now },
            Ordering::AcqRel,
        );
        match v {
            Verdict::Up => {
                if was_ejected {
                    self.emit(Event::Returned {
                        endpoint: ep.url.clone(),
                        site: ep.site,
                    });
                }
                let since = if downtime_start == u64::MAX {
                    now
                } else {
                    downtime_start
                };
                self.emit(Event::Up {
                    endpoint: ep.url.clone(),
                    site: ep.site,
                    downtime: Duration::from_nanos(now.saturating_sub(since)),
                });
            }
            Verdict::Down | Verdict::Unknown => {
                let reason = err.unwrap_or_else(|| "probe failed".to_string());
                ep.set_last_error(reason.clone());
                self.emit(Event::Down {
                    endpoint: ep.url.clone(),
                    site: ep.site,
                    reason,
                });
            }
        }
    }

    /// A passing probe that did not change the verdict: ends a passive ejection.
    pub(crate) fn probe_passed(&self, ep: &Arc<Endpoint>) {
        if ep.ejected.load(Ordering::Acquire) {
            ep.load.reset();
            self.readmit(ep);
        }
    }
}

// ===== public handle =====

/// A client-side load balancer over ordered sites of endpoints. Cheap to clone; the probes stop
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Balancer {
    pub(crate) core: Arc<Core>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("sites", &self.core.sites.len())
            .field("policy", &self.core.cfg.policy)
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// Start configuring a balancer.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// Choose an endpoint for one request: the first site with an available endpoint, and in it
    /// the policy's choice. Fails at once with [`Error::is_no_endpoint`] when none is available.
    ///
    /// Report how the request went with [`Lease::finish`]; dropping the lease unfinished counts as
    /// [`Outcome::Cancelled`].
    pub fn pick(&self) -> Result<Lease, Error> {
        self.core.pick(&[])
    }

    /// Like [`Balancer::pick`], but never one of `tried` (for retrying on another endpoint). Falls
    /// over to the next site when every available endpoint of a site was tried.
    pub fn pick_excluding(&self, tried: &[EndpointId]) -> Result<Lease, Error> {
        self.core.pick(tried)
    }

    /// Wait until the balancer is ready for traffic, at most `timeout`: an endpoint is available,
    /// and every site before it has been probed (so the first requests do not go to a fallback
    /// site only because the preferred one had not been probed yet). When the timeout expires
    /// with some endpoint available, that is good enough: `Ok`. Otherwise
    /// [`Error::is_not_ready`].
    pub async fn ready(&self, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.core.changed.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            if self.core.settled() {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    return if self.core.any_available() {
                        Ok(())
                    } else {
                        Err(Error::new(Kind::NotReady))
                    }
                }
            }
        }
    }

    /// True when at least one endpoint of some site is available.
    pub fn is_available(&self) -> bool {
        self.core.any_available()
    }

    /// A snapshot of every endpoint, site by site.
    pub fn endpoints(&self) -> Vec<EndpointInfo> {
        let now = self.core.now_ns();
        let mut out = Vec::new();
        let sh = &self.core.shared;
        for (site, load) in self.core.sites.iter().zip(&sh.site_loads) {
            let seed = load.seed(&sh.load_cfg);
            for ep in &site.state.load().endpoints {
                out.push(ep.info(now, seed, &sh.load_cfg));
            }
        }
        out
    }

    /// The number of sites.
    pub fn site_count(&self) -> usize {
        self.core.sites.len()
    }

    /// The `Host` header policy this balancer was built with.
    pub fn host_policy(&self) -> HostPolicy {
        self.core.cfg.host_policy
    }
}

// ===== lease =====

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
    /// The endpoint URL, e.g. `http://10.0.0.1:9000` (with its base path, if any).
    pub fn url(&self) -> &str {
        &self.ep.url
    }

    /// The endpoint's identifier, for [`Balancer::pick_excluding`].
    pub fn id(&self) -> EndpointId {
        self.ep.id
    }

    /// The index of the endpoint's site (0 for the first).
    pub fn site(&self) -> usize {
        self.ep.site
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

    pub(crate) fn base_path(&self) -> &str {
        &self.ep.base_path
    }

    /// Report the outcome; the latency is measured from the pick.
    pub fn finish(mut self, outcome: Outcome) {
        let now = self.ep.shared.clock.now();
        self.done = true;
        let latency = now.saturating_sub(self.start_ns) as f64;
        self.ep.finish(outcome, latency, now);
    }

    /// Report the outcome with a latency measured by the caller (e.g. time to first byte).
    pub fn finish_with_latency(mut self, outcome: Outcome, latency: Duration) {
        let now = self.ep.shared.clock.coarse();
        self.done = true;
        self.ep.finish(outcome, latency.as_nanos() as f64, now);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.done {
            self.ep.finish(Outcome::Cancelled, 0.0, 0);
        }
    }
}

/// What finishing a lease left to do under the site lock.
#[derive(Clone, Copy, Debug)]
pub(crate) enum AfterFinish {
    Eject(EjectReason),
    TrialFailed(EjectReason),
    Readmit,
}

// ===== impl Endpoint: the request path =====

impl Endpoint {
    /// Account for one finished request: in-flight count, statistics, latency; hands the rare
    /// state changes to the balancer.
    pub(crate) fn finish(self: &Arc<Self>, outcome: Outcome, latency_ns: f64, now: u64) {
        self.load.end();
        let was_trial = self.trial.load(Ordering::Acquire) == TRIAL_CLAIMED;
        let sh = &*self.shared;
        let (failed, eject) = match outcome {
            Outcome::Cancelled => {
                if was_trial {
                    // The trial told us nothing: let another request try.
                    let _ = self.trial.compare_exchange(
                        TRIAL_CLAIMED,
                        TRIAL_READY,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
                return;
            }
            Outcome::Success => (false, None),
            Outcome::Failed => (true, None),
            Outcome::Status(s) => {
                let failed = sh.failure.contains(s);
                let eject = if sh.eject_statuses.contains(s) {
                    let run = self.fail_run.fetch_add(1, Ordering::AcqRel) + 1;
                    (run >= sh.eject_after).then_some(EjectReason::Status)
                } else {
                    if self.fail_run.load(Ordering::Relaxed) != 0 {
                        self.fail_run.store(0, Ordering::Release);
                    }
                    None
                };
                (failed, eject)
            }
            Outcome::Connect | Outcome::Reset => (true, Some(EjectReason::Connect)),
            Outcome::Timeout => (true, Some(EjectReason::Timeout)),
        };
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            let penalty = latency_ns.max(sh.load_cfg.penalty_ns);
            self.load.observe(penalty, now, &sh.load_cfg);
        } else {
            self.load.observe(latency_ns, now, &sh.load_cfg);
            if let Some(site) = sh.site_loads.get(self.site) {
                site.observe(latency_ns, now, &sh.load_cfg);
            }
        }
        let after = match (eject, was_trial, failed) {
            (Some(reason), true, _) => Some(AfterFinish::TrialFailed(reason)),
            (Some(reason), false, _) => Some(AfterFinish::Eject(reason)),
            // Failed without an ejection reason (e.g. a 500): still not healthy enough.
            (None, true, true) => Some(AfterFinish::TrialFailed(EjectReason::Status)),
            (None, true, false) => Some(AfterFinish::Readmit),
            (None, false, _) => {
                if !failed
                    && self.eject_streak.load(Ordering::Relaxed) != 0
                    && self.fail_run.load(Ordering::Relaxed) == 0
                {
                    self.eject_streak.store(0, Ordering::Relaxed);
                }
                None
            }
        };
        if let Some(after) = after {
            // The balancer may be gone (its last handle dropped while this lease was out).
            if let Some(core) = self.core.upgrade() {
                core.after_finish(self, after);
            }
        }
    }
}
