//! Shared fixtures for the integration tests: controllable HTTP backends on 127.0.0.1.
//!
//! Every integration-test file that says `mod support;` compiles this module on its own, so
//! helpers a given file does not use must not warn (hence the `allow(dead_code)` below).
//!
//! * [`Backend`]: a real HTTP/1.1 server (keep-alive) bound to `127.0.0.1:0`, whose answers are
//!   driven by a [`Behavior`], which counts and records what it receives, and which can be
//!   crashed ([`Backend::kill`]) and brought back on the same port ([`Backend::restart`]).
//!   Dropping it stops every task it spawned.
//! * [`load`]: a bounded concurrent load generator.
//! * [`trace_init`]: idempotent tracing output for tests (`RUST_LOG`, default `warn`).
//!
//! This module does not depend on the `sidekick` crate.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Path answered as a health probe (not counted in [`Backend::hits`], not recorded).
pub const HEALTH_PATH: &str = "/health";
/// Default length of the body of an `Ok`/`Delay` answer.
pub const DEFAULT_BODY_LEN: usize = 1024;
/// How many requests [`Backend::requests`] keeps (the most recent ones).
pub const MAX_RECORDED: usize = 256;
/// How many error strings [`LoadReport::errors`] keeps (the first ones).
pub const MAX_LOAD_ERRORS: usize = 20;

/// How long `restart` keeps trying to bind the old port: `RESTART_BIND_TRIES × RESTART_BIND_PAUSE`.
const RESTART_BIND_TRIES: u32 = 40;
const RESTART_BIND_PAUSE: Duration = Duration::from_millis(50);
/// Upper bound on how long `kill` waits for the aborted tasks to be gone.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// How a [`Backend`] answers requests that are not health probes.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// 200 with a body of `body_len` bytes (default 1024) and header `x-backend: <name>`.
    /// The body starts with the backend name and is padded with `b'x'`.
    Ok,
    /// Answer at once with this status (e.g. 503), small body (`"<name> <status>"`).
    Status(u16),
    /// Sleep this long (tokio::time::sleep) before answering 200 (same answer as `Ok`).
    Delay(Duration),
    /// Accept the connection and read the request but never answer (hold it until killed/dropped).
    Hang,
}

/// A request a [`Backend`] received (health probes are not recorded).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// Path and query, e.g. `/bucket/key?x=1`.
    pub uri: String,
    /// The `Host` header value, if any (and valid UTF-8/visible ASCII).
    pub host: Option<String>,
    /// The full request body.
    pub body: Bytes,
    pub headers: HeaderMap,
}

/// State shared between the handle and the server tasks.
struct Shared {
    name: String,
    behavior: Mutex<Behavior>,
    body_len: AtomicUsize,
    health_status: AtomicU16,
    hits: AtomicU64,
    health_hits: AtomicU64,
    connections: AtomicU64,
    open_connections: AtomicUsize,
    requests: Mutex<VecDeque<Recorded>>,
}

/// One serving generation (between a start/restart and a kill).
struct Running {
    accept: JoinHandle<()>,
    /// Set before aborting: the connections' sockets then close with RST (zero linger).
    killed: Arc<AtomicBool>,
}

