//! The bodies the cache layer passes around.
//!
//! [`RequestBody`] is what the layer sends to the origin: the client's own body, or nothing
//! for the layer's own follow-up request (finishing a cached body from the origin when the
//! cache store breaks in the middle of it). [`ResponseBody`] is what the client receives: the
//! origin's stream (copied to the store on a miss), a body streamed from the store after a
//! `304`, or nothing for a `HEAD`. A copy to the store never slows the client for long and
//! never breaks it: when the store falls behind for longer than the store timeout the copy is
//! given up, and the client's stream goes on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio::sync::mpsc::OwnedPermit;
use tokio::time::Sleep;

use super::metrics::Counters;
use super::policy::weak_match;
use crate::error::BoxError;

pin_project_lite::pin_project! {
    /// The body of a request the cache layer sends to the origin: the client's, or empty.
    #[derive(Debug)]
    pub struct RequestBody<B> {
        #[pin]
        inner: Option<B>,
    }
}

impl<B> RequestBody<B> {
    /// The client's body, unchanged.
    pub fn client(body: B) -> Self {
        RequestBody { inner: Some(body) }
    }

    /// No body (the layer's own requests).
    pub fn empty() -> Self {
        RequestBody { inner: None }
    }
}

impl<B: Body> Body for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        match self.project().inner.as_pin_mut() {
            Some(b) => b.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// Sends a body to the store's upload while the client receives it.
pub(crate) struct Tee {
    tx: mpsc::Sender<Bytes>,
    /// A piece the store has no room for yet: the permit being waited for, and the deadline.
    waiting: Option<Waiting>,
    stall: Duration,
    counters: Arc<Counters>,
}

type Reserve = Pin<Box<dyn Future<Output = Result<OwnedPermit<Bytes>, SendError<()>>> + Send>>;

struct Waiting {
    data: Bytes,
    reserve: Reserve,
    deadline: Pin<Box<Sleep>>,
}

impl Tee {
    pub(crate) fn new(tx: mpsc::Sender<Bytes>, stall: Duration, counters: Arc<Counters>) -> Self {
        Tee {
            tx,
            waiting: None,
            stall,
            counters,
        }
    }
}

/// Finishes a cached body from the origin: given how many bytes the client has, a request
/// for the rest.
pub(crate) type Resume<B> = Box<dyn FnOnce(u64) -> Resumed<B> + Send>;

/// The origin's answer to the request for the rest of a cached body.
pub(crate) type Resumed<B> = Pin<Box<dyn Future<Output = Result<Response<B>, BoxError>> + Send>>;

/// A body read from the cache store, finished from the origin if the store breaks.
pub(crate) struct Cached<B> {
    pub(crate) first: Option<Bytes>,
    pub(crate) stream: SdkBody,
    pub(crate) sent: u64,
    pub(crate) total: u64,
    pub(crate) etag: http::HeaderValue,
    pub(crate) idle: Duration,
    pub(crate) idle_timer: Option<Pin<Box<Sleep>>>,
    pub(crate) resume: Option<Resume<B>>,
    pub(crate) resuming: Option<Resumed<B>>,
    /// The origin's body once resumed, and how many of its first bytes the client has already.
    pub(crate) tail: Option<(Pin<Box<B>>, u64)>,
    pub(crate) counters: Arc<Counters>,
}

pin_project_lite::pin_project! {
    /// The body of a response from the cache layer: the origin's (possibly copied to the cache
    /// store), one streamed from the cache store, or none (`HEAD`).
    pub struct ResponseBody<B> {
        #[pin]
        state: State<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<B> {
        Origin {
            #[pin]
            body: B,
            tee: Option<Tee>,
            pending: Option<Frame<Bytes>>,
            counters: Option<Arc<Counters>>,
        },
        Cached { cached: Box<Cached<B>> },
        Empty,
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.state {
            State::Origin { tee: Some(_), .. } => "origin+store",
            State::Origin { .. } => "origin",
            State::Cached { .. } => "cached",
            State::Empty => "empty",
        };
        f.debug_struct("ResponseBody")
            .field("from", &kind)
            .finish_non_exhaustive()
    }
}

impl<B> ResponseBody<B> {
    /// The origin's body as it is.
    pub(crate) fn origin(body: B, counters: Option<Arc<Counters>>) -> Self {
        ResponseBody {
            state: State::Origin {
                body,
                tee: None,
                pending: None,
                counters,
            },
        }
    }

    /// The origin's body, copied to the store through `tee`.
    pub(crate) fn tee(body: B, tee: Tee) -> Self {
        let counters = Some(tee.counters.clone());
        ResponseBody {
            state: State::Origin {
                body,
                tee: Some(tee),
                pending: None,
                counters,
            },
        }
    }

    pub(crate) fn cached(cached: Cached<B>) -> Self {
        ResponseBody {
            state: State::Cached {
                cached: Box::new(cached),
            },
        }
    }

    pub(crate) fn empty() -> Self {
        ResponseBody {
            state: State::Empty,
        }
    }

    /// Whether this body comes from the cache store.
    pub fn is_cached(&self) -> bool {
        matches!(self.state, State::Cached { .. })
    }

    /// Whether this body is being copied to the cache store.
    pub fn is_storing(&self) -> bool {
        matches!(self.state, State::Origin { tee: Some(_), .. })
    }
}

type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        match self.project().state.project() {
            StateProj::Origin {
                body,
                tee,
                pending,
                counters,
            } => poll_origin(body, tee, pending, counters.as_deref(), cx),
            StateProj::Cached { cached } => cached.poll(cx),
            StateProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Origin { body, pending, .. } => pending.is_none() && body.is_end_stream(),
            State::Cached { cached } => cached.sent >= cached.total,
            State::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Origin { body, pending, .. } => {
                let extra = pending
                    .as_ref()
                    .and_then(Frame::data_ref)
                    .map_or(0, |d| d.len() as u64);
                let h = body.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + extra);
                if let Some(u) = h.upper() {
                    out.set_upper(u + extra);
                }
                out
            }
            State::Cached { cached } => {
                SizeHint::with_exact(cached.total.saturating_sub(cached.sent))
            }
            State::Empty => SizeHint::with_exact(0),
        }
    }
}

