//! `sidekick::reqwest::SidekickMiddleware` (under reqwest-retry) against a cluster of s3s-fs
//! nodes sharing one data directory, or with `SIDEKICK_S3_TARGET=minio` a distributed MinIO
//! cluster (see `support/s3.rs`; the tests fail if the server binary is not installed).
//!
//! Requests are S3 presigned URLs (SigV4 in the query string, made with aws-sigv4) for a virtual
//! endpoint that nothing listens on. A presigned URL signs the `Host`, so every request must keep
//! it while it goes to a node.
#![cfg(feature = "reqwest")]

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::time::SystemTime;

use aws_sdk_s3::config::Credentials;
use aws_sigv4::http_request::{
    sign, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use reqwest_middleware::ClientWithMiddleware;
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::RetryTransientMiddleware;
use sidekick::reqwest::SidekickMiddleware;
use sidekick::{Balancer, EndpointState, HostPolicy, Policy};
use support::s3::{S3Cluster, S3Target, ACCESS_KEY, SECRET_KEY};

/// What the URLs are signed for; nothing listens there (the name does not even resolve).
const VIRTUAL_ENDPOINT: &str = "http://s3.sidekick.test:9000";
const BUCKET: &str = "sidekick";

fn balancer(target: S3Target, site: &str) -> Balancer {
    builder(target, site).build().expect("balancer")
}

fn builder(target: S3Target, site: &str) -> sidekick::Builder {
    Balancer::builder()
        .site(site)
        // What the servers answer to probes: s3s-fs has no health endpoint (an unsigned `GET /`
        // answers 403 while it serves), MinIO has `/minio/health/ready` (200).
        .health_path(target.health_path())
        .healthy_statuses(target.healthy_statuses().iter().copied())
        .health_interval(Duration::from_millis(200))
        .health_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(1))
}

async fn ready_balancer(cluster: &S3Cluster) -> Balancer {
    let b = balancer(cluster.target(), &cluster.site());
    b.ready(Duration::from_secs(10)).await.expect("nodes up");
    b
}

/// reqwest-retry outside (each retry goes through the balancer again), sidekick inside.
fn http(middleware: SidekickMiddleware) -> ClientWithMiddleware {
    let retry = ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(10), Duration::from_millis(200))
        .build_with_max_retries(4);
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(RetryTransientMiddleware::new_with_policy(retry))
        .with(middleware)
        .build()
}

/// Presigns S3 requests for [`VIRTUAL_ENDPOINT`] (only `host` is signed, the payload is not).
#[derive(Clone)]
struct Presigner {
    secret: &'static str,
}

impl Presigner {
    fn new(secret: &'static str) -> Presigner {
        Presigner { secret }
    }

    /// A presigned URL for `method` on `path_and_query` (e.g. `/bucket/key?uploads`).
    fn url(&self, method: &str, path_and_query: &str) -> String {
        let url = format!("{VIRTUAL_ENDPOINT}{path_and_query}");
        let identity = Credentials::new(ACCESS_KEY, self.secret, None, None, "test").into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(600));
        // S3 signs the path as sent, encoded once.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .expect("signing params")
            .into();
        let signable = SignableRequest::new(
            method,
            url.clone(),
            std::iter::empty(),
            SignableBody::UnsignedPayload,
        )
        .expect("signable request");
        let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
        let mut req = http::Request::builder()
            .method(method)
            .uri(&url)
            .body(())
            .expect("request");
        instructions.apply_to_request_http1x(&mut req);
        req.uri().to_string()
    }
}

/// Send `method url` with `body`: status, headers and the whole answer.
async fn send(
    http: &ClientWithMiddleware,
    method: &str,
    url: &str,
    body: Vec<u8>,
) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), String> {
    let method: reqwest::Method = method.parse().map_err(|e| format!("{e}"))?;
    let resp = http
        .request(method, url)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.map_err(|e| format!("{e:?}"))?;
    Ok((status, headers, bytes.to_vec()))
}

/// Like [`send`], but anything other than a 2xx is an error.
async fn send_ok(
    http: &ClientWithMiddleware,
    method: &str,
    url: &str,
    body: Vec<u8>,
) -> Result<(reqwest::header::HeaderMap, Vec<u8>), String> {
    let (status, headers, bytes) = send(http, method, url, body).await?;
    if (200..300).contains(&status) {
        Ok((headers, bytes))
    } else {
        Err(format!(
            "{method} {url} -> {status}: {}",
            String::from_utf8_lossy(&bytes)
        ))
    }
}

