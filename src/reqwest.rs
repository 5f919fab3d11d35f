//! A [reqwest-middleware] middleware that sends each request to a node chosen by a
//! [`Balancer`] (feature `reqwest`).
//!
//! Requests are written against a *virtual* base URL (`http://minio.cluster:9000/...`, which need
//! not resolve); [`SidekickMiddleware`] replaces its scheme and authority with the chosen node's
//! (prefixing the node's base path, if any), sets the `Host` header by the
//! [`HostPolicy`], and reports how the attempt went to the balancer (the status of a response,
//! or a connect, reset or timeout failure), which feeds latency scores and passive ejection.
//!
//! # With reqwest-retry
//!
//! Put [`RetryTransientMiddleware`] *before* (outside) this middleware: each of its retries then
//! runs this middleware again, so every retry picks a node again and a failing node is not tried
//! twice in a row.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use reqwest_retry::{policies::ExponentialBackoff, RetryTransientMiddleware};
//! use sidekick::reqwest::SidekickMiddleware;
//!
//! let balancer = sidekick::Balancer::builder()
//!     .site("http://10.0.0.{1...4}:9000")
//!     .health_path("/minio/health/ready")
//!     .build()?;
//! let retry = ExponentialBackoff::builder().build_with_max_retries(3);
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(RetryTransientMiddleware::new_with_policy(retry)) // outside: retries pick again
//!     .with(SidekickMiddleware::new(balancer))
//!     .build();
//! let resp = client.get("http://minio.cluster:9000/bucket/key").send().await?;
//! println!("{}", resp.status());
//! # Ok(()) }
//! ```
//!
//! A connection that cannot be established is moved to another node at once, inside the
//! middleware, when the request can be cloned (its body is not a stream): nothing was sent, so
//! this loads no backend, and each node is tried at most once
//! ([`SidekickMiddleware::connect_failover`]).
//!
//! Optionally ([`SidekickMiddleware::response_buffer`], off by default), a short response is
//! read whole before it is returned: when the node dies in the middle of it, the attempt counts
//! as a broken connection and an idempotent request goes to another node at once, within the
//! balancer's retry budget (reqwest-retry's default strategy does not retry a body that breaks
//! after the head, so nothing else would).
//!
//! A GET body that breaks after its head (the node died while it streamed) is resumed from
//! another node: the rest of the bytes, pinned to the same object version by its `ETag` (see
//! [`SidekickMiddleware::resume_client`]). The caller reads one uninterrupted body.
//!
//! A request whose body is in memory (at most 1 MiB) waits at most the balancer's
//! `response_timeout` (default 60 s) for its response head; a node that accepts and never
//! answers is then a timeout against it, and an idempotent request goes to another node here
//! (reqwest-retry does not retry the middleware error this is).
//!
//! Every other failure — a reset before the head, a timeout, a 503 — is returned to the caller
//! (or to the retry middleware): the balancer's own response-level retries (`max_attempts`,
//! `retry_statuses`) are not used here, retrying is reqwest-retry's job.
//!
//! When no node is available the middleware fails with a [`reqwest_middleware::Error::Middleware`]
//! wrapping a [`sidekick::Error`](crate::Error) for which `is_no_endpoint()` is true.
//! reqwest-retry's default strategy does not retry middleware errors.
//!
//! # Host
//!
//! [`HostPolicy::Keep`] (the default, and what S3 presigned URLs need: they sign the `Host`)
//! sends the virtual URL's authority, without its default port, as `Host` unless the request
//! already has one. [`HostPolicy::Rewrite`] sends the node's authority instead. Keep the
//! connection to the nodes on HTTP/1.1 (don't enable reqwest's `http2` with prior knowledge): on
//! HTTP/2 the authority comes from the URL, and a server may refuse a different `Host`.
//!
//! [reqwest-middleware]: https://docs.rs/reqwest-middleware
//! [`RetryTransientMiddleware`]: https://docs.rs/reqwest-retry

