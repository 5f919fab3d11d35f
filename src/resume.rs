//! Resuming a GET whose response body breaks in the middle.
//!
//! Once a response head has been handed to the caller, no retry loop can help any more: the AWS
//! SDK retries an attempt only until it has a response, and reqwest-retry the same. A node that
//! dies while a `GetObject` body streams would fail the caller's read, however healthy the rest
//! of the cluster. So a body that breaks after its head is resumed from another node instead: a
//! GET for the bytes not yet delivered (`Range: bytes=<received>-<last>`), pinned to the same
//! object version with `If-Match: <ETag>`, whose `206` continues the body where it broke. The
//! caller sees one uninterrupted body.
//!
//! Only plain GETs are resumed: status 200, an `ETag`, a known length, and no `Range` or
//! `If-Range` of the caller's own (a signed `Range` cannot be rewritten without breaking a SigV4
//! signature; the added `Range` and `If-Match` are not signed, which S3 accepts). A resumed
//! request that does not answer `206` for exactly the missing bytes ends the body with an error,
//! as does a body that breaks more than [`MAX_RESUMES`] times.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, RANGE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::error::BoxError;

/// How many times one body may be resumed.
pub(crate) const MAX_RESUMES: u32 = 3;

/// What a resumed request must ask for.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// Length of the whole body.
    pub total: u64,
    /// The object version the body belongs to.
    pub etag: HeaderValue,
}

impl Plan {
    /// A plan when a response to this request can be resumed; `None` otherwise.
    pub(crate) fn new(
        method: &Method,
        request: &HeaderMap,
        status: StatusCode,
        response: &HeaderMap,
    ) -> Option<Plan> {
        if method != Method::GET
            || status != StatusCode::OK
            || request.contains_key(RANGE)
            || request.contains_key(IF_RANGE)
        {
            return None;
        }
        let etag = response.get(ETAG)?.clone();
        // A weak validator does not promise identical bytes.
        if etag.as_bytes().starts_with(b"W/") {
            return None;
        }
        let total: u64 = response.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()?;
        (total > 0).then_some(Plan { total, etag })
    }

    /// The headers a resumed request adds for the bytes from `offset` on.
    pub(crate) fn headers(
        &self,
        offset: u64,
    ) -> Result<[(http::HeaderName, HeaderValue); 2], BoxError> {
        let range = HeaderValue::try_from(format!("bytes={offset}-{}", self.total - 1))?;
        Ok([(RANGE, range), (http::header::IF_MATCH, self.etag.clone())])
    }

