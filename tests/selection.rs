//! Selection against real HTTP backends on 127.0.0.1: a one-off slow answer is forgiven, an
//! endpoint coming back ramps up through slow start, and graded spill-over shares a degraded
//! site's traffic with the next one.
#![cfg(feature = "client")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use sidekick::{Client, EndpointState, Event};
use support::{load, Backend, Behavior};
use tokio::time::Instant;

async fn backends(prefix: &str, n: usize) -> Vec<Arc<Backend>> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(Arc::new(
            Backend::start(&format!("{prefix}{i}"), Behavior::Ok).await,
        ));
    }
    v
}

fn site_of(bs: &[Arc<Backend>]) -> String {
    bs.iter().map(|b| b.url()).collect::<Vec<_>>().join(",")
}

fn total(bs: &[Arc<Backend>]) -> u64 {
    bs.iter().map(|b| b.hits()).sum()
}

/// GET "/obj" and read the whole body; Err on transport errors and non-200 answers.
async fn get(c: &Client) -> Result<(), String> {
    let resp = c.get("/obj").await.map_err(|e| format!("{e}: {e:?}"))?;
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    Ok(())
}

/// Sequential GETs until `until`, at most `max`; every one must succeed. Returns how many.
async fn sequential(c: &Client, until: Instant, max: usize) -> usize {
    let mut n = 0;
    while n < max && Instant::now() < until {
        get(c).await.expect("request");
        n += 1;
    }
    n
}