use std::sync::Arc;

use http::header::HOST;
use http::{Extensions, HeaderMap, HeaderValue, Method};
use reqwest::{Request, Response, ResponseBuilderExt, Url};
use reqwest_middleware::{Error, Middleware, Next};

use crate::balancer::{Balancer, HostPolicy, Lease, Outcome};
use crate::endpoint::EndpointId;
use crate::error::BoxError;
use crate::head_wait;
use crate::resume::{Plan, ResumeBody};
use crate::retry::{classify, is_idempotent_request};

/// A [`reqwest_middleware::Middleware`] that balances requests over a [`Balancer`]'s nodes.
/// See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct SidekickMiddleware {
    balancer: Balancer,
    host_policy: HostPolicy,
    connect_failover: bool,
    response_buffer: usize,
    resume_client: Option<reqwest::Client>,
}

/// Responses announced at most this long are read whole before the caller gets them (off).
const DEFAULT_RESPONSE_BUFFER: usize = 0;

impl SidekickMiddleware {
    /// A middleware over this balancer, with the balancer's [`HostPolicy`].
    pub fn new(balancer: Balancer) -> Self {
        SidekickMiddleware {
            host_policy: balancer.host_policy(),
            balancer,
            connect_failover: true,
            response_buffer: DEFAULT_RESPONSE_BUFFER,
            resume_client: reqwest::Client::builder().build().ok(),
        }
    }

    /// The client that fetches the rest of a GET body that broke in the middle, from another
    /// node (a `Range` request for the missing bytes with `If-Match: <ETag>`; the resumed
    /// answer must be those bytes of the same version, or the body ends with an error).
    /// `None` turns resuming off. Default: a plain `reqwest::Client` with reqwest's default
    /// settings for the features your build enables; pass your own client (the one under the
    /// middleware, say) when nodes need TLS settings, proxies or timeouts of your choosing.
    pub fn resume_client(mut self, client: Option<reqwest::Client>) -> Self {
        self.resume_client = client;
        self
    }

    /// What to do with the `Host` header. Default: the balancer's
    /// ([`Builder::host_policy`](crate::Builder::host_policy), itself [`HostPolicy::Keep`] by
    /// default).
    pub fn host_policy(mut self, policy: HostPolicy) -> Self {
        self.host_policy = policy;
        self
    }

    /// Move a request whose connection could not be established to another node at once (each
    /// node at most once), when the request can be cloned. Default is on. Off, the connect
    /// error is returned (reqwest-retry treats it as transient).
    pub fn connect_failover(mut self, enabled: bool) -> Self {
        self.connect_failover = enabled;
        self
    }

    /// Read a response whose announced length is at most `bytes` whole before returning it.
    /// When the node dies in the middle of such a body, the attempt counts as a broken
    /// connection: an idempotent request that can be cloned goes to another node at once
    /// (within the balancer's retry budget), since reqwest-retry does not retry a body that
    /// breaks after the head. Default is 0 (off: bodies are streamed as they come, and a break
    /// surfaces while the caller reads); 64 KiB is a reasonable value for small answers.
    pub fn response_buffer(mut self, bytes: usize) -> Self {
        self.response_buffer = bytes;
        self
    }

    /// The balancer.
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// Point `req` at the leased node and set its `Host`.
    fn retarget(&self, req: &mut Request, lease: &Lease, original: &Original) -> bool {
        let Ok(mut url) = Url::parse(&format!("{}{}", lease.url(), original.path_and_query)) else {
            return false;
        };
        if let Some((user, password)) = &original.userinfo {
            let _ = url.set_username(user);
            let _ = url.set_password(password.as_deref());
        }
        *req.url_mut() = url;
        match self.host_policy {
            HostPolicy::Rewrite => {
                if let Ok(v) = HeaderValue::from_str(lease.authority().as_str()) {
                    req.headers_mut().insert(HOST, v);
                }
            }
            _ => {
                if let Some(h) = &original.host {
                    req.headers_mut().insert(HOST, h.clone());
                }
            }
        }
        true
    }
}

