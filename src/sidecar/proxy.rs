//! The request handler: sidekick's own endpoints, and the reverse proxy over the balancing
//! service.
//!
//! Proxying keeps the method, the path and query byte for byte, the body (streamed both ways,
//! never buffered whole) and the client's `Host` (S3 signatures cover it). Hop-by-hop headers
//! are removed in both directions (those named by `Connection` too), `Te: trailers` and the
//! `Trailer` announcement are kept so trailers pass; `X-Forwarded-For`, `X-Forwarded-Host` and
//! `X-Real-Ip` are set once each. An `Upgrade` request (WebSocket) is tunnelled when the backend
//! answers `101`. Every attempt goes through the engine's retrying service, so a refused
//! connection or a 502/503/504 on an idempotent request is retried on another endpoint.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower_layer::Layer;
use tower_service::Service;

use super::console::{Console, TraceRecord};
use super::format::xml_text;
use super::metrics::{self, authority_of, EpStats, Registry};
use crate::cache::{Cache, CacheLayer, CacheService, RequestBody, ResponseBody};
use crate::error::BoxError;
use crate::service::{RetryBody, Sidekick};
use crate::transport::Connector;
use crate::Balancer;

/// Largest read/write buffer of one connection, both sides (client and backend).
pub const BUF_SIZE: usize = 64 * 1024;

/// The path of the aggregate health check.
pub const HEALTH_PATH: &str = "/v1/health";
/// The path of the Prometheus metrics.
pub const METRICS_PATH: &str = "/.prometheus/metrics";
/// The path serving the `--auto-tls-host` certificate.
pub const CERTIFICATES_PATH: &str = "/v1/certificates";

const SERVER: HeaderValue = HeaderValue::from_static("SideKick");
const X_PROXY: HeaderName = HeaderName::from_static("x-proxy");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

// ===== bodies =====

/// How far the client's request body got: stamped by [`RxBody`], read by each attempt so that
/// the wait for the response head is measured from the last byte the client sent, and never
/// runs while the sidecar is waiting on the client (that wait is the client's, bounded by
/// `body_timeout`).
#[derive(Debug)]
struct Upload {
    origin: Instant,
    /// Milliseconds from `origin` to the last frame of the body (or its end).
    last_ms: AtomicU64,
    /// True while the body waits for the client to send more.
    waiting: AtomicBool,
}

impl Upload {
    fn new() -> Arc<Upload> {
        Arc::new(Upload {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
        })
    }

    fn stamp(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
        self.waiting.store(false, Ordering::Relaxed);
    }

    /// When the backend's silence since the later of `since` and the last body byte reaches
    /// `timeout`; `None` while the client owes us body bytes.
    fn deadline(&self, since: Instant, timeout: Duration) -> Option<Instant> {
        if self.waiting.load(Ordering::Relaxed) {
            return None;
        }
        let last = self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(last.max(since) + timeout)
    }
}

/// What every attempt of one request needs to bound its wait for the response head; travels
/// in the request's extensions (the engine copies them to each attempt).
#[derive(Clone, Debug)]
struct HeadWatch {
    upload: Arc<Upload>,
    timeout: Duration,
}

/// A body that stayed silent too long: the client's request body (`body_timeout`) or the
/// backend's response body (`response_timeout`).
#[derive(Debug)]
struct Silence {
    /// True for the client's request body.
    client: bool,
    after: Duration,
}

impl std::fmt::Display for Silence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (who, what) = if self.client {
            ("client", "request")
        } else {
            ("backend", "response")
        };
        write!(
            f,
            "the {who} sent no {what} body bytes for {}",
            super::flags::describe(self.after)
        )
    }
}

impl std::error::Error for Silence {}

