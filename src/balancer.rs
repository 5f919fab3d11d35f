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
//! cluster in another zone. Graded spill-over (opt-in) shares the traffic between sites by their
//! health instead (see `spillover`).
//!
//! # Cost of a pick
//!
//! Each site keeps a list of its available endpoints, rebuilt on the rare state changes; a pick
//! reads it through an `ArcSwap` (no lock) and draws two entries, so its cost does not depend on
//! the number of endpoints. Nothing is locked across a request: a [`Lease`] only holds a counted
//! reference to its endpoint.
//!
//! # Who changes what
//!
//! The request path runs one way: pick (here) → [`Lease`] → [`Outcome`] → the endpoint's load
//! score and its `Standing` (the ejection and return rules, pure functions in `failover`). The
//! balancer alone carries out the state changes that need a whole site's view and emits the
//! events. The parts that ask for them know it only through narrow traits, held weakly so that
//! none keeps it alive: an endpoint through `Steward` (eject within the bound, readmit), a
//! probe task through `ProbeSink` (verdicts), a DNS task through `AddressSink` (addresses).
//!
//! # Membership
//!
//! The list of sites is itself behind an `ArcSwap`, so endpoints and sites can be added and
//! removed at run time (see [`membership`](crate::membership)) without a lock on the pick path.
//! An endpoint knows its site through a shared `SiteLink` (position and typical latency), not
//! by an index into a list that may change.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::dns::{self, AddressSink, ResolveFn, Watch};
use crate::endpoint::{Endpoint, EndpointId, EndpointInfo, Ledger, Steward};
use crate::error::{Error, Kind};
use crate::event::{self, Event, EventFn};
use crate::failover::{self, EjectReason, Health, Standing, StandingCell, Step};
#[cfg(any(feature = "tower", feature = "aws", feature = "reqwest"))]
use crate::head_wait::Watchdog;
use crate::health::{self, ProbeConfig, ProbeFn, ProbeSink, Prober};
use crate::load::LoadConfig;
use crate::membership::TaskCount;
use crate::options::{self, Value};
use crate::outcome::{Classes, StatusSet};
use crate::policy;
use crate::retry::{Budget, Hedging};
use crate::site::{Member, Site, SiteLink, SiteState};
use crate::spillover;
use crate::target::{self, Target};
use crate::transport::{self, ServerNames};
use crate::view::{PickView, Published};

// Where the rest of the crate has always found these.
pub use crate::config::HostPolicy;
/// The name the sidecar gives a step of the ejection rules (see [`Core::after_finish`]).
#[allow(unused_imports)]
pub(crate) use crate::failover::Step as AfterFinish;
pub use crate::lease::Lease;
pub use crate::outcome::Outcome;

/// Sites of at most this many endpoints rebuild their available list at once on every change.
const REBUILD_INLINE_MAX: usize = 1024;

/// How late a larger site's available list may be rebuilt after a change (see
/// `Core::republish`): at most this many rebuilds a second, whatever the churn.
const REBUILD_SPACING: Duration = Duration::from_millis(10);

/// What a balancer is built with besides its settings: callbacks, and where its tasks run.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) events: Option<EventFn>,
    pub(crate) resolver: Option<ResolveFn>,
    pub(crate) probe_fn: Option<ProbeFn>,
    pub(crate) runtime: Option<Handle>,
    pub(crate) tokio_clock: bool,
}

