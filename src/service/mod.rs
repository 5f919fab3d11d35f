//! tower middleware: balance any `Service<http::Request<B>>` over a [`Balancer`].
//!
//! [`SidekickLayer`] wraps an HTTP client service (hyper-util's legacy client, or anything with the
//! same shape). For each request it picks an endpoint, rewrites the URI's scheme and authority to
//! it (prefixing the endpoint's base path, if any), keeps the caller's `Host` header unless told
//! otherwise ([`HostPolicy`]), reports latency and outcome back to the
//! balancer, and retries on a different endpoint by the rules of [`crate::retry`]. With hedging
//! on (the builder's `hedge_delay` / `hedge_percentile`), an idempotent request whose attempt
//! has not answered in time gets a concurrent attempt on another endpoint, when the engine and
//! its retry budget allow it; the first answer wins and the other attempt is dropped.
//!
//! The inner service receives [`RetryBody<B>`] bodies: a buffered copy when the body is small
//! enough to replay, the caller's stream otherwise.
//!
//! `poll_ready` is the inner service's (the first attempt of a request is sent on the instance
//! it readied; later attempts on a copy, readied in turn); it does not wait for an endpoint: a
//! request with no endpoint to go to fails at once with [`Error::is_no_endpoint`] instead of
//! waiting forever (a known trap of `tower::balance`).
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::{connect::HttpConnector, Client};
//! use hyper_util::rt::TokioExecutor;
//! use sidekick::service::{RetryBody, SidekickLayer};
//! use tower::{Layer, ServiceExt};
//!
//! let balancer = sidekick::Balancer::builder()
//!     .site("http://127.0.0.1:{9001...9003}")
//!     .build()?;
//! let inner: Client<HttpConnector, RetryBody<Full<Bytes>>> =
//!     Client::builder(TokioExecutor::new()).build_http();
//! let svc = SidekickLayer::new(balancer).layer(inner);
//! let req = http::Request::get("/bucket/key").body(Full::new(Bytes::new()))?;
//! let resp = svc.oneshot(req).await?;
//! println!("{}", resp.status());
//! # Ok(()) }
//! ```

mod body;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

pub use body::RetryBody;
use body::Slot;

use crate::balancer::{Balancer, HostPolicy, Lease, Outcome};
use crate::error::{BoxError, Error, Kind};
use crate::head_wait::{self, Entry, Progress, Watchdog};
use crate::retry::{classify, is_idempotent_request, Attempts, Decision};
use crate::sync::lock;

/// A tower [`Layer`] that balances requests over a [`Balancer`]'s endpoints.
#[derive(Clone, Debug)]
pub struct SidekickLayer {
    balancer: Balancer,
}

impl SidekickLayer {
    /// A layer over this balancer (cheap: the balancer is shared, not copied).
    pub fn new(balancer: Balancer) -> Self {
        SidekickLayer { balancer }
    }
}

impl<S> Layer<S> for SidekickLayer {
    type Service = Sidekick<S>;

    fn layer(&self, inner: S) -> Sidekick<S> {
        Sidekick::new(self.balancer.clone(), inner)
    }
}

/// The balancing service made by [`SidekickLayer`].
#[derive(Clone, Debug)]
pub struct Sidekick<S> {
    inner: S,
    balancer: Balancer,
    /// A copy of the inner service for the attempts after the first (and for the requests
    /// that do not start on this handle's instance), made on first use; shared by clones.
    spare: Arc<OnceLock<Mutex<S>>>,
}

impl<S> Sidekick<S> {
    /// Wrap `inner` (an HTTP client service) with `balancer`.
    pub fn new(balancer: Balancer, inner: S) -> Self {
        Sidekick {
            inner,
            balancer,
            spare: Arc::default(),
        }
    }

