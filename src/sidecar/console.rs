//! What the sidecar prints: trace lines (sidekick's short text format, `--json`, `--debug`),
//! `--log` state-change lines, and the live table shown on a terminal.
//!
//! The mode is sidekick's: on a terminal, without `--log` and without an explicit `--trace`,
//! the live table is drawn every 500 ms; otherwise ("console mode") trace and log lines are
//! printed, one per proxied request and per state change. `--quiet` silences trace and log
//! lines only.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::flags::Config;
use super::format::{go_duration, ibytes, json_str, ordinal, round_micros, Utc};
use super::metrics::Registry;
use crate::{EndpointInfo, EndpointState, Event};

/// Which requests `--trace` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceMode {
    /// `--trace ""`: none.
    Off,
    /// `--trace all` (and any unknown value): every request.
    All,
    /// `--trace application`: client requests (probes are never traced here anyway).
    Application,
    /// `--trace minio`: requests whose path is part of the probe URL.
    Minio,
}

/// Console settings derived from the flags.
#[derive(Clone, Debug)]
pub struct ConsoleOpts {
    /// Draw the live table instead of printing lines.
    pub table: bool,
    /// `--quiet`.
    pub quiet: bool,
    /// `--json`.
    pub json: bool,
    /// `--debug`.
    pub debug: bool,
    /// `--log`.
    pub log: bool,
    /// `--trace`.
    pub trace: TraceMode,
    /// `--errors`.
    pub errors_only: bool,
    /// `--status-code`.
    pub status_codes: Vec<u16>,
    /// `--health-path`, for `--trace minio`.
    pub health_path: String,
}

impl ConsoleOpts {
    /// The options the flags ask for; `stdout_is_tty` decides between table and lines.
    pub fn from_config(cfg: &Config, stdout_is_tty: bool) -> ConsoleOpts {
        let trace = match cfg.trace.as_str() {
            "" => TraceMode::Off,
            "application" => TraceMode::Application,
            "minio" => TraceMode::Minio,
            _ => TraceMode::All,
        };
        ConsoleOpts {
            table: stdout_is_tty && !cfg.log && !cfg.trace_set,
            quiet: cfg.quiet,
            json: cfg.json,
            debug: cfg.debug,
            log: cfg.log,
            trace,
            errors_only: cfg.errors,
            status_codes: cfg.status_codes.clone(),
            health_path: cfg.health_path.clone(),
        }
    }
}

/// One proxied request, as traced.
#[derive(Debug)]
pub struct TraceRecord<'a> {
    /// When the request arrived.
    pub time: SystemTime,
    /// When its answer ended.
    pub end: SystemTime,
    /// The endpoint it went to (empty when none was available).
    pub endpoint: &'a str,
    /// The client's address (first `X-Forwarded-For`, `X-Real-Ip`, or the peer).
    pub client: &'a str,
    /// Method.
    pub method: &'a str,
    /// Path as received.
    pub path: &'a str,
    /// Query as received (without `?`).
    pub query: &'a str,
    /// Status sent.
    pub status: u16,
    /// Bytes received (headers and body).
    pub rx: u64,
    /// Bytes sent (status line, headers and body).
    pub tx: u64,
    /// Arrival to end of answer.
    pub latency: Duration,
    /// Arrival to answer head.
    pub ttfb: Duration,
    /// Request headers (`--debug` only).
    pub req_headers: Option<&'a HeaderMap>,
    /// Response headers (`--debug` only).
    pub resp_headers: Option<&'a HeaderMap>,
    /// The body of an error the sidecar wrote itself (`--debug` shows it).
    pub error_body: Option<&'a str>,
}

/// Where lines go: stdout, or anything else (tests).
pub struct Console {
    /// Settings.
    pub opts: ConsoleOpts,
    out: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

fn status_text(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

fn header_json(out: &mut String, h: Option<&HeaderMap>) {
    out.push('{');
    if let Some(h) = h {
        for (i, k) in h.keys().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_str(out, k.as_str());
            out.push_str(":[");
            for (j, v) in h.get_all(k).iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                json_str(out, &String::from_utf8_lossy(v.as_bytes()));
            }
            out.push(']');
        }
    }
    out.push('}');
}

