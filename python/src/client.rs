//! `sidekick.Client` and `sidekick.Response`: requests sent by the engine's own HTTP client, with
//! the GIL released while they wait. The awaitable variants resolve an asyncio future from the
//! runtime thread that finishes the request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple};

use crate::balancer::{PyBalancer, Shared, Warming};
use crate::errors::{self, Class};
use crate::options::{self, Spec};
use crate::runtime;

/// A response read in full by a runtime task (no Python object inside).
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// Why a request failed, before it becomes a Python exception.
enum Failure {
    Engine(sidekick::Error),
    Deadline(Duration),
    Body(String),
}

impl Failure {
    fn into_py(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Engine(e) => errors::to_py(py, &e),
            Failure::Deadline(t) => errors::new_err(
                py,
                Class::Timeout,
                format!("no complete response within {:.3} s", t.as_secs_f64()),
                None,
            ),
            Failure::Body(m) => errors::new_err(
                py,
                Class::Request,
                format!("the response body could not be read: {m}"),
                None,
            ),
        }
    }
}

async fn exchange(
    client: sidekick::Client,
    req: http::Request<Full<Bytes>>,
    timeout: Option<Duration>,
    warming: Option<Warming>,
) -> Result<Raw, Failure> {
    let work = async move {
        // A new balancer (or one rebuilt after a fork) first waits for its probes, as pick() does.
        if let Some(w) = warming {
            w.wait().await;
        }
        let resp = client.request(req).await.map_err(Failure::Engine)?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| Failure::Body(e.to_string()))?
            .to_bytes();
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Ok(Raw {
            status: parts.status.as_u16(),
            headers,
            body,
        })
    };
    match timeout {
        Some(t) => match tokio::time::timeout(t, work).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Deadline(t)),
        },
        None => work.await,
    }
}

fn bytes_of(py: Python<'_>, what: &str, v: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(b.as_bytes()));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Bytes::copy_from_slice(s.to_cow()?.as_bytes()));
    }
    if v.is_instance_of::<PyByteArray>() || v.is_instance_of::<PyMemoryView>() {
        let b = PyBytes::new(py, &[]).get_type().call1((v,))?;
        return Ok(Bytes::copy_from_slice(b.cast::<PyBytes>()?.as_bytes()));
    }
    Err(errors::config(
        py,
        what,
        format!(
            "expected bytes or str, got {}",
            v.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ),
    ))
}

/// Build the engine request while holding the GIL (every input is owned afterwards).
fn build_request(
    py: Python<'_>,
    method: &str,
    url: &str,
    headers: Option<&Bound<'_, PyAny>>,
    body: Option<&Bound<'_, PyAny>>,
) -> PyResult<http::Request<Full<Bytes>>> {
    let method = http::Method::from_bytes(method.as_bytes())
        .map_err(|e| errors::config(py, "method", format!("`{method}`: {e}")))?;
    let uri: http::Uri = url
        .parse()
        .map_err(|e| errors::config(py, "url", format!("`{url}`: {e}")))?;
    let mut b = http::Request::builder().method(method).uri(uri);
    if let Some(h) = headers.filter(|h| !h.is_none()) {
        let pairs = if let Ok(d) = h.cast::<PyDict>() {
            d.items().into_any()
        } else if h.hasattr("items")? {
            h.call_method0("items")?
        } else {
            h.clone()
        };
        for item in pairs.try_iter()? {
            let item = item?;
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract().map_err(|_| {
                errors::config(py, "headers", "expected a mapping or (name, value) pairs")
            })?;
            let name: String = k
                .extract()
                .map_err(|_| errors::config(py, "headers", "header names must be strings"))?;
            let value = bytes_of(py, "headers", &v)?;
            let name = http::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| errors::config(py, "headers", format!("`{name}`: {e}")))?;
            let value = http::HeaderValue::from_maybe_shared(value)
                .map_err(|e| errors::config(py, "headers", format!("`{name}`: {e}")))?;
            b = b.header(name, value);
        }
    }
    let body = match body.filter(|b| !b.is_none()) {
        Some(v) => bytes_of(py, "body", v)?,
        None => Bytes::new(),
    };
    b.body(Full::new(body))
        .map_err(|e| errors::config(py, "request", e))
}

fn timeout_of(py: Python<'_>, t: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    match t.filter(|t| !t.is_none()) {
        Some(t) => {
            let d = options::seconds(py, "timeout", t)?;
            if d.is_zero() {
                return Err(errors::config(py, "timeout", "must be greater than zero"));
            }
            Ok(Some(d))
        }
        None => Ok(None),
    }
}

fn is_main_thread(py: Python<'_>) -> bool {
    static THREADING: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let Ok(m) = THREADING.get_or_try_init(py, || py.import("threading").map(Bound::unbind)) else {
        return false;
    };
    let m = m.bind(py);
    match (
        m.call_method0("current_thread"),
        m.call_method0("main_thread"),
    ) {
        (Ok(a), Ok(b)) => a.is(&b),
        _ => false,
    }
}