    /// The balancer.
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably. Requests sent through this handle afterwards (and their
    /// retries) use the changed service; other clones of the handle keep theirs.
    pub fn get_mut(&mut self) -> &mut S {
        self.spare = Arc::default();
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, RB> Service<Request<B>> for Sidekick<S>
where
    S: Service<Request<RetryBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = Error;
    type Future = ResponseFuture<S::Future, S, B, RB>;

    /// The inner service's readiness: the first attempt of the next request is sent on it.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::new(Kind::Request).with_source(e))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Made once, from the service as it is now, for the attempts after the first.
        self.spare.get_or_init(|| Mutex::new(self.inner.clone()));
        ResponseFuture::new(self, req)
    }
}

// ===== the response future =====

pin_project! {
    /// The future returned by [`Sidekick`]: the answer handed to the caller, after the
    /// attempts the balancer's rules allow.
    ///
    /// Not boxed, and no async block on the common path: a request without a body to buffer
    /// and without hedging is sent by `call` on the service `poll_ready` readied, and this
    /// future waits for its head and reports its outcome; a retry, a body to buffer for
    /// replay, or hedging moves the request to the general loop, boxed, on a copy of the
    /// inner service.
    ///
    /// `F` is the inner service's future, `S` the inner service, `B` the caller's request body
    /// and `RB` the response body.
    pub struct ResponseFuture<F, S, B, RB> {
        // Kept until the future is dropped, even when it has answered: the inner client's
        // allocations are then freed in the order they are without the layer (freeing its
        // future first sent the next request's large allocations down the allocator's slow
        // path: ~420 more instructions per request under callgrind).
        #[pin]
        sent: Option<F>,
        state: State<S, B, RB>,
    }

    impl<F, S, B, RB> PinnedDrop for ResponseFuture<F, S, B, RB> {
        fn drop(this: Pin<&mut Self>) {
            // A caller that gave up: the wait leaves the watchdog; the lease is then finished
            // as cancelled when dropped.
            if let State::Direct(direct) = this.project().state {
                direct.leave();
            }
        }
    }
}

/// Where a [`ResponseFuture`] stands.
// Not boxed: the large variant is the common one, and a box would be an allocation per request.
#[allow(clippy::large_enum_variant)]
enum State<S, B, RB> {
    /// The first attempt, sent by `call`.
    Direct(Direct<S, B>),
    /// The general request loop (retries, buffered bodies, hedging).
    Looping(Pin<Box<dyn Future<Output = Result<Response<RB>, Error>> + Send>>),
    /// Ended: with this error before any attempt (no endpoint, a bad request), or answered
    /// already (`None`).
    Ended(Option<Error>),
}

/// The first attempt of a request, sent by [`Sidekick::call`].
struct Direct<S, B> {
    call: Call<B>,
    attempts: Attempts,
    /// The attempt's endpoint, until it is judged.
    lease: Option<Lease>,
    /// The attempt's wait for its head, while the watchdog watches it.
    entry: Option<Entry>,
    /// Where a retry's inner service comes from.
    spare: Arc<OnceLock<Mutex<S>>>,
}

impl<S, B> Direct<S, B> {
    /// Stop watching the head wait.
    fn leave(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.attempts.core().head_waits.leave(entry);
        }
    }
}