/// The balancer's state, shared by its handles and weakly known to its tasks and endpoints.
pub(crate) struct Core {
    /// A weak link to this very core, for tasks that must not keep it alive.
    pub(crate) me: Weak<Core>,
    pub(crate) cfg: Config,
    /// What finishing a request needs, shared with every endpoint.
    ledger: Arc<Ledger>,
    probe_cfg: Arc<ProbeConfig>,
    /// The sites in order; replaced whole when a site is added or removed.
    pub(crate) sites: ArcSwap<Vec<Arc<Site>>>,
    /// What a pick reads: every site with its available list, in order (see [`view`]).
    view: Published,
    /// Serialises membership changes (see [`membership`](crate::membership)); never taken on
    /// the request path.
    pub(crate) changing: Mutex<()>,
    pub(crate) budget: Budget,
    pub(crate) hedging: Hedging,
    pub(crate) cancel: CancellationToken,
    pub(crate) changed: tokio::sync::watch::Sender<u64>,
    events: Option<EventFn>,
    resolver: ResolveFn,
    prober: Option<Prober>,
    pub(crate) names: ServerNames,
    pub(crate) runtime: Handle,
    next_id: AtomicU64,
    /// Live probe tasks, and live DNS tasks (see `Balancer::probe_tasks`).
    pub(crate) probe_tasks: Arc<AtomicUsize>,
    pub(crate) dns_tasks: Arc<AtomicUsize>,
    /// The sites' shares last announced (percent), with graded spill-over.
    shares: Mutex<Vec<u32>>,
    /// Ends the integrations' waits for a response head (`response_timeout`, `attempt_timeout`).
    #[cfg(any(feature = "tower", feature = "aws", feature = "reqwest"))]
    pub(crate) head_waits: Watchdog,
}

impl Drop for Core {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Core {
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        self.ledger.clock.now()
    }

    #[inline]
    pub(crate) fn coarse_ns(&self) -> u64 {
        self.ledger.clock.coarse()
    }

    pub(crate) fn emit(&self, ev: Event) {
        event::emit(self.events.as_ref(), ev);
    }

    pub(crate) fn emit_retry(&self, endpoint: &str, attempt: u32, reason: &'static str) {
        self.emit(Event::Retry {
            endpoint: endpoint.to_string(),
            attempt,
            reason,
        });
    }

    /// Apply a step of the ejection rules to `ep` as a finished request would: for a failure
    /// seen after the lease was finished (the sidecar's stalled response body).
    #[allow(dead_code)]
    pub(crate) fn after_finish(&self, ep: &Arc<Endpoint>, step: Step) {
        Steward::step(self, ep, step);
    }

    pub(crate) fn emit_budget_exhausted(&self, endpoint: &str) {
        self.emit(Event::BudgetExhausted {
            endpoint: endpoint.to_string(),
        });
    }

    /// A new endpoint of `site` for `target` (from member `origin`), out of rotation until
    /// probed when probes are on; its tasks stop when `cancel` is cancelled.
    pub(crate) fn make_endpoint(
        &self,
        site: &Site,
        origin: u64,
        target: Arc<Target>,
        server_name: Option<&str>,
        cancel: CancellationToken,
    ) -> Result<Arc<Endpoint>, Error> {
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
        let steward: Weak<dyn Steward> = self.me.clone();
        if let Some(name) = server_name {
            self.names
                .insert(authority.as_str().to_string(), name.to_string());
        }
        Ok(Arc::new(Endpoint {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            ledger: self.ledger.clone(),
            steward,
            site: site.link.clone(),
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
            standing: StandingCell::new(Standing::new(self.cfg.probe.enabled)),
            suspect: false.into(),
            stats: Default::default(),
            down_since: 0.into(),
            last_error: Mutex::new(None),
            cancel,
            joined_late: !site.state.load().endpoints.is_empty(),
        }))
    }

    /// Start what a new endpoint needs once it is published: its probe task (counted while it
    /// lives, ended when the endpoint's token is cancelled or the balancer is gone), or, with
    /// probes off, the slow start of an endpoint that joined a running site (it is in rotation
    /// at once).
    pub(crate) fn start_probe(&self, ep: &Arc<Endpoint>) {
        if self.prober.is_none() && ep.joined_late {
            self.begin_slow_start(ep);
        }
        if let Some(prober) = &self.prober {
            let sink: Weak<dyn ProbeSink> = self.me.clone();
            let fut = health::run(
                sink,
                ep.clone(),
                self.probe_cfg.clone(),
                prober.clone(),
                ep.cancel.clone(),
            );
            let count = TaskCount::new(&self.probe_tasks);
            self.runtime.spawn(async move {
                let _count = count;
                fut.await
            });
        }
    }

