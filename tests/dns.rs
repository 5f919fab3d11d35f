//! DNS fan-out (`rr_dns`): one endpoint per address, re-resolved periodically with a floor,
//! keeping the last good answer when a lookup fails. Backends listen on the same port on
//! 127.0.0.1 and 127.0.0.2.
#![cfg(feature = "client")]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use sidekick::{Client, EndpointState};
use support::{Backend, Behavior};

const HOST: &str = "sidekick-dns.test";

async fn wait_for(c: &Client, what: &str, f: impl Fn(&[sidekick::EndpointInfo]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let eps = c.balancer().endpoints();
        if f(&eps) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {eps:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fans_out_follows_changes_and_keeps_last_good_answer() {
    support::trace_init();
    let a = Backend::start("a", Behavior::Ok).await;
    let port = a.addr().port();
    let b = Backend::start_at("b", Behavior::Ok, SocketAddr::from(([127, 0, 0, 2], port))).await;

    let one: IpAddr = "127.0.0.1".parse().unwrap();
    let two: IpAddr = "127.0.0.2".parse().unwrap();
    let answer: Arc<Mutex<Option<Vec<IpAddr>>>> = Arc::new(Mutex::new(Some(vec![one])));
    let lookups = Arc::new(AtomicU32::new(0));
    let (ans, n) = (answer.clone(), lookups.clone());
    let c = Client::builder()
        .site(format!("http://{HOST}:{port}"))
        .rr_dns(true)
        .dns_refresh(Duration::from_millis(10)) // floored to 1 s
        .health_path("/health")
        .health_interval(Duration::from_millis(100))
        .resolver(move |host| {
            assert_eq!(host, HOST);
            n.fetch_add(1, Ordering::SeqCst);
            let a = ans.lock().unwrap().clone();
            async move { a.ok_or_else(|| std::io::Error::other("SERVFAIL")) }
        })
        .build_client()
        .unwrap();
    c.balancer().ready(Duration::from_secs(5)).await.unwrap();
    assert_eq!(c.balancer().endpoints().len(), 1);

    // A second address appears: two endpoints, both get traffic, Host stays the name.
    *answer.lock().unwrap() = Some(vec![one, two]);
    wait_for(&c, "two endpoints up", |e| {
        e.len() == 2 && e.iter().all(|e| e.state == EndpointState::Up)
    })
    .await;
    // A loaded client (8 requests in flight): both addresses share the traffic.
    let c2 = c.clone();
    let report = support::load(8, 50, Duration::from_secs(20), move |_, _| {
        let c = c2.clone();
        async move {
            let r = c.get("/obj").await.map_err(|e| e.to_string())?;
            let ok = r.status() == 200;
            let _ = r.into_body().collect().await;
            if ok {
                Ok(())
            } else {
                Err("status".to_string())
            }
        }
    })
    .await;
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert!(
        a.hits() > 40 && b.hits() > 40,
        "a={} b={}",
        a.hits(),
        b.hits()
    );
    let host = format!("{HOST}:{port}");
    assert!(a
        .requests()
        .iter()
        .chain(b.requests().iter())
        .all(|r| r.host.as_deref() == Some(host.as_str())));

    // Lookups fail: the last good answer stays.
    *answer.lock().unwrap() = None;
    let before = lookups.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let during = lookups.load(Ordering::SeqCst) - before;
    assert!(
        (1..=3).contains(&during),
        "{during} lookups in 2.5 s (floor is 1 s)"
    );
    assert_eq!(c.balancer().endpoints().len(), 2);

    // 127.0.0.1 disappears from the answer: its endpoint goes, traffic follows.
    *answer.lock().unwrap() = Some(vec![two]);
    wait_for(&c, "only 127.0.0.2", |e| {
        e.len() == 1 && e[0].url.contains("127.0.0.2")
    })
    .await;
    let a_hits = a.hits();
    for _ in 0..20 {
        let r = c.get("/obj").await.unwrap();
        let _ = r.into_body().collect().await;
    }
    assert_eq!(a.hits(), a_hits);
}
