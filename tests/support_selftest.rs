//! Self-test of the fixtures in `tests/support` with a plain hyper-util client (no sidekick).

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use support::{load, trace_init, Backend, Behavior, HEALTH_PATH, MAX_RECORDED};

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(
    c: &TestClient,
    method: Method,
    url: &str,
    body: Bytes,
) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = c.request(req).await.map_err(|e| format!("request: {e}"))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((parts.status, parts.headers, body))
}

async fn get(c: &TestClient, url: &str) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
    send(c, Method::GET, url, Bytes::new()).await
}

/// Bounded wait for a condition (at most `limit`, polling every 5 ms).
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

#[tokio::test]
async fn ok_body_starts_with_name_and_has_body_len() {
    trace_init();
    let b = Backend::start("alpha", Behavior::Ok).await;
    assert_eq!(b.name(), "alpha");
    assert_eq!(b.url(), format!("http://127.0.0.1:{}", b.addr().port()));
    assert!(b.addr().ip().is_loopback());
    assert!(b.is_running());
    let c = client();

    let (status, headers, body) = get(&c, &format!("{}/obj", b.url())).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-backend"], "alpha");
    assert_eq!(body.len(), 1024);
    assert!(body.starts_with(b"alpha"));
    assert!(body[5..].iter().all(|&x| x == b'x'));

    b.set_body_len(10);
    let (_, _, body) = get(&c, &b.url()).await.unwrap();
    assert_eq!(&body[..], b"alphaxxxxx");

    b.set_body_len(100_000);
    let (_, _, body) = get(&c, &b.url()).await.unwrap();
    assert_eq!(body.len(), 100_000);

    // Never shorter than the name.
    b.set_body_len(2);
    let (_, _, body) = get(&c, &b.url()).await.unwrap();
    assert_eq!(&body[..], b"alpha");

    // Keep-alive: all of the above went over one connection.
    assert_eq!(b.connections(), 1);
    assert_eq!(b.hits(), 4);
}

#[tokio::test]
async fn status_behavior_and_switching() {
    let b = Backend::start("beta", Behavior::Status(503)).await;
    let c = client();
    let (status, headers, body) = get(&c, &b.url()).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["x-backend"], "beta");
    assert!(body.starts_with(b"beta"));
    assert!(body.len() < 64);
    assert!(matches!(b.behavior(), Behavior::Status(503)));

    b.set_behavior(Behavior::Status(404));
    assert_eq!(get(&c, &b.url()).await.unwrap().0, StatusCode::NOT_FOUND);
    b.set_behavior(Behavior::Ok);
    assert_eq!(get(&c, &b.url()).await.unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn delay_behavior() {
    let b = Backend::start("gamma", Behavior::Delay(Duration::from_millis(200))).await;
    let c = client();
    let start = Instant::now();
    let (status, _, body) = get(&c, &b.url()).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with(b"gamma"));
    assert_eq!(body.len(), 1024);

    let url = b.url();
    let timed = tokio::time::timeout(Duration::from_millis(50), get(&c, &url)).await;
    assert!(
        timed.is_err(),
        "a 200 ms delay must not answer within 50 ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_times_out_and_kill_is_prompt_and_resets_client() {
    let b = Backend::start("delta", Behavior::Hang).await;
    let c = client();
    let url = format!("{}/hang", b.url());

    // A client timeout sees nothing within 300 ms.
    let timed = tokio::time::timeout(Duration::from_millis(300), get(&c, &url)).await;
    assert!(timed.is_err(), "Hang must not answer");
    assert_eq!(b.hits(), 1, "counted when the request arrives");

    // A request still waiting when the backend is killed fails (reset / closed).
    let c2 = c.clone();
    let url2 = url.clone();
    let mut pending = tokio::spawn(async move { get(&c2, &url2).await });
    assert!(wait_until(Duration::from_secs(2), || b.hits() == 2).await);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut pending)
            .await
            .is_err()
    );

    // Health still answers while hanging.
    let (hs, _, _) = get(&client(), &format!("{}{}", b.url(), HEALTH_PATH))
        .await
        .unwrap();
    assert_eq!(hs, StatusCode::OK);

    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(1), b.kill())
        .await
        .expect("kill must not block on a hanging request");
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(!b.is_running());

    let res = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .expect("the pending request must fail promptly after kill")
        .unwrap();
    assert!(res.is_err(), "expected an error after kill, got {res:?}");
}

#[tokio::test]
async fn kill_refuses_and_restart_serves_same_port() {
    let b = Backend::start("eps", Behavior::Ok).await;
    let addr = b.addr();
    let c = client();
    get(&c, &b.url()).await.unwrap(); // leaves a pooled keep-alive connection

    b.kill().await;
    assert!(!b.is_running());
    let err = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // Through the pooled client too.
    assert!(get(&c, &b.url()).await.is_err());
    b.kill().await; // idempotent

    b.set_behavior(Behavior::Status(500));
    b.restart().await;
    assert!(b.is_running());
    assert_eq!(b.addr(), addr);
    let (status, headers, _) = get(&client(), &b.url()).await.unwrap();
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "current behaviour"
    );
    assert_eq!(headers["x-backend"], "eps");
    b.restart().await; // no-op while running

    // Several crash/restart cycles with open keep-alive connections.
    for _ in 0..5 {
        let c = client();
        get(&c, &b.url()).await.unwrap();
        b.kill().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
        b.restart().await;
        assert!(get(&c, &b.url()).await.is_ok());
    }
}

