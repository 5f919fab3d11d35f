//! Configuration: [`Builder`], where every option is set, documented with its default, and
//! validated once by [`Builder::build`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::balancer::{Balancer, Hooks};
use crate::config::{Config, HostPolicy};
use crate::error::Error;
use crate::event::{Event, EventFn};
use crate::health;
use crate::options::{self, Value};
use crate::policy::Policy;

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
#[derive(Clone)]
pub struct Builder {
    sites: Vec<String>,
    pub(crate) cfg: Config,
    hooks: Hooks,
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

impl Builder {
    /// A builder with no sites and every option at its default.
    pub fn new() -> Self {
        Builder {
            sites: Vec::new(),
            cfg: Config::default(),
            hooks: Hooks::default(),
        }
    }

    /// Set the option called `name` from its text form (see [`options`](crate::options): the
    /// names are those of this builder's methods, e.g. `health_interval` = `2s`). The error
    /// names the option and the bad value, or the unknown name. Ranges are checked by
    /// [`Builder::build`].
    ///
    /// ```
    /// let b = sidekick::Balancer::builder()
    ///     .option("health_interval", "2s")?
    ///     .option("eject_statuses", "500-504")?;
    /// assert_eq!(b.get("health_interval")?.to_string(), "2s");
    /// assert!(sidekick::Balancer::builder().option("rise", "often").is_err());
    /// # Ok::<(), sidekick::Error>(())
    /// ```
    pub fn option(self, name: &str, value: &str) -> Result<Self, Error> {
        let value = options::find(name)?.parse(value)?;
        self.set(name, value)
    }

    /// Set the option called `name` to a typed value (what a binding has at hand: a number, a
    /// duration, a list). The error names the option when the value is not of its
    /// [`Kind`](crate::options::Kind).
    pub fn set(mut self, name: &str, value: Value) -> Result<Self, Error> {
        options::find(name)?.write(&mut self.cfg, value)?;
        Ok(self)
    }

