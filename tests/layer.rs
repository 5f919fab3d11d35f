//! The tower layer over hyper-util's client: URI rewriting, the Host header, base paths.
#![cfg(feature = "tower")]

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use sidekick::service::{RetryBody, SidekickLayer};
use sidekick::{Balancer, HostPolicy};
use support::{Backend, Behavior};
use tower::{Layer, Service, ServiceExt};

type Inner = Client<HttpConnector, RetryBody<Full<Bytes>>>;

fn inner() -> Inner {
    Client::builder(TokioExecutor::new()).build_http()
}

fn balancer(site: &str, host: HostPolicy) -> Balancer {
    Balancer::builder()
        .site(site)
        .health_check(false)
        .host_policy(host)
        .build()
        .unwrap()
}

async fn send(b: &Balancer, req: http::Request<Full<Bytes>>) -> u16 {
    let svc = SidekickLayer::new(b.clone()).layer(inner());
    let resp = svc.oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await.unwrap();
    status
}

fn get(uri: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(uri)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn keeps_the_callers_host_and_path() {
    let be = Backend::start("a", Behavior::Ok).await;
    let b = balancer(&be.url(), HostPolicy::Keep);
    // The authority of the caller's URI becomes the Host; only the socket goes to the backend.
    assert_eq!(
        send(&b, get("http://bucket.s3.example:9000/key%20a?x=1&y")).await,
        200
    );
    // An explicit Host header wins over the URI.
    let mut req = get("/other");
    req.headers_mut()
        .insert(http::header::HOST, "signed.example".parse().unwrap());
    assert_eq!(send(&b, req).await, 200);
    let got = be.requests();
    assert_eq!(got[0].host.as_deref(), Some("bucket.s3.example:9000"));
    assert_eq!(got[0].uri, "/key%20a?x=1&y");
    assert_eq!(got[1].host.as_deref(), Some("signed.example"));
    assert_eq!(got[1].uri, "/other");
}

#[tokio::test]
async fn rewrite_policy_sends_the_endpoints_authority() {
    let be = Backend::start("a", Behavior::Ok).await;
    let b = balancer(&be.url(), HostPolicy::Rewrite);
    assert_eq!(send(&b, get("http://virtual/key")).await, 200);
    assert_eq!(
        be.requests()[0].host.as_deref(),
        Some(be.addr().to_string().as_str())
    );
}

#[tokio::test]
async fn endpoint_base_path_prefixes_requests() {
    let be = Backend::start("a", Behavior::Ok).await;
    let b = balancer(&format!("{}/base/", be.url()), HostPolicy::Keep);
    assert_eq!(send(&b, get("/key?q=1")).await, 200);
    assert_eq!(be.requests()[0].uri, "/base/key?q=1");
}

#[tokio::test]
async fn spreads_requests_over_the_site() {
    let mut bes = Vec::new();
    for i in 0..3 {
        bes.push(Backend::start(&format!("b{i}"), Behavior::Ok).await);
    }
    let site = bes.iter().map(|b| b.url()).collect::<Vec<_>>().join(",");
    let b = balancer(&site, HostPolicy::Keep);
    let svc = SidekickLayer::new(b.clone()).layer(inner());
    // 10 requests in flight at a time, as a loaded client sends them.
    for _ in 0..30 {
        let batch = (0..10).map(|_| {
            let svc = svc.clone();
            async move {
                let resp = svc.oneshot(get("/x")).await.unwrap();
                resp.into_body().collect().await.unwrap();
            }
        });
        futures_util::future::join_all(batch).await;
    }
    for be in &bes {
        // Load-aware, so not an even split; but no endpoint is starved.
        assert!(be.hits() > 10, "{} got {} of 300", be.name(), be.hits());
    }
    let infos = b.endpoints();
    assert_eq!(infos.iter().map(|e| e.requests).sum::<u64>(), 300);
    assert!(infos.iter().all(|e| e.latency.is_some() && e.inflight == 0));
}

#[tokio::test]
async fn an_error_names_the_endpoint_it_came_from() {
    // A port nothing listens on: bound, then closed, so connecting is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let url = format!("http://{addr}");
    let b = balancer(&url, HostPolicy::Keep);
    let svc = SidekickLayer::new(b.clone()).layer(inner());
    let err = svc.oneshot(get("/key")).await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    assert_eq!(err.endpoint(), Some(url.as_str()));
    assert_eq!(b.endpoints()[0].inflight, 0);
}

#[tokio::test]
async fn a_boxed_body_with_boxed_errors_is_sent_from_a_spawned_task() {
    // Bodies such as `UnsyncBoxBody<Bytes, BoxError>` name trait objects with lifetimes; the
    // layer's future must still be `Send` inside another future for `tokio::spawn`. (Through
    // `ServiceExt::ready` and `call`: tower's `oneshot` future, which names the inner future
    // by its service and request types, is not, for any service.)
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    type Boxed = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
    let be = Backend::start("a", Behavior::Ok).await;
    let b = balancer(&be.url(), HostPolicy::Keep);
    let inner: Client<HttpConnector, RetryBody<Boxed>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut svc = SidekickLayer::new(b.clone()).layer(inner);
    let task = tokio::spawn(async move {
        let body: Boxed = Full::new(Bytes::from_static(b"abc"))
            .map_err(|e| -> BoxError { match e {} })
            .boxed_unsync();
        let req = http::Request::put("/key").body(body).unwrap();
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await.unwrap();
        status
    });
    assert_eq!(task.await.unwrap(), 200);
    assert_eq!(be.requests()[0].body, "abc");
    assert_eq!(b.endpoints()[0].inflight, 0);
}

/// An inner service that tags its requests (`x-tag`) and refuses its next call when told to.
#[derive(Clone)]
struct Tagged {
    tag: &'static str,
    refuse_next: std::sync::Arc<std::sync::atomic::AtomicBool>,
    client: Inner,
}

impl tower::Service<http::Request<RetryBody<Full<Bytes>>>> for Tagged {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<RetryBody<Full<Bytes>>>) -> Self::Future {
        use std::sync::atomic::Ordering;
        if self.refuse_next.swap(false, Ordering::SeqCst) {
            let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
            return Box::pin(async move { Err(refused.into()) });
        }
        req.headers_mut()
            .insert("x-tag", http::HeaderValue::from_static(self.tag));
        let fut = self.client.request(req);
        Box::pin(async move { Ok(fut.await?) })
    }
}

