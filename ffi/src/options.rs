//! Configuration: the `sidekick_options` struct, the `key=value` config string, and how both
//! become a [`sidekick::Builder`].
//!
//! Both paths produce a [`Settings`] (every option optional: `None` keeps the engine's default),
//! so the engine stays the one place that validates values and knows most defaults.

use std::ffi::{c_char, c_void};
use std::time::Duration;

use sidekick::{HostPolicy, Policy};

use crate::error::Failure;
use crate::event::sidekick_event_callback;
use crate::ffi::{self, EventSink};

/// The `version` a `sidekick_options` must carry; `sidekick_options_init` sets it.
pub const SIDEKICK_OPTIONS_VERSION: u32 = 1;

/// Worker threads of a balancer's runtime when `worker_threads` is 0.
const DEFAULT_WORKER_THREADS: usize = 2;
/// The most worker threads a balancer's runtime may have.
const MAX_WORKER_THREADS: usize = 16;

/// Every option of the balancer, for `sidekick_balancer_new`.
///
/// Always start from `sidekick_options_init(&opts)`, which sets `version` and every field to its
/// default, then change what you need: a struct whose `version` is not `SIDEKICK_OPTIONS_VERSION`
/// is rejected with `SIDEKICK_STATUS_CONFIG`. Each field is the value itself (so `0.0` jitter means
/// no jitter), except that a 0 in a field where 0 is not a valid value (intervals, timeouts,
/// counts) means "the default", NULL strings mean "the default", and a NULL status list means "the
/// default list" (a non-NULL list with length 0 is the empty list). The same options, with the same
/// names, exist as keys of the config string of `sidekick_balancer_new_from_config`.
///
/// The struct and the strings and arrays it points at are only read during
/// `sidekick_balancer_new`: the caller keeps ownership and may free them afterwards.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sidekick_options {
    /// Must be `SIDEKICK_OPTIONS_VERSION`.
    pub version: u32,
    /// How to choose inside a site: `"p2c"` (power of two choices over peak-EWMA latency ×
    /// in-flight; aliases `"peak-ewma"`, `"ewma"`), `"least"` (fewest in flight), `"round-robin"`
    /// (`"rr"`) or `"random"`. NULL: `"p2c"`.
    pub policy: *const c_char,
    /// Active health probes. Default: true. With probes off every endpoint starts in rotation and
    /// only passive ejection takes one out.
    pub health_check: bool,
    /// Probe path appended to each endpoint URL (a leading `/` is added). NULL: `"/"`.
    pub health_path: *const c_char,
    /// Probe path for the last site only (e.g. a read-only replica). NULL: `health_path`.
    pub last_site_health_path: *const c_char,
    /// Probe this port instead of the endpoint's. 0 (default): the endpoint's own port.
    pub health_port: u16,
    /// Time between two probes of an endpoint, in ms (plus jitter). 0: default 5000.
    pub health_interval_ms: u64,
    /// Deadline of one probe, in ms. 0: default 10000.
    pub health_timeout_ms: u64,
    /// Random share added to each probe delay, 0.0 to 10.0. Default: 0.2.
    pub health_jitter: f64,
    /// Statuses a probe answer must have to pass (`healthy_statuses_len` entries). NULL: {200}.
    pub healthy_statuses: *const u16,
    /// Number of entries in `healthy_statuses`.
    pub healthy_statuses_len: usize,
    /// Consecutive passing probes that bring an endpoint up. 0: default 1.
    pub rise: u32,
    /// Consecutive failing probes that take an endpoint down. 0: default 1.
    pub fall: u32,
    /// Response statuses that count toward passive ejection. NULL: none (only connection
    /// failures and timeouts eject).
    pub eject_statuses: *const u16,
    /// Number of entries in `eject_statuses`.
    pub eject_statuses_len: usize,
    /// Consecutive `eject_statuses` answers that eject an endpoint. 0: default 5.
    pub eject_after: u32,
    /// The most of a site's probed-up endpoints ejection may take out, 0.0 to 1.0 (the last one
    /// always stays). Default: 0.5.
    pub max_ejected_share: f64,
    /// With probes off: first backoff before an ejected endpoint's trial request, in ms, doubling
    /// per ejection in a row. 0: default 1000.
    pub eject_backoff_base_ms: u64,
    /// With probes off: the longest such backoff, in ms. 0: default 60000.
    pub eject_backoff_max_ms: u64,
    /// Response statuses counted as failures in the load score and statistics. NULL: 500-599
    /// and 429.
    pub failure_statuses: *const u16,
    /// Number of entries in `failure_statuses`.
    pub failure_statuses_len: usize,
    /// Latency recorded for a failed request, in ms, so a fast-failing endpoint never looks
    /// cheapest. Default: 1000.
    pub failure_penalty_ms: u64,
    /// Time constant of the latency EWMA, in ms. 0: default 10000.
    pub ewma_decay_ms: u64,
    /// Latency assumed for endpoints of a site with no sample yet, in ms. 0: default 10.
    pub default_rtt_ms: u64,
    /// Request helper: total attempts of an idempotent request that was sent and failed (connect
    /// failures are retried on every untried endpoint regardless). 0: default 3.
    pub max_attempts: u32,
    /// Request helper: statuses on which an idempotent request is retried on another endpoint.
    /// NULL: {502, 503, 504}.
    pub retry_statuses: *const u16,
    /// Number of entries in `retry_statuses`.
    pub retry_statuses_len: usize,
    /// Request helper: the largest request body kept for replay on a retry, in bytes.
    /// Default: 65536.
    pub retry_buffer: usize,
    /// Request helper: retries may add at most this share of the requests of the last 10 s,
    /// 0.0 to 100.0. Default: 0.2.
    pub retry_budget_ratio: f64,
    /// Request helper: ... plus this many retries per second. Default: 10.
    pub retry_budget_min_per_sec: u32,
    /// Request helper: `"keep"` the caller's `Host` header (or the authority of its URL) or
    /// `"rewrite"` it to the endpoint's. NULL: `"keep"`.
    pub host_policy: *const c_char,
    /// Request helper: deadline of one attempt to get a response head, in ms. 0 (default): none.
    pub attempt_timeout_ms: u64,
    /// TCP connect timeout of the probes and the request helper, in ms. 0: default 3000.
    pub connect_timeout_ms: u64,
    /// Fan each host name out into one endpoint per resolved address, re-resolved every
    /// `dns_refresh_ms`. Default: false.
    pub rr_dns: bool,
    /// How often fanned-out names are resolved again, in ms (at most once a second).
    /// 0: default 30000.
    pub dns_refresh_ms: u64,
    /// Request helper: how long an idle connection is kept, in ms. Default: 90000.
    pub pool_idle_timeout_ms: u64,
    /// Request helper: the most idle connections kept per endpoint. Default: 1024.
    pub pool_max_idle_per_host: usize,
    /// Worker threads of the balancer's own runtime (probes, DNS, request helper I/O), 1 to 16.
    /// 0: default 2.
    pub worker_threads: u32,
    /// Called on every state change and retry; NULL (default): none. See
    /// `sidekick_event_callback` for the rules it must follow.
    pub on_event: sidekick_event_callback,
    /// Passed unchanged to `on_event`; must stay valid until the balancer and every lease picked
    /// from it are freed. Default: NULL.
    pub on_event_user_data: *mut c_void,
}

