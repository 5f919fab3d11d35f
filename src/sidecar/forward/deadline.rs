//! A connection's wait bound, kept for the connection's life and moved lazily.
//!
//! Bounding every wait with a fresh tokio timer (`tokio::time::timeout`) costs a timer-wheel
//! insertion and removal per wait: twice per request on the forwarding loop (the next request
//! head, the backend's answer), about 1 % of the sidecar's CPU on small requests in the
//! profile. A [`Deadline`] keeps one timer and moves only its target: setting a later target
//! is a store, and the timer, when it fires before the target, is re-armed there. The wheel is
//! touched about once per timeout period instead of once per wait.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::time::{Instant, Sleep};

/// A wait bound that outlives the waits it bounds (see the module docs).
#[derive(Debug)]
pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
    /// Where the bound is now; the timer may be set earlier (never later).
    at: Instant,
}

/// A bounded wait reached its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;

impl Deadline {
    /// A bound at `at`.
    pub fn new(at: Instant) -> Deadline {
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    /// Move the bound to `at`. A later bound costs nothing now (the timer follows when it
    /// fires); an earlier one resets the timer.
    pub fn set(&mut self, at: Instant) {
        self.at = at;
        if at < self.sleep.deadline() {
            self.sleep.as_mut().reset(at);
        }
    }

    /// Ready once the bound has passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Each round re-arms the timer at the bound itself, so the second round waits for it:
        // more than two rounds would take a clock going backwards, and count as expired.
        for _ in 0..4 {
            ready!(self.sleep.as_mut().poll(cx));
            if Instant::now() >= self.at {
                return Poll::Ready(());
            }
            let at = self.at;
            self.sleep.as_mut().reset(at);
        }
        Poll::Ready(())
    }

    /// Run `fut` until it is done or the bound passes, whichever comes first.
    pub async fn bound<F: Future>(&mut self, fut: F) -> Result<F::Output, Expired> {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            self.poll_expired(cx).map(|()| Err(Expired))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_moved_bound_holds_where_it_was_moved() {
        let start = Instant::now();
        let mut d = Deadline::new(start + Duration::from_secs(10));
        // Done in time.
        assert_eq!(d.bound(async { 7 }).await, Ok(7));
        // Moved later while the timer stays at 10 s: a wait from 8 s on lasts until 18 s.
        tokio::time::sleep(Duration::from_secs(8)).await;
        d.set(Instant::now() + Duration::from_secs(10));
        let never = std::future::pending::<()>();
        assert_eq!(d.bound(never).await, Err(Expired));
        assert_eq!(Instant::now() - start, Duration::from_secs(18));
        // Moved earlier: the timer follows at once.
        d.set(Instant::now() + Duration::from_secs(60));
        d.set(Instant::now() + Duration::from_secs(1));
        let slow = tokio::time::sleep(Duration::from_secs(5));
        assert_eq!(d.bound(slow).await, Err(Expired));
        assert_eq!(Instant::now() - start, Duration::from_secs(19));
        // A wait that ends before the bound is not cut.
        d.set(Instant::now() + Duration::from_secs(3));
        let quick = tokio::time::sleep(Duration::from_secs(2));
        assert_eq!(d.bound(quick).await, Ok(()));
    }
}
