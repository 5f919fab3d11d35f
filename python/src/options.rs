//! Keyword options of `sidekick.Balancer(...)` / `sidekick.Client(...)`, checked and kept.
//!
//! Each option is parsed once, into a setter of the engine's [`sidekick::Builder`]. The list of
//! setters is the balancer's stored configuration: it builds the engine balancer at construction
//! and again in a forked child. Every mistake is a `sidekick.ConfigError` naming the option.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::errors;

type Setter = Arc<dyn Fn(sidekick::Builder) -> sidekick::Builder + Send + Sync>;

/// Every option name, for the "did you mean" hint.
const NAMES: &[&str] = &[
    "policy",
    "health_check",
    "health_path",
    "last_site_health_path",
    "health_port",
    "health_interval",
    "health_timeout",
    "health_jitter",
    "health_optimistic",
    "healthy_statuses",
    "rise",
    "fall",
    "eject_statuses",
    "eject_after",
    "max_ejected_share",
    "eject_backoff",
    "failure_statuses",
    "failure_penalty",
    "ewma_decay",
    "default_rtt",
    "max_attempts",
    "retry_statuses",
    "retry_buffer",
    "retry_budget",
    "host_policy",
    "attempt_timeout",
    "connect_timeout",
    "pool_idle_timeout",
    "pool_max_idle_per_host",
    "rr_dns",
    "dns_refresh",
    "on_event",
    "warmup",
];

/// A balancer's whole configuration, as given (and checked) in Python.
#[derive(Clone)]
pub(crate) struct Spec {
    pub(crate) sites: Vec<String>,
    setters: Vec<Setter>,
    /// The Python callable given as `on_event`.
    pub(crate) on_event: Option<Arc<Py<PyAny>>>,
    /// How long a pick may wait for the first probe verdicts (see `Live::warm_up`).
    pub(crate) warmup: Duration,
    pub(crate) health_check: bool,
    pub(crate) max_attempts: u32,
    pub(crate) retry_statuses: Vec<u16>,
    pub(crate) retry_buffer: usize,
    pub(crate) host_policy: &'static str,
    pub(crate) policy: String,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("sites", &self.sites)
            .field("options", &self.setters.len())
            .finish_non_exhaustive()
    }
}

impl Spec {
    /// An engine builder with every stored option applied.
    pub(crate) fn builder(&self) -> sidekick::Builder {
        let mut b = sidekick::Balancer::builder().sites(&self.sites);
        for s in &self.setters {
            b = s(b);
        }
        b
    }

