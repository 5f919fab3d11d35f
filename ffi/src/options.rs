//! Configuration: the `sidekick_options` struct, the `key=value` config string, and how both
//! become a [`sidekick::Builder`].
//!
//! Both paths set the engine's options by name through its table ([`sidekick::options`]): the
//! engine parses and checks every value and holds every default, `sidekick_options_init` included.
//! What is the C ABI's own: the struct's layout, `*_ms` keys (whole milliseconds) and "0 means
//! the default or none" for fields where 0 is not a valid value, `site=`, and `worker_threads`.

use std::ffi::{c_char, c_void};
use std::time::Duration;

use sidekick::options::{self, Kind, Value};

use crate::error::Failure;
use crate::event::sidekick_event_callback;
use crate::ffi::{self, EventSink};

/// The `version` a `sidekick_options` must carry; `sidekick_options_init` sets it.
pub const SIDEKICK_OPTIONS_VERSION: u32 = 2;

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
    /// Optimistic probing: once an endpoint is up, probe it again only after a request failed on
    /// it (fewer probes from many clients). Default: false. (Added in version 2.)
    pub health_optimistic: bool,
}

/// The engine's default of option `name`, from its table.
fn default_of(name: &str) -> Value {
    options::find(name)
        .map(|o| o.default())
        .unwrap_or(Value::None)
}

