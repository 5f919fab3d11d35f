//! The balancer: sites of endpoints, picks, outcomes, and the tasks that keep state fresh.
//!
//! A [`Balancer`] is a cheap handle (`Arc` inside). It owns one probe task per endpoint (and one
//! DNS task per fanned-out host name); they stop when the last handle — including outstanding
//! [`Lease`]s — is dropped.
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

use crate::balance::{self, LoadConfig, Policy, SiteLoad};
use crate::endpoint::{
    Endpoint, EndpointId, EndpointInfo, HEALTH_DOWN, HEALTH_UNKNOWN, HEALTH_UP, TRIAL_CLAIMED,
    TRIAL_NONE, TRIAL_READY,
};
use crate::error::{Error, Kind};
use crate::failover::{self, EjectConfig, EjectReason};
use crate::health::{self, ProbeConfig, ProbeFn, Prober, Verdict};
use crate::retry::{Budget, RetryConfig};
use crate::site::{self, Target};
use crate::transport::{self, ServerNames};

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

type EventFn = Arc<dyn Fn(&Event) + Send + Sync>;

/// Resolves a host name to its addresses, for DNS fan-out.
pub type ResolveFn = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<std::net::IpAddr>>> + Send>>
        + Send
        + Sync,
>;

// ===== configuration =====

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) policy: Policy,
    pub(crate) probe: ProbeConfig,
    pub(crate) eject: EjectConfig,
    pub(crate) retry: RetryConfig,
    pub(crate) failure_statuses: Vec<u16>,
    pub(crate) host_policy: HostPolicy,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    pub(crate) rr_dns: bool,
    pub(crate) dns_refresh: Duration,
    pub(crate) ewma_decay: Duration,
    pub(crate) default_rtt: Duration,
    pub(crate) failure_penalty: Duration,
    pub(crate) pool_idle_timeout: Duration,
    pub(crate) pool_max_idle_per_host: usize,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: Policy::default(),
            probe: ProbeConfig::default(),
            eject: EjectConfig::default(),
            retry: RetryConfig::default(),
            failure_statuses: (500..=599).chain([429]).collect(),
            host_policy: HostPolicy::Keep,
            attempt_timeout: None,
            connect_timeout: Duration::from_secs(3),
            rr_dns: false,
            dns_refresh: Duration::from_secs(30),
            ewma_decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(10),
            failure_penalty: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 1024,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// Builds a [`Balancer`]. Every setter documents its default; [`Builder::build`] validates the
/// whole configuration and names the first bad part.
///
/// ```no_run
/// # async fn demo() -> Result<(), sidekick::Error> {
/// use std::time::Duration;
/// let balancer = sidekick::Balancer::builder()
///     .site("http://10.0.0.{1...4}:9000")       // first choice
///     .site("http://10.0.1.{1...4}:9000")       // used only while the first site is down
///     .health_path("/minio/health/ready")
///     .health_interval(Duration::from_secs(2))
///     .build()?;
/// balancer.ready(Duration::from_secs(5)).await?;
/// let lease = balancer.pick()?;
/// println!("send to {}", lease.url());
/// lease.finish(sidekick::Outcome::Success);
/// # Ok(()) }
/// ```
#[must_use]
pub struct Builder {
    sites: Vec<String>,
    cfg: Config,
    err: Option<Error>,
    events: Option<EventFn>,
    resolver: Option<ResolveFn>,
    probe_fn: Option<ProbeFn>,
    runtime: Option<Handle>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("sites", &self.sites)
            .field("policy", &self.cfg.policy)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

fn positive(name: &str, d: Duration) -> Result<(), Error> {
    if d.is_zero() {
        Err(Error::config(format!("{name} must be greater than zero")))
    } else {
        Ok(())
    }
}

fn status_list(name: &str, statuses: &[u16]) -> Result<(), Error> {
    match statuses.iter().find(|s| !(100..=599).contains(*s)) {
        Some(s) => Err(Error::config(format!(
            "{name}: {s} is not an HTTP status (100-599)"
        ))),
        None => Ok(()),
    }
}

impl Builder {
    /// A builder with no sites and every option at its default.
    pub fn new() -> Self {
        Builder {
            sites: Vec::new(),
            cfg: Config::default(),
            err: None,
            events: None,
            resolver: None,
            probe_fn: None,
            runtime: None,
        }
    }

