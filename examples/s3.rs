//! One aws-sdk-s3 client spread over every node of a MinIO/S3 cluster: put, get and list, then
//! where the requests went.
//!
//! ```text
//! cargo run --example s3 --features aws -- 'http://127.0.0.1:{9001...9003}'
//! ```
//!
//! Arguments: the SITE (sidekick syntax; default `http://127.0.0.1:{9001...9003}`) and optionally
//! the health path (default `/minio/health/ready`). Credentials come from `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY` (default `minioadmin`/`minioadmin`), the bucket from `S3_BUCKET`
//! (default `sidekick-example`, created when missing).
//!
//! No MinIO at hand? Three s3s-fs processes over one directory make a cluster (s3s-fs has no
//! health endpoint; an unsigned `GET /` answers 403, so pass `/` and accept 403 — this example
//! does when the health path is `/`):
//!
//! ```text
//! cargo install s3s-fs --version 0.14.1 --locked --features binary
//! mkdir -p /tmp/s3data
//! for p in 9001 9002 9003; do
//!   s3s-fs --host 127.0.0.1 --port $p --access-key minioadmin --secret-key minioadmin /tmp/s3data &
//! done
//! cargo run --example s3 --features aws -- 'http://127.0.0.1:{9001...9003}' /
//! ```
//!
//! The SDK signs every request for `http://s3.cluster.local:9000`, a name that does not need to
//! resolve: `SidekickHttpClient` sends each request to a node of the SITE and keeps the signed
//! `Host`.

use std::error::Error;
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use sidekick::aws::SidekickHttpClient;
use sidekick::Balancer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let site = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:{9001...9003}".to_string());
    let health = args
        .next()
        .unwrap_or_else(|| "/minio/health/ready".to_string());
    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "minioadmin".into());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "minioadmin".into());
    let bucket = std::env::var("S3_BUCKET").unwrap_or_else(|_| "sidekick-example".into());

    let mut builder = Balancer::builder()
        .site(&site)
        .health_path(&health)
        .health_interval(Duration::from_secs(1));
    if health == "/" {
        builder = builder.healthy_statuses([200, 403]);
    }
    let balancer = builder.build()?;
    balancer.ready(Duration::from_secs(5)).await?;

    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(key, secret, None, None, "example"))
        .endpoint_url("http://s3.cluster.local:9000")
        .force_path_style(true)
        .http_client(SidekickHttpClient::new(balancer.clone())?)
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(config);

    if s3.head_bucket().bucket(&bucket).send().await.is_err() {
        s3.create_bucket().bucket(&bucket).send().await?;
        println!("created bucket {bucket}");
    }
    for i in 0..30 {
        let key = format!("example/object-{i:02}.txt");
        let body = format!("object {i}, written through sidekick\n");
        s3.put_object()
            .bucket(&bucket)
            .key(&key)
            .body(ByteStream::from(body.into_bytes()))
            .send()
            .await?;
    }
    let got = s3
        .get_object()
        .bucket(&bucket)
        .key("example/object-07.txt")
        .send()
        .await?;
    let body = got.body.collect().await?.into_bytes();
    print!(
        "get example/object-07.txt: {}",
        String::from_utf8_lossy(&body)
    );
    let listed = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("example/")
        .send()
        .await?;
    println!("list example/: {} objects", listed.contents().len());

    println!(
        "\n{:<28} {:>8} {:>9} {:>10}",
        "node", "state", "requests", "latency"
    );
    for e in balancer.endpoints() {
        let latency = e
            .latency
            .map_or_else(|| "-".to_string(), |l| format!("{:.2?}", l));
        println!(
            "{:<28} {:>8} {:>9} {:>10}",
            e.url,
            e.state.as_str(),
            e.requests,
            latency
        );
    }
    Ok(())
}
