//! The bounded wait for a response head, counted from the request's last body byte.
//!
//! A backend that accepts a request and never answers would otherwise hold the caller forever
//! (`attempt_timeout` is none by default): the `response_timeout` option (default 60 s, nginx's
//! `proxy_read_timeout`) bounds how long an attempt waits with nothing happening. The wait is
//! idle-based: every request body chunk handed to the connection starts it again, so a large
//! upload to a slow but live backend is not cut, while a backend that stops reading the body or
//! never answers after it is. On expiry the attempt fails with an I/O `TimedOut` error, which
//! [`classify`](crate::retry::classify) reads as [`Outcome::Timeout`](crate::Outcome::Timeout):
//! it counts against the endpoint and an idempotent request goes to another one. The tower
//! layer's optional overall cap, `attempt_timeout`, counted from the attempt's start whatever
//! the body does, is ended the same way, with its own error message.
//!
//! # Why a watchdog thread, not a timer per attempt
//!
//! The wait almost never ends anything: answers come in milliseconds, the bound is a minute.
//! A tokio timer per attempt made every request pay for one that never fires: an entry put in
//! and taken out of the runtime's timer wheel, and a runtime that had no timer before sleeping
//! with a deadline instead (the kernel arms and disarms it at every sleep). Measured with the
//! tower layer over hyper-util's client: ~540 instructions per request of the layer's ~7,900
//! (`examples/layer_ir.rs` under callgrind), and at 16 requests in flight the layer's CPU over
//! the bare client went from +1.0 to +0.7 µs (medians of 8 and 9 interleaved runs of
//! `cargo bench --bench layer`).
//!
//! So each balancer has a [`Watchdog`]: one thread, started on the first bounded wait, that
//! looks at the balancer's open waits every tick (an eighth of the shortest bound seen, at most
//! 1 s, at least 1 ms) and wakes the ones past their deadline. An attempt registers with it (one
//! uncontended lock; a wait without a body to track reuses an ended wait's state rather than
//! allocating one) and leaves when it ends (another); the runtime sees no timer at all, so
//! this works under any executor. The price is precision: a wait ends up to one tick after its
//! bound (60 s ends between 60 and 61.0 s), which for a bound meant to catch a dead backend is
//! no loss. The thread sleeps for good after eight idle ticks (no open wait) and is woken by the
//! next registration; it ends when the balancer is dropped. Where it cannot be had (the
//! system refused a thread, or the balancer runs on tokio's clock, as paused-time tests do), a
//! wait falls back to a tokio timer.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::task::Poll;
use std::time::Duration;

use futures_util::task::AtomicWaker;

use crate::clock::Clock;
use crate::sync::lock;

/// An attempt's wait: when it started, when its request body last moved, and whether the
/// watchdog found it past its deadline. Shared by the attempt's body, its wait and the watchdog.
#[derive(Debug)]
pub(crate) struct Progress {
    clock: Clock,
    /// Clock reading at the start.
    start_ns: u64,
    /// Clock reading at the last body chunk (0: none yet).
    last_ns: AtomicU64,
    /// Set by the watchdog when the deadline passed; read by the wait after it is woken.
    expired: AtomicBool,
    /// The task waiting for the head.
    waker: AtomicWaker,
}

impl Progress {
    fn new(clock: Clock) -> Progress {
        Progress::started(clock, clock.now())
    }