/// Every `<tag>value</tag>` of an XML document, in order (enough for S3's answers).
fn xml_values(xml: &[u8], tag: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(xml);
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        out.push(rest[..end].to_string());
        rest = &rest[end + close.len()..];
    }
    out
}

fn object_body(key: &str) -> Vec<u8> {
    let mut body = format!("{key}:").into_bytes();
    body.resize(1024, b'.');
    body
}

fn requests_per_node(b: &Balancer) -> Vec<(String, u64)> {
    b.endpoints()
        .into_iter()
        .map(|e| (e.url, e.requests))
        .collect()
}

async fn create_bucket(http: &ClientWithMiddleware, s3: &Presigner) {
    let url = s3.url("PUT", &format!("/{BUCKET}"));
    send_ok(http, "PUT", &url, Vec::new())
        .await
        .expect("create bucket");
}

async fn put(http: &ClientWithMiddleware, s3: &Presigner, key: &str) -> Result<(), String> {
    let url = s3.url("PUT", &format!("/{BUCKET}/{key}"));
    send_ok(http, "PUT", &url, object_body(key)).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_head_list_delete_and_multipart_across_three_nodes() {
    support::trace_init();
    let cluster = S3Cluster::start(3).await;
    let b = ready_balancer(&cluster).await;
    let http = http(SidekickMiddleware::new(b.clone()));
    let s3 = Presigner::new(SECRET_KEY);
    create_bucket(&http, &s3).await;

    let keys: Vec<String> = (0..12).map(|i| format!("dir/key-{i:02}")).collect();
    for key in &keys {
        put(&http, &s3, key).await.expect("put");
    }
    for key in &keys {
        let url = s3.url("GET", &format!("/{BUCKET}/{key}"));
        let (_, body) = send_ok(&http, "GET", &url, Vec::new()).await.expect("get");
        assert_eq!(body, object_body(key), "content of {key}");
        let url = s3.url("HEAD", &format!("/{BUCKET}/{key}"));
        let (headers, _) = send_ok(&http, "HEAD", &url, Vec::new())
            .await
            .expect("head");
        assert_eq!(
            headers.get("content-length").and_then(|v| v.to_str().ok()),
            Some("1024")
        );
    }
    let url = s3.url("GET", &format!("/{BUCKET}?list-type=2&prefix=dir%2F"));
    let (_, xml) = send_ok(&http, "GET", &url, Vec::new()).await.expect("list");
    let listed: HashSet<String> = xml_values(&xml, "Key").into_iter().collect();
    let expected: HashSet<String> = keys.iter().cloned().collect();
    assert_eq!(listed, expected);

    let url = s3.url("DELETE", &format!("/{BUCKET}/{}", keys[0]));
    send_ok(&http, "DELETE", &url, Vec::new())
        .await
        .expect("delete");
    let url = s3.url("HEAD", &format!("/{BUCKET}/{}", keys[0]));
    let (status, _, _) = send(&http, "HEAD", &url, Vec::new())
        .await
        .expect("head deleted");
    assert_eq!(status, 404);

    // Multipart: 5 MiB + 5 MiB + 1 KiB, each request on whichever node the balancer picks.
    let key = "big/multipart.bin";
    let parts: Vec<Vec<u8>> = vec![vec![b'a'; 5 << 20], vec![b'b'; 5 << 20], vec![b'c'; 1024]];
    let url = s3.url("POST", &format!("/{BUCKET}/{key}?uploads"));
    let (_, xml) = send_ok(&http, "POST", &url, Vec::new())
        .await
        .expect("create upload");
    let upload_id = xml_values(&xml, "UploadId")
        .pop()
        .expect("an UploadId in the answer");
    let mut completion = String::from("<CompleteMultipartUpload>");
    for (i, part) in parts.iter().enumerate() {
        let n = i + 1;
        let url = s3.url(
            "PUT",
            &format!("/{BUCKET}/{key}?partNumber={n}&uploadId={upload_id}"),
        );
        let (headers, _) = send_ok(&http, "PUT", &url, part.clone())
            .await
            .unwrap_or_else(|e| panic!("part {n}: {e}"));
        let etag = headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .expect("an ETag for the part");
        completion.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
        ));
    }
    completion.push_str("</CompleteMultipartUpload>");
    let url = s3.url("POST", &format!("/{BUCKET}/{key}?uploadId={upload_id}"));
    send_ok(&http, "POST", &url, completion.into_bytes())
        .await
        .expect("complete upload");
    let url = s3.url("GET", &format!("/{BUCKET}/{key}"));
    let (_, body) = send_ok(&http, "GET", &url, Vec::new())
        .await
        .expect("get multipart");
    assert_eq!(body.len(), parts.iter().map(Vec::len).sum::<usize>());
    assert_eq!(body, parts.concat());

    for (url, n) in requests_per_node(&b) {
        assert!(n > 0, "{url} served nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_over_every_node() {
    support::trace_init();
    let cluster = S3Cluster::start(3).await;
    // The default 10 s EWMA decay lets one slow sample on a busy test machine keep a node
    // nearly idle for the whole (short) run; a short decay shows the steady-state spread.
    let b = builder(cluster.target(), &cluster.site())
        .ewma_decay(Duration::from_millis(100))
        .build()
        .expect("balancer");
    b.ready(Duration::from_secs(10)).await.expect("nodes up");
    let http = Arc::new(http(SidekickMiddleware::new(b.clone())));
    let s3 = Presigner::new(SECRET_KEY);
    create_bucket(&http, &s3).await;
    put(&http, &s3, "k").await.expect("put");
    let get = Arc::new(s3.url("GET", &format!("/{BUCKET}/k")));
    let report = support::load(4, 75, Duration::from_secs(60), move |_, _| {
        let http = http.clone();
        let get = get.clone();
        async move { send_ok(&http, "GET", &get, Vec::new()).await.map(drop) }
    })
    .await;
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert_eq!(report.ok, 300);
    let per_node = requests_per_node(&b);
    for (url, n) in &per_node {
        // An even share is about 100.
        assert!(*n >= 30, "{url} got {n}: {per_node:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_killed_mid_workload_costs_no_operation() {
    kill_a_node_mid_workload(0).await;
}

/// The same with short answers read whole before they are returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_killed_mid_workload_costs_no_operation_with_response_buffer() {
    kill_a_node_mid_workload(64 * 1024).await;
}

/// 1,000 operations (PUT, GET, HEAD) from 8 tasks; one of the 3 nodes is killed (SIGKILL) after
/// 300, while it holds requests when that can be seen; not one operation may fail.
async fn kill_a_node_mid_workload(response_buffer: usize) {
    support::trace_init();
    const WORKERS: usize = 8;
    const PER_WORKER: usize = 125; // 1,000 operations
    const KEYS: usize = 32;
    const KILL_AFTER: usize = 300;

    let mut cluster = S3Cluster::start(3).await;
    let b = ready_balancer(&cluster).await;
    let http = Arc::new(http(
        SidekickMiddleware::new(b.clone()).response_buffer(response_buffer),
    ));
    let s3 = Presigner::new(SECRET_KEY);
    create_bucket(&http, &s3).await;
    let mut gets = Vec::new();
    let mut heads = Vec::new();
    for k in 0..KEYS {
        let key = format!("obj-{k}");
        put(&http, &s3, &key).await.expect("seed");
        gets.push(s3.url("GET", &format!("/{BUCKET}/{key}")));
        heads.push(s3.url("HEAD", &format!("/{BUCKET}/{key}")));
    }
    let (gets, heads) = (Arc::new(gets), Arc::new(heads));

    let done = Arc::new(AtomicUsize::new(0));
    let workload = tokio::spawn(support::load(
        WORKERS,
        PER_WORKER,
        // MinIO: a PUT retried on the key the killed node was writing waits for that node's
        // lock to expire (up to 2 minutes, see support/s3.rs), and then succeeds.
        Duration::from_secs(120) + cluster.max_stall_after_kill(),
        {
            let (http, s3, done) = (http.clone(), s3.clone(), done.clone());
            move |worker, i| {
                let (http, s3, done) = (http.clone(), s3.clone(), done.clone());
                let (gets, heads) = (gets.clone(), heads.clone());
                async move {
                    // Writes go to fresh keys, reads to the seeded ones (see support/s3.rs).
                    let k = (worker * 7 + i) % KEYS;
                    let r = match i % 3 {
                        0 => put(&http, &s3, &format!("put-{worker}-{i}")).await,
                        1 => match send_ok(&http, "GET", &gets[k], Vec::new()).await {
                            Ok((_, body)) if body == object_body(&format!("obj-{k}")) => Ok(()),
                            Ok(_) => Err(format!("get obj-{k}: wrong content")),
                            Err(e) => Err(e),
                        },
                        _ => send_ok(&http, "HEAD", &heads[k], Vec::new())
                            .await
                            .map(drop),
                    };
                    done.fetch_add(1, Ordering::SeqCst);
                    r
                }
            }
        },
    ));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the workload stalled before the kill"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Kill it while it holds requests, when the workload lets us see one soon enough.
    let victim = cluster.nodes[1].url();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while tokio::time::Instant::now() < deadline
        && !b
            .endpoints()
            .iter()
            .any(|e| e.url == victim && e.inflight > 0)
    {
        tokio::task::yield_now().await;
    }
    let at = done.load(Ordering::SeqCst);
    cluster.kill(1);
    let report = workload.await.expect("workload task");

    assert_eq!(
        report.failed, 0,
        "killed {victim} after {at} operations: {:?}",
        report.errors
    );
    assert_eq!(report.ok, (WORKERS * PER_WORKER) as u64);
    let url = s3.url("GET", &format!("/{BUCKET}?list-type=2&prefix=put-"));
    let (_, xml) = send_ok(&http, "GET", &url, Vec::new()).await.expect("list");
    let puts = (0..WORKERS * PER_WORKER)
        .filter(|n| (n % PER_WORKER).is_multiple_of(3))
        .count();
    assert_eq!(xml_values(&xml, "Key").len(), puts, "every PUT landed");
    assert!(
        at < WORKERS * PER_WORKER,
        "the kill came after the workload"
    );
    // The balancer noticed (a failed request, or the next probe).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let dead = b
            .endpoints()
            .into_iter()
            .find(|e| e.url == victim)
            .expect("victim endpoint");
        if dead.state != EndpointState::Up {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still in rotation: {dead:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_or_rewritten_host_fail_with_signature_does_not_match() {
    support::trace_init();
    let cluster = S3Cluster::start(3).await;
    let b = ready_balancer(&cluster).await;
    let keep = http(SidekickMiddleware::new(b.clone()));
    let good = Presigner::new(SECRET_KEY);
    create_bucket(&keep, &good).await;
    put(&keep, &good, "k").await.expect("put");

    let bad = Presigner::new("not-the-secret").url("GET", &format!("/{BUCKET}/k"));
    for i in 0..6 {
        let (status, _, body) = send(&keep, "GET", &bad, Vec::new()).await.expect("answer");
        assert_eq!(status, 403, "attempt {i}");
        assert_eq!(xml_values(&body, "Code"), ["SignatureDoesNotMatch"]);
    }

    // The right secret, but the node's authority as Host: the signature no longer matches.
    let url = good.url("GET", &format!("/{BUCKET}/k"));
    let rewrite = http(SidekickMiddleware::new(b.clone()).host_policy(HostPolicy::Rewrite));
    let (status, _, body) = send(&rewrite, "GET", &url, Vec::new())
        .await
        .expect("answer");
    assert_eq!(status, 403);
    assert_eq!(xml_values(&body, "Code"), ["SignatureDoesNotMatch"]);
    // Kept, it passes on every node.
    for _ in 0..6 {
        let (_, body) = send_ok(&keep, "GET", &url, Vec::new()).await.expect("get");
        assert_eq!(body, object_body("k"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_move_to_another_node_inside_the_middleware() {
    support::trace_init();
    let cluster = S3Cluster::start(3).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    // In rotation from the start (no probes), and no retry middleware: only the middleware's
    // own failover can save the requests the dead node gets.
    let b = Balancer::builder()
        .site(format!("{dead_url},{}", cluster.site()))
        .health_check(false)
        // Round robin: the dead node surely gets its turn.
        .policy(Policy::RoundRobin)
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("balancer");
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(SidekickMiddleware::new(b.clone()))
        .build();
    let s3 = Presigner::new(SECRET_KEY);
    create_bucket(&http, &s3).await;
    let url = s3.url("HEAD", &format!("/{BUCKET}"));
    for i in 0..30 {
        send_ok(&http, "HEAD", &url, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
    }
    let dead_ep = b
        .endpoints()
        .into_iter()
        .find(|e| e.url == dead_url)
        .expect("dead endpoint");
    assert!(dead_ep.failures >= 1, "{dead_ep:?}");
    assert_ne!(dead_ep.state, EndpointState::Up, "{dead_ep:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_to_send_to_is_a_middleware_error() {
    support::trace_init();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let b = balancer(S3Target::from_env(), &dead_url); // probed, never up
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(SidekickMiddleware::new(b))
        .build();
    let err = http
        .get(format!("{VIRTUAL_ENDPOINT}/{BUCKET}"))
        .send()
        .await
        .expect_err("no node");
    let reqwest_middleware::Error::Middleware(e) = &err else {
        panic!("expected a middleware error, got {err:?}");
    };
    let e = e
        .downcast_ref::<sidekick::Error>()
        .expect("a sidekick::Error");
    assert!(e.is_no_endpoint(), "{e:?}");
}

// ===== a GET body that breaks in the middle resumes from another node =====

/// Size of the objects of the resume tests: large enough that most of the body is still on
/// the node when the first chunks arrive.
const BIG: usize = 24 << 20;

fn big_body(seed: u8) -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// Two nodes, each its own site: node 0 serves everything until it dies, so the test knows
/// which node streams the body it kills.
async fn two_tier(cluster: &S3Cluster) -> Balancer {
    let urls = cluster.urls();
    let b = Balancer::builder()
        .site(&urls[0])
        .site(&urls[1])
        .health_path(cluster.health_path())
        .healthy_statuses(cluster.healthy_statuses().iter().copied())
        .health_interval(Duration::from_millis(200))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("balancer");
    b.ready(Duration::from_secs(10)).await.expect("nodes up");
    b
}

/// Read at least the first MiB of `resp`.
async fn first_mib(resp: &mut reqwest::Response) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < (1 << 20) {
        let chunk = resp
            .chunk()
            .await
            .expect("first chunks")
            .expect("the body ended early");
        got.extend_from_slice(&chunk);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_broken_by_a_dying_node_resumes_from_another() {
    support::trace_init();
    let mut cluster = S3Cluster::start(2).await;
    let b = two_tier(&cluster).await;
    let http = http(SidekickMiddleware::new(b.clone()));
    let s3 = Presigner::new(SECRET_KEY);
    create_bucket(&http, &s3).await;
    let want = big_body(0);
    let path = format!("/{BUCKET}/big");
    send_ok(&http, "PUT", &s3.url("PUT", &path), want.clone())
        .await
        .expect("put");

    let mut resp = http.get(s3.url("GET", &path)).send().await.expect("get");
    assert_eq!(resp.status(), 200);
    let mut got = first_mib(&mut resp).await;
    let node1_before = requests_per_node(&b)[1].1;
    cluster.kill(0);
    // Bounded: the body has BIG bytes, every chunk at least one.
    for _ in 0..BIG {
        match resp.chunk().await.expect("the resumed body") {
            Some(chunk) => got.extend_from_slice(&chunk),
            None => break,
        }
    }
    assert_eq!(got.len(), BIG);
    assert!(got == want, "the resumed body differs from the object");
    assert!(
        requests_per_node(&b)[1].1 > node1_before,
        "the rest should have come from node 1: {:?}",
        requests_per_node(&b)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_is_never_resumed_from_another_version() {
    support::trace_init();
    let mut cluster = S3Cluster::start(2).await;
    let b = two_tier(&cluster).await;
    let http = http(SidekickMiddleware::new(b));
    let s3 = Presigner::new(SECRET_KEY);
    create_bucket(&http, &s3).await;
    let path = format!("/{BUCKET}/changing");
    send_ok(&http, "PUT", &s3.url("PUT", &path), big_body(0))
        .await
        .expect("put");

    let mut resp = http.get(s3.url("GET", &path)).send().await.expect("get");
    first_mib(&mut resp).await;
    // The object changes while its old version streams, then the streaming node dies: the
    // missing bytes exist only in the new version, which must not be spliced in.
    send_ok(&http, "PUT", &s3.url("PUT", &path), big_body(0x5a))
        .await
        .expect("overwrite");
    cluster.kill(0);
    let mut outcome = Ok(());
    for _ in 0..BIG {
        match resp.chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    let err = outcome.expect_err("a body of two versions was delivered");
    let chain = format!("{err:?}");
    assert!(chain.contains("resuming it failed"), "{chain}");
}