impl Default for sidekick_options {
    fn default() -> Self {
        sidekick_options {
            version: SIDEKICK_OPTIONS_VERSION,
            policy: std::ptr::null(),
            health_check: true,
            health_path: std::ptr::null(),
            last_site_health_path: std::ptr::null(),
            health_port: 0,
            health_interval_ms: 5_000,
            health_timeout_ms: 10_000,
            health_jitter: 0.2,
            healthy_statuses: std::ptr::null(),
            healthy_statuses_len: 0,
            rise: 1,
            fall: 1,
            eject_statuses: std::ptr::null(),
            eject_statuses_len: 0,
            eject_after: 5,
            max_ejected_share: 0.5,
            eject_backoff_base_ms: EJECT_BACKOFF_BASE.as_millis() as u64,
            eject_backoff_max_ms: EJECT_BACKOFF_MAX.as_millis() as u64,
            failure_statuses: std::ptr::null(),
            failure_statuses_len: 0,
            failure_penalty_ms: 1_000,
            ewma_decay_ms: 10_000,
            default_rtt_ms: 10,
            max_attempts: 3,
            retry_statuses: std::ptr::null(),
            retry_statuses_len: 0,
            retry_buffer: 64 * 1024,
            retry_budget_ratio: RETRY_BUDGET_RATIO,
            retry_budget_min_per_sec: RETRY_BUDGET_MIN_PER_SEC,
            host_policy: std::ptr::null(),
            attempt_timeout_ms: 0,
            connect_timeout_ms: 3_000,
            rr_dns: false,
            dns_refresh_ms: 30_000,
            pool_idle_timeout_ms: 90_000,
            pool_max_idle_per_host: 1024,
            worker_threads: DEFAULT_WORKER_THREADS as u32,
            on_event: None,
            on_event_user_data: std::ptr::null_mut(),
        }
    }
}