/// An HTTP client over a balancer: every request goes to a chosen endpoint, with health probes,
/// ejection, site failover and retries on another endpoint. `Client(sites, **options)` takes the
/// options of `Balancer`; `Client(balancer=b)` shares an existing balancer. `request()` and
/// `get()` block with the GIL released; `arequest()` and `aget()` are awaitables for asyncio.
#[pyclass(name = "Client", module = "sidekick", frozen)]
pub(crate) struct PyClient {
    shared: Arc<Shared>,
}

#[pymethods]
impl PyClient {
    #[new]
    #[pyo3(signature = (sites = None, *, balancer = None, **options))]
    fn new(
        py: Python<'_>,
        sites: Option<&Bound<'_, PyAny>>,
        balancer: Option<&Bound<'_, PyBalancer>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let shared = match (sites.filter(|s| !s.is_none()), balancer) {
            (Some(_), Some(_)) => {
                return Err(errors::config(
                    py,
                    "balancer",
                    "give either sites (and options) or balancer=, not both",
                ))
            }
            (None, Some(b)) => {
                if options.is_some_and(|o| !o.is_empty()) {
                    return Err(errors::config(
                        py,
                        "balancer",
                        "options belong to the balancer: set them when building it",
                    ));
                }
                b.get().shared.clone()
            }
            (Some(s), None) => Shared::new(py, Spec::parse(py, s, options)?)?,
            (None, None) => {
                return Err(errors::config(
                    py,
                    "sites",
                    "no site given: add at least one",
                ))
            }
        };
        // Fail now, not at the first request, when the client cannot be built.
        shared.live(py)?.client(py)?;
        Ok(PyClient { shared })
    }

    /// The balancer behind this client.
    #[getter]
    fn balancer(&self) -> PyBalancer {
        PyBalancer {
            shared: self.shared.clone(),
        }
    }

    /// Send a request and wait for the whole response, with the GIL released.
    #[pyo3(signature = (method, url, headers = None, body = None, timeout = None))]
    fn request(
        &self,
        py: Python<'_>,
        method: &str,
        url: &str,
        headers: Option<&Bound<'_, PyAny>>,
        body: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyResponse> {
        let req = build_request(py, method, url, headers, body)?;
        let timeout = timeout_of(py, timeout)?;
        let live = self.shared.live(py)?;
        let client = live.client(py)?;
        if runtime::on_runtime_thread() {
            return Err(errors::on_runtime_thread(py, "Client.request()"));
        }
        let watch_signals = is_main_thread(py);
        let warming = live.warming();
        let result = py.detach(|| {
            live.rt().block_on(async move {
                let work = exchange(client, req, timeout, warming);
                if !watch_signals {
                    return Some(work.await);
                }
                // On the main thread, let Ctrl-C interrupt a long wait (checked every 100 ms).
                tokio::pin!(work);
                loop {
                    tokio::select! {
                        r = &mut work => return Some(r),
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {
                            let interrupted = Python::attach(|py| py.check_signals().is_err());
                            if interrupted {
                                return None;
                            }
                        }
                    }
                }
            })
        });
        match result {
            Some(Ok(raw)) => Ok(PyResponse::new(py, raw)),
            Some(Err(f)) => Err(f.into_py(py)),
            // The signal handler raised; run it again to get its exception.
            None => Err(py
                .check_signals()
                .err()
                .unwrap_or_else(|| PyKeyboardInterrupt::new_err(()))),
        }
    }

    /// `request("GET", url, ...)`.
    #[pyo3(signature = (url, headers = None, timeout = None))]
    fn get(
        &self,
        py: Python<'_>,
        url: &str,
        headers: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyResponse> {
        self.request(py, "GET", url, headers, None, timeout)
    }

    /// Like `request()`, as an awaitable for asyncio.
    #[pyo3(signature = (method, url, headers = None, body = None, timeout = None))]
    fn arequest<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        url: &str,
        headers: Option<&Bound<'py, PyAny>>,
        body: Option<&Bound<'py, PyAny>>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let req = build_request(py, method, url, headers, body)?;
        let timeout = timeout_of(py, timeout)?;
        let live = self.shared.live(py)?;
        let client = live.client(py)?;
        let warming = live.warming();
        spawn_awaitable(py, live.rt(), exchange(client, req, timeout, warming))
    }

    /// `arequest("GET", url, ...)`.
    #[pyo3(signature = (url, headers = None, timeout = None))]
    fn aget<'py>(
        &self,
        py: Python<'py>,
        url: &str,
        headers: Option<&Bound<'py, PyAny>>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.arequest(py, "GET", url, headers, None, timeout)
    }

    fn __repr__(&self) -> String {
        format!("Client([{}])", options::sites_repr(&self.shared.spec))
    }
}

// ===== the asyncio bridge =====

