//! An HTTP client for the AWS SDK for Rust that spreads one SDK client over every node of a
//! cluster (feature `aws`).
//!
//! [`SidekickHttpClient`] implements smithy's [`HttpClient`], so it plugs into the config builder
//! of `aws-sdk-s3` (and of any other smithy-generated SDK) with `.http_client(...)`:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
//! use sidekick::aws::SidekickHttpClient;
//!
//! let balancer = sidekick::Balancer::builder()
//!     .site("http://10.0.0.{1...4}:9000")
//!     .health_path("/minio/health/ready")
//!     .build()?;
//! let config = aws_sdk_s3::Config::builder()
//!     .behavior_version(BehaviorVersion::latest())
//!     .region(Region::new("us-east-1"))
//!     .credentials_provider(Credentials::new("KEY", "SECRET", None, None, "static"))
//!     // What the SDK signs for. It need not resolve: requests go to the balancer's nodes.
//!     .endpoint_url("http://minio.cluster:9000")
//!     .force_path_style(true)
//!     .http_client(SidekickHttpClient::new(balancer)?)
//!     .build();
//! let s3 = aws_sdk_s3::Client::from_conf(config);
//! s3.put_object().bucket("b").key("k").body(b"hi".to_vec().into()).send().await?;
//! # Ok(()) }
//! ```
//!
//! # Dependencies
//!
//! This feature depends on `aws-smithy-runtime-api` and `aws-smithy-types` only, not on
//! `aws-sdk-s3`. Build the SDK with `default-features = false` so that it does not bring its own
//! HTTP and TLS stacks next to sidekick's:
//!
//! ```toml
//! aws-sdk-s3 = { version = "1", default-features = false, features = ["rt-tokio", "behavior-version-latest"] }
//! ```
//!
//! (`aws-config` likewise, if you use it to load credentials.) The smithy crates need Rust 1.94 or
//! newer, a later minimum than the rest of sidekick's.
//!
//! # What happens to a request
//!
//! The SDK resolves the endpoint, signs the request for it (SigV4 signs the `Host`) and hands
//! the connector an absolute URI. The connector then
//!
//! 1. adds `Host: <the signed authority>` when the request has none, written the way the signer
//!    and hyper write it (without a default `:80`/`:443`), so the signature still matches on any
//!    node — the balancer's [`HostPolicy`](crate::HostPolicy) does not apply here;
//! 2. picks a node, replaces the URI's scheme and authority with the node's (prefixing its base
//!    path, if any) and sends the request over HTTP/1.1, through a hyper-util pool whose
//!    connections are kept per node;
//! 3. optionally reads a short response whole ([`SidekickHttpClient::response_buffer`], off by
//!    default), so that a node dying in the middle of the answer is a broken connection the SDK
//!    retries;
//! 4. wraps a streamed GET body so that, when it breaks after the head (the node died while it
//!    streamed), the rest is fetched from another node: a `Range` request for the missing bytes
//!    pinned to the same version (`If-Match` and a check of the answer's `ETag`), so the caller
//!    reads one uninterrupted `GetObject` body where nothing else would retry it;
//! 5. reports the outcome to the balancer: the status of a response, or a connect, reset or
//!    timeout failure, which feeds latency scores and passive ejection; and tells the SDK which
//!    connection it used, so that the SDK's connection poisoning after a transient error works.
//!
//! # Two retry loops, never multiplied
//!
//! A connection that cannot be established moves the request to another node inside the
//! connector: nothing was sent, so this loads no backend (each node at most once, as in the
//! [`retry`](crate::retry) rules). Every other failure — a broken connection, a timeout, a 503 —
//! goes back to the SDK, whose own retry loop (with its backoff and token bucket) signs the
//! request again and calls the connector again, which picks again. The balancer's own
//! response-level retries (`max_attempts`, `retry_statuses`, the budget) are not used here.
//!
//! Errors map to the kinds the SDK's retry classifier expects: no node available and broken
//! connections are [`ConnectorError::io`] (transient: the SDK backs off and retries), timeouts are
//! [`ConnectorError::timeout`], a request the connector cannot send at all is
//! [`ConnectorError::user`].
//!
//! # Timeouts
//!
//! The SDK's `connect_timeout` (default: the balancer's [`connect_timeout`]) bounds each TCP
//! connect; its `read_timeout` (default: the balancer's [`attempt_timeout`]) bounds each attempt
//! until the response head (until the end of a short response that is read whole). Inside it,
//! the balancer's [`response_timeout`] (default 60 s) bounds the wait with nothing happening,
//! counted from the request body's last chunk: a node that accepts and never answers is a
//! timeout (against the node; the SDK retries it). Connections are pooled per node and per
//! connect timeout, with the balancer's pool settings.
//!
//! [`connect_timeout`]: crate::Builder::connect_timeout
//! [`attempt_timeout`]: crate::Builder::attempt_timeout
//! [`response_timeout`]: crate::Builder::response_timeout

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpInfo;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::balancer::{Balancer, Lease, Outcome};
use crate::error::{find_source, BoxError, Error};
use crate::head_wait::{self, Progress};
use crate::resume::{Plan, ResumeBody};
use crate::retry::{classify, is_idempotent_request};
use crate::sync::lock;
use crate::transport::{self, Connector};

