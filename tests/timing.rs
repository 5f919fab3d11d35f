//! Timing logic on tokio's paused clock: probe schedule and jitter, rise/fall, the trial backoff
//! of an ejected endpoint, and the decay of the latency estimate. No sockets: probes go through
//! `probe_fn`, so the clock can jump without real I/O in between.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sidekick::{Balancer, EndpointState, Outcome};
use tokio::time::{sleep, Instant};

fn states(b: &Balancer) -> Vec<EndpointState> {
    b.endpoints().iter().map(|e| e.state).collect()
}

#[tokio::test(start_paused = true)]
async fn probes_are_jittered_from_the_first_one_on() {
    let t0 = Instant::now();
    let seen: Arc<Mutex<HashMap<String, Vec<Duration>>>> = Arc::default();
    let s = seen.clone();
    let interval = Duration::from_secs(10);
    let b = Balancer::builder()
        .site("http://127.0.0.1:{20001...20020}")
        .health_interval(interval)
        .health_jitter(0.5)
        .probe_fn(move |url| {
            s.lock().unwrap().entry(url).or_default().push(t0.elapsed());
            async { Ok(()) }
        })
        .build()
        .unwrap();
    sleep(Duration::from_secs(100)).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 20);
    let mut firsts = Vec::new();
    for (url, times) in seen.iter() {
        // First probe within jitter × min(interval, 1 s).
        assert!(
            times[0] <= Duration::from_millis(500),
            "{url}: first probe at {:?}",
            times[0]
        );
        firsts.push(times[0]);
        // Then interval + uniform[0, jitter × interval).
        assert!(
            times.len() >= 6,
            "{url}: only {} probes in 100 s",
            times.len()
        );
        for w in times.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap >= interval && gap <= interval.mul_f64(1.5),
                "{url}: gap {gap:?}"
            );
        }
    }
    firsts.sort();
    firsts.dedup();
    assert!(
        firsts.len() > 10,
        "first probes are in lockstep: {firsts:?}"
    );
    drop(seen);
    assert!(states(&b).iter().all(|s| *s == EndpointState::Up));
}

#[tokio::test(start_paused = true)]
async fn rise_and_fall_thresholds_count_consecutive_probes() {
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let b = Balancer::builder()
        .site("http://127.0.0.1:20101")
        .health_interval(Duration::from_secs(1))
        .health_jitter(0.0)
        .rise(2)
        .fall(3)
        .probe_fn(move |_| {
            let ok = h.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err("down".to_string())
                }
            }
        })
        .build()
        .unwrap();
    // Probes at t = 0, 1, 2, ... (no jitter). Unhealthy at first.
    sleep(Duration::from_millis(500)).await;
    assert_eq!(states(&b), [EndpointState::Down]);
    healthy.store(true, Ordering::SeqCst);
    sleep(Duration::from_secs(1)).await; // one pass (t=1)
    assert_eq!(states(&b), [EndpointState::Down]);
    sleep(Duration::from_secs(1)).await; // second pass (t=2)
    assert_eq!(states(&b), [EndpointState::Up]);
    healthy.store(false, Ordering::SeqCst);
    sleep(Duration::from_secs(2)).await; // two failures (t=3,4)
    assert_eq!(states(&b), [EndpointState::Up]);
    sleep(Duration::from_secs(1)).await; // third failure (t=5)
    assert_eq!(states(&b), [EndpointState::Down]);
    assert!(b.pick().unwrap_err().is_no_endpoint());
}

