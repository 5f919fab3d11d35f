//! Hedged requests: a second attempt to another endpoint when the first has not answered in
//! time, charged to the retry budget; the first answer wins and the other attempt is dropped.
#![cfg(feature = "client")]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sidekick::options::Value;
use sidekick::retry::Decision;
use sidekick::{Balancer, Client, Event, Outcome};
use support::recorded::{client, count};
use support::{Backend, Behavior};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// How long the slow server waits before answering, unless told otherwise.
const NEVER: Duration = Duration::from_secs(30);
/// The most bytes of a request head the slow server reads.
const MAX_HEAD: usize = 16 * 1024;

/// A raw HTTP/1.1 server on 127.0.0.1:0 that answers each request 200 after a delay, and counts
/// the requests it got and the connections the client closed before the answer. Dropping it
/// stops every task it started.
struct Slow {
    url: String,
    delay: Arc<Mutex<Duration>>,
    requests: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Slow {
    async fn start(delay: Duration) -> Slow {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let delay = Arc::new(Mutex::new(delay));
        let requests = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (d, r, x) = (delay.clone(), requests.clone(), dropped.clone());
        let accept = tokio::spawn(async move {
            // Owned here: aborting the accept task drops the set, which aborts every connection.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        conns.spawn(serve(stream, d.clone(), r.clone(), x.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Slow {
            url,
            delay,
            requests,
            dropped,
            accept,
        }
    }

    fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for Slow {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One connection: read a head and its content-length body, wait, answer; a client that closes
/// first is counted in `dropped`. Keep-alive, bounded by the connection's life.
async fn serve(
    mut stream: tokio::net::TcpStream,
    delay: Arc<Mutex<Duration>>,
    requests: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        // The head.
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            if buf.len() > MAX_HEAD {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        // The body (by content-length), so that waiting below only sees the client's close.
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut have = buf.len() - end;
        while have < length.min(MAX_HEAD) {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => have += n,
            }
        }
        buf.clear();
        requests.fetch_add(1, Ordering::SeqCst);
        let wait = *delay.lock().unwrap();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // The client has nothing more to send before the answer: a read that ends means
            // it closed the connection.
            r = stream.read(&mut chunk) => {
                if matches!(r, Ok(0) | Err(_)) {
                    dropped.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
        }
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nx-backend: slow\r\n\r\nslow";
        if stream.write_all(answer).await.is_err() {
            return;
        }
    }
}

/// Send `method /obj` and return the status and the answering backend's name.
async fn send(c: &Client, method: &str, body: &'static [u8]) -> (u16, String) {
    let req = http::Request::builder()
        .method(method)
        .uri("/obj")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), c.request(req))
        .await
        .expect("the request ends within 10 s")
        .unwrap();
    let status = resp.status().as_u16();
    let name = resp
        .headers()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    resp.into_body().collect().await.unwrap();
    (status, name)
}

/// Wait (bounded) until `f` holds.
async fn eventually(f: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

#[tokio::test]
async fn a_slow_attempt_is_hedged_to_the_fast_endpoint_and_dropped() {
    let slow = Slow::start(NEVER).await;
    let fast = Backend::start("fast", Behavior::Ok).await;
    let (c, ev) = client(&[format!("{},{}", slow.url, fast.url())], |b| {
        b.hedge_delay(Duration::from_millis(50))
    });
    // Round-robin over two endpoints: one request at least goes to the slow one first.
    for _ in 0..2 {
        assert_eq!(send(&c, "GET", b"").await, (200, "fast".to_string()));
    }
    let stats = c.balancer().hedge_stats();
    assert!(stats.won >= 1 && stats.refused == 0, "{stats:?}");
    // Every request that reached the slow endpoint was hedged from it, or to it (when the fast
    // one was slow to answer); all were answered by the fast one.
    assert_eq!(slow.requests(), stats.sent, "{stats:?}");
    let won = count(
        &ev,
        |e| matches!(e, Event::HedgeWon { endpoint } if *endpoint == fast.url()),
    );
    assert_eq!(won as u64, stats.won);
    let from_slow = count(
        &ev,
        |e| matches!(e, Event::HedgeSent { hedged, .. } if *hedged == slow.url),
    );
    assert_eq!(from_slow as u64, stats.won);
    // The slow server sees its connection dropped; the lease finished as cancelled: nothing
    // in flight, and the attempt is not held against the endpoint.
    assert!(
        eventually(|| slow.dropped() == slow.requests()).await,
        "dropped {}",
        slow.dropped()
    );
    let info = c.balancer().endpoints();
    let s = info.iter().find(|e| e.url == slow.url).unwrap();
    assert_eq!((s.inflight, s.requests, s.failures), (0, 0, 0), "{s:?}");
}

#[tokio::test]
async fn post_is_never_hedged() {
    let slow = Slow::start(Duration::from_millis(300)).await;
    let fast = Backend::start("fast", Behavior::Ok).await;
    let (c, ev) = client(&[format!("{},{}", slow.url, fast.url())], |b| {
        b.hedge_delay(Duration::from_millis(20))
    });
    let mut names = Vec::new();
    for _ in 0..2 {
        let (status, name) = send(&c, "POST", b"payload").await;
        assert_eq!(status, 200);
        names.push(name);
    }
    names.sort();
    // Each endpoint answered its own POST: the slow one after 300 ms, not hedged.
    assert_eq!(names, ["fast", "slow"]);
    assert_eq!(c.balancer().hedge_stats().sent, 0);
    assert_eq!(count(&ev, |e| matches!(e, Event::HedgeSent { .. })), 0);
    assert_eq!((slow.requests(), fast.hits()), (1, 1));

    // With an Idempotency-Key the client declares the POST safe to repeat: it is hedged.
    slow.set_delay(NEVER);
    for _ in 0..2 {
        let req = http::Request::post("/obj")
            .header("idempotency-key", "k-1")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), c.request(req))
            .await
            .expect("hedged, not hung")
            .unwrap();
        assert_eq!(resp.headers()["x-backend"], "fast");
    }
    assert!(c.balancer().hedge_stats().won >= 1);
    assert!(fast.requests().iter().any(|r| r.body == "payload"));
}

#[tokio::test]
async fn no_hedge_when_the_budget_is_spent() {
    let slow = Slow::start(Duration::from_millis(300)).await;
    let fast = Backend::start("fast", Behavior::Ok).await;
    let (c, ev) = client(&[format!("{},{}", slow.url, fast.url())], |b| {
        b.hedge_delay(Duration::from_millis(20))
            .retry_budget(0.0, 0)
    });
    let mut names = Vec::new();
    for _ in 0..2 {
        names.push(send(&c, "GET", b"").await.1);
    }
    // A request that went to the slow endpoint asked for a hedge, was refused, and waited for
    // the slow answer.
    let stats = c.balancer().hedge_stats();
    let slow_answers = names.iter().filter(|n| *n == "slow").count() as u64;
    assert!(slow_answers >= 1, "{names:?}");
    assert_eq!(slow.requests(), slow_answers);
    assert_eq!(
        (stats.sent, stats.won, stats.refused),
        (0, 0, slow_answers),
        "{stats:?}"
    );
    assert_eq!(
        count(&ev, |e| matches!(e, Event::BudgetExhausted { .. })) as u64,
        slow_answers
    );
    assert_eq!(
        fast.hits(),
        2 - slow_answers,
        "no hedge reached the fast endpoint"
    );
}

#[tokio::test]
async fn hedging_is_off_by_default() {
    let slow = Slow::start(Duration::from_millis(200)).await;
    let fast = Backend::start("fast", Behavior::Ok).await;
    let (c, ev) = client(&[format!("{},{}", slow.url, fast.url())], |b| b);
    assert_eq!(c.balancer().option("hedge_delay").unwrap(), Value::None);
    assert_eq!(
        c.balancer().option("hedge_percentile").unwrap(),
        Value::Number(0.0)
    );
    let mut names = Vec::new();
    for _ in 0..2 {
        names.push(send(&c, "GET", b"").await.1);
    }
    names.sort();
    assert_eq!(names, ["fast", "slow"]);
    assert_eq!(c.balancer().hedge_stats(), Default::default());
    assert_eq!(count(&ev, |e| matches!(e, Event::HedgeSent { .. })), 0);
}

#[tokio::test]
async fn percentile_delay_follows_the_sites_latencies() {
    let slow = Slow::start(Duration::ZERO).await;
    let fast = Backend::start("fast", Behavior::Ok).await;
    let (c, _ev) = client(&[format!("{},{}", slow.url, fast.url())], |b| {
        b.hedge_percentile(90.0)
    });
    assert_eq!(
        c.balancer().option("hedge_percentile").unwrap(),
        Value::Number(90.0)
    );
    // Both fast: 40 latencies of a few milliseconds at most.
    for _ in 0..40 {
        assert_eq!(send(&c, "GET", b"").await.0, 200);
    }
    let before = c.balancer().hedge_stats();
    // Now one endpoint stops answering: its request is hedged after the site's p90, not hung.
    slow.set_delay(NEVER);
    for _ in 0..4 {
        assert_eq!(send(&c, "GET", b"").await, (200, "fast".to_string()));
    }
    let after = c.balancer().hedge_stats();
    assert!(after.won > before.won, "{before:?} {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedges_cannot_multiply_the_load_in_an_outage() {
    // Every endpoint slow: each request would be hedged, but the budget (10 % of the requests,
    // no floor) lets only a few hedges out.
    let a = Slow::start(Duration::from_millis(200)).await;
    let b = Slow::start(Duration::from_millis(200)).await;
    let (c, _ev) = client(&[format!("{},{}", a.url, b.url)], |x| {
        x.hedge_delay(Duration::from_millis(10))
            .retry_budget(0.1, 0)
    });
    let balancer = c.balancer().clone();
    let report = support::load(10, 5, Duration::from_secs(20), move |_, _| {
        let c = c.clone();
        async move {
            let resp = c.get("/obj").await.map_err(|e| e.to_string())?;
            resp.into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        }
    })
    .await;
    assert_eq!((report.ok, report.failed), (50, 0), "{:?}", report.errors);
    let sent = a.requests() + b.requests();
    // 50 requests, at most 10 % more: every request asked for a hedge, few were granted.
    let stats = balancer.hedge_stats();
    assert_eq!(stats.sent + stats.refused, 50, "{stats:?}");
    assert!(stats.sent <= 5, "{stats:?}");
    assert_eq!(
        sent,
        50 + stats.sent,
        "{sent} requests reached the backends"
    );
}

// ===== the engine's hedging API, without HTTP =====

fn engine(tweak: impl FnOnce(sidekick::Builder) -> sidekick::Builder) -> Balancer {
    tweak(
        Balancer::builder()
            .site("http://127.0.0.1:{9001...9003}")
            .health_check(false),
    )
    .build()
    .unwrap()
}

#[tokio::test]
async fn attempts_hedge_to_another_endpoint_under_the_budget() {
    let b = engine(|b| b.hedge_delay(Duration::from_millis(5)).hedge_max(2));
    let mut a = b.attempts(true, true);
    let first = a.pick().unwrap();
    assert_eq!(a.hedge_delay(first.site()), Some(Duration::from_millis(5)));
    let h1 = a.hedge(&[&first]).expect("a hedge");
    let h2 = a.hedge(&[&first, &h1]).expect("a second hedge");
    let ids = [first.id(), h1.id(), h2.id()];
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
    // hedge_max reached.
    assert_eq!(a.hedge_delay(first.site()), None);
    assert!(a.hedge(&[&first, &h1, &h2]).is_none());
    assert_eq!(a.hedges(), 2);
    // The second hedge answers first and wins; the others are dropped (cancelled).
    match a.decide(h2, Outcome::Status(200), true) {
        Decision::Done(l) => l.finish(Outcome::Status(200)),
        other => panic!("{other:?}"),
    }
    drop((first, h1));
    assert!(b.endpoints().iter().all(|e| e.inflight == 0));
    let s = b.hedge_stats();
    assert_eq!((s.sent, s.won, s.refused), (2, 1, 0));
}

#[tokio::test]
async fn attempts_refuse_hedges_for_unsafe_requests_and_a_spent_budget() {
    let b = engine(|b| b.hedge_delay(Duration::from_millis(5)));
    // Not idempotent, or a body that cannot be replayed: never.
    for (idempotent, replayable) in [(false, true), (true, false)] {
        let mut a = b.attempts(idempotent, replayable);
        let first = a.pick().unwrap();
        assert_eq!(a.hedge_delay(first.site()), None);
        assert!(a.hedge(&[&first]).is_none());
    }
    // The budget: nothing to withdraw.
    let b = engine(|b| b.hedge_delay(Duration::from_millis(5)).retry_budget(0.0, 0));
    let mut a = b.attempts(true, true);
    let first = a.pick().unwrap();
    assert!(a.hedge_delay(first.site()).is_some());
    assert!(a.hedge(&[&first]).is_none());
    assert_eq!(b.hedge_stats().refused, 1);
    drop(first);
    assert!(b.endpoints().iter().all(|e| e.inflight == 0));
    // Off unless asked for.
    let b = engine(|b| b);
    let mut a = b.attempts(true, true);
    let first = a.pick().unwrap();
    assert_eq!(a.hedge_delay(first.site()), None);
    assert!(a.hedge(&[&first]).is_none());
}

#[test]
fn bad_hedge_options_name_the_option() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _g = rt.enter();
    for (name, value) in [
        ("hedge_percentile", "101"),
        ("hedge_max", "0"),
        ("hedge_max", "9"),
        ("hedge_delay", "0ms"),
    ] {
        let e = Balancer::builder()
            .site("http://127.0.0.1:9001")
            .option(name, value)
            .unwrap()
            .build()
            .unwrap_err();
        assert!(
            e.is_config() && e.to_string().contains(name),
            "{name}={value}: {e}"
        );
    }
}