#[tokio::test]
async fn retries_use_the_inner_service_as_changed_through_get_mut() {
    let (a, c) = (
        Backend::start("a", Behavior::Ok).await,
        Backend::start("c", Behavior::Ok).await,
    );
    let b = Balancer::builder()
        .site(format!("{},{}", a.url(), c.url()))
        .health_check(false)
        .build()
        .unwrap();
    let refuse_next = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut svc = SidekickLayer::new(b.clone()).layer(Tagged {
        tag: "old",
        refuse_next: refuse_next.clone(),
        client: inner(),
    });
    // A first request makes the copy that retries are sent on.
    let resp = svc.ready().await.unwrap().call(get("/one")).await.unwrap();
    let _ = resp.into_body().collect().await.unwrap();
    svc.get_mut().tag = "new";
    // The first attempt is refused (a connect failure): the retry goes to the other backend,
    // on a copy of the changed service.
    refuse_next.store(true, std::sync::atomic::Ordering::SeqCst);
    let resp = svc.ready().await.unwrap().call(get("/two")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await.unwrap();
    let tags: Vec<_> = a
        .requests()
        .into_iter()
        .chain(c.requests())
        .map(|r| (r.uri, r.headers.get("x-tag").cloned()))
        .collect();
    assert_eq!(tags.len(), 2, "{tags:?}");
    let two = tags.iter().find(|(uri, _)| uri == "/two").unwrap();
    assert_eq!(
        two.1.as_ref().map(|v| v.as_bytes()),
        Some(&b"new"[..]),
        "{tags:?}"
    );
    let infos = b.endpoints();
    assert_eq!(
        infos.iter().map(|e| e.failures).sum::<u64>(),
        1,
        "{infos:?}"
    );
    assert!(infos.iter().all(|e| e.inflight == 0));
}