/// What every attempt of one request keeps from the caller's URL.
struct Original {
    /// Path and query, e.g. `/bucket/key?x-id=1`.
    path_and_query: String,
    /// User name and password, if the URL had any.
    userinfo: Option<(String, Option<String>)>,
    /// The `Host` to send under [`HostPolicy::Keep`] (none when the request has one already).
    host: Option<HeaderValue>,
}

impl Original {
    fn new(req: &Request, policy: HostPolicy) -> Original {
        let url = req.url();
        let userinfo = (!url.username().is_empty() || url.password().is_some()).then(|| {
            (
                url.username().to_string(),
                url.password().map(str::to_string),
            )
        });
        let host = match (policy, req.headers().get(HOST)) {
            (HostPolicy::Rewrite, _) | (_, Some(_)) => None,
            (_, None) => url_host(url),
        };
        Original {
            path_and_query: url[url::Position::BeforePath..url::Position::AfterQuery].to_string(),
            userinfo,
            host,
        }
    }
}

/// The `Host` a client would send for `url`: its host, and its port unless it is the scheme's
/// default (`Url::port` leaves default ports out).
fn url_host(url: &Url) -> Option<HeaderValue> {
    let host = url.host_str()?;
    let value = match url.port() {
        Some(p) => HeaderValue::from_str(&format!("{host}:{p}")),
        None => HeaderValue::from_str(host),
    };
    value.ok()
}

/// What a failed attempt tells the balancer about the node: the engine's [`classify`] of
/// reqwest's error; a failure of a middleware further down says nothing about the node.
fn outcome_of(err: &reqwest_middleware::Error) -> Outcome {
    match err {
        reqwest_middleware::Error::Reqwest(e) => classify(e),
        reqwest_middleware::Error::Middleware(e) => {
            let timed_out = e
                .downcast_ref::<crate::Error>()
                .is_some_and(crate::Error::is_timeout);
            if timed_out {
                Outcome::Timeout
            } else {
                Outcome::Cancelled
            }
        }
    }
}

/// Requests whose body is at most this long (and in memory) get the `response_timeout` head
/// wait, counted from the attempt's start; a longer or streamed body is bounded by reqwest's own
/// timeouts only (its upload could take longer than the wait).
const HEAD_WAIT_BODY_MAX: usize = 1 << 20;

/// The error of an attempt whose head did not come within `response_timeout`.
fn head_timeout(expired: std::io::Error, lease: &Lease) -> Error {
    Error::middleware(
        crate::Error::new(crate::error::Kind::Timeout)
            .with_endpoint(lease.url())
            .with_source(expired),
    )
}

/// Read a short response whole (see [`SidekickMiddleware::response_buffer`]).
async fn read_short(resp: Response, limit: usize) -> Result<Response, reqwest::Error> {
    let short = resp
        .content_length()
        .is_some_and(|n| n > 0 && n <= limit as u64);
    if !short {
        return Ok(resp);
    }
    let url = resp.url().clone();
    let (mut parts, body) = http::Response::<reqwest::Body>::from(resp).into_parts();
    let bytes = crate::transport::read_whole(body).await?;
    // reqwest keeps a response's URL in an extension only its builder extension can set.
    if let Ok(marker) = http::Response::builder().url(url).body(()) {
        parts.extensions.extend(marker.into_parts().0.extensions);
    }
    Ok(Response::from(http::Response::from_parts(parts, bytes)))
}