/// Fill `opts` with `SIDEKICK_OPTIONS_VERSION` and every default (listed on each field).
///
/// Returns `SIDEKICK_STATUS_NULL_ARGUMENT` when `opts` is NULL (nothing written).
/// Threads: any. Panics: returns `SIDEKICK_STATUS_PANIC`.
#[no_mangle]
pub extern "C" fn sidekick_options_init(opts: *mut sidekick_options) -> crate::sidekick_status {
    ffi::status_boundary(std::ptr::null_mut(), || {
        if opts.is_null() {
            return Err(Failure::null("opts"));
        }
        ffi::write_out(opts, sidekick_options::default());
        Ok(())
    })
}

/// Everything a balancer is built from; `None` keeps the engine's default.
#[derive(Default)]
pub(crate) struct Settings {
    pub(crate) sites: Vec<String>,
    policy: Option<Policy>,
    health_check: Option<bool>,
    health_path: Option<String>,
    last_site_health_path: Option<String>,
    health_port: Option<u16>,
    health_interval: Option<Duration>,
    health_timeout: Option<Duration>,
    health_jitter: Option<f64>,
    /// Config string only (`health_optimistic=on`): the options struct keeps its layout.
    health_optimistic: Option<bool>,
    healthy_statuses: Option<Vec<u16>>,
    rise: Option<u32>,
    fall: Option<u32>,
    eject_statuses: Option<Vec<u16>>,
    eject_after: Option<u32>,
    max_ejected_share: Option<f64>,
    eject_backoff_base: Option<Duration>,
    eject_backoff_max: Option<Duration>,
    failure_statuses: Option<Vec<u16>>,
    failure_penalty: Option<Duration>,
    ewma_decay: Option<Duration>,
    default_rtt: Option<Duration>,
    max_attempts: Option<u32>,
    retry_statuses: Option<Vec<u16>>,
    retry_buffer: Option<usize>,
    retry_budget_ratio: Option<f64>,
    retry_budget_min_per_sec: Option<u32>,
    host_policy: Option<HostPolicy>,
    attempt_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    rr_dns: Option<bool>,
    dns_refresh: Option<Duration>,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: Option<usize>,
    worker_threads: Option<usize>,
    pub(crate) events: Option<EventSink>,
}

// The engine's defaults for the options it only takes in pairs (a missing half keeps its default).
const EJECT_BACKOFF_BASE: Duration = Duration::from_secs(1);
const EJECT_BACKOFF_MAX: Duration = Duration::from_secs(60);
const RETRY_BUDGET_RATIO: f64 = 0.2;
const RETRY_BUDGET_MIN_PER_SEC: u32 = 10;

impl Settings {
    /// The number of worker threads for the balancer's runtime.
    pub(crate) fn worker_threads(&self) -> usize {
        self.worker_threads.unwrap_or(DEFAULT_WORKER_THREADS)
    }

