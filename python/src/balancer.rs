//! `sidekick.Balancer`, `sidekick.Lease`, `sidekick.EndpointInfo` and `sidekick.Event`.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pyo3::exceptions::{
    PyBrokenPipeError, PyConnectionAbortedError, PyConnectionError, PyConnectionRefusedError,
    PyConnectionResetError, PyException, PyTimeoutError,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::attempts::{self, PyAttempts};
use crate::errors;
use crate::options::{self, Spec};
use crate::runtime::{self, Runtime};

// ===== the engine objects of one generation =====

/// An engine balancer (and, once asked for, a client over it) built on the runtime of one
/// generation. Dropped normally in that generation; leaked in a forked child (see `runtime`).
pub(crate) struct Live {
    pub(crate) generation: u64,
    /// Always `Some` until `drop`.
    engine: Option<Engine>,
    /// Set once a pick no longer needs to wait for the first probe verdicts.
    warm: AtomicBool,
    born: Instant,
    warmup: Duration,
}

struct Engine {
    runtime: Arc<Runtime>,
    balancer: sidekick::Balancer,
    client: OnceLock<Result<sidekick::Client, String>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        if !runtime::is_current(self.generation) {
            // Built before a fork: dropping would cancel tasks of the parent's runtime, whose
            // threads are gone and whose locks may be held forever. Leak it.
            if let Some(e) = self.engine.take() {
                std::mem::forget(e);
            }
        }
    }
}

impl Live {
    fn build(spec: &Spec, sites: &[String]) -> Result<Live, BuildError> {
        let rt = runtime::get().map_err(|e| BuildError::Runtime(e.to_string()))?;
        let mut b = spec.builder_with(sites).runtime(rt.rt.handle().clone());
        if let Some(cb) = &spec.on_event {
            let cb = cb.clone();
            b = b.on_event(move |ev| deliver(&cb, ev));
        }
        let balancer = b.build().map_err(BuildError::Engine)?;
        let warm = !spec.health_check || spec.warmup.is_zero();
        Ok(Live {
            generation: rt.generation,
            engine: Some(Engine {
                runtime: rt,
                balancer,
                client: OnceLock::new(),
            }),
            warm: AtomicBool::new(warm),
            born: Instant::now(),
            warmup: spec.warmup,
        })
    }

    fn engine(&self) -> &Engine {
        self.engine
            .as_ref()
            .expect("the engine is present until drop")
    }

    pub(crate) fn rt(&self) -> &tokio::runtime::Runtime {
        &self.engine().runtime.rt
    }

    pub(crate) fn balancer(&self) -> &sidekick::Balancer {
        &self.engine().balancer
    }

    /// The engine client over this balancer, made on first use.
    pub(crate) fn client(&self, py: Python<'_>) -> PyResult<sidekick::Client> {
        let e = self.engine();
        let r = e.client.get_or_init(|| {
            let _g = e.runtime.rt.enter();
            sidekick::Client::new(e.balancer.clone()).map_err(|e| errors::message(&e))
        });
        match r {
            Ok(c) => Ok(c.clone()),
            Err(m) => Err(errors::base(py, m.clone())),
        }
    }

    /// While the balancer is new (or rebuilt after a fork) and nothing is available yet: the
    /// balancer and the deadline to wait for its first probe verdicts. None once warm.
    pub(crate) fn warming(&self) -> Option<Warming> {
        if self.warm.load(Ordering::Relaxed) {
            return None;
        }
        if self.born.elapsed() >= self.warmup || self.balancer().is_available() {
            self.warm.store(true, Ordering::Relaxed);
            return None;
        }
        Some(Warming {
            balancer: self.balancer().clone(),
            deadline: self.born + self.warmup,
        })
    }

    /// Wait, with the GIL released by the caller, until the warm-up is over.
    pub(crate) fn warm_up(&self, w: Warming) {
        self.rt().block_on(w.wait());
        self.warm.store(true, Ordering::Relaxed);
    }
}

/// A balancer in its warm-up (see [`Live::warming`]).
pub(crate) struct Warming {
    balancer: sidekick::Balancer,
    deadline: Instant,
}