#[tokio::test]
async fn drop_stops_everything() {
    let b = Backend::start("zeta", Behavior::Hang).await;
    let addr = b.addr();
    let url = b.url();
    let pending = tokio::spawn(async move { get(&client(), &url).await });
    assert!(wait_until(Duration::from_secs(2), || b.hits() == 1).await);
    drop(b);
    let res = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .expect("drop must end hanging connections")
        .unwrap();
    assert!(res.is_err());
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "listener must be gone after drop");
}

#[tokio::test]
async fn hits_and_health_counting() {
    let b = Backend::start("eta", Behavior::Ok).await;
    let c = client();
    for _ in 0..3 {
        get(&c, &format!("{}/a", b.url())).await.unwrap();
    }
    let health = format!("{}{}", b.url(), HEALTH_PATH);
    for _ in 0..2 {
        let (s, h, _) = get(&c, &health).await.unwrap();
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["x-backend"], "eta");
    }
    assert_eq!(b.hits(), 3);
    assert_eq!(b.health_hits(), 2);

    // Health ignores behaviour.
    b.set_behavior(Behavior::Status(503));
    assert_eq!(get(&c, &health).await.unwrap().0, StatusCode::OK);
    b.set_health_status(503);
    b.set_behavior(Behavior::Ok);
    assert_eq!(
        get(&c, &health).await.unwrap().0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(&c, &b.url()).await.unwrap().0, StatusCode::OK);
    assert_eq!(b.hits(), 4);
    assert_eq!(b.health_hits(), 4);

    b.reset_hits();
    assert_eq!((b.hits(), b.health_hits()), (0, 0));
    get(&c, &health).await.unwrap();
    assert_eq!((b.hits(), b.health_hits()), (0, 1));

    // A killed backend answers nothing, health included.
    b.kill().await;
    assert!(get(&client(), &health).await.is_err());
}

#[tokio::test]
async fn requests_are_recorded_byte_exact() {
    let b = Backend::start("theta", Behavior::Ok).await;
    let c = client();
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!(
            "{}/bucket/key%20x?partNumber=1&uploadId=a",
            b.url()
        ))
        .header("x-amz-meta-test", "v1")
        .body(Full::new(Bytes::from(payload.clone())))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();
    get(&c, &format!("{}{}", b.url(), HEALTH_PATH))
        .await
        .unwrap();
    get(&c, &format!("{}/second", b.url())).await.unwrap();

    let recs = b.requests();
    assert_eq!(recs.len(), 2, "health probes are not recorded");
    let put = &recs[0];
    assert_eq!(put.method, Method::PUT);
    assert_eq!(put.uri, "/bucket/key%20x?partNumber=1&uploadId=a");
    assert_eq!(
        put.host.as_deref(),
        Some(format!("127.0.0.1:{}", b.addr().port()).as_str())
    );
    assert_eq!(&put.body[..], &payload[..]);
    assert_eq!(put.headers["x-amz-meta-test"], "v1");
    assert_eq!(recs[1].method, Method::GET);
    assert_eq!(recs[1].uri, "/second");
    assert!(recs[1].body.is_empty());

    // Bounded to the last 256, most recent last.
    for i in 0..300 {
        get(&c, &format!("{}/n/{i}", b.url())).await.unwrap();
    }
    let recs = b.requests();
    assert_eq!(recs.len(), MAX_RECORDED);
    assert_eq!(recs.last().unwrap().uri, "/n/299");
    assert_eq!(recs[0].uri, format!("/n/{}", 300 - MAX_RECORDED));
    b.clear_requests();
    assert!(b.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_counts_ok_and_failed() {
    trace_init();
    let up = Backend::start("up", Behavior::Ok).await;
    let down = Backend::start("down", Behavior::Ok).await;
    down.kill().await;
    let urls = std::sync::Arc::new([up.url(), down.url()]);
    let c = client();

    let start = Instant::now();
    let report = load(4, 15, Duration::from_secs(20), move |w, i| {
        let c = c.clone();
        let urls = urls.clone();
        async move {
            let (status, _, body) = get(&c, &format!("{}/w{w}/i{i}", urls[w % 2])).await?;
            if status != StatusCode::OK || !body.starts_with(b"up") {
                return Err(format!("unexpected {status}"));
            }
            Ok::<(), String>(())
        }
    })
    .await;
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(report.ok, 30, "{report:?}");
    assert_eq!(report.failed, 30, "{report:?}");
    assert_eq!(report.errors.len(), 20, "capped at 20");
    assert!(report.errors.iter().all(|e| e.starts_with("request:")));
    assert_eq!(up.hits(), 30);

    // Deadline cuts the run short; in-flight calls at the deadline count as failed.
    let start = Instant::now();
    let report = load(3, 1000, Duration::from_millis(300), |_, _| async {
        tokio::time::sleep(Duration::from_millis(40)).await;
        Ok::<(), std::io::Error>(())
    })
    .await;
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(report.ok >= 3 && report.ok < 3000, "{report:?}");
    assert!(report.failed <= 3, "{report:?}");

    // Zero workers: empty report.
    let report = load(0, 10, Duration::from_secs(1), |_, _| async {
        Ok::<(), String>(())
    })
    .await;
    assert_eq!((report.ok, report.failed), (0, 0));
}

#[tokio::test]
#[should_panic(expected = "boom in worker")]
async fn load_propagates_panics() {
    let _ = load(2, 3, Duration::from_secs(5), |w, i| async move {
        if w == 1 && i == 1 {
            panic!("boom in worker");
        }
        Ok::<(), String>(())
    })
    .await;
}

#[test]
fn trace_init_is_idempotent() {
    trace_init();
    trace_init();
    tracing::warn!("trace_init works");
}
