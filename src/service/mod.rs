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
//! `poll_ready` is always ready: readiness of the inner service is awaited per attempt, and a
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
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tower_layer::Layer;
use tower_service::Service;

pub use body::RetryBody;

use crate::balancer::{Balancer, HostPolicy, Lease, Outcome};
use crate::error::{BoxError, Error, Kind};
use crate::head_wait::{self, Progress, Watchdog};
use crate::retry::{classify, is_idempotent_request, Decision};

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
}

impl<S> Sidekick<S> {
    /// Wrap `inner` (an HTTP client service) with `balancer`.
    pub fn new(balancer: Balancer, inner: S) -> Self {
        Sidekick { inner, balancer }
    }

    /// The balancer.
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The future returned by [`Sidekick`].
pub type ResponseFuture<RB> =
    Pin<Box<dyn Future<Output = Result<Response<RB>, Error>> + Send + 'static>>;

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
    type Future = ResponseFuture<RB>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // A clone, not the instance `poll_ready` saw: the inner service is made ready per attempt
        // (see `attempt`), so the usual swap would only move a large client for nothing.
        Box::pin(send(self.balancer.clone(), self.inner.clone(), req))
    }
}

// ===== the request loop =====

/// An attempt's request, and the progress of its body (none for an empty body).
type Prepared<B> = (Request<RetryBody<B>>, Option<Arc<Progress>>);

/// Where the body of each attempt comes from.
enum Source<B> {
    /// Buffered: every attempt gets the same bytes.
    Replay(Bytes),
    /// Streamed once; still in the slot while no attempt has read it.
    Stream(Arc<Mutex<Option<B>>>, http_body::SizeHint, bool),
}

impl<B> Source<B> {
    fn body(&self) -> RetryBody<B> {
        match self {
            Source::Replay(b) => RetryBody::full(b.clone()),
            Source::Stream(slot, hint, end) => RetryBody::lazy(slot.clone(), *hint, *end),
        }
    }

    /// Whether the body is known to be empty (nothing to send, so nothing to track).
    fn is_empty(&self) -> bool {
        match self {
            Source::Replay(b) => b.is_empty(),
            Source::Stream(_, _, end) => *end,
        }
    }

    fn intact(&self) -> bool {
        match self {
            Source::Replay(_) => true,
            Source::Stream(slot, _, _) => match slot.lock() {
                Ok(g) => g.is_some(),
                Err(p) => p.into_inner().is_some(),
            },
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, Source::Replay(_))
    }
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

async fn send<S, B, RB>(
    balancer: Balancer,
    mut inner: S,
    req: Request<B>,
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
    let (parts, body) = req.into_parts();
    let idempotent = is_idempotent_request(&parts.method, &parts.headers);

    // Body: buffer it when a retry after sending (or a hedge) could use it, stream it otherwise.
    let hint = body.size_hint();
    let source = if body.is_end_stream() {
        Source::Replay(Bytes::new())
    } else if idempotent
        && (cfg.retry.max_attempts > 1 || cfg.retry.hedge.enabled())
        && hint.upper().is_some_and(|u| u <= cfg.retry.buffer as u64)
    {
        let limit = cfg.retry.buffer;
        let bytes = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| Error::new(Kind::Body).with_source(e))?
            .to_bytes();
        Source::Replay(bytes)
    } else {
        let end = body.is_end_stream();
        Source::Stream(Arc::new(Mutex::new(Some(body))), hint, end)
    };

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
    let mut attempts = balancer.attempts(idempotent, source.replayable());
    let call = Call {
        method: parts.method,
        pq,
        version: parts.version,
        headers,
        extensions: parts.extensions,
        host_policy: cfg.host_policy,
        source,
        response_timeout: cfg.response_timeout,
        attempt_timeout: cfg.attempt_timeout,
    };

    let mut lease = attempts.pick()?;
    if let Some(delay) = attempts.hedge_delay(lease.site()) {
        // Boxed: hedging is opt-in, and its loop would otherwise add to every request's future.
        return Box::pin(hedged(&balancer, inner, attempts, lease, &call, delay)).await;
    }
    let head_waits = &balancer.core.head_waits;
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
    mut attempts: crate::retry::Attempts,
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