impl Warming {
    /// Until an endpoint is available, or every endpoint has had its first probe verdict, or the
    /// deadline: at most `warmup / 10 ms` rounds.
    pub(crate) async fn wait(self) {
        let b = self.balancer;
        loop {
            if b.is_available() {
                return;
            }
            let eps = b.endpoints();
            if !eps.is_empty()
                && eps
                    .iter()
                    .all(|e| e.state != sidekick::EndpointState::Unknown)
            {
                return;
            }
            let now = Instant::now();
            if now >= self.deadline {
                return;
            }
            let step = (self.deadline - now).min(Duration::from_millis(10));
            let _ = b.ready(step).await;
        }
    }
}

enum BuildError {
    Runtime(String),
    Engine(sidekick::Error),
}

impl BuildError {
    fn into_py(self, py: Python<'_>) -> PyErr {
        match self {
            BuildError::Runtime(m) => errors::base(py, format!("could not start the runtime: {m}")),
            BuildError::Engine(e) => errors::to_py(py, &e),
        }
    }
}

/// Hand an engine event to the Python callback. Runs on a runtime thread or a request path.
fn deliver(cb: &Py<PyAny>, ev: &sidekick::Event) {
    if runtime::finalizing() {
        return;
    }
    let ev = PyEvent::from(ev);
    let _ = Python::try_attach(|py| {
        if let Err(e) = cb.bind(py).call1((ev,)) {
            e.write_unraisable(py, Some(cb.bind(py)));
        }
    });
}

// ===== the configuration and its current engine objects =====

/// What a Python `Balancer` (and the `Client`s over it) share: the stored configuration and the
/// engine objects of the current generation.
pub(crate) struct Shared {
    pub(crate) spec: Spec,
    /// The sites in force (as SITE texts): those of `spec` until a membership change, then what
    /// the engine reports after it. A rebuild after a fork starts from them.
    sites: Mutex<Vec<String>>,
    live: ArcSwap<Live>,
}

impl Shared {
    pub(crate) fn new(py: Python<'_>, spec: Spec) -> PyResult<Arc<Shared>> {
        let live = Live::build(&spec, &spec.sites).map_err(|e| e.into_py(py))?;
        Ok(Arc::new(Shared {
            sites: Mutex::new(spec.sites.clone()),
            spec,
            live: ArcSwap::from_pointee(live),
        }))
    }

    /// The sites in force, as SITE texts.
    pub(crate) fn sites(&self) -> Vec<String> {
        self.sites.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Apply a membership change to the current engine balancer (outside the GIL: it takes the
    /// engine's change lock), then remember the sites it leaves in force.
    fn change<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&sidekick::Balancer) -> Result<T, sidekick::Error> + Send,
    ) -> PyResult<T> {
        let live = self.live(py)?;
        let b = live.balancer();
        // Without the GIL, the sites lock included: a thread waiting for it never holds the GIL
        // another one needs.
        let result = py.detach(|| {
            let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
            let r = f(b);
            *sites = b.site_specs();
            r
        });
        result.map_err(|e| errors::to_py(py, &e))
    }

    /// The engine objects of this generation, rebuilt from the configuration after a fork.
    pub(crate) fn live(&self, py: Python<'_>) -> PyResult<Arc<Live>> {
        let cur = self.live.load_full();
        if runtime::is_current(cur.generation) {
            return Ok(cur);
        }
        let sites = self.sites();
        let fresh = Arc::new(Live::build(&self.spec, &sites).map_err(|e| e.into_py(py))?);
        let prev = self.live.compare_and_swap(&cur, fresh.clone());
        if Arc::ptr_eq(&prev, &cur) {
            Ok(fresh)
        } else {
            // Another thread rebuilt it first; ours is of this generation and drops cleanly.
            Ok(self.live.load_full())
        }
    }
}

// ===== Balancer =====