impl Console {
    /// A console writing to stdout.
    pub fn stdout(opts: ConsoleOpts) -> Console {
        Console::new(opts, Box::new(std::io::stdout()))
    }

    /// A console writing to `out`.
    pub fn new(opts: ConsoleOpts, out: Box<dyn Write + Send>) -> Console {
        Console {
            opts,
            out: Mutex::new(out),
        }
    }

    /// Write text as it is.
    pub fn write(&self, text: &str) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// Whether any request may be traced (checked before building a record).
    pub fn tracing(&self) -> bool {
        !self.opts.table && !self.opts.quiet && self.opts.trace != TraceMode::Off
    }

    fn selected(&self, r: &TraceRecord<'_>) -> bool {
        if !self.tracing() {
            return false;
        }
        if self.opts.trace == TraceMode::Minio {
            let probe = format!("{}{}", r.endpoint, self.opts.health_path);
            if r.path.is_empty() || !probe.contains(r.path) {
                return false;
            }
        }
        if self.opts.errors_only && !(400..600).contains(&r.status) {
            return false;
        }
        if !self.opts.status_codes.is_empty() && !self.opts.status_codes.contains(&r.status) {
            return false;
        }
        true
    }

    /// Print the trace of one request, if the options select it.
    pub fn trace(&self, r: &TraceRecord<'_>) {
        if !self.selected(r) {
            return;
        }
        let line = match (self.opts.debug, self.opts.json) {
            (false, false) => short_text(r),
            (false, true) => short_json(r),
            (true, false) => debug_text(r),
            (true, true) => debug_json(r),
        };
        self.write(&line);
    }

    /// Print a `--log` line for a balancer event, if it is one that changes rotation.
    /// `downtime` is how long an endpoint coming back was out of rotation.
    pub fn event(&self, ev: &Event, downtime: Option<Duration>) {
        if !self.opts.log || self.opts.quiet {
            return;
        }
        let now = SystemTime::now();
        let (endpoint, down, detail, downtime) = match ev {
            Event::Down {
                endpoint, reason, ..
            } => (endpoint, true, reason.clone(), Duration::ZERO),
            Event::Ejected {
                endpoint, reason, ..
            } => (
                endpoint,
                true,
                format!("ejected after a {} failure", reason.as_str()),
                Duration::ZERO,
            ),
            Event::Up { endpoint, .. } | Event::Returned { endpoint, .. } => {
                (endpoint, false, String::new(), downtime.unwrap_or_default())
            }
            _ => return,
        };
        self.write(&log_line(
            self.opts.json,
            now,
            endpoint,
            down,
            &detail,
            downtime,
        ));
    }
}

/// A `--log` line.
pub fn log_line(
    json: bool,
    now: SystemTime,
    endpoint: &str,
    down: bool,
    error: &str,
    downtime: Duration,
) -> String {
    let t = Utc::from(now);
    if json {
        let mut s = String::from("{\"Type\":\"LOG\",\"Endpoint\":");
        json_str(&mut s, endpoint);
        if !error.is_empty() {
            s.push_str(",\"Error\":");
            json_str(&mut s, error);
        }
        s.push_str(if down {
            ",\"Status\":\"down\""
        } else {
            ",\"Status\":\"up\""
        });
        if !downtime.is_zero() {
            let _ = write!(s, ",\"Downtime\":{}", downtime.as_nanos());
        }
        s.push_str(",\"Timestamp\":");
        json_str(&mut s, &t.rfc3339_nano());
        s.push_str("}\n");
        return s;
    }
    if down {
        format!("LOG  : {}  {endpoint} is down: {error}\n", t.clock_millis())
    } else if downtime.is_zero() {
        format!("LOG  : {}  {endpoint} is up\n", t.clock_millis())
    } else {
        format!(
            "LOG  : {}  {endpoint} is up Downtime duration: {}\n",
            t.clock_millis(),
            go_duration(round_micros(downtime))
        )
    }
}