type Pool = HyperClient<Connector, AttemptBody>;

/// Responses announced at most this long are read whole before the SDK gets them (off).
const DEFAULT_RESPONSE_BUFFER: usize = 0;

/// Connector cache key: the SDK's (connect timeout, read timeout).
type Key = (Option<Duration>, Option<Duration>);

/// A smithy [`HttpClient`] that sends each request of an AWS SDK client to a node chosen by a
/// [`Balancer`], keeping the `Host` the SDK signed. Cheap to clone; clones share their
/// connection pools.
///
/// See the [module documentation](self) for how requests, retries and timeouts are handled.
#[derive(Clone)]
pub struct SidekickHttpClient {
    shared: Arc<Shared>,
}

struct Shared {
    balancer: Balancer,
    /// Shared with the connectors (which must not hold `Shared`: it holds them).
    response_buffer: Arc<AtomicUsize>,
    #[cfg(feature = "tls")]
    tls: Arc<rustls::ClientConfig>,
    /// One pool per connect timeout (the connect timeout is a property of the TCP connector).
    pools: Mutex<HashMap<Duration, Pool>>,
    /// `http_connector` runs on every attempt: hand out the same connector for the same settings.
    connectors: Mutex<HashMap<Key, SharedHttpConnector>>,
}

impl fmt::Debug for SidekickHttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SidekickHttpClient")
            .field("balancer", &self.shared.balancer)
            .finish_non_exhaustive()
    }
}

