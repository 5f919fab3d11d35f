//! Per-endpoint statistics and their Prometheus text exposition (`/.prometheus/metrics`).
//!
//! sidekick's five counters keep their names, HELP texts and single `endpoint` label, and are
//! exported for the endpoints of **every** site (sidekick exports only the last site's). Added
//! beside them, at the granularity Linkerd and Envoy use: an endpoint-state gauge, requests in
//! flight, ejections by reason, retries by reason, retry-budget exhaustion and a latency
//! histogram.
//!
//! Counting follows sidekick: `requests` = answers relayed from an endpoint (and the 502s the
//! sidecar wrote after an attempt on it failed), `errors` = those with a status of 400 or more,
//! `rx` = request body bytes + the length of every header name and value, `tx` = response body
//! bytes + the status line + the header lines. Health probes are not counted (see the README).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::{EndpointInfo, EndpointState, Event};

/// Upper bounds of the latency histogram, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const EJECT_REASONS: [&str; 3] = ["connect", "timeout", "status"];
const RETRY_REASONS: [&str; 5] = ["connect", "reset", "timeout", "status", "error"];

/// Time out of rotation, as sidekick's table shows it.
#[derive(Debug, Clone, Copy)]
pub struct Downtime {
    /// When the current outage began (`None` while up).
    pub since: Option<Instant>,
    /// Sum of the finished outages.
    pub total: Duration,
    /// The last finished outage.
    pub last: Duration,
}

/// Counters of one endpoint.
#[derive(Debug)]
pub struct EpStats {
    /// Endpoint URL.
    pub url: String,
    requests: AtomicU64,
    errors: AtomicU64,
    rx: AtomicU64,
    tx: AtomicU64,
    health_errors: AtomicU64,
    ejections: [AtomicU64; EJECT_REASONS.len()],
    retries: [AtomicU64; RETRY_REASONS.len()],
    budget_exhausted: AtomicU64,
    slow_starts: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
    min_latency_ns: AtomicU64,
    max_latency_ns: AtomicU64,
    down: Mutex<Downtime>,
}

/// A snapshot of [`EpStats`] for display.
#[derive(Debug, Clone)]
pub struct EpSnapshot {
    /// Calls relayed.
    pub requests: u64,
    /// Calls with a status ≥ 400.
    pub errors: u64,
    /// Bytes received from clients.
    pub rx: u64,
    /// Bytes sent to clients.
    pub tx: u64,
    /// Fastest call (`None` before the first).
    pub min_latency: Option<Duration>,
    /// Slowest call.
    pub max_latency: Duration,
    /// Outages.
    pub down: Downtime,
}

impl EpStats {
    fn new(url: String, created: Instant) -> EpStats {
        EpStats {
            url,
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rx: AtomicU64::new(0),
            tx: AtomicU64::new(0),
            health_errors: AtomicU64::new(0),
            ejections: Default::default(),
            retries: Default::default(),
            budget_exhausted: AtomicU64::new(0),
            slow_starts: AtomicU64::new(0),
            buckets: Default::default(),
            latency_sum_ns: AtomicU64::new(0),
            min_latency_ns: AtomicU64::new(u64::MAX),
            max_latency_ns: AtomicU64::new(0),
            // Like sidekick, an endpoint is down from its creation until its first passing probe.
            down: Mutex::new(Downtime {
                since: Some(created),
                total: Duration::ZERO,
                last: Duration::ZERO,
            }),
        }
    }

    /// Count one finished call.
    pub fn record(&self, status: u16, rx: u64, tx: u64, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 400 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.rx.fetch_add(rx, Ordering::Relaxed);
        self.tx.fetch_add(tx, Ordering::Relaxed);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let secs = latency.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns.fetch_add(ns, Ordering::Relaxed);
        // A read first: a new extreme is rare once traffic flows, and `fetch_min`/`fetch_max`
        // write (a compare-and-swap) every time, on a line every event loop shares.
        if ns < self.min_latency_ns.load(Ordering::Relaxed) {
            self.min_latency_ns.fetch_min(ns, Ordering::Relaxed);
        }
        if ns > self.max_latency_ns.load(Ordering::Relaxed) {
            self.max_latency_ns.fetch_max(ns, Ordering::Relaxed);
        }
    }

    fn lock_down(&self) -> std::sync::MutexGuard<'_, Downtime> {
        self.down.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Back in rotation; returns how long it was out (zero if it was not).
    fn went_up(&self, now: Instant) -> Duration {
        let mut d = self.lock_down();
        match d.since.take() {
            Some(since) => {
                let last = now.saturating_duration_since(since);
                d.last = last;
                d.total += last;
                last
            }
            None => Duration::ZERO,
        }
    }