    /// A builder with the sites and every option set.
    pub(crate) fn builder(&self) -> sidekick::Builder {
        let mut b = sidekick::Balancer::builder().sites(&self.sites);
        // Options whose builder method has the field's name and takes its value.
        macro_rules! set {
            ($($field:ident),* $(,)?) => {
                $(if let Some(v) = self.$field.clone() { b = b.$field(v); })*
            };
        }
        set!(
            policy,
            health_check,
            health_path,
            last_site_health_path,
            health_port,
            health_interval,
            health_timeout,
            health_jitter,
            health_optimistic,
            healthy_statuses,
            rise,
            fall,
            eject_statuses,
            eject_after,
            max_ejected_share,
            failure_statuses,
            failure_penalty,
            ewma_decay,
            default_rtt,
            max_attempts,
            retry_statuses,
            retry_buffer,
            host_policy,
            attempt_timeout,
            connect_timeout,
            rr_dns,
            dns_refresh,
            pool_idle_timeout,
            pool_max_idle_per_host,
        );
        if self.eject_backoff_base.is_some() || self.eject_backoff_max.is_some() {
            b = b.eject_backoff(
                self.eject_backoff_base.unwrap_or(EJECT_BACKOFF_BASE),
                self.eject_backoff_max.unwrap_or(EJECT_BACKOFF_MAX),
            );
        }
        if self.retry_budget_ratio.is_some() || self.retry_budget_min_per_sec.is_some() {
            b = b.retry_budget(
                self.retry_budget_ratio.unwrap_or(RETRY_BUDGET_RATIO),
                self.retry_budget_min_per_sec
                    .unwrap_or(RETRY_BUDGET_MIN_PER_SEC),
            );
        }
        if let Some(sink) = self.events {
            b = b.on_event(move |ev| crate::event::deliver(&sink, ev));
        }
        b
    }

    /// Settings from a `sidekick_options` struct.
    pub(crate) fn from_options(o: &sidekick_options) -> Result<Settings, Failure> {
        if o.version != SIDEKICK_OPTIONS_VERSION {
            return Err(Failure::config(format!(
                "sidekick_options.version is {}, expected {SIDEKICK_OPTIONS_VERSION}: start from sidekick_options_init()",
                o.version
            )));
        }
        let string = |name: &str, p: *const c_char| -> Result<Option<String>, Failure> {
            ffi::try_str(p)
                .map(|s| s.map(str::to_string))
                .map_err(|()| Failure::config(format!("field `{name}` is not UTF-8")))
        };
        let list = |name: &str, p: *const u16, len: usize| -> Result<Option<Vec<u16>>, Failure> {
            if p.is_null() {
                return if len == 0 {
                    Ok(None)
                } else {
                    Err(Failure::config(format!(
                        "field `{name}` is NULL but `{name}_len` is {len}"
                    )))
                };
            }
            Ok(ffi::try_slice(p, len).map(<[u16]>::to_vec))
        };
        let ms = |v: u64| Duration::from_millis(v);
        // 0 means "the default" where 0 is not a valid value.
        let nonzero_ms = |v: u64| (v != 0).then(|| ms(v));
        let nonzero = |v: u32| (v != 0).then_some(v);
        let policy = match string("policy", o.policy)? {
            Some(p) => Some(parse_policy("policy", &p)?),
            None => None,
        };
        let host_policy = match string("host_policy", o.host_policy)? {
            Some(p) => Some(parse_host_policy("host_policy", &p)?),
            None => None,
        };
        let worker_threads = match o.worker_threads {
            0 => None,
            n => Some(check_workers("worker_threads", u64::from(n))?),
        };
        Ok(Settings {
            sites: Vec::new(),
            policy,
            health_check: Some(o.health_check),
            health_path: string("health_path", o.health_path)?,
            last_site_health_path: string("last_site_health_path", o.last_site_health_path)?,
            health_port: (o.health_port != 0).then_some(o.health_port),
            health_interval: nonzero_ms(o.health_interval_ms),
            health_timeout: nonzero_ms(o.health_timeout_ms),
            health_jitter: Some(o.health_jitter),
            // Not in the struct (its layout is the ABI): only through the config string.
            health_optimistic: None,
            healthy_statuses: list(
                "healthy_statuses",
                o.healthy_statuses,
                o.healthy_statuses_len,
            )?,
            rise: nonzero(o.rise),
            fall: nonzero(o.fall),
            eject_statuses: list("eject_statuses", o.eject_statuses, o.eject_statuses_len)?,
            eject_after: nonzero(o.eject_after),
            max_ejected_share: Some(o.max_ejected_share),
            eject_backoff_base: nonzero_ms(o.eject_backoff_base_ms),
            eject_backoff_max: nonzero_ms(o.eject_backoff_max_ms),
            failure_statuses: list(
                "failure_statuses",
                o.failure_statuses,
                o.failure_statuses_len,
            )?,
            failure_penalty: Some(ms(o.failure_penalty_ms)),
            ewma_decay: nonzero_ms(o.ewma_decay_ms),
            default_rtt: nonzero_ms(o.default_rtt_ms),
            max_attempts: nonzero(o.max_attempts),
            retry_statuses: list("retry_statuses", o.retry_statuses, o.retry_statuses_len)?,
            retry_buffer: Some(o.retry_buffer),
            retry_budget_ratio: Some(o.retry_budget_ratio),
            retry_budget_min_per_sec: Some(o.retry_budget_min_per_sec),
            host_policy,
            attempt_timeout: nonzero_ms(o.attempt_timeout_ms),
            connect_timeout: nonzero_ms(o.connect_timeout_ms),
            rr_dns: Some(o.rr_dns),
            dns_refresh: nonzero_ms(o.dns_refresh_ms),
            pool_idle_timeout: Some(ms(o.pool_idle_timeout_ms)),
            pool_max_idle_per_host: Some(o.pool_max_idle_per_host),
            worker_threads,
            events: EventSink::new(o.on_event, o.on_event_user_data),
        })
    }