impl<S, B, RB> ResponseFuture<S::Future, S, B, RB>
where
    S: Service<Request<RetryBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    fn ended(e: Error) -> Self {
        ResponseFuture {
            sent: None,
            state: State::Ended(Some(e)),
        }
    }

    /// The request's first attempt sent on `svc.inner` (readied by `poll_ready`), or the
    /// general loop.
    fn new(svc: &mut Sidekick<S>, req: Request<B>) -> Self {
        let balancer = &svc.balancer;
        let core = &balancer.core;
        let cfg = &core.cfg;
        let (parts, body) = req.into_parts();
        let idempotent = is_idempotent_request(&parts.method, &parts.headers);
        let end = body.is_end_stream();
        let hint = body.size_hint();
        let bounded = cfg.response_timeout.is_some() || cfg.attempt_timeout.is_some();
        let buffer = !end && buffers(cfg, idempotent, &hint);
        if buffer || cfg.retry.hedge.enabled() || (bounded && !core.head_waits.has_thread()) {
            // The readied instance goes with the request; this handle keeps a copy.
            let copy = svc.inner.clone();
            let ready = std::mem::replace(&mut svc.inner, copy);
            let fut = send(balancer.clone(), ready, parts, body, idempotent, buffer);
            return ResponseFuture {
                sent: None,
                state: State::Looping(Box::pin(fut)),
            };
        }
        let call = Call::new(cfg, parts, Source::unbuffered(body, hint, end));
        let mut attempts = balancer.attempts(idempotent, call.source.replayable());
        let lease = match attempts.pick() {
            Ok(lease) => lease,
            Err(e) => return Self::ended(e),
        };
        let (req, progress) = match call.request(&lease, &core.head_waits) {
            Ok(prepared) => prepared,
            Err(e) => return Self::ended(e),
        };
        let sent = svc.inner.call(req);
        let entry = core
            .head_waits
            .enter(progress, call.response_timeout, call.attempt_timeout)
            .ok();
        ResponseFuture {
            sent: Some(sent),
            state: State::Direct(Direct {
                call,
                attempts,
                lease: Some(lease),
                entry,
                spare: svc.spare.clone(),
            }),
        }
    }
}

impl<S, B, RB> Future for ResponseFuture<S::Future, S, B, RB>
where
    S: Service<Request<RetryBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    type Output = Result<Response<RB>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let direct = match this.state {
            State::Direct(direct) => direct,
            State::Looping(fut) => return fut.as_mut().poll(cx),
            State::Ended(e) => {
                return Poll::Ready(Err(e
                    .take()
                    .unwrap_or_else(|| lost("nothing: it had ended"))))
            }
        };
        let Some(fut) = this.sent.as_mut().as_pin_mut() else {
            *this.state = State::Ended(None);
            return Poll::Ready(Err(lost("its attempt")));
        };
        let result: Result<Response<RB>, BoxError> = match fut.poll(cx) {
            Poll::Ready(r) => r.map_err(Into::into),
            Poll::Pending => match direct.entry.as_ref().and_then(|e| e.poll_ended(cx)) {
                Some(ended) => Err(Box::new(ended)),
                None => return Poll::Pending,
            },
        };
        direct.leave();
        let Some(lease) = direct.lease.take() else {
            *this.state = State::Ended(None);
            return Poll::Ready(Err(lost("its endpoint")));
        };
        let (outcome, result) = judged(result);
        let url = result.is_err().then(|| lease.url().to_string());
        let next = direct
            .attempts
            .settle(lease, outcome, direct.call.source.intact());
        match (next, std::mem::replace(this.state, State::Ended(None))) {
            (Some(next), State::Direct(d)) => {
                this.sent.set(None);
                let svc = match d.spare.get() {
                    Some(spare) => lock(spare).clone(),
                    None => {
                        next.finish(Outcome::Cancelled);
                        return Poll::Ready(Err(lost("a service to retry on")));
                    }
                };
                let balancer = Balancer {
                    core: d.attempts.core().clone(),
                };
                let fut = run(balancer, svc, d.attempts, next, d.call);
                let mut fut: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(fut);
                let polled = fut.as_mut().poll(cx);
                *this.state = State::Looping(fut);
                polled
            }
            _ => Poll::Ready(answer(result, outcome, url)),
        }
    }
}

/// The error of a future polled in a state it cannot be in (polled after its end, for one).
fn lost(what: &str) -> Error {
    Error::new(Kind::Request).with_source(format!("the response future was polled for {what}"))
}

// ===== the request loop =====

/// An attempt's request, and the progress of its body (none for an empty body).
type Prepared<B> = (Request<RetryBody<B>>, Option<Arc<Progress>>);