    /// Add a site, in sidekick's SITE syntax: comma-separated pools, each with optional
    /// `{N...M}` ranges, e.g. `http://minio{1...4}:9000,http://10.0.0.{5...8}:9000`. Sites are
    /// tried in the order they are added. At least one site is required.
    pub fn site(mut self, spec: impl AsRef<str>) -> Self {
        self.sites.push(spec.as_ref().to_string());
        self
    }

    /// Add several sites, in order (see [`Builder::site`]).
    pub fn sites<I, S>(mut self, specs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.sites
            .extend(specs.into_iter().map(|s| s.as_ref().to_string()));
        self
    }

    /// How to choose inside a site. Default is [`Policy::PeakEwma`] (power of two choices).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.cfg.policy = policy;
        self
    }

    /// Turn active health probes on or off. Default is on. With probes off every endpoint starts
    /// in rotation and only passive ejection takes one out.
    pub fn health_check(mut self, enabled: bool) -> Self {
        self.cfg.probe.enabled = enabled;
        self
    }

    /// Probe path, appended to the endpoint's URL (a leading `/` is added when missing). Default is
    /// `/`, like sidekick; MinIO wants `/minio/health/ready` (or `/minio/health/cluster`).
    pub fn health_path(mut self, path: impl AsRef<str>) -> Self {
        self.cfg.probe.path = health::normalize_path(path.as_ref());
        self
    }

    /// A different probe path for the last site (sidekick's `--read-health-path`), e.g.
    /// `/minio/health/cluster/read` for a read-only replica. Default: the same path as the others.
    pub fn last_site_health_path(mut self, path: impl AsRef<str>) -> Self {
        self.cfg.probe.last_site_path = Some(health::normalize_path(path.as_ref()));
        self
    }

    /// Probe this port instead of the endpoint's own. Default: the endpoint's port.
    pub fn health_port(mut self, port: impl Into<Option<u16>>) -> Self {
        self.cfg.probe.port = port.into();
        self
    }