    /// Parse `sites` and the keyword options.
    pub(crate) fn parse(
        py: Python<'_>,
        sites: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Spec> {
        let mut spec = Spec {
            sites: parse_sites(py, sites)?,
            setters: Vec::new(),
            on_event: None,
            warmup: Duration::from_secs(5),
            health_check: true,
            max_attempts: 3,
            retry_statuses: vec![502, 503, 504],
            retry_buffer: 64 * 1024,
            host_policy: "keep",
            policy: "p2c".to_string(),
        };
        let Some(options) = options else {
            return Ok(spec);
        };
        for (k, v) in options.iter() {
            let name: String = k.extract()?;
            spec.set(py, &name, &v)?;
        }
        Ok(spec)
    }

    fn push(&mut self, f: impl Fn(sidekick::Builder) -> sidekick::Builder + Send + Sync + 'static) {
        self.setters.push(Arc::new(f));
    }

    fn set(&mut self, py: Python<'_>, name: &str, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = name;
        match name {
            "policy" => {
                let s = string(py, n, v)?;
                let p: sidekick::Policy = s.parse().map_err(|e| errors::to_py(py, &e))?;
                self.policy = p.to_string();
                self.push(move |b| b.policy(p));
            }
            "health_check" => {
                let on = boolean(py, n, v)?;
                self.health_check = on;
                self.push(move |b| b.health_check(on));
            }
            "health_path" => {
                let s = string(py, n, v)?;
                self.push(move |b| b.health_path(&s));
            }
            "last_site_health_path" => {
                if !v.is_none() {
                    let s = string(py, n, v)?;
                    self.push(move |b| b.last_site_health_path(&s));
                }
            }
            "health_port" => {
                let port = if v.is_none() {
                    None
                } else {
                    let p = uint(py, n, v)?;
                    if !(1..=65535).contains(&p) {
                        return Err(errors::config(
                            py,
                            n,
                            format!("{p} is not a TCP port (1-65535)"),
                        ));
                    }
                    Some(p as u16)
                };
                self.push(move |b| b.health_port(port));
            }
            "health_interval" => {
                let d = seconds(py, n, v)?;
                self.push(move |b| b.health_interval(d));
            }
            "health_timeout" => {
                let d = seconds(py, n, v)?;
                self.push(move |b| b.health_timeout(d));
            }
            "health_jitter" => {
                let x = number(py, n, v)?;
                self.push(move |b| b.health_jitter(x));
            }
            "health_optimistic" => {
                let on = boolean(py, n, v)?;
                self.push(move |b| b.health_optimistic(on));
            }
            "healthy_statuses" => {
                let s = statuses(py, n, v)?;
                self.push(move |b| b.healthy_statuses(s.clone()));
            }
            "rise" => {
                let x = uint(py, n, v)?;
                self.push(move |b| b.rise(x));
            }
            "fall" => {
                let x = uint(py, n, v)?;
                self.push(move |b| b.fall(x));
            }
            "eject_statuses" => {
                let s = statuses(py, n, v)?;
                self.push(move |b| b.eject_statuses(s.clone()));
            }
            "eject_after" => {
                let x = uint(py, n, v)?;
                self.push(move |b| b.eject_after(x));
            }
            "max_ejected_share" => {
                let x = number(py, n, v)?;
                self.push(move |b| b.max_ejected_share(x));
            }
            "eject_backoff" => {
                let (base, max) = pair(py, n, v, "(base, max) in seconds")?;
                let base = seconds(py, "eject_backoff base", &base)?;
                let max = seconds(py, "eject_backoff max", &max)?;
                self.push(move |b| b.eject_backoff(base, max));
            }
            "failure_statuses" => {
                let s = statuses(py, n, v)?;
                self.push(move |b| b.failure_statuses(s.clone()));
            }
            "failure_penalty" => {
                let d = seconds(py, n, v)?;
                self.push(move |b| b.failure_penalty(d));
            }
            "ewma_decay" => {
                let d = seconds(py, n, v)?;
                self.push(move |b| b.ewma_decay(d));
            }
            "default_rtt" => {
                let d = seconds(py, n, v)?;
                self.push(move |b| b.default_rtt(d));
            }
            "max_attempts" => {
                let x = uint(py, n, v)?;
                self.max_attempts = x;
                self.push(move |b| b.max_attempts(x));
            }
            "retry_statuses" => {
                let s = statuses(py, n, v)?;
                self.retry_statuses = s.clone();
                self.push(move |b| b.retry_statuses(s.clone()));
            }
            "retry_buffer" => {
                let x = uint(py, n, v)? as usize;
                self.retry_buffer = x;
                self.push(move |b| b.retry_buffer(x));
            }
            "retry_budget" => {
                let (ratio, floor) = pair(py, n, v, "(ratio, min_per_sec)")?;
                let ratio = number(py, "retry_budget ratio", &ratio)?;
                let floor = uint(py, "retry_budget min_per_sec", &floor)?;
                self.push(move |b| b.retry_budget(ratio, floor));
            }
            "host_policy" => {
                let s = string(py, n, v)?;
                let p = match s.to_ascii_lowercase().as_str() {
                    "keep" => {
                        self.host_policy = "keep";
                        sidekick::HostPolicy::Keep
                    }
                    "rewrite" => {
                        self.host_policy = "rewrite";
                        sidekick::HostPolicy::Rewrite
                    }
                    _ => {
                        return Err(errors::config(
                            py,
                            n,
                            format!("unknown value `{s}`: expected \"keep\" or \"rewrite\""),
                        ))
                    }
                };
                self.push(move |b| b.host_policy(p));
            }
            "attempt_timeout" => {
                let d = if v.is_none() {
                    None
                } else {
                    Some(seconds(py, n, v)?)
                };
                self.push(move |b| b.attempt_timeout(d));
            }
            "connect_timeout" => {
                let d = seconds(py, n, v)?;
                self.push(move |b| b.connect_timeout(d));
            }
            "pool_idle_timeout" => {
                let d = seconds(py, n, v)?;
                self.push(move |b| b.pool_idle_timeout(d));
            }
            "pool_max_idle_per_host" => {
                let x = uint(py, n, v)? as usize;
                self.push(move |b| b.pool_max_idle_per_host(x));
            }
            "rr_dns" => {
                let on = boolean(py, n, v)?;
                self.push(move |b| b.rr_dns(on));
            }
            "dns_refresh" => {
                let d = seconds(py, n, v)?;
                self.push(move |b| b.dns_refresh(d));
            }
            "on_event" => {
                if v.is_none() {
                    self.on_event = None;
                } else if v.is_callable() {
                    self.on_event = Some(Arc::new(v.clone().unbind()));
                } else {
                    return Err(errors::config(
                        py,
                        n,
                        format!("expected a callable or None, got {}", type_name(v)),
                    ));
                }
            }
            "warmup" => {
                self.warmup = seconds(py, n, v)?;
            }
            other => {
                let hint = closest(other)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(errors::new_err(
                    py,
                    errors::Class::Config,
                    format!("invalid configuration: unknown option `{other}`{hint}"),
                    None,
                ));
            }
        }
        Ok(())
    }
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

fn parse_sites(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(vec![s.to_cow()?.into_owned()]);
    }
    let bad = || {
        errors::config(
            py,
            "sites",
            format!(
                "expected a site string or a sequence of them, got {}",
                type_name(v)
            ),
        )
    };
    if v.is_none() || v.hasattr("keys").unwrap_or(false) {
        return Err(bad());
    }
    let iter = v.try_iter().map_err(|_| bad())?;
    let mut out = Vec::new();
    for (i, item) in iter.enumerate() {
        let item = item?;
        match item.cast::<PyString>() {
            Ok(s) => out.push(s.to_cow()?.into_owned()),
            Err(_) => {
                return Err(errors::config(
                    py,
                    &format!("site {}", i + 1),
                    format!("expected a string, got {}", type_name(&item)),
                ))
            }
        }
    }
    Ok(out)
}

fn string(py: Python<'_>, name: &str, v: &Bound<'_, PyAny>) -> PyResult<String> {
    match v.cast::<PyString>() {
        Ok(s) => Ok(s.to_cow()?.into_owned()),
        Err(_) => Err(errors::config(
            py,
            name,
            format!("expected a string, got {}", type_name(v)),
        )),
    }
}

fn boolean(py: Python<'_>, name: &str, v: &Bound<'_, PyAny>) -> PyResult<bool> {
    if v.is_instance_of::<pyo3::types::PyBool>() {
        return v.extract();
    }
    Err(errors::config(
        py,
        name,
        format!("expected True or False, got {}", type_name(v)),
    ))
}

fn is_int(v: &Bound<'_, PyAny>) -> bool {
    v.is_instance_of::<pyo3::types::PyInt>() && !v.is_instance_of::<pyo3::types::PyBool>()
}

/// A non-negative integer that fits in `u32`.
pub(crate) fn uint(py: Python<'_>, name: &str, v: &Bound<'_, PyAny>) -> PyResult<u32> {
    if !is_int(v) {
        return Err(errors::config(
            py,
            name,
            format!("expected an integer, got {}", type_name(v)),
        ));
    }
    let x: i64 = v
        .extract()
        .map_err(|_| errors::config(py, name, "integer out of range"))?;
    u32::try_from(x)
        .map_err(|_| errors::config(py, name, format!("{x} is out of range (0 to {})", u32::MAX)))
}

fn number(py: Python<'_>, name: &str, v: &Bound<'_, PyAny>) -> PyResult<f64> {
    let ok = is_int(v) || v.is_instance_of::<pyo3::types::PyFloat>();
    if !ok {
        return Err(errors::config(
            py,
            name,
            format!("expected a number, got {}", type_name(v)),
        ));
    }
    let x: f64 = v.extract()?;
    if !x.is_finite() {
        return Err(errors::config(
            py,
            name,
            format!("{x} is not a finite number"),
        ));
    }
    Ok(x)
}

/// A duration: a number of seconds or a `datetime.timedelta`.
pub(crate) fn seconds(py: Python<'_>, name: &str, v: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let secs: f64 = if is_int(v) || v.is_instance_of::<pyo3::types::PyFloat>() {
        v.extract()?
    } else if v.hasattr("total_seconds").unwrap_or(false) && !v.is_instance_of::<PyString>() {
        v.call_method0("total_seconds")?.extract()?
    } else {
        return Err(errors::config(
            py,
            name,
            format!(
                "expected seconds (a number or a timedelta), got {}",
                type_name(v)
            ),
        ));
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(errors::config(
            py,
            name,
            format!("{secs} is not a duration (expected a finite number of seconds, at least 0)"),
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| errors::config(py, name, format!("{secs}: {e}")))
}

fn statuses(py: Python<'_>, name: &str, v: &Bound<'_, PyAny>) -> PyResult<Vec<u16>> {
    let bad = || {
        errors::config(
            py,
            name,
            format!(
                "expected a collection of HTTP statuses, got {}",
                type_name(v)
            ),
        )
    };
    if v.is_instance_of::<PyString>() || is_int(v) {
        return Err(bad());
    }
    let iter = v.try_iter().map_err(|_| bad())?;
    let mut out = Vec::new();
    for item in iter {
        let item = item?;
        let x = uint(py, name, &item)?;
        if !(100..=599).contains(&x) {
            return Err(errors::config(
                py,
                name,
                format!("{x} is not an HTTP status (100-599)"),
            ));
        }
        out.push(x as u16);
    }
    Ok(out)
}

fn pair<'py>(
    py: Python<'py>,
    name: &str,
    v: &Bound<'py, PyAny>,
    shape: &str,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let bad = || {
        errors::config(
            py,
            name,
            format!("expected a pair {shape}, got {}", type_name(v)),
        )
    };
    if v.is_instance_of::<PyString>() {
        return Err(bad());
    }
    let items: Vec<Bound<'py, PyAny>> =
        v.try_iter().map_err(|_| bad())?.collect::<PyResult<_>>()?;
    match <[Bound<'py, PyAny>; 2]>::try_from(items) {
        Ok([a, b]) => Ok((a, b)),
        Err(_) => Err(bad()),
    }
}

/// The known option nearest to a misspelt one (edit distance at most 3).
fn closest(name: &str) -> Option<&'static str> {
    NAMES
        .iter()
        .map(|n| (distance(name, n), *n))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

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

/// The Python-side description of a balancer's options, for `repr()` and the adapters.
pub(crate) fn sites_repr(spec: &Spec) -> String {
    spec.sites
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