    fn started(clock: Clock, start_ns: u64) -> Progress {
        Progress {
            clock,
            start_ns,
            last_ns: AtomicU64::new(0),
            expired: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// Made new again for another wait (the watchdog's spare state).
    fn restart(&mut self, start_ns: u64) {
        self.start_ns = start_ns;
        *self.last_ns.get_mut() = 0;
        *self.expired.get_mut() = false;
    }

    /// The body moved.
    pub(crate) fn touch(&self) {
        self.last_ns
            .store(self.clock.coarse().max(1), Ordering::Relaxed);
    }

    /// The end of the wait as it stands: `wait_ns` after the later of the start and the last
    /// body chunk, or `cap_ns` after the start, whichever comes first (`u64::MAX`: no such
    /// bound).
    fn deadline_ns(&self, wait_ns: u64, cap_ns: u64) -> u64 {
        let idle = self
            .start_ns
            .max(self.last_ns.load(Ordering::Relaxed))
            .saturating_add(wait_ns);
        idle.min(self.start_ns.saturating_add(cap_ns))
    }

    /// The error of a wait that ended: the bound that ended it.
    fn ended(&self, bounds: &Bounds) -> std::io::Error {
        let idle_end = self.deadline_ns(bounds.wait_ns, u64::MAX);
        let cap_end = self.start_ns.saturating_add(bounds.cap_ns);
        match (bounds.wait(), bounds.cap()) {
            (Some(wait), _) if idle_end <= cap_end => expired(wait),
            (_, Some(cap)) => capped(cap),
            (Some(wait), None) => expired(wait),
            (None, None) => capped(Duration::MAX),
        }
    }
}

/// A wait's bounds in clock nanoseconds (`u64::MAX`: none).
#[derive(Clone, Copy, Debug)]
struct Bounds {
    wait_ns: u64,
    cap_ns: u64,
}

impl Bounds {
    fn new(wait: Option<Duration>, cap: Option<Duration>) -> Bounds {
        Bounds {
            wait_ns: wait.map_or(u64::MAX, nanos),
            cap_ns: cap.map_or(u64::MAX, nanos),
        }
    }

    /// The idle bound (`response_timeout`), as given.
    fn wait(&self) -> Option<Duration> {
        (self.wait_ns != u64::MAX).then(|| Duration::from_nanos(self.wait_ns))
    }

    /// The overall cap (`attempt_timeout`), as given.
    fn cap(&self) -> Option<Duration> {
        (self.cap_ns != u64::MAX).then(|| Duration::from_nanos(self.cap_ns))
    }
}

/// The error of a wait that expired: an I/O `TimedOut` naming the bound.
fn expired(wait: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "no response head within {wait:?} of the request's last body byte (response_timeout)"
        ),
    )
}

/// The error of an attempt that reached its overall cap: an I/O `TimedOut` naming it.
fn capped(cap: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no response head within {cap:?} of the attempt's start (attempt_timeout)"),
    )
}

/// Ticks with no open wait before the watchdog thread sleeps until the next registration.
const IDLE_TICKS: u32 = 8;
/// Bounds of the watchdog's tick.
const TICK_MIN: Duration = Duration::from_millis(1);
const TICK_MAX: Duration = Duration::from_secs(1);
/// The watchdog thread's stack: it only scans a list and wakes tasks.
const STACK: usize = 128 * 1024;

/// A balancer's watchdog for head waits (see the module documentation).
#[derive(Debug)]
pub(crate) struct Watchdog {
    clock: Clock,
    /// The thread's side, made with the thread on first use; `None` when no thread could be had.
    shared: OnceLock<Option<Arc<Shared>>>,
}

/// What the watchdog thread and the waits share.
#[derive(Debug)]
struct Shared {
    waits: Mutex<Waits>,
    /// The scan interval, in ns: lowered by every wait shorter than eight of it.
    tick_ns: AtomicU64,
    /// The thread sleeps until a registration (set and cleared under `waits`' lock, see
    /// [`Watchdog::watch`]).
    parked: AtomicBool,
    /// The balancer is gone: the thread ends.
    closed: AtomicBool,
    sleep: Mutex<()>,
    wake: Condvar,
}

/// The open waits: a slab (a freed slot is reused) of the waits and their bounds.
#[derive(Debug, Default)]
struct Waits {
    slots: Vec<Option<(Arc<Progress>, u64, u64)>>,
    free: Vec<usize>,
    open: usize,
    /// Ended waits' state, reused by the next waits without a body to track (no allocation per
    /// attempt); at most [`SPARE_MAX`].
    spare: Vec<Arc<Progress>>,
}

/// Ended waits kept for reuse.
const SPARE_MAX: usize = 64;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The tick for a wait of `wait_ns`: an eighth of it, within [`TICK_MIN`, `TICK_MAX`].
fn tick_for(wait_ns: u64) -> u64 {
    (wait_ns / 8).clamp(nanos(TICK_MIN), nanos(TICK_MAX))
}

impl Watchdog {
    /// A watchdog reading `clock`; its thread is started on the first wait. On tokio's clock
    /// (paused-time tests) there is none: waits use tokio timers, which follow that clock.
    pub(crate) fn new(clock: Clock) -> Watchdog {
        let shared = OnceLock::new();
        if matches!(clock, Clock::Tokio(_)) {
            let _ = shared.set(None);
        }
        Watchdog { clock, shared }
    }