fn default_ms(name: &str) -> u64 {
    match default_of(name) {
        Value::Duration(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        _ => 0,
    }
}

fn default_int(name: &str) -> u64 {
    match default_of(name) {
        Value::Int(n) => n,
        _ => 0,
    }
}

fn default_u32(name: &str) -> u32 {
    u32::try_from(default_int(name)).unwrap_or(0)
}

fn default_usize(name: &str) -> usize {
    usize::try_from(default_int(name)).unwrap_or(0)
}

fn default_f64(name: &str) -> f64 {
    match default_of(name) {
        Value::Number(x) => x,
        _ => 0.0,
    }
}

fn default_bool(name: &str) -> bool {
    default_of(name) == Value::Bool(true)
}

impl Default for sidekick_options {
    /// Every default, read from the engine's table of options.
    fn default() -> Self {
        sidekick_options {
            version: SIDEKICK_OPTIONS_VERSION,
            policy: std::ptr::null(),
            health_check: default_bool("health_check"),
            health_path: std::ptr::null(),
            last_site_health_path: std::ptr::null(),
            health_port: 0,
            health_interval_ms: default_ms("health_interval"),
            health_timeout_ms: default_ms("health_timeout"),
            health_jitter: default_f64("health_jitter"),
            healthy_statuses: std::ptr::null(),
            healthy_statuses_len: 0,
            rise: default_u32("rise"),
            fall: default_u32("fall"),
            eject_statuses: std::ptr::null(),
            eject_statuses_len: 0,
            eject_after: default_u32("eject_after"),
            max_ejected_share: default_f64("max_ejected_share"),
            eject_backoff_base_ms: default_ms("eject_backoff_base"),
            eject_backoff_max_ms: default_ms("eject_backoff_max"),
            failure_statuses: std::ptr::null(),
            failure_statuses_len: 0,
            failure_penalty_ms: default_ms("failure_penalty"),
            ewma_decay_ms: default_ms("ewma_decay"),
            default_rtt_ms: default_ms("default_rtt"),
            max_attempts: default_u32("max_attempts"),
            retry_statuses: std::ptr::null(),
            retry_statuses_len: 0,
            retry_buffer: default_usize("retry_buffer"),
            retry_budget_ratio: default_f64("retry_budget_ratio"),
            retry_budget_min_per_sec: default_u32("retry_budget_min_per_sec"),
            host_policy: std::ptr::null(),
            attempt_timeout_ms: 0,
            connect_timeout_ms: default_ms("connect_timeout"),
            rr_dns: default_bool("rr_dns"),
            dns_refresh_ms: default_ms("dns_refresh"),
            pool_idle_timeout_ms: default_ms("pool_idle_timeout"),
            pool_max_idle_per_host: default_usize("pool_max_idle_per_host"),
            worker_threads: DEFAULT_WORKER_THREADS as u32,
            on_event: None,
            on_event_user_data: std::ptr::null_mut(),
            health_optimistic: default_bool("health_optimistic"),
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

/// Everything a balancer is built from: the sites, an engine builder with every option set, and
/// what only the C ABI has.
pub(crate) struct Settings {
    pub(crate) sites: Vec<String>,
    builder: sidekick::Builder,
    worker_threads: Option<usize>,
    pub(crate) events: Option<EventSink>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sites: Vec::new(),
            builder: sidekick::Builder::new(),
            worker_threads: None,
            events: None,
        }
    }
}

/// A field of `sidekick_options` whose 0 means "the default" (0 is not a valid value there, or,
/// for the optional ones, means none).
fn nonzero<T: Into<u64>>(v: T) -> Option<Value> {
    let v = v.into();
    (v != 0).then_some(Value::Int(v))
}

fn nonzero_ms(v: u64) -> Option<Value> {
    (v != 0).then(|| Value::Duration(Duration::from_millis(v)))
}

impl Settings {
    /// The number of worker threads for the balancer's runtime.
    pub(crate) fn worker_threads(&self) -> usize {
        self.worker_threads.unwrap_or(DEFAULT_WORKER_THREADS)
    }

    /// The engine builder with the sites and every option set.
    pub(crate) fn builder(self) -> sidekick::Builder {
        let mut b = self.builder.sites(&self.sites);
        if let Some(sink) = self.events {
            b = b.on_event(move |ev| crate::event::deliver(&sink, ev));
        }
        b
    }

    /// Set engine option `name` (a value the engine rejects fails, naming it).
    fn set(&mut self, name: &str, value: Value) -> Result<(), Failure> {
        let b = std::mem::take(&mut self.builder);
        self.builder = b.set(name, value)?;
        Ok(())
    }

    /// Settings from a `sidekick_options` struct.
    pub(crate) fn from_options(o: &sidekick_options) -> Result<Settings, Failure> {
        if o.version != SIDEKICK_OPTIONS_VERSION {
            return Err(Failure::config(format!(
                "sidekick_options.version is {}, expected {SIDEKICK_OPTIONS_VERSION}: start from sidekick_options_init()",
                o.version
            )));
        }
        let string = |name: &str, p: *const c_char| -> Result<Option<Value>, Failure> {
            ffi::try_str(p)
                .map(|s| s.map(|s| Value::Text(s.to_string())))
                .map_err(|()| Failure::config(format!("field `{name}` is not UTF-8")))
        };
        let list = |name: &str, p: *const u16, len: usize| -> Result<Option<Value>, Failure> {
            if p.is_null() {
                return if len == 0 {
                    Ok(None)
                } else {
                    Err(Failure::config(format!(
                        "field `{name}` is NULL but `{name}_len` is {len}"
                    )))
                };
            }
            Ok(ffi::try_slice(p, len).map(|s| Value::Statuses(s.to_vec())))
        };
        let ms = |v: u64| Some(Value::Duration(Duration::from_millis(v)));
        let int = |v: u64| Some(Value::Int(v));
        let num = |v: f64| Some(Value::Number(v));
        let flag = |v: bool| Some(Value::Bool(v));
        // Field by field: the option it sets, and its value (`None`: the engine's default).
        let fields: [(&str, Option<Value>); 34] = [
            ("policy", string("policy", o.policy)?),
            ("health_check", flag(o.health_check)),
            ("health_path", string("health_path", o.health_path)?),
            (
                "last_site_health_path",
                string("last_site_health_path", o.last_site_health_path)?,
            ),
            ("health_port", nonzero(o.health_port)),
            ("health_interval", nonzero_ms(o.health_interval_ms)),
            ("health_timeout", nonzero_ms(o.health_timeout_ms)),
            ("health_jitter", num(o.health_jitter)),
            ("health_optimistic", flag(o.health_optimistic)),
            (
                "healthy_statuses",
                list(
                    "healthy_statuses",
                    o.healthy_statuses,
                    o.healthy_statuses_len,
                )?,
            ),
            ("rise", nonzero(o.rise)),
            ("fall", nonzero(o.fall)),
            (
                "eject_statuses",
                list("eject_statuses", o.eject_statuses, o.eject_statuses_len)?,
            ),
            ("eject_after", nonzero(o.eject_after)),
            ("max_ejected_share", num(o.max_ejected_share)),
            ("eject_backoff_base", nonzero_ms(o.eject_backoff_base_ms)),
            ("eject_backoff_max", nonzero_ms(o.eject_backoff_max_ms)),
            (
                "failure_statuses",
                list(
                    "failure_statuses",
                    o.failure_statuses,
                    o.failure_statuses_len,
                )?,
            ),
            ("failure_penalty", ms(o.failure_penalty_ms)),
            ("ewma_decay", nonzero_ms(o.ewma_decay_ms)),
            ("default_rtt", nonzero_ms(o.default_rtt_ms)),
            ("max_attempts", nonzero(o.max_attempts)),
            (
                "retry_statuses",
                list("retry_statuses", o.retry_statuses, o.retry_statuses_len)?,
            ),
            ("retry_buffer", int(o.retry_buffer as u64)),
            ("retry_budget_ratio", num(o.retry_budget_ratio)),
            (
                "retry_budget_min_per_sec",
                int(u64::from(o.retry_budget_min_per_sec)),
            ),
            ("host_policy", string("host_policy", o.host_policy)?),
            ("attempt_timeout", nonzero_ms(o.attempt_timeout_ms)),
            ("connect_timeout", nonzero_ms(o.connect_timeout_ms)),
            ("rr_dns", flag(o.rr_dns)),
            ("dns_refresh", nonzero_ms(o.dns_refresh_ms)),
            ("pool_idle_timeout", ms(o.pool_idle_timeout_ms)),
            (
                "pool_max_idle_per_host",
                int(o.pool_max_idle_per_host as u64),
            ),
            ("worker_threads", nonzero(o.worker_threads)),
        ];
        let mut s = Settings::default();
        for (name, value) in fields {
            if let Some(v) = value {
                s.set_key(name, v)?;
            }
        }
        s.events = EventSink::new(o.on_event, o.on_event_user_data);
        Ok(s)
    }

    /// A typed value for `key`: `worker_threads` is the C ABI's, the rest the engine's.
    fn set_key(&mut self, key: &str, v: Value) -> Result<(), Failure> {
        if key == "worker_threads" {
            let n = match v {
                Value::Int(n) => n,
                _ => 0,
            };
            self.worker_threads = Some(check_workers(key, n)?);
            return Ok(());
        }
        self.set(key, v)
    }

    /// Settings from a config string: `key=value` entries separated by newlines or `;`, blank
    /// entries and `#` comments ignored, `site=` repeatable (appended in order). The keys are the
    /// field names of `sidekick_options` (without the callback fields); the values are the
    /// engine's text forms (see [`sidekick::options`]), except that `*_ms` keys take whole
    /// milliseconds and an optional setting is none when given 0.
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
            s.set_text(key.trim(), value.trim())?;
        }
        Ok(s)
    }

    /// Set one option from its config-string form.
    fn set_text(&mut self, key: &str, v: &str) -> Result<(), Failure> {
        match key {
            "site" => {
                if v.is_empty() {
                    return Err(bad(key, v, "a site, e.g. http://10.0.0.{1...4}:9000"));
                }
                self.sites.push(v.to_string());
                return Ok(());
            }
            "worker_threads" => {
                let n = v
                    .parse::<u64>()
                    .map_err(|_| bad(key, v, "a whole number"))?;
                return self.set_key(key, Value::Int(n));
            }
            _ => {}
        }
        // `health_interval_ms=250`: the engine's `health_interval`, in whole milliseconds.
        if let Some(name) = key.strip_suffix("_ms") {
            let option = options::find(name)
                .ok()
                .filter(|o| matches!(o.kind(), Kind::Duration | Kind::OptionalDuration))
                .ok_or_else(|| Failure::config(format!("unknown option `{key}` (value `{v}`)")))?;
            let n = v
                .parse::<u64>()
                .map_err(|_| bad(key, v, "whole milliseconds (0 or more)"))?;
            let value = if n == 0 && option.kind().is_optional() {
                Value::None
            } else {
                Value::Duration(Duration::from_millis(n))
            };
            return self.set(name, value);
        }
        let option = options::find(key)?;
        let value = if v == "0" && option.kind().is_optional() {
            Value::None
        } else {
            option.parse(v)?
        };
        self.set(key, value)
    }
}

