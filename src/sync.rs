//! Locks that outlive a panic elsewhere.
//!
//! Every mutex of the library guards data that a critical section leaves consistent at each
//! step (a cache entry, a slab slot, a body taken out of its slot), so a thread that panicked
//! while holding one leaves nothing half-written: the lock is taken over rather than turned
//! into a panic of every later request.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