/// Where the body of each attempt comes from.
enum Source<B> {
    /// Buffered: every attempt gets the same bytes.
    Replay(Bytes),
    /// Streamed once; still in the slot while no attempt has read it.
    Stream(Arc<Slot<B>>),
}

impl<B> Source<B> {
    /// The caller's body as it comes: nothing to send when it is known to be empty, else
    /// streamed once.
    fn unbuffered(body: B, hint: http_body::SizeHint, end: bool) -> Self {
        if end {
            Source::Replay(Bytes::new())
        } else {
            Source::Stream(Arc::new(Slot::new(body, hint)))
        }
    }

    fn body(&self) -> RetryBody<B> {
        match self {
            Source::Replay(b) => RetryBody::full(b.clone()),
            Source::Stream(slot) => RetryBody::lazy(slot.clone()),
        }
    }

    /// Whether the body is known to be empty (nothing to send, so nothing to track).
    fn is_empty(&self) -> bool {
        match self {
            Source::Replay(b) => b.is_empty(),
            Source::Stream(_) => false,
        }
    }

    fn intact(&self) -> bool {
        match self {
            Source::Replay(_) => true,
            Source::Stream(slot) => slot.intact(),
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, Source::Replay(_))
    }
}

/// Whether a body of this size is buffered, so that a retry after sending (or a hedge) can
/// send it again.
fn buffers(cfg: &crate::config::Config, idempotent: bool, hint: &http_body::SizeHint) -> bool {
    idempotent
        && (cfg.retry.max_attempts > 1 || cfg.retry.hedge.enabled())
        && hint.upper().is_some_and(|u| u <= cfg.retry.buffer as u64)
}

#[allow(clippy::too_many_arguments)]
fn rewrite<B>(
    lease: &Lease,
    method: &http::Method,
    pq: &http::uri::PathAndQuery,
    version: http::Version,
    headers: &http::HeaderMap,
    extensions: &http::Extensions,
    host_policy: HostPolicy,
    body: RetryBody<B>,
) -> Result<Request<RetryBody<B>>, Error> {
    let base = lease.base_path();
    // From parts rather than `Uri::builder()`, whose chained results cost more than the URI.
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(lease.scheme().clone());
    parts.authority = Some(lease.authority().clone());
    parts.path_and_query = Some(if base.is_empty() {
        pq.clone()
    } else {
        http::uri::PathAndQuery::try_from(format!("{base}{pq}"))
            .map_err(|e| Error::new(Kind::Request).with_source(e))?
    });
    let uri = http::Uri::from_parts(parts).map_err(|e| Error::new(Kind::Request).with_source(e))?;
    let mut req = Request::new(body);
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers.clone();
    *req.extensions_mut() = extensions.clone();
    if host_policy == HostPolicy::Rewrite {
        if let Ok(v) = HeaderValue::from_str(lease.authority().as_str()) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    } else if !req.headers().contains_key(http::header::HOST) {
        // An address fanned out from a host name is still addressed by that name.
        if let Some(v) = lease.virtual_host() {
            req.headers_mut().insert(http::header::HOST, v.clone());
        }
    }
    Ok(req)
}

/// What every attempt of one request is made from.
struct Call<B> {
    method: http::Method,
    pq: http::uri::PathAndQuery,
    version: http::Version,
    headers: http::HeaderMap,
    extensions: http::Extensions,
    host_policy: HostPolicy,
    source: Source<B>,
    response_timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
}