impl SidekickHttpClient {
    /// A client over this balancer. Fails only when the default TLS configuration (the system's
    /// root certificates) cannot be set up.
    pub fn new(balancer: Balancer) -> Result<SidekickHttpClient, Error> {
        #[cfg(feature = "tls")]
        let tls = match &balancer.core.cfg.tls {
            Some(cfg) => cfg.clone(),
            None => Arc::new(transport::default_tls_config()?),
        };
        Ok(SidekickHttpClient {
            shared: Arc::new(Shared {
                balancer,
                response_buffer: Arc::new(AtomicUsize::new(DEFAULT_RESPONSE_BUFFER)),
                #[cfg(feature = "tls")]
                tls,
                pools: Mutex::new(HashMap::new()),
                connectors: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The balancer behind this client.
    pub fn balancer(&self) -> &Balancer {
        &self.shared.balancer
    }

    /// Read a response whose announced length is at most `bytes` whole before handing it to
    /// the SDK. A node that dies in the middle of such a body then fails the attempt with a
    /// transient I/O error, which the SDK retries on another node. Without it, a streamed
    /// `GetObject` body that breaks is resumed from another node (see the module docs), and
    /// the SDK reads and retries the answers of other operations itself. Default is 0 (off): reading
    /// first takes from the SDK a little work it otherwise overlaps with the transfer (about
    /// 3 % on 1 KiB GETs from a local server; see `benches/s3.rs`). 64 KiB is a reasonable
    /// value for small-object workloads. Applies to this client and its clones.
    pub fn response_buffer(self, bytes: usize) -> Self {
        self.shared.response_buffer.store(bytes, Ordering::Relaxed);
        self
    }

    fn pool(&self, connect_timeout: Duration) -> Result<Pool, Error> {
        let mut pools = lock(&self.shared.pools);
        if let Some(pool) = pools.get(&connect_timeout) {
            return Ok(pool.clone());
        }
        let core = &self.shared.balancer.core;
        let cfg = &core.cfg;
        let _guard = core.runtime.enter();
        #[cfg(feature = "tls")]
        let conn = transport::connector(
            connect_timeout,
            Some(self.shared.tls.clone()),
            core.names.clone(),
        )?;
        #[cfg(not(feature = "tls"))]
        let conn = transport::connector(connect_timeout, core.names.clone())?;
        let pool = HyperClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .build(conn);
        pools.insert(connect_timeout, pool.clone());
        Ok(pool)
    }
}

impl SidekickHttpClient {
    /// The connector for these SDK settings, made once.
    fn connector(&self, key: Key) -> SharedHttpConnector {
        if let Some(c) = lock(&self.shared.connectors).get(&key) {
            return c.clone();
        }
        let cfg = &self.shared.balancer.core.cfg;
        let connector = match self.pool(key.0.unwrap_or(cfg.connect_timeout)) {
            Ok(pool) => SharedHttpConnector::new(BalancedConnector {
                balancer: self.shared.balancer.clone(),
                response_buffer: self.shared.response_buffer.clone(),
                pool,
                read_timeout: key.1.or(cfg.attempt_timeout),
            }),
            Err(e) => SharedHttpConnector::new(FailingConnector(Arc::new(e))),
        };
        lock(&self.shared.connectors)
            .entry(key)
            .or_insert(connector)
            .clone()
    }
}

impl HttpClient for SidekickHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.connector((settings.connect_timeout(), settings.read_timeout()))
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        Some(ConnectorMetadata::new(
            "sidekick",
            Some(env!("CARGO_PKG_VERSION").into()),
        ))
    }
}

// ===== the connector =====

/// Sends one SDK attempt to a chosen node.
#[derive(Clone)]
struct BalancedConnector {
    balancer: Balancer,
    response_buffer: Arc<AtomicUsize>,
    pool: Pool,
    read_timeout: Option<Duration>,
}

impl fmt::Debug for BalancedConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancedConnector")
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpConnector for BalancedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let this = self.clone();
        HttpConnectorFuture::new(async move { this.send(request).await })
    }
}

/// Stands in when the client could not be built, so that the SDK reports why.
#[derive(Debug)]
struct FailingConnector(Arc<Error>);

impl HttpConnector for FailingConnector {
    fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
        let msg = self.0.to_string();
        HttpConnectorFuture::ready(Err(ConnectorError::user(msg.into())))
    }
}

/// The `Host` the SigV4 signer used when the request had none: the URI's authority, without the
/// scheme's default port (aws-sigv4 and hyper write it this way).
fn signed_host(uri: &Uri) -> Option<&str> {
    let authority = uri.authority()?;
    let default_port = match uri.scheme_str() {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    };
    match authority.port_u16() {
        Some(p) if Some(p) == default_port => Some(authority.host()),
        _ => Some(authority.as_str()),
    }
}

/// The request URI with the scheme and authority of the leased node (and its base path).
fn node_uri(lease: &Lease, path_and_query: &str) -> Result<Uri, http::Error> {
    let base = lease.base_path();
    let builder = Uri::builder()
        .scheme(lease.scheme().clone())
        .authority(lease.authority().clone());
    if base.is_empty() {
        builder.path_and_query(path_and_query).build()
    } else {
        builder
            .path_and_query(format!("{base}{path_and_query}"))
            .build()
    }
}

/// The SDK's read timeout expired before the response head arrived.
#[derive(Debug)]
struct ReadTimeout(Duration);

impl fmt::Display for ReadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no response within the read timeout of {:?}", self.0)
    }
}

impl std::error::Error for ReadTimeout {}

