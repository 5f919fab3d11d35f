//! A site: one ordered tier of endpoints, and the list of those available to a pick.
//!
//! Sites are written in sidekick's SITE notation, parsed by [`parse_site`] into [`Target`]s
//! (re-exported here from the module that parses them). At run time a site keeps its endpoints
//! and, derived from them on every state change, the list of the available ones: a pick reads
//! that list through an `ArcSwap` without a lock, so its cost does not depend on the number of
//! endpoints. State changes of one site are serialised by the site's lock, which the request path
//! never takes.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::endpoint::Endpoint;

pub use crate::target::{expand_pool, parse_site, SiteError, Target};

/// The endpoints of a site at one moment.
#[derive(Default)]
pub(crate) struct SiteState {
    /// Every endpoint, in the site's order.
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    /// Those a pick may take (up and not ejected, or with their trial due).
    pub(crate) available: Vec<Arc<Endpoint>>,
}

/// One site of a balancer.
pub(crate) struct Site {
    /// What the SITE argument named (a host name fanned out by DNS is one target).
    pub(crate) targets: Vec<Target>,
    /// The probe path of this site's endpoints.
    pub(crate) probe_path: String,
    pub(crate) state: ArcSwap<SiteState>,
    /// Round-robin position.
    pub(crate) rr: AtomicUsize,
    /// Serialises state changes of this site (never held on the request path).
    lock: Mutex<()>,
}

impl Site {
    pub(crate) fn new(targets: Vec<Target>, probe_path: String) -> Self {
        Site {
            targets,
            probe_path,
            state: ArcSwap::from_pointee(SiteState::default()),
            rr: AtomicUsize::new(0),
            lock: Mutex::new(()),
        }
    }

    /// Take the site's lock, for a state change.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Store a new endpoint list and derive the available list from it. Call with the lock held.
    pub(crate) fn publish(&self, endpoints: Vec<Arc<Endpoint>>) {
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

    /// Derive the available list again after an endpoint changed. Call with the lock held.
    pub(crate) fn republish(&self) {
        let eps = self.state.load().endpoints.clone();
        self.publish(eps);
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