    /// Enlist `target` in `site` as a new member: its endpoint, or (a host name with DNS
    /// fan-out) a DNS task that makes one endpoint per address. Call with the site lock held;
    /// the caller adds the member to the roster, publishes the endpoints and then starts their
    /// probes.
    pub(crate) fn enlist(
        &self,
        site: &Site,
        target: Target,
    ) -> Result<(Member, Option<Arc<Endpoint>>), Error> {
        let origin = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = site.cancel.child_token();
        let target = Arc::new(target);
        let fan_out = self.cfg.rr_dns && target.host().parse::<IpAddr>().is_err();
        if fan_out {
            let sink: Weak<dyn AddressSink> = self.me.clone();
            let watch = Watch {
                site: site.link.clone(),
                origin,
                target: Target::clone(&target),
                resolver: self.resolver.clone(),
                refresh: self.cfg.dns_refresh,
            };
            let task = dns::dns_task(sink, watch, cancel.clone());
            let count = TaskCount::new(&self.dns_tasks);
            self.runtime.spawn(async move {
                let _count = count;
                task.await
            });
            let member = Member {
                origin,
                target,
                cancel,
            };
            return Ok((member, None));
        }
        let ep = self.make_endpoint(site, origin, target.clone(), None, cancel.clone())?;
        let member = Member {
            origin,
            target,
            cancel,
        };
        Ok((member, Some(ep)))
    }

    /// Create the endpoints of every site and start their tasks.
    fn populate(&self, targets: Vec<Vec<Target>>) {
        let sites = self.sites.load_full();
        for (site, targets) in sites.iter().zip(targets) {
            let mut eps = Vec::new();
            {
                let mut roster = site.lock();
                for t in targets {
                    match self.enlist(site, t) {
                        Ok((member, ep)) => {
                            roster.members.push(member);
                            eps.extend(ep);
                        }
                        Err(e) => tracing::error!(error = %e, "endpoint skipped"),
                    }
                }
                self.publish(site, eps.clone());
            }
            for ep in &eps {
                self.start_probe(ep);
            }
        }
        self.reshare();
    }