/// A bound on one side's silence. The clock starts when a read first finds nothing after
/// data (not at the data itself): time the peer spent waiting on us, because we were not
/// reading, is not counted as its silence.
#[derive(Debug)]
struct Idle {
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl Idle {
    fn new(timeout: Duration) -> Idle {
        Idle {
            timeout,
            sleep: None,
            armed: false,
        }
    }

    /// Data arrived: the silence is over.
    fn data(&mut self) {
        self.armed = false;
    }

    /// A read found nothing: true once the silence has lasted `timeout` (else the task is
    /// woken when it will have).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            self.armed = true;
            let deadline = tokio::time::Instant::now() + self.timeout;
            match &mut self.sleep {
                Some(s) => s.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        self.sleep
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }
}

/// The request body sent to a backend: the client's stream, counted, with an idle bound.
/// Its errors are the client's (`Kind::Body`): the engine neither blames nor retries the
/// endpoint for them.
#[derive(Debug)]
pub struct RxBody {
    inner: Incoming,
    /// Bytes read, when the length is not declared (chunked uploads).
    counted: Option<Arc<AtomicU64>>,
    upload: Arc<Upload>,
    idle: Idle,
}

impl Body for RxBody {
    type Data = Bytes;
    type Error = crate::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some(c)) = (f.data_ref(), &this.counted) {
                    c.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                this.upload.stamp();
                this.idle.data();
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.upload.stamp();
                Poll::Ready(Some(Err(
                    crate::Error::new(crate::error::Kind::Body).with_source(e)
                )))
            }
            Poll::Ready(None) => {
                this.upload.stamp();
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.upload.waiting.store(true, Ordering::Relaxed);
                if !this.idle.expired(cx) {
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(crate::Error::new(crate::error::Kind::Body)
                    .with_source(Silence {
                        client: true,
                        after: this.idle.timeout,
                    }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What finishing an answer records: statistics and the trace line. Runs when the body is
/// dropped (after its last byte, or when the client went away).
struct Completion {
    stats: Option<Arc<EpStats>>,
    start: Instant,
    status: u16,
    rx_head: u64,
    rx_declared: u64,
    rx_counted: Option<Arc<AtomicU64>>,
    tx: u64,
    trace: Option<Box<TraceCtx>>,
}

struct TraceCtx {
    console: Arc<Console>,
    time: SystemTime,
    ttfb: Duration,
    endpoint: String,
    client: String,
    method: String,
    path: String,
    query: String,
    req_headers: Option<HeaderMap>,
    resp_headers: Option<HeaderMap>,
    error_body: Option<String>,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let latency = self.start.elapsed();
        let rx = self.rx_head
            + self
                .rx_counted
                .as_ref()
                .map_or(self.rx_declared, |c| c.load(Ordering::Relaxed));
        if let Some(s) = &self.stats {
            s.record(self.status, rx, self.tx, latency);
        }
        if let Some(t) = &self.trace {
            t.console.trace(&TraceRecord {
                time: t.time,
                end: SystemTime::now(),
                endpoint: &t.endpoint,
                client: &t.client,
                method: &t.method,
                path: &t.path,
                query: &t.query,
                status: self.status,
                rx,
                tx: self.tx,
                latency,
                ttfb: t.ttfb,
                req_headers: t.req_headers.as_ref(),
                resp_headers: t.resp_headers.as_ref(),
                error_body: t.error_body.as_deref(),
            });
        }
    }
}

enum Inner {
    Full(Option<Bytes>),
    Stream(ResponseBody<Incoming>),
}

/// A backend whose response body stalled for `response_timeout`: counted against it as a
/// missed response head is (a failure, and passive ejection for `timeout` within the bound),
/// although its lease was finished when the head arrived. The endpoint is the one whose URL
/// or identifier matches.
pub(crate) fn report_stall(balancer: &Balancer, url: Option<&str>, id: Option<u64>) {
    balancer.report_after(url, id, crate::Outcome::Timeout);
}

/// The body of every answer the sidecar sends.
pub struct ProxyBody {
    inner: Inner,
    /// The bound on the backend's silence, for streamed answers, and the configuration whose
    /// balancer hears of a stall.
    idle: Option<(Idle, Arc<Generation>)>,
    done: Option<Completion>,
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyBody").finish_non_exhaustive()
    }
}

impl ProxyBody {
    fn full(b: impl Into<Bytes>) -> ProxyBody {
        let b = b.into();
        ProxyBody {
            inner: Inner::Full((!b.is_empty()).then_some(b)),
            idle: None,
            done: None,
        }
    }

    fn empty() -> ProxyBody {
        ProxyBody {
            inner: Inner::Full(None),
            idle: None,
            done: None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let r = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(s) => match (Pin::new(s).poll_frame(cx), &mut this.idle) {
                (Poll::Pending, None) => Poll::Pending,
                (Poll::Pending, Some((idle, gen))) => {
                    if idle.expired(cx) {
                        if let Some(stats) = this.done.as_ref().and_then(|d| d.stats.as_ref()) {
                            report_stall(&gen.balancer, Some(&stats.url), None);
                        }
                        // The client's connection is cut: a truncated answer must not look
                        // complete.
                        Poll::Ready(Some(Err(Box::new(Silence {
                            client: false,
                            after: idle.timeout,
                        }) as BoxError)))
                    } else {
                        Poll::Pending
                    }
                }
                (r, idle) => {
                    if let Some((idle, _)) = idle {
                        idle.data();
                    }
                    r
                }
            },
        };
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some(done)) = (f.data_ref(), &mut this.done) {
                    done.tx += d.len() as u64;
                }
            }
            Poll::Ready(None) => {
                // The answer is complete: record it now rather than when hyper drops the body.
                this.done.take();
            }
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Stream(s) => s.size_hint(),
        }
    }
}

