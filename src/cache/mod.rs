//! A shared S3 cache of large GET responses (feature `cache`): MinIO sidekick's
//! `SIDEKICK_CACHE_*`, rebuilt so that it can never serve a body the origin would refuse.
//!
//! # Why
//!
//! Many clients — say every Spark executor, each with its own sidecar — read the same hot
//! objects. With a cache bucket that all of them share, the origin cluster sends each large
//! body once; afterwards it only answers small conditional requests, and the bodies come from
//! the cache store (typically a bucket on a node close to the clients).
//!
//! # How it stays correct
//!
//! A shared cache that hands one client's bytes to another is a security problem unless the
//! origin decides every time. So **every hit is revalidated**: the client's own request, with
//! its own `Authorization` (SigV4 signature untouched), goes to the origin with
//! `If-None-Match: <stored ETag>` added, and only a `304 Not Modified` releases the stored
//! copy. A wrong secret gets the origin's `403`, a changed object the origin's `200` (which
//! replaces the entry), a deleted one the origin's `404` (which removes it). Status code,
//! headers and body reach the client exactly as the origin sent them — sidekick's cache
//! answered every miss with status `200` and lost chunked bodies; this one relays the origin's
//! response untouched and stores it byte for byte.
//!
//! Revalidation costs a round trip to the origin per hit, but no body: the saving is in
//! bytes, which is what large objects cost.
//!
//! # What is cached
//!
//! - Only `GET` and `HEAD` use entries (they share one per URL); the entry's name covers the
//!   `Host`, the path and the query (the AWS SDKs' `x-id` operation marker aside).
//! - `Range` requests, and requests with their own `If-None-Match`, `If-Modified-Since` or
//!   `If-Range`, bypass the cache; `If-Match` and `If-Unmodified-Since` are allowed (the
//!   origin evaluates them before the cache's `If-None-Match`).
//! - Only a `200` to a `GET` is stored, and only with a `Content-Length` of at least the
//!   minimum size, an `ETag`, no `Content-Range`, no `Cache-Control: no-store` or `private`
//!   (in the answer or, for `no-store`, the request) and no `Vary: *`. A `Vary` on request
//!   headers is honoured: an entry serves only requests with the same values.
//! - A `2xx` to a `PUT`, `POST` or `DELETE` through the layer deletes the entry of its URL
//!   (and of the URL without its query); so does a revalidation answered `404`/`410`, or a
//!   `200` with another ETag that cannot be stored in its place.
//!
//! # Failure
//!
//! The cache is an optimisation, never a dependency: the store is checked (`HeadBucket`)
//! every health interval and bypassed entirely while unhealthy; any store error or timeout
//! sends the request to the origin as if there were no cache and marks the store unhealthy
//! until the next successful check; an upload that fails or falls behind is given up without
//! touching the client's stream; a cached body that breaks half-way is finished from the
//! origin with a ranged request for the rest (`If-Match` the same ETag). No request fails
//! because of the cache.
//!
//! # Use
//!
//! The sidecar reads [`CacheConfig::from_env`] at start. In a program, build a [`Cache`] and
//! put its [`CacheLayer`] over the balanced service (see [`CacheLayer`]); the inner service
//! receives [`RequestBody`]s and the layer answers with [`ResponseBody`]s.

mod body;
mod config;
// pub(crate): the `fuzzing` feature's entry points decode heads.
pub(crate) mod entry;
mod key;
mod layer;
mod metrics;
mod policy;
mod store;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub use body::{RequestBody, ResponseBody};
pub use config::{
    parse_size, CacheConfig, CacheConfigBuilder, DEFAULT_HEALTH_INTERVAL, DEFAULT_MIN_SIZE,
    DEFAULT_REGION, DEFAULT_STORE_TIMEOUT, ENV_ACCESS_KEY, ENV_BUCKET, ENV_ENDPOINT,
    ENV_HEALTH_DURATION, ENV_MIN_SIZE, ENV_SECRET_KEY,
};
pub use layer::{CacheLayer, CacheService, ResponseFuture};
pub use metrics::CacheMetrics;

