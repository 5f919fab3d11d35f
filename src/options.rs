//! Every option of the balancer by name: one table with each option's kind, default and
//! documentation, read and written by name.
//!
//! The bindings (the C ABI's config string and options struct, Python's keyword arguments) and
//! configuration files name options as text. Rather than each of them listing the names, parsing
//! the values and restating the defaults, they go through this table:
//! [`Builder::option`](crate::Builder::option) sets an option from text,
//! [`Builder::set`](crate::Builder::set) from a typed [`Value`],
//! [`Balancer::option`](crate::Balancer::option) reads back the value in force, and [`all`] lists
//! every option with its [`Kind`], default and documentation.
//!
//! # Text forms
//!
//! | kind | text |
//! | --- | --- |
//! | [`Kind::Bool`] | `true`, `false`, `on`, `off`, `yes`, `no`, `1`, `0` |
//! | [`Kind::Count`], [`Kind::Size`] | a whole number |
//! | [`Kind::Number`] | a decimal number |
//! | [`Kind::Duration`] | a number with a unit: `250ms`, `5s`, `1.5s`, `2m`, `1h`, `500us` |
//! | [`Kind::OptionalDuration`] | a duration, or `none` |
//! | [`Kind::Port`] | `1` to `65535`, or `none` |
//! | [`Kind::Statuses`] | statuses and ranges, comma-separated: `500-599,429`; empty for none |
//! | [`Kind::Text`] | the text itself |
//! | [`Kind::OptionalText`] | the text, or `none` |
//! | [`Kind::Policy`] | `p2c`, `least`, `round-robin`, `random` |
//! | [`Kind::HostPolicy`] | `keep`, `rewrite` |
//!
//! A value's [`Display`](std::fmt::Display) is its text form, which [`Builder::option`]
//! accepts back. Ranges (a jitter within 0–10, a status within 100–599, ...) are checked by
//! [`Builder::build`](crate::Builder::build), whose error names the option.
//!
//! [`Builder::option`]: crate::Builder::option

use std::fmt;
use std::time::Duration;

use crate::config::{Config, HostPolicy};
use crate::error::Error;
use crate::health;
use crate::policy::Policy;

/// The type of an option's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// On or off.
    Bool,
    /// A count (0 to 2³²−1).
    Count,
    /// A size or count that may be large (bytes, connections).
    Size,
    /// A decimal number (a share, a ratio).
    Number,
    /// A duration.
    Duration,
    /// A duration, or none.
    OptionalDuration,
    /// A TCP port, or none.
    Port,
    /// A list of HTTP statuses.
    Statuses,
    /// Text (a path).
    Text,
    /// Text, or none.
    OptionalText,
    /// A [`Policy`].
    Policy,
    /// A [`HostPolicy`].
    HostPolicy,
}

impl Kind {
    /// What a value of this kind looks like as text, for error messages.
    pub fn expected(&self) -> &'static str {
        match self {
            Kind::Bool => "true or false",
            Kind::Count => "a whole number below 2^32",
            Kind::Size => "a whole number",
            Kind::Number => "a decimal number",
            Kind::Duration => "a duration with a unit, e.g. 250ms or 5s",
            Kind::OptionalDuration => "a duration with a unit (e.g. 250ms or 5s) or none",
            Kind::Port => "a TCP port (1-65535) or none",
            Kind::Statuses => "HTTP statuses or ranges, e.g. 500-599,429",
            Kind::Text => "text",
            Kind::OptionalText => "text or none",
            Kind::Policy => "p2c, least, round-robin or random",
            Kind::HostPolicy => "keep or rewrite",
        }
    }

    /// True for the kinds that may be none.
    pub fn is_optional(&self) -> bool {
        matches!(
            self,
            Kind::OptionalDuration | Kind::Port | Kind::OptionalText
        )
    }
}

