//! Telling an event loop's idle connections to close, without a lock per request.
//!
//! A connection between two requests waits for the next request head, and a drain must end that
//! wait at once. Waiting on a `CancellationToken` for it costs, per request, a look at the
//! token's state and a waiter registered and removed, each behind the token's lock — about 1 %
//! of the sidecar's CPU per 1 KiB request. Here a connection enlists its task once, for its whole
//! life; per request it reads one atomic flag. A drain sets the flag and wakes every enlisted
//! task, whose wait then looks at the flag and ends.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

/// One event loop's drain signal.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    stopping: AtomicBool,
    next: AtomicU64,
    /// The enlisted connections' tasks.
    tasks: Mutex<HashMap<u64, Waker>>,
}

impl Drain {
    /// Has the drain begun?
    #[inline]
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Begin the drain: every enlisted task is woken (and finds [`Drain::stopping`] true).
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for waker in tasks.values() {
            waker.wake_by_ref();
        }
    }

    /// Enlist the calling task until the returned guard is dropped. Once enlisted, a task is
    /// woken by [`Drain::stop`] whatever it is waiting on; it must look at
    /// [`Drain::stopping`] when it wakes (a drain that began before enlisting is seen there too:
    /// the flag is set before the tasks are read).
    pub(crate) async fn enlist(self: &Arc<Self>) -> Enlisted {
        let waker = poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, waker);
        Enlisted {
            drain: self.clone(),
            key,
        }
    }
}

/// A task's place on a [`Drain`]'s list; leaves it when dropped.
#[derive(Debug)]
pub(crate) struct Enlisted {
    drain: Arc<Drain>,
    key: u64,
}

impl Drop for Enlisted {
    fn drop(&mut self) {
        self.drain
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_drain_wakes_an_enlisted_wait_and_a_late_one_sees_it() {
        let drain = Arc::new(Drain::default());
        let d = drain.clone();
        let waiting = tokio::spawn(async move {
            let _on = d.enlist().await;
            // Waits on something that never happens, as an idle connection on a silent client.
            let never = std::future::pending::<()>();
            tokio::pin!(never);
            poll_fn(|cx| {
                if d.stopping() {
                    return Poll::Ready(());
                }
                never.as_mut().poll(cx)
            })
            .await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "nothing ends the wait before the drain"
        );
        assert_eq!(drain.tasks.lock().map(|t| t.len()).unwrap_or(0), 1);
        drain.stop();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the drain ends the wait")
            .expect("the task ran");
        assert_eq!(
            drain.tasks.lock().map(|t| t.len()).unwrap_or(1),
            0,
            "it left"
        );
        // Enlisting after the drain began: the flag is there to see.
        let _late = drain.enlist().await;
        assert!(drain.stopping());
    }
}