/// A client-side load balancer over ordered sites of endpoints.
///
/// `sites` is one site or a list of sites in sidekick's syntax (comma-separated pools with
/// `{N...M}` ranges, e.g. `"http://minio{1...4}:9000"`). All traffic goes to the first site with
/// an available endpoint; inside a site the policy chooses (default `p2c`: power of two choices
/// over a peak-EWMA latency x in-flight score).
///
/// Options (times in seconds or `timedelta`; defaults as in the Rust builder): policy,
/// health_check, health_path, last_site_health_path, health_port, health_interval,
/// health_timeout, health_jitter, health_optimistic, healthy_statuses, rise, fall,
/// eject_statuses, eject_after,
/// max_ejected_share, eject_backoff, failure_statuses, failure_penalty, ewma_decay, default_rtt,
/// max_attempts, retry_statuses, retry_buffer, retry_budget, host_policy, attempt_timeout,
/// connect_timeout, pool_idle_timeout, pool_max_idle_per_host, rr_dns, dns_refresh, hedge_delay,
/// hedge_percentile, hedge_max, on_event, warmup. A bad site or option raises `sidekick.ConfigError` naming it.
///
/// After `os.fork()` the balancer rebuilds itself in the child on first use.
#[pyclass(name = "Balancer", module = "sidekick", frozen)]
pub(crate) struct PyBalancer {
    pub(crate) shared: Arc<Shared>,
}

#[pymethods]
impl PyBalancer {
    #[new]
    #[pyo3(signature = (sites, **options))]
    fn new(
        py: Python<'_>,
        sites: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let spec = Spec::parse(py, sites, options)?;
        Ok(PyBalancer {
            shared: Shared::new(py, spec)?,
        })
    }

    /// Choose an endpoint for one request and return its lease.
    fn pick(&self, py: Python<'_>) -> PyResult<PyLease> {
        pick(py, &self.shared, &[])
    }

    /// Like `pick()`, but never one of the endpoint ids in `tried`.
    fn pick_excluding(&self, py: Python<'_>, tried: Vec<u64>) -> PyResult<PyLease> {
        pick(py, &self.shared, &tried)
    }

    /// Start the attempts of one request under the engine's retry policy, counted in this
    /// balancer's retry budget: `method` as sent (case-sensitive); `idempotency_key`: the
    /// request carries an `Idempotency-Key` header (any method is then idempotent);
    /// `replayable`: its body can be sent again.
    #[pyo3(signature = (method, idempotency_key = false, replayable = true))]
    fn attempts(
        &self,
        py: Python<'_>,
        method: &str,
        idempotency_key: bool,
        replayable: bool,
    ) -> PyResult<PyAttempts> {
        let live = self.shared.live(py)?;
        Ok(attempts::start(live, method, idempotency_key, replayable))
    }

    /// Wait until at least one endpoint is available, at most `timeout` seconds.
    #[pyo3(signature = (timeout = None))]
    fn ready(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let t = match timeout.filter(|t| !t.is_none()) {
            Some(t) => options::seconds(py, "timeout", t)?,
            None => Duration::from_secs(5),
        };
        let live = self.shared.live(py)?;
        if runtime::on_runtime_thread() {
            return Err(errors::on_runtime_thread(py, "Balancer.ready()"));
        }
        let r = py.detach(|| {
            let b = live.balancer().clone();
            live.rt().block_on(async move { b.ready(t).await })
        });
        r.map_err(|e| errors::to_py(py, &e))
    }