    /// A watchdog without a thread, as when the system refuses one: every wait uses a timer.
    #[cfg(test)]
    fn without_thread(clock: Clock) -> Watchdog {
        let shared = OnceLock::new();
        let _ = shared.set(None);
        Watchdog { clock, shared }
    }

    /// A new attempt's wait, started now.
    pub(crate) fn progress(&self) -> Arc<Progress> {
        Arc::new(Progress::new(self.clock))
    }

    fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.get_or_init(start).as_ref()
    }

    /// Whether waits are ended by the thread (started here if it was not yet); `false` when
    /// they fall back to a tokio timer.
    pub(crate) fn has_thread(&self) -> bool {
        self.shared().is_some()
    }

    /// Watch `progress` (a new wait when `None`, reusing an ended one's state where it can)
    /// within `bounds`, until the entry is handed back to [`leave`](Watchdog::leave); `Err`
    /// with `progress` back when there is no watchdog thread.
    fn watch(
        &self,
        progress: Option<Arc<Progress>>,
        bounds: Bounds,
    ) -> Result<Entry, Option<Arc<Progress>>> {
        let Some(shared) = self.shared() else {
            return Err(progress);
        };
        let tick = tick_for(bounds.wait_ns.min(bounds.cap_ns));
        if tick < shared.tick_ns.load(Ordering::Relaxed) {
            shared.tick_ns.fetch_min(tick, Ordering::Relaxed);
        }
        // Read outside the lock; a wait with a body to track has its own start.
        let given = match progress {
            Some(p) => Ok(p),
            None => Err(self.clock.now()),
        };
        let (progress, slot, parked) = {
            let mut waits = lock(&shared.waits);
            let progress = match given {
                Ok(p) => p,
                Err(start_ns) => reuse(waits.spare.pop(), self.clock, start_ns),
            };
            let entry = Some((progress.clone(), bounds.wait_ns, bounds.cap_ns));
            let slot = match waits.free.pop() {
                Some(i) => {
                    waits.slots[i] = entry;
                    i
                }
                None => {
                    waits.slots.push(entry);
                    waits.slots.len() - 1
                }
            };
            waits.open += 1;
            // Read under the lock the thread sets it under: a thread that parked before this
            // registration is seen parked here and woken below; one that looks after it sees
            // an open wait and does not park.
            (progress, slot, shared.parked.load(Ordering::Relaxed))
        };
        if parked {
            let _sleep = lock(&shared.sleep);
            shared.parked.store(false, Ordering::Relaxed);
            shared.wake.notify_one();
        }
        Ok(Entry {
            progress,
            slot,
            bounds,
        })
    }

    /// Start watching a wait within `wait` of idleness and `cap` in all (see [`bounded`]),
    /// for a future that polls it itself ([`Entry::poll_ended`]) and hands it back to
    /// [`leave`](Watchdog::leave) when it ends; `Err` with `progress` back when there is no
    /// thread (or no bound: then there is nothing to watch).
    pub(crate) fn enter(
        &self,
        progress: Option<Arc<Progress>>,
        wait: Option<Duration>,
        cap: Option<Duration>,
    ) -> Result<Entry, Option<Arc<Progress>>> {
        if wait.is_none() && cap.is_none() {
            return Err(progress);
        }
        self.watch(progress, Bounds::new(wait, cap))
    }

    /// The waits watched now (for tests).
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        match self.shared.get() {
            Some(Some(shared)) => lock(&shared.waits).open,
            _ => 0,
        }
    }

    /// Stop watching `entry`'s wait: off the list, its state kept for reuse (up to
    /// [`SPARE_MAX`]).
    pub(crate) fn leave(&self, entry: Entry) {
        let Some(Some(shared)) = self.shared.get() else {
            return;
        };
        let mut waits = lock(&shared.waits);
        let Some((progress, _, _)) = waits.slots.get_mut(entry.slot).and_then(Option::take) else {
            return;
        };
        waits.open -= 1;
        waits.free.push(entry.slot);
        if waits.spare.len() < SPARE_MAX {
            // Its task is not kept alive by a spare.
            drop(progress.waker.take());
            waits.spare.push(progress);
        }
    }
}