use key::Key;
use metrics::Counters;
use store::Store;

use crate::error::Error;

/// A handle on one shared cache: its store client, health and counters. Cheap to clone;
/// clones share everything. The health checks stop when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Cache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: CacheConfig,
    store: Store,
    healthy: AtomicBool,
    health_tx: tokio::sync::watch::Sender<bool>,
    counters: Arc<Counters>,
    /// Entries being uploaded by this process.
    storing: Arc<Mutex<HashSet<String>>>,
    health_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(t) = self
            .health_task
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.abort();
        }
    }
}

impl Cache {
    /// Set up the store client and start the health checks (the first one at once). The
    /// cache is bypassed until a check passes ([`Cache::wait_healthy`] waits for it). Must be
    /// called inside a Tokio runtime.
    pub fn new(cfg: CacheConfig) -> Result<Cache, Error> {
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("the cache must be created inside a Tokio runtime"))?;
        let store = Store::new(&cfg)?;
        let (health_tx, _) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            cfg,
            store,
            healthy: AtomicBool::new(false),
            health_tx,
            counters: Arc::new(Counters::default()),
            storing: Arc::new(Mutex::new(HashSet::new())),
            health_task: Mutex::new(None),
        });
        let task = rt.spawn(health_loop(Arc::downgrade(&inner)));
        *inner.health_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(Cache { inner })
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.cfg
    }

    /// A layer that puts this cache in front of a service.
    pub fn layer(&self) -> CacheLayer {
        CacheLayer::new(self.clone())
    }

    /// Whether the store passed its last health check (and no operation failed since).
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Acquire)
    }

    /// Wait until the store is healthy, at most `timeout`. True when it is.
    pub async fn wait_healthy(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.health_tx.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|h| *h))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Check the store now (as the periodic check does) and return the verdict.
    pub async fn check_health(&self) -> bool {
        self.inner.check().await
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> CacheMetrics {
        self.inner.counters.snapshot(self.is_healthy())
    }

    /// Delete the entry of `key` now, bounded by the store timeout.
    async fn invalidate(&self, key: &Key) {
        match self.inner.store.delete(key).await {
            Ok(()) => Counters::inc(&self.inner.counters.invalidations),
            Err(e) => self.store_failed("invalidation", &e),
        }
    }

    /// Delete the entry of `key` in the background.
    fn invalidate_later(&self, key: Key) {
        let cache = self.clone();
        tokio::spawn(async move { cache.invalidate(&key).await });
    }

    /// A store operation failed: count it, and stop using the store until the next check
    /// passes.
    fn store_failed(&self, what: &str, err: &str) {
        Counters::inc(&self.inner.counters.store_errors);
        if self.inner.set_healthy(false) {
            tracing::warn!("cache store {what} failed, bypassing the cache: {err}");
        } else {
            tracing::debug!("cache store {what} failed: {err}");
        }
    }
}

impl Inner {
    /// Record a verdict; true when it changed.
    fn set_healthy(&self, healthy: bool) -> bool {
        let was = self.healthy.swap(healthy, Ordering::AcqRel);
        self.health_tx.send_replace(healthy);
        was != healthy
    }

    async fn check(&self) -> bool {
        match self.store.check().await {
            Ok(()) => {
                if self.set_healthy(true) {
                    tracing::info!("cache store {} is healthy", self.cfg.endpoint());
                }
                true
            }
            Err(e) => {
                Counters::inc(&self.counters.store_errors);
                if self.set_healthy(false) {
                    tracing::warn!("cache store {} is unhealthy: {e}", self.cfg.endpoint());
                }
                false
            }
        }
    }
}

/// Check the store every health interval while the cache exists.
async fn health_loop(cache: Weak<Inner>) {
    loop {
        let Some(inner) = cache.upgrade() else {
            return;
        };
        inner.check().await;
        let every = inner.cfg.health_interval();
        drop(inner);
        tokio::time::sleep(every).await;
    }
}
