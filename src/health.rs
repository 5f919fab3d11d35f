//! Active health probes.
//!
//! Every endpoint gets its own probe task on tokio: `GET <endpoint><path>` (port optionally
//! overridden), healthy iff the answer's status is in the healthy set (default: exactly 200, like
//! sidekick). Two choices differ from the Go sidekick on purpose:
//!
//! - **Jitter on every probe, the first one included.** A fleet restarted together (a deployment
//!   rollout) would otherwise probe every backend in lockstep, forever. The first probe runs after a
//!   random delay of up to `jitter × min(interval, 1 s)`; later ones `interval + uniform[0,
//!   jitter × interval)` after the previous one.
//! - **Rise/fall hysteresis.** `rise` consecutive passes bring an endpoint up and `fall`
//!   consecutive failures take it down. The defaults (1/1) match sidekick; `2`/`3` (HAProxy's) stop
//!   a flapping backend from flapping the traffic.
//!
//! The last site can be probed on its own path (sidekick's `--read-health-path`, for a read-only
//! replica whose write-quorum check would fail).

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HyperClient;
use tokio_util::sync::CancellationToken;

use crate::endpoint::Endpoint;
use crate::failover::Health;
use crate::transport::Connector;

/// Where the probes report: the balancer, known to the probe tasks only through this trait and
/// only weakly (a probe task never keeps its balancer alive).
pub(crate) trait ProbeSink: Send + Sync {
    /// The probes changed their verdict on `ep`; `err` says why a failing probe failed.
    fn verdict(&self, ep: &Arc<Endpoint>, health: Health, err: Option<String>);
    /// A probe passed without changing the verdict (it ends a passive ejection).
    fn passed(&self, ep: &Arc<Endpoint>);
}

/// Probe settings (the builder's `health_*` options).
#[derive(Clone, Debug)]
pub(crate) struct ProbeConfig {
    pub(crate) enabled: bool,
    pub(crate) path: String,
    pub(crate) last_site_path: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) jitter: f64,
    pub(crate) healthy: Vec<u16>,
    pub(crate) rise: u32,
    pub(crate) fall: u32,
    /// Probe an endpoint that is up only after a request failed on it.
    pub(crate) optimistic: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            enabled: true,
            path: "/".to_string(),
            last_site_path: None,
            port: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            jitter: 0.2,
            healthy: vec![200],
            rise: 1,
            fall: 1,
            optimistic: false,
        }
    }
}

