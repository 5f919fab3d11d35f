use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::error::BoxError;
use crate::head_wait::Progress;
use crate::sync::lock;

/// The request body handed to the inner service for one attempt.
///
/// Either a buffered copy (cheap to clone, replayed byte for byte on every attempt) or the caller's
/// streaming body, taken out of a shared slot only when the inner service first reads it — so
/// when an attempt fails before anything was read (a refused connection), the body is still in the
/// slot and the next attempt can send it.
///
/// As small as `http_body_util::Full<Bytes>` (32 bytes on 64-bit targets): the inner client
/// moves its request several times per attempt, and a request of that size is moved without a
/// call to `memcpy`. An empty or untracked buffered body is held inline; a tracked or streaming
/// one behind one pointer.
pub struct RetryBody<B> {
    inner: Inner<B>,
}

enum Inner<B> {
    /// Buffered bytes, not yet handed out (empty: nothing left).
    Full(Bytes),
    /// Anything else.
    Boxed(Box<Other<B>>),
}

enum Other<B> {
    /// Buffered bytes, and who to tell when they are handed out.
    Tracked(Bytes, Arc<Progress>),
    /// The caller's body: still in the shared slot, or taken by this attempt.
    Lazy {
        slot: Arc<Slot<B>>,
        taken: Option<Pin<Box<B>>>,
        /// Told of every frame handed out.
        progress: Option<Arc<Progress>>,
    },
}

/// A streaming body shared by the attempts of one request, read by at most one of them. Only a
/// body not known to be empty goes in a slot (an empty one is sent as empty bytes).
pub(crate) struct Slot<B> {
    body: Mutex<Option<B>>,
    hint: SizeHint,
}

impl<B> Slot<B> {
    /// A slot holding `body`, with its size hint as read before.
    pub(crate) fn new(body: B, hint: SizeHint) -> Self {
        Slot {
            body: Mutex::new(Some(body)),
            hint,
        }
    }

    /// Whether the body is still in the slot (no attempt read any of it).
    pub(crate) fn intact(&self) -> bool {
        lock(&self.body).is_some()
    }

    fn take(&self) -> Option<B> {
        lock(&self.body).take()
    }
}

impl<B> std::fmt::Debug for RetryBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lazy = matches!(&self.inner, Inner::Boxed(o) if matches!(**o, Other::Lazy { .. }));
        if lazy {
            f.debug_struct("RetryBody::Lazy")
                .field("hint", &self.known_hint())
                .finish()
        } else {
            f.debug_struct("RetryBody::Full")
                .field("len", &self.known_hint().exact())
                .finish()
        }
    }
}

impl<B> RetryBody<B> {
    /// A body made of these bytes (empty bytes make an empty body).
    pub fn full(bytes: Bytes) -> Self {
        RetryBody {
            inner: Inner::Full(bytes),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        RetryBody::full(Bytes::new())
    }

    /// The caller's streaming body, in `slot` until this attempt reads it.
    pub(crate) fn lazy(slot: Arc<Slot<B>>) -> Self {
        RetryBody {
            inner: Inner::Boxed(Box::new(Other::Lazy {
                slot,
                taken: None,
                progress: None,
            })),
        }
    }

    /// Tell `progress` of every frame handed out.
    pub(crate) fn with_progress(self, progress: Arc<Progress>) -> Self {
        let other = match self.inner {
            Inner::Full(bytes) => Box::new(Other::Tracked(bytes, progress)),
            Inner::Boxed(mut other) => {
                match &mut *other {
                    Other::Tracked(_, p) => *p = progress,
                    Other::Lazy { progress: p, .. } => *p = Some(progress),
                }
                other
            }
        };
        RetryBody {
            inner: Inner::Boxed(other),
        }
    }

    /// The size hint known before the caller's body is taken: the buffered bytes' length, or
    /// the hint the caller's body gave.
    fn known_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.len() as u64),
            Inner::Boxed(other) => match &**other {
                Other::Tracked(b, _) => SizeHint::with_exact(b.len() as u64),
                Other::Lazy { slot, .. } => slot.hint,
            },
        }
    }
}

/// Hand out `bytes` as the one data frame (none when empty), leaving them empty.
fn take_full(bytes: &mut Bytes) -> Option<Result<Frame<Bytes>, BoxError>> {
    if bytes.is_empty() {
        return None;
    }
    Some(Ok(Frame::data(std::mem::take(bytes))))
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
        let other = match &mut this.inner {
            Inner::Full(bytes) => return Poll::Ready(take_full(bytes)),
            Inner::Boxed(other) => &mut **other,
        };
        let (polled, progress) = match other {
            Other::Tracked(bytes, progress) => (Poll::Ready(take_full(bytes)), Some(&**progress)),
            Other::Lazy {
                slot,
                taken,
                progress,
            } => {
                if taken.is_none() {
                    match slot.take() {
                        Some(b) => *taken = Some(Box::pin(b)),
                        None => {
                            return Poll::Ready(Some(Err(
                                "request body was already consumed".into()
                            )))
                        }
                    }
                }
                let polled = match taken.as_mut() {
                    Some(b) => b.as_mut().poll_frame(cx).map_err(Into::into),
                    None => Poll::Ready(None),
                };
                (polled, progress.as_deref())
            }
        };
        if let (Poll::Ready(_), Some(p)) = (&polled, progress) {
            p.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_empty(),
            Inner::Boxed(other) => match &**other {
                Other::Tracked(b, _) => b.is_empty(),
                Other::Lazy { taken, .. } => taken.as_ref().is_some_and(|b| b.is_end_stream()),
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Boxed(other) => match &**other {
                Other::Lazy { taken: Some(b), .. } => b.size_hint(),
                _ => self.known_hint(),
            },
            Inner::Full(_) => self.known_hint(),
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
        let slot = Arc::new(Slot::new(
            Full::new(Bytes::from_static(b"abc")),
            SizeHint::with_exact(3),
        ));
        let unread: RetryBody<Full<Bytes>> = RetryBody::lazy(slot.clone());
        assert_eq!(unread.size_hint().exact(), Some(3));
        drop(unread);
        assert!(slot.intact(), "an unread attempt must leave the body");
        let read: RetryBody<Full<Bytes>> = RetryBody::lazy(slot.clone());
        assert_eq!(read.collect().await.unwrap().to_bytes(), "abc");
        assert!(!slot.intact());
        let again: RetryBody<Full<Bytes>> = RetryBody::lazy(slot);
        assert!(again.collect().await.is_err());
    }
}
