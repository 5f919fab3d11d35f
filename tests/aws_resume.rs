//! A `GetObject` body that breaks in the middle (its node is killed while it streams) resumes
//! from another node, for the same object version only (see `src/resume.rs`).
//!
//! Two s3s-fs nodes over one data directory, each its own site: all traffic goes to node 0
//! until it dies, so the test knows which node is streaming when it kills it.
#![cfg(feature = "aws")]

mod support;

use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use sidekick::aws::SidekickHttpClient;
use sidekick::Balancer;
use support::s3::{S3Cluster, ACCESS_KEY, SECRET_KEY};

const BUCKET: &str = "resume";
/// Large enough that most of it is still on the node when the first chunks arrive.
const SIZE: usize = 24 << 20;

fn pattern(seed: u8) -> Vec<u8> {
    (0..SIZE)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
}

async fn setup() -> (S3Cluster, Balancer, aws_sdk_s3::Client) {
    support::trace_init();
    let cluster = S3Cluster::start(2).await;
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
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
        .endpoint_url("http://s3.sidekick.test:9000")
        .force_path_style(true)
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .http_client(SidekickHttpClient::new(b.clone()).expect("http client"))
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(config);
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("bucket");
    (cluster, b, s3)
}

async fn put(s3: &aws_sdk_s3::Client, key: &str, body: Vec<u8>) {
    s3.put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

fn requests(b: &Balancer, url: &str) -> u64 {
    b.endpoints()
        .into_iter()
        .find(|e| e.url == url)
        .map_or(0, |e| e.requests)
}

/// Read the first bytes of the body (at least 1 MiB), returning them and the rest of the stream.
async fn start_reading(mut body: ByteStream) -> (Vec<u8>, ByteStream) {
    let mut got = Vec::new();
    while got.len() < (1 << 20) {
        let chunk = body
            .try_next()
            .await
            .expect("first chunks")
            .expect("the body ended early");
        got.extend_from_slice(&chunk);
    }
    (got, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_broken_by_a_dying_node_resumes_from_another() {
    let (mut cluster, b, s3) = setup().await;
    let urls = cluster.urls();
    let want = pattern(0);
    put(&s3, "big", want.clone()).await;

    let out = s3
        .get_object()
        .bucket(BUCKET)
        .key("big")
        .send()
        .await
        .expect("get");
    let (mut got, mut body) = start_reading(out.body).await;
    assert_eq!(requests(&b, &urls[1]), 0, "node 1 was used before the kill");
    cluster.kill(0);
    // Bounded: the body is SIZE bytes long.
    while let Some(chunk) = body.try_next().await.expect("the resumed body") {
        got.extend_from_slice(&chunk);
        assert!(got.len() <= SIZE, "more bytes than the object has");
    }
    assert_eq!(got.len(), SIZE);
    assert!(got == want, "the resumed body differs from the object");
    assert!(
        requests(&b, &urls[1]) >= 1,
        "the rest should have come from node 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_is_never_resumed_from_another_version() {
    let (mut cluster, _b, s3) = setup().await;
    put(&s3, "changing", pattern(0)).await;

    let out = s3
        .get_object()
        .bucket(BUCKET)
        .key("changing")
        .send()
        .await
        .expect("get");
    let (_, mut body) = start_reading(out.body).await;
    // The object changes while its old version streams, then the streaming node dies: the
    // remaining bytes exist only in the new version, which must not be spliced in.
    put(&s3, "changing", pattern(0x5a)).await;
    cluster.kill(0);
    let mut result = Ok(());
    for _ in 0..SIZE {
        match body.try_next().await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let err = result.expect_err("a body of two versions was delivered");
    let chain = format!("{err:?}");
    assert!(
        chain.contains("412") || chain.contains("resuming it failed"),
        "{chain}"
    );
}