/// An option's value, typed.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// For [`Kind::Bool`].
    Bool(bool),
    /// For [`Kind::Count`], [`Kind::Size`] and [`Kind::Port`].
    Int(u64),
    /// For [`Kind::Number`].
    Number(f64),
    /// For [`Kind::Duration`] and [`Kind::OptionalDuration`].
    Duration(Duration),
    /// For [`Kind::Statuses`].
    Statuses(Vec<u16>),
    /// For [`Kind::Text`], [`Kind::OptionalText`], [`Kind::Policy`] and [`Kind::HostPolicy`].
    Text(String),
    /// For the optional kinds: not set.
    None,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Number(x) => write!(f, "{x}"),
            Value::Duration(d) => {
                let ns = d.as_nanos();
                if ns % 1_000_000_000 == 0 {
                    write!(f, "{}s", d.as_secs())
                } else if ns % 1_000_000 == 0 {
                    write!(f, "{}ms", d.as_millis())
                } else if ns % 1_000 == 0 {
                    write!(f, "{}us", d.as_micros())
                } else {
                    write!(f, "{ns}ns")
                }
            }
            Value::Statuses(list) => {
                let text: Vec<String> = list.iter().map(u16::to_string).collect();
                f.write_str(&text.join(","))
            }
            Value::Text(s) => f.write_str(s),
            Value::None => f.write_str("none"),
        }
    }
}

/// One option of the table: its name, kind, default and documentation.
#[derive(Clone, Copy)]
pub struct OptionInfo {
    name: &'static str,
    kind: Kind,
    doc: &'static str,
    get: fn(&Config) -> Value,
    set: fn(&mut Config, Value),
}

impl fmt::Debug for OptionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptionInfo")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("default", &self.default())
            .finish_non_exhaustive()
    }
}

impl OptionInfo {
    /// The option's name, as the [`Builder`](crate::Builder) method that sets it (where there
    /// is one) and as the bindings spell it.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The type of its value.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// One line on what it does.
    pub fn doc(&self) -> &'static str {
        self.doc
    }

    /// Its default.
    pub fn default(&self) -> Value {
        (self.get)(&Config::default())
    }

    pub(crate) fn read(&self, cfg: &Config) -> Value {
        (self.get)(cfg)
    }

    /// Check `value` against the option's kind and store it in `cfg`.
    pub(crate) fn write(&self, cfg: &mut Config, value: Value) -> Result<(), Error> {
        let value = self.check(value)?;
        (self.set)(cfg, value);
        Ok(())
    }

    /// `value`, if it fits the option's kind (a whole number is a fine decimal number).
    fn check(&self, value: Value) -> Result<Value, Error> {
        let fits = match (&self.kind, &value) {
            (Kind::Bool, Value::Bool(_)) => true,
            (Kind::Count, Value::Int(n)) => u32::try_from(*n).is_ok(),
            (Kind::Size, Value::Int(n)) => usize::try_from(*n).is_ok(),
            (Kind::Port, Value::Int(n)) => (1..=65535).contains(n),
            (Kind::Number, Value::Number(x)) => x.is_finite(),
            (Kind::Number, Value::Int(n)) => {
                return Ok(Value::Number(*n as f64));
            }
            (Kind::Duration | Kind::OptionalDuration, Value::Duration(_)) => true,
            (Kind::Statuses, Value::Statuses(_)) => true,
            (Kind::Text | Kind::OptionalText, Value::Text(_)) => true,
            (Kind::Policy, Value::Text(t)) => {
                return match t.parse::<Policy>() {
                    Ok(p) => Ok(Value::Text(p.to_string())),
                    Err(_) => Err(self.bad(&value)),
                };
            }
            (Kind::HostPolicy, Value::Text(t)) => {
                return match parse_host_policy(t) {
                    Some(_) => Ok(Value::Text(t.trim().to_ascii_lowercase())),
                    None => Err(self.bad(&value)),
                };
            }
            (k, Value::None) => k.is_optional(),
            _ => false,
        };
        if fits {
            Ok(value)
        } else {
            Err(self.bad(&value))
        }
    }

    fn bad(&self, value: &dyn fmt::Display) -> Error {
        Error::config(format!(
            "option `{}`: `{value}` is not valid, expected {}",
            self.name,
            self.kind.expected()
        ))
    }

    /// Parse the text form of a value of this option.
    pub fn parse(&self, text: &str) -> Result<Value, Error> {
        let t = text.trim();
        let bad = || self.bad(&t);
        let none = self.kind.is_optional() && (t.is_empty() || t.eq_ignore_ascii_case("none"));
        if none {
            return Ok(Value::None);
        }
        let value = match self.kind {
            Kind::Bool => Value::Bool(parse_bool(t).ok_or_else(bad)?),
            Kind::Count | Kind::Size | Kind::Port => {
                Value::Int(t.parse::<u64>().map_err(|_| bad())?)
            }
            Kind::Number => Value::Number(
                t.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(bad)?,
            ),
            Kind::Duration | Kind::OptionalDuration => {
                Value::Duration(parse_duration(t).ok_or_else(bad)?)
            }
            Kind::Statuses => Value::Statuses(parse_statuses(t).ok_or_else(bad)?),
            Kind::Text | Kind::OptionalText | Kind::Policy | Kind::HostPolicy => {
                Value::Text(t.to_string())
            }
        };
        self.check(value)
    }
}

