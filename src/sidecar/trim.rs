//! Handing freed memory back to the system after load.
//!
//! glibc's allocator keeps the memory freed by closed connections (their buffers, their tasks) in
//! its arenas: after 2000 keep-alive connections closed, the sidecar's RSS stayed at the peak.
//! Nothing is leaked, but a sidecar lives next to the application it serves, and its footprint
//! should follow its load. So a single task watches the number of open connections once a second
//! and, after a large drop from the recent peak (and once after start-up, whose probe burst
//! leaves the same kind of garbage), asks glibc to return the free memory at the top of its heaps
//! and in whole free pages (`malloc_trim(0)`). The request path is untouched: no allocation, no
//! timer, no lock per request or per connection.
//!
//! The library has no `unsafe` code: the binary (`src/bin/sidekick.rs`) supplies the call of
//! glibc's `malloc_trim` through [`set_release`]; without it (or with another C library) the
//! trimmer only counts.

use std::sync::OnceLock;
use std::time::Duration;

/// How often the open connections are counted.
pub const TICK: Duration = Duration::from_secs(1);

/// A drop smaller than this many connections is not worth a trim.
pub const MIN_DROP: usize = 64;

/// When to trim: after the open connections fell to half of their recent peak (by at least
/// [`MIN_DROP`]), and once at the first observation (after start-up).
#[derive(Debug, Default)]
pub struct Trimmer {
    peak: usize,
    started: bool,
}

impl Trimmer {
    /// A trimmer that has seen nothing yet.
    pub fn new() -> Trimmer {
        Trimmer::default()
    }

    /// Record the number of open connections; true when memory should be trimmed now.
    pub fn observe(&mut self, open: usize) -> bool {
        if !self.started {
            self.started = true;
            self.peak = open;
            return true;
        }
        self.peak = self.peak.max(open);
        let fell = self.peak - open;
        if fell >= MIN_DROP && open <= self.peak / 2 {
            // The next drop is counted from here.
            self.peak = open;
            return true;
        }
        false
    }
}

/// How free memory is handed back, set by the binary (this library has no `unsafe` code; the
/// binary calls glibc's `malloc_trim`).
static RELEASE: OnceLock<fn() -> bool> = OnceLock::new();

/// Set how [`release_free_memory`] hands free memory back to the system (for example, a call
/// of glibc's `malloc_trim(0)`); the first setting stays. Without one, nothing is released.
pub fn set_release(release: fn() -> bool) {
    let _ = RELEASE.set(release);
}

/// Hand the allocator's free memory back to the system with the function given to
/// [`set_release`], if any. True when some memory was released.
pub fn release_free_memory() -> bool {
    RELEASE.get().is_some_and(|f| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_at_start_then_after_a_large_drop() {
        let mut t = Trimmer::new();
        assert!(t.observe(0), "the first observation trims (start-up)");
        assert!(!t.observe(0));
        assert!(!t.observe(2000));
        // Half-way down is not yet enough; a drop below half of the peak is.
        assert!(!t.observe(1001));
        assert!(t.observe(1000));
        // Counted from the new level: 1000 -> 960 is too small a drop.
        assert!(!t.observe(960));
        assert!(t.observe(0));
        // Small numbers never trim.
        assert!(!t.observe(60));
        assert!(!t.observe(0));
    }
}