    /// Settings from a config string: `key=value` entries separated by newlines or `;`, blank
    /// entries and `#` comments ignored, `site=` repeatable (appended in order). The keys are the
    /// field names of `sidekick_options` (without the callback fields); status lists are
    /// comma-separated statuses or ranges (`500-599,429`), booleans `true|false|on|off|yes|no|1|0`,
    /// `*_ms` values whole milliseconds.
    pub(crate) fn from_config(text: &str) -> Result<Settings, Failure> {
        let mut s = Settings::default();
        for entry in text.split(['\n', ';']) {
            let entry = entry.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let Some((key, value)) = entry.split_once('=') else {
                return Err(Failure::config(format!("`{entry}`: expected key=value")));
            };
            s.set(key.trim(), value.trim())?;
        }
        Ok(s)
    }

    /// Set one option from its config-string form.
    fn set(&mut self, key: &str, v: &str) -> Result<(), Failure> {
        let ms = |v: &str| parse_uint(key, v).map(Duration::from_millis);
        let pos_ms = |v: &str| match parse_uint(key, v)? {
            0 => Err(bad(key, v, "a duration of at least 1 ms")),
            n => Ok(Duration::from_millis(n)),
        };
        let u32_ = |v: &str| -> Result<u32, Failure> {
            u32::try_from(parse_uint(key, v)?).map_err(|_| bad(key, v, "a number below 2^32"))
        };
        let usize_ = |v: &str| -> Result<usize, Failure> {
            usize::try_from(parse_uint(key, v)?).map_err(|_| bad(key, v, "a smaller number"))
        };
        match key {
            "site" => {
                if v.is_empty() {
                    return Err(bad(key, v, "a site, e.g. http://10.0.0.{1...4}:9000"));
                }
                self.sites.push(v.to_string())
            }
            "policy" => self.policy = Some(parse_policy(key, v)?),
            "health_check" => self.health_check = Some(parse_bool(key, v)?),
            "health_path" => self.health_path = Some(v.to_string()),
            "last_site_health_path" => self.last_site_health_path = Some(v.to_string()),
            "health_port" => {
                self.health_port = match parse_uint(key, v)? {
                    0 => None,
                    p => Some(u16::try_from(p).map_err(|_| bad(key, v, "a port (1-65535)"))?),
                }
            }
            "health_interval_ms" => self.health_interval = Some(pos_ms(v)?),
            "health_timeout_ms" => self.health_timeout = Some(pos_ms(v)?),
            "health_jitter" => self.health_jitter = Some(parse_f64(key, v)?),
            "health_optimistic" => self.health_optimistic = Some(parse_bool(key, v)?),
            "healthy_statuses" => self.healthy_statuses = Some(parse_statuses(key, v)?),
            "rise" => self.rise = Some(u32_(v)?),
            "fall" => self.fall = Some(u32_(v)?),
            "eject_statuses" => self.eject_statuses = Some(parse_statuses(key, v)?),
            "eject_after" => self.eject_after = Some(u32_(v)?),
            "max_ejected_share" => self.max_ejected_share = Some(parse_f64(key, v)?),
            "eject_backoff_base_ms" => self.eject_backoff_base = Some(pos_ms(v)?),
            "eject_backoff_max_ms" => self.eject_backoff_max = Some(pos_ms(v)?),
            "failure_statuses" => self.failure_statuses = Some(parse_statuses(key, v)?),
            "failure_penalty_ms" => self.failure_penalty = Some(ms(v)?),
            "ewma_decay_ms" => self.ewma_decay = Some(pos_ms(v)?),
            "default_rtt_ms" => self.default_rtt = Some(pos_ms(v)?),
            "max_attempts" => self.max_attempts = Some(u32_(v)?),
            "retry_statuses" => self.retry_statuses = Some(parse_statuses(key, v)?),
            "retry_buffer" => self.retry_buffer = Some(usize_(v)?),
            "retry_budget_ratio" => self.retry_budget_ratio = Some(parse_f64(key, v)?),
            "retry_budget_min_per_sec" => self.retry_budget_min_per_sec = Some(u32_(v)?),
            "host_policy" => self.host_policy = Some(parse_host_policy(key, v)?),
            "attempt_timeout_ms" => {
                // 0: no attempt timeout (the default).
                self.attempt_timeout = match parse_uint(key, v)? {
                    0 => None,
                    n => Some(Duration::from_millis(n)),
                }
            }
            "connect_timeout_ms" => self.connect_timeout = Some(pos_ms(v)?),
            "rr_dns" => self.rr_dns = Some(parse_bool(key, v)?),
            "dns_refresh_ms" => self.dns_refresh = Some(pos_ms(v)?),
            "pool_idle_timeout_ms" => self.pool_idle_timeout = Some(ms(v)?),
            "pool_max_idle_per_host" => self.pool_max_idle_per_host = Some(usize_(v)?),
            "worker_threads" => {
                self.worker_threads = Some(check_workers(key, parse_uint(key, v)?)?)
            }
            _ => {
                return Err(Failure::config(format!(
                    "unknown option `{key}` (value `{v}`)"
                )))
            }
        }
        Ok(())
    }
}