    /// Time between probes of one endpoint (plus jitter). Default is 5 s.
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.cfg.probe.interval = interval;
        self
    }

    /// Deadline of one probe. Default is 10 s.
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.probe.timeout = timeout;
        self
    }

    /// Random share added to every probe delay, from 0.0 to 10.0: the interval becomes
    /// `interval + uniform[0, jitter × interval)`, and the first probe waits up to
    /// `jitter × min(interval, 1 s)`. Default is 0.2. (sidekick uses 1.0.)
    pub fn health_jitter(mut self, jitter: f64) -> Self {
        self.cfg.probe.jitter = jitter;
        self
    }

    /// Statuses a probe answer must have to pass. Default is `[200]`.
    pub fn healthy_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.cfg.probe.healthy = statuses.into_iter().collect();
        self
    }

    /// Consecutive passing probes that bring an endpoint up. Default is 1.
    pub fn rise(mut self, n: u32) -> Self {
        self.cfg.probe.rise = n;
        self
    }

    /// Consecutive failing probes that take an endpoint down. Default is 1.
    pub fn fall(mut self, n: u32) -> Self {
        self.cfg.probe.fall = n;
        self
    }

    /// Response statuses that count toward passive ejection; [`Builder::eject_after`] consecutive
    /// ones eject the endpoint. Default is none (only connection failures eject).
    pub fn eject_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.cfg.eject.statuses = statuses.into_iter().collect();
        self
    }

    /// How many consecutive `eject_statuses` answers eject an endpoint. Default is 5.
    pub fn eject_after(mut self, n: u32) -> Self {
        self.cfg.eject.after = n;
        self
    }

    /// The most of a site's probed-up endpoints passive ejection may take out, from 0.0 to 1.0;
    /// the last one always stays. Default is 0.5.
    pub fn max_ejected_share(mut self, share: f64) -> Self {
        self.cfg.eject.max_share = share;
        self
    }

    /// Backoff before the trial request of an ejected endpoint when probes are off: `base`
    /// doubling per ejection in a row up to `max`, jittered down by up to half. Default is 1 s
    /// and 60 s.
    pub fn eject_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.cfg.eject.backoff_base = base;
        self.cfg.eject.backoff_max = max;
        self
    }

    /// Response statuses counted as failures in the load score and the statistics. Default is
    /// 500–599 and 429.
    pub fn failure_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.cfg.failure_statuses = statuses.into_iter().collect();
        self
    }

    /// Latency recorded for a failed request, so that a fast-failing endpoint never looks
    /// cheapest. Default is 1 s.
    pub fn failure_penalty(mut self, penalty: Duration) -> Self {
        self.cfg.failure_penalty = penalty;
        self
    }

    /// Time constant of the latency EWMA. Default is 10 s.
    pub fn ewma_decay(mut self, decay: Duration) -> Self {
        self.cfg.ewma_decay = decay;
        self
    }

    /// Latency assumed for endpoints of a site that has no sample yet. Default is 10 ms.
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.cfg.default_rtt = rtt;
        self
    }

    /// Total attempts for a request that was sent and failed (idempotent, replayable requests
    /// only; connect failures are retried on every untried endpoint regardless). Default is 3;
    /// 1 turns such retries off.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.cfg.retry.max_attempts = n;
        self
    }

    /// Statuses on which an idempotent request is retried on another endpoint. Default is
    /// 502, 503 and 504.
    pub fn retry_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.cfg.retry.statuses = statuses.into_iter().collect();
        self
    }

    /// The largest request body buffered so that it can be replayed on a retry. Larger (or
    /// unknown-length) bodies are streamed and only retried when nothing was sent. Default is
    /// 64 KiB.
    pub fn retry_buffer(mut self, bytes: usize) -> Self {
        self.cfg.retry.buffer = bytes;
        self
    }

    /// Retry budget: retries may add at most `ratio` of the requests of the last 10 s, plus
    /// `min_per_sec` per second. Default is 0.2 and 10.
    pub fn retry_budget(mut self, ratio: f64, min_per_sec: u32) -> Self {
        self.cfg.retry.budget_ratio = ratio;
        self.cfg.retry.budget_min_per_sec = min_per_sec;
        self
    }

    /// What to do with the `Host` header. Default is [`HostPolicy::Keep`].
    pub fn host_policy(mut self, policy: HostPolicy) -> Self {
        self.cfg.host_policy = policy;
        self
    }

    /// Deadline for one attempt to get a response head; on expiry the attempt counts as a
    /// timeout (the endpoint is ejected, idempotent requests are retried). Default is none.
    pub fn attempt_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.cfg.attempt_timeout = timeout.into();
        self
    }

    /// TCP connect timeout of the built-in connector (probes and [`Client`](crate::Client)).
    /// Default is 3 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.connect_timeout = timeout;
        self
    }

    /// How long an idle connection to an endpoint is kept by the built-in client.
    /// Default is 90 s.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.pool_idle_timeout = timeout;
        self
    }

    /// The most idle connections kept per endpoint by the built-in client. Default is 1024.
    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.cfg.pool_max_idle_per_host = n;
        self
    }

    /// Fan each host name out into one endpoint per address it resolves to (sidekick's
    /// `--rr-dns-mode`), re-resolved every [`Builder::dns_refresh`]; a failed lookup keeps the last
    /// good answer. TLS still verifies against the host name. Default is off.
    pub fn rr_dns(mut self, enabled: bool) -> Self {
        self.cfg.rr_dns = enabled;
        self
    }

    /// How often fanned-out host names are resolved again, jittered by ±10 %, never more often
    /// than once a second. Default is 30 s.
    pub fn dns_refresh(mut self, every: Duration) -> Self {
        self.cfg.dns_refresh = every;
        self
    }

    /// Replace the system resolver used by DNS fan-out (tests, service discovery).
    /// Default: the system resolver.
    pub fn resolver<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<Vec<std::net::IpAddr>>> + Send + 'static,
    {
        self.resolver = Some(Arc::new(move |h| Box::pin(f(h))));
        self
    }

    /// Probe endpoints with this function instead of an HTTP `GET` (a TCP check, a gRPC health
    /// call, a test double). It receives the endpoint URL and resolves to `Ok(())` when healthy,
    /// `Err(reason)` otherwise; the health timeout, interval, jitter and rise/fall still apply.
    /// Default: the HTTP probe.
    pub fn probe_fn<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.probe_fn = Some(Arc::new(move |u| Box::pin(f(u))));
        self
    }

    /// rustls configuration for HTTPS endpoints. Default: the system's root certificates.
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.cfg.tls = Some(Arc::new(config));
        self
    }

    /// Called on every state change and retry (in addition to the `tracing` events). Keep it
    /// quick: it runs on the request or probe path. Default: none.
    pub fn on_event(mut self, f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.events = Some(Arc::new(f));
        self
    }

    /// The tokio runtime that runs probes and DNS refreshes. Default: the runtime `build()` is
    /// called from (it is an error to build outside one without setting this).
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    fn validate(&self) -> Result<(), Error> {
        if let Some(e) = &self.err {
            return Err(Error::config(e.to_string()));
        }
        let c = &self.cfg;
        if self.sites.is_empty() {
            return Err(Error::config("no site given: add at least one"));
        }
        positive("health_interval", c.probe.interval)?;
        positive("health_timeout", c.probe.timeout)?;
        positive("connect_timeout", c.connect_timeout)?;
        positive("ewma_decay", c.ewma_decay)?;
        positive("default_rtt", c.default_rtt)?;
        positive("dns_refresh", c.dns_refresh)?;
        positive("eject_backoff base", c.eject.backoff_base)?;
        if c.eject.backoff_max < c.eject.backoff_base {
            return Err(Error::config(
                "eject_backoff: max must not be smaller than base",
            ));
        }
        if let Some(t) = c.attempt_timeout {
            positive("attempt_timeout", t)?;
        }
        if !(0.0..=10.0).contains(&c.probe.jitter) {
            return Err(Error::config(format!(
                "health_jitter must be within 0.0 and 10.0, got {}",
                c.probe.jitter
            )));
        }
        if !(0.0..=1.0).contains(&c.eject.max_share) {
            return Err(Error::config(format!(
                "max_ejected_share must be within 0.0 and 1.0, got {}",
                c.eject.max_share
            )));
        }
        if !(c.retry.budget_ratio >= 0.0 && c.retry.budget_ratio <= 100.0) {
            return Err(Error::config(format!(
                "retry_budget ratio must be within 0.0 and 100.0, got {}",
                c.retry.budget_ratio
            )));
        }
        if c.retry.max_attempts == 0 {
            return Err(Error::config("max_attempts must be at least 1"));
        }
        if c.probe.rise == 0 || c.probe.fall == 0 || c.eject.after == 0 {
            return Err(Error::config(
                "rise, fall and eject_after must be at least 1",
            ));
        }
        if c.probe.healthy.is_empty() {
            return Err(Error::config("healthy_statuses must not be empty"));
        }
        if c.probe.port == Some(0) {
            return Err(Error::config("health_port must be within 1 and 65535"));
        }
        status_list("healthy_statuses", &c.probe.healthy)?;
        status_list("eject_statuses", &c.eject.statuses)?;
        status_list("failure_statuses", &c.failure_statuses)?;
        status_list("retry_statuses", &c.retry.statuses)?;
        Ok(())
    }

    /// Check everything, start the probes and return the balancer.
    ///
    /// Fails with an [`Error::is_config`] error naming the bad site or option, or when no tokio
    /// runtime is available.
    pub fn build(self) -> Result<Balancer, Error> {
        self.validate()?;
        let runtime = match self.runtime.clone() {
            Some(h) => h,
            None => Handle::try_current().map_err(|_| {
                Error::config("no tokio runtime: call build() inside one or set .runtime(handle)")
            })?,
        };
        let mut parsed = Vec::with_capacity(self.sites.len());
        for (i, spec) in self.sites.iter().enumerate() {
            let targets = site::parse_site(spec)
                .map_err(|e| Error::config(format!("site {}: {e}", i + 1)).with_source(e))?;
            parsed.push(targets);
        }
        let cfg = self.cfg;
        let names = ServerNames::default();
        let prober = if !cfg.probe.enabled {
            None
        } else if let Some(f) = self.probe_fn {
            Some(Prober::Custom(f))
        } else {
            let _guard = runtime.enter();
            #[cfg(feature = "tls")]
            let conn = transport::connector(cfg.connect_timeout, cfg.tls.clone(), names.clone())?;
            #[cfg(not(feature = "tls"))]
            let conn = transport::connector(cfg.connect_timeout, names.clone())?;
            Some(Prober::Http(Box::new(
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .pool_max_idle_per_host(1)
                    .build(conn),
            )))
        };
        let load_cfg = LoadConfig {
            decay_ns: cfg.ewma_decay.as_nanos() as f64,
            default_rtt_ns: cfg.default_rtt.as_nanos() as f64,
            penalty_ns: cfg.failure_penalty.as_nanos() as f64,
        };
        let n_sites = parsed.len();
        let sites = parsed
            .into_iter()
            .enumerate()
            .map(|(i, targets)| {
                let path = match (&cfg.probe.last_site_path, i + 1 == n_sites) {
                    (Some(p), true) => p.clone(),
                    _ => cfg.probe.path.clone(),
                };
                Site {
                    targets,
                    probe_path: path,
                    state: ArcSwap::from_pointee(SiteState::default()),
                    load: SiteLoad::default(),
                    rr: AtomicUsize::new(0),
                    lock: Mutex::new(()),
                }
            })
            .collect();
        let (changed, _) = tokio::sync::watch::channel(0u64);
        let core = Arc::new_cyclic(|me| Core {
            me: me.clone(),
            budget: Budget::new(cfg.retry.budget_ratio, cfg.retry.budget_min_per_sec),
            probe_cfg: Arc::new(cfg.probe.clone()),
            cfg,
            load_cfg,
            sites,
            epoch: Instant::now(),
            cancel: CancellationToken::new(),
            changed,
            events: self.events,
            resolver: self.resolver,
            prober,
            names,
            runtime,
            next_id: AtomicU64::new(1),
        });
        core.populate();
        Ok(Balancer { core })
    }
}