impl<B> Call<B> {
    /// The attempts' common part of the caller's request `parts`, sending `source`.
    fn new(cfg: &crate::config::Config, parts: http::request::Parts, source: Source<B>) -> Self {
        // The caller's Host survives: SigV4 signs it.
        let mut headers = parts.headers;
        if cfg.host_policy == HostPolicy::Keep && !headers.contains_key(http::header::HOST) {
            if let Some(a) = parts.uri.authority() {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    headers.insert(http::header::HOST, v);
                }
            }
        }
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        Call {
            method: parts.method,
            pq,
            version: parts.version,
            headers,
            extensions: parts.extensions,
            host_policy: cfg.host_policy,
            source,
            response_timeout: cfg.response_timeout,
            attempt_timeout: cfg.attempt_timeout,
        }
    }

    /// The request for the endpoint of `lease`, and the progress of its body.
    fn request(&self, lease: &Lease, head_waits: &Watchdog) -> Result<Prepared<B>, Error> {
        // An empty body never moves: the head wait then counts from the start, untracked.
        let progress = (!self.source.is_empty()).then(|| head_waits.progress());
        let mut body = self.source.body();
        if let Some(p) = &progress {
            body = body.with_progress(p.clone());
        }
        let req = rewrite(
            lease,
            &self.method,
            &self.pq,
            self.version,
            &self.headers,
            &self.extensions,
            self.host_policy,
            body,
        )?;
        Ok((req, progress))
    }
}

/// One attempt, up to its response head: `Err` when the inner service cannot take a request,
/// `Ok` with its answer otherwise (bounded by `response_timeout` and `attempt_timeout`).
async fn attempt<S, B, RB>(
    inner: &mut S,
    req: Request<RetryBody<B>>,
    head_waits: &Watchdog,
    progress: Option<Arc<Progress>>,
    response_timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
) -> Result<Result<Response<RB>, BoxError>, BoxError>
where
    S: Service<Request<RetryBody<B>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    std::future::poll_fn(|cx| inner.poll_ready(cx))
        .await
        .map_err(Into::into)?;
    // The idle-based wait for the head inside the optional overall cap, both ended by the
    // balancer's watchdog.
    let call = inner.call(req);
    Ok(
        match head_wait::bounded(
            head_waits,
            call,
            response_timeout,
            attempt_timeout,
            progress,
        )
        .await
        {
            Ok(r) => r.map_err(Into::into),
            Err(ended) => Err(Box::new(ended) as BoxError),
        },
    )
}

/// An attempt's answer as an outcome.
fn judged<RB>(result: Result<Response<RB>, BoxError>) -> (Outcome, Result<Response<RB>, BoxError>) {
    match result {
        Ok(resp) => (Outcome::Status(resp.status().as_u16()), Ok(resp)),
        Err(err) => (classify(&*err), Err(err)),
    }
}

/// The answer handed to the caller; an error names the endpoint (`url`, known only for errors:
/// no copy on the success path).
fn answer<RB>(
    answer: Result<Response<RB>, BoxError>,
    outcome: Outcome,
    url: Option<String>,
) -> Result<Response<RB>, Error> {
    answer.map_err(|err| {
        let kind = match outcome {
            Outcome::Connect => Kind::Connect,
            Outcome::Timeout => Kind::Timeout,
            // The caller's own body failed (see `retry::classify`).
            Outcome::Cancelled => Kind::Body,
            _ => Kind::Request,
        };
        Error::new(kind)
            .with_endpoint(url.unwrap_or_default())
            .with_source(err)
    })
}

fn not_ready(lease: Lease, e: BoxError) -> Error {
    lease.finish(Outcome::Cancelled);
    Error::new(Kind::Request).with_source(e)
}

/// The general request path: the body buffered when `buffer` (a retry after sending, or a
/// hedge, could use it: see [`buffers`]), then the hedged loop or the plain one.
async fn send<S, B, RB>(
    balancer: Balancer,
    inner: S,
    parts: http::request::Parts,
    body: B,
    idempotent: bool,
    buffer: bool,
) -> Result<Response<RB>, Error>
where
    S: Service<Request<RetryBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    let cfg = &balancer.core.cfg;
    let source = if buffer {
        let bytes = http_body_util::Limited::new(body, cfg.retry.buffer)
            .collect()
            .await
            .map_err(|e| Error::new(Kind::Body).with_source(e))?
            .to_bytes();
        Source::Replay(bytes)
    } else {
        let (hint, end) = (body.size_hint(), body.is_end_stream());
        Source::unbuffered(body, hint, end)
    };
    let call = Call::new(cfg, parts, source);
    let mut attempts = balancer.attempts(idempotent, call.source.replayable());
    let lease = attempts.pick()?;
    if let Some(delay) = attempts.hedge_delay(lease.site()) {
        return hedged(&balancer, inner, attempts, lease, &call, delay).await;
    }
    run(balancer, inner, attempts, lease, call).await
}