/// Run `work` on the runtime and return an asyncio future of the running loop that it resolves.
/// Cancelling the future aborts the task (the lease then counts as cancelled).
fn spawn_awaitable<'py, F>(
    py: Python<'py>,
    rt: &tokio::runtime::Runtime,
    work: F,
) -> PyResult<Bound<'py, PyAny>>
where
    F: std::future::Future<Output = Result<Raw, Failure>> + Send + 'static,
{
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let get_loop = GET_RUNNING_LOOP.import(py, "asyncio", "get_running_loop")?;
    let event_loop = get_loop.call0()?;
    let fut = event_loop.call_method0("create_future")?;
    let resolve = resolver(py)?;
    let loop_ref = event_loop.clone().unbind();
    let fut_ref = fut.clone().unbind();
    let generation = runtime::generation();
    let task = rt.spawn(async move {
        let result = work.await;
        if runtime::finalizing() || !runtime::is_current(generation) {
            return;
        }
        let _ = Python::try_attach(move |py| {
            let (err, value): (Py<PyAny>, Py<PyAny>) = match result {
                Ok(raw) => match Py::new(py, PyResponse::new(py, raw)) {
                    Ok(r) => (py.None(), r.into_any()),
                    Err(e) => (e.into_value(py).into_any(), py.None()),
                },
                Err(f) => (f.into_py(py).into_value(py).into_any(), py.None()),
            };
            // Fails only when the loop is closed: nobody is waiting any more.
            let _ = loop_ref.bind(py).call_method1(
                "call_soon_threadsafe",
                (resolve, fut_ref.bind(py), err, value),
            );
        });
    });
    let canceller = Py::new(
        py,
        Canceller {
            abort: task.abort_handle(),
        },
    )?;
    fut.call_method1("add_done_callback", (canceller,))?;
    Ok(fut)
}

fn resolver(py: Python<'_>) -> PyResult<Py<PyAny>> {
    static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    RESOLVE
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(wrap_pyfunction!(resolve_future, py)?.into_any().unbind())
        })
        .map(|f| f.clone_ref(py))
}

/// Set the future's result or exception unless it was cancelled meanwhile (runs in the loop).
#[pyfunction]
fn resolve_future(
    fut: &Bound<'_, PyAny>,
    err: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if fut.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    if err.is_none() {
        fut.call_method1("set_result", (value,))?;
    } else {
        fut.call_method1("set_exception", (err,))?;
    }
    Ok(())
}

/// Done-callback of an awaitable request: a cancelled future aborts the runtime task.
#[pyclass(module = "sidekick._sidekick", frozen)]
struct Canceller {
    abort: tokio::task::AbortHandle,
}

#[pymethods]
impl Canceller {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut.call_method0("cancelled")?.is_truthy()? {
            self.abort.abort();
        }
        Ok(())
    }
}

// ===== Response =====

/// A complete HTTP response.
#[pyclass(name = "Response", module = "sidekick", frozen)]
pub(crate) struct PyResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Py<PyBytes>,
}

impl PyResponse {
    fn new(py: Python<'_>, raw: Raw) -> PyResponse {
        PyResponse {
            status: raw.status,
            headers: raw.headers,
            body: PyBytes::new(py, &raw.body).unbind(),
        }
    }
}

#[pymethods]
impl PyResponse {
    /// The status code.
    #[getter]
    fn status(&self) -> u16 {
        self.status
    }

    /// True for a status below 400.
    #[getter]
    fn ok(&self) -> bool {
        self.status < 400
    }

    /// The headers, names in lower case; repeated headers joined with `, `.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.headers {
            match d.get_item(k)? {
                Some(prev) => {
                    let prev: String = prev.extract()?;
                    d.set_item(k, format!("{prev}, {v}"))?;
                }
                None => d.set_item(k, v)?,
            }
        }
        Ok(d)
    }

    /// The headers as `(name, value)` pairs, in the order received.
    #[getter]
    fn header_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items: Vec<Bound<'py, PyTuple>> = self
            .headers
            .iter()
            .map(|(k, v)| PyTuple::new(py, [k.as_str(), v.as_str()]))
            .collect::<PyResult<_>>()?;
        PyList::new(py, items)
    }

    /// The first value of a header (case-insensitive), or `default`.
    #[pyo3(signature = (name, default = None))]
    fn header(&self, name: &str, default: Option<String>) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .or(default)
    }

    /// The body.
    #[getter]
    fn body(&self, py: Python<'_>) -> Py<PyBytes> {
        self.body.clone_ref(py)
    }

    /// The body decoded as UTF-8 (invalid bytes replaced).
    #[getter]
    fn text(&self, py: Python<'_>) -> String {
        String::from_utf8_lossy(self.body.bind(py).as_bytes()).into_owned()
    }

    /// The body parsed as JSON.
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        LOADS
            .import(py, "json", "loads")?
            .call1((self.body.bind(py),))
    }

    fn __repr__(&self) -> String {
        format!("Response(status={})", self.status)
    }
}