/// Wait (bounded) until every endpoint of the balancer is in `want` state, per `want_of`.
async fn wait_states(c: &Client, want_of: impl Fn(&str) -> EndpointState) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let eps = c.balancer().endpoints();
        if eps.iter().all(|e| e.state == want_of(&e.url)) {
            return;
        }
        assert!(Instant::now() < deadline, "states never settled: {eps:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Events delivered to `on_event`, kept for the test to read.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<(Instant, Event)>>>);

impl Events {
    fn hook(&self) -> impl Fn(&Event) + Send + Sync + 'static {
        let me = self.0.clone();
        move |ev| {
            me.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((Instant::now(), ev.clone()))
        }
    }

    fn all(&self) -> Vec<(Instant, Event)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The first event `pick` accepts and when it came, waiting up to 5 s for it.
    async fn wait_for<T>(&self, pick: impl Fn(&Event) -> Option<T>) -> (Instant, T) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(found) = self
                .all()
                .iter()
                .find_map(|(t, e)| pick(e).map(|x| (*t, x)))
            {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "event never came: {:?}",
                self.all()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

// ===== forgiveness =====

/// The scenario: 3 endpoints answering in about 1 ms, probes off, light sequential
/// load; one answers once in 50 ms. With the EWMA decay shortened to 2 s, it must be
/// picked again within those 2 s, and over the next 2 s get about its fair third. (Before the
/// fix its estimate relaxed toward its peers' level and stayed above it: 0 picks here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_slow_answer_is_forgiven_within_the_decay() {
    support::trace_init();
    let decay = Duration::from_secs(2);
    let usual = Behavior::Delay(Duration::from_millis(1));
    let bs = backends("f", 3).await;
    for b in &bs {
        b.set_behavior(usual.clone());
    }
    let c = Client::builder()
        .site(site_of(&bs))
        .health_check(false)
        .ewma_decay(decay)
        .build_client()
        .expect("client");
    // Warm up: connections open, estimates and the site's typical latency measured.
    let warm = sequential(&c, Instant::now() + Duration::from_secs(5), 300).await;
    assert_eq!(warm, 300);
    // One slow answer from backend 0 (bounded: it gets a third of the picks).
    bs[0].set_behavior(Behavior::Delay(Duration::from_millis(50)));
    let before = bs[0].hits();
    for _ in 0..200 {
        get(&c).await.expect("request");
        if bs[0].hits() > before {
            break;
        }
    }
    bs[0].set_behavior(usual);
    assert_eq!(bs[0].hits(), before + 1, "backend 0 never answered slowly");
    let slow_at = Instant::now();

    // Window 1, the decay period: picked again.
    let hits0 = bs[0].hits();
    let mut sent1 = 0usize;
    let mut first_again = None;
    while sent1 < 200_000 && Instant::now() < slow_at + decay {
        get(&c).await.expect("request");
        sent1 += 1;
        if first_again.is_none() && bs[0].hits() > hits0 {
            first_again = Some(slow_at.elapsed());
        }
    }
    let again = bs[0].hits() - hits0;
    assert!(
        again > 0,
        "starved: 0 of {sent1} sequential picks within the {decay:?} decay"
    );
    // Window 2: about its fair share (a third).
    let (hits0, all) = (bs[0].hits(), total(&bs));
    let sent2 = sequential(&c, slow_at + 2 * decay, 200_000).await;
    let share = (bs[0].hits() - hits0) as f64 / (total(&bs) - all).max(1) as f64;
    assert!(sent2 > 100, "too little traffic: {sent2}");
    println!(
        "forgiveness: picked again after {first_again:?} (decay {decay:?}); {again} of {sent1} \
         picks in the decay period; {:.1} % of {sent2} in the next one",
        share * 100.0
    );
    // P2C over peak-EWMA estimates is bursty at this request count (three runs: 24 to 41 %):
    // the band catches starvation and a share that never recovers, not noise.
    assert!(
        (0.15..0.52).contains(&share),
        "share {:.1} % of {sent2} picks after the decay (fair: 33 %); window 1: {again} of {sent1}",
        share * 100.0
    );
}

// ===== slow start =====

/// An endpoint that comes back up (probes) ramps up over the window: little traffic early, its
/// full share after, with an event at each end; the endpoints the balancer starts with get no
/// slow start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_endpoint_ramps_up_over_the_slow_start_window() {
    support::trace_init();
    let window = Duration::from_millis(1500);
    let bs = backends("s", 2).await;
    bs[1].set_health_status(503);
    let events = Events::default();
    let c = Client::builder()
        .site(site_of(&bs))
        .health_path(support::HEALTH_PATH)
        .health_interval(Duration::from_millis(50))
        .health_jitter(0.1)
        .slow_start(window)
        // Random choice isolates the weight from the latency scores (the returning endpoint's
        // first answer pays for a new connection, a peak P2C would hold against it for a while):
        // its share is then half its weight. The weight under P2C is a unit test of `policy`.
        .policy(sidekick::Policy::Random)
        .on_event(events.hook())
        .build_client()
        .expect("client");
    let (a, b) = (bs[0].url(), bs[1].url());
    wait_states(&c, |u| {
        if u == b {
            EndpointState::Down
        } else {
            EndpointState::Up
        }
    })
    .await;
    sequential(&c, Instant::now() + Duration::from_secs(5), 100).await;
    // Back up: the next passing probe begins its slow start.
    bs[1].set_health_status(200);
    let began = |ev: &Event| match ev {
        Event::SlowStartBegan {
            endpoint, window, ..
        } if *endpoint == b => Some(*window),
        _ => None,
    };
    let (t0, w) = events.wait_for(began).await;
    assert_eq!(w, window);

    // The first fifth of the window (weight 10 % to 28 %) against after the window.
    let early_hits = bs[1].hits();
    let early_all = total(&bs);
    sequential(&c, t0 + window / 5, 100_000).await;
    let early = (bs[1].hits() - early_hits) as f64 / (total(&bs) - early_all).max(1) as f64;
    tokio::time::sleep_until(t0 + window + Duration::from_millis(100)).await;
    let (late_hits, late_all) = (bs[1].hits(), total(&bs));
    sequential(&c, Instant::now() + window / 5, 100_000).await;
    let late = (bs[1].hits() - late_hits) as f64 / (total(&bs) - late_all).max(1) as f64;
    assert!(
        early < 0.25 && late > 0.35,
        "share early {:.1} %, after the window {:.1} % (full share 50 %, early about 10 %)",
        early * 100.0,
        late * 100.0
    );
    let (t1, ()) = events
        .wait_for(|e| match e {
            Event::SlowStartEnded { endpoint, .. } if *endpoint == b => Some(()),
            _ => None,
        })
        .await;
    assert!(t1 >= t0 + window, "ended before the window was over");
    assert!(
        !events.all().iter().any(|(_, e)| matches!(
            e,
            Event::SlowStartBegan { endpoint, .. } if *endpoint == a
        )),
        "an endpoint present from the start got a slow start"
    );
}

