//! Fixtures for the shared-cache tests: an origin (one s3s-fs process) behind a conditional
//! front, a cache store (another s3s-fs process over its own data directory), a TCP proxy that
//! can cut the store's answers short, and aws-sdk-s3 clients.
//!
//! s3s-fs 0.14.1 checks SigV4 signatures but ignores `If-None-Match` on `GetObject` (it always
//! answers 200). Real S3 and MinIO answer `304 Not Modified` when the ETag matches, and that is
//! what the cache relies on, so the origin is reached through [`ConditionalFront`]: it forwards
//! every request unchanged to s3s-fs (which verifies the signature with the extra header in
//! place, so a request it accepts proves the signature survived), and turns a `200` whose ETag
//! matches the request's `If-None-Match` into a `304` without a body. It counts the body bytes
//! it passes on: the origin bytes a client of the cache costs. It also answers `GET /health`
//! with 200 itself (s3s-fs has no health endpoint), for the sidecar's probes.
//!
//! Everything listens on 127.0.0.1; the s3s-fs processes are stopped by PID when their
//! [`S3Cluster`] is dropped, the in-process servers when their handle is dropped.
#![cfg(feature = "cache")]
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sidekick::aws::SidekickHttpClient;
use sidekick::cache::CacheConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::s3::{S3Cluster, ACCESS_KEY, SECRET_KEY};

/// The bucket objects live in at the origin.
pub const ORIGIN_BUCKET: &str = "data";
/// The bucket the cache keeps entries in.
pub const CACHE_BUCKET: &str = "sidekick-cache";

/// What a [`ConditionalFront`] saw.
#[derive(Debug, Default)]
pub struct Counts {
    /// Requests forwarded (health checks excluded).
    pub requests: AtomicU64,
    /// Requests that carried `If-None-Match`.
    pub conditional: AtomicU64,
    /// `304`s answered.
    pub not_modified: AtomicU64,
    /// Requests that carried `Range`.
    pub ranged: AtomicU64,
    /// Response body bytes passed on to the client.
    pub body_bytes: AtomicU64,
}

impl Counts {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }
}

type Resp = Response<UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>>;

