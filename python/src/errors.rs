//! Engine errors as Python exceptions.
//!
//! The classes live in `sidekick/_errors.py` (Python makes multiple inheritance easy:
//! `sidekick.ConnectError` is also a builtin `ConnectionError`, `sidekick.ConfigError` a
//! `ValueError`). This file picks the class from the engine error's predicates, in the spirit of
//! the core crate's `Error::is_*()`.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// Which Python class an error maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Config,
    NoEndpoint,
    NotReady,
    Connect,
    Timeout,
    Request,
    Body,
    Membership,
    Base,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Config => "ConfigError",
            Class::NoEndpoint => "NoEndpointError",
            Class::NotReady => "NotReadyError",
            Class::Connect => "ConnectError",
            Class::Timeout => "TimeoutError",
            Class::Request => "RequestError",
            Class::Body => "BodyError",
            Class::Membership => "MembershipError",
            Class::Base => "Error",
        }
    }

    /// The class for an engine error.
    pub(crate) fn of(e: &sidekick::Error) -> Class {
        if e.is_config() {
            Class::Config
        } else if e.is_not_ready() {
            Class::NotReady
        } else if e.is_no_endpoint() {
            Class::NoEndpoint
        } else if e.is_connect() {
            Class::Connect
        } else if e.is_timeout() {
            Class::Timeout
        } else if e.is_body() {
            Class::Body
        } else if e.is_request() {
            Class::Request
        } else if e.is_membership() {
            Class::Membership
        } else {
            Class::Base
        }
    }
}

fn class<'py>(py: Python<'py>, c: Class) -> PyResult<Bound<'py, PyType>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let m = MODULE.get_or_try_init(py, || py.import("sidekick._errors").map(Bound::unbind))?;
    Ok(m.bind(py).getattr(c.name())?.cast_into::<PyType>()?)
}

/// A Python exception of class `c` with `message`, and its `endpoint` attribute when known.
pub(crate) fn new_err(py: Python<'_>, c: Class, message: String, endpoint: Option<&str>) -> PyErr {
    let ty = match class(py, c) {
        Ok(t) => t,
        Err(_) => return PyRuntimeError::new_err(message),
    };
    let err = PyErr::from_type(ty, message);
    if let Some(ep) = endpoint {
        // Best effort: the attribute is informative only.
        let _ = err.value(py).setattr("endpoint", ep);
    }
    err
}

/// The engine error's message followed by its causes, without repeating one.
pub(crate) fn message(e: &sidekick::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = std::error::Error::source(e);
    let mut depth = 0;
    while let Some(s) = cur {
        let text = s.to_string();
        if !text.is_empty() && !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cur = s.source();
        depth += 1;
        if depth >= 8 {
            break;
        }
    }
    msg
}

/// Convert an engine error.
pub(crate) fn to_py(py: Python<'_>, e: &sidekick::Error) -> PyErr {
    new_err(py, Class::of(e), message(e), e.endpoint())
}

/// A `ConfigError` for a bad argument; `what` names it.
pub(crate) fn config(py: Python<'_>, what: &str, why: impl std::fmt::Display) -> PyErr {
    new_err(
        py,
        Class::Config,
        format!("invalid configuration: {what}: {why}"),
        None,
    )
}

/// A plain `sidekick.Error`.
pub(crate) fn base(py: Python<'_>, message: impl Into<String>) -> PyErr {
    new_err(py, Class::Base, message.into(), None)
}

/// The error for a blocking call made on one of sidekick's own runtime threads.
pub(crate) fn on_runtime_thread(py: Python<'_>, what: &str) -> PyErr {
    base(
        py,
        format!(
            "{what} blocks, and cannot be called on sidekick's own runtime threads \
             (from an on_event callback, for instance)"
        ),
    )
}
