//! Counters of what the cache did, so that its benefit (origin bytes saved) and its failures
//! (store errors, bypasses) can be watched; rendered in Prometheus text by the sidecar.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by every clone of a [`Cache`](super::Cache).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) revalidations: AtomicU64,
    pub(crate) changed: AtomicU64,
    pub(crate) bypasses: AtomicU64,
    pub(crate) stores: AtomicU64,
    pub(crate) store_aborts: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) resumes: AtomicU64,
    pub(crate) origin_bytes: AtomicU64,
    pub(crate) cache_bytes: AtomicU64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, healthy: bool) -> CacheMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheMetrics {
            healthy,
            hits: get(&self.hits),
            misses: get(&self.misses),
            revalidations: get(&self.revalidations),
            changed: get(&self.changed),
            bypasses: get(&self.bypasses),
            stores: get(&self.stores),
            store_aborts: get(&self.store_aborts),
            store_errors: get(&self.store_errors),
            invalidations: get(&self.invalidations),
            resumes: get(&self.resumes),
            origin_bytes: get(&self.origin_bytes),
            cache_bytes: get(&self.cache_bytes),
        }
    }
}

/// A snapshot of the cache's counters ([`Cache::metrics`](super::Cache::metrics)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheMetrics {
    /// Whether the cache store passed its last health check.
    pub healthy: bool,
    /// GET/HEAD answered with a stored body or head after the origin's `304`.
    pub hits: u64,
    /// GET/HEAD that found no usable entry (absent, another variant, unreadable).
    pub misses: u64,
    /// Conditional requests sent to the origin for an entry.
    pub revalidations: u64,
    /// Revalidations the origin answered with something else than `304` (changed object,
    /// refused credentials...).
    pub changed: u64,
    /// GET/HEAD that did not use the cache: store unhealthy, `Range`, client conditionals.
    pub bypasses: u64,
    /// Entries written completely.
    pub stores: u64,
    /// Entry writes given up because the store fell behind or the client went away.
    pub store_aborts: u64,
    /// Cache store operations that failed (lookups, writes, deletes, health checks).
    pub store_errors: u64,
    /// Entries deleted after a write through the cache or a changed or vanished object.
    pub invalidations: u64,
    /// Cached bodies that broke in the middle and were finished from the origin.
    pub resumes: u64,
    /// Body bytes received from the origin through the cache layer.
    pub origin_bytes: u64,
    /// Body bytes served from the cache store.
    pub cache_bytes: u64,
}

impl CacheMetrics {
    /// The counters in Prometheus text format (`sidekick_cache_*`).
    pub fn to_prometheus(&self) -> String {
        let rows: [(&str, &str, &str, u64); 13] = [
            (
                "sidekick_cache_up",
                "gauge",
                "1 when the cache store passed its last health check",
                u64::from(self.healthy),
            ),
            (
                "sidekick_cache_hits_total",
                "counter",
                "GET/HEAD answered from the cache after a 304 from the origin",
                self.hits,
            ),
            (
                "sidekick_cache_misses_total",
                "counter",
                "GET/HEAD that found no usable cache entry",
                self.misses,
            ),
            (
                "sidekick_cache_revalidations_total",
                "counter",
                "Conditional requests sent to the origin for a cache entry",
                self.revalidations,
            ),
            (
                "sidekick_cache_changed_total",
                "counter",
                "Revalidations the origin did not answer with 304",
                self.changed,
            ),
            (
                "sidekick_cache_bypasses_total",
                "counter",
                "GET/HEAD that did not use the cache",
                self.bypasses,
            ),
            (
                "sidekick_cache_stores_total",
                "counter",
                "Cache entries written",
                self.stores,
            ),
            (
                "sidekick_cache_store_aborts_total",
                "counter",
                "Cache entry writes given up",
                self.store_aborts,
            ),
            (
                "sidekick_cache_store_errors_total",
                "counter",
                "Failed cache store operations",
                self.store_errors,
            ),
            (
                "sidekick_cache_invalidations_total",
                "counter",
                "Cache entries deleted",
                self.invalidations,
            ),
            (
                "sidekick_cache_resumes_total",
                "counter",
                "Cached bodies finished from the origin after a store failure",
                self.resumes,
            ),
            (
                "sidekick_cache_origin_bytes_total",
                "counter",
                "Body bytes received from the origin through the cache layer",
                self.origin_bytes,
            ),
            (
                "sidekick_cache_served_bytes_total",
                "counter",
                "Body bytes served from the cache store",
                self.cache_bytes,
            ),
        ];
        let mut out = String::with_capacity(2048);
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_lines() {
        let c = Counters::default();
        Counters::inc(&c.hits);
        Counters::add(&c.origin_bytes, 42);
        let text = c.snapshot(true).to_prometheus();
        assert!(text.contains("\nsidekick_cache_hits_total 1\n"), "{text}");
        assert!(text.contains("\nsidekick_cache_origin_bytes_total 42\n"));
        assert!(text.contains("\nsidekick_cache_up 1\n"));
        assert_eq!(text.lines().count(), 13 * 3);
    }
}