    /// True when at least one endpoint of some site is available.
    fn is_available(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.shared.live(py)?.balancer().is_available())
    }

    /// A snapshot of every endpoint, site by site.
    fn endpoints(&self, py: Python<'_>) -> PyResult<Vec<PyEndpointInfo>> {
        let live = self.shared.live(py)?;
        Ok(live
            .balancer()
            .endpoints()
            .into_iter()
            .map(PyEndpointInfo::from)
            .collect())
    }

    /// The site specifications in force, in order (those given, until a membership change).
    #[getter]
    fn sites(&self) -> Vec<String> {
        self.shared.sites()
    }

    /// The number of sites.
    #[getter]
    fn site_count(&self) -> usize {
        self.shared.sites().len()
    }

    /// Add the endpoint `url` (e.g. `"http://10.0.0.5:9000"`) to the site at position `site`
    /// (0 for the first), while the balancer runs. With health checks on it takes traffic after
    /// its first passing probe. Raises `MembershipError` for an unknown site, a duplicate or a
    /// mixed scheme, `ConfigError` for a bad URL; nothing changes then.
    fn add_endpoint(&self, py: Python<'_>, site: usize, url: String) -> PyResult<()> {
        self.shared.change(py, |b| b.add_endpoint(site, &url))?;
        Ok(())
    }

    /// Remove the endpoint `url` from every site that has it: it is never picked again once
    /// this returns (leases already taken finish normally) and its probes stop. Raises
    /// `MembershipError` when no site has it or it is the last endpoint of its site.
    fn remove_endpoint(&self, py: Python<'_>, url: String) -> PyResult<()> {
        self.shared.change(py, |b| b.remove_endpoint(&url))?;
        Ok(())
    }

    /// Replace the endpoints of the site at position `site` by those `spec` names (sidekick
    /// syntax); `site == site_count` appends a site. Endpoints named before and after keep
    /// their state.
    fn set_site(&self, py: Python<'_>, site: usize, spec: String) -> PyResult<()> {
        self.shared.change(py, |b| b.set_site(site, &spec))?;
        Ok(())
    }

    /// Make the sites exactly `sites` (a list of sidekick site texts, in order), keeping the
    /// state of the endpoints that stay. Every text is checked before anything changes.
    fn set_sites(&self, py: Python<'_>, sites: Vec<String>) -> PyResult<()> {
        self.shared.change(py, |b| b.set_sites(&sites))?;
        Ok(())
    }

    /// Append a site (sidekick syntax) and return its position.
    fn add_site(&self, py: Python<'_>, spec: String) -> PyResult<usize> {
        self.shared.change(py, |b| b.add_site(&spec))
    }

    /// Remove the site at position `site`; later sites move up. Raises `MembershipError` for
    /// the only site or an unknown position.
    fn remove_site(&self, py: Python<'_>, site: usize) -> PyResult<()> {
        self.shared.change(py, |b| b.remove_site(site))?;
        Ok(())
    }

    /// The number of health-probe tasks alive (one per endpoint with health checks on).
    fn probe_tasks(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.shared.live(py)?.balancer().probe_tasks())
    }

    /// Total attempts for a request that was sent and failed (the `max_attempts` option).
    #[getter]
    fn max_attempts(&self) -> u32 {
        self.shared.spec.max_attempts
    }

    /// Statuses on which an idempotent request is retried elsewhere (`retry_statuses`).
    #[getter]
    fn retry_statuses(&self) -> Vec<u16> {
        self.shared.spec.retry_statuses.clone()
    }

    /// The largest body kept for a replay (`retry_buffer`).
    #[getter]
    fn retry_buffer(&self) -> usize {
        self.shared.spec.retry_buffer
    }

    /// `"keep"` or `"rewrite"` (`host_policy`).
    #[getter]
    fn host_policy(&self) -> &'static str {
        self.shared.spec.host_policy
    }

    /// The policy's name (`p2c`, `least`, `round-robin` or `random`).
    #[getter]
    fn policy(&self) -> String {
        self.shared.spec.policy.clone()
    }

    /// The value of the option called `name` as this balancer runs with it: the engine's option
    /// names (`health_interval`, `eject_backoff_base`, ...), durations in seconds, `None` for an
    /// optional setting that is off. An unknown name raises `ConfigError`.
    fn option(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        self.shared.spec.option(py, name)
    }

    fn __repr__(&self) -> String {
        format!(
            "Balancer([{}], policy={:?})",
            options::sites_repr(&self.shared.spec),
            self.shared.spec.policy
        )
    }
}

pub(crate) fn pick(py: Python<'_>, shared: &Shared, tried: &[u64]) -> PyResult<PyLease> {
    let live = shared.live(py)?;
    match live.balancer().pick_excluding(tried) {
        Ok(lease) => Ok(PyLease::new(live.generation, lease)),
        Err(e) if e.is_no_endpoint() => {
            // No warm-up wait on a runtime thread (an on_event callback): fail fast there.
            let Some(w) = live.warming().filter(|_| !runtime::on_runtime_thread()) else {
                return Err(errors::to_py(py, &e));
            };
            py.detach(|| live.warm_up(w));
            live.balancer()
                .pick_excluding(tried)
                .map(|l| PyLease::new(live.generation, l))
                .map_err(|e| errors::to_py(py, &e))
        }
        Err(e) => Err(errors::to_py(py, &e)),
    }
}