/// sidekick's one-line trace:
/// `   LOG: 16:30:20.756 [200 OK]  http://h:9000 GET /b/k 10.0.0.5         1.406ms      ↑ 0 B ↓ 1.0 KiB`.
pub fn short_text(r: &TraceRecord<'_>) -> String {
    let mut s = String::with_capacity(160);
    let _ = write!(
        s,
        "   LOG: {} [{} {}]  {} {} {}",
        Utc::from(r.time).clock_millis(),
        r.status,
        status_text(r.status),
        r.endpoint,
        r.method,
        r.path
    );
    if !r.query.is_empty() {
        let _ = write!(s, "?{}", r.query);
    }
    let latency = go_duration(round_micros(r.latency));
    let _ = writeln!(
        s,
        "  {:<15}  {:<12} \u{2191} {} \u{2193} {}",
        r.client,
        latency,
        ibytes(r.rx),
        ibytes(r.tx)
    );
    s
}

fn call_stats(s: &mut String, r: &TraceRecord<'_>) {
    let _ = write!(
        s,
        "{{\"rx\":{},\"tx\":{},\"latency\":{},\"timetofirstbyte\":{},\"healthError\":null}}",
        r.rx,
        r.tx,
        r.latency.as_nanos(),
        r.ttfb.as_nanos()
    );
}

/// The `--json` short trace object.
pub fn short_json(r: &TraceRecord<'_>) -> String {
    let mut s = String::with_capacity(256);
    s.push_str("{\"type\":\"TRACE\",\"host\":");
    json_str(&mut s, r.endpoint);
    s.push_str(",\"time\":");
    json_str(&mut s, &Utc::from(r.time).rfc3339_nano());
    s.push_str(",\"client\":");
    json_str(&mut s, r.client);
    s.push_str(",\"callStats\":");
    call_stats(&mut s, r);
    let _ = write!(s, ",\"statusCode\":{},\"statusMsg\":", r.status);
    json_str(&mut s, status_text(r.status));
    s.push_str(",\"method\":");
    json_str(&mut s, r.method);
    s.push_str(",\"path\":");
    json_str(&mut s, r.path);
    s.push_str(",\"query\":");
    json_str(&mut s, r.query);
    s.push_str("}\n");
    s
}

/// The `--debug` text trace: every line prefixed with `DEBUG: <endpoint> `.
pub fn debug_text(r: &TraceRecord<'_>) -> String {
    let p = format!("DEBUG: {} ", r.endpoint);
    let mut s = String::with_capacity(1024);
    let _ = writeln!(s, "{p}[REQUEST] {}", Utc::from(r.time).clock_millis());
    if r.query.is_empty() {
        let _ = writeln!(s, "{p}{} {}", r.method, r.path);
    } else {
        let _ = writeln!(s, "{p}{} {}?{}", r.method, r.path, r.query);
    }
    let host = r
        .req_headers
        .and_then(|h| h.get(http::header::HOST))
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let _ = writeln!(s, "{p}Host: {host}");
    let headers = |s: &mut String, h: Option<&HeaderMap>, skip_host: bool| {
        if let Some(h) = h {
            for k in h.keys() {
                if skip_host && k == http::header::HOST {
                    continue;
                }
                let v: String = h
                    .get_all(k)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                let _ = writeln!(s, "{p}{}: {v}", canonical(k.as_str()));
            }
        }
    };
    headers(&mut s, r.req_headers, true);
    let _ = writeln!(s, "{p}<BODY>");
    let _ = writeln!(
        s,
        "{p}[RESPONSE] [{}] [ Duration {}  \u{2191} {}  \u{2193} {} ]",
        Utc::from(r.end).clock_millis(),
        go_duration(round_micros(r.latency)),
        ibytes(r.rx),
        ibytes(r.tx)
    );
    let _ = writeln!(s, "{p}{} {}", r.status, status_text(r.status));
    headers(&mut s, r.resp_headers, false);
    match r.error_body {
        Some(b) => {
            let _ = writeln!(s, "{p}{b}");
        }
        None => {
            let _ = writeln!(s, "{p}<BODY>");
        }
    }
    let _ = writeln!(s, "{p}");
    s
}

