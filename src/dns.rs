//! DNS fan-out: one endpoint per address of a host name (sidekick's `--rr-dns-mode`).
//!
//! A host name behind several addresses is one endpoint to a plain HTTP client, so the balancer
//! cannot see, probe or route around its addresses one by one. With `rr_dns` on, each such host
//! name becomes one endpoint per address. Unlike sidekick, which resolves once at start (and on
//! SIGHUP), the answer is refreshed every `dns_refresh` with ±10 % jitter and a floor of one
//! second, and a failed or empty lookup keeps the last good answer: a flaky resolver must not
//! empty a healthy site. Requests to a fanned-out address keep the host name as `Host` and as the
//! TLS server name.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::site::SiteLink;
use crate::target::Target;

/// Resolves a host name to its addresses (the builder's `resolver`, or the system's).
pub(crate) type ResolveFn = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>
        + Send
        + Sync,
>;

/// Where the DNS tasks report: the balancer, known here only through this trait and only
/// weakly (a DNS task never keeps its balancer alive).
pub(crate) trait AddressSink: Send + Sync {
    /// `target` (member `origin` of the site `site` links to) now resolves to `ips` (never
    /// empty).
    fn addresses(&self, site: &Arc<SiteLink>, origin: u64, target: &Target, ips: &[IpAddr]);
}

/// The system resolver, through tokio: every distinct address of `host`.
pub(crate) fn system_resolver() -> ResolveFn {
    Arc::new(|host: String| {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let mut ips: Vec<IpAddr> = Vec::new();
            for a in addrs {
                if !ips.contains(&a.ip()) {
                    ips.push(a.ip());
                }
            }
            Ok(ips)
        })
    })
}

/// One host name to keep resolved: which member of which site, how, and how often.
pub(crate) struct Watch {
    pub(crate) site: Arc<SiteLink>,
    pub(crate) origin: u64,
    pub(crate) target: Target,
    pub(crate) resolver: ResolveFn,
    pub(crate) refresh: Duration,
}

/// Resolve one host name now and then every `dns_refresh` (±10 %), at most once a second,
/// keeping the last good answer when a lookup fails or comes back empty.
pub(crate) async fn dns_task(sink: Weak<dyn AddressSink>, watch: Watch, cancel: CancellationToken) {
    let Watch {
        site,
        origin,
        target,
        resolver,
        refresh,
    } = watch;
    let refresh = refresh.max(Duration::from_secs(1));
    let mut delay = Duration::ZERO;
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let lookup = resolver(target.host().to_string());
        let res = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(5), lookup) => r,
        };
        let Some(sink) = sink.upgrade() else { return };
        match res {
            Ok(Ok(ips)) if !ips.is_empty() => {
                failures = 0;
                sink.addresses(&site, origin, &target, &ips);
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
        drop(sink);
        // Retry a failing first lookup sooner, but never more than once a second.
        let base = if failures > 0 && failures < 5 {
            Duration::from_secs(1)
        } else {
            refresh
        };
        delay = base
            .mul_f64(0.9 + 0.2 * crate::random::f64())
            .max(Duration::from_secs(1));
    }
}
