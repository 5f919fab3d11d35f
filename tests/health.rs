//! Active probes against real backends: the probe path of the last site, the probe port
//! override, and the probes stopping with the last handle.
#![cfg(feature = "client")]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sidekick::Balancer;
use support::{Backend, Behavior};

fn uris(b: &Backend) -> Vec<String> {
    b.requests().into_iter().map(|r| r.uri).collect()
}

#[tokio::test]
async fn the_last_site_is_probed_on_its_own_path() {
    let a = Backend::start("a", Behavior::Ok).await;
    let b = Backend::start("b", Behavior::Ok).await;
    let bal = Balancer::builder()
        .site(a.url())
        .site(b.url())
        .health_path("probe-write") // a leading `/` is added
        .last_site_health_path("/probe-read")
        .health_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    bal.ready(Duration::from_secs(5)).await.unwrap();
    // A few probe rounds of both sites.
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The probes are ordinary requests to these backends (their health path is /health).
    assert!(
        uris(&a).iter().all(|u| u == "/probe-write"),
        "{:?}",
        uris(&a)
    );
    assert!(
        uris(&b).iter().all(|u| u == "/probe-read"),
        "{:?}",
        uris(&b)
    );
    assert!(!uris(&a).is_empty() && !uris(&b).is_empty());
}

#[tokio::test]
async fn the_probe_port_can_differ_from_the_traffic_port() {
    let traffic = Backend::start("traffic", Behavior::Ok).await;
    let health = Backend::start("health", Behavior::Ok).await;
    let bal = Balancer::builder()
        .site(traffic.url())
        .health_path("/health")
        .health_port(health.addr().port())
        .health_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    bal.ready(Duration::from_secs(5)).await.unwrap();
    assert!(health.health_hits() > 0);
    assert_eq!(traffic.health_hits(), 0);
    // The health port going down takes the endpoint out, whatever the traffic port says.
    health.set_health_status(503);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while bal.is_available() {
        assert!(tokio::time::Instant::now() < deadline, "still available");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_stops_the_probes() {
    let probes = Arc::new(AtomicU64::new(0));
    let p = probes.clone();
    let bal = Balancer::builder()
        .site("http://127.0.0.1:{22001...22004}")
        .health_interval(Duration::from_secs(1))
        .probe_fn(move |_| {
            p.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let clone = bal.clone();
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(bal);
    // A clone keeps them going.
    let before = probes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(probes.load(Ordering::SeqCst) > before);
    // An outstanding lease does not keep them going, and finishing it afterwards is harmless.
    let lease = clone.pick().unwrap();
    drop(clone);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let stopped = probes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    lease.finish(sidekick::Outcome::Connect);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        probes.load(Ordering::SeqCst),
        stopped,
        "probes still running"
    );
}