/// Normalise a probe path the way sidekick does: a missing leading `/` is added.
pub(crate) fn normalize_path(p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

// ===== hysteresis =====

/// Pure rise/fall state machine: `rise` consecutive passes to go up, `fall` consecutive failures to
/// go down. From `Unknown`, one failure is enough to say `Down` (an endpoint starts out of rotation
/// anyway, so saying so costs nothing and tells the operator early).
#[derive(Clone, Debug)]
pub(crate) struct Hysteresis {
    rise: u32,
    fall: u32,
    state: Health,
    streak: u32,
    streak_ok: bool,
}

impl Hysteresis {
    pub(crate) fn new(rise: u32, fall: u32) -> Self {
        Hysteresis {
            rise: rise.max(1),
            fall: fall.max(1),
            state: Health::Unknown,
            streak: 0,
            streak_ok: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> Health {
        self.state
    }

    /// Record one probe result; returns the new verdict when it changed.
    pub(crate) fn observe(&mut self, ok: bool) -> Option<Health> {
        if ok == self.streak_ok {
            self.streak = self.streak.saturating_add(1);
        } else {
            self.streak_ok = ok;
            self.streak = 1;
        }
        let next = match (self.state, ok) {
            (Health::Up, false) if self.streak >= self.fall => Health::Down,
            (Health::Unknown, false) => Health::Down,
            (Health::Down | Health::Unknown, true) if self.streak >= self.rise => Health::Up,
            (s, _) => s,
        };
        if next != self.state {
            self.state = next;
            Some(next)
        } else {
            None
        }
    }
}

// ===== schedule =====

/// Delay before the first probe: uniform in `[0, jitter × min(interval, 1 s))`. `u` is uniform in
/// `[0, 1)`.
pub(crate) fn first_delay(interval: Duration, jitter: f64, u: f64) -> Duration {
    interval
        .min(Duration::from_secs(1))
        .mul_f64((jitter * u).clamp(0.0, 1.0))
}

/// Delay between probes: `interval + uniform[0, jitter × interval)`.
pub(crate) fn next_delay(interval: Duration, jitter: f64, u: f64) -> Duration {
    interval + interval.mul_f64((jitter * u).clamp(0.0, 10.0))
}

// ===== the probe task =====

pub(crate) type ProbeClient = HyperClient<Connector, Empty<Bytes>>;

/// A user-supplied probe: given the endpoint URL, resolves to `Ok(())` when healthy or to
/// `Err(reason)`. See [`Builder::probe_fn`](crate::Builder::probe_fn).
pub(crate) type ProbeFn = Arc<
    dyn Fn(
            String,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// How probes are sent: HTTP by default, or a user function.
#[derive(Clone)]
pub(crate) enum Prober {
    Http(Arc<ProbeClient>),
    Custom(ProbeFn),
}

impl Prober {
    /// HTTP probes through `conn`: few connections, each kept a short while.
    pub(crate) fn http(conn: Connector) -> Prober {
        Prober::Http(Arc::new(
            HyperClient::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(1)
                .build(conn),
        ))
    }
}

/// Why one probe failed, for logs and events.
pub(crate) fn probe_once(
    client: &ProbeClient,
    uri: &http::Uri,
    host: &str,
    timeout: Duration,
    healthy: &[u16],
) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
    let req = http::Request::get(uri.clone())
        .header(http::header::HOST, host)
        .header(
            http::header::USER_AGENT,
            concat!("sidekick-lb/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new());
    let client = client.clone();
    let healthy = healthy.to_vec();
    async move {
        let req = req.map_err(|e| format!("bad probe request: {e}"))?;
        let fut = async {
            let resp = client.request(req).await.map_err(|e| {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    src = s.source();
                }
                msg
            })?;
            let status = resp.status().as_u16();
            // Drain the body so the connection can be reused.
            let _ = resp.into_body().collect().await;
            if healthy.contains(&status) {
                Ok(())
            } else {
                Err(format!("response status {status}"))
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("probe timed out after {timeout:?}")),
        }
    }
}

/// Probe one endpoint until cancelled or until the balancer is gone.
pub(crate) async fn run(
    sink: Weak<dyn ProbeSink>,
    ep: Arc<Endpoint>,
    cfg: Arc<ProbeConfig>,
    prober: Prober,
    cancel: CancellationToken,
) {
    if ep.probe_uri.is_none() {
        return;
    }
    let mut state = Hysteresis::new(cfg.rise, cfg.fall);
    let mut delay = first_delay(cfg.interval, cfg.jitter, crate::random::f64());
    // Bounded by cancellation: the loop ends when the balancer (or this endpoint) is dropped.
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = next_delay(cfg.interval, cfg.jitter, crate::random::f64());
        if cfg.optimistic && !due_when_optimistic(&ep) {
            continue;
        }
        // The probe's future lives on the heap only while a probe is under way: a waiting
        // probe task stays small (one per endpoint, tens of thousands of them).
        let probe: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> =
            match (&prober, &ep.probe_uri) {
                (Prober::Http(client), Some(uri)) => Box::pin(probe_once(
                    client,
                    uri,
                    &ep.probe_host,
                    cfg.timeout,
                    &cfg.healthy,
                )),
                (Prober::Http(_), None) => return,
                (Prober::Custom(f), _) => {
                    let fut = f(ep.url.clone());
                    let timeout = cfg.timeout;
                    Box::pin(async move {
                        match tokio::time::timeout(timeout, fut).await {
                            Ok(r) => r,
                            Err(_) => Err(format!("probe timed out after {timeout:?}")),
                        }
                    })
                }
            };
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = probe => r,
        };
        let Some(sink) = sink.upgrade() else { return };
        let ok = result.is_ok();
        if let Some(health) = state.observe(ok) {
            sink.verdict(&ep, health, result.err());
        } else if ok {
            // A passing probe also ends a passive ejection.
            sink.passed(&ep);
        }
        drop(sink);
    }
}

/// With optimistic probing, whether an endpoint needs a probe now: while it is not up (not
/// probed yet, down, or ejected), and once after a request failed on it.
fn due_when_optimistic(ep: &Endpoint) -> bool {
    use std::sync::atomic::Ordering;
    // The probe about to run answers for any failure seen so far.
    let suspect = ep.suspect.swap(false, Ordering::AcqRel);
    let s = ep.standing.load();
    suspect || s.ejected || s.health != Health::Up
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sidekick_like() {
        let c = ProbeConfig::default();
        assert_eq!((c.rise, c.fall), (1, 1));
        assert_eq!(c.healthy, vec![200]);
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(normalize_path("minio/health/ready"), "/minio/health/ready");
        assert_eq!(normalize_path(""), "/");
    }

    #[test]
    fn one_one_flips_on_each_result() {
        let mut h = Hysteresis::new(1, 1);
        assert_eq!(h.observe(true), Some(Health::Up));
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), Some(Health::Down));
        assert_eq!(h.observe(true), Some(Health::Up));
    }

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        let mut h = Hysteresis::new(2, 3);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.state(), Health::Unknown);
        assert_eq!(h.observe(true), Some(Health::Up));
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None); // streak broken
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(Health::Down));
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(Health::Up));
    }

    #[test]
    fn unknown_goes_down_on_first_failure() {
        let mut h = Hysteresis::new(2, 3);
        assert_eq!(h.observe(false), Some(Health::Down));
    }

    #[test]
    fn schedule_bounds() {
        let i = Duration::from_secs(5);
        assert_eq!(first_delay(i, 0.2, 0.0), Duration::ZERO);
        assert!(first_delay(i, 0.2, 0.999) < Duration::from_millis(200));
        let ms = Duration::from_millis(100);
        assert!(first_delay(ms, 1.0, 0.5) == Duration::from_millis(50));
        assert_eq!(next_delay(i, 0.2, 0.0), i);
        assert!(next_delay(i, 0.2, 0.999) < Duration::from_secs(6));
        assert_eq!(next_delay(i, 1.0, 0.5), Duration::from_millis(7500));
    }
}