/// A controllable HTTP/1.1 backend on `127.0.0.1`. Dropping it stops everything it spawned.
///
/// Not `Clone`: share it with `Arc<Backend>` if several tasks need it.
pub struct Backend {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<Running>>,
    /// Serialises `kill` and `restart`.
    lifecycle: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn check_status(name: &str, status: u16) -> StatusCode {
    match StatusCode::from_u16(status) {
        Ok(s) => s,
        Err(_) => panic!("backend {name}: {status} is not a valid HTTP status code"),
    }
}

fn check_behavior(name: &str, b: &Behavior) {
    if let Behavior::Status(s) = b {
        check_status(name, *s);
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Backend {
    /// Start a backend named `name` (used in x-backend header and body prefix) on 127.0.0.1:0.
    pub async fn start(name: &str, behavior: Behavior) -> Backend {
        Backend::start_at(name, behavior, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Like [`Backend::start`], on a given loopback address (e.g. `127.0.0.2:PORT`, to serve one
    /// port on several addresses).
    pub async fn start_at(name: &str, behavior: Behavior, at: SocketAddr) -> Backend {
        assert!(at.ip().is_loopback(), "tests bind loopback only, not {at}");
        check_behavior(name, &behavior);
        let listener = match bind(at) {
            Ok(l) => l,
            Err(e) => panic!("backend {name}: cannot bind {at}: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("backend {name}: no local address: {e}"),
        };
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            behavior: Mutex::new(behavior),
            body_len: AtomicUsize::new(DEFAULT_BODY_LEN),
            health_status: AtomicU16::new(200),
            hits: AtomicU64::new(0),
            health_hits: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            open_connections: AtomicUsize::new(0),
            requests: Mutex::new(VecDeque::new()),
        });
        let running = serve(listener, shared.clone());
        Backend {
            shared,
            addr,
            server: Mutex::new(Some(running)),
            lifecycle: tokio::sync::Mutex::new(()),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"http://127.0.0.1:PORT"` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Requests served that were NOT health probes (path != health path). Counted when the
    /// request arrives (before its body is read and before any delay/hang).
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Requests to [`HEALTH_PATH`], counted when they arrive.
    pub fn health_hits(&self) -> u64 {
        self.shared.health_hits.load(Ordering::SeqCst)
    }

    /// Set both `hits` and `health_hits` back to 0 (recorded requests are kept; see
    /// [`Backend::clear_requests`]).
    pub fn reset_hits(&self) {
        self.shared.hits.store(0, Ordering::SeqCst);
        self.shared.health_hits.store(0, Ordering::SeqCst);
    }

    /// TCP connections accepted since start (over all restarts). Handy to check keep-alive.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Applies to requests that arrive afterwards (and to ones whose body is still being read).
    pub fn set_behavior(&self, b: Behavior) {
        check_behavior(&self.shared.name, &b);
        *lock(&self.shared.behavior) = b;
    }

    pub fn behavior(&self) -> Behavior {
        lock(&self.shared.behavior).clone()
    }

    /// Length of `Ok`/`Delay` bodies. The body always holds at least the whole name, so the
    /// actual length is `max(n, name.len())`.
    pub fn set_body_len(&self, n: usize) {
        self.shared.body_len.store(n, Ordering::SeqCst);
    }

    /// Status returned on the health path `/health` (default 200). Health answers ignore
    /// Behavior, except that a killed backend answers nothing.
    pub fn set_health_status(&self, status: u16) {
        check_status(&self.shared.name, status);
        self.shared.health_status.store(status, Ordering::SeqCst);
    }

    /// Crash it: stop accepting, drop the listener, and abort every open connection task
    /// (their sockets are closed with RST) so clients see resets / refused connections.
    /// Afterwards connecting to addr() is refused. Does nothing if it is not running.
    /// Returns once the listener and the connections are gone (waits at most ~2 s).
    pub async fn kill(&self) {
        let _guard = self.lifecycle.lock().await;
        let running = lock(&self.server).take();
        let Some(running) = running else { return };
        running.killed.store(true, Ordering::SeqCst);
        running.accept.abort();
        // The accept task owns the listener and the JoinSet of connection tasks; once it is
        // gone, the listener is closed and every connection task has been told to abort.
        let _ = tokio::time::timeout(KILL_WAIT, running.accept).await;
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        while self.shared.open_connections.load(Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Bind the SAME port again and serve with the current behaviour. Retries the bind for at
    /// most 2 s (40 × 50 ms) if the port is briefly unavailable, then panics. Does nothing if
    /// it is already running.
    pub async fn restart(&self) {
        let _guard = self.lifecycle.lock().await;
        if self.is_running() {
            return;
        }
        let mut last_err = None;
        for attempt in 0..RESTART_BIND_TRIES {
            match bind(self.addr) {
                Ok(listener) => {
                    let running = serve(listener, self.shared.clone());
                    *lock(&self.server) = Some(running);
                    return;
                }
                Err(e) => {
                    last_err = Some(e);
                    if attempt + 1 < RESTART_BIND_TRIES {
                        tokio::time::sleep(RESTART_BIND_PAUSE).await;
                    }
                }
            }
        }
        panic!(
            "backend {}: could not bind {} again within {:?} ({} tries): {}",
            self.shared.name,
            self.addr,
            RESTART_BIND_PAUSE * RESTART_BIND_TRIES,
            RESTART_BIND_TRIES,
            last_err.map_or_else(|| "no error recorded".to_owned(), |e| e.to_string()),
        );
    }

    pub fn is_running(&self) -> bool {
        lock(&self.server).is_some()
    }

    /// The recorded requests that were not health probes, most recent last (the last 256).
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).iter().cloned().collect()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let server = self.server.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = server.take() {
            running.killed.store(true, Ordering::SeqCst);
            // Dropping the accept task's future drops the listener and its JoinSet, which
            // aborts every connection task.
            running.accept.abort();
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .field("running", &self.is_running())
            .field("behavior", &self.behavior())
            .field("hits", &self.hits())
            .field("health_hits", &self.health_hits())
            .finish()
    }
}

/// Spawn the accept loop for one serving generation.
fn serve(listener: TcpListener, shared: Arc<Shared>) -> Running {
    let killed = Arc::new(AtomicBool::new(false));
    let killed_for_task = killed.clone();
    let accept = tokio::spawn(async move {
        // Owned here: when this task is aborted the set is dropped and aborts every connection.
        let mut conns: JoinSet<()> = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _peer)) => stream,
                        Err(e) => {
                            // E.g. EMFILE: back off briefly instead of spinning.
                            tracing::warn!(backend = %shared.name, error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let guard = OpenConn::new(shared.clone());
                    let io = KillableStream { inner: stream, killed: killed_for_task.clone() };
                    let shared = shared.clone();
                    conns.spawn(async move {
                        let _guard = guard;
                        let service = hyper::service::service_fn(move |req| {
                            handle(shared.clone(), req)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(io), service)
                            .await;
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Running { accept, killed }
}

/// Counts a connection as open until its task (or its never-started future) is dropped.
struct OpenConn(Arc<Shared>);

impl OpenConn {
    fn new(shared: Arc<Shared>) -> Self {
        shared.open_connections.fetch_add(1, Ordering::SeqCst);
        OpenConn(shared)
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A TCP stream that, when dropped after a kill, closes with RST instead of FIN.
struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

impl Drop for KillableStream {
    fn drop(&mut self) {
        if self.killed.load(Ordering::SeqCst) {
            // Zero linger never blocks: the close discards buffered data and sends RST.
            #[allow(deprecated)]
            let _ = self.inner.set_linger(Some(Duration::ZERO));
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn response(shared: &Shared, status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&shared.name) {
        resp.headers_mut().insert("x-backend", v);
    }
    resp
}

fn ok_response(shared: &Shared) -> Response<Full<Bytes>> {
    let len = shared
        .body_len
        .load(Ordering::SeqCst)
        .max(shared.name.len());
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(shared.name.as_bytes());
    body.resize(len, b'x');
    response(shared, StatusCode::OK, Bytes::from(body))
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let is_health = req.uri().path() == HEALTH_PATH;
    if is_health {
        shared.health_hits.fetch_add(1, Ordering::SeqCst);
    } else {
        shared.hits.fetch_add(1, Ordering::SeqCst);
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let msg = format!("{} could not read the request body: {e}", shared.name);
            return Ok(response(&shared, StatusCode::BAD_REQUEST, Bytes::from(msg)));
        }
    };

    if is_health {
        let status = StatusCode::from_u16(shared.health_status.load(Ordering::SeqCst))
            .unwrap_or(StatusCode::OK);
        let msg = format!("{} health {}", shared.name, status.as_u16());
        return Ok(response(&shared, status, Bytes::from(msg)));
    }

    let recorded = Recorded {
        method: parts.method,
        uri: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        host: parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned),
        body,
        headers: parts.headers,
    };
    {
        let mut requests = lock(&shared.requests);
        while requests.len() >= MAX_RECORDED {
            requests.pop_front();
        }
        requests.push_back(recorded);
    }

    let behavior = lock(&shared.behavior).clone();
    match behavior {
        Behavior::Ok => Ok(ok_response(&shared)),
        Behavior::Status(s) => {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let msg = format!("{} {}", shared.name, status.as_u16());
            Ok(response(&shared, status, Bytes::from(msg)))
        }
        Behavior::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(ok_response(&shared))
        }
        Behavior::Hang => {
            // Held until the connection task is aborted (kill/drop).
            let never: Infallible = std::future::pending().await;
            match never {}
        }
    }
}

/// Outcome of [`load`].
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: u64,
    pub failed: u64,
    /// The first [`MAX_LOAD_ERRORS`] (20) error strings, in the order they happened.
    pub errors: Vec<String>,
}

/// Run `workers` concurrent tasks, each calling `f(worker_index, iteration)` `per_worker` times
/// (or until `deadline` elapses, whichever first). Returns counts and the first 20 error strings.
///
/// A call still running when the deadline elapses is cancelled and counted as failed. A panic in
/// `f` or its future is propagated. Dropping the returned future aborts all workers.
pub async fn load<F, Fut, E>(
    workers: usize,
    per_worker: usize,
    deadline: Duration,
    f: F,
) -> LoadReport
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + 'static,
{
    struct Tally {
        ok: AtomicU64,
        failed: AtomicU64,
        errors: Mutex<Vec<String>>,
    }
    impl Tally {
        fn fail(&self, msg: impl FnOnce() -> String) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            let mut errors = lock(&self.errors);
            if errors.len() < MAX_LOAD_ERRORS {
                errors.push(msg());
            }
        }
    }

    let f = Arc::new(f);
    let tally = Arc::new(Tally {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
    });
    let end = tokio::time::Instant::now() + deadline;
    let mut set = JoinSet::new();
    for worker in 0..workers {
        let f = f.clone();
        let tally = tally.clone();
        set.spawn(async move {
            for iteration in 0..per_worker {
                if tokio::time::Instant::now() >= end {
                    break;
                }
                match tokio::time::timeout_at(end, f(worker, iteration)).await {
                    Ok(Ok(())) => {
                        tally.ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Err(e)) => tally.fail(|| e.to_string()),
                    Err(_) => {
                        tally.fail(|| "load deadline elapsed before the call finished".to_owned());
                        break;
                    }
                }
            }
        });
    }
    while let Some(joined) = set.join_next().await {
        if let Err(e) = joined {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    let errors = std::mem::take(&mut *lock(&tally.errors));
    LoadReport {
        ok: tally.ok.load(Ordering::SeqCst),
        failed: tally.failed.load(Ordering::SeqCst),
        errors,
    }
}

/// Install a tracing-subscriber fmt writer for tests (`with_test_writer`, filter from
/// `RUST_LOG`, default `warn`). Idempotent: later calls (and other installed subscribers) are
/// left alone.
pub fn trace_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(filter)
        .try_init();
}
pub mod adversary;
pub mod cache;
pub mod recorded;
pub mod s3;
pub mod sidecar;