/// The origin's front: forwards to one s3s-fs node and implements `If-None-Match` on its
/// `200`s. Stopped when dropped.
pub struct ConditionalFront {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConditionalFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConditionalFront {
    pub async fn start(upstream: SocketAddr) -> ConditionalFront {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the front");
        let addr = listener.local_addr().expect("front address");
        let counts = Arc::new(Counts::default());
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build_http();
        let c = counts.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let client = client.clone();
                let counts = c.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        front(req, client.clone(), upstream, counts.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        ConditionalFront { addr, counts, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Origin body bytes passed on so far.
    pub fn body_bytes(&self) -> u64 {
        Counts::get(&self.counts.body_bytes)
    }
}

fn etag_listed(list: &HeaderValue, etag: &HeaderValue) -> bool {
    let strip = |s: &str| s.trim().trim_start_matches("W/").to_string();
    let (Ok(list), Ok(etag)) = (list.to_str(), etag.to_str()) else {
        return false;
    };
    list.split(',')
        .any(|t| t.trim() == "*" || strip(t) == strip(etag))
}

async fn front(
    req: Request<Incoming>,
    client: Client<HttpConnector, Incoming>,
    upstream: SocketAddr,
    counts: Arc<Counts>,
) -> Result<Resp, Infallible> {
    if req.uri().path() == "/health" {
        let mut r = Response::new(boxed(http_body_util::Empty::new()));
        *r.status_mut() = StatusCode::OK;
        return Ok(r);
    }
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let inm = req.headers().get(header::IF_NONE_MATCH).cloned();
    if inm.is_some() {
        counts.conditional.fetch_add(1, Ordering::SeqCst);
    }
    if req.headers().contains_key(header::RANGE) {
        counts.ranged.fetch_add(1, Ordering::SeqCst);
    }
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    parts.uri = match format!("http://{upstream}{pq}").parse() {
        Ok(u) => u,
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    let resp = match client.request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(_) => return Ok(status(StatusCode::BAD_GATEWAY)),
    };
    let (rparts, rbody) = resp.into_parts();
    let matched = match (&inm, rparts.headers.get(header::ETAG)) {
        (Some(list), Some(etag)) => rparts.status == StatusCode::OK && etag_listed(list, etag),
        _ => false,
    };
    if matched {
        counts.not_modified.fetch_add(1, Ordering::SeqCst);
        drop(rbody);
        let mut r = Response::new(boxed(http_body_util::Empty::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        for name in [
            header::ETAG,
            header::LAST_MODIFIED,
            header::DATE,
            header::CACHE_CONTROL,
            header::EXPIRES,
            header::HeaderName::from_static("x-amz-request-id"),
        ] {
            if let Some(v) = rparts.headers.get(&name) {
                r.headers_mut().insert(name, v.clone());
            }
        }
        return Ok(r);
    }
    let counted = Counted {
        inner: rbody,
        counts,
    };
    Ok(Response::from_parts(rparts, boxed(counted)))
}

fn boxed<B>(b: B) -> UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    b.map_err(Into::into).boxed_unsync()
}

fn status(s: StatusCode) -> Resp {
    let mut r = Response::new(boxed(http_body_util::Empty::new()));
    *r.status_mut() = s;
    r
}

/// A body whose data bytes are counted.
struct Counted {
    inner: Incoming,
    counts: Arc<Counts>,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                this.counts
                    .body_bytes
                    .fetch_add(d.len() as u64, Ordering::SeqCst);
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A TCP proxy that can cut every connection's answers short: armed with `n`, each connection
/// passes at most `n` more bytes downstream, then both sides are closed. Stopped when
/// dropped.
pub struct CutProxy {
    addr: SocketAddr,
    limit: Arc<AtomicU64>,
    epoch: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CutProxy {
    pub async fn start(upstream: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the cut proxy");
        let addr = listener.local_addr().expect("proxy address");
        let limit = Arc::new(AtomicU64::new(u64::MAX));
        let epoch = Arc::new(AtomicU64::new(0));
        let (l, e) = (limit.clone(), epoch.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let (limit, epoch) = (l.clone(), e.clone());
                conns.spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                        let _ = sw.shutdown().await;
                    };
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut seen_epoch = epoch.load(Ordering::SeqCst);
                        let mut passed = 0u64;
                        loop {
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let now = epoch.load(Ordering::SeqCst);
                            if now != seen_epoch {
                                seen_epoch = now;
                                passed = 0;
                            }
                            let lim = limit.load(Ordering::SeqCst);
                            let allowed = lim.saturating_sub(passed).min(n as u64) as usize;
                            if cw.write_all(&buf[..allowed]).await.is_err() {
                                break;
                            }
                            passed += allowed as u64;
                            if allowed < n {
                                break;
                            }
                        }
                    };
                    // Whichever side ends first ends the connection.
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        CutProxy {
            addr,
            limit,
            epoch,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cut each connection after `n` more bytes downstream.
    pub fn arm(&self, n: u64) {
        self.limit.store(n, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Stop cutting.
    pub fn disarm(&self) {
        self.limit.store(u64::MAX, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// An aws-sdk-s3 client for `url` (signing for it), with this secret, over sidekick's HTTP
/// client (probes off), quick retries.
pub fn s3_client(url: &str, secret: &str) -> aws_sdk_s3::Client {
    let balancer = sidekick::Balancer::builder()
        .site(url)
        .health_check(false)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("balancer");
    let http = SidekickHttpClient::new(balancer).expect("http client");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(ACCESS_KEY, secret, None, None, "test"))
        .endpoint_url(url)
        .force_path_style(true)
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .http_client(http)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// An origin behind its conditional front, and a cache store, both with their bucket.
pub struct CacheRig {
    pub origin: S3Cluster,
    pub front: ConditionalFront,
    pub store: S3Cluster,
}

impl CacheRig {
    pub async fn start() -> CacheRig {
        let origin = S3Cluster::start(1).await;
        let store = S3Cluster::start(1).await;
        let front = ConditionalFront::start(origin.nodes[0].addr()).await;
        let rig = CacheRig {
            origin,
            front,
            store,
        };
        rig.origin_s3()
            .create_bucket()
            .bucket(ORIGIN_BUCKET)
            .send()
            .await
            .expect("create the origin bucket");
        rig.store_s3()
            .create_bucket()
            .bucket(CACHE_BUCKET)
            .send()
            .await
            .expect("create the cache bucket");
        rig
    }

    /// The cache store's URL.
    pub fn store_url(&self) -> String {
        self.store.nodes[0].url()
    }

    /// A cache configuration for the store at `url`, short health interval and timeout.
    pub fn cache_config_at(&self, url: &str, min_size: u64) -> CacheConfig {
        CacheConfig::builder()
            .endpoint(url)
            .access_key(ACCESS_KEY)
            .secret_key(SECRET_KEY)
            .bucket(CACHE_BUCKET)
            .min_size(min_size)
            .health_interval(Duration::from_millis(200))
            .store_timeout(Duration::from_secs(2))
            .build()
            .expect("cache config")
    }

    pub fn cache_config(&self, min_size: u64) -> CacheConfig {
        self.cache_config_at(&self.store_url(), min_size)
    }

    /// A client of the origin itself (not through the front), for setting objects up.
    pub fn origin_s3(&self) -> aws_sdk_s3::Client {
        s3_client(&self.origin.nodes[0].url(), SECRET_KEY)
    }

    /// A client of the cache store, for looking at entries.
    pub fn store_s3(&self) -> aws_sdk_s3::Client {
        s3_client(&self.store_url(), SECRET_KEY)
    }

    /// Write an object at the origin (directly).
    pub async fn put(&self, key: &str, body: Vec<u8>, cache_control: Option<&str>) {
        let mut req = self
            .origin_s3()
            .put_object()
            .bucket(ORIGIN_BUCKET)
            .key(key)
            .body(body.into());
        if let Some(cc) = cache_control {
            req = req.cache_control(cc);
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("put {key} at the origin: {e:?}"));
    }

    /// The names of the entries in the cache bucket.
    pub async fn entries(&self) -> Vec<String> {
        let out = self
            .store_s3()
            .list_objects_v2()
            .bucket(CACHE_BUCKET)
            .send()
            .await
            .expect("list the cache bucket");
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }
}

/// `len` bytes that differ with `seed` and position.
pub fn object(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

/// Wait until `f()` holds, at most `wait`; true when it did.
pub async fn eventually(wait: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + wait;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