fn bad(key: &str, value: &str, expected: &str) -> Failure {
    Failure::config(format!(
        "option `{key}`: `{value}` is not valid, expected {expected}"
    ))
}

fn parse_uint(key: &str, v: &str) -> Result<u64, Failure> {
    v.parse::<u64>()
        .map_err(|_| bad(key, v, "a whole number (0 or more)"))
}

fn parse_f64(key: &str, v: &str) -> Result<f64, Failure> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(bad(key, v, "a decimal number")),
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, Failure> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(bad(key, v, "true or false")),
    }
}

fn parse_policy(key: &str, v: &str) -> Result<Policy, Failure> {
    v.parse::<Policy>()
        .map_err(|_| bad(key, v, "p2c, least, round-robin or random"))
}

fn parse_host_policy(key: &str, v: &str) -> Result<HostPolicy, Failure> {
    match v.trim().to_ascii_lowercase().as_str() {
        "keep" => Ok(HostPolicy::Keep),
        "rewrite" => Ok(HostPolicy::Rewrite),
        _ => Err(bad(key, v, "keep or rewrite")),
    }
}

fn check_workers(key: &str, n: u64) -> Result<usize, Failure> {
    match usize::try_from(n) {
        Ok(n @ 1..=MAX_WORKER_THREADS) => Ok(n),
        _ => Err(bad(
            key,
            &n.to_string(),
            &format!("1 to {MAX_WORKER_THREADS} threads"),
        )),
    }
}

