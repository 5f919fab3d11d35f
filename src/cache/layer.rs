//! The cache as tower middleware: [`CacheLayer`] wraps the service that reaches the origin
//! (normally the balanced [`Sidekick`](crate::service::Sidekick) service), so the library's
//! users and the sidecar run the same code.
//!
//! For each request:
//!
//! - `PUT`, `POST`, `DELETE`: sent as is; a `2xx` answer deletes the entry of the URL (and of
//!   the URL without its query) before the answer is returned.
//! - `GET`/`HEAD` that may use the cache (no `Range`, no conditional header of the client's
//!   own but `If-Match`/`If-Unmodified-Since`), while the store is healthy: the
//!   entry is looked up. With an entry, the client's own request — its credentials and
//!   signature untouched — goes to the origin with `If-None-Match: <stored ETag>` added
//!   (`If-None-Match` is not among the headers a SigV4 signature covers, so it stays valid).
//!   Only a `304` releases the stored status, headers (refreshed by the `304`'s) and body;
//!   a `200` is a changed object, streamed to the client and stored again; a `404`/`410`
//!   deletes the entry; anything else (`403`...) is passed on and the entry is left alone.
//!   Without an entry, the request is sent as is and a storable answer is copied to the
//!   store while it streams to the client.
//! - Anything else, or any `GET`/`HEAD` while the store is unhealthy: sent as is.
//!
//! The origin's errors are returned unchanged (`S::Error`); the cache adds none of its own.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, ETAG, IF_MATCH, IF_NONE_MATCH, RANGE};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tokio::sync::mpsc;
use tower_layer::Layer;
use tower_service::Service;

use super::body::{Cached, RequestBody, ResponseBody, Resume, Tee};
use super::entry::Head;
use super::key::Key;
use super::metrics::Counters;
use super::policy;
use super::store::{Found, Lookup, Stored};
use super::Cache;
use crate::error::BoxError;

/// Pieces of a body in flight to the store's upload.
const UPLOAD_QUEUE: usize = 16;

/// A tower [`Layer`] that puts a shared S3 cache in front of an HTTP service.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use sidekick::cache::{Cache, CacheConfig, CacheLayer, RequestBody};
/// use sidekick::service::{RetryBody, SidekickLayer};
/// use tower::{Layer, ServiceExt};
/// # use bytes::Bytes; use http_body_util::Full;
/// # use hyper_util::client::legacy::{connect::HttpConnector, Client};
///
/// let balancer = sidekick::Balancer::builder().site("http://127.0.0.1:{9001...9004}").build()?;
/// let cache = Cache::new(CacheConfig::from_env()?.expect("SIDEKICK_CACHE_ENDPOINT is set"))?;
/// let client: Client<HttpConnector, RetryBody<RequestBody<Full<Bytes>>>> =
///     Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
/// let svc = CacheLayer::new(cache).layer(SidekickLayer::new(balancer).layer(client));
/// let resp = svc.oneshot(http::Request::get("/bucket/key").body(Full::new(Bytes::new()))?).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CacheLayer {
    cache: Option<Cache>,
}

impl CacheLayer {
    /// A layer over this cache.
    pub fn new(cache: Cache) -> Self {
        CacheLayer { cache: Some(cache) }
    }

    /// A layer that passes everything through: one service type whether or not a cache is
    /// configured.
    pub fn disabled() -> Self {
        CacheLayer { cache: None }
    }

    /// [`CacheLayer::new`] with a cache, [`CacheLayer::disabled`] without.
    pub fn optional(cache: Option<Cache>) -> Self {
        CacheLayer { cache }
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> CacheService<S> {
        CacheService {
            inner,
            cache: self.cache.clone(),
        }
    }
}

/// The service made by [`CacheLayer`]. It sends [`RequestBody`]s to the inner service and
/// answers with [`ResponseBody`]s.
#[derive(Clone, Debug)]
pub struct CacheService<S> {
    inner: S,
    cache: Option<Cache>,
}

impl<S> CacheService<S> {
    /// The cache, when there is one.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
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

/// The future returned by [`CacheService`].
pub type ResponseFuture<RB, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<RB>>, E>> + Send + 'static>>;

impl<S, B, RB> Service<Request<B>> for CacheService<S>
where
    S: Service<Request<RequestBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    B: Body + Send + 'static,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<RB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match &self.cache {
            None => {
                let fut = self.inner.call(req.map(RequestBody::client));
                Box::pin(async move { Ok(fut.await?.map(|b| ResponseBody::origin(b, None))) })
            }
            Some(cache) => {
                // The ready service serves this request (which may take several calls); a
                // fresh clone waits for the next one.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(serve(cache.clone(), inner, req))
            }
        }
    }
}