    fn went_down(&self, now: Instant) {
        let mut d = self.lock_down();
        if d.since.is_none() {
            d.since = Some(now);
        }
    }

    /// Current numbers.
    pub fn snapshot(&self) -> EpSnapshot {
        let min = self.min_latency_ns.load(Ordering::Relaxed);
        EpSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            rx: self.rx.load(Ordering::Relaxed),
            tx: self.tx.load(Ordering::Relaxed),
            min_latency: (min != u64::MAX).then(|| Duration::from_nanos(min)),
            max_latency: Duration::from_nanos(self.max_latency_ns.load(Ordering::Relaxed)),
            down: *self.lock_down(),
        }
    }
}

/// The authority (`host:port`) of an endpoint URL, the key statistics are found by.
pub fn authority_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// Statistics of every endpoint of one balancer generation (a SIGHUP starts a new one, as
/// sidekick resets its numbers then).
#[derive(Debug)]
pub struct Registry {
    by_authority: ArcSwap<HashMap<String, Arc<EpStats>>>,
    insert: Mutex<()>,
    created: Instant,
    /// The sites' shares in percent, as last announced (graded spill-over only).
    site_shares: Mutex<Vec<u32>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            by_authority: ArcSwap::from_pointee(HashMap::new()),
            insert: Mutex::new(()),
            created: Instant::now(),
            site_shares: Mutex::new(Vec::new()),
        }
    }
}

impl Registry {
    /// The statistics of the endpoint with this authority, if it has any yet.
    pub fn get(&self, authority: &str) -> Option<Arc<EpStats>> {
        self.by_authority.load().get(authority).cloned()
    }

    /// The statistics of an endpoint, created on first use.
    pub fn entry(&self, url: &str) -> Arc<EpStats> {
        let key = authority_of(url);
        if let Some(s) = self.get(key) {
            return s;
        }
        let _g = self.insert.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = self.get(key) {
            return s;
        }
        let stats = Arc::new(EpStats::new(url.to_string(), self.created));
        let mut map = HashMap::clone(&self.by_authority.load());
        map.insert(key.to_string(), stats.clone());
        self.by_authority.store(Arc::new(map));
        stats
    }

    /// Make sure every endpoint has statistics (so that the table and the metrics list them
    /// before their first call).
    ///
    /// The missing entries are added in one new map, so syncing `n` endpoints costs O(n) (one
    /// insert at a time would copy the map each time: O(n²) for a large site).
    pub fn sync(&self, endpoints: &[EndpointInfo]) {
        let cur = self.by_authority.load();
        if endpoints
            .iter()
            .all(|e| cur.contains_key(authority_of(&e.url)))
        {
            return;
        }
        drop(cur);
        let _g = self.insert.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = HashMap::clone(&self.by_authority.load());
        map.reserve(endpoints.len().saturating_sub(map.len()));
        for e in endpoints {
            map.entry(authority_of(&e.url).to_string())
                .or_insert_with(|| Arc::new(EpStats::new(e.url.clone(), self.created)));
        }
        self.by_authority.store(Arc::new(map));
    }

