//! `sidekick._sidekick`: the native half of the `sidekick` Python package.
//!
//! It wraps the core crate (`sidekick-lb`, imported as `sidekick`) the way the core is meant to be
//! embedded: one balancer per configuration, a lease per request, and the engine's own HTTP client
//! for callers that want it. The Python half (`pysrc/sidekick`) holds the exception classes, the
//! adapters for requests, httpx and boto3, and the fork hook.
//!
//! - [`runtime`]: the process-wide tokio runtime, rebuilt in a forked child;
//! - [`options`]: keyword options, checked into a stored configuration;
//! - [`balancer`]: `Balancer`, `Lease`, `EndpointInfo`, `Event`;
//! - [`client`]: `Client` and `Response`, blocking and awaitable;
//! - [`errors`]: engine errors as Python exceptions.
#![warn(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod attempts;
mod balancer;
mod client;
mod errors;
mod options;
mod runtime;

use pyo3::prelude::*;

/// Forget the parent's runtime and rebuild lazily (registered with `os.register_at_fork`).
#[pyfunction]
fn _after_fork_in_child() {
    runtime::after_fork_in_child();
}

/// Stop delivering events to Python (registered with `atexit`).
#[pyfunction]
fn _set_finalizing() {
    runtime::set_finalizing();
}

/// The fork generation of this process: 0, plus one per `os.fork()` since the import.
#[pyfunction]
fn _generation() -> u64 {
    runtime::generation()
}

#[pymodule(gil_used = false)]
fn _sidekick(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<balancer::PyBalancer>()?;
    m.add_class::<balancer::PyLease>()?;
    m.add_class::<attempts::PyAttempts>()?;
    m.add_class::<balancer::PyEndpointInfo>()?;
    m.add_class::<balancer::PyEvent>()?;
    m.add_class::<client::PyClient>()?;
    m.add_class::<client::PyResponse>()?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(_set_finalizing, m)?)?;
    m.add_function(wrap_pyfunction!(_generation, m)?)?;
    Ok(())
}