/// The origin's stream, each piece also offered to the store's upload.
fn poll_origin<B>(
    mut body: Pin<&mut B>,
    tee: &mut Option<Tee>,
    pending: &mut Option<Frame<Bytes>>,
    counters: Option<&Counters>,
    cx: &mut Context<'_>,
) -> Polled
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    // A piece held back until the store has room (or gives up).
    if pending.is_some() {
        if let Some(t) = tee {
            if let Some(w) = &mut t.waiting {
                match w.reserve.as_mut().poll(cx) {
                    Poll::Ready(Ok(permit)) => {
                        permit.send(w.data.clone());
                        t.waiting = None;
                    }
                    Poll::Ready(Err(_)) => *tee = None,
                    Poll::Pending => match w.deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            // The store fell behind: give the copy up, not the client.
                            Counters::inc(&t.counters.store_aborts);
                            *tee = None;
                        }
                        Poll::Pending => return Poll::Pending,
                    },
                }
            }
        }
        return Poll::Ready(pending.take().map(Ok));
    }
    match body.as_mut().poll_frame(cx) {
        Poll::Ready(Some(Ok(frame))) => {
            let Some(data) = frame.data_ref() else {
                return Poll::Ready(Some(Ok(frame)));
            };
            if let Some(c) = counters {
                Counters::add(&c.origin_bytes, data.len() as u64);
            }
            let Some(t) = tee else {
                return Poll::Ready(Some(Ok(frame)));
            };
            match t.tx.try_send(data.clone()) {
                Ok(()) => Poll::Ready(Some(Ok(frame))),
                Err(TrySendError::Closed(_)) => {
                    // The upload failed: the client goes on alone.
                    *tee = None;
                    Poll::Ready(Some(Ok(frame)))
                }
                Err(TrySendError::Full(data)) => {
                    let tx = t.tx.clone();
                    t.waiting = Some(Waiting {
                        data,
                        reserve: Box::pin(tx.reserve_owned()),
                        deadline: Box::pin(tokio::time::sleep(t.stall)),
                    });
                    *pending = Some(frame);
                    poll_origin(body, tee, pending, counters, cx)
                }
            }
        }
        Poll::Ready(Some(Err(e))) => {
            // Dropping the sender cuts the upload short, so no partial entry is stored.
            *tee = None;
            Poll::Ready(Some(Err(e.into())))
        }
        Poll::Ready(None) => {
            *tee = None;
            Poll::Ready(None)
        }
        Poll::Pending => Poll::Pending,
    }
}

/// Why a cached body could not be finished.
#[derive(Debug)]
pub(crate) struct ResumeFailed(pub(crate) String);

impl std::fmt::Display for ResumeFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cached body broke and could not be finished from the origin: {}",
            self.0
        )
    }
}