#[tokio::test(start_paused = true)]
async fn ejected_endpoint_returns_through_one_trial_after_jittered_backoff() {
    let b = Balancer::builder()
        .site("http://127.0.0.1:20201,http://127.0.0.1:20202")
        .health_check(false)
        .eject_backoff(Duration::from_secs(1), Duration::from_secs(8))
        .build()
        .unwrap();
    let url = "http://127.0.0.1:20201";
    let state = |b: &Balancer| {
        b.endpoints()
            .into_iter()
            .find(|e| e.url == url)
            .unwrap()
            .state
    };
    let lease = (0..100)
        .map(|_| b.pick().unwrap())
        .find(|l| l.url() == url)
        .expect("endpoint never picked");
    lease.finish(Outcome::Connect);
    assert_eq!(state(&b), EndpointState::Ejected);
    // Backoff 1 s jittered into [0.5 s, 1 s).
    sleep(Duration::from_millis(490)).await;
    assert_eq!(state(&b), EndpointState::Ejected);
    for _ in 0..50 {
        assert_ne!(b.pick().unwrap().url(), url);
    }
    sleep(Duration::from_millis(520)).await;
    assert_eq!(state(&b), EndpointState::Trial);
    // Exactly one request gets the trial.
    let trial = (0..50)
        .map(|_| b.pick().unwrap())
        .find(|l| l.url() == url)
        .expect("trial endpoint never picked");
    for _ in 0..50 {
        let l = b.pick().unwrap();
        assert_ne!(l.url(), url, "a second request got the trial endpoint");
        l.finish(Outcome::Success);
    }
    // The trial fails: ejected again, now for 2 s jittered into [1 s, 2 s).
    trial.finish(Outcome::Connect);
    assert_eq!(state(&b), EndpointState::Ejected);
    sleep(Duration::from_millis(990)).await;
    assert_eq!(state(&b), EndpointState::Ejected);
    sleep(Duration::from_millis(1020)).await;
    assert_eq!(state(&b), EndpointState::Trial);
    let trial = (0..50)
        .map(|_| b.pick().unwrap())
        .find(|l| l.url() == url)
        .unwrap();
    trial.finish(Outcome::Success);
    assert_eq!(state(&b), EndpointState::Up);
}

#[tokio::test(start_paused = true)]
async fn a_failure_penalty_decays_back_toward_the_site_latency() {
    let b = Balancer::builder()
        .site("http://127.0.0.1:20301,http://127.0.0.1:20302")
        .health_check(false)
        .ewma_decay(Duration::from_secs(10))
        .failure_penalty(Duration::from_secs(1))
        .tokio_clock(true) // the decay follows the paused clock
        .max_ejected_share(0.0) // keep it in rotation: this test is about the score
        .build()
        .unwrap();
    let latency = |b: &Balancer, url: &str| {
        b.endpoints()
            .into_iter()
            .find(|e| e.url == url)
            .unwrap()
            .latency
    };
    let a = "http://127.0.0.1:20301";
    // Both answer in 2 ms for a while.
    for _ in 0..20 {
        let l = b.pick().unwrap();
        l.finish_with_latency(Outcome::Success, Duration::from_millis(2));
    }
    let lease = (0..100)
        .map(|_| b.pick().unwrap())
        .find(|l| l.url() == a)
        .expect("endpoint never picked");
    lease.finish_with_latency(Outcome::Connect, Duration::from_micros(50));
    // A fast failure is recorded as the 1 s penalty, not as 50 µs.
    let now = latency(&b, a).unwrap();
    assert!(now >= Duration::from_millis(999), "{now:?}");
    // Idle, the estimate relaxes toward half the site's typical latency (1 ms) with a time
    // constant of decay / 8: after 1.25 s it has come 1 - 1/e of the way.
    sleep(Duration::from_millis(1250)).await;
    let one = latency(&b, a).unwrap();
    assert!(
        one > Duration::from_millis(360) && one < Duration::from_millis(380),
        "{one:?}"
    );
    // Within the decay period it is below the typical latency, where busy peers sit.
    sleep(Duration::from_millis(8750)).await;
    let decayed = latency(&b, a).unwrap();
    assert!(decayed < Duration::from_millis(2), "{decayed:?}");
    // After many, it is back at the site's typical latency and gets traffic again.
    sleep(Duration::from_secs(200)).await;
    let back = latency(&b, a).unwrap();
    assert!(back < Duration::from_millis(3), "{back:?}");
    let picked = (0..200).filter(|_| {
        let l = b.pick().unwrap();
        let hit = l.url() == a;
        l.finish(Outcome::Cancelled);
        hit
    });
    assert!(picked.count() > 50);
}