async fn serve<S, B, RB>(
    cache: Cache,
    mut inner: S,
    req: Request<B>,
) -> Result<Response<ResponseBody<RB>>, S::Error>
where
    S: Service<Request<RequestBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    B: Body + Send + 'static,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    let c = &cache.inner;
    let counters = Some(c.counters.clone());
    let (parts, body) = req.into_parts();

    if policy::is_write(&parts.method) {
        let keys: Vec<Key> = std::iter::once(Key::of(&parts))
            .chain(Key::without_query(&parts))
            .collect();
        let resp = inner
            .call(Request::from_parts(parts, RequestBody::client(body)))
            .await?;
        if resp.status().is_success() && cache.is_healthy() {
            for key in &keys {
                cache.invalidate(key).await;
            }
        }
        return Ok(resp.map(|b| ResponseBody::origin(b, counters)));
    }

    let looks = policy::may_look_up(&parts);
    if !looks || !cache.is_healthy() {
        if parts.method == Method::GET || parts.method == Method::HEAD {
            Counters::inc(&c.counters.bypasses);
        }
        let resp = inner
            .call(Request::from_parts(parts, RequestBody::client(body)))
            .await?;
        return Ok(resp.map(|b| ResponseBody::origin(b, counters)));
    }

    let key = Key::of(&parts);
    let head_only = parts.method == Method::HEAD;
    let found = match c.store.get(&key, head_only).await {
        Lookup::Found(f) => {
            if f.head.etag().is_some() && policy::vary_matches(&f.head.vary, &parts.headers) {
                Some(f)
            } else {
                None
            }
        }
        Lookup::Miss => None,
        Lookup::Failed(e) => {
            cache.store_failed("lookup", &e);
            Counters::inc(&c.counters.bypasses);
            let resp = inner
                .call(Request::from_parts(parts, RequestBody::client(body)))
                .await?;
            return Ok(resp.map(|b| ResponseBody::origin(b, counters)));
        }
    };
    match found {
        Some(found) => revalidate(cache, inner, parts, body, key, *found).await,
        None => {
            Counters::inc(&c.counters.misses);
            let store_ok = policy::request_allows_store(&parts);
            let vary_req = parts.headers.clone();
            let resp = inner
                .call(Request::from_parts(parts, RequestBody::client(body)))
                .await?;
            Ok(maybe_store(&cache, key, store_ok, &vary_req, resp))
        }
    }
}

/// An entry was found: ask the origin whether it still holds, with the client's credentials.
async fn revalidate<S, B, RB>(
    cache: Cache,
    mut inner: S,
    mut parts: Parts,
    body: B,
    key: Key,
    found: Found,
) -> Result<Response<ResponseBody<RB>>, S::Error>
where
    S: Service<Request<RequestBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    B: Body + Send + 'static,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    let c = &cache.inner;
    let counters = c.counters.clone();
    let Some(etag) = found.head.etag().cloned() else {
        // Checked by the caller; an entry without an ETag is never used.
        let resp = inner
            .call(Request::from_parts(parts, RequestBody::client(body)))
            .await?;
        return Ok(resp.map(|b| ResponseBody::origin(b, Some(counters))));
    };
    Counters::inc(&counters.revalidations);
    // What finishing the body from the origin needs, should the store break mid-way.
    let saved = (
        parts.uri.clone(),
        parts.version,
        parts.headers.clone(),
        parts.extensions.clone(),
    );
    let is_head = parts.method == Method::HEAD;
    let store_ok = policy::request_allows_store(&parts);
    let vary_req = parts.headers.clone();
    parts.headers.insert(IF_NONE_MATCH, etag.clone());
    let resp = inner
        .call(Request::from_parts(parts, RequestBody::client(body)))
        .await?;
    match resp.status() {
        StatusCode::NOT_MODIFIED => {
            Counters::inc(&counters.hits);
            let (mut rparts, _) = resp.into_parts();
            rparts.headers = policy::merge_not_modified(&found.head.headers, &rparts.headers);
            rparts.status = found.head.status;
            if is_head {
                return Ok(Response::from_parts(rparts, ResponseBody::empty()));
            }
            let resume = resume_fn(inner, saved, etag.clone(), found.head.body_len);
            let body = ResponseBody::cached(Cached {
                first: Some(found.first),
                stream: found.rest,
                sent: 0,
                total: found.head.body_len,
                etag,
                idle: c.cfg.store_timeout(),
                idle_timer: None,
                resume: Some(resume),
                resuming: None,
                tail: None,
                counters,
            });
            Ok(Response::from_parts(rparts, body))
        }
        StatusCode::OK => {
            Counters::inc(&counters.changed);
            let unchanged = resp
                .headers()
                .get(ETAG)
                .is_some_and(|e| policy::weak_match(e, &etag));
            if unchanged {
                // The origin ignored the condition: the entry still holds.
                return Ok(resp.map(|b| ResponseBody::origin(b, Some(counters))));
            }
            if is_head {
                // Changed, and a HEAD has no body to store in its place.
                cache.invalidate_later(key);
                return Ok(resp.map(|b| ResponseBody::origin(b, Some(counters))));
            }
            let out = maybe_store(&cache, key.clone(), store_ok, &vary_req, resp);
            if !out.body().is_storing() {
                cache.invalidate_later(key);
            }
            Ok(out)
        }
        StatusCode::NOT_FOUND | StatusCode::GONE => {
            Counters::inc(&counters.changed);
            cache.invalidate_later(key);
            Ok(resp.map(|b| ResponseBody::origin(b, Some(counters))))
        }
        _ => {
            // Refused credentials, a failed precondition of the client's, an origin error:
            // the client gets exactly that, and the entry stays for those allowed to read it.
            Counters::inc(&counters.changed);
            Ok(resp.map(|b| ResponseBody::origin(b, Some(counters))))
        }
    }
}