/// Every option, in the order of the [`Builder`](crate::Builder)'s documentation.
pub fn all() -> &'static [OptionInfo] {
    TABLE
}

/// The option called `name`; the error names the unknown option and, when one is close, the
/// option probably meant.
pub fn find(name: &str) -> Result<&'static OptionInfo, Error> {
    if let Some(o) = TABLE.iter().find(|o| o.name == name) {
        return Ok(o);
    }
    let hint = closest(name)
        .map(|n| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default();
    Err(Error::config(format!("unknown option `{name}`{hint}")))
}

/// The known option nearest to a misspelt one (edit distance at most 3).
fn closest(name: &str) -> Option<&'static str> {
    TABLE
        .iter()
        .map(|o| (distance(name, o.name), o.name))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

fn parse_bool(t: &str) -> Option<bool> {
    match t.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Some(true),
        "false" | "off" | "no" | "0" => Some(false),
        _ => None,
    }
}

fn parse_host_policy(t: &str) -> Option<HostPolicy> {
    match t.trim().to_ascii_lowercase().as_str() {
        "keep" => Some(HostPolicy::Keep),
        "rewrite" => Some(HostPolicy::Rewrite),
        _ => None,
    }
}

/// `250ms`, `1.5s`, `2m`, `1h`, `500us`, `10ns`.
fn parse_duration(t: &str) -> Option<Duration> {
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = t.split_at(split);
    let x: f64 = num.parse().ok().filter(|x: &f64| x.is_finite())?;
    let secs_per_unit = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    // Whole numbers of a unit stay exact (no float rounding of `250ms`).
    if let Ok(n) = num.parse::<u64>() {
        return match unit.trim() {
            "ns" => Some(Duration::from_nanos(n)),
            "us" | "µs" => Some(Duration::from_micros(n)),
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            _ => n.checked_mul(secs_per_unit as u64).map(Duration::from_secs),
        };
    }
    Duration::try_from_secs_f64(x * secs_per_unit).ok()
}

/// `500-599,429` → every status; empty → the empty list.
fn parse_statuses(t: &str) -> Option<Vec<u16>> {
    let mut out = Vec::new();
    for item in t.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let status = |s: &str| s.trim().parse::<u16>().ok().filter(|s| *s <= 999);
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (status(a)?, status(b)?),
            None => (status(item)?, status(item)?),
        };
        if lo > hi {
            return None;
        }
        out.extend(lo..=hi);
    }
    Some(out)
}

// ===== the table =====

fn int(v: &Value) -> u64 {
    match v {
        Value::Int(n) => *n,
        _ => 0,
    }
}

fn count(v: &Value) -> u32 {
    u32::try_from(int(v)).unwrap_or(u32::MAX)
}

fn size(v: &Value) -> usize {
    usize::try_from(int(v)).unwrap_or(usize::MAX)
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Number(x) => *x,
        Value::Int(n) => *n as f64,
        _ => 0.0,
    }
}

fn duration(v: &Value) -> Duration {
    match v {
        Value::Duration(d) => *d,
        _ => Duration::ZERO,
    }
}

fn optional_duration(v: &Value) -> Option<Duration> {
    match v {
        Value::Duration(d) => Some(*d),
        _ => None,
    }
}