    /// Store a new endpoint list for a site and tell `ready()`. Call with the site lock held,
    /// and [`Core::reshare`] once it is released.
    pub(crate) fn publish(&self, site: &Site, endpoints: Vec<Arc<Endpoint>>) {
        site.publish(endpoints);
        self.refresh_view();
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Build the pick view again from the sites' stored states. Call after every change of the
    /// site list or of a site's state (every path that stores one comes here afterwards).
    ///
    /// See [`Published::rebuild`]: the last rebuild after a change includes it, whichever
    /// thread stored it.
    pub(crate) fn refresh_view(&self) {
        self.view.rebuild(|| PickView {
            sites: self
                .sites
                .load()
                .iter()
                .map(|site| (site.clone(), site.state.load_full()))
                .collect(),
        });
    }

    /// The available list of site `si` again, after an endpoint's standing changed. Call after
    /// releasing the site lock.
    ///
    /// A small site is rebuilt at once. A large one (rebuilding costs O(n), and at start-up every
    /// endpoint gets its first verdict within a second: a rebuild per change would be O(n²),
    /// minutes for 65,536 endpoints) is rebuilt by a task at most [`REBUILD_SPACING`] later,
    /// which takes in every change made meanwhile. Picks check each candidate's standing, so an
    /// endpoint that just left rotation is never picked in between; one that just came back
    /// waits for the rebuild.
    fn republish(&self, site: &Arc<Site>) {
        if site.state.load().endpoints.len() <= REBUILD_INLINE_MAX {
            site.republish();
            self.refresh_view();
            self.notify();
            return;
        }
        if !site.defer() {
            return;
        }
        let weak = self.me.clone();
        // A removed site may still be rebuilt once: harmless, nothing picks from it.
        let site = site.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(REBUILD_SPACING).await;
            if let Some(core) = weak.upgrade() {
                site.run_deferred();
                core.refresh_view();
                core.notify();
            }
        });
    }

    // ----- picking -----

    /// Count `outcome` against the endpoint with this URL or identifier, after its lease was
    /// finished (an answer whose body stalled once its head had been counted): as if one more
    /// request on it had ended so (scores, ejection rules).
    pub(crate) fn report_after(&self, url: Option<&str>, id: Option<EndpointId>, outcome: Outcome) {
        for site in self.sites.load().iter() {
            let st = site.state.load();
            let found = st
                .endpoints
                .iter()
                .find(|e| Some(e.url.as_str()) == url || Some(e.id) == id);
            if let Some(ep) = found {
                ep.load.start();
                ep.finish(outcome, 0.0, self.coarse_ns());
                return;
            }
        }
    }

    pub(crate) fn pick(&self, exclude: &[EndpointId]) -> Result<Lease, Error> {
        // One precise read: it dates the lease (for its latency) and drives the decay.
        let now = self.now_ns();
        // The sites and their lists together, from this thread's copy when current.
        self.view.with(|view| self.pick_from(view, now, exclude))
    }

    fn pick_from(&self, view: &PickView, now: u64, exclude: &[EndpointId]) -> Result<Lease, Error> {
        let sites = &view.sites;
        if self.cfg.site_spillover && sites.len() > 1 {
            let healths = sites
                .iter()
                .map(|(_, st)| site_health(st, self.cfg.overprovisioning));
            let drawn = spillover::draw(healths, crate::random::f64());
            if let Some(lease) = drawn
                .and_then(|si| sites.get(si))
                .and_then(|(site, st)| self.pick_in(site, st, now, exclude))
            {
                return Ok(lease);
            }
        }
        // All-or-nothing: the first site that has an endpoint to give.
        sites
            .iter()
            .find_map(|(site, st)| self.pick_in(site, st, now, exclude))
            .ok_or_else(Error::no_endpoint)
    }

    /// A lease on an endpoint of `site` (whose available list is `st`'s) chosen by the policy,
    /// if the site has one to give.
    fn pick_in(
        &self,
        site: &Site,
        st: &SiteState,
        now: u64,
        exclude: &[EndpointId],
    ) -> Option<Lease> {
        let ledger = &*self.ledger;
        if st.available.is_empty() {
            return None;
        }
        let seed = site.link.load.seed(&ledger.load_cfg);
        for _ in 0..4 {
            let chosen = policy::select(
                self.cfg.policy,
                &st.available,
                &site.rr,
                now,
                seed,
                &ledger.load_cfg,
                |e| e.pickable() && !exclude.contains(&e.id),
            );
            let i = chosen?;
            let ep = &st.available[i];
            if ep.acquire() {
                ep.load.start();
                return Some(Lease::new(ep.clone(), now));
            }
        }
        None
    }

    /// The share of picks each site gets now, in order.
    pub(crate) fn site_shares(&self) -> Vec<f64> {
        let sites = self.sites.load();
        if self.cfg.site_spillover {
            let healths: Vec<f64> = site_healths(&sites, self.cfg.overprovisioning).collect();
            spillover::shares(&healths)
        } else {
            spillover::all_or_nothing(sites.iter().map(|s| {
                s.state
                    .load()
                    .available
                    .iter()
                    .filter(|e| e.pickable())
                    .count()
            }))
        }
    }

    /// Tell `ready()` that some site's available endpoints changed, and announce the sites'
    /// new shares (see [`Core::reshare`]). Call without a site lock held.
    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        self.reshare();
    }

    /// With graded spill-over, emit the sites' shares when they changed since last announced.
    /// Call without a site lock held (the event callback runs here).
    pub(crate) fn reshare(&self) {
        if !self.cfg.site_spillover {
            return;
        }
        let now = spillover::percent(&self.site_shares());
        {
            let mut last = self.shares.lock().unwrap_or_else(|p| p.into_inner());
            if *last == now {
                return;
            }
            last.clone_from(&now);
        }
        self.emit(Event::SiteShares { shares: now });
    }

    fn any_available(&self) -> bool {
        self.sites
            .load()
            .iter()
            .any(|s| s.state.load().available.iter().any(|e| e.pickable()))
    }

    /// Ready for traffic: some site has an available endpoint, and every site before it has
    /// had its verdict (no endpoint there still waiting for its first probe) — so that early
    /// requests do not go to a fallback site only because the preferred one is not probed yet.
    fn settled(&self) -> bool {
        for site in self.sites.load().iter() {
            let st = site.state.load();
            if st.available.iter().any(|e| e.pickable()) {
                return true;
            }
            if st.endpoints.iter().any(|e| e.unprobed()) {
                return false;
            }
        }
        false
    }

    // ----- ejection and return (the rules are `failover::Standing`'s) -----

    /// The site `ep` belongs to; `None` once it left it (nothing more applies to it).
    fn site_of(&self, ep: &Endpoint) -> Option<Arc<Site>> {
        if ep.retired() {
            return None;
        }
        self.site_by_link(&ep.site)
    }

    /// The site whose link is `link`, while it is part of the balancer.
    pub(crate) fn site_by_link(&self, link: &Arc<SiteLink>) -> Option<Arc<Site>> {
        self.sites
            .load()
            .iter()
            .find(|s| Arc::ptr_eq(&s.link, link))
            .cloned()
    }

    /// Passive ejection, within the bound. Returns whether the endpoint was ejected.
    fn eject(&self, ep: &Arc<Endpoint>, reason: EjectReason) -> bool {
        if ep.standing.load().eject().is_none() {
            return false;
        }
        let Some(site) = self.site_of(ep) else {
            return false;
        };
        let g = site.lock();
        let (up, ejected) = site.up_and_ejected();
        if !failover::may_eject(up, ejected, self.cfg.eject.max_share) {
            tracing::debug!(endpoint = %ep.url, up, ejected, "ejection refused: site would be emptied");
            return false;
        }
        let Some((_, now)) = ep.standing.apply(Standing::eject) else {
            return false;
        };
        ep.stats.ejections.fetch_add(1, Ordering::Relaxed);
        drop(g);
        self.republish(&site);
        self.emit(Event::Ejected {
            endpoint: ep.url.clone(),
            site: ep.site_index(),
            reason,
        });
        if !self.cfg.probe.enabled {
            self.schedule_trial(ep, now.streak);
        }
        true
    }

    fn trial_failed(&self, ep: &Arc<Endpoint>, reason: EjectReason) {
        let Some(site) = self.site_of(ep) else {
            return;
        };
        let Some((_, now)) = ep.standing.apply(|s| Some(s.trial_failed())) else {
            return;
        };
        ep.stats.ejections.fetch_add(1, Ordering::Relaxed);
        self.republish(&site);
        self.emit(Event::Ejected {
            endpoint: ep.url.clone(),
            site: ep.site_index(),
            reason,
        });
        self.schedule_trial(ep, now.streak);
    }

    fn schedule_trial(&self, ep: &Arc<Endpoint>, streak: u16) {
        let delay = failover::backoff(
            self.cfg.eject.backoff_base,
            self.cfg.eject.backoff_max,
            u32::from(streak),
            crate::random::f64(),
        );
        self.after(ep, delay, |core, ep| core.trial_due(ep));
    }

    /// Run `then` after `delay`, unless the endpoint's tasks are cancelled or the balancer is
    /// gone first. The task must not keep the balancer alive: it holds only the endpoint and a
    /// weak link.
    fn after(
        &self,
        ep: &Arc<Endpoint>,
        delay: Duration,
        then: impl FnOnce(&Core, &Arc<Endpoint>) + Send + 'static,
    ) {
        let weak = self.me.clone();
        let ep = ep.clone();
        let cancel = ep.cancel.clone();
        self.runtime.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => {
                    if let Some(core) = weak.upgrade() {
                        then(&core, &ep);
                    }
                }
            }
        });
    }

    fn trial_due(&self, ep: &Arc<Endpoint>) {
        let Some(site) = self.site_of(ep) else {
            return;
        };
        let g = site.lock();
        if ep.standing.apply(Standing::trial_due).is_some() {
            ep.load.reset();
            drop(g);
            self.republish(&site);
        }
    }

    fn readmit(&self, ep: &Arc<Endpoint>) {
        let Some(site) = self.site_of(ep) else {
            return;
        };
        {
            let g = site.lock();
            if ep.standing.apply(Standing::readmit).is_none() {
                return;
            }
            drop(g);
            self.republish(&site);
        }
        self.emit(Event::Returned {
            endpoint: ep.url.clone(),
            site: ep.site_index(),
        });
        self.begin_slow_start(ep);
    }

    // ----- slow start -----

    /// Begin the slow start of `ep`, which just came (back) into rotation: its weight ramps up
    /// over the `slow_start` window (see `load`), and a task ends it with an event. Nothing when
    /// slow start is off. The membership code calls this for an endpoint it adds with probes
    /// off (through `start_probe`); with probes on, the first passing probe of an endpoint
    /// that joined late calls it.
    pub(crate) fn begin_slow_start(&self, ep: &Arc<Endpoint>) {
        let Some(window) = self.cfg.slow_start else {
            return;
        };
        let Some(key) = ep.load.begin_ramp(self.now_ns(), &self.ledger.load_cfg) else {
            return;
        };
        self.emit(Event::SlowStartBegan {
            endpoint: ep.url.clone(),
            site: ep.site_index(),
            window,
        });
        // The weight reaches 1 by itself at the end of the window; this task only clears the
        // ramp and says so.
        self.after(ep, window, move |core, ep| {
            if ep.load.end_ramp(key) {
                core.emit(Event::SlowStartEnded {
                    endpoint: ep.url.clone(),
                    site: ep.site_index(),
                });
            }
        });
    }
}