impl BalancedConnector {
    async fn send(self, request: HttpRequest) -> Result<HttpResponse, ConnectorError> {
        let request = request
            .try_into_http1x()
            .map_err(|e| ConnectorError::user(e.into()))?;
        let (mut parts, body) = request.into_parts();
        if !parts.headers.contains_key(HOST) {
            let host = signed_host(&parts.uri)
                .ok_or_else(|| user_error("the request URI has no authority"))?;
            let value = HeaderValue::from_str(host).map_err(|e| ConnectorError::user(e.into()))?;
            parts.headers.insert(HOST, value);
        }
        let pq = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        let slot = Slot::new(body);
        // The SDK's body is streamed once (never replayable): only a connection that was never
        // made, leaving the body unread, may go to another node at once.
        let idempotent = is_idempotent_request(&parts.method, &parts.headers);
        let mut attempts = self.balancer.attempts(idempotent, false);
        let mut lease = attempts.pick().map_err(|e| ConnectorError::io(e.into()))?;
        loop {
            let uri = node_uri(&lease, &pq).map_err(|e| ConnectorError::user(e.into()))?;
            let head_waits = &self.balancer.core.head_waits;
            let progress = head_waits.progress();
            let mut req = Request::new(slot.body(Some(progress.clone())));
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = uri;
            *req.headers_mut() = parts.headers.clone();
            *req.extensions_mut() = parts.extensions.clone();
            capture_connection(&mut req);
            // The idle-based head wait (`response_timeout`) inside the SDK's read timeout.
            let response_timeout = self.balancer.core.cfg.response_timeout;
            let fut = async {
                head_wait::bounded(
                    head_waits,
                    self.attempt(req),
                    response_timeout,
                    None,
                    Some(progress),
                )
                .await
                .unwrap_or_else(|e| Err(Box::new(e) as BoxError))
            };
            let result = match self.read_timeout {
                Some(t) => match tokio::time::timeout(t, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(read_timeout(t)),
                },
                None => fut.await,
            };
            let node = lease.id();
            let (outcome, answer) = match result {
                Ok(resp) => (Outcome::Status(resp.status().as_u16()), Ok(resp)),
                Err(err) => (classify(&*err), Err(err)),
            };
            if let Some(next) = attempts.settle(lease, outcome, slot.intact()) {
                lease = next;
                continue;
            }
            let resp = match answer {
                Ok(Attempted::Whole(resp)) => resp,
                // The last use of the request's headers and path: moved, not copied.
                Ok(Attempted::Streamed(resp)) => self.resumable(
                    resp,
                    &parts.method,
                    std::mem::take(&mut parts.headers),
                    pq,
                    node,
                ),
                Err(err) => return Err(connector_error(outcome, err)),
            };
            return HttpResponse::try_from(resp).map_err(|e| ConnectorError::other(e.into(), None));
        }
    }
}

/// An attempt's response: read whole (short), or streaming from the node.
enum Attempted {
    Whole(http::Response<SdkBody>),
    Streamed(http::Response<hyper::body::Incoming>),
}

impl Attempted {
    fn status(&self) -> http::StatusCode {
        match self {
            Attempted::Whole(r) => r.status(),
            Attempted::Streamed(r) => r.status(),
        }
    }
}

impl BalancedConnector {
    /// Send one attempt; read a short response whole (see `response_buffer`).
    async fn attempt(&self, req: Request<AttemptBody>) -> Result<Attempted, BoxError> {
        let resp = self.pool.request(req).await?;
        let short = resp
            .body()
            .size_hint()
            .upper()
            .is_some_and(|n| n <= self.response_buffer.load(Ordering::Relaxed) as u64);
        if short && !resp.body().is_end_stream() {
            let (parts, body) = resp.into_parts();
            let bytes = transport::read_whole(body).await?;
            return Ok(Attempted::Whole(http::Response::from_parts(
                parts,
                SdkBody::from(bytes),
            )));
        }
        Ok(Attempted::Streamed(resp))
    }

