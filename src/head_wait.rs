//! The bounded wait for a response head, counted from the request's last body byte.
//!
//! A backend that accepts a request and never answers would otherwise hold the caller forever
//! (`attempt_timeout` is none by default): the `response_timeout` option (default 60 s, nginx's
//! `proxy_read_timeout`) bounds how long an attempt waits with nothing happening. The wait is
//! idle-based: every request body chunk handed to the connection starts it again, so a large
//! upload to a slow but live backend is not cut, while a backend that stops reading the body or
//! never answers after it is. On expiry the attempt fails with an I/O `TimedOut` error, which
//! [`classify`](crate::retry::classify) reads as [`Outcome::Timeout`](crate::Outcome::Timeout):
//! it counts against the endpoint and an idempotent request goes to another one.
//!
//! The cost on the request path is one atomic store per body chunk and one timer per attempt
//! (re-armed only when it fires while the body is still moving).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When the request body last moved, shared by an attempt's body and its wait.
#[derive(Debug)]
pub(crate) struct Progress {
    start: Instant,
    /// Nanoseconds from `start` to the last body chunk (0: none yet).
    last_ns: AtomicU64,
}

impl Progress {
    /// Progress of an attempt starting now.
    pub(crate) fn new() -> Progress {
        Progress {
            start: Instant::now(),
            last_ns: AtomicU64::new(0),
        }
    }

    /// The body moved.
    pub(crate) fn touch(&self) {
        let ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_ns.store(ns, Ordering::Relaxed);
    }

    /// When the body last moved (the start when it never did).
    fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last_ns.load(Ordering::Relaxed))
    }
}

/// The error of a wait that expired: an I/O `TimedOut` naming the bound.
pub(crate) fn expired(wait: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "no response head within {wait:?} of the request's last body byte (response_timeout)"
        ),
    )
}

/// Run `fut` (an attempt, up to its response head) with at most `wait` of idleness, counted
/// from the later of the start and the last progress of the request body. `None`: no bound.
pub(crate) async fn bounded<F: Future>(
    fut: F,
    wait: Option<Duration>,
    progress: Option<&Progress>,
) -> Result<F::Output, std::io::Error> {
    let Some(wait) = wait else {
        return Ok(fut.await);
    };
    tokio::pin!(fut);
    let sleep = tokio::time::sleep(wait);
    tokio::pin!(sleep);
    // Bounded: every round but the last moves the deadline forward to a later body chunk, and
    // the body is finite (or the attempt ends).
    loop {
        tokio::select! {
            biased;
            out = &mut fut => return Ok(out),
            () = &mut sleep => {
                let deadline = progress.map(|p| p.last() + wait);
                match deadline {
                    Some(d) if d > Instant::now() => sleep.as_mut().reset(d),
                    _ => return Err(expired(wait)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_attempt_expires_and_a_moving_body_extends_it() {
        let wait = Duration::from_secs(60);
        let never = std::future::pending::<()>();
        let err = bounded(never, Some(wait), None).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("response_timeout"), "{err}");

        // A body chunk every 50 s keeps a 70 s attempt alive; the head comes 10 s after the
        // last chunk.
        let p = Progress::new();
        let attempt = async {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                p.touch();
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
            "head"
        };
        assert_eq!(
            bounded(attempt, Some(wait), Some(&p)).await.unwrap(),
            "head"
        );

        // Without a bound, nothing expires.
        let slow = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            1
        };
        assert_eq!(bounded(slow, None, None).await.unwrap(), 1);
    }
}