impl SidekickMiddleware {
    /// `resp` with a body that resumes from another node if it breaks (when it can: see
    /// [`crate::resume`]).
    fn resumable(
        &self,
        resp: Response,
        headers: HeaderMap,
        original: &Original,
        node: EndpointId,
    ) -> Response {
        let Some(client) = self.resume_client.clone() else {
            return resp;
        };
        let Some(plan) = Plan::new(&Method::GET, &headers, resp.status(), resp.headers()) else {
            return resp;
        };
        let url = resp.url().clone();
        let (mut parts, body) = http::Response::<reqwest::Body>::from(resp).into_parts();
        let resume = Arc::new(Resume {
            client,
            balancer: self.balancer.clone(),
            host_policy: self.host_policy,
            headers,
            path_and_query: original.path_and_query.clone(),
            plan: plan.clone(),
            broken: node,
        });
        let body = ResumeBody::new(body, plan, move |offset| {
            let resume = resume.clone();
            Box::pin(async move { resume.fetch(offset).await })
        });
        // reqwest keeps a response's URL in an extension only its builder extension can set.
        if let Ok(marker) = http::Response::builder().url(url).body(()) {
            parts.extensions.extend(marker.into_parts().0.extensions);
        }
        Response::from(http::Response::from_parts(parts, reqwest::Body::wrap(body)))
    }
}

/// What resuming one GET body needs.
struct Resume {
    client: reqwest::Client,
    balancer: Balancer,
    host_policy: HostPolicy,
    /// The request's headers as sent (signed ones included).
    headers: HeaderMap,
    path_and_query: String,
    plan: Plan,
    /// The node whose body broke.
    broken: EndpointId,
}

impl Resume {
    /// GET the bytes from `offset` on from another node.
    async fn fetch(&self, offset: u64) -> Result<reqwest::Body, BoxError> {
        let mut headers = self.headers.clone();
        for (name, value) in self.plan.headers(offset)? {
            headers.insert(name, value);
        }
        // A GET without a body: replayable, retried on another node by the engine's rules.
        let mut attempts = self.balancer.attempts(true, true);
        attempts.exclude(self.broken);
        let mut lease = attempts.pick()?;
        loop {
            let url = Url::parse(&format!("{}{}", lease.url(), self.path_and_query))?;
            if self.host_policy == HostPolicy::Rewrite {
                headers.insert(HOST, HeaderValue::from_str(lease.authority().as_str())?);
            }
            let (outcome, answer) = match self.client.get(url).headers(headers.clone()).send().await
            {
                Ok(resp) => (Outcome::Status(resp.status().as_u16()), Ok(resp)),
                Err(e) => {
                    let e = Error::Reqwest(e);
                    (outcome_of(&e), Err(e))
                }
            };
            if let Some(next) = attempts.settle(lease, outcome, true) {
                lease = next;
                continue;
            }
            let resp = answer?;
            self.plan.check(offset, resp.status(), resp.headers())?;
            return Ok(http::Response::<reqwest::Body>::from(resp).into_body());
        }
    }
}

