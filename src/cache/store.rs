//! The cache store: an S3 bucket reached with aws-sdk-s3 over this crate's own balanced HTTP
//! client ([`SidekickHttpClient`]), so that the cache needs no second HTTP or TLS stack.
//!
//! Every operation is bounded by the store timeout and never retried: a cache that is slow or
//! down must cost a request at most one short wait before the origin serves it. Writes stream:
//! the body reaches the store through a bounded channel while the client receives it, so a
//! 32 MiB object is never held in memory, and an upload whose body stops short (the client
//! went away, the store fell behind, the origin broke) fails as a whole — the object length is
//! declared up front, so the store never keeps a truncated entry.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_types::body::SdkBody;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, oneshot};

use super::config::CacheConfig;
use super::entry::{Head, MAX_HEAD, PREFIX};
use super::key::Key;
use crate::aws::SidekickHttpClient;
use crate::error::{BoxError, Error};
use crate::Balancer;

/// The client of the cache bucket.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    s3: aws_sdk_s3::Client,
    bucket: String,
    timeout: Duration,
}

/// An entry found in the store: its head, the body bytes read with it, and the rest of the
/// body, not read yet.
pub(crate) struct Found {
    pub(crate) head: Head,
    pub(crate) first: Bytes,
    pub(crate) rest: SdkBody,
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Found")
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// An entry for this key.
    Found(Box<Found>),
    /// No entry (or an unreadable one, which is deleted).
    Miss,
    /// The store failed or timed out.
    Failed(String),
}

/// How an upload ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    /// The entry is in the store.
    Done,
    /// The body stopped short; nothing was stored.
    Aborted,
    /// The store failed.
    Failed(String),
}