impl Steward for Core {
    fn step(&self, ep: &Arc<Endpoint>, step: Step) {
        match step {
            Step::Eject(reason) => {
                // Whether or not the bound lets it go, optimistic probing must look again.
                ep.suspect.store(true, Ordering::Release);
                self.eject(ep, reason);
            }
            Step::TrialFailed(reason) => self.trial_failed(ep, reason),
            Step::Readmit => self.readmit(ep),
        }
    }
}

impl ProbeSink for Core {
    fn verdict(&self, ep: &Arc<Endpoint>, health: Health, err: Option<String>) {
        let Some(site) = self.site_of(ep) else {
            return;
        };
        let now = self.now_ns();
        let was_ejected;
        let flipped;
        let came_back;
        {
            let _g = site.lock();
            // Removed while this probe was under way: its verdict no longer matters.
            if ep.retired() {
                return;
            }
            let applied = ep.standing.apply(|s| Some(s.probed(health)));
            was_ejected = applied.is_some_and(|(old, _)| old.ejected);
            flipped = applied.is_some_and(|(old, new)| old.pickable() != new.pickable());
            // Into rotation after being out of it: down, ejected, or new to a running site
            // (the endpoints the balancer starts with all get their full share at once).
            came_back = applied.is_some_and(|(old, new)| {
                !old.pickable()
                    && new.pickable()
                    && (old.health != Health::Unknown || old.ejected || ep.joined_late)
            });
            if health == Health::Up {
                ep.load.reset();
            }
        }
        if flipped {
            self.republish(&site);
        } else {
            // The available list is unchanged (a first verdict of down, say), but `ready()`
            // counts the endpoints still waiting for one.
            self.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
        let up = health == Health::Up;
        let downtime_start = ep
            .down_since
            .swap(if up { u64::MAX } else { now }, Ordering::AcqRel);
        if up {
            if was_ejected {
                self.emit(Event::Returned {
                    endpoint: ep.url.clone(),
                    site: ep.site_index(),
                });
            }
            if came_back {
                self.begin_slow_start(ep);
            }
            let since = if downtime_start == u64::MAX {
                now
            } else {
                downtime_start
            };
            self.emit(Event::Up {
                endpoint: ep.url.clone(),
                site: ep.site_index(),
                downtime: Duration::from_nanos(now.saturating_sub(since)),
            });
        } else {
            let reason = err.unwrap_or_else(|| "probe failed".to_string());
            ep.set_last_error(reason.clone());
            self.emit(Event::Down {
                endpoint: ep.url.clone(),
                site: ep.site_index(),
                reason,
            });
        }
    }

    fn passed(&self, ep: &Arc<Endpoint>) {
        if ep.standing.load().ejected {
            ep.load.reset();
            self.readmit(ep);
        }
    }
}

impl AddressSink for Core {
    fn addresses(&self, link: &Arc<SiteLink>, origin: u64, target: &Target, ips: &[IpAddr]) {
        let Some(site) = self.site_by_link(link) else {
            return;
        };
        let host = target.host().to_string();
        let mut started = Vec::new();
        {
            let roster = site.lock();
            // The member may have left while its lookup was under way.
            let Some(member) = roster.members.iter().find(|m| m.origin == origin) else {
                return;
            };
            let cur = site.state.load();
            let mut next: Vec<Arc<Endpoint>> = Vec::with_capacity(cur.endpoints.len() + ips.len());
            let mut added = false;
            let mut removed = false;
            // Keep endpoints of other targets, and of this target whose address is still there.
            for ep in cur.endpoints.iter() {
                let kept =
                    ep.origin != origin || ips.iter().any(|ip| ep.target.host() == ip.to_string());
                if kept {
                    next.push(ep.clone());
                } else {
                    ep.cancel.cancel();
                    removed = true;
                }
            }
            for ip in ips {
                let have = next
                    .iter()
                    .any(|e| e.origin == origin && e.target.host() == ip.to_string());
                if have {
                    continue;
                }
                let made = self.make_endpoint(
                    &site,
                    origin,
                    Arc::new(target.with_host(*ip)),
                    Some(&host),
                    member.cancel.child_token(),
                );
                match made {
                    Ok(ep) => {
                        started.push(ep.clone());
                        next.push(ep);
                        added = true;
                    }
                    Err(e) => tracing::error!(error = %e, "resolved endpoint skipped"),
                }
            }
            if !added && !removed {
                return;
            }
            // Keep the site's order stable: by target, then by address text.
            next.sort_by(|a, b| (a.origin, a.url.as_str()).cmp(&(b.origin, b.url.as_str())));
            self.publish(&site, next);
        }
        self.reshare();
        tracing::info!(host = %host, addresses = ips.len(), "DNS fan-out updated");
        for ep in &started {
            self.start_probe(ep);
        }
    }
}

/// The probe path of site `index` of `count`: the last site may have its own (a read-only
/// replica). A site's path is decided when the site is created.
pub(crate) fn site_probe_path(cfg: &Config, index: usize, count: usize) -> String {
    match (&cfg.probe.last_site_path, index + 1 == count) {
        (Some(p), true) => p.clone(),
        _ => cfg.probe.path.clone(),
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
            .field("sites", &self.core.sites.load().len())
            .field("policy", &self.core.cfg.policy)
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// Build a balancer from checked settings (see [`Builder::build`](crate::Builder::build)):
    /// parse the sites, create the endpoints and start their tasks.
    pub(crate) fn start(sites: &[String], cfg: Config, hooks: Hooks) -> Result<Balancer, Error> {
        let runtime = match hooks.runtime {
            Some(h) => h,
            None => Handle::try_current().map_err(|_| {
                Error::config("no tokio runtime: call build() inside one or set .runtime(handle)")
            })?,
        };
        let n_sites = sites.len();
        let cancel = CancellationToken::new();
        let mut parsed = Vec::with_capacity(n_sites);
        let mut targets = Vec::with_capacity(n_sites);
        for (i, spec) in sites.iter().enumerate() {
            targets.push(
                target::parse_site(spec)
                    .map_err(|e| Error::config(format!("site {}: {e}", i + 1)).with_source(e))?,
            );
            let path = site_probe_path(&cfg, i, n_sites);
            parsed.push(Arc::new(Site::new(i, path, &cancel)));
        }
        let names = ServerNames::default();
        let prober = if !cfg.probe.enabled {
            None
        } else if let Some(f) = hooks.probe_fn {
            Some(Prober::Custom(f))
        } else {
            let _guard = runtime.enter();
            #[cfg(feature = "tls")]
            let conn = transport::connector(cfg.connect_timeout, cfg.tls.clone(), names.clone())?;
            #[cfg(not(feature = "tls"))]
            let conn = transport::connector(cfg.connect_timeout, names.clone())?;
            Some(Prober::http(conn))
        };
        let clock = if hooks.tokio_clock {
            Clock::Tokio(Instant::now())
        } else {
            Clock::System
        };
        let ledger = Arc::new(Ledger {
            clock,
            load_cfg: LoadConfig::new(
                cfg.ewma_decay.as_nanos() as f64,
                cfg.default_rtt.as_nanos() as f64,
                cfg.failure_penalty.as_nanos() as f64,
                cfg.slow_start
                    .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            ),
            classes: Classes {
                failure: StatusSet::new(&cfg.failure_statuses),
                eject: StatusSet::new(&cfg.eject.statuses),
            },
            eject_after: cfg.eject.after,
        });
        let (changed, _) = tokio::sync::watch::channel(0u64);
        let core = Arc::new_cyclic(|me| Core {
            me: me.clone(),
            ledger,
            budget: Budget::new(cfg.retry.budget_ratio, cfg.retry.budget_min_per_sec),
            hedging: Hedging::new(cfg.retry.hedge),
            probe_cfg: Arc::new(cfg.probe.clone()),
            cfg,
            sites: ArcSwap::from_pointee(parsed),
            view: Published::new(),
            changing: Mutex::new(()),
            cancel,
            changed,
            events: hooks.events,
            resolver: hooks.resolver.unwrap_or_else(dns::system_resolver),
            prober,
            names,
            runtime,
            next_id: AtomicU64::new(1),
            probe_tasks: Arc::default(),
            dns_tasks: Arc::default(),
            shares: Mutex::new(Vec::new()),
            #[cfg(any(feature = "tower", feature = "aws", feature = "reqwest"))]
            head_waits: Watchdog::new(clock),
        });
        core.populate(targets);
        Ok(Balancer { core })
    }

    /// Count an outcome against an endpoint after its lease was finished: see
    /// `Core::report_after`.
    #[cfg_attr(not(feature = "sidecar"), allow(dead_code))]
    pub(crate) fn report_after(&self, url: Option<&str>, id: Option<EndpointId>, outcome: Outcome) {
        self.core.report_after(url, id, outcome);
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
        let ledger = &self.core.ledger;
        for site in self.core.sites.load().iter() {
            let seed = site.link.load.seed(&ledger.load_cfg);
            for ep in site.state.load().endpoints.iter() {
                out.push(ep.info(now, seed, &ledger.load_cfg));
            }
        }
        out
    }

    /// The share of picks each site gets now, in site order, from 0.0 to 1.0: all to the first
    /// site with an available endpoint, or with [`Builder::site_spillover`](crate::Builder::site_spillover)
    /// the graded shares. All 0 when nothing is available.
    pub fn site_shares(&self) -> Vec<f64> {
        self.core.site_shares()
    }

    /// The number of sites.
    pub fn site_count(&self) -> usize {
        self.core.sites.load().len()
    }

    /// The value in force of the option called `name` (see [`options`](crate::options)).
    pub fn option(&self, name: &str) -> Result<Value, Error> {
        Ok(options::find(name)?.read(&self.core.cfg))
    }

    /// Every option with its value in force, in the table's order.
    pub fn options(&self) -> Vec<(&'static str, Value)> {
        options::all()
            .iter()
            .map(|o| (o.name(), o.read(&self.core.cfg)))
            .collect()
    }

    /// The `Host` header policy this balancer was built with.
    pub fn host_policy(&self) -> HostPolicy {
        self.core.cfg.host_policy
    }
}

/// Each site's health for graded spill-over, in order (see `spillover`).
fn site_healths(sites: &[Arc<Site>], factor: f64) -> impl Iterator<Item = f64> + Clone + '_ {
    sites
        .iter()
        .map(move |site| site_health(&site.state.load(), factor))
}

/// A site's health for graded spill-over (see `spillover`).
fn site_health(st: &SiteState, factor: f64) -> f64 {
    spillover::health(st.available.len(), st.endpoints.len(), factor)
}