/// `500-599,429` → every status; empty → the empty list. The engine checks the 100-599 range.
fn parse_statuses(key: &str, v: &str) -> Result<Vec<u16>, Failure> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let status = |t: &str| t.trim().parse::<u16>().ok().filter(|s| *s <= 999);
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (status(a), status(b)),
            None => (status(item), status(item)),
        };
        match (lo, hi) {
            (Some(lo), Some(hi)) if lo <= hi => out.extend(lo..=hi),
            _ => return Err(bad(key, item, "HTTP statuses or ranges, e.g. 500-599,429")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(r: Result<Settings, Failure>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(f) => {
                assert_eq!(f.status, crate::sidekick_status::SIDEKICK_STATUS_CONFIG);
                f.message
            }
        }
    }

    #[test]
    fn config_string_covers_every_option() {
        let s = Settings::from_config(
            "site=http://127.0.0.1:{9001...9002}\n# a comment\n\
             policy=least; health_check=off; health_path=/h; last_site_health_path=/r\n\
             health_port=81; health_interval_ms=250; health_timeout_ms=100; health_jitter=0\n\
             health_optimistic=on\n\
             healthy_statuses=200,204; rise=2; fall=3; eject_statuses=500-503; eject_after=2\n\
             max_ejected_share=0; eject_backoff_base_ms=10; eject_backoff_max_ms=20\n\
             failure_statuses=; failure_penalty_ms=0; ewma_decay_ms=5; default_rtt_ms=1\n\
             max_attempts=1; retry_statuses=503; retry_buffer=0; retry_budget_ratio=1.5\n\
             retry_budget_min_per_sec=0; host_policy=rewrite; attempt_timeout_ms=700\n\
             connect_timeout_ms=300; rr_dns=yes; dns_refresh_ms=2000; pool_idle_timeout_ms=0\n\
             pool_max_idle_per_host=0; worker_threads=1\n\
             site=http://127.0.0.2:9000",
        )
        .expect("valid");
        assert_eq!(
            s.sites,
            ["http://127.0.0.1:{9001...9002}", "http://127.0.0.2:9000"]
        );
        assert_eq!(s.policy, Some(Policy::Least));
        assert_eq!(s.health_check, Some(false));
        assert_eq!(s.health_port, Some(81));
        assert_eq!(s.health_jitter, Some(0.0));
        assert_eq!(s.health_optimistic, Some(true));
        assert_eq!(s.healthy_statuses, Some(vec![200, 204]));
        assert_eq!(s.eject_statuses, Some(vec![500, 501, 502, 503]));
        assert_eq!(s.failure_statuses, Some(vec![]));
        assert_eq!(s.max_ejected_share, Some(0.0));
        assert_eq!(s.host_policy, Some(HostPolicy::Rewrite));
        assert_eq!(s.attempt_timeout, Some(Duration::from_millis(700)));
        assert_eq!(s.pool_max_idle_per_host, Some(0));
        assert_eq!(s.worker_threads(), 1);
        assert_eq!(s.rr_dns, Some(true));
        // Every option passes the engine's own validation.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let b = s.builder().runtime(rt.handle().clone()).build();
        assert!(b.is_ok(), "{b:?}");
    }

    #[test]
    fn bad_config_names_the_key_and_value() {
        let m = msg(Settings::from_config("health_interval_ms=abc"));
        assert!(m.contains("health_interval_ms") && m.contains("abc"), "{m}");
        let m = msg(Settings::from_config("nope=1"));
        assert!(m.contains("unknown option `nope`"), "{m}");
        let m = msg(Settings::from_config("policy=fastest"));
        assert!(m.contains("policy") && m.contains("fastest"), "{m}");
        let m = msg(Settings::from_config("eject_statuses=500-abc"));
        assert!(m.contains("eject_statuses") && m.contains("500-abc"), "{m}");
        let m = msg(Settings::from_config("just text"));
        assert!(m.contains("expected key=value"), "{m}");
        let m = msg(Settings::from_config("worker_threads=0"));
        assert!(m.contains("worker_threads"), "{m}");
        let m = msg(Settings::from_config("health_jitter=NaN"));
        assert!(m.contains("health_jitter"), "{m}");
    }

    #[test]
    fn options_defaults_keep_the_engine_defaults() {
        let o = sidekick_options::default();
        let s = Settings::from_options(&o).expect("defaults are valid");
        assert_eq!(s.worker_threads(), DEFAULT_WORKER_THREADS);
        assert!(s.policy.is_none() && s.healthy_statuses.is_none());
        assert_eq!(s.eject_backoff_base, Some(EJECT_BACKOFF_BASE));
        assert_eq!(s.eject_backoff_max, Some(EJECT_BACKOFF_MAX));
        assert_eq!(s.retry_budget_ratio, Some(RETRY_BUDGET_RATIO));
        let zeroed = sidekick_options {
            version: 0,
            ..sidekick_options::default()
        };
        let m = msg(Settings::from_options(&zeroed));
        assert!(m.contains("sidekick_options_init"), "{m}");
        let bad_list = sidekick_options {
            eject_statuses_len: 2,
            ..sidekick_options::default()
        };
        let m = msg(Settings::from_options(&bad_list));
        assert!(m.contains("eject_statuses"), "{m}");
    }
}