// ===== Lease =====

/// How a request ended, as given to `Lease.finish`.
pub(crate) fn parse_outcome(
    py: Python<'_>,
    outcome: Option<&Bound<'_, PyAny>>,
    status: Option<u16>,
) -> PyResult<sidekick::Outcome> {
    use sidekick::Outcome as O;
    let Some(o) = outcome else {
        return Ok(match status {
            Some(s) => O::Status(s),
            None => O::Success,
        });
    };
    if o.is_instance_of::<pyo3::types::PyInt>() && !o.is_instance_of::<pyo3::types::PyBool>() {
        let s = options::uint(py, "outcome", o)?;
        return status_outcome(py, s);
    }
    let name: String = o
        .extract()
        .map_err(|_| errors::config(py, "outcome", "expected a string or a status code"))?;
    Ok(match name.as_str() {
        "success" => O::Success,
        "status" => match status {
            Some(s) => O::Status(s),
            None => return Err(errors::config(py, "outcome", "\"status\" needs status=")),
        },
        "connect" => O::Connect,
        "reset" => O::Reset,
        "timeout" => O::Timeout,
        "failed" => O::Failed,
        "cancelled" => O::Cancelled,
        other => {
            return Err(errors::config(
                py,
                "outcome",
                format!(
                    "unknown outcome `{other}`: expected success, status, connect, reset, \
                     timeout, failed or cancelled"
                ),
            ))
        }
    })
}

pub(crate) fn status_outcome(py: Python<'_>, s: u32) -> PyResult<sidekick::Outcome> {
    if (100..=599).contains(&s) {
        Ok(sidekick::Outcome::Status(s as u16))
    } else {
        Err(errors::config(
            py,
            "status",
            format!("{s} is not an HTTP status (100-599)"),
        ))
    }
}

/// The outcome an exception says about the endpoint: the builtins first, then the names of
/// well-known client exceptions (requests, urllib3, httpx, botocore), without importing them.
pub(crate) fn outcome_of_exception(py: Python<'_>, exc: &Bound<'_, PyAny>) -> sidekick::Outcome {
    use sidekick::Outcome as O;
    if !exc.is_instance_of::<PyException>() {
        // KeyboardInterrupt, SystemExit, asyncio.CancelledError, GeneratorExit.
        return O::Cancelled;
    }
    if exc.is_instance_of::<PyConnectionRefusedError>() {
        return O::Connect;
    }
    if exc.is_instance_of::<PyConnectionResetError>()
        || exc.is_instance_of::<PyConnectionAbortedError>()
        || exc.is_instance_of::<PyBrokenPipeError>()
    {
        return O::Reset;
    }
    if let Ok(Some(o)) = errors_class_check(py, exc) {
        return o;
    }
    if exc.is_instance_of::<PyTimeoutError>() {
        return O::Timeout;
    }
    if let Ok(mro) = exc.get_type().getattr("__mro__") {
        if let Ok(mro) = mro.cast_into::<PyTuple>() {
            for cls in mro.iter() {
                let Ok(name) = cls.getattr("__name__").and_then(|n| n.extract::<String>()) else {
                    continue;
                };
                if let Some(o) = outcome_of_name(&name) {
                    return o;
                }
            }
        }
    }
    if exc.is_instance_of::<PyConnectionError>() {
        return O::Reset;
    }
    O::Failed
}

/// sidekick's own errors: a `ConnectError` is a connect failure, a `TimeoutError` a timeout.
fn errors_class_check(
    py: Python<'_>,
    exc: &Bound<'_, PyAny>,
) -> PyResult<Option<sidekick::Outcome>> {
    let m = py.import("sidekick._errors")?;
    if exc.is_instance(&m.getattr("ConnectError")?)? {
        return Ok(Some(sidekick::Outcome::Connect));
    }
    if exc.is_instance(&m.getattr("NoEndpointError")?)? {
        return Ok(Some(sidekick::Outcome::Cancelled));
    }
    Ok(None)
}

