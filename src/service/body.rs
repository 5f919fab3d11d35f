use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::error::BoxError;
use crate::head_wait::Progress;

/// The request body handed to the inner service for one attempt.
///
/// Either a buffered copy (cheap to clone, replayed byte for byte on every attempt) or the caller's
/// streaming body, taken out of a shared slot only when the inner service first reads it — so
/// when an attempt fails before anything was read (a refused connection), the body is still in the
/// slot and the next attempt can send it.
pub struct RetryBody<B> {
    inner: Inner<B>,
    /// Told of every frame handed out (the response head wait counts from the last one).
    progress: Option<Arc<Progress>>,
}

enum Inner<B> {
    Full(Option<Bytes>),
    Lazy {
        slot: Arc<Mutex<Option<B>>>,
        taken: Option<Pin<Box<B>>>,
        hint: SizeHint,
        end: bool,
    },
}

impl<B> std::fmt::Debug for RetryBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Full(b) => f
                .debug_struct("RetryBody::Full")
                .field("len", &b.as_ref().map(|b| b.len()))
                .finish(),
            Inner::Lazy { hint, .. } => f
                .debug_struct("RetryBody::Lazy")
                .field("hint", hint)
                .finish(),
        }
    }
}

impl<B> RetryBody<B> {
    /// A body made of these bytes (empty bytes make an empty body).
    pub fn full(bytes: Bytes) -> Self {
        RetryBody {
            inner: Inner::Full(Some(bytes)),
            progress: None,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        RetryBody {
            inner: Inner::Full(None),
            progress: None,
        }
    }

    pub(crate) fn lazy(slot: Arc<Mutex<Option<B>>>, hint: SizeHint, end: bool) -> Self {
        RetryBody {
            inner: Inner::Lazy {
                slot,
                taken: None,
                hint,
                end,
            },
            progress: None,
        }
    }

    /// Tell `progress` of every frame handed out.
    pub(crate) fn with_progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }
}

impl<B> Body for RetryBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Every field is Unpin (the streaming body is boxed), so plain `&mut` access is fine.
        let this = self.get_mut();
        let polled = Self::poll_inner(&mut this.inner, cx);
        if let (Poll::Ready(_), Some(p)) = (&polled, &this.progress) {
            p.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            Inner::Lazy { taken, end, .. } => match taken {
                Some(b) => b.is_end_stream(),
                None => *end,
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Lazy { taken, hint, .. } => match taken {
                Some(b) => b.size_hint(),
                None => *hint,
            },
        }
    }
}

impl<B> RetryBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    fn poll_inner(
        inner: &mut Inner<B>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match inner {
            Inner::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Inner::Lazy { slot, taken, .. } => {
                if taken.is_none() {
                    let body = match slot.lock() {
                        Ok(mut g) => g.take(),
                        Err(p) => p.into_inner().take(),
                    };
                    match body {
                        Some(b) => *taken = Some(Box::pin(b)),
                        None => {
                            return Poll::Ready(Some(Err(
                                "request body was already consumed".into()
                            )))
                        }
                    }
                }
                match taken.as_mut() {
                    Some(b) => b.as_mut().poll_frame(cx).map_err(Into::into),
                    None => Poll::Ready(None),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn full_body_replays_and_reports_length() {
        let b = Bytes::from_static(b"hello");
        let body: RetryBody<Full<Bytes>> = RetryBody::full(b.clone());
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(body.collect().await.unwrap().to_bytes(), b);
        let empty: RetryBody<Full<Bytes>> = RetryBody::empty();
        assert!(empty.is_end_stream());
        assert_eq!(empty.collect().await.unwrap().to_bytes().len(), 0);
    }

    #[tokio::test]
    async fn lazy_body_stays_in_slot_until_read() {
        let slot = Arc::new(Mutex::new(Some(Full::new(Bytes::from_static(b"abc")))));
        let unread: RetryBody<Full<Bytes>> =
            RetryBody::lazy(slot.clone(), SizeHint::with_exact(3), false);
        assert_eq!(unread.size_hint().exact(), Some(3));
        drop(unread);
        assert!(
            slot.lock().unwrap().is_some(),
            "an unread attempt must leave the body"
        );
        let read: RetryBody<Full<Bytes>> =
            RetryBody::lazy(slot.clone(), SizeHint::with_exact(3), false);
        assert_eq!(read.collect().await.unwrap().to_bytes(), "abc");
        assert!(slot.lock().unwrap().is_none());
        let again: RetryBody<Full<Bytes>> = RetryBody::lazy(slot, SizeHint::default(), false);
        assert!(again.collect().await.is_err());
    }
}