/// A wait the watchdog watches, owned by its waiter (see [`Watchdog::enter`]).
#[derive(Debug)]
pub(crate) struct Entry {
    progress: Arc<Progress>,
    slot: usize,
    bounds: Bounds,
}

impl Entry {
    /// For the waiter whose future is not ready: `Some` with the error when the wait ended,
    /// else `None` with the task registered to be woken when it does.
    pub(crate) fn poll_ended(&self, cx: &mut std::task::Context<'_>) -> Option<std::io::Error> {
        self.progress.waker.register(cx.waker());
        // After registering: a watchdog that set the flag before woke the waker seen here.
        if self.progress.expired.load(Ordering::Acquire) {
            return Some(self.progress.ended(&self.bounds));
        }
        None
    }
}

/// `spare` made new for a wait starting at `start_ns`, unless something else still holds it
/// (a body that outlived its attempt): then a new state, and the spare is left to its holder.
fn reuse(spare: Option<Arc<Progress>>, clock: Clock, start_ns: u64) -> Arc<Progress> {
    if let Some(mut p) = spare {
        if let Some(state) = Arc::get_mut(&mut p) {
            state.restart(start_ns);
            return p;
        }
    }
    Arc::new(Progress::started(clock, start_ns))
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(Some(shared)) = self.shared.get() {
            let _sleep = lock(&shared.sleep);
            shared.closed.store(true, Ordering::Relaxed);
            shared.wake.notify_one();
        }
    }
}

/// A registered wait: leaves the watchdog's list when dropped.
struct Watched<'a> {
    dog: &'a Watchdog,
    entry: Option<Entry>,
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.dog.leave(entry);
        }
    }
}

/// Start the watchdog thread; `None` when the system refuses one.
fn start() -> Option<Arc<Shared>> {
    let shared = Arc::new(Shared {
        waits: Mutex::default(),
        tick_ns: AtomicU64::new(nanos(TICK_MAX)),
        parked: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        sleep: Mutex::new(()),
        wake: Condvar::new(),
    });
    let theirs = shared.clone();
    std::thread::Builder::new()
        .name("sidekick-head-wait".into())
        .stack_size(STACK)
        .spawn(move || watch_loop(&theirs))
        .ok()?;
    Some(shared)
}

