//! What a pick reads: every site with its available list, published as one value and read
//! without touching a shared cache line.
//!
//! The view changes only when an endpoint leaves or rejoins rotation or the sites change —
//! rare next to picks, which may run millions of times a second from many threads. An
//! `ArcSwap` load costs two atomic read-modify-writes on the reader's side (a debt taken and
//! paid back), about 13 ns; so each thread keeps its own counted copy of the view of the
//! balancer it picked from last, and checks it with one plain load of the balancer's version
//! number. A pick on an unchanged view takes no atomic write at all; the first pick after a
//! change (or after picking from another balancer) loads the new view once.
//!
//! The price: a thread holds one view, the endpoint list of the balancer it picked from last,
//! until it picks from another balancer or ends — memory only, since nothing in a view runs
//! (tasks and callbacks belong to the balancer, which is dropped as usual).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::site::{Site, SiteState};

/// The sites in order, each with its available list as last published.
#[derive(Default)]
pub(crate) struct PickView {
    pub(crate) sites: Vec<(Arc<Site>, Arc<SiteState>)>,
}

/// Tells balancers apart in the threads' caches (an address can be reused; this is not).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's copy of the view it read last.
    static CACHED: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

struct Cached {
    owner: u64,
    version: u64,
    view: Arc<PickView>,
}

/// A balancer's published view.
pub(crate) struct Published {
    id: u64,
    view: ArcSwap<PickView>,
    /// Raised after every store of `view`.
    version: AtomicU64,
    /// Serialises rebuilds (never taken on the request path).
    lock: Mutex<()>,
}

impl Published {
    pub(crate) fn new() -> Published {
        Published {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            view: ArcSwap::from_pointee(PickView::default()),
            version: AtomicU64::new(0),
            lock: Mutex::new(()),
        }
    }

    /// Publish the view `build` makes. Rebuilds are serialised and each reads the state as it
    /// is when it runs, so the last rebuild after a change includes it, whichever thread made
    /// the change.
    pub(crate) fn rebuild(&self, build: impl FnOnce() -> PickView) {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.view.store(Arc::new(build()));
        // After the store: a reader that sees the new number finds the new view.
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Run `f` on the current view: this thread's copy when it is still current, else the
    /// published one (copied for next time).
    #[inline]
    pub(crate) fn with<R>(&self, f: impl Fn(&PickView) -> R) -> R {
        let version = self.version.load(Ordering::Acquire);
        let cached = CACHED.try_with(|cell| {
            // Busy only if `f` somehow led back here; then the shared view serves.
            let mut slot = cell.try_borrow_mut().ok()?;
            let current = slot
                .as_ref()
                .is_some_and(|c| c.owner == self.id && c.version == version);
            if !current {
                *slot = Some(Cached {
                    owner: self.id,
                    version,
                    view: self.view.load_full(),
                });
            }
            slot.as_ref().map(|c| f(&c.view))
        });
        match cached {
            Ok(Some(r)) => r,
            // The thread is ending (its cache is gone) or the cache is busy.
            _ => f(&self.view.load()),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn sites(p: &Published) -> usize {
        p.with(|v| v.sites.len())
    }

    #[test]
    fn a_thread_sees_every_rebuild_of_every_balancer() {
        let (a, b) = (Published::new(), Published::new());
        assert_eq!((sites(&a), sites(&b)), (0, 0));
        // Alternating between two balancers: each read is of its own balancer.
        let one = || PickView {
            sites: vec![(
                Arc::new(Site::new(0, String::new(), &CancellationToken::new())),
                Arc::new(SiteState::default()),
            )],
        };
        a.rebuild(one);
        assert_eq!((sites(&a), sites(&b)), (1, 0));
        b.rebuild(|| PickView {
            sites: vec![one().sites.remove(0), one().sites.remove(0)],
        });
        assert_eq!((sites(&a), sites(&b), sites(&a)), (1, 2, 1));
        a.rebuild(PickView::default);
        assert_eq!((sites(&a), sites(&b)), (0, 2));
        // Another thread, its own cache, the same answers.
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!((sites(&b), sites(&a)), (2, 0)));
        });
    }

    #[test]
    fn the_cached_copy_is_shared_not_rebuilt() {
        let p = Published::new();
        p.rebuild(PickView::default);
        let first = p.with(|v| v as *const PickView as usize);
        let again = p.with(|v| v as *const PickView as usize);
        assert_eq!(first, again, "an unchanged view is read from the same copy");
        p.rebuild(PickView::default);
        let after = p.with(|v| v as *const PickView as usize);
        let published = Arc::as_ptr(&p.view.load_full()) as usize;
        assert_eq!(after, published, "a rebuild is seen at the next read");
    }

    #[test]
    fn a_nested_read_uses_the_shared_view() {
        let p = Published::new();
        p.rebuild(PickView::default);
        let nested = p.with(|_| p.with(|v| v.sites.len()));
        assert_eq!(nested, 0);
    }
}
