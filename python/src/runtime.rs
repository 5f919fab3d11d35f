//! The one tokio runtime of the process, and what `os.fork()` does to it.
//!
//! The runtime is built on first use. A forked child inherits the parent's memory but none of its
//! threads, so the parent's runtime is a husk there: its workers are gone and some of its locks may
//! be held forever by threads that no longer exist. Touching it (spawning, waking a task, even
//! dropping it) can hang the child.
//!
//! So the Python package registers [`after_fork_in_child`] with `os.register_at_fork`. It bumps
//! the *generation* and forgets the old runtime without dropping it (a deliberate leak of a few
//! kilobytes). Everything built on a runtime remembers the generation it was built in: a balancer
//! of an older generation is rebuilt from its stored configuration on its next use, and objects of
//! an older generation are leaked instead of dropped (see [`is_current`]). Only atomics and
//! lock-free `ArcSwap` cells are touched on that path, so no lock a vanished thread held can block
//! the child.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// Bumped in every forked child.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The runtime of the current generation, once built.
static RUNTIME: ArcSwapOption<Runtime> = ArcSwapOption::const_empty();

/// Set when the interpreter shuts down: runtime threads stop calling into Python.
static FINALIZING: AtomicBool = AtomicBool::new(false);

/// A tokio runtime and the generation it belongs to.
pub(crate) struct Runtime {
    pub(crate) generation: u64,
    pub(crate) rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// The current generation (0 in the process that imported sidekick, +1 per fork).
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// True when something built in `generation` may be used (and dropped) in this process.
pub(crate) fn is_current(generation: u64) -> bool {
    generation == self::generation()
}

/// The runtime of the current generation, built on first use.
pub(crate) fn get() -> std::io::Result<Arc<Runtime>> {
    let gen = generation();
    loop {
        let cur = RUNTIME.load_full();
        if let Some(rt) = &cur {
            if rt.generation == gen {
                return Ok(rt.clone());
            }
            // A runtime of an older generation that the fork hook did not see: never drop it.
            std::mem::forget(rt.clone());
        }
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 4);
        let fresh = Arc::new(Runtime {
            generation: gen,
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("sidekick-rt")
                .enable_all()
                .build()?,
        });
        let prev = RUNTIME.compare_and_swap(&cur, Some(fresh.clone()));
        let won = match (&*prev, &cur) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if won {
            return Ok(fresh);
        }
        // Another thread installed one first: ours has no task yet, let it go.
        drop(prev);
        if let Ok(rt) = Arc::try_unwrap(fresh) {
            rt.rt.shutdown_background();
        }
    }
}

/// Called in the child right after `os.fork()`: start a new generation, leak the old runtime.
pub(crate) fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
    if let Some(old) = RUNTIME.swap(None) {
        std::mem::forget(old);
    }
}

/// Called at interpreter exit: from now on, events are no longer delivered to Python.
pub(crate) fn set_finalizing() {
    FINALIZING.store(true, Ordering::Release);
}

/// True once the interpreter is shutting down.
pub(crate) fn finalizing() -> bool {
    FINALIZING.load(Ordering::Acquire)
}

/// True on a thread of a tokio runtime (e.g. inside an `on_event` callback), where blocking on
/// the runtime would panic.
pub(crate) fn on_runtime_thread() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}
