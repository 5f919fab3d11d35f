//! `sidekick::aws::SidekickHttpClient` under aws-sdk-s3, against a cluster of s3s-fs nodes
//! sharing one data directory, or with `SIDEKICK_S3_TARGET=minio` a distributed MinIO cluster
//! (see `support/s3.rs`; the tests fail if the server binary is not installed).
//!
//! The SDK is pointed at a virtual endpoint that nothing listens on: every request it signs for
//! that authority reaches a real node only through the balancer, with the signed `Host` kept.
#![cfg(feature = "aws")]

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use sidekick::aws::SidekickHttpClient;
use sidekick::{Balancer, EndpointState, Policy};
use support::s3::{S3Cluster, S3Target, ACCESS_KEY, SECRET_KEY};

/// What the SDK signs for; nothing listens there (the name does not even resolve).
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

fn s3_client(balancer: &Balancer, secret: &str, retry: RetryConfig) -> aws_sdk_s3::Client {
    let http = SidekickHttpClient::new(balancer.clone()).expect("http client");
    s3_client_over(http, secret, retry)
}

fn s3_client_over(
    http: SidekickHttpClient,
    secret: &str,
    retry: RetryConfig,
) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(ACCESS_KEY, secret, None, None, "test"))
        .endpoint_url(VIRTUAL_ENDPOINT)
        .force_path_style(true)
        .retry_config(retry)
        .http_client(http)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Quick SDK retries so that a test never sleeps for seconds.
fn quick_retries(max_attempts: u32) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(max_attempts)
        .with_initial_backoff(Duration::from_millis(20))
        .with_max_backoff(Duration::from_millis(300))
}

fn requests_per_node(b: &Balancer) -> Vec<(String, u64)> {
    b.endpoints()
        .into_iter()
        .map(|e| (e.url, e.requests))
        .collect()
}