/// The plain request loop, from the attempt on `lease`: send, judge, and retry while the
/// engine says so.
async fn run<S, B, RB>(
    balancer: Balancer,
    mut inner: S,
    mut attempts: Attempts,
    mut lease: Lease,
    call: Call<B>,
) -> Result<Response<RB>, Error>
where
    S: Service<Request<RetryBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    let head_waits = &balancer.core.head_waits;
    // Bounded: `settle` bounds the attempts (max_attempts, the endpoints, the budget).
    loop {
        let (req, progress) = call.request(&lease, head_waits)?;
        let result = match attempt(
            &mut inner,
            req,
            head_waits,
            progress,
            call.response_timeout,
            call.attempt_timeout,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => return Err(not_ready(lease, e)),
        };
        let (outcome, result) = judged(result);
        let url = result.is_err().then(|| lease.url().to_string());
        match attempts.settle(lease, outcome, call.source.intact()) {
            Some(next) => lease = next,
            None => return answer(result, outcome, url),
        }
    }
}

// ===== hedged requests =====

/// What one attempt in flight resolves to: see [`attempt`].
type AttemptFuture<RB> =
    Pin<Box<dyn Future<Output = Result<Result<Response<RB>, BoxError>, BoxError>> + Send>>;

/// An attempt in flight. Dropping it drops the lease (finished as cancelled) and the request.
struct Running<RB> {
    lease: Lease,
    fut: AttemptFuture<RB>,
}

/// Send the request to the endpoint of `lease`, on a clone of `inner`, as an attempt that runs
/// beside the others.
fn start<S, B, RB>(
    balancer: &Balancer,
    inner: &S,
    call: &Call<B>,
    lease: Lease,
) -> Result<Running<RB>, Error>
where
    S: Service<Request<RetryBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    let (req, progress) = call.request(&lease, &balancer.core.head_waits)?;
    let mut svc = inner.clone();
    let balancer = balancer.clone();
    let (response_timeout, attempt_timeout) = (call.response_timeout, call.attempt_timeout);
    let fut = Box::pin(async move {
        attempt(
            &mut svc,
            req,
            &balancer.core.head_waits,
            progress,
            response_timeout,
            attempt_timeout,
        )
        .await
    });
    Ok(Running { lease, fut })
}

/// What woke the hedged loop.
enum Step<RB> {
    /// The attempt at this index answered.
    Answer(usize, Result<Result<Response<RB>, BoxError>, BoxError>),
    /// The hedge delay passed with no answer.
    Hedge,
}

