//! S3 GETs of a 1 KiB object through aws-sdk-s3: the SDK's own HTTP client against
//! `sidekick::aws::SidekickHttpClient`, and the balanced client over 1 and 3 nodes.
//!
//! Two kinds of node, both on loopback:
//!
//! - **s3s-fs** processes (the binary must be installed, see `tests/support/s3.rs`): a real S3
//!   server that checks signatures. It does not set `TCP_NODELAY`, so on a kept-alive connection
//!   the body of a GET waits for the client's delayed ACK of the head: every GET takes
//!   milliseconds whatever the client, which hides the client's own cost.
//! - **stub** nodes in this process: hyper servers with `TCP_NODELAY` that answer every request
//!   with 200 and 1 KiB, after a fixed service time, at most `STUB_SLOTS` at a time. The SDK
//!   still signs, sends and parses a full GetObject; only the server's checks are missing. They
//!   measure the client's overhead, and what spreading over 3 nodes of limited capacity buys.
//!
//! Groups:
//!
//! - `get_1kib_one_node/{s3s_fs,stub}_{sdk_default,sidekick}`: one GET at a time against the
//!   same single node, the SDK's default hyper 1 client (aws-smithy-http-client, plain HTTP)
//!   against sidekick, in the same run. Goal (issue): sidekick's time ≤ default / 0.97.
//!   `stub_sidekick` reads short answers whole (`response_buffer(64 KiB)`, the small-object
//!   setting); `stub_sidekick_unbuffered` is sidekick's default (`response_buffer(0)`): reading
//!   a short answer whole serialises a little work the SDK otherwise overlaps.
//! - `get_1kib_16_in_flight/{s3s_fs,stub}_{1,3}_nodes`: 16 GETs per iteration through sidekick,
//!   over 1 and over 3 nodes (criterion reports requests/s).
//!
//! Criterion measures one function after the other, so drift on a noisy machine can exceed the
//! few percent the goal is about. After the criterion groups an *interleaved* pass alternates
//! short blocks of both clients (rotating their order) and prints, per kind of node, the median
//! µs per GET of each and the median of the per-round ratios `default time / sidekick time`.
//!
//! Run: `cargo bench --bench s3 --features aws`.

#[allow(dead_code)]
#[path = "../tests/support/s3.rs"]
mod s3_nodes;

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::future::join_all;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use s3_nodes::{S3Cluster, ACCESS_KEY, SECRET_KEY};
use sidekick::aws::SidekickHttpClient;
use sidekick::Balancer;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

const BUCKET: &str = "bench";
const KEY: &str = "obj-1k";
const CONCURRENCY: usize = 16;
/// The `response_buffer` of the buffered variants (the small-object setting; the default is 0).
const BUFFER: usize = 64 * 1024;
/// A stub node serves at most this many requests at a time...
const STUB_SLOTS: usize = 4;
/// ...each taking this long: 4 / 1 ms = 4,000 GETs/s per node at most.
const STUB_SERVICE: Duration = Duration::from_millis(1);
/// Interleaved pass: rounds, GETs per block, and a wall-clock cap per kind of node.
const PAIRED_ROUNDS: usize = 60;
const PAIRED_BLOCK: usize = 40;
const PAIRED_CAP: Duration = Duration::from_secs(20);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

// ===== stub nodes =====

/// A stub S3 node on 127.0.0.1:0 (see the module docs); abort the task to stop it.
async fn stub_node(service: Option<Duration>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let slots = Arc::new(Semaphore::new(STUB_SLOTS));
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let slots = slots.clone();
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let slots = slots.clone();
                    async move {
                        if let Some(d) = service {
                            let _slot = slots.acquire().await;
                            tokio::time::sleep(d).await;
                        }
                        let resp = Response::builder()
                            .header("content-type", "application/octet-stream")
                            .header("etag", "\"0f343b0931126a20f133d67c2b018a3b\"")
                            .header("last-modified", "Sun, 22 Nov 2026 00:00:00 GMT")
                            .body(Full::new(Bytes::from(vec![b'x'; 1024])))
                            .expect("response");
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

// ===== clients =====

fn s3_client(endpoint: &str, http: SharedHttpClient) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "bench",
        ))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .http_client(http)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The SDK's default HTTP client (hyper 1), without TLS: the node's own URL as endpoint.
fn default_client(node: &str) -> Arc<aws_sdk_s3::Client> {
    Arc::new(s3_client(
        node,
        aws_smithy_http_client::Builder::new().build_http(),
    ))
}

/// The balanced client over `site` (responses up to `buffer` bytes read whole); the SDK signs
/// for a virtual endpoint.
async fn balanced_client(site: &str, probe: bool, buffer: usize) -> Arc<aws_sdk_s3::Client> {
    let balancer = Balancer::builder()
        .site(site)
        .health_check(probe)
        .health_path("/")
        .healthy_statuses([200, 403])
        .build()
        .expect("balancer");
    balancer
        .ready(Duration::from_secs(10))
        .await
        .expect("nodes up");
    let http = SidekickHttpClient::new(balancer)
        .expect("http client")
        .response_buffer(buffer);
    Arc::new(s3_client(
        "http://s3.bench.test:9000",
        SharedHttpClient::new(http),
    ))
}

