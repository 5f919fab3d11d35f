//! Start-up cost and memory against the number of endpoints, counted by a counting allocator
//! (this test binary's global allocator) rather than timed: the state kept per endpoint, and the
//! bytes allocated while every endpoint gets its first verdict, must stay within a small constant
//! per endpoint. A rebuild of a site's available list per verdict (O(n²) for a site of n
//! endpoints) allocates n pointers per verdict and breaks the second bound many times over.
#![cfg(feature = "client")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use sidekick::{Balancer, EndpointState};

/// The system allocator, counting the bytes live and the bytes ever allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static TOTAL: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            TOTAL.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            TOTAL.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The counters are global: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Endpoints in a site of the tests below: 8 × 1024, above the size whose available list is
/// rebuilt at once on every change.
const ENDPOINTS: usize = 8192;
/// The state one endpoint may keep at rest: its record, its probe task, its share of the lists.
const LIVE_PER_ENDPOINT: usize = 2048;
/// What the whole start-up (every endpoint's first verdict) may allocate per endpoint. A rebuild
/// per verdict would allocate about 8 × ENDPOINTS / 2 bytes per endpoint (32 KiB here).
const STARTUP_PER_ENDPOINT: usize = 12 * 1024;
/// How long the start-up may take at most before the test gives up (a bound, not a measure).
const STARTUP_DEADLINE: Duration = Duration::from_secs(120);

/// 8 × 1024 endpoints in 127.0.0.0/8. Nothing is ever connected to: the probes are `probe_fn`s.
fn site() -> String {
    "http://127.66.0.{1...8}:{20000...21023}".to_string()
}

fn up(bal: &Balancer) -> usize {
    bal.endpoints()
        .iter()
        .filter(|e| e.state == EndpointState::Up)
        .count()
}

#[test]
fn state_kept_per_endpoint_is_bounded() {
    let _one = serial();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let before = LIVE.load(Ordering::Relaxed);
        let bal = Balancer::builder()
            .site(site())
            .health_interval(Duration::from_secs(3600))
            .probe_fn(|_url| async { Ok(()) })
            .build()
            .unwrap();
        assert_eq!(bal.endpoints().len(), ENDPOINTS);
        let kept = LIVE.load(Ordering::Relaxed).saturating_sub(before);
        let per = kept / ENDPOINTS;
        println!("state at rest: {kept} bytes for {ENDPOINTS} endpoints, {per} per endpoint");
        assert!(
            per <= LIVE_PER_ENDPOINT,
            "{per} bytes per endpoint kept, more than {LIVE_PER_ENDPOINT}"
        );
        drop(bal);
    });
    // The runtime's end drops the probe tasks: everything goes back.
    drop(rt);
}

#[test]
fn startup_allocates_linearly() {
    let _one = serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let before = TOTAL.load(Ordering::Relaxed);
        let bal = Balancer::builder()
            .site(site())
            .health_interval(Duration::from_secs(3600))
            .probe_fn(|_url| async { Ok(()) })
            .build()
            .unwrap();
        bal.ready(STARTUP_DEADLINE).await.unwrap();
        // Bounded: every endpoint's first probe runs within a second of the start.
        let deadline = tokio::time::Instant::now() + STARTUP_DEADLINE;
        while up(&bal) < ENDPOINTS && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(up(&bal), ENDPOINTS);
        // The list of available endpoints follows: picks go everywhere.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..ENDPOINTS * 4 {
            let lease = bal.pick().unwrap();
            seen.insert(lease.id());
            lease.finish(sidekick::Outcome::Success);
        }
        assert!(
            seen.len() > ENDPOINTS / 2,
            "{} endpoints picked",
            seen.len()
        );
        let spent = TOTAL.load(Ordering::Relaxed) - before;
        let per = spent / ENDPOINTS;
        println!("start-up allocated {spent} bytes for {ENDPOINTS} endpoints, {per} per endpoint");
        assert!(
            per <= STARTUP_PER_ENDPOINT,
            "{per} bytes allocated per endpoint at start-up, more than {STARTUP_PER_ENDPOINT}"
        );
    });
}