    /// Account for a balancer event. For an endpoint coming back into rotation, returns how
    /// long it was out (since the start of the statistics the first time).
    pub fn on_event(&self, ev: &Event) -> Option<Duration> {
        let now = Instant::now();
        match ev {
            Event::Up { endpoint, .. } => {
                return Some(self.entry(endpoint).went_up(now));
            }
            Event::Returned { endpoint, .. } => {
                return Some(self.entry(endpoint).went_up(now));
            }
            Event::Down { endpoint, .. } => {
                let s = self.entry(endpoint);
                s.health_errors.fetch_add(1, Ordering::Relaxed);
                s.went_down(now);
            }
            Event::Ejected {
                endpoint, reason, ..
            } => {
                let s = self.entry(endpoint);
                if let Some(i) = EJECT_REASONS.iter().position(|r| *r == reason.as_str()) {
                    s.ejections[i].fetch_add(1, Ordering::Relaxed);
                }
                s.went_down(now);
            }
            Event::Retry {
                endpoint, reason, ..
            } => {
                if let Some(s) = self.get(authority_of(endpoint)) {
                    let i = RETRY_REASONS
                        .iter()
                        .position(|r| r == reason)
                        .unwrap_or(RETRY_REASONS.len() - 1);
                    s.retries[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::BudgetExhausted { endpoint } => {
                if let Some(s) = self.get(authority_of(endpoint)) {
                    s.budget_exhausted.fetch_add(1, Ordering::Relaxed);
                }
            }
            // The sidecar's forwarding loop does not hedge.
            Event::HedgeSent { .. } | Event::HedgeWon { .. } => {}
            Event::Added { endpoint, .. } => {
                // A row from the start, like the endpoints the balancer was built with.
                self.entry(endpoint);
            }
            // Its statistics stay: the requests it served were served.
            Event::Removed { .. } => {}
            Event::SlowStartBegan { endpoint, .. } => {
                self.entry(endpoint)
                    .slow_starts
                    .fetch_add(1, Ordering::Relaxed);
            }
            // The weight gauge reads the ramp itself.
            Event::SlowStartEnded { .. } => {}
            Event::SiteShares { shares } => {
                shares.clone_into(&mut self.site_shares.lock().unwrap_or_else(|p| p.into_inner()));
            }
        }
        None
    }
}

fn label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn series(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            label(out, v);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

const STATES: [EndpointState; 5] = [
    EndpointState::Up,
    EndpointState::Down,
    EndpointState::Unknown,
    EndpointState::Ejected,
    EndpointState::Trial,
];

/// The Prometheus text exposition (format 0.0.4) for these endpoints.
pub fn render(registry: &Registry, endpoints: &[EndpointInfo]) -> String {
    let rows: Vec<(&EndpointInfo, Arc<EpStats>)> = endpoints
        .iter()
        .map(|e| (e, registry.entry(&e.url)))
        .collect();
    let mut out = String::with_capacity(512 + rows.len() * 2048);
    type Counter = (&'static str, &'static str, fn(&EpStats) -> u64);
    let counters: [Counter; 5] = [
        (
            "sidekick_requests_total",
            "Total number of calls in current SideKick server instance",
            |s| s.requests.load(Ordering::Relaxed),
        ),
        (
            "sidekick_errors_total",
            "Total number of failed calls in current SideKick server instance",
            |s| s.errors.load(Ordering::Relaxed),
        ),
        (
            "sidekick_rx_bytes_total",
            "Total number of bytes received by current SideKick server instance",
            |s| s.rx.load(Ordering::Relaxed),
        ),
        (
            "sidekick_tx_bytes_total",
            "Total number of bytes sent by current SideKick server instance",
            |s| s.tx.load(Ordering::Relaxed),
        ),
        (
            "sidekick_health_error_counts",
            "Total number of health check errors",
            |s| s.health_errors.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, get) in counters {
        header(&mut out, name, "counter", help);
        for (e, s) in &rows {
            series(&mut out, name, &[("endpoint", &e.url)], get(s));
        }
    }

    header(
        &mut out,
        "sidekick_endpoint_state",
        "gauge",
        "Current state of the endpoint: 1 for its state, 0 for the others",
    );
    for (e, _) in &rows {
        let site = (e.site + 1).to_string();
        for st in STATES {
            let v = u8::from(e.state == st);
            series(
                &mut out,
                "sidekick_endpoint_state",
                &[
                    ("endpoint", &e.url),
                    ("site", &site),
                    ("state", st.as_str()),
                ],
                v,
            );
        }
    }
    header(
        &mut out,
        "sidekick_endpoint_in_flight",
        "gauge",
        "Requests sent to the endpoint and not answered yet",
    );
    for (e, _) in &rows {
        series(
            &mut out,
            "sidekick_endpoint_in_flight",
            &[("endpoint", &e.url)],
            e.inflight,
        );
    }
    header(
        &mut out,
        "sidekick_ejections_total",
        "counter",
        "Times passive ejection took the endpoint out of rotation, by reason",
    );
    for (e, s) in &rows {
        for (i, r) in EJECT_REASONS.iter().enumerate() {
            series(
                &mut out,
                "sidekick_ejections_total",
                &[("endpoint", &e.url), ("reason", r)],
                s.ejections[i].load(Ordering::Relaxed),
            );
        }
    }
    header(
        &mut out,
        "sidekick_retries_total",
        "counter",
        "Attempts that failed on the endpoint and were retried on another one, by reason",
    );
    for (e, s) in &rows {
        for (i, r) in RETRY_REASONS.iter().enumerate() {
            series(
                &mut out,
                "sidekick_retries_total",
                &[("endpoint", &e.url), ("reason", r)],
                s.retries[i].load(Ordering::Relaxed),
            );
        }
    }
    header(
        &mut out,
        "sidekick_retry_budget_exhausted_total",
        "counter",
        "Retries refused because the retry budget was spent, by the endpoint that failed",
    );
    for (e, s) in &rows {
        series(
            &mut out,
            "sidekick_retry_budget_exhausted_total",
            &[("endpoint", &e.url)],
            s.budget_exhausted.load(Ordering::Relaxed),
        );
    }
    header(
        &mut out,
        "sidekick_endpoint_weight",
        "gauge",
        "Weight of the endpoint in selection: 1 but during a slow start (--slow-start)",
    );
    for (e, _) in &rows {
        series(
            &mut out,
            "sidekick_endpoint_weight",
            &[("endpoint", &e.url)],
            e.weight,
        );
    }
    header(
        &mut out,
        "sidekick_slow_starts_total",
        "counter",
        "Slow starts the endpoint began (back up, out of ejection, or added)",
    );
    for (e, s) in &rows {
        series(
            &mut out,
            "sidekick_slow_starts_total",
            &[("endpoint", &e.url)],
            s.slow_starts.load(Ordering::Relaxed),
        );
    }
    let shares = registry
        .site_shares
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if !shares.is_empty() {
        header(
            &mut out,
            "sidekick_site_share_percent",
            "gauge",
            "Percentage of requests each site gets under graded spill-over (--site-spillover)",
        );
        for (i, share) in shares.iter().enumerate() {
            let site = (i + 1).to_string();
            series(
                &mut out,
                "sidekick_site_share_percent",
                &[("site", &site)],
                share,
            );
        }
    }
    header(
        &mut out,
        "sidekick_request_duration_seconds",
        "histogram",
        "Time from receiving a request to the end of its answer, per endpoint",
    );
    for (e, s) in &rows {
        let mut cum = 0u64;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += s.buckets[i].load(Ordering::Relaxed);
            let le = b.to_string();
            series(
                &mut out,
                "sidekick_request_duration_seconds_bucket",
                &[("endpoint", &e.url), ("le", &le)],
                cum,
            );
        }
        cum += s.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        series(
            &mut out,
            "sidekick_request_duration_seconds_bucket",
            &[("endpoint", &e.url), ("le", "+Inf")],
            cum,
        );
        let sum = s.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        series(
            &mut out,
            "sidekick_request_duration_seconds_sum",
            &[("endpoint", &e.url)],
            sum,
        );
        series(
            &mut out,
            "sidekick_request_duration_seconds_count",
            &[("endpoint", &e.url)],
            cum,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(authority_of("http://10.0.0.1:9000"), "10.0.0.1:9000");
        assert_eq!(authority_of("https://h:1/base"), "h:1");
        assert_eq!(authority_of("http://[::1]:9000/x"), "[::1]:9000");
    }

    #[test]
    fn record_and_downtime() {
        let r = Registry::default();
        let s = r.entry("http://a:1");
        assert!(Arc::ptr_eq(&s, &r.entry("http://a:1/")));
        s.record(200, 10, 20, Duration::from_millis(3));
        s.record(503, 1, 2, Duration::from_millis(1));
        let snap = s.snapshot();
        assert_eq!(
            (snap.requests, snap.errors, snap.rx, snap.tx),
            (2, 1, 11, 22)
        );
        assert_eq!(snap.min_latency, Some(Duration::from_millis(1)));
        assert_eq!(snap.max_latency, Duration::from_millis(3));
        assert!(snap.down.since.is_some());
        assert!(s.went_up(Instant::now()) > Duration::ZERO);
        assert!(s.snapshot().down.since.is_none());
        assert_eq!(s.went_up(Instant::now()), Duration::ZERO);
    }

    #[test]
    fn slow_starts_and_site_shares_are_exported() {
        let r = Registry::default();
        let before = render(&r, &[]);
        assert!(!before.contains("sidekick_site_share_percent"), "{before}");
        r.on_event(&Event::SlowStartBegan {
            endpoint: "http://a:1".into(),
            site: 0,
            window: Duration::from_secs(1),
        });
        r.on_event(&Event::SiteShares {
            shares: vec![35, 65],
        });
        let s = r.entry("http://a:1");
        assert_eq!(s.slow_starts.load(Ordering::Relaxed), 1);
        let out = render(&r, &[]);
        assert!(
            out.contains("sidekick_site_share_percent{site=\"1\"} 35\n"),
            "{out}"
        );
        assert!(
            out.contains("sidekick_site_share_percent{site=\"2\"} 65\n"),
            "{out}"
        );
    }

    #[test]
    fn labels_are_escaped() {
        let mut out = String::new();
        series(&mut out, "m", &[("endpoint", "a\"b\\c")], 1);
        assert_eq!(out, "m{endpoint=\"a\\\"b\\\\c\"} 1\n");
    }
}
