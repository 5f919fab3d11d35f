//! A site: one ordered tier of endpoints, and the list of those available to a pick.
//!
//! Sites are written in sidekick's SITE notation, parsed by [`parse_site`] into [`Target`]s
//! (re-exported here from the module that parses them). At run time a site keeps its endpoints
//! and, derived from them on every state change, the list of the available ones: a pick reads
//! that list through an `ArcSwap` without a lock, so its cost does not depend on the number of
//! endpoints. State changes of one site are serialised by the site's lock, which the request path
//! never takes.
//!
//! A site's membership may change at run time (see [`membership`](crate::membership)): the lock
//! also guards its `Roster`, the targets it was given, and every change publishes a new
//! endpoint list that shares the endpoints which stay.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::endpoint::Endpoint;
use crate::load::SiteLoad;

pub use crate::target::{expand_pool, parse_site, SiteError, Target};

/// The endpoints of a site at one moment.
#[derive(Default)]
pub(crate) struct SiteState {
    /// Every endpoint, in the site's order (shared between states: a republish does not copy it).
    pub(crate) endpoints: Arc<Vec<Arc<Endpoint>>>,
    /// Those a pick may take (up and not ejected, or with their trial due).
    pub(crate) available: Vec<Arc<Endpoint>>,
}

/// What an endpoint knows of its site: where the site stands in the order (which changes when
/// an earlier site is removed) and the site's typical latency. Shared by the site and its
/// endpoints; it holds no endpoint, so no cycle.
#[derive(Debug, Default)]
pub(crate) struct SiteLink {
    index: AtomicUsize,
    /// Typical latency of the site's endpoints.
    pub(crate) load: SiteLoad,
}

impl SiteLink {
    pub(crate) fn new(index: usize) -> Arc<SiteLink> {
        Arc::new(SiteLink {
            index: AtomicUsize::new(index),
            load: SiteLoad::default(),
        })
    }

    /// The site's position, 0 for the first.
    #[inline]
    pub(crate) fn index(&self) -> usize {
        self.index.load(Ordering::Relaxed)
    }

    pub(crate) fn set_index(&self, index: usize) {
        self.index.store(index, Ordering::Relaxed);
    }
}

/// One target a site was given (by its SITE text or a membership change): an endpoint, or a
/// host name fanned out by DNS to one endpoint per address.
#[derive(Debug)]
pub(crate) struct Member {
    /// Unique within the balancer; the `origin` of the endpoints made from it.
    pub(crate) origin: u64,
    /// Shared with its endpoint (not with those of a DNS fan-out, whose hosts differ).
    pub(crate) target: Arc<Target>,
    /// Cancelled when the member leaves: ends its DNS task and the tasks of its endpoints (an
    /// endpoint of its own has this very token: no extra node per endpoint).
    pub(crate) cancel: CancellationToken,
}

/// The targets of a site, guarded by the site's lock.
#[derive(Debug, Default)]
pub(crate) struct Roster {
    pub(crate) members: Vec<Member>,
}

/// One site of a balancer.
pub(crate) struct Site {
    /// Position and typical latency, shared with the endpoints.
    pub(crate) link: Arc<SiteLink>,
    /// The probe path of this site's endpoints.
    pub(crate) probe_path: String,
    pub(crate) state: ArcSwap<SiteState>,
    /// Round-robin position.
    pub(crate) rr: AtomicUsize,
    /// Cancelled when the site is removed (or the balancer dropped): the parent of its
    /// members' tokens.
    pub(crate) cancel: CancellationToken,
    /// Serialises state changes of this site and guards its targets (never held on the
    /// request path).
    lock: Mutex<Roster>,
    /// Held while the available list is rebuilt; see [`Site::republish`].
    rebuilding: Mutex<()>,
    /// Changes asked to be published so far, and those the stored state includes.
    wanted: AtomicU64,
    published: AtomicU64,
    /// A deferred rebuild is scheduled.
    deferred: AtomicBool,
}