/// The request loop with hedging (see [`crate::retry`]): the first attempt is sent; each time
/// the delay the engine gives ([`Attempts::hedge_delay`](crate::retry::Attempts::hedge_delay))
/// passes with no answer, the engine may lease one more endpoint
/// ([`Attempts::hedge`](crate::retry::Attempts::hedge)); the first answer the engine calls
/// done is the caller's, and the attempts still in flight are dropped. A failed attempt is
/// judged as in the plain loop (a retry joins the attempts in flight); a failure given up on
/// waits for the other attempts, if any.
async fn hedged<S, B, RB>(
    balancer: &Balancer,
    inner: S,
    mut attempts: Attempts,
    first: Lease,
    call: &Call<B>,
    delay: Duration,
) -> Result<Response<RB>, Error>
where
    S: Service<Request<RetryBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    let mut running = vec![start(balancer, &inner, call, first)?];
    let mut timer = Some(Box::pin(tokio::time::sleep(delay)));
    // Bounded: each round either sends one of at most `hedge_max` hedges or ends an attempt,
    // and `decide` bounds the attempts.
    loop {
        let step = std::future::poll_fn(|cx| {
            for (i, r) in running.iter_mut().enumerate() {
                if let Poll::Ready(out) = r.fut.as_mut().poll(cx) {
                    return Poll::Ready(Step::Answer(i, out));
                }
            }
            match timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Step::Hedge),
                _ => Poll::Pending,
            }
        })
        .await;
        match step {
            Step::Hedge => {
                timer = None;
                let hedge = {
                    let in_flight: Vec<&Lease> = running.iter().map(|r| &r.lease).collect();
                    attempts.hedge(&in_flight)
                };
                if let Some(lease) = hedge {
                    let site = lease.site();
                    running.push(start(balancer, &inner, call, lease)?);
                    timer = attempts
                        .hedge_delay(site)
                        .map(|d| Box::pin(tokio::time::sleep(d)));
                }
            }
            Step::Answer(i, out) => {
                let Running { lease, .. } = running.swap_remove(i);
                let result = match out {
                    Ok(r) => r,
                    Err(e) => return Err(not_ready(lease, e)),
                };
                let (outcome, result) = judged(result);
                let url = result.is_err().then(|| lease.url().to_string());
                match attempts.decide(lease, outcome, call.source.intact()) {
                    Decision::Retry(next, _) => {
                        let site = next.site();
                        running.push(start(balancer, &inner, call, next)?);
                        if running.len() == 1 {
                            // The delay counts from the attempt now alone in flight.
                            timer = attempts
                                .hedge_delay(site)
                                .map(|d| Box::pin(tokio::time::sleep(d)));
                        }
                    }
                    Decision::Done(done) => {
                        done.finish(outcome);
                        // The other attempts are cancelled; their time so far is observed.
                        for loser in running.drain(..) {
                            loser.lease.finish_outrun();
                        }
                        return answer(result, outcome, url);
                    }
                    Decision::GiveUp(_) if running.is_empty() => {
                        return answer(result, outcome, url)
                    }
                    // Another attempt may still answer.
                    Decision::GiveUp(_) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    use hyper_util::rt::TokioExecutor;
    use tokio::io::AsyncReadExt;
    use tower::ServiceExt;

    /// A backend that reads requests and never answers; stopped when the returned task is
    /// aborted.
    async fn silent() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            // Ends when the client closes the connection (or the task is aborted).
            while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_request_dropped_mid_attempt_leaves_the_watchdog_and_cancels_its_lease() {
        let (url, backend) = silent().await;
        let balancer = Balancer::builder()
            .site(&url)
            .health_check(false)
            .build()
            .unwrap();
        let inner: Client<HttpConnector, RetryBody<Full<Bytes>>> =
            Client::builder(TokioExecutor::new()).build_http();
        let svc = SidekickLayer::new(balancer.clone()).layer(inner);
        let req = Request::get("/key").body(Full::new(Bytes::new())).unwrap();
        let mut fut = Box::pin(svc.oneshot(req));
        tokio::select! {
            r = &mut fut => panic!("a silent backend answered: {r:?}"),
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        // Sent on the future itself: its head wait is watched, its endpoint leased.
        assert_eq!(balancer.core.head_waits.open(), 1);
        assert_eq!(balancer.endpoints()[0].inflight, 1);
        drop(fut);
        assert_eq!(balancer.core.head_waits.open(), 0);
        let e = &balancer.endpoints()[0];
        assert_eq!((e.inflight, e.failures, e.requests), (0, 0, 0), "{e:?}");
        backend.abort();
    }

    #[test]
    fn a_retry_body_is_as_small_as_a_full_body() {
        assert_eq!(
            std::mem::size_of::<RetryBody<Full<Bytes>>>(),
            std::mem::size_of::<Full<Bytes>>()
        );
    }
}