/// The `--debug --json` trace object.
pub fn debug_json(r: &TraceRecord<'_>) -> String {
    let mut s = String::with_capacity(1024);
    s.push_str("{\"type\":\"DEBUG\",\"nodename\":");
    json_str(&mut s, r.endpoint);
    s.push_str(",\"request\":{\"time\":");
    json_str(&mut s, &Utc::from(r.time).rfc3339_nano());
    s.push_str(",\"method\":");
    json_str(&mut s, r.method);
    s.push_str(",\"path\":");
    json_str(&mut s, r.path);
    s.push_str(",\"rawquery\":");
    json_str(&mut s, r.query);
    s.push_str(",\"headers\":");
    header_json(&mut s, r.req_headers);
    s.push_str(",\"body\":\"<BODY>\",\"client\":");
    json_str(&mut s, r.client);
    s.push_str("},\"response\":{\"time\":");
    json_str(&mut s, &Utc::from(r.end).rfc3339_nano());
    s.push_str(",\"headers\":");
    header_json(&mut s, r.resp_headers);
    s.push_str(",\"body\":");
    json_str(&mut s, r.error_body.unwrap_or("<BODY>"));
    let _ = write!(s, ",\"statuscode\":{}}},\"stats\":", r.status);
    call_stats(&mut s, r);
    s.push_str("}\n");
    s
}

/// `content-type` → `Content-Type`, as Go prints header names.
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut up = true;
    for c in name.chars() {
        if up {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        up = c == '-';
    }
    out
}

// ===== the live table =====

const COLUMNS: [&str; 11] = [
    "SITE",
    "HOST",
    "STATUS",
    "CALLS",
    "FAILURES",
    "Rx",
    "Tx",
    "TOTAL DOWNTIME",
    "LAST DOWNTIME",
    "MIN LATENCY",
    "MAX LATENCY",
];

fn state_word(s: EndpointState) -> &'static str {
    match s {
        EndpointState::Up => "UP",
        EndpointState::Ejected | EndpointState::Trial => "EJECTED",
        _ => "DOWN",
    }
}

/// The table's rows: one per endpoint, every site.
pub fn table_rows(registry: &Registry, endpoints: &[EndpointInfo]) -> Vec<[String; 11]> {
    let now = std::time::Instant::now();
    endpoints
        .iter()
        .map(|e| {
            let s = registry.entry(&e.url).snapshot();
            let current = s
                .down
                .since
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            let last = if s.down.since.is_some() {
                current
            } else {
                s.down.last
            };
            let fmt = |d: Duration| go_duration(round_micros(d));
            [
                ordinal(e.site + 1),
                e.url.clone(),
                state_word(e.state).to_string(),
                s.requests.to_string(),
                s.errors.to_string(),
                ibytes(s.rx),
                ibytes(s.tx),
                fmt(s.down.total + current),
                fmt(last),
                fmt(s.min_latency.unwrap_or_default()),
                fmt(s.max_latency),
            ]
        })
        .collect()
}