fn outcome_of_name(name: &str) -> Option<sidekick::Outcome> {
    use sidekick::Outcome as O;
    if name.starts_with("Connect") && name.contains("Timeout") {
        return Some(O::Connect);
    }
    match name {
        "ConnectError"
        | "NewConnectionError"
        | "EndpointConnectionError"
        | "ProxyConnectionError"
        | "NameResolutionError"
        | "SSLError" => return Some(O::Connect),
        "ConnectionClosedError"
        | "RemoteProtocolError"
        | "ReadError"
        | "WriteError"
        | "ProtocolError"
        | "ChunkedEncodingError"
        | "RemoteDisconnected"
        | "IncompleteRead"
        | "ConnectionError" => return Some(O::Reset),
        "PoolTimeout" => return Some(O::Cancelled),
        _ => {}
    }
    if name.contains("Timeout") {
        return Some(O::Timeout);
    }
    None
}

/// One request's claim on an endpoint; a context manager that reports how the request went.
#[pyclass(name = "Lease", module = "sidekick", frozen)]
pub(crate) struct PyLease {
    generation: u64,
    url: String,
    id: u64,
    site: usize,
    picked: Instant,
    /// 0 until a status is recorded with `report()` / `status = ...`.
    status: AtomicU32,
    lease: Mutex<Option<sidekick::Lease>>,
}

impl PyLease {
    pub(crate) fn new(generation: u64, lease: sidekick::Lease) -> PyLease {
        PyLease {
            generation,
            url: lease.url().to_string(),
            id: lease.id(),
            site: lease.site(),
            picked: Instant::now(),
            status: AtomicU32::new(0),
            lease: Mutex::new(Some(lease)),
        }
    }

    pub(crate) fn take(&self) -> Option<sidekick::Lease> {
        match self.lease.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        }
    }

    /// Give back the engine lease `take` removed (the attempt policy said "done": the caller
    /// finishes it).
    pub(crate) fn put_back(&self, lease: sidekick::Lease) {
        match self.lease.lock() {
            Ok(mut g) => *g = Some(lease),
            Err(p) => *p.into_inner() = Some(lease),
        }
    }

    /// Finish with `outcome`; false when it was already finished.
    pub(crate) fn finish_with(
        &self,
        outcome: sidekick::Outcome,
        latency: Option<Duration>,
    ) -> bool {
        let Some(lease) = self.take() else {
            return false;
        };
        if !runtime::is_current(self.generation) {
            // Picked before a fork: its balancer belongs to the parent. Report nothing.
            std::mem::forget(lease);
            return true;
        }
        match latency {
            Some(l) => lease.finish_with_latency(outcome, l),
            None => lease.finish(outcome),
        }
        true
    }
}

impl Drop for PyLease {
    fn drop(&mut self) {
        if let Some(lease) = self.take() {
            if runtime::is_current(self.generation) {
                drop(lease); // counts as cancelled
            } else {
                std::mem::forget(lease);
            }
        }
    }
}

#[pymethods]
impl PyLease {
    /// The endpoint URL, e.g. `http://10.0.0.1:9000` (with its base path, if any).
    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    /// The endpoint's id, for `Balancer.pick_excluding`.
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    /// The index of the endpoint's site (0 for the first).
    #[getter]
    fn site(&self) -> usize {
        self.site
    }

    /// Seconds since the pick.
    #[getter]
    fn elapsed(&self) -> f64 {
        self.picked.elapsed().as_secs_f64()
    }

    /// True once the outcome was reported.
    #[getter]
    fn finished(&self) -> bool {
        match self.lease.lock() {
            Ok(g) => g.is_none(),
            Err(p) => p.into_inner().is_none(),
        }
    }

    /// The response status recorded for the end of the `with` block, or None.
    #[getter]
    fn get_status(&self) -> Option<u16> {
        match self.status.load(Ordering::Relaxed) {
            0 => None,
            s => Some(s as u16),
        }
    }