fn statuses(v: Value) -> Vec<u16> {
    match v {
        Value::Statuses(s) => s,
        _ => Vec::new(),
    }
}

fn text(v: Value) -> String {
    match v {
        Value::Text(s) => s,
        _ => String::new(),
    }
}

fn optional_text(v: Value) -> Option<String> {
    match v {
        Value::Text(s) => Some(s),
        _ => None,
    }
}

fn opt_duration_value(d: Option<Duration>) -> Value {
    d.map(Value::Duration).unwrap_or(Value::None)
}

fn host_policy_text(p: HostPolicy) -> &'static str {
    match p {
        HostPolicy::Keep => "keep",
        HostPolicy::Rewrite => "rewrite",
    }
}

/// One row: `name, Kind, "doc", |cfg| value, |cfg, v| store`. A value reaches `set` only after
/// `OptionInfo::check` accepted it for the row's kind.
macro_rules! row {
    ($name:literal, $kind:ident, $doc:literal, |$c:ident| $get:expr, |$cm:ident, $v:ident| $set:expr) => {
        OptionInfo {
            name: $name,
            kind: Kind::$kind,
            doc: $doc,
            get: |$c: &Config| $get,
            set: |$cm: &mut Config, $v: Value| $set,
        }
    };
}

static TABLE: &[OptionInfo] = &[
    row!(
        "policy",
        Policy,
        "How to choose inside a site.",
        |c| Value::Text(c.policy.to_string()),
        |c, v| c.policy = text(v).parse().unwrap_or_default()
    ),
    row!(
        "health_check",
        Bool,
        "Active health probes.",
        |c| Value::Bool(c.probe.enabled),
        |c, v| c.probe.enabled = v == Value::Bool(true)
    ),
    row!(
        "health_path",
        Text,
        "Probe path, appended to each endpoint's URL.",
        |c| Value::Text(c.probe.path.clone()),
        |c, v| c.probe.path = health::normalize_path(&text(v))
    ),
    row!(
        "last_site_health_path",
        OptionalText,
        "Probe path of the last site; none: health_path.",
        |c| c
            .probe
            .last_site_path
            .clone()
            .map(Value::Text)
            .unwrap_or(Value::None),
        |c, v| c.probe.last_site_path = optional_text(v).map(|p| health::normalize_path(&p))
    ),
    row!(
        "health_port",
        Port,
        "Probe this port instead of the endpoint's; none: its own.",
        |c| c
            .probe
            .port
            .map(|p| Value::Int(u64::from(p)))
            .unwrap_or(Value::None),
        |c, v| c.probe.port = match v {
            Value::Int(p) => u16::try_from(p).ok(),
            _ => None,
        }
    ),
    row!(
        "health_interval",
        Duration,
        "Time between probes of one endpoint (plus jitter).",
        |c| Value::Duration(c.probe.interval),
        |c, v| c.probe.interval = duration(&v)
    ),
    row!(
        "health_timeout",
        Duration,
        "Deadline of one probe.",
        |c| Value::Duration(c.probe.timeout),
        |c, v| c.probe.timeout = duration(&v)
    ),
    row!(
        "health_jitter",
        Number,
        "Random share added to each probe delay, 0.0 to 10.0.",
        |c| Value::Number(c.probe.jitter),
        |c, v| c.probe.jitter = number(&v)
    ),
    row!(
        "health_optimistic",
        Bool,
        "Probe an endpoint that is up only after a request failed on it.",
        |c| Value::Bool(c.probe.optimistic),
        |c, v| c.probe.optimistic = v == Value::Bool(true)
    ),
    row!(
        "healthy_statuses",
        Statuses,
        "Statuses a probe answer must have to pass.",
        |c| Value::Statuses(c.probe.healthy.clone()),
        |c, v| c.probe.healthy = statuses(v)
    ),
    row!(
        "rise",
        Count,
        "Consecutive passing probes that bring an endpoint up.",
        |c| Value::Int(u64::from(c.probe.rise)),
        |c, v| c.probe.rise = count(&v)
    ),
    row!(
        "fall",
        Count,
        "Consecutive failing probes that take an endpoint down.",
        |c| Value::Int(u64::from(c.probe.fall)),
        |c, v| c.probe.fall = count(&v)
    ),
    row!(
        "eject_statuses",
        Statuses,
        "Statuses that count toward passive ejection.",
        |c| Value::Statuses(c.eject.statuses.clone()),
        |c, v| c.eject.statuses = statuses(v)
    ),
    row!(
        "eject_after",
        Count,
        "Consecutive eject_statuses answers that eject an endpoint.",
        |c| Value::Int(u64::from(c.eject.after)),
        |c, v| c.eject.after = count(&v)
    ),
    row!(
        "max_ejected_share",
        Number,
        "The most of a site's probed-up endpoints ejection may take out, 0.0 to 1.0.",
        |c| Value::Number(c.eject.max_share),
        |c, v| c.eject.max_share = number(&v)
    ),
    row!(
        "eject_backoff_base",
        Duration,
        "With probes off: first backoff before an ejected endpoint's trial request.",
        |c| Value::Duration(c.eject.backoff_base),
        |c, v| c.eject.backoff_base = duration(&v)
    ),
    row!(
        "eject_backoff_max",
        Duration,
        "With probes off: the longest such backoff.",
        |c| Value::Duration(c.eject.backoff_max),
        |c, v| c.eject.backoff_max = duration(&v)
    ),
    row!(
        "failure_statuses",
        Statuses,
        "Statuses counted as failures in the load score and statistics.",
        |c| Value::Statuses(c.failure_statuses.clone()),
        |c, v| c.failure_statuses = statuses(v)
    ),
    row!(
        "failure_penalty",
        Duration,
        "Latency recorded for a failed request.",
        |c| Value::Duration(c.failure_penalty),
        |c, v| c.failure_penalty = duration(&v)
    ),
    row!(
        "ewma_decay",
        Duration,
        "Time constant of the latency EWMA.",
        |c| Value::Duration(c.ewma_decay),
        |c, v| c.ewma_decay = duration(&v)
    ),
    row!(
        "default_rtt",
        Duration,
        "Latency assumed for endpoints of a site with no sample yet.",
        |c| Value::Duration(c.default_rtt),
        |c, v| c.default_rtt = duration(&v)
    ),
    row!(
        "max_attempts",
        Count,
        "Total attempts of an idempotent request that was sent and failed.",
        |c| Value::Int(u64::from(c.retry.max_attempts)),
        |c, v| c.retry.max_attempts = count(&v)
    ),
    row!(
        "retry_statuses",
        Statuses,
        "Statuses on which an idempotent request is retried on another endpoint.",
        |c| Value::Statuses(c.retry.statuses.clone()),
        |c, v| c.retry.statuses = statuses(v)
    ),
    row!(
        "retry_buffer",
        Size,
        "The largest request body kept for replay on a retry, in bytes.",
        |c| Value::Int(c.retry.buffer as u64),
        |c, v| c.retry.buffer = size(&v)
    ),
    row!(
        "retry_budget_ratio",
        Number,
        "Retries may add at most this share of the requests of the last 10 s.",
        |c| Value::Number(c.retry.budget_ratio),
        |c, v| c.retry.budget_ratio = number(&v)
    ),
    row!(
        "retry_budget_min_per_sec",
        Count,
        "... plus this many retries per second.",
        |c| Value::Int(u64::from(c.retry.budget_min_per_sec)),
        |c, v| c.retry.budget_min_per_sec = count(&v)
    ),
    row!(
        "host_policy",
        HostPolicy,
        "Keep the caller's Host header, or rewrite it to the endpoint's.",
        |c| Value::Text(host_policy_text(c.host_policy).to_string()),
        |c, v| c.host_policy = parse_host_policy(&text(v)).unwrap_or_default()
    ),
    row!(
        "attempt_timeout",
        OptionalDuration,
        "Deadline of one attempt to get a response head; none: no deadline.",
        |c| opt_duration_value(c.attempt_timeout),
        |c, v| c.attempt_timeout = optional_duration(&v)
    ),
    row!(
        "response_timeout",
        OptionalDuration,
        "How long an attempt may wait for its response head after the request's last body \
         byte (or the body's last progress) before it counts as a timeout; none: no bound.",
        |c| opt_duration_value(c.response_timeout),
        |c, v| c.response_timeout = optional_duration(&v)
    ),
    row!(
        "connect_timeout",
        Duration,
        "TCP connect timeout of the probes and the built-in client.",
        |c| Value::Duration(c.connect_timeout),
        |c, v| c.connect_timeout = duration(&v)
    ),
    row!(
        "pool_idle_timeout",
        Duration,
        "How long the built-in client keeps an idle connection.",
        |c| Value::Duration(c.pool_idle_timeout),
        |c, v| c.pool_idle_timeout = duration(&v)
    ),
    row!(
        "pool_max_idle_per_host",
        Size,
        "The most idle connections the built-in client keeps per endpoint.",
        |c| Value::Int(c.pool_max_idle_per_host as u64),
        |c, v| c.pool_max_idle_per_host = size(&v)
    ),
    row!(
        "rr_dns",
        Bool,
        "Fan each host name out into one endpoint per resolved address.",
        |c| Value::Bool(c.rr_dns),
        |c, v| c.rr_dns = v == Value::Bool(true)
    ),
    row!(
        "dns_refresh",
        Duration,
        "How often fanned-out host names are resolved again.",
        |c| Value::Duration(c.dns_refresh),
        |c, v| c.dns_refresh = duration(&v)
    ),
    row!(
        "hedge_delay",
        OptionalDuration,
        "Hedge an idempotent request with no answer after this long (one more attempt to \
         another endpoint, charged to the retry budget); none: no fixed delay.",
        |c| opt_duration_value(c.retry.hedge.delay),
        |c, v| c.retry.hedge.delay = optional_duration(&v)
    ),
    row!(
        "hedge_percentile",
        Number,
        "Hedge after this percentile of the site's recent latencies (e.g. 95), never sooner \
         than hedge_delay; 0: off.",
        |c| Value::Number(c.retry.hedge.percentile),
        |c, v| c.retry.hedge.percentile = number(&v)
    ),
    row!(
        "hedge_max",
        Count,
        "Hedges one request may send.",
        |c| Value::Int(u64::from(c.retry.hedge.max)),
        |c, v| c.retry.hedge.max = count(&v)
    ),
    // Selection: slow start and graded spill-over (keep these together).
    row!(
        "slow_start",
        OptionalDuration,
        "Ramp the share of an endpoint that comes back from 10 % to full over this window; \
         none: no slow start.",
        |c| opt_duration_value(c.slow_start),
        |c, v| c.slow_start = optional_duration(&v)
    ),
    row!(
        "site_spillover",
        Bool,
        "Graded spill-over between sites: a site gets its healthy share × overprovisioning, \
         the rest spills to the next; off: all-or-nothing failover.",
        |c| Value::Bool(c.site_spillover),
        |c, v| c.site_spillover = v == Value::Bool(true)
    ),
    row!(
        "overprovisioning",
        Number,
        "With site_spillover: the factor a site's healthy share is multiplied by.",
        |c| Value::Number(c.overprovisioning),
        |c, v| c.overprovisioning = number(&v)
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_reads_back_through_its_own_text() {
        for o in all() {
            let d = o.default();
            let text = d.to_string();
            let again = o
                .parse(&text)
                .unwrap_or_else(|e| panic!("{}: `{text}`: {e}", o.name()));
            assert_eq!(again, d, "{}", o.name());
            let mut cfg = Config::default();
            o.write(&mut cfg, again).expect("the default fits");
            assert_eq!(o.read(&cfg), d, "{}", o.name());
        }
    }

    #[test]
    fn names_are_unique_and_documented() {
        let mut names: Vec<&str> = all().iter().map(OptionInfo::name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all().len());
        assert!(all().iter().all(|o| !o.doc().is_empty()));
    }

    #[test]
    fn text_forms_parse() {
        let o = |n| find(n).expect("known");
        assert_eq!(
            o("health_interval").parse("250ms").unwrap(),
            Value::Duration(Duration::from_millis(250))
        );
        assert_eq!(
            o("health_interval").parse("1.5s").unwrap(),
            Value::Duration(Duration::from_millis(1500))
        );
        assert_eq!(
            o("dns_refresh").parse("2m").unwrap(),
            Value::Duration(Duration::from_secs(120))
        );
        assert_eq!(o("attempt_timeout").parse("none").unwrap(), Value::None);
        assert_eq!(o("health_port").parse("").unwrap(), Value::None);
        assert_eq!(
            o("eject_statuses").parse("500-502, 429").unwrap(),
            Value::Statuses(vec![500, 501, 502, 429])
        );
        assert_eq!(
            o("failure_statuses").parse("").unwrap(),
            Value::Statuses(vec![])
        );
        assert_eq!(o("rr_dns").parse("on").unwrap(), Value::Bool(true));
        assert_eq!(
            o("policy").parse("RR").unwrap(),
            Value::Text("round-robin".into())
        );
        assert_eq!(
            o("host_policy").parse("Rewrite").unwrap(),
            Value::Text("rewrite".into())
        );
        assert_eq!(o("health_jitter").parse("1").unwrap(), Value::Number(1.0));
        assert_eq!(o("hedge_delay").default(), Value::None);
        assert_eq!(
            o("hedge_delay").parse("20ms").unwrap(),
            Value::Duration(Duration::from_millis(20))
        );
        assert_eq!(o("hedge_percentile").default(), Value::Number(0.0));
        assert_eq!(o("hedge_max").default(), Value::Int(1));
    }

    #[test]
    fn bad_values_name_the_option_and_the_value() {
        let cases = [
            ("health_interval", "250"),
            ("health_interval", "abc"),
            ("health_interval", "5 parsecs"),
            ("rise", "-1"),
            ("rise", "4294967296"),
            ("health_port", "0"),
            ("health_port", "65536"),
            ("health_jitter", "NaN"),
            ("eject_statuses", "500-abc"),
            ("eject_statuses", "599-500"),
            ("policy", "fastest"),
            ("host_policy", "drop"),
            ("rr_dns", "maybe"),
            ("health_check", "none"),
        ];
        for (name, value) in cases {
            let e = find(name).unwrap().parse(value).expect_err(value);
            let m = e.to_string();
            assert!(e.is_config(), "{m}");
            assert!(m.contains(name) && m.contains(value.trim()), "{m}");
        }
    }

    #[test]
    fn typed_values_are_checked_against_the_kind() {
        let mut cfg = Config::default();
        let o = |n| find(n).expect("known");
        assert!(o("rise").write(&mut cfg, Value::Bool(true)).is_err());
        assert!(o("health_check").write(&mut cfg, Value::None).is_err());
        assert!(o("health_port").write(&mut cfg, Value::Int(0)).is_err());
        o("health_port").write(&mut cfg, Value::Int(8080)).unwrap();
        assert_eq!(cfg.probe.port, Some(8080));
        o("health_port").write(&mut cfg, Value::None).unwrap();
        assert_eq!(cfg.probe.port, None);
        o("max_ejected_share")
            .write(&mut cfg, Value::Int(1))
            .unwrap();
        assert_eq!(cfg.eject.max_share, 1.0);
        o("health_path")
            .write(&mut cfg, Value::Text("minio/health/ready".into()))
            .unwrap();
        assert_eq!(cfg.probe.path, "/minio/health/ready");
    }

    #[test]
    fn unknown_names_get_a_hint() {
        let m = find("helth_interval").unwrap_err().to_string();
        assert!(m.contains("unknown option `helth_interval`"), "{m}");
        assert!(m.contains("did you mean `health_interval`"), "{m}");
        let m = find("zzzzzzzzzzzz").unwrap_err().to_string();
        assert!(!m.contains("did you mean"), "{m}");
    }

    #[test]
    fn durations_print_in_their_largest_exact_unit() {
        let d = |ns| Value::Duration(Duration::from_nanos(ns)).to_string();
        assert_eq!(d(5_000_000_000), "5s");
        assert_eq!(d(250_000_000), "250ms");
        assert_eq!(d(1_500_000_000), "1500ms");
        assert_eq!(d(7_000), "7us");
        assert_eq!(d(7), "7ns");
    }
}