// ===== one attempt =====

/// Marks a backend's answer with the statistics of the endpoint that gave it.
#[derive(Clone)]
struct Served(Arc<EpStats>);

/// The body of one attempt: the client's (or the cache's own, empty), replayable by the
/// retrying layer.
type AttemptBody = RetryBody<RequestBody<RxBody>>;

/// The inner service of the engine's retrying layer: one attempt through the pooled HTTP/1.1
/// client, tagged with the endpoint's statistics.
#[derive(Clone)]
pub struct Attempt {
    client: HyperClient<Connector, AttemptBody>,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt").finish_non_exhaustive()
    }
}

pin_project_lite::pin_project! {
    /// The future of one [`Attempt`]: the response head, within `response_timeout` of the
    /// request's last body byte.
    pub struct AttemptFuture {
        #[pin]
        inner: hyper_util::client::legacy::ResponseFuture,
        stats: Option<Arc<EpStats>>,
        watch: Option<HeadWatch>,
        start: Instant,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl Future for AttemptFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(r) = this.inner.poll(cx) {
            let mut resp = r?;
            if let Some(s) = this.stats.take() {
                resp.extensions_mut().insert(Served(s));
            }
            return Poll::Ready(Ok(resp));
        }
        let Some(watch) = this.watch.as_ref() else {
            return Poll::Pending;
        };
        // Bounded: after a reset the deadline is in the future, so the sleep is pending.
        for _ in 0..3 {
            let first = watch
                .upload
                .deadline(*this.start, watch.timeout)
                .unwrap_or_else(|| Instant::now() + watch.timeout);
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(first.into())));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            match watch.upload.deadline(*this.start, watch.timeout) {
                Some(d) if d <= now => {
                    let e = crate::Error::new(crate::error::Kind::Timeout).with_source(format!(
                        "no response within {}",
                        super::flags::describe(watch.timeout)
                    ));
                    return Poll::Ready(Err(Box::new(e)));
                }
                // Body bytes went out since: the backend's silence starts again from them.
                Some(d) => sleep.as_mut().reset(d.into()),
                // The client owes body bytes: its own bound (`body_timeout`) applies.
                None => sleep.as_mut().reset((now + watch.timeout).into()),
            }
        }
        Poll::Pending
    }
}

impl Service<Request<AttemptBody>> for Attempt {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = AttemptFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<AttemptBody>) -> AttemptFuture {
        let stats = req
            .uri()
            .authority()
            .and_then(|a| self.registry.get(a.as_str()));
        let watch = req.extensions().get::<HeadWatch>().cloned();
        AttemptFuture {
            inner: self.client.request(req),
            stats,
            watch,
            start: Instant::now(),
            sleep: None,
        }
    }
}

/// One configuration's worth of balancing: the balancer, the retrying service over the pooled
/// client (behind the shared cache, when there is one), and the statistics. SIGHUP builds a
/// new one and swaps it in.
pub struct Generation {
    /// The balancer.
    pub balancer: Balancer,
    /// Statistics of its endpoints.
    pub registry: Arc<Registry>,
    svc: CacheService<Sidekick<Attempt>>,
    warming: AtomicBool,
    /// How the forwarding loop reaches the backends (and its per-thread idle pools).
    pub(crate) connect: super::forward::pool::Connect,
    /// Largest request body buffered so that it can be sent again (the engine's setting).
    pub(crate) retry_buffer: usize,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("balancer", &self.balancer)
            .finish_non_exhaustive()
    }
}

