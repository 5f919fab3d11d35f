//! A [`sidekick::Client`] whose events are recorded, for the client-level retry and hedging
//! tests: round-robin, no probes (the tests decide which backend answers), a short connect
//! timeout (refused ports fail at once anyway).
#![cfg(feature = "client")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sidekick::{Client, Event, Policy};

/// Every event the client emitted, in order.
pub type Events = Arc<Mutex<Vec<Event>>>;

/// A client over `sites` (one string per site), after `tweak` set the options under test.
pub fn client(
    sites: &[String],
    tweak: impl FnOnce(sidekick::Builder) -> sidekick::Builder,
) -> (Client, Events) {
    super::trace_init();
    let events: Events = Arc::default();
    let ev = events.clone();
    let b = Client::builder()
        .sites(sites)
        .health_check(false)
        .policy(Policy::RoundRobin)
        .connect_timeout(Duration::from_millis(500))
        .on_event(move |e| ev.lock().unwrap().push(e.clone()));
    (tweak(b).build_client().unwrap(), events)
}

/// How many recorded events match `f`.
pub fn count(ev: &Events, f: impl Fn(&Event) -> bool) -> usize {
    ev.lock().unwrap().iter().filter(|e| f(e)).count()
}