    #[setter]
    fn set_status(&self, py: Python<'_>, status: Option<u32>) -> PyResult<()> {
        match status {
            None => self.status.store(0, Ordering::Relaxed),
            Some(s) => {
                status_outcome(py, s)?;
                self.status.store(s, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Record the response status; reported when the `with` block ends.
    #[pyo3(signature = (status))]
    fn report(&self, py: Python<'_>, status: u32) -> PyResult<()> {
        self.set_status(py, Some(status))
    }

    /// Report how the request went, now.
    #[pyo3(signature = (outcome = None, status = None, latency = None))]
    fn finish(
        &self,
        py: Python<'_>,
        outcome: Option<&Bound<'_, PyAny>>,
        status: Option<u32>,
        latency: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let status = match status {
            Some(s) => match status_outcome(py, s)? {
                sidekick::Outcome::Status(s) => Some(s),
                _ => None,
            },
            None => None,
        };
        let outcome = parse_outcome(py, outcome, status)?;
        let latency = match latency {
            Some(l) if !l.is_none() => Some(options::seconds(py, "latency", l)?),
            _ => None,
        };
        Ok(self.finish_with(outcome, latency))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (exc_type = None, exc = None, tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        let _ = (exc_type, tb);
        let outcome = match exc {
            Some(e) if !e.is_none() => outcome_of_exception(py, e),
            _ => match self.status.load(Ordering::Relaxed) {
                0 => sidekick::Outcome::Success,
                s => sidekick::Outcome::Status(s as u16),
            },
        };
        self.finish_with(outcome, None);
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "Lease(url={:?}, id={}, site={}, finished={})",
            self.url,
            self.id,
            self.site,
            if self.finished() { "True" } else { "False" }
        )
    }
}

// ===== EndpointInfo and Event =====

/// A snapshot of one endpoint, for monitoring.
#[pyclass(name = "EndpointInfo", module = "sidekick", frozen, get_all)]
pub(crate) struct PyEndpointInfo {
    /// Identifier, stable for the life of the endpoint.
    id: u64,
    /// The endpoint URL.
    url: String,
    /// Index of its site, 0 for the first.
    site: usize,
    /// `unknown`, `up`, `down`, `ejected` or `trial`.
    state: &'static str,
    /// Requests in flight.
    inflight: u32,
    /// Current latency estimate in seconds, None before the first sample.
    latency: Option<f64>,
    /// Requests finished (all outcomes but cancellations).
    requests: u64,
    /// Requests that failed.
    failures: u64,
    /// Times passive ejection took it out.
    ejections: u64,
    /// The last probe or request error, if any.
    last_error: Option<String>,
}

impl From<sidekick::EndpointInfo> for PyEndpointInfo {
    fn from(e: sidekick::EndpointInfo) -> Self {
        PyEndpointInfo {
            id: e.id,
            url: e.url,
            site: e.site,
            state: e.state.as_str(),
            inflight: e.inflight,
            latency: e.latency.map(|d| d.as_secs_f64()),
            requests: e.requests,
            failures: e.failures,
            ejections: e.ejections,
            last_error: e.last_error,
        }
    }
}

#[pymethods]
impl PyEndpointInfo {
    /// True when the endpoint is in rotation.
    #[getter]
    fn available(&self) -> bool {
        self.state == "up" || self.state == "trial"
    }

    /// The snapshot as a plain dict (for JSON metrics).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", self.id)?;
        d.set_item("url", &self.url)?;
        d.set_item("site", self.site)?;
        d.set_item("state", self.state)?;
        d.set_item("inflight", self.inflight)?;
        d.set_item("latency", self.latency)?;
        d.set_item("requests", self.requests)?;
        d.set_item("failures", self.failures)?;
        d.set_item("ejections", self.ejections)?;
        d.set_item("last_error", &self.last_error)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "EndpointInfo(url={:?}, site={}, state={:?}, inflight={}, requests={}, failures={}, ejections={})",
            self.url, self.site, self.state, self.inflight, self.requests, self.failures, self.ejections
        )
    }
}

/// A state change or a retry, given to the `on_event` callback.
#[pyclass(name = "Event", module = "sidekick", frozen, get_all)]
pub(crate) struct PyEvent {
    /// `up`, `down`, `ejected`, `returned`, `retry`, `budget_exhausted`, `hedge_sent`,
    /// `hedge_won`, `added`, `removed`, `slow_start_began`, `slow_start_ended` or `site_shares`
    /// (the endpoint is empty for `site_shares`).
    kind: &'static str,
    /// The endpoint URL.
    endpoint: String,
    /// Its site index, when the event carries it.
    site: Option<usize>,
    /// Why (`down`: the probe error; `ejected`: connect/timeout/status; `retry`: connect, reset,
    /// timeout or status).
    reason: Option<String>,
    /// The failed attempt (`retry`); which hedge of the request (`hedge_sent`, 1 for the first).
    attempt: Option<u32>,
    /// Seconds out of rotation (`up`).
    downtime: Option<f64>,
    /// Seconds the ramp lasts (`slow_start_began`).
    window: Option<f64>,
    /// Percent of the picks per site, in order (`site_shares`).
    shares: Option<Vec<u32>>,
}

impl From<&sidekick::Event> for PyEvent {
    fn from(ev: &sidekick::Event) -> Self {
        use sidekick::Event as E;
        let mut out = PyEvent {
            kind: "unknown",
            endpoint: String::new(),
            site: None,
            reason: None,
            attempt: None,
            downtime: None,
            window: None,
            shares: None,
        };
        match ev {
            E::Up {
                endpoint,
                site,
                downtime,
            } => {
                out.kind = "up";
                out.endpoint = endpoint.clone();
                out.site = Some(*site);
                out.downtime = Some(downtime.as_secs_f64());
            }
            E::Down {
                endpoint,
                site,
                reason,
            } => {
                out.kind = "down";
                out.endpoint = endpoint.clone();
                out.site = Some(*site);
                out.reason = Some(reason.clone());
            }
            E::Ejected {
                endpoint,
                site,
                reason,
            } => {
                out.kind = "ejected";
                out.endpoint = endpoint.clone();
                out.site = Some(*site);
                out.reason = Some(reason.as_str().to_string());
            }
            E::Returned { endpoint, site } => {
                out.kind = "returned";
                out.endpoint = endpoint.clone();
                out.site = Some(*site);
            }
            E::Retry {
                endpoint,
                attempt,
                reason,
            } => {
                out.kind = "retry";
                out.endpoint = endpoint.clone();
                out.attempt = Some(*attempt);
                out.reason = Some(reason.to_string());
            }
            E::BudgetExhausted { endpoint } => {
                out.kind = "budget_exhausted";
                out.endpoint = endpoint.clone();
            }
            E::HedgeSent {
                endpoint, hedge, ..
            } => {
                out.kind = "hedge_sent";
                out.endpoint = endpoint.clone();
                out.attempt = Some(*hedge);
            }
            E::HedgeWon { endpoint } => {
                out.kind = "hedge_won";
                out.endpoint = endpoint.clone();
            }
            E::Added { endpoint, site } => {
                out.kind = "added";
                out.endpoint = endpoint.clone();
                out.site = Some(*site);
            }
            E::Removed { endpoint, site } => {
                out.kind = "removed";
                out.endpoint = endpoint.clone();
                out.site = Some(*site);
            }
            E::SlowStartBegan {
                endpoint,
                site,
                window,
            } => {
                out.kind = "slow_start_began";
                out.endpoint = endpoint.clone();
                out.site = Some(*site);
                out.window = Some(window.as_secs_f64());
            }
            E::SlowStartEnded { endpoint, site } => {
                out.kind = "slow_start_ended";
                out.endpoint = endpoint.clone();
                out.site = Some(*site);
            }
            E::SiteShares { shares } => {
                out.kind = "site_shares";
                out.shares = Some(shares.clone());
            }
            _ => {}
        }
        out
    }
}

#[pymethods]
impl PyEvent {
    fn __repr__(&self) -> String {
        format!(
            "Event(kind={:?}, endpoint={:?}, site={:?}, reason={:?})",
            self.kind, self.endpoint, self.site, self.reason
        )
    }
}
