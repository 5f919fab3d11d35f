//! `sidekick.Attempts`: the engine's attempt policy for a request sent by a Python HTTP library.
//!
//! The adapters (requests, httpx, boto3) only translate their library's errors into outcomes and
//! follow the answers of `Attempts.decide`; the rules and the retry budget, one per balancer and
//! shared with every other caller of it, are the engine's.

use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::prelude::*;

use sidekick::retry::{self, Attempts, Decision};

use crate::balancer::{parse_outcome, status_outcome, Live, PyLease};
use crate::errors;
use crate::runtime;

/// The attempts of one request, from `Balancer.attempts(method, ...)`: `pick()` the first lease,
/// send, then `decide(lease, outcome, ...)` after each attempt.
#[pyclass(name = "Attempts", module = "sidekick", frozen)]
pub(crate) struct PyAttempts {
    live: Arc<Live>,
    attempts: Mutex<Option<Attempts>>,
}

impl Drop for PyAttempts {
    fn drop(&mut self) {
        if !runtime::is_current(self.live.generation) {
            // Made before a fork: its balancer belongs to the parent. Touch nothing.
            if let Some(a) = lock(&self.attempts).take() {
                std::mem::forget(a);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `Balancer.attempts(method, idempotency_key, replayable)`.
pub(crate) fn start(
    live: Arc<Live>,
    method: &str,
    idempotency_key: bool,
    replayable: bool,
) -> PyAttempts {
    let idempotent = retry::is_idempotent_method(method, idempotency_key);
    let attempts = live.balancer().attempts(idempotent, replayable);
    PyAttempts {
        live,
        attempts: Mutex::new(Some(attempts)),
    }
}

impl PyAttempts {
    fn with<T>(&self, py: Python<'_>, f: impl FnOnce(&mut Attempts) -> PyResult<T>) -> PyResult<T> {
        if !runtime::is_current(self.live.generation) {
            return Err(errors::base(
                py,
                "these Attempts were made before os.fork(): start new ones in the child",
            ));
        }
        let mut g = lock(&self.attempts);
        match g.as_mut() {
            Some(a) => f(a),
            None => Err(errors::base(py, "Attempts used after it was dropped")),
        }
    }
}

#[pymethods]
impl PyAttempts {
    /// The lease of the first attempt (raises `NoEndpointError`; waits for the warm-up like
    /// `Balancer.pick()`).
    fn pick(&self, py: Python<'_>) -> PyResult<PyLease> {
        let live = self.live.clone();
        let first = self.with(py, |a| Ok(a.pick()))?;
        let lease = match first {
            Err(e) if e.is_no_endpoint() => {
                let Some(w) = live.warming().filter(|_| !runtime::on_runtime_thread()) else {
                    return Err(errors::to_py(py, &e));
                };
                py.detach(|| live.warm_up(w));
                self.with(py, |a| a.pick().map_err(|e| errors::to_py(py, &e)))?
            }
            other => other.map_err(|e| errors::to_py(py, &e))?,
        };
        Ok(PyLease::new(live.generation, lease))
    }

    /// After the attempt sent to `lease` ended with `outcome` (as `Lease.finish` takes it: a
    /// status code, or "connect", "reset", "timeout", "failed", "cancelled", "success"), what
    /// next: `(decision, reason, lease)`.
    ///
    /// - `("done", "", lease)`: hand the answer to the caller; `lease` (the same object) is
    ///   still open: finish it.
    /// - `("retry", reason, next)`: send again to `next`; `lease` was finished.
    /// - `("giveup", reason, None)`: hand the last result to the caller; `lease` was finished.
    ///
    /// `intact`: the attempt consumed none of the request body.
    #[pyo3(signature = (lease, outcome, status = None, intact = true))]
    fn decide(
        &self,
        py: Python<'_>,
        lease: Py<PyLease>,
        outcome: &Bound<'_, PyAny>,
        status: Option<u32>,
        intact: bool,
    ) -> PyResult<(&'static str, &'static str, Option<Py<PyLease>>)> {
        let status = match status {
            Some(s) => match status_outcome(py, s)? {
                sidekick::Outcome::Status(s) => Some(s),
                _ => None,
            },
            None => None,
        };
        let outcome = parse_outcome(py, Some(outcome), status)?;
        let engine_lease = lease
            .get()
            .take()
            .ok_or_else(|| errors::config(py, "lease", "it was already finished"))?;
        let live = self.live.clone();
        let decision = self.with(py, |a| Ok(a.decide(engine_lease, outcome, intact)))?;
        Ok(match decision {
            Decision::Done(l) => {
                lease.get().put_back(l);
                ("done", "", Some(lease))
            }
            Decision::Retry(next, r) => (
                "retry",
                r.as_str(),
                Some(Py::new(py, PyLease::new(live.generation, next))?),
            ),
            Decision::GiveUp(r) => ("giveup", r.as_str(), None),
        })
    }

    /// The attempts decided so far.
    #[getter]
    fn count(&self, py: Python<'_>) -> PyResult<u32> {
        self.with(py, |a| Ok(a.attempts()))
    }

    /// The endpoint ids tried so far.
    #[getter]
    fn tried(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        self.with(py, |a| Ok(a.tried().to_vec()))
    }

    fn __repr__(&self) -> String {
        match lock(&self.attempts).as_ref() {
            Some(a) => format!("Attempts(count={}, tried={:?})", a.attempts(), a.tried()),
            None => "Attempts()".to_string(),
        }
    }
}