    /// The SDK's body for a streamed response: a GET body that breaks in the middle resumes
    /// from another node (see [`crate::resume`]).
    fn resumable(
        &self,
        resp: http::Response<hyper::body::Incoming>,
        method: &http::Method,
        headers: http::HeaderMap,
        pq: String,
        node: crate::endpoint::EndpointId,
    ) -> http::Response<SdkBody> {
        let Some(plan) = Plan::new(method, &headers, resp.status(), resp.headers()) else {
            return resp.map(SdkBody::from_body_1_x);
        };
        let this = self.clone();
        let headers = Arc::new(headers);
        let pq: Arc<str> = pq.into();
        let resume_plan = plan.clone();
        resp.map(move |body| {
            SdkBody::from_body_1_x(ResumeBody::new(body, plan, move |offset| {
                let this = this.clone();
                let headers = headers.clone();
                let pq = pq.clone();
                let plan = resume_plan.clone();
                Box::pin(async move { this.resume(&plan, offset, &headers, &pq, node).await })
            }))
        })
    }

    /// GET the bytes of a broken body from `offset` on from another node than `broken`.
    async fn resume(
        &self,
        plan: &Plan,
        offset: u64,
        headers: &http::HeaderMap,
        pq: &str,
        broken: crate::endpoint::EndpointId,
    ) -> Result<hyper::body::Incoming, BoxError> {
        let mut headers = headers.clone();
        for (name, value) in plan.headers(offset)? {
            headers.insert(name, value);
        }
        // A GET without a body: replayable, retried on another node by the engine's rules.
        let mut attempts = self.balancer.attempts(true, true);
        attempts.exclude(broken);
        let mut lease = attempts.pick()?;
        loop {
            let mut req = Request::new(Slot::new(SdkBody::empty()).body(None));
            *req.uri_mut() = node_uri(&lease, pq)?;
            *req.headers_mut() = headers.clone();
            let response_timeout = self.balancer.core.cfg.response_timeout;
            let fut = async {
                let head_waits = &self.balancer.core.head_waits;
                match head_wait::bounded(
                    head_waits,
                    self.pool.request(req),
                    response_timeout,
                    None,
                    None,
                )
                .await
                {
                    Ok(r) => r.map_err(BoxError::from),
                    Err(e) => Err(Box::new(e) as BoxError),
                }
            };
            let result = match self.read_timeout {
                Some(t) => match tokio::time::timeout(t, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(read_timeout(t)),
                },
                None => fut.await,
            };
            let (outcome, answer) = match result {
                Ok(resp) => (Outcome::Status(resp.status().as_u16()), Ok(resp)),
                Err(err) => (classify(&*err), Err(err)),
            };
            if let Some(next) = attempts.settle(lease, outcome, true) {
                lease = next;
                continue;
            }
            let resp = answer?;
            plan.check(offset, resp.status(), resp.headers())?;
            return Ok(resp.into_body());
        }
    }
}

/// Let the SDK find the connection an attempt used, so that it can close it after a transient
/// error (its `ReconnectMode::ReconnectOnTransientError`).
fn capture_connection(req: &mut Request<AttemptBody>) {
    let Some(smithy) = req.extensions().get::<CaptureSmithyConnection>().cloned() else {
        return;
    };
    let capture = hyper_util::client::legacy::connect::capture_connection(req);
    smithy.set_connection_retriever(move || {
        let conn = capture.connection_metadata();
        let conn = conn.as_ref()?;
        let mut extras = http::Extensions::new();
        conn.get_extras(&mut extras);
        let info = extras.get::<HttpInfo>();
        let poison = capture.clone();
        let mut builder = ConnectionMetadata::builder()
            .proxied(conn.is_proxied())
            .poison_fn(move || {
                if let Some(c) = poison.connection_metadata().as_ref() {
                    c.poison();
                }
            });
        builder
            .set_remote_addr(info.map(HttpInfo::remote_addr))
            .set_local_addr(info.map(HttpInfo::local_addr));
        Some(builder.build())
    });
}

fn user_error(msg: &'static str) -> ConnectorError {
    ConnectorError::user(msg.into())
}

/// A timeout of the connector's own read deadline, as an I/O timeout (which [`classify`] reads).
fn read_timeout(t: Duration) -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        ReadTimeout(t),
    ))
}

/// What a failed attempt, classified by the balancer, tells the SDK's retry classifier.
fn connector_error(outcome: Outcome, err: BoxError) -> ConnectorError {
    match outcome {
        Outcome::Connect => {
            let timed_out = find_source::<std::io::Error>(err.as_ref())
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
            let ce = if timed_out {
                ConnectorError::timeout(err)
            } else {
                ConnectorError::io(err)
            };
            ce.never_connected()
        }
        Outcome::Timeout => ConnectorError::timeout(err),
        Outcome::Reset => ConnectorError::io(err),
        _ if find_source::<hyper::Error>(err.as_ref()).is_some_and(hyper::Error::is_user) => {
            ConnectorError::user(err)
        }
        _ => ConnectorError::other(err, None),
    }
}