    /// Whether a resumed response carries exactly the bytes from `offset` on.
    pub(crate) fn check(
        &self,
        offset: u64,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<(), BoxError> {
        let want = format!("bytes {offset}-{}/{}", self.total - 1, self.total);
        let got = headers.get(CONTENT_RANGE).and_then(|v| v.to_str().ok());
        // Not every server honours `If-Match` (s3s-fs does not): the ETag is checked here too.
        let etag = headers.get(ETAG);
        if status == StatusCode::PARTIAL_CONTENT
            && got == Some(want.as_str())
            && etag == Some(&self.etag)
        {
            return Ok(());
        }
        Err(format!(
            "the body broke after {offset} of {} bytes and resuming it failed: \
             status {status}, Content-Range {got:?}, ETag {etag:?} (wanted {want:?}, {:?})",
            self.total, self.etag
        )
        .into())
    }
}

type Refetch<B> = Arc<dyn Fn(u64) -> BoxFuture<B> + Send + Sync>;
type BoxFuture<B> = Pin<Box<dyn Future<Output = Result<B, BoxError>> + Send>>;

/// A response body that resumes from another node when it breaks (see the module docs).
pub(crate) struct ResumeBody<B> {
    inner: Option<B>,
    /// The resumed request in flight. In a mutex only so that the body is `Sync`, as the AWS
    /// SDK's body type requires; never contended.
    pending: Mutex<Option<BoxFuture<B>>>,
    refetch: Refetch<B>,
    plan: Plan,
    received: u64,
    resumes: u32,
}

impl<B> ResumeBody<B> {
    /// `refetch(offset)` sends the resumed request for the bytes from `offset` on and returns
    /// its body once [`Plan::check`] passed.
    pub(crate) fn new(
        inner: B,
        plan: Plan,
        refetch: impl Fn(u64) -> BoxFuture<B> + Send + Sync + 'static,
    ) -> Self {
        ResumeBody {
            inner: Some(inner),
            pending: Mutex::new(None),
            refetch: Arc::new(refetch),
            plan,
            received: 0,
            resumes: 0,
        }
    }
}

impl<B> Body for ResumeBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        // Bounded: each turn either returns or starts one of at most MAX_RESUMES resumptions.
        loop {
            let pending = this.pending.get_mut().unwrap_or_else(|p| p.into_inner());
            if let Some(fut) = pending.as_mut() {
                match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(body)) => {
                        *pending = None;
                        this.inner = Some(body);
                    }
                    Poll::Ready(Err(e)) => {
                        *pending = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.inner = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        this.received += data.len() as u64;
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.inner = None;
                    let e: BoxError = e.into();
                    if this.resumes >= MAX_RESUMES || this.received >= this.plan.total {
                        return Poll::Ready(Some(Err(e)));
                    }
                    this.resumes += 1;
                    tracing::debug!(
                        received = this.received,
                        total = this.plan.total,
                        error = %e,
                        "response body broke; resuming it from another endpoint"
                    );
                    *this.pending.get_mut().unwrap_or_else(|p| p.into_inner()) =
                        Some((this.refetch)(this.received));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.received >= self.plan.total
            || (self.inner.as_ref().is_some_and(Body::is_end_stream)
                && self.pending.lock().map(|p| p.is_none()).unwrap_or(false))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.plan.total.saturating_sub(self.received))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn only_plain_gets_of_known_versions_are_resumable() {
        let resp = headers(&[("etag", "\"abc\""), ("content-length", "10")]);
        let none = HeaderMap::new();
        assert!(Plan::new(&Method::GET, &none, StatusCode::OK, &resp).is_some());
        assert!(Plan::new(&Method::HEAD, &none, StatusCode::OK, &resp).is_none());
        assert!(Plan::new(&Method::GET, &none, StatusCode::PARTIAL_CONTENT, &resp).is_none());
        let ranged = headers(&[("range", "bytes=0-3")]);
        assert!(Plan::new(&Method::GET, &ranged, StatusCode::OK, &resp).is_none());
        let weak = headers(&[("etag", "W/\"abc\""), ("content-length", "10")]);
        assert!(Plan::new(&Method::GET, &none, StatusCode::OK, &weak).is_none());
        let no_len = headers(&[("etag", "\"abc\"")]);
        assert!(Plan::new(&Method::GET, &none, StatusCode::OK, &no_len).is_none());
    }

    #[test]
    fn resumed_responses_must_be_the_missing_bytes() {
        let plan = Plan {
            total: 10,
            etag: HeaderValue::from_static("\"abc\""),
        };
        let [(_, range), (_, if_match)] = plan.headers(4).unwrap();
        assert_eq!(range, "bytes=4-9");
        assert_eq!(if_match, "\"abc\"");
        let good = headers(&[("content-range", "bytes 4-9/10"), ("etag", "\"abc\"")]);
        assert!(plan.check(4, StatusCode::PARTIAL_CONTENT, &good).is_ok());
        let other_version = headers(&[("content-range", "bytes 4-9/10"), ("etag", "\"def\"")]);
        assert!(plan
            .check(4, StatusCode::PARTIAL_CONTENT, &other_version)
            .is_err());
        assert!(plan.check(4, StatusCode::OK, &good).is_err());
        assert!(plan.check(5, StatusCode::PARTIAL_CONTENT, &good).is_err());
        let e = plan
            .check(4, StatusCode::PRECONDITION_FAILED, &HeaderMap::new())
            .unwrap_err();
        assert!(e.to_string().contains("412"), "{e}");
    }

    /// A body of `chunks` that fails after them when `fail` is set.
    struct Chunks {
        chunks: std::collections::VecDeque<Bytes>,
        fail: bool,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(match self.chunks.pop_front() {
                Some(c) => Some(Ok(Frame::data(c))),
                None if self.fail => Some(Err("connection reset".into())),
                None => None,
            })
        }
    }

    fn chunks(parts: &[&'static str], fail: bool) -> Chunks {
        Chunks {
            chunks: parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
            fail,
        }
    }

    fn plan(total: u64) -> Plan {
        Plan {
            total,
            etag: HeaderValue::from_static("\"v1\""),
        }
    }

    #[tokio::test]
    async fn a_broken_body_continues_from_the_offset() {
        const WHOLE: &str = "0123456789";
        let offsets = Arc::new(Mutex::new(Vec::new()));
        let seen = offsets.clone();
        let body = ResumeBody::new(chunks(&["012", "34"], true), plan(10), move |offset| {
            seen.lock().unwrap().push(offset);
            // The first resumption breaks again after two bytes; the second completes.
            let fail = seen.lock().unwrap().len() == 1;
            let rest = &WHOLE[offset as usize..];
            let part: &'static str = if fail { &rest[..2] } else { rest };
            Box::pin(async move { Ok(chunks(&[part], fail)) })
        });
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, WHOLE);
        assert_eq!(*offsets.lock().unwrap(), vec![5, 7]);
    }

    #[tokio::test]
    async fn resumptions_are_bounded_and_errors_surface() {
        let body = ResumeBody::new(chunks(&["01"], true), plan(10), |_| {
            Box::pin(async { Ok(chunks(&[], true)) })
        });
        let err = body.collect().await.unwrap_err();
        assert!(err.to_string().contains("reset"), "{err}");

        let body = ResumeBody::new(chunks(&["01"], true), plan(10), |_| {
            Box::pin(async { Err::<Chunks, BoxError>("status 412".into()) })
        });
        let err = body.collect().await.unwrap_err();
        assert!(err.to_string().contains("412"), "{err}");
    }
}