impl Site {
    /// An empty site at position `index`; its tasks stop when `parent` is cancelled.
    pub(crate) fn new(index: usize, probe_path: String, parent: &CancellationToken) -> Self {
        Site {
            link: SiteLink::new(index),
            probe_path,
            state: ArcSwap::from_pointee(SiteState::default()),
            rr: AtomicUsize::new(0),
            cancel: parent.child_token(),
            lock: Mutex::new(Roster::default()),
            rebuilding: Mutex::new(()),
            wanted: AtomicU64::new(0),
            published: AtomicU64::new(0),
            deferred: AtomicBool::new(false),
        }
    }

    /// Take the site's lock, for a state change (and to read or change its targets).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Roster> {
        // The roster is changed only by whole-value steps (push, retain): a panic elsewhere
        // cannot leave it half-written.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Store a new endpoint list and derive the available list from it. Call with the site lock
    /// held (the list changes only under it).
    pub(crate) fn publish(&self, endpoints: Vec<Arc<Endpoint>>) {
        {
            let _r = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
            let seen = self.wanted.load(Ordering::SeqCst);
            self.store(Arc::new(endpoints));
            self.published.store(seen, Ordering::SeqCst);
        }
        // A change asked for while the lock above was held is published now.
        self.catch_up();
    }

    /// Derive the available list again after an endpoint's standing changed. Call after the
    /// change, with or without the site lock.
    ///
    /// Rebuilding costs O(n) for a site of `n` endpoints, and at start-up every endpoint gets
    /// its first verdict within a fraction of a second: a rebuild per change would be O(n²)
    /// (minutes for 65,536 endpoints). So changes are combined: whoever finds a rebuild under
    /// way only records its change and returns, and the rebuilder goes round again until every
    /// recorded change is in the stored state. A pick never sees an endpoint it must not use
    /// meanwhile, because picks also check each candidate's standing.
    pub(crate) fn republish(&self) {
        self.wanted.fetch_add(1, Ordering::SeqCst);
        self.catch_up();
    }

    /// Record a change to be published by a deferred rebuild. True when the caller must schedule
    /// that rebuild ([`Site::run_deferred`]): none is scheduled yet.
    pub(crate) fn defer(&self) -> bool {
        self.wanted.fetch_add(1, Ordering::SeqCst);
        !self.deferred.swap(true, Ordering::SeqCst)
    }

    /// The deferred rebuild: publishes every change recorded so far. A change recorded after the
    /// flag is cleared here schedules the next one.
    pub(crate) fn run_deferred(&self) {
        self.deferred.store(false, Ordering::SeqCst);
        self.catch_up();
    }

    /// Rebuild until the stored state includes every change asked for, unless someone else is
    /// rebuilding (who then will). Bounded: each round publishes at least one more change, and a
    /// round ends with nothing left unless another thread asked meanwhile.
    fn catch_up(&self) {
        loop {
            let guard = match self.rebuilding.try_lock() {
                Ok(g) => g,
                // The guarded data is `()`: nothing to repair.
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            let want = self.wanted.load(Ordering::SeqCst);
            if self.published.load(Ordering::SeqCst) >= want {
                return;
            }
            let endpoints = self.state.load().endpoints.clone();
            self.store(endpoints);
            self.published.store(want, Ordering::SeqCst);
            drop(guard);
            if self.wanted.load(Ordering::SeqCst) == want {
                return;
            }
        }
    }

    fn store(&self, endpoints: Arc<Vec<Arc<Endpoint>>>) {
        let available = endpoints
            .iter()
            .filter(|e| e.standing.load().pickable())
            .cloned()
            .collect();
        self.state.store(Arc::new(SiteState {
            endpoints,
            available,
        }));
    }

    /// How many endpoints the probes say are up, and how many of those are ejected: what the
    /// ejection bound counts.
    pub(crate) fn up_and_ejected(&self) -> (usize, usize) {
        let st = self.state.load();
        st.endpoints
            .iter()
            .map(|e| e.standing.load().up_and_ejected())
            .fold((0, 0), |(up, ej), (u, e)| {
                (up + usize::from(u), ej + usize::from(e))
            })
    }
}