fn bad(key: &str, value: &str, expected: &str) -> Failure {
    Failure::config(format!(
        "option `{key}`: `{value}` is not valid, expected {expected}"
    ))
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

    fn get(s: &Settings, name: &str) -> Value {
        s.builder.get(name).expect("known option")
    }

    fn ms(n: u64) -> Value {
        Value::Duration(Duration::from_millis(n))
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
        assert_eq!(get(&s, "policy"), Value::Text("least".into()));
        assert_eq!(get(&s, "health_check"), Value::Bool(false));
        assert_eq!(get(&s, "health_port"), Value::Int(81));
        assert_eq!(get(&s, "health_interval"), ms(250));
        assert_eq!(get(&s, "health_jitter"), Value::Number(0.0));
        assert_eq!(get(&s, "health_optimistic"), Value::Bool(true));
        assert_eq!(get(&s, "healthy_statuses"), Value::Statuses(vec![200, 204]));
        assert_eq!(
            get(&s, "eject_statuses"),
            Value::Statuses(vec![500, 501, 502, 503])
        );
        assert_eq!(get(&s, "failure_statuses"), Value::Statuses(vec![]));
        assert_eq!(get(&s, "max_ejected_share"), Value::Number(0.0));
        assert_eq!(get(&s, "eject_backoff_max"), ms(20));
        assert_eq!(get(&s, "host_policy"), Value::Text("rewrite".into()));
        assert_eq!(get(&s, "attempt_timeout"), ms(700));
        assert_eq!(get(&s, "pool_max_idle_per_host"), Value::Int(0));
        assert_eq!(get(&s, "retry_budget_ratio"), Value::Number(1.5));
        assert_eq!(s.worker_threads(), 1);
        assert_eq!(get(&s, "rr_dns"), Value::Bool(true));
        // 0 turns an optional setting off.
        let s = Settings::from_config("attempt_timeout_ms=0; health_port=0").expect("valid");
        assert_eq!(get(&s, "attempt_timeout"), Value::None);
        assert_eq!(get(&s, "health_port"), Value::None);
        // Every option passes the engine's own validation.
        let s = Settings::from_config(
            "site=http://127.0.0.1:9001; health_check=off; eject_backoff_base_ms=10; \
             eject_backoff_max_ms=20; failure_penalty_ms=0; pool_idle_timeout_ms=0",
        )
        .expect("valid");
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
        let m = msg(Settings::from_config("nope_ms=1"));
        assert!(m.contains("unknown option `nope_ms`"), "{m}");
        let m = msg(Settings::from_config("rise_ms=1"));
        assert!(m.contains("unknown option `rise_ms`"), "{m}");
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
        let m = msg(Settings::from_config("site="));
        assert!(m.contains("site"), "{m}");
    }

    #[test]
    fn options_defaults_are_the_engine_defaults() {
        let o = sidekick_options::default();
        let s = Settings::from_options(&o).expect("defaults are valid");
        assert_eq!(s.worker_threads(), DEFAULT_WORKER_THREADS);
        // Every option the struct carries reads back as the engine's default.
        let fresh = sidekick::Builder::new();
        for info in sidekick::options::all() {
            assert_eq!(
                get(&s, info.name()),
                fresh.get(info.name()).expect("known"),
                "{}",
                info.name()
            );
        }
        assert_eq!(o.health_interval_ms, 5_000);
        assert_eq!(o.eject_backoff_max_ms, 60_000);
        assert_eq!(o.retry_budget_ratio, 0.2);
        assert!(!o.health_optimistic);
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

    #[test]
    fn the_struct_reaches_health_optimistic() {
        let o = sidekick_options {
            health_optimistic: true,
            ..sidekick_options::default()
        };
        let s = Settings::from_options(&o).expect("valid");
        assert_eq!(get(&s, "health_optimistic"), Value::Bool(true));
    }
}
