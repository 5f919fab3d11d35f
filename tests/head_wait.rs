//! The library's bounded wait for a response head (`response_timeout`, default 60 s): a backend
//! that accepts and never answers is a timeout against it, an idempotent request goes to another
//! endpoint, and a request body that keeps moving is never cut.
#![cfg(feature = "client")]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use sidekick::options::Value;
use sidekick::{Balancer, Client, Event};
use support::recorded::{self, Events};
use support::{Backend, Behavior};

/// A client over `sites` with a short head wait and no overall attempt deadline.
fn client(sites: &[String], wait: Duration) -> (Client, Events) {
    recorded::client(sites, |b| b.response_timeout(wait))
}

fn timeout_retries(ev: &Events) -> usize {
    recorded::count(
        ev,
        |e| matches!(e, Event::Retry { reason, .. } if *reason == "timeout"),
    )
}

async fn send(c: &Client, method: &str) -> Result<u16, sidekick::Error> {
    let req = http::Request::builder()
        .method(method)
        .uri("/obj")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let resp = c.request(req).await?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

#[test]
fn the_wait_is_an_option_with_a_60_s_default() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let b = Balancer::builder()
            .site("http://127.0.0.1:9")
            .health_check(false)
            .build()
            .unwrap();
        assert_eq!(
            b.option("response_timeout").unwrap(),
            Value::Duration(Duration::from_secs(60))
        );
        assert_eq!(b.option("attempt_timeout").unwrap(), Value::None);
        let off = Balancer::builder()
            .site("http://127.0.0.1:9")
            .health_check(false)
            .option("response_timeout", "none")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(off.option("response_timeout").unwrap(), Value::None);
        let err = Balancer::builder()
            .site("http://127.0.0.1:9")
            .response_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("response_timeout"), "{err}");
    });
}

#[tokio::test]
async fn a_backend_that_never_answers_is_a_timeout_and_a_get_goes_elsewhere() {
    // The hung backend answers its probes: only the wait can tell.
    let hang = Backend::start("hang", Behavior::Hang).await;
    let other = Backend::start("other", Behavior::Ok).await;
    let (c, ev) = client(&[hang.url(), other.url()], Duration::from_millis(300));
    // Round robin starts with the hung endpoint: the GET waits there, then goes to the other.
    assert_eq!(send(&c, "GET").await.unwrap(), 200);
    assert_eq!(hang.hits(), 1);
    assert_eq!(other.hits(), 1);
    assert_eq!(timeout_retries(&ev), 1);
    // A POST that was sent is not sent again: the caller gets the timeout.
    let (mut timed_out, mut answered) = (0, 0);
    for _ in 0..2 {
        match send(&c, "POST").await {
            Err(e) => {
                assert!(e.is_timeout(), "{e:?}");
                timed_out += 1;
            }
            Ok(status) => {
                assert_eq!(status, 200);
                answered += 1;
            }
        }
    }
    assert!(timed_out > 0, "no POST went to the hung backend");
    assert_eq!(hang.hits(), 1 + timed_out);
    assert_eq!(other.hits(), 1 + answered);
    assert_eq!(timeout_retries(&ev), 1);
}

#[tokio::test]
async fn a_body_that_keeps_moving_is_not_cut() {
    let slow = Backend::start("slow", Behavior::Ok).await;
    let (c, ev) = client(&[slow.url()], Duration::from_millis(400));
    // Eight chunks 150 ms apart: the upload lasts about three times the wait, but the wait
    // counts from the last chunk.
    let chunks = futures_util::stream::unfold(0u32, |i| async move {
        if i == 8 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let frame = http_body::Frame::data(Bytes::from(vec![b'a' + i as u8; 1000]));
        Some((Ok::<_, std::io::Error>(frame), i + 1))
    });
    let req = http::Request::put("/obj")
        .body(StreamBody::new(chunks))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(slow.requests()[0].body.len(), 8000);
    assert_eq!(timeout_retries(&ev), 0);
}
