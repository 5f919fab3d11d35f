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
use std::time::Duration;

use tokio::time::Sleep;

use crate::clock::Clock;

/// A wait bound that outlives the waits it bounds (see the module docs).
///
/// Bounds are readings of the engine's [`Clock`] (nanoseconds): on the request path the clock
/// is the time-stamp counter, a third of the cost of the `Instant::now()` a tokio instant
/// needs. tokio's clock is read only to arm the timer, which is rare.
#[derive(Debug)]
pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
    clock: Clock,
    /// Where the bound is now.
    at: u64,
    /// Where the timer is set: at or before the bound, never after.
    armed: u64,
}

/// A bounded wait reached its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;

/// `d` in the clock's nanoseconds (saturating: 584 years).
fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Deadline {
    /// A bound `after` from now on `clock`.
    pub fn new(clock: Clock, after: Duration) -> Deadline {
        let at = clock.now().saturating_add(ns(after));
        Deadline {
            sleep: Box::pin(tokio::time::sleep(after)),
            clock,
            at,
            armed: at,
        }
    }

    /// Move the bound to `after` from now. A later bound costs a clock reading and a store
    /// (the timer follows when it fires); an earlier one resets the timer.
    pub fn set_after(&mut self, after: Duration) {
        let at = self.clock.now().saturating_add(ns(after));
        self.at = at;
        if at < self.armed {
            self.arm();
        }
    }

    /// Set the timer at the bound.
    fn arm(&mut self) {
        let left = self.at.saturating_sub(self.clock.now());
        let when = tokio::time::Instant::now() + Duration::from_nanos(left);
        self.sleep.as_mut().reset(when);
        self.armed = self.at;
    }

    /// Ready once the bound has passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Each round re-arms the timer at the bound itself, so the second round waits for it
        // (a third may take the timer's rounding against the clock's): more rounds would take
        // a clock going backwards, and count as expired.
        for _ in 0..4 {
            ready!(self.sleep.as_mut().poll(cx));
            if self.clock.now() >= self.at {
                return Poll::Ready(());
            }
            self.arm();
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
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_moved_bound_holds_where_it_was_moved() {
        let start = Instant::now();
        let clock = Clock::Tokio(start);
        let mut d = Deadline::new(clock, Duration::from_secs(10));
        // Done in time.
        assert_eq!(d.bound(async { 7 }).await, Ok(7));
        // Moved later while the timer stays at 10 s: a wait from 8 s on lasts until 18 s.
        tokio::time::sleep(Duration::from_secs(8)).await;
        d.set_after(Duration::from_secs(10));
        let never = std::future::pending::<()>();
        assert_eq!(d.bound(never).await, Err(Expired));
        assert_eq!(Instant::now() - start, Duration::from_secs(18));
        // Moved earlier: the timer follows at once.
        d.set_after(Duration::from_secs(60));
        d.set_after(Duration::from_secs(1));
        let slow = tokio::time::sleep(Duration::from_secs(5));
        assert_eq!(d.bound(slow).await, Err(Expired));
        assert_eq!(Instant::now() - start, Duration::from_secs(19));
        // A wait that ends before the bound is not cut.
        d.set_after(Duration::from_secs(3));
        let quick = tokio::time::sleep(Duration::from_secs(2));
        assert_eq!(d.bound(quick).await, Ok(()));
    }

    #[tokio::test]
    async fn on_the_system_clock_a_bound_expires_in_real_time() {
        // The sidecar's clock (the time-stamp counter where calibrated) against tokio's timer.
        let start = Instant::now();
        let mut d = Deadline::new(Clock::System, Duration::from_millis(30));
        d.set_after(Duration::from_millis(40));
        let never = std::future::pending::<()>();
        assert_eq!(d.bound(never).await, Err(Expired));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(40) && took < Duration::from_secs(5),
            "expired after {took:?}"
        );
    }
}