async fn get(s3: &aws_sdk_s3::Client) {
    let out = s3
        .get_object()
        .bucket(BUCKET)
        .key(KEY)
        .send()
        .await
        .expect("get");
    let body = out.body.collect().await.expect("body").into_bytes();
    assert_eq!(body.len(), 1024);
    black_box(body);
}

async fn get_many(s3: &aws_sdk_s3::Client, n: usize) {
    join_all((0..n).map(|_| get(s3))).await;
}

/// Median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Alternate blocks of GETs through `default` and `sidekick`; print medians and the ratio.
async fn interleaved(name: &str, default: &aws_sdk_s3::Client, sidekick: &aws_sdk_s3::Client) {
    async fn block(s3: &aws_sdk_s3::Client) -> f64 {
        let t = Instant::now();
        for _ in 0..PAIRED_BLOCK {
            get(s3).await;
        }
        t.elapsed().as_secs_f64() * 1e6 / PAIRED_BLOCK as f64
    }
    let (mut base_us, mut side_us, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let start = Instant::now();
    for round in 0..PAIRED_ROUNDS {
        if start.elapsed() > PAIRED_CAP {
            break;
        }
        let (b, s) = if round % 2 == 0 {
            let b = block(default).await;
            (b, block(sidekick).await)
        } else {
            let s = block(sidekick).await;
            (block(default).await, s)
        };
        base_us.push(b);
        side_us.push(s);
        ratios.push(b / s);
    }
    println!(
        "interleaved, {name}, {} rounds of {PAIRED_BLOCK} GETs: default {:.1} µs/GET, \
         sidekick {:.1} µs/GET, median ratio default/sidekick time = {:.3} (goal >= 0.97)",
        ratios.len(),
        median(&mut base_us),
        median(&mut side_us),
        median(&mut ratios),
    );
}

fn bench(c: &mut Criterion) {
    let rt = runtime();

    // s3s-fs: 3 nodes over one directory, the object written once.
    let cluster = rt.block_on(S3Cluster::start(3));
    let fs_one = cluster.nodes[0].url();
    let fs_default = default_client(&fs_one);
    rt.block_on(async {
        fs_default
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("bucket");
        fs_default
            .put_object()
            .bucket(BUCKET)
            .key(KEY)
            .body(ByteStream::from(vec![b'x'; 1024]))
            .send()
            .await
            .expect("put");
    });
    let fs_side_one = rt.block_on(balanced_client(&fs_one, true, BUFFER));
    let fs_side_three = rt.block_on(balanced_client(&cluster.site(), true, BUFFER));

    // Stubs: one without service time for the client overhead, three with limited capacity.
    let (fast, fast_task) = rt.block_on(stub_node(None));
    let fast_url = format!("http://{fast}");
    let stub_default = default_client(&fast_url);
    let stub_side = rt.block_on(balanced_client(&fast_url, false, BUFFER));
    let stub_side_streamed = rt.block_on(balanced_client(&fast_url, false, 0));
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(rt.block_on(stub_node(Some(STUB_SERVICE))));
    }
    let slow_urls: Vec<String> = slow.iter().map(|(a, _)| format!("http://{a}")).collect();
    let stub_side_one = rt.block_on(balanced_client(&slow_urls[0], false, BUFFER));
    let stub_side_three = rt.block_on(balanced_client(&slow_urls.join(","), false, BUFFER));

    let mut g = c.benchmark_group("get_1kib_one_node");
    g.throughput(Throughput::Elements(1));
    for (name, s3) in [
        ("s3s_fs_sdk_default", &fs_default),
        ("s3s_fs_sidekick", &fs_side_one),
        ("stub_sdk_default", &stub_default),
        ("stub_sidekick", &stub_side),
        ("stub_sidekick_unbuffered", &stub_side_streamed),
    ] {
        g.bench_function(name, |b| b.to_async(&rt).iter(|| get(s3)));
    }
    g.finish();

    let mut g = c.benchmark_group("get_1kib_16_in_flight");
    g.throughput(Throughput::Elements(CONCURRENCY as u64));
    for (name, s3) in [
        ("s3s_fs_1_node", &fs_side_one),
        ("s3s_fs_3_nodes", &fs_side_three),
        ("stub_1_node", &stub_side_one),
        ("stub_3_nodes", &stub_side_three),
    ] {
        g.bench_function(name, |b| b.to_async(&rt).iter(|| get_many(s3, CONCURRENCY)));
    }
    g.finish();

    rt.block_on(async {
        interleaved(
            "stub node, response_buffer(64 KiB)",
            &stub_default,
            &stub_side,
        )
        .await;
        interleaved(
            "stub node, default (response_buffer(0))",
            &stub_default,
            &stub_side_streamed,
        )
        .await;
        interleaved("s3s-fs node", &fs_default, &fs_side_one).await;
    });

    fast_task.abort();
    for (_, task) in slow {
        task.abort();
    }
    drop(cluster);
}

criterion_group!(benches, bench);
criterion_main!(benches);