// ===== request bodies =====

/// Holds the SDK's body until an attempt first reads it, so that an attempt whose connection
/// failed (and which therefore read nothing) can hand it to the next node, whether or not the
/// body could be cloned.
struct Slot {
    body: Arc<Mutex<Option<SdkBody>>>,
    hint: (u64, Option<u64>),
    end: bool,
}

impl Slot {
    fn new(body: SdkBody) -> Slot {
        let hint = Body::size_hint(&body);
        Slot {
            hint: (hint.lower(), hint.upper()),
            end: Body::is_end_stream(&body),
            body: Arc::new(Mutex::new(Some(body))),
        }
    }

    /// The body of one attempt; `progress` is told of every frame it hands out.
    fn body(&self, progress: Option<Arc<Progress>>) -> AttemptBody {
        AttemptBody {
            slot: self.body.clone(),
            body: None,
            hint: self.hint,
            end: self.end,
            progress,
        }
    }

    fn intact(&self) -> bool {
        lock(&self.body).is_some()
    }
}

/// One attempt's view of the request body; takes the body out of the slot on its first poll.
struct AttemptBody {
    slot: Arc<Mutex<Option<SdkBody>>>,
    body: Option<SdkBody>,
    /// The body's size hint before it was taken (lower, upper).
    hint: (u64, Option<u64>),
    end: bool,
    /// The response head wait counts from the last frame handed out.
    progress: Option<Arc<Progress>>,
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.body.is_none() {
            match lock(&this.slot).take() {
                Some(b) => this.body = Some(b),
                // Another attempt read it: nothing more to send from here.
                None => return Poll::Ready(Some(Err("request body already consumed".into()))),
            }
        }
        let polled = match this.body.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        };
        if let (Poll::Ready(_), Some(p)) = (&polled, &this.progress) {
            p.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(b) => b.is_end_stream(),
            None => self.end,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(b) => Body::size_hint(b),
            None => {
                let mut hint = SizeHint::new();
                hint.set_lower(self.hint.0);
                if let Some(upper) = self.hint.1 {
                    hint.set_upper(upper);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_host_drops_default_ports_only() {
        let h = |u: &str| signed_host(&u.parse::<Uri>().unwrap()).map(str::to_string);
        assert_eq!(h("http://s3.local:80/b").as_deref(), Some("s3.local"));
        assert_eq!(h("https://s3.local:443/b").as_deref(), Some("s3.local"));
        assert_eq!(h("http://s3.local:443/b").as_deref(), Some("s3.local:443"));
        assert_eq!(h("https://s3.local:80/b").as_deref(), Some("s3.local:80"));
        assert_eq!(
            h("http://127.0.0.1:9000/b").as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(h("http://[::1]:80/b").as_deref(), Some("[::1]"));
        assert_eq!(h("http://[::1]:9000/b").as_deref(), Some("[::1]:9000"));
        assert_eq!(h("https://s3.local/b").as_deref(), Some("s3.local"));
        assert_eq!(h("/b"), None);
    }

    #[tokio::test]
    async fn dropping_the_client_releases_the_balancer() {
        let balancer = Balancer::builder()
            .site("http://127.0.0.1:1,http://127.0.0.1:2")
            .health_check(false)
            .build()
            .unwrap();
        let core = Arc::downgrade(&balancer.core);
        let client = SidekickHttpClient::new(balancer).unwrap();
        let a = client.connector((None, None));
        let b = client.connector((None, None));
        let c = client.connector((Some(Duration::from_secs(1)), None));
        assert_eq!(lock(&client.shared.connectors).len(), 2);
        assert_eq!(lock(&client.shared.pools).len(), 2);
        drop((a, b, c, client));
        assert!(core.upgrade().is_none(), "the balancer outlived its client");
    }

    #[test]
    fn client_is_send_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<SidekickHttpClient>();
    }
}