    /// The value of the option called `name` as set so far (its default when untouched).
    pub fn get(&self, name: &str) -> Result<Value, Error> {
        Ok(options::find(name)?.read(&self.cfg))
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

    /// Optimistic probing (sidekick's `--health-optimistic`): once an endpoint is up, it is
    /// probed again only after a request failed on it (a connect failure, reset or timeout), at
    /// its next probe time; while it is down or ejected it is probed as usual. Fewer probes
    /// (thousands of clients over one cluster), at the price of noticing a dead endpoint only
    /// when a request meets it. Default is off: every endpoint is probed every interval.
    pub fn health_optimistic(mut self, enabled: bool) -> Self {
        self.cfg.probe.optimistic = enabled;
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

    /// Time constant of the latency EWMA. An endpoint left idle after a slow answer or a
    /// failure has its estimate relaxed toward half the site's typical latency eight times as
    /// fast, so it is tried again within this period (see the `load` module). Default is 10 s.
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

    /// Hedge idempotent, replayable requests: when an attempt has not produced its response
    /// head after `delay`, send one more attempt to another endpoint, take the first answer and
    /// drop the other attempt (its lease finishes as cancelled, not held against the endpoint).
    /// Each hedge is charged to the retry budget like a retry ([`Builder::retry_budget`]): when
    /// the budget is spent there is no hedge. Used by the tower layer and
    /// [`Client`](crate::Client). With [`Builder::hedge_percentile`], the floor of its delay.
    /// Default is none: no hedging.
    pub fn hedge_delay(mut self, delay: impl Into<Option<Duration>>) -> Self {
        self.cfg.retry.hedge.delay = delay.into();
        self
    }

    /// Hedge after this percentile (0 to 100, e.g. 95: the slowest 5 % are hedged) of the
    /// recent latencies of the site the request went to (its answers over the last 5 to 10 s),
    /// never sooner than [`Builder::hedge_delay`] when that is set too. Until 20 latencies are
    /// known, only `hedge_delay` applies. Default is 0: off.
    pub fn hedge_percentile(mut self, percentile: f64) -> Self {
        self.cfg.retry.hedge.percentile = percentile;
        self
    }

    /// How many hedges one request may send, one more after each delay, 1 to 8. Default is 1.
    pub fn hedge_max(mut self, n: u32) -> Self {
        self.cfg.retry.hedge.max = n;
        self
    }

    /// What to do with the `Host` header. Default is [`HostPolicy::Keep`].
    pub fn host_policy(mut self, policy: HostPolicy) -> Self {
        self.cfg.host_policy = policy;
        self
    }

    /// Deadline for one attempt to get a response head; on expiry the attempt counts as a
    /// timeout (the endpoint is ejected, idempotent requests are retried). Default is none.
    /// In the tower layer and [`Client`](crate::Client) it is ended, like `response_timeout`, by
    /// the balancer's watchdog thread, so it may end up to an eighth of the bound late (at most
    /// 1 s).
    pub fn attempt_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.cfg.attempt_timeout = timeout.into();
        self
    }

    /// How long one attempt may wait for its response head with nothing happening: counted from
    /// the request's last body byte (each body chunk sent starts it again), so a long upload is
    /// not cut while a backend that accepts and never answers is. On expiry the attempt counts as
    /// a timeout (against the endpoint; an idempotent request is retried on another one within
    /// the retry budget). Applies to the tower layer, [`Client`](crate::Client), the aws
    /// connector and the reqwest middleware. `None` removes the bound. Default is 60 s;
    /// [`attempt_timeout`](Builder::attempt_timeout) remains an optional overall cap. The waits
    /// are ended by one watchdog thread per balancer, not a timer per request, so a wait may
    /// end up to an eighth of the bound late (at most 1 s: 60 s ends by 61 s).
    pub fn response_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.cfg.response_timeout = timeout.into();
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

    /// Slow start: an endpoint that comes back into rotation (a passing probe after being down,
    /// the end of an ejection, or added to a site that was already running) gets a share of
    /// picks that ramps linearly from 10 % to its full share over `window`, so a backend with a
    /// cold cache is not flooded at once. Endpoints present when the balancer starts get their
    /// full share from the first probe. Events: [`Event::SlowStartBegan`] and
    /// [`Event::SlowStartEnded`]. `None` turns it off. Default is off (sidekick has none).
    pub fn slow_start(mut self, window: impl Into<Option<Duration>>) -> Self {
        self.cfg.slow_start = window.into();
        self
    }

    /// Graded spill-over between sites (Envoy's priority levels), instead of all-or-nothing
    /// failover. Each site's health is its available endpoints ÷ its endpoints ×
    /// [`overprovisioning`](Builder::overprovisioning), capped at 100 %; the first site takes
    /// that share of the traffic, the next takes its health of what is left, and so on (shares
    /// are scaled up when all the sites together are under 100 %). A pick draws the site by
    /// these shares, then the endpoint within it. So a site of 4 down to 1 keeps 35 % and
    /// spills 65 % to the next site, rather than sending everything to its survivor. Event:
    /// [`Event::SiteShares`] when the shares change. Default is off: traffic goes to the first
    /// site with an available endpoint (sidekick's failover).
    pub fn site_spillover(mut self, enabled: bool) -> Self {
        self.cfg.site_spillover = enabled;
        self
    }

    /// With [`site_spillover`](Builder::site_spillover), the factor a site's healthy share is
    /// multiplied by: at 1.4 a site keeps all its traffic while at least 1/1.4 ≈ 72 % of its
    /// endpoints are available. Within 0.0 (excluded) and 100.0. Default is 1.4.
    pub fn overprovisioning(mut self, factor: f64) -> Self {
        self.cfg.overprovisioning = factor;
        self
    }

    /// Replace the system resolver used by DNS fan-out (tests, service discovery).
    /// Default: the system resolver.
    pub fn resolver<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<Vec<std::net::IpAddr>>> + Send + 'static,
    {
        self.hooks.resolver = Some(Arc::new(move |h| Box::pin(f(h))));
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
        self.hooks.probe_fn = Some(Arc::new(move |u| Box::pin(f(u))));
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
        let f: EventFn = Arc::new(f);
        self.hooks.events = Some(f);
        self
    }

    /// Read the time from tokio's clock, so that `tokio::time::pause()` and `advance()` drive
    /// latency decay and downtimes too (tests and simulations of your own application). Default
    /// is off: the system's monotonic clock, read in a few nanoseconds.
    pub fn tokio_clock(mut self, enabled: bool) -> Self {
        self.hooks.tokio_clock = enabled;
        self
    }

    /// The tokio runtime that runs probes and DNS refreshes. Default: the runtime `build()` is
    /// called from (it is an error to build outside one without setting this).
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.hooks.runtime = Some(handle);
        self
    }

    /// Check everything, start the probes and return the balancer.
    ///
    /// Fails with an [`Error::is_config`] error naming the bad site or option, or when no tokio
    /// runtime is available.
    pub fn build(self) -> Result<Balancer, Error> {
        if self.sites.is_empty() {
            return Err(Error::config("no site given: add at least one"));
        }
        self.cfg.validate()?;
        Balancer::start(&self.sites, self.cfg, self.hooks)
    }
}

impl Balancer {
    /// Start configuring a balancer.
    pub fn builder() -> Builder {
        Builder::new()
    }
}
