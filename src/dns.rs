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
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::balancer::{lock, Core};
use crate::endpoint::Endpoint;
use crate::site::Target;

impl Core {
    pub(crate) fn apply_addresses(
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

    pub(crate) fn resolve(
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
pub(crate) async fn dns_task(
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