// ===== core state =====

#[derive(Default)]
pub(crate) struct SiteState {
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    pub(crate) available: Vec<Arc<Endpoint>>,
}

pub(crate) struct Site {
    targets: Vec<Target>,
    probe_path: String,
    pub(crate) state: ArcSwap<SiteState>,
    pub(crate) load: SiteLoad,
    rr: AtomicUsize,
    /// Serialises state changes of this site (never held on the request path).
    lock: Mutex<()>,
}

pub(crate) struct Core {
    /// A weak link to this very core, for tasks that must not keep it alive.
    me: Weak<Core>,
    pub(crate) cfg: Config,
    probe_cfg: Arc<ProbeConfig>,
    pub(crate) load_cfg: LoadConfig,
    pub(crate) sites: Vec<Site>,
    epoch: Instant,
    pub(crate) budget: Budget,
    cancel: CancellationToken,
    changed: tokio::sync::watch::Sender<u64>,
    events: Option<EventFn>,
    resolver: Option<ResolveFn>,
    prober: Option<Prober>,
    pub(crate) names: ServerNames,
    pub(crate) runtime: Handle,
    next_id: AtomicU64,
}

impl Drop for Core {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn lock(m: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Core {
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos() as u64
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

    fn make_endpoint(
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
            trial: TRIAL_NONE.into(),
            fail_run: 0.into(),
            stats: Default::default(),
            down_since: 0.into(),
            last_error: Mutex::new(None),
            cancel: self.cancel.child_token(),
        }))
    }

    fn start_probe(self: &Arc<Self>, ep: &Arc<Endpoint>) {
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
    fn populate(self: &Arc<Self>) {
        for (si, site) in self.sites.iter().enumerate() {
            let mut eps = Vec::new();
            for (origin, t) in site.targets.iter().enumerate() {
                let fan_out = self.cfg.rr_dns && t.host().parse::<std::net::IpAddr>().is_err();
                if fan_out {
                    self.runtime.spawn(dns_task(
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
    fn publish(&self, site: &Site, endpoints: Vec<Arc<Endpoint>>) {
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

    pub(crate) fn pick(self: &Arc<Self>, exclude: &[EndpointId]) -> Result<Lease, Error> {
        let now = self.now_ns();
        for site in &self.sites {
            let st = site.state.load();
            if st.available.is_empty() {
                continue;
            }
            let seed = site.load.seed(&self.load_cfg);
            for _ in 0..4 {
                let chosen = balance::select(
                    self.cfg.policy,
                    &st.available,
                    &site.rr,
                    now,
                    seed,
                    &self.load_cfg,
                    |e| e.pickable() && !exclude.contains(&e.id),
                );
                let Some(i) = chosen else { break };
                let ep = &st.available[i];
                if ep.acquire() {
                    ep.load.start();
                    return Ok(Lease {
                        ep: ep.clone(),
                        core: self.clone(),
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

    // ----- outcomes -----

    fn finish(&self, ep: &Arc<Endpoint>, outcome: Outcome, latency_ns: f64) {
        ep.load.end();
        let now = self.now_ns();
        let site = &self.sites[ep.site];
        let was_trial = ep.trial.load(Ordering::Acquire) == TRIAL_CLAIMED;
        let (failed, eject) = match outcome {
            Outcome::Cancelled => {
                if was_trial {
                    // The trial told us nothing: let another request try.
                    let _ = ep.trial.compare_exchange(
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
                let failed = self.cfg.failure_statuses.contains(&s);
                let eject = if self.cfg.eject.statuses.contains(&s) {
                    let run = ep.fail_run.fetch_add(1, Ordering::AcqRel) + 1;
                    (run >= self.cfg.eject.after).then_some(EjectReason::Status)
                } else {
                    ep.fail_run.store(0, Ordering::Release);
                    None
                };
                (failed, eject)
            }
            Outcome::Connect | Outcome::Reset => (true, Some(EjectReason::Connect)),
            Outcome::Timeout => (true, Some(EjectReason::Timeout)),
        };
        ep.stats.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            ep.stats.failures.fetch_add(1, Ordering::Relaxed);
            let penalty = latency_ns.max(self.load_cfg.penalty_ns);
            ep.load.observe(penalty, now, &self.load_cfg);
        } else {
            ep.load.observe(latency_ns, now, &self.load_cfg);
            site.load.observe(latency_ns, now, &self.load_cfg);
        }
        if let Some(reason) = eject {
            if was_trial {
                self.trial_failed(ep, reason);
            } else {
                self.eject(ep, reason);
            }
        } else if !failed {
            if ep.fail_run.load(Ordering::Relaxed) == 0 {
                ep.eject_streak.store(0, Ordering::Relaxed);
            }
            if was_trial {
                self.readmit(ep);
            }
        } else if was_trial {
            // Failed without an ejection reason (e.g. a 500): still not healthy enough.
            self.trial_failed(ep, EjectReason::Status);
        }
    }

    /// Passive ejection, within the bound. Returns whether the endpoint was ejected.
    fn eject(self: &Core, ep: &Arc<Endpoint>, reason: EjectReason) -> bool {
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

    // ----- DNS fan-out -----

    fn apply_addresses(
        self: &Arc<Self>,
        si: usize,
        origin: usize,
        target: &Target,
        ips: &[std::net::IpAddr],
    ) {
        let site = &self.sites[si];
        let host = target.host().to_string();
        let mut started = Vec::new();
        {
            let _g = lock(&site.lock);
            let cur = site.state.load();
            let mut next: Vec<Arc<Endpoint>> = Vec::with_capacity(cur.endpoints.len() + ips.len());
            let mut added = false;
            let mut removed = false;
            // Keep endpoints of other targets, and of this target whose address is still there.
            for ep in &cur.endpoints {
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
                match self.make_endpoint(si, origin, target.with_host(*ip), Some(&host)) {
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
            self.publish(site, next);
        }
        tracing::info!(host = %host, addresses = ips.len(), "DNS fan-out updated");
        for ep in &started {
            self.start_probe(ep);
        }
    }

    fn resolve(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<std::net::IpAddr>>> + Send>> {
        match &self.resolver {
            Some(r) => r(host),
            None => Box::pin(async move {
                let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
                let mut ips: Vec<std::net::IpAddr> = Vec::new();
                for a in addrs {
                    if !ips.contains(&a.ip()) {
                        ips.push(a.ip());
                    }
                }
                Ok(ips)
            }),
        }
    }
}

/// Resolve one host name now and then every `dns_refresh` (±10 %), at most once a second,
/// keeping the last good answer when a lookup fails or comes back empty.
async fn dns_task(
    core: Weak<Core>,
    si: usize,
    origin: usize,
    target: Target,
    cancel: CancellationToken,
) {
    let mut delay = Duration::ZERO;
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let Some(c) = core.upgrade() else { return };
        let refresh = c.cfg.dns_refresh.max(Duration::from_secs(1));
        let lookup = c.resolve(target.host().to_string());
        drop(c);
        let res = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(5), lookup) => r,
        };
        let Some(c) = core.upgrade() else { return };
        match res {
            Ok(Ok(ips)) if !ips.is_empty() => {
                failures = 0;
                c.apply_addresses(si, origin, &target, &ips);
            }
            other => {
                failures = failures.saturating_add(1);
                let why = match other {
                    Ok(Ok(_)) => "no address".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "lookup timed out".to_string(),
                };
                tracing::warn!(host = %target.host(), error = %why, "DNS lookup failed; keeping the last good answer");
            }
        }
        drop(c);
        // Retry a failing first lookup sooner, but never more than once a second.
        let base = if failures > 0 && failures < 5 {
            Duration::from_secs(1)
        } else {
            refresh
        };
        delay = base
            .mul_f64(0.9 + 0.2 * fastrand::f64())
            .max(Duration::from_secs(1));
    }
}

// ===== public handle =====

/// A client-side load balancer over ordered sites of endpoints. Cheap to clone; the probes stop
/// when the last clone (and the last [`Lease`]) is dropped.
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

    /// Wait until at least one endpoint is available, at most `timeout`.
    pub async fn ready(&self, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.core.changed.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            if self.core.any_available() {
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
        for site in &self.core.sites {
            let seed = site.load.seed(&self.core.load_cfg);
            for ep in &site.state.load().endpoints {
                out.push(ep.info(now, seed, &self.core.load_cfg));
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
    core: Arc<Core>,
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
        let latency = self.core.now_ns().saturating_sub(self.start_ns) as f64;
        self.done = true;
        self.core.finish(&self.ep, outcome, latency);
    }

    /// Report the outcome with a latency measured by the caller (e.g. time to first byte).
    pub fn finish_with_latency(mut self, outcome: Outcome, latency: Duration) {
        self.done = true;
        self.core
            .finish(&self.ep, outcome, latency.as_nanos() as f64);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.done {
            self.core.finish(&self.ep, Outcome::Cancelled, 0.0);
        }
    }
}