/// The watchdog thread: every tick, wake the waits past their deadline; sleep when there is
/// nothing to watch; end when the balancer is gone.
fn watch_loop(shared: &Shared) {
    let mut due: Vec<Arc<Progress>> = Vec::new();
    let mut idle = 0u32;
    // Bounded: every round sleeps a tick or until woken, and the loop ends when the balancer
    // (the only owner of the other handle) is dropped.
    loop {
        let now = Clock::System.now();
        {
            let waits = lock(&shared.waits);
            for (progress, wait_ns, cap_ns) in waits.slots.iter().flatten() {
                if now >= progress.deadline_ns(*wait_ns, *cap_ns)
                    && !progress.expired.swap(true, Ordering::AcqRel)
                {
                    due.push(progress.clone());
                }
            }
            idle = if waits.open == 0 { idle + 1 } else { 0 };
            if idle >= IDLE_TICKS {
                shared.parked.store(true, Ordering::Relaxed);
            }
        }
        // Woken outside the lock: a wake may reach into the waiter's scheduler.
        for progress in due.drain(..) {
            progress.waker.wake();
        }
        let mut sleep = lock(&shared.sleep);
        if shared.closed.load(Ordering::Relaxed) {
            return;
        }
        if shared.parked.load(Ordering::Relaxed) {
            while shared.parked.load(Ordering::Relaxed) && !shared.closed.load(Ordering::Relaxed) {
                sleep = shared
                    .wake
                    .wait(sleep)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            idle = 0;
        } else {
            let tick = Duration::from_nanos(shared.tick_ns.load(Ordering::Relaxed));
            drop(
                shared
                    .wake
                    .wait_timeout(sleep, tick)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
    }
}

/// Run `fut` (an attempt, up to its response head) with at most `wait` of idleness, counted
/// from the later of the start and the last progress of the request body (`progress`, made by
/// [`Watchdog::progress`] when the body reports it; a new one otherwise), and at most `cap` in
/// all. `None`: no such bound.
pub(crate) async fn bounded<F: Future>(
    watchdog: &Watchdog,
    fut: F,
    wait: Option<Duration>,
    cap: Option<Duration>,
    progress: Option<Arc<Progress>>,
) -> Result<F::Output, std::io::Error> {
    if wait.is_none() && cap.is_none() {
        return Ok(fut.await);
    }
    let bounds = Bounds::new(wait, cap);
    let watched = match watchdog.watch(progress, bounds) {
        Ok(entry) => Watched {
            dog: watchdog,
            entry: Some(entry),
        },
        Err(progress) => {
            let progress = progress.unwrap_or_else(|| watchdog.progress());
            // Boxed: the rare path's timer stays out of every attempt's future.
            return Box::pin(timed(fut, bounds, &progress)).await;
        }
    };
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match watched.entry.as_ref().and_then(|e| e.poll_ended(cx)) {
            Some(ended) => Poll::Ready(Err(ended)),
            None => Poll::Pending,
        }
    })
    .await
}

/// [`bounded`] with a tokio timer, where there is no watchdog thread.
async fn timed<F: Future>(
    fut: F,
    bounds: Bounds,
    progress: &Progress,
) -> Result<F::Output, std::io::Error> {
    let left = |p: &Progress| {
        let end = p.deadline_ns(bounds.wait_ns, bounds.cap_ns);
        Duration::from_nanos(end.saturating_sub(p.clock.now()))
    };
    let mut fut = pin!(fut);
    let sleep = tokio::time::sleep(left(progress));
    let mut sleep = pin!(sleep);
    // Bounded: every round but the last moves the deadline forward to a later body chunk, and
    // the body is finite (or the attempt ends).
    loop {
        tokio::select! {
            biased;
            out = &mut fut => return Ok(out),
            () = &mut sleep => {
                let left = left(progress);
                if left.is_zero() {
                    return Err(progress.ended(&bounds));
                }
                sleep.as_mut().reset(tokio::time::Instant::now() + left);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wait the watchdog failed to end fails the test instead of hanging it: after 20 s, or
    /// an hour of tokio's paused clock (which passes at once when nothing else is left).
    async fn at_most<T>(dog: &Watchdog, fut: impl Future<Output = T>) -> T {
        let limit = match dog.clock {
            Clock::Tokio(_) => Duration::from_secs(3600),
            Clock::System => Duration::from_secs(20),
        };
        tokio::time::timeout(limit, fut)
            .await
            .expect("the wait was never ended")
    }

    /// A wait of `wait` whose body moves `chunks` times, `every` apart, then answers after
    /// `then`.
    async fn upload(
        dog: &Watchdog,
        wait: Duration,
        cap: Option<Duration>,
        chunks: u32,
        every: Duration,
        then: Duration,
    ) -> Result<&'static str, std::io::Error> {
        let p = dog.progress();
        let body = p.clone();
        let attempt = async move {
            for _ in 0..chunks {
                tokio::time::sleep(every).await;
                body.touch();
            }
            tokio::time::sleep(then).await;
            "head"
        };
        at_most(dog, bounded(dog, attempt, Some(wait), cap, Some(p))).await
    }

    async fn an_idle_attempt_expires_and_a_moving_body_extends_it(dog: &Watchdog) {
        let wait = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let never = std::future::pending::<()>();
        let err = at_most(dog, bounded(dog, never, Some(wait), None, None))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("response_timeout"), "{err}");
        // Not before the bound; a tick (37.5 ms at most here) is the lateness allowed, and the
        // rest is for a loaded machine.
        let took = started.elapsed();
        assert!(took >= wait && took < Duration::from_secs(5), "{took:?}");

        // A body chunk every 150 ms keeps a 300 ms wait alive for about 600 ms; the head comes
        // 50 ms after the last chunk.
        let ms = Duration::from_millis;
        let ok = upload(dog, wait, None, 4, ms(150), ms(50)).await.unwrap();
        assert_eq!(ok, "head");
        // Quiet for longer than the wait after the last chunk: expired.
        let err = upload(dog, wait, None, 2, ms(50), ms(900))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);

        // The overall cap ends a wait whose body keeps moving (`attempt_timeout`), and the
        // error names it; with the cap alone, an idle wait ends at the cap.
        let started = std::time::Instant::now();
        let err = upload(dog, wait, Some(ms(350)), 12, ms(50), ms(0))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("attempt_timeout"), "{err}");
        assert!(started.elapsed() >= ms(350), "{:?}", started.elapsed());
        let never = std::future::pending::<()>();
        let err = at_most(dog, bounded(dog, never, None, Some(ms(100)), None))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("attempt_timeout"), "{err}");
        // A cap longer than the idle wait leaves the idle wait to end it.
        let never = std::future::pending::<()>();
        let err = at_most(dog, bounded(dog, never, Some(wait), Some(ms(5000)), None))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("response_timeout"), "{err}");

        // Without a bound, nothing expires.
        let slow = async {
            tokio::time::sleep(ms(300)).await;
            1
        };
        assert_eq!(bounded(dog, slow, None, None, None).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn the_watchdog_ends_idle_waits_and_spares_moving_bodies() {
        let dog = Watchdog::new(Clock::System);
        an_idle_attempt_expires_and_a_moving_body_extends_it(&dog).await;
        let shared = dog.shared().unwrap();
        // An eighth of the shortest bound seen (the 100 ms cap).
        assert_eq!(shared.tick_ns.load(Ordering::Relaxed), 12_500_000);
        // Every wait left the list.
        let waits = lock(&shared.waits);
        assert_eq!(waits.open, 0);
        assert!(waits.slots.iter().all(Option::is_none));
    }

    #[tokio::test]
    async fn an_ended_waits_state_is_reused_and_starts_fresh() {
        let dog = Watchdog::new(Clock::System);
        let ms = Duration::from_millis;
        let never = std::future::pending::<()>();
        let err = at_most(&dog, bounded(&dog, never, Some(ms(40)), None, None))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        // The expired wait's state serves the next one, not expired and counted from its start.
        let slow = async {
            tokio::time::sleep(ms(60)).await;
            1
        };
        let next = at_most(&dog, bounded(&dog, slow, Some(ms(200)), None, None)).await;
        assert_eq!(next.unwrap(), 1);
        for _ in 0..10 {
            let quick = bounded(&dog, async { 2 }, Some(ms(200)), None, None).await;
            assert_eq!(quick.unwrap(), 2);
        }
        let shared = dog.shared().unwrap();
        let waits = lock(&shared.waits);
        // One state served every wait; it is held by nothing else and keeps no task's waker.
        assert_eq!(waits.spare.len(), 1);
        assert_eq!(Arc::strong_count(&waits.spare[0]), 1);
        assert!(waits.spare[0].waker.take().is_none());
    }

    #[tokio::test]
    async fn without_a_thread_a_timer_ends_the_waits() {
        let dog = Watchdog::without_thread(Clock::System);
        an_idle_attempt_expires_and_a_moving_body_extends_it(&dog).await;
        assert!(dog.shared().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn on_tokios_clock_waits_follow_it() {
        let dog = Watchdog::new(Clock::Tokio(tokio::time::Instant::now()));
        assert!(dog.shared().is_none());
        let wait = Duration::from_secs(60);
        let start = tokio::time::Instant::now();
        let err = bounded(&dog, std::future::pending::<()>(), Some(wait), None, None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), wait);
        // Three chunks 50 s apart, the head 10 s after the last: a 60 s wait is not cut.
        let s = Duration::from_secs;
        assert_eq!(
            upload(&dog, wait, None, 3, s(50), s(10)).await.unwrap(),
            "head"
        );
    }

    #[test]
    fn the_thread_sleeps_when_idle_wakes_for_a_wait_and_ends_with_the_watchdog() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let dog = Watchdog::new(Clock::System);
        let wait = Duration::from_millis(40);
        let never = || bounded(&dog, std::future::pending::<()>(), Some(wait), None, None);
        let err = rt.block_on(at_most(&dog, never())).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        let shared = dog.shared().unwrap().clone();
        // Eight idle ticks of 5 ms: parked well within two seconds.
        let parked = (0..400).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            shared.parked.load(Ordering::Relaxed)
        });
        assert!(parked, "the watchdog did not park when idle");
        // A wait after the thread parked is still ended (the registration woke it).
        let err = rt.block_on(at_most(&dog, never())).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        // Dropping the watchdog ends the thread: its handle is then the last one.
        drop(dog);
        let ended = (0..400).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            Arc::strong_count(&shared) == 1
        });
        assert!(ended, "the watchdog thread outlived its balancer");
    }
}