/// With probes off, an endpoint back from ejection (through its trial request) ramps up too;
/// without the option nothing ramps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_follows_a_return_from_ejection_and_is_off_by_default() {
    support::trace_init();
    for on in [true, false] {
        let bs = backends("e", 2).await;
        let events = Events::default();
        let b = bs[1].url();
        let mut builder = Client::builder()
            .site(site_of(&bs))
            .health_check(false)
            .eject_statuses([503])
            .eject_after(1)
            .eject_backoff(Duration::from_millis(50), Duration::from_millis(100))
            .max_attempts(1)
            // Round-robin: backend 1 surely gets the request that ejects it (under P2C the other
            // one may rightly win every draw for a while).
            .policy(sidekick::Policy::RoundRobin)
            .on_event(events.hook());
        if on {
            builder = builder.slow_start(Duration::from_millis(300));
        }
        let c = builder.build_client().expect("client");
        bs[1].set_behavior(Behavior::Status(503));
        // Until backend 1 answered 503 once (and was ejected): within two requests.
        for _ in 0..4 {
            let _ = get(&c).await;
            if bs[1].hits() > 0 {
                break;
            }
        }
        assert_eq!(bs[1].hits(), 1);
        bs[1].set_behavior(Behavior::Ok);
        // Its trial comes after the backoff; keep traffic going until it returned.
        let returned = |e: &Event| matches!(e, Event::Returned { endpoint, .. } if *endpoint == b);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !events.all().iter().any(|(_, e)| returned(e)) {
            assert!(
                Instant::now() < deadline,
                "never returned: {:?}",
                events.all()
            );
            let _ = get(&c).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ramped = events
            .all()
            .iter()
            .any(|(_, e)| matches!(e, Event::SlowStartBegan { endpoint, .. } if *endpoint == b));
        assert_eq!(ramped, on, "slow start {on}: {:?}", events.all());
    }
}

// ===== graded spill-over =====

/// Site 1 down to 1 healthy of 4: all-or-nothing sends it everything; graded spill-over keeps
/// 35 % there (0.25 × 1.4) and sends 65 % to site 2, announced by a `SiteShares` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graded_spillover_shares_a_degraded_site_with_the_next() {
    support::trace_init();
    let s1 = backends("a", 4).await;
    let s2 = backends("b", 4).await;
    for b in &s1[1..] {
        b.set_health_status(503);
    }
    for graded in [false, true] {
        let events = Events::default();
        let c = Client::builder()
            .sites([site_of(&s1), site_of(&s2)])
            .health_path(support::HEALTH_PATH)
            .health_interval(Duration::from_millis(50))
            .site_spillover(graded)
            .on_event(events.hook())
            .build_client()
            .expect("client");
        let down: Vec<String> = s1[1..].iter().map(|b| b.url()).collect();
        wait_states(&c, |u| {
            if down.iter().any(|d| d == u) {
                EndpointState::Down
            } else {
                EndpointState::Up
            }
        })
        .await;
        let shares = c.balancer().site_shares();
        let (before1, before2) = (total(&s1), total(&s2));
        let cl = c.clone();
        let r = load(8, 250, Duration::from_secs(20), move |_, _| {
            let c = cl.clone();
            async move { get(&c).await }
        })
        .await;
        assert_eq!(r.failed, 0, "{:?}", r.errors);
        let (n1, n2) = (total(&s1) - before1, total(&s2) - before2);
        let share1 = n1 as f64 / (n1 + n2).max(1) as f64;
        if graded {
            assert!((shares[0] - 0.35).abs() < 1e-9, "{shares:?}");
            assert!((shares[1] - 0.65).abs() < 1e-9, "{shares:?}");
            assert!(
                (0.28..0.42).contains(&share1),
                "site 1 got {:.1} % (35 % expected)",
                share1 * 100.0
            );
            let announced = events.all().into_iter().rev().find_map(|(_, e)| match e {
                Event::SiteShares { shares } => Some(shares),
                _ => None,
            });
            assert_eq!(announced, Some(vec![35, 65]));
        } else {
            assert_eq!(shares, vec![1.0, 0.0]);
            assert_eq!(n2, 0, "all-or-nothing sent {n2} to site 2");
            assert!(
                !events
                    .all()
                    .iter()
                    .any(|(_, e)| matches!(e, Event::SiteShares { .. })),
                "shares announced without spill-over"
            );
        }
    }
    // Site 1 healthy again: graded spill-over gives it everything back.
    for b in &s1[1..] {
        b.set_health_status(200);
    }
    let c = Client::builder()
        .sites([site_of(&s1), site_of(&s2)])
        .health_path(support::HEALTH_PATH)
        .health_interval(Duration::from_millis(50))
        .site_spillover(true)
        .build_client()
        .expect("client");
    wait_states(&c, |_| EndpointState::Up).await;
    assert_eq!(c.balancer().site_shares(), vec![1.0, 0.0]);
}