#[async_trait::async_trait]
impl Middleware for SidekickMiddleware {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let original = Original::new(&req, self.host_policy);
        let idempotent = is_idempotent_request(req.method(), req.headers());
        // A body that is not a stream can be cloned, hence sent again.
        let replayable = req.body().is_none_or(|b| b.as_bytes().is_some());
        let mut attempts = self.balancer.attempts(idempotent, replayable);
        let mut lease = attempts.pick().map_err(Error::middleware)?;
        // The head wait counts from the attempt's start: only where the body goes out at once.
        let small = req
            .body()
            .is_none_or(|b| b.as_bytes().is_some_and(|b| b.len() <= HEAD_WAIT_BODY_MAX));
        let head_wait = if small {
            self.balancer.core.cfg.response_timeout
        } else {
            None
        };
        let mut req = req;
        loop {
            if !self.retarget(&mut req, &lease, &original) {
                let msg = format!("cannot join {} and {}", lease.url(), req.url().path());
                lease.finish(Outcome::Cancelled);
                return Err(Error::middleware(crate::Error::config(msg)));
            }
            // Keep a copy only where a failure could use it.
            let spare = if self.connect_failover
                || (idempotent && (self.response_buffer > 0 || head_wait.is_some()))
            {
                req.try_clone()
            } else {
                None
            };
            // A GET's headers, for resuming its body (see `resume_client`).
            let resume_headers = (self.resume_client.is_some() && req.method() == Method::GET)
                .then(|| req.headers().clone());
            let head_waits = &self.balancer.core.head_waits;
            let sent = head_wait::bounded(
                head_waits,
                next.clone().run(req, extensions),
                head_wait,
                None,
                None,
            )
            .await;
            let (outcome, err, mid_body) =
                match sent.unwrap_or_else(|e| Err(head_timeout(e, &lease))) {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        match read_short(resp, self.response_buffer).await {
                            Ok(resp) => {
                                let node = lease.id();
                                lease.finish(Outcome::Status(status));
                                return Ok(match resume_headers {
                                    Some(headers) => self.resumable(resp, headers, &original, node),
                                    None => resp,
                                });
                            }
                            // The head came, the body broke: the node went away mid-answer.
                            Err(e) => (Outcome::Reset, Error::Reqwest(e), true),
                        }
                    }
                    Err(err) => (outcome_of(&err), err, false),
                };
            // Only a connect failure (when `connect_failover`) and a body broken after the head
            // (when `response_buffer`) are retried here; the rest is the retry middleware's.
            // A head that never came (`response_timeout`) is retried here too: reqwest-retry
            // does not retry a middleware error.
            let ours = mid_body
                || (outcome == Outcome::Connect && self.connect_failover)
                || (outcome == Outcome::Timeout && idempotent);
            let Some(again) = spare.filter(|_| ours) else {
                lease.finish(outcome);
                return Err(err);
            };
            let Some(next) = attempts.settle(lease, outcome, true) else {
                return Err(err);
            };
            lease = next;
            req = again;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_host_leaves_default_ports_out() {
        let h = |u: &str| url_host(&Url::parse(u).unwrap()).unwrap();
        assert_eq!(h("http://s3.local/b"), "s3.local");
        assert_eq!(h("http://s3.local:80/b"), "s3.local");
        assert_eq!(h("https://s3.local:443/b"), "s3.local");
        assert_eq!(h("http://s3.local:9000/b"), "s3.local:9000");
        assert_eq!(h("http://[::1]:9000/b"), "[::1]:9000");
    }

    #[tokio::test]
    async fn every_attempt_starts_from_the_callers_url() {
        let balancer = Balancer::builder()
            .site("http://127.0.0.1:9001/base,http://127.0.0.2:9002")
            .health_check(false)
            .build()
            .unwrap();
        let mw = SidekickMiddleware::new(balancer.clone());
        let url = Url::parse("http://user:pw@s3.cluster:9000/bucket/key?x-id=1").unwrap();
        let mut req = Request::new(reqwest::Method::GET, url);
        let original = Original::new(&req, HostPolicy::Keep);
        let mut seen = Vec::new();
        let mut tried = Vec::new();
        while let Ok(lease) = balancer.pick_excluding(&tried) {
            assert!(mw.retarget(&mut req, &lease, &original));
            assert_eq!(req.headers()[HOST], "s3.cluster:9000");
            seen.push(req.url().to_string());
            tried.push(lease.id());
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "http://user:pw@127.0.0.1:9001/base/bucket/key?x-id=1",
                "http://user:pw@127.0.0.2:9002/bucket/key?x-id=1",
            ]
        );

        let rewrite = mw.clone().host_policy(HostPolicy::Rewrite);
        let original = Original::new(&req, HostPolicy::Rewrite);
        let lease = balancer.pick().unwrap();
        assert!(rewrite.retarget(&mut req, &lease, &original));
        assert_eq!(req.headers()[HOST], lease.authority().as_str());
    }
}
