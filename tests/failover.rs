//! Failover behaviour against real HTTP backends on 127.0.0.1: a killed backend, a whole site
//! down, and backends that hang, fail fast, or are slow.
#![cfg(feature = "client")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use sidekick::Client;
use support::{load, Backend, Behavior, LoadReport};

const INTERVAL: Duration = Duration::from_millis(200);
const JITTER: f64 = 0.2;

async fn backends(prefix: &str, n: usize, behavior: Behavior) -> Vec<Arc<Backend>> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(Arc::new(
            Backend::start(&format!("{prefix}{i}"), behavior.clone()).await,
        ));
    }
    v
}

fn site_of(bs: &[Arc<Backend>]) -> String {
    bs.iter().map(|b| b.url()).collect::<Vec<_>>().join(",")
}

async fn client(
    sites: &[String],
    tweak: impl FnOnce(sidekick::Builder) -> sidekick::Builder,
) -> Client {
    support::trace_init();
    let b = Client::builder()
        .sites(sites)
        .health_path("/health")
        .health_interval(INTERVAL)
        .health_timeout(Duration::from_millis(500))
        .health_jitter(JITTER)
        .connect_timeout(Duration::from_millis(500));
    let c = tweak(b).build_client().expect("client");
    c.balancer()
        .ready(Duration::from_secs(5))
        .await
        .expect("ready");
    // ready() returns with the first endpoint up; these tests want every endpoint probed up
    // (a site-2 endpoint may otherwise be up before site 1 is).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !c
        .balancer()
        .endpoints()
        .iter()
        .all(|e| e.state == sidekick::EndpointState::Up)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "endpoints never all up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c
}

