//! The balancer's settings, in one place: every option's value and default.
//!
//! [`Builder`](crate::Builder) fills a `Config` and validates it; the balancer, the probes and
//! the request helpers read it. The table of options by name (`crate::options`) reads and writes
//! the same fields, so that no binding restates a default.

use std::time::Duration;

#[cfg(feature = "tls")]
use std::sync::Arc;

use crate::error::Error;
use crate::failover::EjectConfig;
use crate::health::ProbeConfig;
use crate::policy::Policy;
use crate::retry::RetryConfig;

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

/// Every setting of a balancer (hooks such as callbacks and the runtime apart).
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) policy: Policy,
    pub(crate) probe: ProbeConfig,
    pub(crate) eject: EjectConfig,
    pub(crate) retry: RetryConfig,
    pub(crate) failure_statuses: Vec<u16>,
    pub(crate) host_policy: HostPolicy,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) response_timeout: Option<Duration>,
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
    // Selection: slow start and graded spill-over between sites.
    pub(crate) slow_start: Option<Duration>,
    pub(crate) site_spillover: bool,
    pub(crate) overprovisioning: f64,
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
            response_timeout: Some(Duration::from_secs(60)),
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
            slow_start: None,
            site_spillover: false,
            overprovisioning: 1.4,
        }
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

impl Config {
    /// Check every setting; the error names the first bad option.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let c = self;
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
        if let Some(t) = c.response_timeout {
            positive("response_timeout", t)?;
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
        let hedge = &c.retry.hedge;
        if let Some(d) = hedge.delay {
            positive("hedge_delay", d)?;
        }
        if !(0.0..=100.0).contains(&hedge.percentile) {
            return Err(Error::config(format!(
                "hedge_percentile must be within 0 (off) and 100, got {}",
                hedge.percentile
            )));
        }
        if !(1..=crate::retry::MAX_HEDGES).contains(&hedge.max) {
            return Err(Error::config(format!(
                "hedge_max must be within 1 and {}, got {}",
                crate::retry::MAX_HEDGES,
                hedge.max
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
        if let Some(t) = c.slow_start {
            positive("slow_start", t)?;
        }
        if !(c.overprovisioning > 0.0 && c.overprovisioning <= 100.0) {
            return Err(Error::config(format!(
                "overprovisioning must be greater than 0.0 and at most 100.0, got {}",
                c.overprovisioning
            )));
        }
        Ok(())
    }
}