/// Draw the table with box-drawing characters; `color` adds ANSI colours (bold green head, red
/// rows for endpoints out of rotation).
pub fn render_table(rows: &[[String; 11]], color: bool) -> String {
    let mut widths = COLUMNS.map(|c| c.chars().count());
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let rule = |l: char, m: char, r: char| {
        let mut s = String::new();
        s.push(l);
        for (i, w) in widths.iter().enumerate() {
            if i > 0 {
                s.push(m);
            }
            s.extend(std::iter::repeat_n('\u{2500}', w + 2));
        }
        s.push(r);
        s.push('\n');
        s
    };
    let line = |cells: &[&str], style: Option<&str>| {
        let mut s = String::from("\u{2502}");
        for (cell, w) in cells.iter().zip(widths) {
            let pad = w - cell.chars().count();
            match (color, style) {
                (true, Some(st)) => {
                    let _ = write!(s, " {st}{cell}\x1b[0m{} \u{2502}", " ".repeat(pad));
                }
                _ => {
                    let _ = write!(s, " {cell}{} \u{2502}", " ".repeat(pad));
                }
            }
        }
        s.push('\n');
        s
    };
    let mut out = rule('\u{250c}', '\u{252c}', '\u{2510}');
    out.push_str(&line(&COLUMNS, Some("\x1b[1;32m")));
    out.push_str(&rule('\u{251c}', '\u{253c}', '\u{2524}'));
    for r in rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        let style = if r[2] == "UP" {
            "\x1b[1m"
        } else {
            "\x1b[1;31m"
        };
        out.push_str(&line(&cells, Some(style)));
    }
    out.push_str(&rule('\u{2514}', '\u{2534}', '\u{2518}'));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>() -> TraceRecord<'a> {
        TraceRecord {
            time: std::time::UNIX_EPOCH + Duration::new(1_752_424_220, 756_000_000),
            end: std::time::UNIX_EPOCH + Duration::new(1_752_424_220, 757_406_000),
            endpoint: "http://127.0.0.1:9000",
            client: "",
            method: "GET",
            path: "/minio/health/cluster",
            query: "",
            status: 200,
            rx: 0,
            tx: 0,
            latency: Duration::from_micros(1406),
            ttfb: Duration::from_micros(1000),
            req_headers: None,
            resp_headers: None,
            error_body: None,
        }
    }

    #[test]
    fn short_line_has_sidekicks_columns() {
        let line = short_text(&record());
        assert_eq!(
            line,
            "   LOG: 16:30:20.756 [200 OK]  http://127.0.0.1:9000 GET /minio/health/cluster                   1.406ms      \u{2191} 0 B \u{2193} 0 B\n"
        );
        let mut r = record();
        r.query = "a=1";
        r.client = "10.0.0.5";
        r.rx = 1536;
        assert!(short_text(&r).contains("/minio/health/cluster?a=1  10.0.0.5         1.406ms"));
        assert!(short_text(&r).contains("\u{2191} 1.5 KiB"));
    }

    #[test]
    fn json_line_keys_in_order() {
        let j = short_json(&record());
        assert!(j.starts_with("{\"type\":\"TRACE\",\"host\":\"http://127.0.0.1:9000\",\"time\":\"2025-07-13T16:30:20.756Z\",\"client\":\"\",\"callStats\":{\"rx\":0,\"tx\":0,\"latency\":1406000,\"timetofirstbyte\":1000000,\"healthError\":null},\"statusCode\":200,\"statusMsg\":\"OK\",\"method\":\"GET\""));
    }

    #[test]
    fn log_lines() {
        let t = std::time::UNIX_EPOCH + Duration::new(1_752_424_220, 756_000_000);
        assert_eq!(
            log_line(false, t, "http://m2:9000", true, "boom", Duration::ZERO),
            "LOG  : 16:30:20.756  http://m2:9000 is down: boom\n"
        );
        assert_eq!(
            log_line(
                false,
                t,
                "http://m2:9000",
                false,
                "",
                Duration::from_millis(4245)
            ),
            "LOG  : 16:30:20.756  http://m2:9000 is up Downtime duration: 4.245s\n"
        );
        assert_eq!(
            log_line(true, t, "http://m2:9000", false, "", Duration::from_secs(1)),
            "{\"Type\":\"LOG\",\"Endpoint\":\"http://m2:9000\",\"Status\":\"up\",\"Downtime\":1000000000,\"Timestamp\":\"2025-07-13T16:30:20.756Z\"}\n"
        );
    }

    #[test]
    fn table_is_boxed() {
        let rows = vec![[
            "1st".to_string(),
            "http://a:1".to_string(),
            "UP".to_string(),
            "3".to_string(),
            "0".to_string(),
            "0 B".to_string(),
            "0 B".to_string(),
            "0s".to_string(),
            "0s".to_string(),
            "0s".to_string(),
            "0s".to_string(),
        ]];
        let t = render_table(&rows, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with('\u{250c}'));
        assert!(lines[1].contains("SITE") && lines[1].contains("MAX LATENCY"));
        assert!(lines[3].contains("1st") && lines[3].contains("http://a:1"));
        let w = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == w));
        assert_eq!(canonical("x-amz-date"), "X-Amz-Date");
    }
}