impl Store {
    pub(crate) fn new(cfg: &CacheConfig) -> Result<Store, Error> {
        let balancer = Balancer::builder()
            .site(cfg.endpoint())
            // The cache's own health check (HeadBucket) decides whether the store is used.
            .health_check(false)
            .connect_timeout(cfg.store_timeout())
            .build()
            .map_err(|e| Error::config(format!("cache endpoint: {e}")).with_source(e))?;
        let http = SidekickHttpClient::new(balancer)?;
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(cfg.region().to_string()))
            .credentials_provider(Credentials::new(
                cfg.access_key(),
                cfg.secret_key(),
                None,
                None,
                "sidekick-cache",
            ))
            .endpoint_url(cfg.endpoint())
            .force_path_style(true)
            // A failed cache operation falls back to the origin at once; retrying would only
            // delay the request.
            .retry_config(RetryConfig::disabled())
            // Bodies are bounded by our own timeouts, and a held lookup body is legitimately
            // idle while the origin revalidates.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(cfg.store_timeout())
                    .build(),
            )
            .http_client(http)
            .build();
        Ok(Store {
            s3: aws_sdk_s3::Client::from_conf(conf),
            bucket: cfg.bucket().to_string(),
            timeout: cfg.store_timeout(),
        })
    }

    /// Read the entry of `key`: its head and a stream of its body, or only its head
    /// (`head_only`, for HEAD requests: a ranged read of the first bytes).
    pub(crate) async fn get(&self, key: &Key, head_only: bool) -> Lookup {
        match tokio::time::timeout(self.timeout, self.get_inner(key, head_only)).await {
            Ok(Ok(Some(found))) => Lookup::Found(Box::new(found)),
            Ok(Ok(None)) => Lookup::Miss,
            Ok(Err(GetError::Corrupt(why))) => {
                tracing::warn!(object = %key.object, "{why}; deleting the entry");
                let _ = self.delete(key).await;
                Lookup::Miss
            }
            Ok(Err(GetError::Store(e))) => Lookup::Failed(e),
            Err(_) => Lookup::Failed(format!("lookup timed out after {:?}", self.timeout)),
        }
    }

    async fn get_inner(&self, key: &Key, head_only: bool) -> Result<Option<Found>, GetError> {
        let mut req = self.s3.get_object().bucket(&self.bucket).key(&key.object);
        if head_only {
            req = req.range(format!("bytes=0-{}", PREFIX + MAX_HEAD - 1));
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) => {
                if let SdkError::ServiceError(se) = &e {
                    if se.err().is_no_such_key() || se.raw().status().as_u16() == 404 {
                        return Ok(None);
                    }
                }
                return Err(GetError::Store(describe(&e)));
            }
        };
        let object_len = out.content_length().and_then(|n| u64::try_from(n).ok());
        let mut body = out.body.into_inner();
        let mut buf = BytesMut::new();
        let mut block_len = None;
        // Each round reads one frame; the head is at most MAX_HEAD bytes, so this ends.
        loop {
            if block_len.is_none() && buf.len() >= PREFIX {
                block_len = Some(Head::block_len(&buf[..PREFIX]).map_err(corrupt)?);
            }
            if let Some(n) = block_len {
                if buf.len() >= n {
                    break;
                }
            }
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        buf.extend_from_slice(&d);
                    }
                }
                Some(Err(e)) => return Err(GetError::Store(format!("reading an entry: {e}"))),
                None => return Err(GetError::Corrupt("entry shorter than its head".into())),
            }
        }
        let n = block_len.unwrap_or(0);
        let first = buf.split_off(n).freeze();
        let head = Head::decode(&buf).map_err(corrupt)?;
        if head.key_text != key.text {
            // Another URL with the same hash: never serve it.
            return Ok(None);
        }
        if !head_only && object_len != Some(n as u64 + head.body_len) {
            return Err(GetError::Corrupt(format!(
                "entry is {object_len:?} bytes, its head says {}",
                n as u64 + head.body_len
            )));
        }
        Ok(Some(Found {
            head,
            first: if head_only { Bytes::new() } else { first },
            rest: body,
        }))
    }

    /// Write an entry: `block` (the encoded head), then `body_len` bytes from `rx`.
    pub(crate) async fn put(
        &self,
        key: &Key,
        block: Bytes,
        body_len: u64,
        rx: mpsc::Receiver<Bytes>,
    ) -> Stored {
        let total = block.len() as u64 + body_len;
        let Ok(declared) = i64::try_from(total) else {
            return Stored::Failed("entry too large".to_string());
        };
        let (done_tx, done_rx) = oneshot::channel();
        let aborted = Arc::new(AtomicBool::new(false));
        let body = UploadBody {
            head: Some(block),
            rx,
            remaining: total,
            done: Some(done_tx),
            aborted: aborted.clone(),
        };
        let put = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key.object)
            .content_length(declared)
            .body(ByteStream::from_body_1_x(body))
            .send();
        tokio::pin!(put);
        // The upload lasts as long as the client's download; once the body is handed over,
        // the store has `timeout` to answer.
        let result = tokio::select! {
            r = &mut put => Some(r),
            _ = done_rx => None,
        };
        let result = match result {
            Some(r) => r,
            None => match tokio::time::timeout(self.timeout, put).await {
                Ok(r) => r,
                Err(_) => {
                    return Stored::Failed(format!("upload timed out after {:?}", self.timeout))
                }
            },
        };
        match result {
            Ok(_) => Stored::Done,
            Err(_) if aborted.load(Ordering::Acquire) => Stored::Aborted,
            Err(e) => Stored::Failed(describe(&e)),
        }
    }

    /// Delete the entry of `key` (absent is fine).
    pub(crate) async fn delete(&self, key: &Key) -> Result<(), String> {
        let del = self
            .s3
            .delete_object()
            .bucket(&self.bucket)
            .key(&key.object)
            .send();
        match tokio::time::timeout(self.timeout, del).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!("delete timed out after {:?}", self.timeout)),
        }
    }

    /// The health check: the bucket answers `HeadBucket` within the timeout.
    pub(crate) async fn check(&self) -> Result<(), String> {
        let head = self.s3.head_bucket().bucket(&self.bucket).send();
        match tokio::time::timeout(self.timeout, head).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!("health check timed out after {:?}", self.timeout)),
        }
    }
}

enum GetError {
    Store(String),
    Corrupt(String),
}

fn corrupt(e: super::entry::Corrupt) -> GetError {
    GetError::Corrupt(e.to_string())
}

/// An SDK error on one line, with its causes.
fn describe<E: std::error::Error + 'static>(e: &E) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    let mut depth = 0;
    while let (Some(s), true) = (cur, depth < 8) {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        cur = s.source();
        depth += 1;
    }
    msg
}

/// The body of an upload: the head block, then what the client's response hands over.
struct UploadBody {
    head: Option<Bytes>,
    rx: mpsc::Receiver<Bytes>,
    remaining: u64,
    done: Option<oneshot::Sender<()>>,
    aborted: Arc<AtomicBool>,
}

/// Why an upload's body stopped.
#[derive(Debug)]
struct Cut(&'static str);

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Cut {}

impl UploadBody {
    fn finish(&mut self) {
        if let Some(d) = self.done.take() {
            let _ = d.send(());
        }
    }

    fn cut(&mut self, why: &'static str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.aborted.store(true, Ordering::Release);
        self.finish();
        Poll::Ready(Some(Err(Box::new(Cut(why)))))
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(h) = this.head.take() {
            this.remaining = this.remaining.saturating_sub(h.len() as u64);
            return Poll::Ready(Some(Ok(Frame::data(h))));
        }
        if this.remaining == 0 {
            this.finish();
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(b)) => {
                if b.len() as u64 > this.remaining {
                    return this.cut("the body is longer than its Content-Length");
                }
                this.remaining -= b.len() as u64;
                if this.remaining == 0 {
                    this.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(None) => this.cut("the response stopped before its end"),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