/// GET "/obj" and read the whole body; Err on transport errors and non-200 answers.
async fn get(c: &Client) -> Result<(), String> {
    let resp = c.get("/obj").await.map_err(|e| format!("{e}: {e:?}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    if body.to_bytes().len() != support::DEFAULT_BODY_LEN {
        return Err("short body".into());
    }
    Ok(())
}

fn spawn_load(c: &Client, workers: usize, stop: Duration) -> tokio::task::JoinHandle<LoadReport> {
    let c = c.clone();
    tokio::spawn(async move {
        // Bounded by count and by time.
        load(workers, 100_000, stop, move |_, _| {
            let c = c.clone();
            async move { get(&c).await }
        })
        .await
    })
}

fn total(bs: &[Arc<Backend>]) -> u64 {
    bs.iter().map(|b| b.hits()).sum()
}

/// Run the load until it is over; a worker whose call was cut by the deadline counts as failed,
/// so each phase ends by waiting for the load to stop on its own.
fn assert_no_failures(r: &LoadReport) {
    let real: Vec<_> = r
        .errors
        .iter()
        .filter(|e| !e.contains("deadline"))
        .collect();
    assert!(real.is_empty(), "failed requests: {} {:?}", r.failed, real);
    assert!(r.ok > 100, "too little traffic: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_one_of_four_under_load_then_restart() {
    let bs = backends("b", 4, Behavior::Ok).await;
    let c = client(&[site_of(&bs)], |b| b).await;

    let load = spawn_load(&c, 8, Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(700)).await;
    bs[0].kill().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let dead_hits = bs[0].hits();
    let others_before = total(&bs[1..]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bs[0].hits(), dead_hits, "a killed backend got requests");
    assert!(total(&bs[1..]) > others_before, "survivors got no traffic");

    bs[0].restart().await;
    bs[0].reset_hits();
    // Back within one probe interval plus its jitter (plus a little scheduling slack).
    tokio::time::sleep(INTERVAL.mul_f64(1.0 + JITTER) + Duration::from_millis(150)).await;
    let back = bs[0].hits();
    let report = load.await.unwrap();
    assert!(
        back > 0,
        "restarted backend got no traffic within one probe interval"
    );
    assert_no_failures(&report);
    let infos = c.balancer().endpoints();
    assert!(
        infos.iter().all(|e| e.state == sidekick::EndpointState::Up),
        "{infos:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_down_fails_over_then_back() {
    let s1 = backends("s1-", 2, Behavior::Ok).await;
    let s2 = backends("s2-", 2, Behavior::Ok).await;
    let c = client(&[site_of(&s1), site_of(&s2)], |b| b).await;

    // Phase 1: all traffic on site 1.
    let r = spawn_load(&c, 8, Duration::from_millis(800)).await.unwrap();
    assert_no_failures(&r);
    assert!(total(&s1) > 0);
    assert_eq!(total(&s2), 0, "site 2 got traffic while site 1 was up");

    // Phase 2: site 1 dies under load; zero failed GETs, site 2 takes over.
    let load = spawn_load(&c, 8, Duration::from_millis(1500));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for b in &s1 {
        b.kill().await;
    }
    let r = load.await.unwrap();
    assert_no_failures(&r);
    assert!(total(&s2) > 0, "site 2 got no traffic");
    let s1_hits = total(&s1);
    let s2_before = total(&s2);
    let r = spawn_load(&c, 8, Duration::from_millis(500)).await.unwrap();
    assert_no_failures(&r);
    assert_eq!(total(&s1), s1_hits);
    assert!(total(&s2) > s2_before);

    // Phase 3: site 1 back; traffic returns to it.
    for b in &s1 {
        b.restart().await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !c
        .balancer()
        .endpoints()
        .iter()
        .filter(|e| e.site == 0)
        .all(|e| e.state == sidekick::EndpointState::Up)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "site 1 never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for b in s1.iter().chain(&s2) {
        b.reset_hits();
    }
    let r = spawn_load(&c, 8, Duration::from_millis(800)).await.unwrap();
    assert_no_failures(&r);
    assert!(total(&s1) > 100);
    assert_eq!(total(&s2), 0, "traffic did not return to site 1");
}

/// Send `n` GETs from 8 workers; returns the report.
async fn run_gets(c: &Client, n: usize) -> LoadReport {
    let c = c.clone();
    load(8, n / 8, Duration::from_secs(20), move |_, _| {
        let c = c.clone();
        async move { get(&c).await }
    })
    .await
}

fn share(b: &Backend, all: &[Arc<Backend>]) -> f64 {
    b.hits() as f64 / total(all).max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_around_a_backend_that_never_answers() {
    let bs = backends("h", 4, Behavior::Ok).await;
    bs[3].set_behavior(Behavior::Hang);
    let c = client(&[site_of(&bs)], |b| {
        b.attempt_timeout(Duration::from_millis(300))
    })
    .await;
    let r = run_gets(&c, 800).await;
    assert_eq!(r.failed, 0, "{:?}", r.errors);
    let s = share(&bs[3], &bs);
    assert!(
        s < 0.05,
        "hanging backend got {:.1} % of requests",
        s * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_around_a_backend_that_fails_fast() {
    let bs = backends("f", 4, Behavior::Ok).await;
    bs[2].set_behavior(Behavior::Status(503));
    let c = client(&[site_of(&bs)], |b| b).await;
    let r = run_gets(&c, 2000).await;
    // 503s are retried on another endpoint, so callers see none.
    assert_eq!(r.failed, 0, "{:?}", r.errors);
    let s = share(&bs[2], &bs);
    assert!(s < 0.05, "503 backend got {:.1} % of requests", s * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_around_a_slow_backend() {
    let bs = backends("s", 4, Behavior::Delay(Duration::from_millis(3))).await;
    bs[1].set_behavior(Behavior::Delay(Duration::from_millis(30)));
    let c = client(&[site_of(&bs)], |b| b).await;
    let r = run_gets(&c, 2000).await;
    assert_eq!(r.failed, 0, "{:?}", r.errors);
    let s = share(&bs[1], &bs);
    assert!(
        s < 0.10,
        "10x slower backend got {:.1} % of requests (fair share 25 %)",
        s * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_available_fails_fast_with_typed_error() {
    let bs = backends("d", 2, Behavior::Ok).await;
    let c = client(&[site_of(&bs)], |b| b).await;
    for b in &bs {
        b.kill().await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while c.balancer().is_available() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "endpoints never went down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = c.get("/obj").await.unwrap_err();
    assert!(err.is_no_endpoint(), "{err:?}");
}