/// Body of object `key`: always the same for the same key, 1 KiB.
fn object_body(key: &str) -> Vec<u8> {
    let mut body = format!("{key}:").into_bytes();
    body.resize(1024, b'.');
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_head_list_delete_and_multipart_across_three_nodes() {
    support::trace_init();
    let cluster = S3Cluster::start(3).await;
    let b = ready_balancer(&cluster).await;
    let s3 = s3_client(&b, SECRET_KEY, quick_retries(3));

    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create bucket");
    let keys: Vec<String> = (0..12).map(|i| format!("dir/key-{i:02}")).collect();
    for key in &keys {
        s3.put_object()
            .bucket(BUCKET)
            .key(key)
            .body(ByteStream::from(object_body(key)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }
    for key in &keys {
        let got = s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
        let bytes = got.body.collect().await.expect("body").into_bytes();
        assert_eq!(
            bytes.as_ref(),
            object_body(key).as_slice(),
            "content of {key}"
        );
        let head = s3
            .head_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("head {key}: {e:?}"));
        assert_eq!(head.content_length(), Some(1024));
    }
    let listed = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("dir/")
        .send()
        .await
        .expect("list");
    let names: HashSet<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    let expected: HashSet<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(names, expected);

    s3.delete_object()
        .bucket(BUCKET)
        .key(&keys[0])
        .send()
        .await
        .expect("delete");
    let gone = s3.head_object().bucket(BUCKET).key(&keys[0]).send().await;
    match gone {
        Err(SdkError::ServiceError(e)) => assert!(e.err().is_not_found(), "{:?}", e.err()),
        other => panic!("deleted object still there: {other:?}"),
    }

    // Multipart: 5 MiB + 5 MiB + 1 KiB, each part on whichever node the balancer picks.
    let key = "big/multipart.bin";
    let parts: Vec<Vec<u8>> = vec![vec![b'a'; 5 << 20], vec![b'b'; 5 << 20], vec![b'c'; 1024]];
    let upload = s3
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .expect("create multipart upload");
    let upload_id = upload.upload_id().expect("upload id").to_string();
    let mut completed = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let out = s3
            .upload_part()
            .bucket(BUCKET)
            .key(key)
            .upload_id(&upload_id)
            .part_number(n)
            .body(ByteStream::from(part.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload part {n}: {e:?}"));
        completed.push(
            CompletedPart::builder()
                .part_number(n)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .expect("complete multipart upload");
    let got = s3
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .expect("get multipart object");
    let bytes = got.body.collect().await.expect("body").into_bytes();
    assert_eq!(bytes.len(), parts.iter().map(Vec::len).sum::<usize>());
    assert_eq!(bytes.as_ref(), parts.concat().as_slice());

    // Every node took part.
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
    let s3 = s3_client(&b, SECRET_KEY, quick_retries(3));
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("bucket");
    s3.put_object()
        .bucket(BUCKET)
        .key("k")
        .body(ByteStream::from(object_body("k")))
        .send()
        .await
        .expect("put");
    let before: u64 = requests_per_node(&b).iter().map(|(_, n)| n).sum();
    // Four at a time, so that in-flight counts and latencies both steer the picks.
    let s3 = Arc::new(s3);
    let report = support::load(4, 75, Duration::from_secs(60), {
        let s3 = s3.clone();
        move |_, _| {
            let s3 = s3.clone();
            async move {
                let out = s3
                    .get_object()
                    .bucket(BUCKET)
                    .key("k")
                    .send()
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                out.body.collect().await.map_err(|e| e.to_string())?;
                Ok::<(), String>(())
            }
        }
    })
    .await;
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert_eq!(report.ok, 300);
    let per_node = requests_per_node(&b);
    let total: u64 = per_node.iter().map(|(_, n)| n).sum::<u64>() - before;
    assert!(total >= 300, "{per_node:?}");
    for (url, n) in &per_node {
        // An even share is 100; any node well below that would mean the spread is broken.
        assert!(*n >= 30, "{url} got {n} of {total}: {per_node:?}");
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
    // The SDK's standard retry mode with short backoffs: a request cut by the kill is signed
    // again and the connector picks again.
    let http = SidekickHttpClient::new(b.clone())
        .expect("http client")
        .response_buffer(response_buffer);
    let s3 = Arc::new(s3_client_over(http, SECRET_KEY, quick_retries(4)));
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("bucket");
    for k in 0..KEYS {
        let key = format!("obj-{k}");
        s3.put_object()
            .bucket(BUCKET)
            .key(&key)
            .body(ByteStream::from(object_body(&key)))
            .send()
            .await
            .expect("seed");
    }

    let done = Arc::new(AtomicUsize::new(0));
    let workload = tokio::spawn(support::load(
        WORKERS,
        PER_WORKER,
        // MinIO: a PUT retried on the key the killed node was writing waits for that node's
        // lock to expire (up to 2 minutes, see support/s3.rs), and then succeeds.
        Duration::from_secs(120) + cluster.max_stall_after_kill(),
        {
            let s3 = s3.clone();
            let done = done.clone();
            move |worker, i| {
                let s3 = s3.clone();
                let done = done.clone();
                async move {
                    // Writes go to fresh keys and reads to the seeded ones: s3s-fs processes
                    // sharing a directory may collide on their temporary files when they write
                    // at the same time (see support/s3.rs), which must not be read back here.
                    let key = format!("obj-{}", (worker * 7 + i) % KEYS);
                    let r = match i % 3 {
                        0 => {
                            let key = format!("put-{worker}-{i}");
                            s3.put_object()
                                .bucket(BUCKET)
                                .key(&key)
                                .body(ByteStream::from(object_body(&key)))
                                .send()
                                .await
                                .map(drop)
                                .map_err(|e| format!("put {key}: {e:?}"))
                        }
                        1 => match s3.get_object().bucket(BUCKET).key(&key).send().await {
                            Ok(out) => match out.body.collect().await.map(|b| b.into_bytes()) {
                                Ok(b) if b.as_ref() == object_body(&key).as_slice() => Ok(()),
                                Ok(_) => Err(format!("get {key}: wrong content")),
                                Err(e) => Err(format!("get {key} body: {e}")),
                            },
                            Err(e) => Err(format!("get {key}: {e:?}")),
                        },
                        _ => s3
                            .head_object()
                            .bucket(BUCKET)
                            .key(&key)
                            .send()
                            .await
                            .map(drop)
                            .map_err(|e| format!("head {key}: {e:?}")),
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
    let puts = (0..WORKERS * PER_WORKER)
        .filter(|n| (n % PER_WORKER).is_multiple_of(3))
        .count();
    let listed = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("put-")
        .send()
        .await
        .expect("list");
    assert_eq!(listed.contents().len(), puts, "every PUT landed");
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
async fn wrong_secret_still_fails_with_signature_does_not_match() {
    support::trace_init();
    let cluster = S3Cluster::start(3).await;
    let b = ready_balancer(&cluster).await;
    let good = s3_client(&b, SECRET_KEY, quick_retries(3));
    good.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("bucket");
    let bad = s3_client(&b, "not-the-secret", quick_retries(3));
    // Several times, so that every node gets a say.
    for i in 0..6 {
        let err = bad
            .list_objects_v2()
            .bucket(BUCKET)
            .send()
            .await
            .expect_err("a wrong secret must be refused");
        assert_eq!(
            err.code(),
            Some("SignatureDoesNotMatch"),
            "attempt {i}: {err:?}"
        );
    }
    // And the right one passes on all of them (the signed Host survived the rewrite).
    for _ in 0..6 {
        good.list_objects_v2()
            .bucket(BUCKET)
            .send()
            .await
            .expect("list");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_move_to_another_node_inside_the_connector() {
    support::trace_init();
    let cluster = S3Cluster::start(3).await;
    // A port where nothing listens, first in the list and in rotation from the start (no
    // probes): only the connector's own failover can save the requests it gets, since the SDK
    // may not retry.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let b = Balancer::builder()
        .site(format!("{dead_url},{}", cluster.site()))
        .health_check(false)
        // Round robin: the dead node surely gets its turn.
        .policy(Policy::RoundRobin)
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("balancer");
    let s3 = s3_client(&b, SECRET_KEY, RetryConfig::disabled());
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("bucket");
    for i in 0..30 {
        s3.head_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e:?}"));
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
async fn no_node_to_send_to_is_a_transient_io_error() {
    support::trace_init();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);

    // Refused everywhere: the last refusal comes back, as I/O.
    let b = Balancer::builder()
        .site(&dead_url)
        .health_check(false)
        .build()
        .expect("balancer");
    let s3 = s3_client(&b, SECRET_KEY, RetryConfig::disabled());
    let err = s3
        .head_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect_err("nothing listens");
    let SdkError::DispatchFailure(failure) = &err else {
        panic!("expected a dispatch failure, got {err:?}");
    };
    assert!(failure.is_io(), "{err:?}");

    // Nothing in rotation at all (the probes never passed): I/O too, so the SDK backs off.
    let b = balancer(S3Target::from_env(), &dead_url);
    let s3 = s3_client(&b, SECRET_KEY, RetryConfig::disabled());
    let err = s3
        .head_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect_err("no endpoint");
    let SdkError::DispatchFailure(failure) = &err else {
        panic!("expected a dispatch failure, got {err:?}");
    };
    assert!(failure.is_io(), "{err:?}");
}