impl Generation {
    /// Wrap a built balancer (whose events feed `registry`) with the proxy's client.
    pub fn new(balancer: Balancer, registry: Arc<Registry>) -> Result<Generation, crate::Error> {
        let core = &balancer.core;
        let cfg = &core.cfg;
        let conn = {
            let _guard = core.runtime.enter();
            crate::transport::connector(cfg.connect_timeout, cfg.tls.clone(), core.names.clone())?
        };
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .http1_max_buf_size(BUF_SIZE)
            .build(conn);
        registry.sync(&balancer.endpoints());
        let tls = match cfg.tls.clone() {
            Some(t) => t,
            None => std::sync::Arc::new(crate::transport::default_tls_config()?),
        };
        let connect = super::forward::pool::Connect::new(
            cfg.connect_timeout,
            cfg.pool_idle_timeout,
            cfg.pool_max_idle_per_host,
            Some(tls),
            core.names.clone(),
        );
        let retry_buffer = cfg.retry.buffer;
        let attempt = Attempt {
            client,
            registry: registry.clone(),
        };
        Ok(Generation {
            svc: CacheLayer::disabled().layer(Sidekick::new(balancer.clone(), attempt)),
            balancer,
            registry,
            warming: AtomicBool::new(true),
            connect,
            retry_buffer,
        })
    }

    /// Serve GET and HEAD through this shared cache (`SIDEKICK_CACHE_*`).
    pub fn with_cache(mut self, cache: Cache) -> Generation {
        self.svc = CacheLayer::new(cache).layer(self.svc.into_inner());
        self
    }

    /// The shared cache, when there is one.
    pub fn cache(&self) -> Option<&Cache> {
        self.svc.cache()
    }

    /// Wait (at most `timeout`) until the balancer is ready; afterwards requests no longer wait
    /// for the first probes.
    pub async fn warm_up(&self, timeout: Duration) {
        let _ = self.balancer.ready(timeout).await;
        self.warming.store(false, Ordering::Release);
    }

    /// True until [`Generation::warm_up`] finished.
    pub fn is_warming(&self) -> bool {
        self.warming.load(Ordering::Acquire)
    }
}

// ===== the handler =====

/// Everything the handler needs; shared by every connection.
pub struct Shared {
    /// The balancing configuration in force.
    pub generation: arc_swap::ArcSwap<Generation>,
    /// Where traces go.
    pub console: Arc<Console>,
    /// The `--auto-tls-host` certificate, served at `/v1/certificates`.
    pub certificate_pem: Option<String>,
    /// This host's address, sent as the client address for loopback clients (as sidekick does,
    /// so that backends log a real address).
    pub host_ip: Option<IpAddr>,
    /// How long a request arriving before the first probe verdicts waits for them.
    pub warm_wait: Duration,
    /// `--response-timeout`: the longest a backend may stay silent, before its response head
    /// (counted from the request's last body byte) and between two reads of its response body.
    /// A missed head counts as [`Outcome::Timeout`](crate::Outcome::Timeout) against the
    /// endpoint, an idempotent request goes to another endpoint, and the client gets `504` when
    /// none answered; a stalled body cuts the client's connection.
    pub response_timeout: Duration,
    /// `--body-timeout`: the longest the client may stay silent between two reads of its
    /// request body; it then gets `408`, and nothing is counted against the endpoint.
    pub body_timeout: Duration,
    /// Upgraded connections (WebSocket tunnels), so shutdown can wait for them too.
    pub tunnels: tokio_util::task::TaskTracker,
    /// Set when the server is shutting down.
    pub draining: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The BackendDown error sidekick answers with when no backend could serve a request.
pub fn backend_down_body(message: &str, resource: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>BackendDown</Code><Message>The remote server returned an error ({})</Message><Resource>{}</Resource></Error>",
        xml_text(message),
        xml_text(resource)
    )
}

fn bad_gateway(body: String) -> Response<ProxyBody> {
    let mut r = xml_error(StatusCode::BAD_GATEWAY, body);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("120"));
    r
}

/// An XML error answer of sidekick's shape.
fn xml_error(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    h.insert(header::SERVER, SERVER);
    r
}

/// An S3-style error body: `<Error><Code>..</Code><Message>..</Message><Resource>..`.
fn s3_error_body(code: &str, message: &str, resource: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{}</Message><Resource>{}</Resource></Error>",
        xml_text(message),
        xml_text(resource)
    )
}