#[tokio::test(start_paused = true)]
async fn ready_waits_for_the_preferred_site_to_be_probed() {
    // Site 1's probes answer slowly; site 2's at once. ready() must not hand traffic to site 2
    // just because it was probed first.
    let b = Balancer::builder()
        .site("http://127.0.0.1:20401,http://127.0.0.1:20402")
        .site("http://127.0.0.1:20501")
        .health_interval(Duration::from_secs(5))
        .probe_fn(|url| async move {
            if url.contains(":2040") {
                sleep(Duration::from_millis(300)).await;
            }
            Ok(())
        })
        .build()
        .unwrap();
    b.ready(Duration::from_secs(5)).await.unwrap();
    for _ in 0..20 {
        assert_eq!(b.pick().unwrap().site(), 0);
    }
    // With the preferred site down, ready() settles on the next one.
    let b = Balancer::builder()
        .site("http://127.0.0.1:20601")
        .site("http://127.0.0.1:20701")
        .probe_fn(|url| async move {
            if url.contains(":20601") {
                Err("down".to_string())
            } else {
                Ok(())
            }
        })
        .build()
        .unwrap();
    b.ready(Duration::from_secs(5)).await.unwrap();
    assert_eq!(b.pick().unwrap().site(), 1);
}

/// A lease on `url` (bounded: P2C over two endpoints picks each about half the time).
fn pick(b: &Balancer, url: &str) -> sidekick::Lease {
    for _ in 0..10_000 {
        let lease = b.pick().unwrap();
        if lease.url() == url {
            return lease;
        }
        lease.finish(Outcome::Status(200));
    }
    panic!("{url} was never picked");
}

#[tokio::test(start_paused = true)]
async fn optimistic_probes_only_until_up_and_after_a_failed_request() {
    let probes: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let healthy = Arc::new(AtomicBool::new(true));
    let (p, h) = (probes.clone(), healthy.clone());
    let b = Balancer::builder()
        .site("http://127.0.0.1:{20201...20202}")
        .health_interval(Duration::from_secs(1))
        .health_jitter(0.0)
        .health_optimistic(true)
        // The failure's penalty and the way back follow the paused clock, as the probes do. On
        // the system's clock the paused 30 s did not pass for them, and whether the first
        // endpoint was picked again within `pick`'s bound depended on the machine's load (6
        // failures in 200 runs on a busy machine, none in 300 with this).
        .tokio_clock(true)
        .probe_fn(move |url| {
            *p.lock().unwrap().entry(url).or_default() += 1;
            let ok = h.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err("down".to_string())
                }
            }
        })
        .build()
        .unwrap();
    let count = |url: &str| probes.lock().unwrap().get(url).copied().unwrap_or(0);
    let (a, other) = ("http://127.0.0.1:20201", "http://127.0.0.1:20202");

    // Up at the first probe, then left alone.
    sleep(Duration::from_secs(30)).await;
    assert_eq!((count(a), count(other)), (1, 1));
    assert_eq!(states(&b), [EndpointState::Up, EndpointState::Up]);

    // A request fails on `a`: its next probe runs (and passes), then it is left alone again.
    let lease = pick(&b, a);
    lease.finish(Outcome::Connect);
    sleep(Duration::from_secs(30)).await;
    assert_eq!((count(a), count(other)), (2, 1));
    assert_eq!(states(&b), [EndpointState::Up, EndpointState::Up]);

    // Failing again while the backend is really down: probed every interval until it is back.
    healthy.store(false, Ordering::SeqCst);
    let lease = pick(&b, a);
    lease.finish(Outcome::Reset);
    sleep(Duration::from_millis(10_500)).await;
    assert!(count(a) >= 2 + 10, "{} probes while down", count(a));
    assert_eq!(states(&b)[0], EndpointState::Down);
    healthy.store(true, Ordering::SeqCst);
    sleep(Duration::from_secs(2)).await;
    let back = count(a);
    assert_eq!(states(&b)[0], EndpointState::Up);
    sleep(Duration::from_secs(30)).await;
    assert_eq!(count(a), back, "probed again while up with no failure");
    assert_eq!(count(other), 1);
}
