//! Retries on another endpoint: what is replayed, what is not, and the budget.
#![cfg(feature = "client")]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use sidekick::{Client, Event};
use support::recorded::{client, count, Events};
use support::{Backend, Behavior};

/// A loopback port with nothing listening: connecting is refused.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    format!("http://{a}")
}

fn pattern(n: usize) -> Bytes {
    (0..n)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<_>>()
        .into()
}

fn retries(ev: &Events, reason: &str) -> usize {
    count(
        ev,
        |e| matches!(e, Event::Retry { reason: r, .. } if *r == reason),
    )
}

async fn send(c: &Client, method: &str, body: Bytes) -> Result<u16, sidekick::Error> {
    let req = http::Request::builder()
        .method(method)
        .uri("/obj")
        .body(Full::new(body))
        .unwrap();
    let resp = c.request(req).await?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

#[tokio::test]
async fn bodies_are_replayed_byte_identical_on_connect_failure() {
    let live = Backend::start("live", Behavior::Ok).await;
    // (method, body size): a small buffered PUT, a 1 MiB streamed PUT (over the replay cap),
    // and a POST — nothing was sent, so even a POST goes again.
    for (method, size) in [("PUT", 1000), ("PUT", 1 << 20), ("POST", 5000)] {
        live.clear_requests();
        let (c, ev) = client(&[format!("{},{}", dead_url(), live.url())], |b| b);
        let body = pattern(size);
        let status = send(&c, method, body.clone()).await.unwrap();
        assert_eq!(status, 200, "{method} {size}");
        assert_eq!(
            retries(&ev, "connect"),
            1,
            "{method} {size}: expected one connect retry"
        );
        let got = live.requests();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].method.as_str(), method);
        assert_eq!(got[0].body.len(), size);
        assert!(got[0].body == body, "{method} {size}: body differs");
    }
}

#[tokio::test]
async fn streamed_body_of_unknown_length_is_replayed_when_nothing_was_sent() {
    let live = Backend::start("live", Behavior::Ok).await;
    let (c, ev) = client(&[format!("{},{}", dead_url(), live.url())], |b| b);
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = (0..64)
        .map(|i| Ok(http_body::Frame::data(pattern(4096 + i))))
        .collect();
    let expected: Vec<u8> = (0..64).flat_map(|i| pattern(4096 + i).to_vec()).collect();
    let req = http::Request::put("/obj")
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(retries(&ev, "connect"), 1);
    assert!(live.requests()[0].body == expected);
}

#[tokio::test]
async fn a_post_that_was_sent_is_not_retried() {
    let hang = Backend::start("hang", Behavior::Hang).await;
    let other = Backend::start("other", Behavior::Ok).await;
    let (c, ev) = client(&[hang.url(), other.url()], |b| {
        b.attempt_timeout(Duration::from_millis(300))
    });
    let err = send(&c, "POST", pattern(100)).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(other.hits(), 0, "a sent POST was retried");
    assert_eq!(hang.hits(), 1);
    // The same shape of request with an idempotent method is retried on the other site.
    assert_eq!(send(&c, "GET", Bytes::new()).await.unwrap(), 200);
    assert_eq!(other.hits(), 1);
    assert_eq!(retries(&ev, "timeout"), 1);
}

#[tokio::test]
async fn a_body_over_the_cap_is_not_retried_after_sending() {
    let hang = Backend::start("hang", Behavior::Hang).await;
    let other = Backend::start("other", Behavior::Ok).await;
    let (c, _) = client(&[hang.url(), other.url()], |b| {
        b.attempt_timeout(Duration::from_millis(300))
            .retry_buffer(64 * 1024)
    });
    let err = send(&c, "PUT", pattern(128 * 1024)).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(
        other.hits(),
        0,
        "a PUT over the replay cap was retried after sending"
    );
    // Under the cap it is replayed, byte for byte.
    let small = pattern(32 * 1024);
    assert_eq!(send(&c, "PUT", small.clone()).await.unwrap(), 200);
    assert_eq!(other.hits(), 1);
    assert!(other.requests()[0].body == small);
}

#[tokio::test]
async fn an_empty_budget_stops_retries_after_sending_but_not_connect_retries() {
    let hang = Backend::start("hang", Behavior::Hang).await;
    let other = Backend::start("other", Behavior::Ok).await;
    let (c, ev) = client(&[hang.url(), other.url()], |b| {
        b.attempt_timeout(Duration::from_millis(200))
            .retry_budget(0.0, 0)
    });
    let err = send(&c, "GET", Bytes::new()).await.unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(other.hits(), 0);
    assert!(ev
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::BudgetExhausted { .. })));

    // Connect failures load no backend and are not budgeted.
    let (c, ev) = client(&[dead_url(), other.url()], |b| b.retry_budget(0.0, 0));
    assert_eq!(send(&c, "GET", Bytes::new()).await.unwrap(), 200);
    assert_eq!(retries(&ev, "connect"), 1);
}

#[tokio::test]
async fn status_503_is_retried_on_another_endpoint_for_idempotent_methods() {
    let bad = Backend::start("bad", Behavior::Status(503)).await;
    let good = Backend::start("good", Behavior::Ok).await;
    let (c, ev) = client(&[format!("{},{}", bad.url(), good.url())], |b| b);
    assert_eq!(send(&c, "GET", Bytes::new()).await.unwrap(), 200);
    assert_eq!(retries(&ev, "status"), 1);
    // A POST gets the 503 as it is.
    let (c, _) = client(&[format!("{},{}", bad.url(), good.url())], |b| b);
    assert_eq!(send(&c, "POST", pattern(10)).await.unwrap(), 503);
}

#[tokio::test]
async fn an_idempotency_key_makes_a_post_retryable() {
    let bad = Backend::start("bad", Behavior::Status(503)).await;
    let good = Backend::start("good", Behavior::Ok).await;
    let (c, ev) = client(&[format!("{},{}", bad.url(), good.url())], |b| b);
    let body = pattern(1000);
    let req = http::Request::builder()
        .method("POST")
        .uri("/obj")
        .header("Idempotency-Key", "8e03978e-40d5-43e8-bc93-6894a57f9324")
        .body(Full::new(body.clone()))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(retries(&ev, "status"), 1);
    assert_eq!(bad.hits(), 1);
    assert!(
        good.requests()[0].body == body,
        "the POST body was not replayed as sent"
    );
}