/// The answer to a request whose own body failed (malformed chunk, shorter than its
/// `Content-Length`, too slow): `408` when it stalled, `400` otherwise, and the connection is
/// closed (its framing can no longer be trusted). Nothing of it is the backend's fault.
fn client_body_error(e: &crate::Error, resource: &str) -> (Response<ProxyBody>, String) {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut timed_out = false;
    while let Some(c) = cur {
        if c.downcast_ref::<Silence>().is_some_and(|s| s.client) {
            timed_out = true;
            break;
        }
        cur = c.source();
    }
    let (status, code) = if timed_out {
        (StatusCode::REQUEST_TIMEOUT, "RequestTimeout")
    } else {
        (StatusCode::BAD_REQUEST, "IncompleteBody")
    };
    let body = s3_error_body(code, &chain(e), resource);
    let mut r = xml_error(status, body.clone());
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    (r, body)
}

/// A request the sidecar refuses before proxying it: `400`, connection closed.
fn bad_request(why: &str) -> Response<ProxyBody> {
    let mut r = text(StatusCode::BAD_REQUEST, "");
    *r.body_mut() = ProxyBody::full(format!("400 Bad Request: {why}\n"));
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host`, whose value is a valid
/// `uri-host [":" port]`. The reason, when the request breaks the rule.
fn host_problem<B>(req: &Request<B>) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let Some(host) = hosts.next() else {
        return (req.version() == http::Version::HTTP_11).then_some("missing Host header");
    };
    if hosts.next().is_some() {
        return Some("more than one Host header");
    }
    let v = host.as_bytes();
    if v.is_empty() {
        // Allowed when the target has no authority (RFC 9112 §3.2).
        return None;
    }
    if !valid_host(v) {
        return Some("invalid Host header");
    }
    None
}

/// `uri-host [":" port]` (RFC 3986 §3.2.2): a bracketed IP literal or a reg-name of
/// unreserved, percent-encoded and sub-delim characters, then an optional decimal port.
fn valid_host(v: &[u8]) -> bool {
    let (host_ok, rest) = if v.first() == Some(&b'[') {
        match v.iter().position(|&b| b == b']') {
            Some(end) => (
                v[1..end].iter().all(|&b| {
                    b.is_ascii_hexdigit() || b":.%-_~".contains(&b) || b.is_ascii_alphanumeric()
                }),
                &v[end + 1..],
            ),
            None => return false,
        }
    } else {
        let end = v.iter().position(|&b| b == b':').unwrap_or(v.len());
        let name = &v[..end];
        let ok = name.iter().enumerate().all(|(i, &b)| {
            b.is_ascii_alphanumeric()
                || b"-._~!$&'()*+,;=".contains(&b)
                || (b == b'%'
                    && name.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && name.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        });
        (ok, &v[end..])
    };
    let port_ok = match rest.split_first() {
        None => true,
        Some((b':', port)) => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    host_ok && port_ok
}

/// An error and its causes on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let part = s.to_string();
        if !msg.contains(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        cur = s.source();
    }
    msg
}

/// Whether a header value lists `token` (comma-separated, case-insensitive).
fn has_token(v: &HeaderValue, token: &str) -> bool {
    v.to_str()
        .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        .unwrap_or(false)
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1), those named in `Connection` included.
/// `Te: trailers` survives on requests (unless `Connection` names `TE`); the `Trailer`
/// announcement is end-to-end here (hyper only sends announced trailers).
fn strip_hop_by_hop(h: &mut HeaderMap, request: bool) {
    let te_trailers = request
        && !h
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "te"))
        && h.get_all(header::TE)
            .iter()
            .any(|v| has_token(v, "trailers"));
    crate::hop::strip_hop_by_hop(h, true);
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

fn header_bytes(h: &HeaderMap) -> u64 {
    h.iter()
        .map(|(k, v)| (k.as_str().len() + v.len()) as u64)
        .sum()
}

/// sidekick's count of a response head: `"<code> <text>\n"` and `"<name>: <value>\n"` for the
/// first value of each header.
fn response_head_bytes(status: StatusCode, h: &HeaderMap) -> u64 {
    let line = 3 + 1 + status.canonical_reason().map_or(0, str::len) + 1;
    let headers: usize = h
        .keys()
        .map(|k| k.as_str().len() + 2 + h.get(k).map_or(0, |v| v.len()) + 1)
        .sum();
    (line + headers) as u64
}

/// The client's address as traces show it: the first `X-Forwarded-For` entry, `X-Real-Ip`, or
/// the peer.
fn trace_client(h: &HeaderMap, peer: IpAddr) -> String {
    if let Some(v) = h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        if let Some(first) = v.split(',').next().map(str::trim).filter(|s| !s.is_empty()) {
            return first.to_string();
        }
    }
    if let Some(v) = h.get(&X_REAL_IP).and_then(|v| v.to_str().ok()) {
        return v.trim().to_string();
    }
    peer.to_string()
}

impl Shared {
    pub(crate) fn client_ip(&self, peer: IpAddr) -> IpAddr {
        match self.host_ip {
            Some(ip) if peer.is_loopback() => ip,
            _ => peer,
        }
    }

    fn health(&self) -> Response<ProxyBody> {
        let gen = self.generation.load();
        if gen.balancer.is_available() {
            let mut r = Response::new(ProxyBody::empty());
            r.headers_mut().insert(header::SERVER, SERVER);
            r
        } else {
            bad_gateway(backend_down_body(
                "all backend servers are offline",
                HEALTH_PATH,
            ))
        }
    }

    fn metrics(&self) -> Response<ProxyBody> {
        let gen = self.generation.load();
        let mut body = metrics::render(&gen.registry, &gen.balancer.endpoints());
        if let Some(cache) = gen.cache() {
            body.push_str(&cache.metrics().to_prometheus());
        }
        let mut r = Response::new(ProxyBody::full(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }
}

/// Handle one request.
pub async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    if let Some(why) = host_problem(&req) {
        return Ok(bad_request(why));
    }
    let path = req.uri().path();
    if path == METRICS_PATH {
        return Ok(shared.metrics());
    }
    if path == CERTIFICATES_PATH && req.method() == http::Method::GET {
        return Ok(match &shared.certificate_pem {
            Some(pem) => {
                let mut r = Response::new(ProxyBody::full(pem.clone()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
            None => text(StatusCode::NOT_FOUND, "no configured certificates found\n"),
        });
    }
    if path == HEALTH_PATH {
        return Ok(shared.health());
    }
    if !path.starts_with('/') || req.method() == http::Method::CONNECT {
        return Ok(text(StatusCode::NOT_FOUND, "404 page not found\n"));
    }
    Ok(proxy(shared, peer, req).await)
}

async fn proxy(
    shared: Arc<Shared>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let gen = shared.generation.load_full();
    let console = &shared.console;

    // An upgrade (WebSocket): remember its protocol and take the client side of the tunnel.
    let upgrade = match (
        req.headers().get(header::UPGRADE),
        req.headers().get(header::CONNECTION),
    ) {
        (Some(u), Some(c)) if has_token(c, "upgrade") => Some(u.clone()),
        _ => None,
    };
    let client_side = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

    let tracing = console.tracing();
    let trace = tracing.then(|| {
        Box::new(TraceCtx {
            console: console.clone(),
            time: SystemTime::now(),
            ttfb: Duration::ZERO,
            endpoint: String::new(),
            client: trace_client(req.headers(), peer.ip()),
            method: req.method().as_str().to_string(),
            path: req.uri().path().to_string(),
            query: req.uri().query().unwrap_or_default().to_string(),
            req_headers: console.opts.debug.then(|| req.headers().clone()),
            resp_headers: None,
            error_body: None,
        })
    });

    let (mut parts, body) = req.into_parts();
    let rx_head = header_bytes(&parts.headers);
    let rx_declared = body.size_hint().exact();
    let rx_counted = match rx_declared {
        Some(_) => None,
        None => Some(Arc::new(AtomicU64::new(0))),
    };
    let resource = parts.uri.path().to_string();

    let h = &mut parts.headers;
    // RFC 9112 §3.2.2: the authority of an absolute-form target replaces Host.
    if let Some(a) = parts.uri.authority() {
        if let Ok(v) = HeaderValue::from_str(a.as_str()) {
            h.insert(header::HOST, v);
        }
    }
    strip_hop_by_hop(h, true);
    if let Some(u) = &upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, u.clone());
    }
    let ip = shared.client_ip(peer.ip());
    let ip_text = ip.to_string();
    if let Ok(v) = HeaderValue::from_str(&ip_text) {
        h.insert(X_REAL_IP, v);
    }
    let prior: Vec<String> = h
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    let xff = if prior.is_empty() {
        ip_text
    } else {
        format!("{}, {ip_text}", prior.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert(X_FORWARDED_FOR, v);
    }
    match h.get(header::HOST).cloned() {
        Some(host) => {
            h.insert(X_FORWARDED_HOST, host);
        }
        None => {
            h.remove(X_FORWARDED_HOST);
        }
    }
    parts.version = http::Version::HTTP_11;
    let upload = Upload::new();
    parts.extensions.insert(HeadWatch {
        upload: upload.clone(),
        timeout: shared.response_timeout,
    });
    let body = RxBody {
        inner: body,
        counted: rx_counted.clone(),
        upload,
        idle: Idle::new(shared.body_timeout),
    };
    let out = Request::from_parts(parts, body);

    // Requests that arrive before the first probe verdicts wait for them (bounded): instead of
    // failing as sidekick's do, and instead of going to a later site only because the
    // preferred one has not been probed yet.
    if gen.is_warming() {
        let _ = gen.balancer.ready(shared.warm_wait).await;
    }

    let mut done = Completion {
        stats: None,
        start,
        status: 502,
        rx_head,
        rx_declared: rx_declared.unwrap_or(0),
        rx_counted,
        tx: 0,
        trace,
    };
    let mut svc = gen.svc.clone();
    // Readied first, as tower asks: the layer sends the first attempt on the readied instance
    // (the attempt service is always ready, so this returns at once).
    let answer = match std::future::poll_fn(|cx| svc.poll_ready(cx)).await {
        Ok(()) => svc.call(out).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(mut resp) => {
            let served = resp.extensions_mut().remove::<Served>();
            if let (Some(t), Some(s)) = (&mut done.trace, &served) {
                t.endpoint = s.0.url.clone();
                t.ttfb = start.elapsed();
            }
            done.stats = served.map(|s| s.0);
            let status = resp.status();
            done.status = status.as_u16();
            let tunnel = if status == StatusCode::SWITCHING_PROTOCOLS {
                let backend_side = hyper::upgrade::on(&mut resp);
                client_side.map(|c| (c, backend_side))
            } else {
                None
            };
            let (mut parts, body) = resp.into_parts();
            parts.version = http::Version::HTTP_11;
            // Both framings (RFC 9112 §6.3): the body was decoded as chunked, so the backend's
            // Content-Length does not describe what the client gets.
            if parts.headers.contains_key(header::TRANSFER_ENCODING) {
                parts.headers.remove(header::CONTENT_LENGTH);
            }
            let back_upgrade = parts.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers, false);
            if let (Some((client, backend)), Some(u)) = (tunnel, back_upgrade) {
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                parts.headers.insert(header::UPGRADE, u);
                shared.tunnels.spawn(async move {
                    let (c, b) = tokio::join!(client, backend);
                    if let (Ok(c), Ok(b)) = (c, b) {
                        let mut c = TokioIo::new(c);
                        let mut b = TokioIo::new(b);
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
                    }
                });
            }
            parts.headers.insert(header::SERVER, SERVER);
            parts
                .headers
                .insert(X_PROXY, HeaderValue::from_static("true"));
            done.tx = response_head_bytes(status, &parts.headers);
            if let Some(t) = &mut done.trace {
                if console.opts.debug {
                    t.resp_headers = Some(parts.headers.clone());
                }
            }
            Response::from_parts(
                parts,
                ProxyBody {
                    inner: Inner::Stream(body),
                    idle: Some((Idle::new(shared.response_timeout), gen.clone())),
                    done: Some(done),
                },
            )
        }
        Err(e) => {
            let (resp, body) = if e.is_body() {
                client_body_error(&e, &resource)
            } else if e.is_timeout() {
                let ep = e.endpoint().unwrap_or("the backend");
                let message = format!(
                    "{ep} sent no response within {}",
                    super::flags::describe(shared.response_timeout)
                );
                let body = backend_down_body(&message, &resource);
                (xml_error(StatusCode::GATEWAY_TIMEOUT, body.clone()), body)
            } else {
                let message = if e.is_no_endpoint() {
                    "all backend servers are offline".to_string()
                } else {
                    chain(&e)
                };
                let body = backend_down_body(&message, &resource);
                (bad_gateway(body.clone()), body)
            };
            done.status = resp.status().as_u16();
            if let Some(ep) = e.endpoint() {
                done.stats = gen.registry.get(authority_of(ep));
                if let Some(t) = &mut done.trace {
                    t.endpoint = ep.to_string();
                }
            }
            done.tx = response_head_bytes(resp.status(), resp.headers()) + body.len() as u64;
            if let Some(t) = &mut done.trace {
                t.ttfb = start.elapsed();
                if console.opts.debug {
                    t.resp_headers = Some(resp.headers().clone());
                    t.error_body = Some(body);
                }
            }
            // A request no endpoint was tried for is neither counted nor traced (sidekick).
            if e.is_no_endpoint() {
                done.trace = None;
            }
            drop(done);
            resp
        }
    }
}

/// This host's address for loopback clients: the first non-loopback IPv4 address the kernel
/// lists as local (`/proc/net/fib_trie`), if any.
pub fn host_ip() -> Option<IpAddr> {
    let text = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
    let mut prev: Option<&str> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.contains("/32 host LOCAL") {
            if let Some(ip) = prev.and_then(|p| {
                p.trim_start_matches(['|', '-', '+', ' '])
                    .parse::<IpAddr>()
                    .ok()
            }) {
                if !ip.is_loopback() {
                    return Some(ip);
                }
            }
        }
        prev = Some(t);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Custom".parse().unwrap());
        h.insert("x-custom", "1".parse().unwrap());
        h.insert(header::TE, "trailers, deflate".parse().unwrap());
        h.insert(header::TRAILER, "x-checksum".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::PROXY_AUTHORIZATION, "x".parse().unwrap());
        h.insert("x-amz-date", "d".parse().unwrap());
        strip_hop_by_hop(&mut h, true);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["te", "trailer", "x-amz-date"]);
        assert_eq!(h[header::TE], "trailers");
    }

    #[test]
    fn backend_down_is_escaped_xml() {
        let b = backend_down_body("a <b> & c", "/bucket/k&y");
        assert!(b.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>BackendDown</Code>"
        ));
        assert!(b.contains(
            "<Message>The remote server returned an error (a &lt;b&gt; &amp; c)</Message>"
        ));
        assert!(b.ends_with("<Resource>/bucket/k&amp;y</Resource></Error>"));
    }

    #[test]
    fn host_rules_of_rfc_9112() {
        let req = |version, hosts: &[&str]| {
            let mut r = Request::new(());
            *r.version_mut() = version;
            for h in hosts {
                r.headers_mut()
                    .append(header::HOST, HeaderValue::from_str(h).unwrap());
            }
            r
        };
        let v11 = http::Version::HTTP_11;
        assert_eq!(host_problem(&req(v11, &["a.example:9000"])), None);
        assert_eq!(host_problem(&req(v11, &["[::1]:80"])), None);
        assert_eq!(host_problem(&req(v11, &[""])), None);
        assert_eq!(host_problem(&req(http::Version::HTTP_10, &[])), None);
        assert_eq!(host_problem(&req(v11, &[])), Some("missing Host header"));
        assert_eq!(
            host_problem(&req(v11, &["a", "b"])),
            Some("more than one Host header")
        );
        assert_eq!(host_problem(&req(v11, &["a%41.example:"])), None);
        for bad in [
            "a b", "u@a", "a/b", "a:port", "a?b", "a:1:2", "[::1", "a%4", "a:123456",
        ] {
            assert_eq!(
                host_problem(&req(v11, &[bad])),
                Some("invalid Host header"),
                "{bad}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_silence_from_the_first_empty_read() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let t = Duration::from_secs(60);
        let mut idle = Idle::new(t);
        // Long after the last data, the first empty read starts the clock.
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(!idle.expired(&mut cx));
        tokio::time::advance(t - Duration::from_millis(1)).await;
        assert!(!idle.expired(&mut cx));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(idle.expired(&mut cx), "silent for the whole timeout");
        idle.data();
        assert!(!idle.expired(&mut cx), "data restarts the clock");
    }

    #[test]
    fn upload_deadline_waits_for_the_client() {
        let up = Upload::new();
        let since = Instant::now();
        let t = Duration::from_secs(5);
        assert!(up.deadline(since, t).is_some_and(|d| d >= since + t));
        up.waiting.store(true, Ordering::Relaxed);
        assert_eq!(up.deadline(since, t), None, "the client owes bytes");
        up.stamp();
        assert!(up.deadline(since, t).is_some());
    }

    #[test]
    fn trace_client_prefers_forwarded() {
        let mut h = HeaderMap::new();
        let peer: IpAddr = "::1".parse().unwrap();
        assert_eq!(trace_client(&h, peer), "::1");
        h.insert(X_REAL_IP, "10.0.0.9".parse().unwrap());
        assert_eq!(trace_client(&h, peer), "10.0.0.9");
        h.insert(X_FORWARDED_FOR, "10.0.0.5, 10.0.0.6".parse().unwrap());
        assert_eq!(trace_client(&h, peer), "10.0.0.5");
    }
}