/// The request that fetches the rest of a cached body from the origin: the client's request
/// (same credentials) for `Range: bytes=<sent>-`, only if the object still has this ETag.
fn resume_fn<S, B, RB>(
    inner: S,
    saved: (http::Uri, http::Version, http::HeaderMap, http::Extensions),
    etag: HeaderValue,
    total: u64,
) -> Resume<RB>
where
    S: Service<Request<RequestBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    B: Body + Send + 'static,
    RB: Send + 'static,
{
    Box::new(move |sent: u64| {
        let mut svc = inner;
        Box::pin(async move {
            let (uri, version, mut headers, extensions) = saved;
            headers.remove(IF_NONE_MATCH);
            headers.insert(IF_MATCH, etag);
            let range = format!("bytes={sent}-{}", total.saturating_sub(1));
            headers.insert(
                RANGE,
                HeaderValue::from_str(&range).map_err(|e| Box::new(e) as BoxError)?,
            );
            let mut req = Request::new(RequestBody::<B>::empty());
            *req.method_mut() = Method::GET;
            *req.uri_mut() = uri;
            *req.version_mut() = version;
            *req.headers_mut() = headers;
            *req.extensions_mut() = extensions;
            std::future::poll_fn(|cx| svc.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            svc.call(req).await.map_err(Into::into)
        })
    })
}

/// Copy a storable answer to the store while it streams to the client; pass any other on.
fn maybe_store<RB>(
    cache: &Cache,
    key: Key,
    store_ok: bool,
    req_headers: &http::HeaderMap,
    resp: Response<RB>,
) -> Response<ResponseBody<RB>>
where
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    let c = &cache.inner;
    let counters = c.counters.clone();
    let (parts, body) = resp.into_parts();
    let body_len = match policy::storable(&parts, c.cfg.min_size()) {
        Ok(n) if store_ok => n,
        _ => return Response::from_parts(parts, ResponseBody::origin(body, Some(counters))),
    };
    let Some(fields) = policy::vary_fields(&parts.headers) else {
        return Response::from_parts(parts, ResponseBody::origin(body, Some(counters)));
    };
    let mut headers = parts.headers.clone();
    crate::hop::strip_hop_by_hop(&mut headers, false);
    let head = Head {
        status: parts.status,
        headers,
        key_text: key.text.clone(),
        vary: policy::vary_values(&fields, req_headers),
        body_len,
    };
    let Some(block) = head.encode() else {
        return Response::from_parts(parts, ResponseBody::origin(body, Some(counters)));
    };
    // One upload per entry at a time in this process: concurrent misses of one object store
    // it once.
    let Some(guard) = Storing::claim(&c.storing, &key.object) else {
        return Response::from_parts(parts, ResponseBody::origin(body, Some(counters)));
    };
    let (tx, rx) = mpsc::channel(UPLOAD_QUEUE);
    let task_cache = cache.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let c = &task_cache.inner;
        match c.store.put(&key, block, body_len, rx).await {
            Stored::Done => Counters::inc(&c.counters.stores),
            Stored::Aborted => Counters::inc(&c.counters.store_aborts),
            Stored::Failed(e) => task_cache.store_failed("upload", &e),
        }
    });
    let tee = Tee::new(tx, c.cfg.store_timeout(), counters);
    Response::from_parts(parts, ResponseBody::tee(body, tee))
}

/// A claim on uploading one entry; released when dropped.
struct Storing {
    set: Arc<Mutex<HashSet<String>>>,
    object: String,
}

impl Storing {
    fn claim(set: &Arc<Mutex<HashSet<String>>>, object: &str) -> Option<Storing> {
        let mut s = set.lock().unwrap_or_else(|p| p.into_inner());
        if !s.insert(object.to_string()) {
            return None;
        }
        Some(Storing {
            set: set.clone(),
            object: object.to_string(),
        })
    }
}

impl Drop for Storing {
    fn drop(&mut self) {
        let mut s = self.set.lock().unwrap_or_else(|p| p.into_inner());
        s.remove(&self.object);
    }
}
