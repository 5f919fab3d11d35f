//! Keyword options of `sidekick.Balancer(...)` / `sidekick.Client(...)`, checked and kept.
//!
//! The names, kinds and defaults are the engine's ([`sidekick::options`]): a keyword is looked up
//! in that table, its Python value converted by the option's kind (seconds or a `timedelta` for
//! a duration, an iterable of ints for statuses, ...) and set on an engine builder at once, so
//! every mistake is a `sidekick.ConfigError` naming the option when the balancer is constructed.
//! Only what Python adds is listed here: `on_event`, `warmup`, and the pairs `eject_backoff` and
//! `retry_budget`. The configured builder is kept: it builds the engine balancer at construction
//! and again in a forked child.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyString};
use sidekick::options::{Kind, Value};

use crate::errors;

/// A balancer's whole configuration, as given (and checked) in Python.
#[derive(Clone)]
pub(crate) struct Spec {
    pub(crate) sites: Vec<String>,
    /// The engine builder with every option set (no sites yet).
    engine: sidekick::Builder,
    /// The Python callable given as `on_event`.
    pub(crate) on_event: Option<Arc<Py<PyAny>>>,
    /// How long a pick may wait for the first probe verdicts (see `Live::warm_up`).
    pub(crate) warmup: Duration,
    // Settings the Python side reads, as the engine holds them.
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
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// How long a pick waits for the first probe verdicts unless `warmup` says otherwise.
const DEFAULT_WARMUP: Duration = Duration::from_secs(5);

impl Spec {
    /// An engine builder with every stored option applied and `sites` instead of the sites
    /// given at construction (those in force after membership changes).
    pub(crate) fn builder_with(&self, sites: &[String]) -> sidekick::Builder {
        self.engine.clone().sites(sites)
    }

    /// Parse `sites` and the keyword options.
    pub(crate) fn parse(
        py: Python<'_>,
        sites: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Spec> {
        let mut engine = sidekick::Builder::new();
        let mut on_event = None;
        let mut warmup = DEFAULT_WARMUP;
        let sites = parse_sites(py, sites)?;
        if let Some(options) = options {
            for (k, v) in options.iter() {
                let name: String = k.extract()?;
                match name.as_str() {
                    "on_event" => on_event = callable(py, &name, &v)?,
                    "warmup" => warmup = seconds(py, &name, &v)?,
                    "eject_backoff" => {
                        let (base, max) = pair(py, &name, &v, "(base, max) in seconds")?;
                        let base = seconds(py, "eject_backoff base", &base)?;
                        let max = seconds(py, "eject_backoff max", &max)?;
                        engine = set(py, engine, "eject_backoff_base", Value::Duration(base))?;
                        engine = set(py, engine, "eject_backoff_max", Value::Duration(max))?;
                    }
                    "retry_budget" => {
                        let (ratio, floor) = pair(py, &name, &v, "(ratio, min_per_sec)")?;
                        let ratio = number(py, "retry_budget ratio", &ratio)?;
                        let floor = uint(py, "retry_budget min_per_sec", &floor)?;
                        engine = set(py, engine, "retry_budget_ratio", Value::Number(ratio))?;
                        engine = set(
                            py,
                            engine,
                            "retry_budget_min_per_sec",
                            Value::Int(u64::from(floor)),
                        )?;
                    }
                    _ => {
                        let option =
                            sidekick::options::find(&name).map_err(|e| errors::to_py(py, &e))?;
                        let value = value_of(py, &name, option.kind(), &v)?;
                        engine = set(py, engine, &name, value)?;
                    }
                }
            }
        }
        let get = |name: &str| engine.get(name).unwrap_or(Value::None);
        let int = |name: &str| match get(name) {
            Value::Int(n) => n,
            _ => 0,
        };
        Ok(Spec {
            sites,
            on_event,
            warmup,
            health_check: get("health_check") == Value::Bool(true),
            max_attempts: u32::try_from(int("max_attempts")).unwrap_or(u32::MAX),
            retry_statuses: match get("retry_statuses") {
                Value::Statuses(s) => s,
                _ => Vec::new(),
            },
            retry_buffer: usize::try_from(int("retry_buffer")).unwrap_or(usize::MAX),
            host_policy: match get("host_policy") {
                Value::Text(t) if t == "rewrite" => "rewrite",
                _ => "keep",
            },
            policy: get("policy").to_string(),
            engine,
        })
    }
}

impl Spec {
    /// The value of engine option `name` as configured (the engine's option names; its default
    /// when not given), as a Python object: durations in seconds, status lists as lists, none as
    /// `None`.
    pub(crate) fn option(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let value = self.engine.get(name).map_err(|e| errors::to_py(py, &e))?;
        Ok(match value {
            Value::Bool(b) => PyBool::new(py, b).to_owned().into_any().unbind(),
            Value::Int(n) => n.into_pyobject(py)?.into_any().unbind(),
            Value::Number(x) => PyFloat::new(py, x).into_any().unbind(),
            Value::Duration(d) => PyFloat::new(py, d.as_secs_f64()).into_any().unbind(),
            Value::Statuses(list) => PyList::new(py, list)?.into_any().unbind(),
            Value::Text(t) => PyString::new(py, &t).into_any().unbind(),
            _ => py.None(),
        })
    }
}

/// Set one engine option; a value the engine rejects is a `ConfigError` naming it.
fn set(
    py: Python<'_>,
    engine: sidekick::Builder,
    name: &str,
    value: Value,
) -> PyResult<sidekick::Builder> {
    engine.set(name, value).map_err(|e| errors::to_py(py, &e))
}

/// A Python value as a value of the engine option `name`, by the option's kind.
fn value_of(py: Python<'_>, name: &str, kind: Kind, v: &Bound<'_, PyAny>) -> PyResult<Value> {
    if v.is_none() && kind.is_optional() {
        return Ok(Value::None);
    }
    Ok(match kind {
        Kind::Bool => Value::Bool(boolean(py, name, v)?),
        Kind::Count | Kind::Size | Kind::Port => Value::Int(u64::from(uint(py, name, v)?)),
        Kind::Number => Value::Number(number(py, name, v)?),
        Kind::Duration | Kind::OptionalDuration => Value::Duration(seconds(py, name, v)?),
        Kind::Statuses => Value::Statuses(statuses(py, name, v)?),
        Kind::Text | Kind::OptionalText | Kind::Policy | Kind::HostPolicy => {
            Value::Text(string(py, name, v)?)
        }
        other => {
            return Err(errors::config(
                py,
                name,
                format!("options of kind {other:?} are not supported from Python"),
            ))
        }
    })
}

fn callable(py: Python<'_>, name: &str, v: &Bound<'_, PyAny>) -> PyResult<Option<Arc<Py<PyAny>>>> {
    if v.is_none() {
        Ok(None)
    } else if v.is_callable() {
        Ok(Some(Arc::new(v.clone().unbind())))
    } else {
        Err(errors::config(
            py,
            name,
            format!("expected a callable or None, got {}", type_name(v)),
        ))
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

/// The Python-side description of a balancer's options, for `repr()` and the adapters.
pub(crate) fn sites_repr(spec: &Spec) -> String {
    spec.sites
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