impl std::error::Error for ResumeFailed {}

/// How many state changes one poll of a cached body may go through before yielding.
const MAX_STEPS: usize = 8;

impl<B> Cached<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Polled {
        for _ in 0..MAX_STEPS {
            if self.sent >= self.total {
                return Poll::Ready(None);
            }
            if let Some((tail, skip)) = &mut self.tail {
                return match tail.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        let Ok(mut data) = frame.into_data() else {
                            continue;
                        };
                        Counters::add(&self.counters.origin_bytes, data.len() as u64);
                        let cut = (*skip).min(data.len() as u64);
                        *skip -= cut;
                        let _ = data.split_to(cut as usize);
                        if data.is_empty() {
                            continue;
                        }
                        Poll::Ready(Some(Ok(Frame::data(self.take(data)))))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                    Poll::Ready(None) => Poll::Ready(Some(Err(Box::new(ResumeFailed(
                        "the origin's rest of the body ended early".into(),
                    ))))),
                    Poll::Pending => Poll::Pending,
                };
            }
            if let Some(fut) = &mut self.resuming {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(Ok(resp)) => {
                        self.resuming = None;
                        let skip = self
                            .check_resumed(&resp)
                            .map_err(|e| Box::new(ResumeFailed(e)) as BoxError);
                        match skip {
                            Ok(skip) => {
                                self.tail = Some((Box::pin(resp.into_body()), skip));
                                continue;
                            }
                            Err(e) => return Poll::Ready(Some(Err(e))),
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        self.resuming = None;
                        return Poll::Ready(Some(Err(Box::new(ResumeFailed(e.to_string())))));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if let Some(first) = self.first.take() {
                if first.is_empty() {
                    continue;
                }
                Counters::add(&self.counters.cache_bytes, first.len() as u64);
                return Poll::Ready(Some(Ok(Frame::data(self.take(first)))));
            }
            match Pin::new(&mut self.stream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.idle_timer = None;
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    Counters::add(&self.counters.cache_bytes, data.len() as u64);
                    return Poll::Ready(Some(Ok(Frame::data(self.take(data)))));
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!("cached body broke after {} bytes: {e}", self.sent);
                    if let Err(e) = self.start_resume() {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Ready(None) => {
                    tracing::debug!(
                        "cached body ended after {} of {} bytes",
                        self.sent,
                        self.total
                    );
                    if let Err(e) = self.start_resume() {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Pending => {
                    let idle = self.idle;
                    let timer = self
                        .idle_timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                    match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            tracing::debug!("cached body stalled after {} bytes", self.sent);
                            self.idle_timer = None;
                            if let Err(e) = self.start_resume() {
                                return Poll::Ready(Some(Err(e)));
                            }
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
        }
        // Still work to do: come back at once instead of looping here.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Count `data` as sent, clipped to the announced length.
    fn take(&mut self, mut data: Bytes) -> Bytes {
        let left = self.total - self.sent;
        if data.len() as u64 > left {
            data.truncate(left as usize);
        }
        self.sent += data.len() as u64;
        data
    }

    /// Ask the origin for the rest of the body (once).
    fn start_resume(&mut self) -> Result<(), BoxError> {
        self.stream = SdkBody::empty();
        match self.resume.take() {
            Some(resume) => {
                Counters::inc(&self.counters.resumes);
                self.resuming = Some(resume(self.sent));
                Ok(())
            }
            None => Err(Box::new(ResumeFailed("already resumed once".into()))),
        }
    }

    /// Whether the origin's answer is the rest of this very body; how many of its first bytes
    /// to skip.
    fn check_resumed(&self, resp: &Response<B>) -> Result<u64, String> {
        let h = resp.headers();
        let same = h.get(ETAG).is_some_and(|e| weak_match(e, &self.etag));
        if !same {
            return Err(format!(
                "the object changed (status {}, ETag {:?})",
                resp.status(),
                h.get(ETAG)
            ));
        }
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let want = format!("bytes {}-{}/{}", self.sent, self.total - 1, self.total);
                match h.get(CONTENT_RANGE).and_then(|v| v.to_str().ok()) {
                    Some(r) if r == want => Ok(0),
                    other => Err(format!("unexpected Content-Range {other:?}, wanted {want}")),
                }
            }
            StatusCode::OK => {
                let len = h
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if len == Some(self.total) {
                    Ok(self.sent)
                } else {
                    Err(format!("unexpected length {len:?}, wanted {}", self.total))
                }
            }
            s => Err(format!("status {s}")),
        }
    }
}
