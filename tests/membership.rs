//! Live membership under load: 8 concurrent clients through `sidekick::Client` against real
//! backends on 127.0.0.1 while endpoints are added and removed every 100 ms for 10 s.
//!
//! What must hold: no request fails; a request that started after an endpoint's removal never
//! reaches it (every request carries a sequence number taken before it is sent, compared with
//! the number read right after the removal returned); and at the end exactly one probe task
//! per endpoint is alive (none left behind by the removed ones).
#![cfg(feature = "client")]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use sidekick::{Balancer, Client, EndpointState};
use support::{Backend, Behavior, HEALTH_PATH};
use tokio::task::JoinSet;

/// Concurrent clients.
const WORKERS: usize = 8;
/// Membership changes: one every `CHURN_EVERY`, `CHURN_STEPS` of them (10 s).
const CHURN_STEPS: usize = 100;
const CHURN_EVERY: Duration = Duration::from_millis(100);
/// Bound on each client's requests (the load stops when the churn ends).
const MAX_PER_WORKER: u64 = 1_000_000;
/// Backends `0..STABLE` stay; the others come and go.
const STABLE: usize = 2;
const BACKENDS: usize = 8;

/// The sequence numbers of the requests `be` received.
fn seqs(be: &Backend) -> Vec<u64> {
    be.requests()
        .iter()
        .filter_map(|r| r.headers.get("x-seq")?.to_str().ok()?.parse().ok())
        .collect()
}

/// Wait (bounded: 5 s in 10 ms steps) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_come_and_go_under_load_without_a_failed_request() {
    support::trace_init();
    let mut backends = Vec::new();
    for i in 0..BACKENDS {
        backends.push(Backend::start(&format!("b{i}"), Behavior::Ok).await);
    }
    // The stable ones and the first two of the others to begin with.
    let initial: Vec<String> = backends[..STABLE + 2].iter().map(Backend::url).collect();
    let balancer = Balancer::builder()
        .site(initial.join(","))
        .health_path(HEALTH_PATH)
        .health_interval(Duration::from_millis(50))
        .build()
        .expect("valid balancer");
    balancer
        .ready(Duration::from_secs(5))
        .await
        .expect("the initial endpoints come up");
    let client = Arc::new(Client::new(balancer.clone()).expect("client"));

    let seq = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = JoinSet::new();
    for _ in 0..WORKERS {
        let (client, seq, stop) = (client.clone(), seq.clone(), stop.clone());
        workers.spawn(async move {
            let (mut ok, mut failed, mut errors) = (0u64, 0u64, Vec::new());
            for _ in 0..MAX_PER_WORKER {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let n = seq.fetch_add(1, Ordering::AcqRel) + 1;
                let req = http::Request::get("/object")
                    .header("x-seq", n.to_string())
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let result = match client.request(req).await {
                    Ok(resp) if resp.status() == 200 => resp
                        .into_body()
                        .collect()
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("body: {e}")),
                    Ok(resp) => Err(format!("status {}", resp.status())),
                    Err(e) => Err(e.to_string()),
                };
                match result {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        failed += 1;
                        if errors.len() < 5 {
                            errors.push(e);
                        }
                    }
                }
            }
            (ok, failed, errors)
        });
    }

    // Churn: step i toggles backend STABLE + i % 6: removed if present, added back if not.
    let mut present: Vec<bool> = (0..BACKENDS).map(|i| i < STABLE + 2).collect();
    // For a removed backend: the last sequence number taken before its removal returned.
    let mut removed_at: Vec<Option<u64>> = vec![None; BACKENDS];
    let (mut adds, mut removes) = (0u32, 0u32);
    let mut late = Vec::new();
    for step in 0..CHURN_STEPS {
        tokio::time::sleep(CHURN_EVERY).await;
        let k = STABLE + step % (BACKENDS - STABLE);
        let url = backends[k].url();
        if present[k] {
            balancer.remove_endpoint(&url).expect("remove");
            removed_at[k] = Some(seq.load(Ordering::Acquire));
            removes += 1;
        } else {
            if let Some(at) = removed_at[k] {
                late.extend(
                    seqs(&backends[k])
                        .into_iter()
                        .filter(|s| *s > at)
                        .map(|s| (k, s)),
                );
            }
            balancer.add_endpoint(0, &url).expect("add");
            removed_at[k] = None;
            adds += 1;
        }
        present[k] = !present[k];
    }
    stop.store(true, Ordering::Release);
    let (mut ok, mut failed, mut errors) = (0u64, 0u64, Vec::new());
    while let Some(done) = workers.join_next().await {
        let (o, f, e) = done.expect("worker");
        ok += o;
        failed += f;
        errors.extend(e);
    }
    for (k, at) in removed_at.iter().enumerate() {
        if let Some(at) = at {
            late.extend(
                seqs(&backends[k])
                    .into_iter()
                    .filter(|s| s > at)
                    .map(|s| (k, s)),
            );
        }
    }
    let hits: Vec<u64> = backends.iter().map(Backend::hits).collect();
    println!(
        "membership churn: {ok} requests served, {failed} failed, {adds} adds and {removes} \
         removes in {CHURN_STEPS} steps of {CHURN_EVERY:?}, {WORKERS} clients; hits per backend \
         {hits:?}"
    );
    assert_eq!(failed, 0, "failed requests: {errors:?}");
    assert!(
        late.is_empty(),
        "requests sent after their endpoint's removal: {late:?}"
    );
    assert!(ok >= CHURN_STEPS as u64, "the load ran: {ok} requests");
    assert!(
        adds >= 40 && removes >= 40,
        "{adds} adds, {removes} removes"
    );
    assert!(
        hits[STABLE..].iter().sum::<u64>() > 0,
        "the endpoints that came and went took traffic: {hits:?}"
    );

    // The live endpoints are exactly those present, each with one probe task.
    let mut want: Vec<String> = (0..BACKENDS)
        .filter(|k| present[*k])
        .map(|k| backends[k].url())
        .collect();
    want.sort();
    let mut have: Vec<String> = balancer.endpoints().into_iter().map(|e| e.url).collect();
    have.sort();
    assert_eq!(have, want);
    until("one probe task per live endpoint", || {
        balancer.probe_tasks() == want.len()
    })
    .await;
    until("every live endpoint up", || {
        balancer
            .endpoints()
            .iter()
            .all(|e| e.state == EndpointState::Up)
    })
    .await;
}
