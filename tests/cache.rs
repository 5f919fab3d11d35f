//! The shared S3 cache (`sidekick::cache`) against real s3s-fs processes: one as the origin
//! (behind the conditional front of `support/cache.rs`, which counts the origin's body bytes
//! and answers `304` as real S3 does), another, over its own data directory, as the cache
//! store. Most tests go through the real sidecar (`Sidecar::start`) with aws-sdk-s3 as the
//! client; one drives the tower layer directly. The tests fail if s3s-fs is not installed.
#![cfg(all(feature = "cache", feature = "sidecar"))]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use sidekick::cache::{Cache, CacheConfig, CacheLayer, CacheMetrics, RequestBody};
use sidekick::service::{RetryBody, SidekickLayer};
use sidekick::sidecar::{parse_args, Command, Console, ConsoleOpts, Sidecar};
use support::cache::{eventually, object, s3_client, CacheRig, Counts, CutProxy, ORIGIN_BUCKET};
use support::s3::SECRET_KEY;
use support::sidecar::Capture;
use tower::{Layer, ServiceExt};

const MIB: usize = 1 << 20;
const WAIT: Duration = Duration::from_secs(10);

/// A sidecar over the rig's origin front, with the cache store at `store_url`.
async fn sidecar(rig: &CacheRig, store_url: &str, min_size: u64) -> Sidecar {
    let args = [
        "--address",
        "127.0.0.1:0",
        "--health-path",
        "/health",
        "--health-duration",
        "200ms",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([rig.front.url()]);
    let mut cfg = match parse_args(args) {
        Ok(Command::Run(c)) => *c,
        other => panic!("bad flags: {other:?}"),
    };
    cfg.cache = Some(rig.cache_config_at(store_url, min_size));
    let console = Arc::new(Console::new(
        ConsoleOpts::from_config(&cfg, false),
        Box::new(Capture::default()),
    ));
    let sc = Sidecar::start(cfg, Some(console))
        .await
        .unwrap_or_else(|e| panic!("sidecar did not start: {e}"));
    sc.balancer()
        .ready(WAIT)
        .await
        .expect("the origin front is up");
    let cache = sc.cache().expect("the sidecar has a cache");
    assert!(cache.wait_healthy(WAIT).await, "the cache store is healthy");
    sc
}

fn url(sc: &Sidecar) -> String {
    format!("http://{}", sc.local_addr())
}

fn metrics(sc: &Sidecar) -> CacheMetrics {
    sc.cache().expect("cache").metrics()
}

/// GET through `s3`: body and the response's ETag, Content-Length, Last-Modified.
async fn get(s3: &aws_sdk_s3::Client, key: &str) -> (Vec<u8>, String, i64, String) {
    let out = s3
        .get_object()
        .bucket(ORIGIN_BUCKET)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
    let etag = out.e_tag().unwrap_or_default().to_string();
    let len = out.content_length().unwrap_or(-1);
    let modified = out
        .last_modified()
        .map(|t| t.to_string())
        .unwrap_or_default();
    let body = out
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec();
    (body, etag, len, modified)
}

async fn wait_stores(sc: &Sidecar, n: u64) {
    assert!(
        eventually(WAIT, || metrics(sc).stores >= n).await,
        "{n} entries stored: {:?}",
        metrics(sc)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_then_hit_is_served_from_the_cache_store_after_a_304() {
    support::trace_init();
    let rig = CacheRig::start().await;
    let sc = sidecar(&rig, &rig.store_url(), MIB as u64).await;
    let s3 = s3_client(&url(&sc), SECRET_KEY);
    let body = object(2 * MIB, 1);
    rig.put("big", body.clone(), None).await;

    let first = get(&s3, "big").await;
    assert_eq!(first.0, body);
    assert_eq!(rig.front.body_bytes(), body.len() as u64);
    wait_stores(&sc, 1).await;
    assert_eq!(rig.entries().await.len(), 1);
    assert_eq!(metrics(&sc).misses, 1);

    let second = get(&s3, "big").await;
    assert_eq!(second.0, body, "the cached body is the origin's");
    assert_eq!(
        (&second.1, second.2, &second.3),
        (&first.1, first.2, &first.3),
        "ETag, length and Last-Modified as the origin sent them"
    );
    // The origin only answered the conditional request, with no body.
    assert_eq!(rig.front.body_bytes(), body.len() as u64);
    assert_eq!(Counts::get(&rig.front.counts().not_modified), 1);
    let m = metrics(&sc);
    assert_eq!((m.hits, m.revalidations), (1, 1), "{m:?}");
    assert_eq!(m.cache_bytes, body.len() as u64);
    assert_eq!(m.origin_bytes, body.len() as u64);

    // HEAD is answered from the entry too, after its own revalidation.
    let head = s3
        .head_object()
        .bucket(ORIGIN_BUCKET)
        .key("big")
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_length(), Some(body.len() as i64));
    assert_eq!(head.e_tag().unwrap_or_default(), first.1);
    assert_eq!(metrics(&sc).hits, 2);
    assert_eq!(Counts::get(&rig.front.counts().not_modified), 2);

    // The sidecar's Prometheus text carries the cache counters.
    let text = reqwest_like_get(&format!("{}/.prometheus/metrics", url(&sc))).await;
    assert!(text.contains("sidekick_cache_hits_total 2"), "{text}");
    assert!(text.contains("sidekick_cache_up 1"));
    sc.shutdown().await;
}

/// A plain GET without credentials; the body as text.
async fn reqwest_like_get(url: &str) -> String {
    let client = support::sidecar::client::<Empty<Bytes>>();
    let resp = client
        .request(Request::get(url).body(Empty::new()).expect("request"))
        .await
        .expect("GET");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_object_is_served_new_and_stored_again() {
    support::trace_init();
    let rig = CacheRig::start().await;
    let sc = sidecar(&rig, &rig.store_url(), MIB as u64).await;
    let s3 = s3_client(&url(&sc), SECRET_KEY);
    let v1 = object(MIB + 100, 1);
    let v2 = object(MIB + 200, 2);
    rig.put("obj", v1.clone(), None).await;
    assert_eq!(get(&s3, "obj").await.0, v1);
    wait_stores(&sc, 1).await;

    // Changed behind the cache's back: the revalidation gets a 200 with the new body.
    rig.put("obj", v2.clone(), None).await;
    let before = rig.front.body_bytes();
    assert_eq!(get(&s3, "obj").await.0, v2);
    assert_eq!(rig.front.body_bytes() - before, v2.len() as u64);
    let m = metrics(&sc);
    assert_eq!((m.hits, m.changed), (0, 1), "{m:?}");
    wait_stores(&sc, 2).await;

    // ... and the new version is what the cache serves next.
    let before = rig.front.body_bytes();
    assert_eq!(get(&s3, "obj").await.0, v2);
    assert_eq!(rig.front.body_bytes(), before);
    assert_eq!(metrics(&sc).hits, 1);
    assert_eq!(rig.entries().await.len(), 1);
    sc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_and_delete_through_the_sidecar_invalidate() {
    support::trace_init();
    let rig = CacheRig::start().await;
    let sc = sidecar(&rig, &rig.store_url(), MIB as u64).await;
    let s3 = s3_client(&url(&sc), SECRET_KEY);
    let v1 = object(MIB, 1);
    let v2 = object(MIB, 2);
    rig.put("k", v1.clone(), None).await;
    assert_eq!(get(&s3, "k").await.0, v1);
    wait_stores(&sc, 1).await;
    assert_eq!(rig.entries().await.len(), 1);

    s3.put_object()
        .bucket(ORIGIN_BUCKET)
        .key("k")
        .body(v2.clone().into())
        .send()
        .await
        .expect("overwrite through the sidecar");
    assert!(rig.entries().await.is_empty(), "the PUT removed the entry");
    assert!(metrics(&sc).invalidations >= 1);
    assert_eq!(get(&s3, "k").await.0, v2);
    wait_stores(&sc, 2).await;
    assert_eq!(get(&s3, "k").await.0, v2);
    assert_eq!(metrics(&sc).hits, 1);

    s3.delete_object()
        .bucket(ORIGIN_BUCKET)
        .key("k")
        .send()
        .await
        .expect("delete through the sidecar");
    assert!(
        rig.entries().await.is_empty(),
        "the DELETE removed the entry"
    );
    let err = s3
        .get_object()
        .bucket(ORIGIN_BUCKET)
        .key("k")
        .send()
        .await
        .expect_err("the object is gone");
    assert_eq!(err.code(), Some("NoSuchKey"), "{err:?}");
    sc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthorized_request_gets_the_origins_403_never_the_cached_body() {
    support::trace_init();
    let rig = CacheRig::start().await;
    let sc = sidecar(&rig, &rig.store_url(), MIB as u64).await;
    let s3 = s3_client(&url(&sc), SECRET_KEY);
    let body = object(2 * MIB, 3);
    rig.put("secret", body.clone(), None).await;
    assert_eq!(get(&s3, "secret").await.0, body);
    wait_stores(&sc, 1).await;

    // A wrong secret: the revalidation carries the bad signature and the origin refuses it.
    let intruder = s3_client(&url(&sc), "not-the-secret");
    let err = intruder
        .get_object()
        .bucket(ORIGIN_BUCKET)
        .key("secret")
        .send()
        .await
        .expect_err("a wrong secret is refused");
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"), "{err:?}");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));

    // Anonymous: same.
    let client = support::sidecar::client::<Empty<Bytes>>();
    let resp = client
        .request(
            Request::get(format!("{}/{ORIGIN_BUCKET}/secret", url(&sc)))
                .body(Empty::new())
                .expect("request"),
        )
        .await
        .expect("anonymous GET");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let text = resp.into_body().collect().await.expect("body").to_bytes();
    assert!(text.len() < 4096 && !text.starts_with(&body[..64]));

    let m = metrics(&sc);
    assert_eq!(
        (m.hits, m.cache_bytes),
        (0, 0),
        "nothing served from the cache: {m:?}"
    );
    assert_eq!(
        m.revalidations, 2,
        "both were revalidated with their own credentials"
    );
    assert_eq!(Counts::get(&rig.front.counts().not_modified), 0);

    // The entry is still there for those allowed to read it.
    assert_eq!(get(&s3, "secret").await.0, body);
    assert_eq!(metrics(&sc).hits, 1);
    sc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_no_store_and_ranged_answers_are_not_stored() {
    support::trace_init();
    let rig = CacheRig::start().await;
    let sc = sidecar(&rig, &rig.store_url(), MIB as u64).await;
    let s3 = s3_client(&url(&sc), SECRET_KEY);

    // Below the minimum size: never stored, every GET costs the origin the body.
    let small = object(MIB - 1, 4);
    rig.put("small", small.clone(), None).await;
    for _ in 0..2 {
        assert_eq!(get(&s3, "small").await.0, small);
    }
    assert_eq!(rig.front.body_bytes(), 2 * small.len() as u64);

    // `Cache-Control: no-store` from the origin: passed on, never stored.
    let private = object(2 * MIB, 5);
    rig.put("nostore", private.clone(), Some("no-store")).await;
    for _ in 0..2 {
        let out = s3
            .get_object()
            .bucket(ORIGIN_BUCKET)
            .key("nostore")
            .send()
            .await
            .expect("get nostore");
        assert_eq!(out.cache_control(), Some("no-store"));
        let b = out.body.collect().await.expect("body").into_bytes();
        assert_eq!(b.as_ref(), private.as_slice());
    }

    // A range of an object that is not cached: 206 from the origin, not stored.
    let big = object(2 * MIB, 6);
    rig.put("big", big.clone(), None).await;
    let part = s3
        .get_object()
        .bucket(ORIGIN_BUCKET)
        .key("big")
        .range("bytes=100-1099")
        .send()
        .await
        .expect("ranged get");
    assert_eq!(part.content_range(), Some("bytes 100-1099/2097152"));
    let b = part.body.collect().await.expect("body").into_bytes();
    assert_eq!(b.as_ref(), &big[100..1100]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rig.entries().await.is_empty(), "nothing stored so far");
    let m = metrics(&sc);
    assert_eq!(m.stores, 0, "{m:?}");

    // Once the object is cached, a range still goes to the origin (bypass).
    assert_eq!(get(&s3, "big").await.0, big);
    wait_stores(&sc, 1).await;
    let bypasses = metrics(&sc).bypasses;
    let ranged = Counts::get(&rig.front.counts().ranged);
    let part = s3
        .get_object()
        .bucket(ORIGIN_BUCKET)
        .key("big")
        .range("bytes=-10")
        .send()
        .await
        .expect("suffix range");
    let b = part.body.collect().await.expect("body").into_bytes();
    assert_eq!(b.as_ref(), &big[big.len() - 10..]);
    assert_eq!(metrics(&sc).bypasses, bypasses + 1);
    assert_eq!(Counts::get(&rig.front.counts().ranged), ranged + 1);
    assert_eq!(metrics(&sc).hits, 0);
    assert_eq!(rig.entries().await.len(), 1, "only the full GET was stored");
    sc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_body_that_breaks_is_finished_from_the_origin() {
    support::trace_init();
    let rig = CacheRig::start().await;
    let cut = CutProxy::start(rig.store.nodes[0].addr()).await;
    let sc = sidecar(&rig, &cut.url(), MIB as u64).await;
    let s3 = s3_client(&url(&sc), SECRET_KEY);
    let body = object(3 * MIB, 7);
    rig.put("obj", body.clone(), None).await;
    assert_eq!(get(&s3, "obj").await.0, body);
    wait_stores(&sc, 1).await;

    // The store's answers now stop after 256 KiB: the hit starts from the cache and ends with
    // a ranged request to the origin, carrying the client's credentials.
    cut.arm(256 * 1024);
    let before = rig.front.body_bytes();
    let got = get(&s3, "obj").await;
    assert_eq!(got.0, body, "the client gets the whole body, in order");
    let m = metrics(&sc);
    assert_eq!((m.hits, m.resumes), (1, 1), "{m:?}");
    assert_eq!(Counts::get(&rig.front.counts().ranged), 1);
    let from_origin = rig.front.body_bytes() - before;
    assert!(
        from_origin > 0 && from_origin < body.len() as u64,
        "only the rest came from the origin: {from_origin}"
    );
    assert_eq!(m.cache_bytes + from_origin, body.len() as u64);
    cut.disarm();
    sc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_cache_store_mid_run_fails_no_request() {
    support::trace_init();
    let mut rig = CacheRig::start().await;
    let sc = sidecar(&rig, &rig.store_url(), MIB as u64).await;
    let s3 = s3_client(&url(&sc), SECRET_KEY);
    let bodies: Vec<Vec<u8>> = (0..3)
        .map(|i| object(MIB + 4096 * i, i as u8 + 10))
        .collect();
    for (i, b) in bodies.iter().enumerate() {
        rig.put(&format!("obj-{i}"), b.clone(), None).await;
    }
    let bodies = Arc::new(bodies);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    const PER_CLIENT: usize = 30;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..4 {
        let (s3, bodies, done, failed) = (s3.clone(), bodies.clone(), done.clone(), failed.clone());
        tasks.spawn(async move {
            for n in 0..PER_CLIENT {
                let i = (c + n) % bodies.len();
                let key = format!("obj-{i}");
                let r = async {
                    let out = s3
                        .get_object()
                        .bucket(ORIGIN_BUCKET)
                        .key(&key)
                        .send()
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                    let b = out.body.collect().await.map_err(|e| e.to_string())?;
                    if b.into_bytes().as_ref() != bodies[i].as_slice() {
                        return Err(format!("{key}: wrong body"));
                    }
                    Ok::<(), String>(())
                }
                .await;
                if let Err(e) = r {
                    failed.lock().unwrap().push(e);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    // Kill the store once a third of the requests are done (entries exist and hits flow).
    let third = (4 * PER_CLIENT / 3) as u64;
    assert!(
        eventually(Duration::from_secs(60), || done.load(Ordering::SeqCst)
            >= third)
        .await
    );
    let hits_before_kill = metrics(&sc).hits;
    rig.store.kill(0);
    let finished = tokio::time::timeout(Duration::from_secs(120), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    assert!(finished.is_ok(), "the clients finished");
    let failed = failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert_eq!(done.load(Ordering::SeqCst), 4 * PER_CLIENT as u64);
    let m = metrics(&sc);
    assert!(hits_before_kill > 0, "hits before the kill: {m:?}");
    assert!(!m.healthy && m.store_errors > 0 && m.bypasses > 0, "{m:?}");
    sc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_serves_a_presigned_url_from_the_cache() {
    support::trace_init();
    let rig = CacheRig::start().await;
    let body = object(2 * MIB, 9);
    rig.put("shared", body.clone(), None).await;

    let cache = Cache::new(rig.cache_config(MIB as u64)).expect("cache");
    assert!(cache.wait_healthy(WAIT).await);
    let balancer = sidekick::Balancer::builder()
        .site(rig.front.url())
        .health_check(false)
        .build()
        .expect("balancer");
    let client: hyper_util::client::legacy::Client<_, RetryBody<RequestBody<Full<Bytes>>>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let svc = CacheLayer::new(cache.clone()).layer(SidekickLayer::new(balancer).layer(client));

    // A presigned GET for the front's address: the signature is in the query, which is part of
    // the entry's key, so the same URL is a hit.
    let presigned = s3_client(&rig.front.url(), SECRET_KEY)
        .get_object()
        .bucket(ORIGIN_BUCKET)
        .key("shared")
        .presigned(
            aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(600))
                .expect("presigning config"),
        )
        .await
        .expect("presign");
    let mut answers = Vec::new();
    for _ in 0..2 {
        let mut req = Request::get(presigned.uri());
        for (k, v) in presigned.headers() {
            req = req.header(k, v);
        }
        let resp = svc
            .clone()
            .oneshot(req.body(Full::new(Bytes::new())).expect("request"))
            .await
            .expect("GET through the layer");
        let status = resp.status();
        let etag = resp.headers().get("etag").cloned();
        let cached = resp.body().is_cached();
        let got = resp.into_body().collect().await.expect("body").to_bytes();
        answers.push((status, etag, cached, got));
        // The store has the entry before the second request.
        let c = cache.clone();
        assert!(eventually(WAIT, || c.metrics().stores >= 1).await);
    }
    assert_eq!(answers[0].0, StatusCode::OK);
    assert_eq!(answers[1].0, StatusCode::OK);
    assert_eq!(answers[0].1, answers[1].1);
    assert_eq!((answers[0].2, answers[1].2), (false, true));
    assert_eq!(answers[0].3.as_ref(), body.as_slice());
    assert_eq!(answers[1].3.as_ref(), body.as_slice());
    assert_eq!(rig.front.body_bytes(), body.len() as u64);
    assert_eq!(cache.metrics().hits, 1);
}

#[test]
fn from_env_parses_and_names_every_bad_variable() {
    let base: HashMap<&str, &str> = [
        ("SIDEKICK_CACHE_ENDPOINT", "http://127.0.0.1:9100"),
        ("SIDEKICK_CACHE_ACCESS_KEY", "minio"),
        ("SIDEKICK_CACHE_SECRET_KEY", "minio123"),
        ("SIDEKICK_CACHE_BUCKET", "cache01"),
    ]
    .into_iter()
    .collect();
    let read = |over: &[(&'static str, &'static str)]| {
        let mut m = base.clone();
        for (k, v) in over {
            m.insert(k, v);
        }
        CacheConfig::from_lookup(|name| m.get(name).map(|v| v.to_string()))
    };

    // No endpoint (or an empty one): no cache, whatever else is set.
    assert_eq!(read(&[("SIDEKICK_CACHE_ENDPOINT", "")]).unwrap(), None);
    assert_eq!(
        CacheConfig::from_lookup(|n| (n == "SIDEKICK_CACHE_MIN_SIZE").then(|| "bad".into()))
            .unwrap(),
        None
    );

    let cfg = read(&[]).unwrap().expect("configured");
    assert_eq!(cfg.min_size(), 1 << 20, "default 1 MiB");
    assert_eq!(
        cfg.health_interval(),
        Duration::from_secs(60),
        "default 60 s"
    );
    assert_eq!(cfg.bucket(), "cache01");
    let cfg = read(&[
        ("SIDEKICK_CACHE_MIN_SIZE", "32MiB"),
        ("SIDEKICK_CACHE_HEALTH_DURATION", "20"),
    ])
    .unwrap()
    .expect("configured");
    assert_eq!(cfg.min_size(), 32 << 20);
    assert_eq!(cfg.health_interval(), Duration::from_secs(20));
    for (value, bytes) in [
        ("64MB", 64_000_000),
        ("1048577", 1_048_577),
        ("2 GiB", 2 << 30),
    ] {
        let m = read(&[("SIDEKICK_CACHE_MIN_SIZE", value)])
            .unwrap()
            .unwrap();
        assert_eq!(m.min_size(), bytes, "{value}");
    }

    let bad: &[(&str, &str)] = &[
        ("SIDEKICK_CACHE_ENDPOINT", "minio-remote:9000"),
        ("SIDEKICK_CACHE_ENDPOINT", "ftp://minio:21"),
        ("SIDEKICK_CACHE_ENDPOINT", "http://minio:9000/bucket"),
        ("SIDEKICK_CACHE_ACCESS_KEY", ""),
        ("SIDEKICK_CACHE_SECRET_KEY", " "),
        ("SIDEKICK_CACHE_BUCKET", ""),
        ("SIDEKICK_CACHE_BUCKET", "Cache_01"),
        ("SIDEKICK_CACHE_MIN_SIZE", "32XB"),
        ("SIDEKICK_CACHE_MIN_SIZE", "-1"),
        ("SIDEKICK_CACHE_MIN_SIZE", "MiB"),
        ("SIDEKICK_CACHE_MIN_SIZE", "99999999999GiB"),
        ("SIDEKICK_CACHE_HEALTH_DURATION", "0"),
        ("SIDEKICK_CACHE_HEALTH_DURATION", "20s"),
        ("SIDEKICK_CACHE_HEALTH_DURATION", "-5"),
        ("SIDEKICK_CACHE_HEALTH_DURATION", "1.5"),
    ];
    for (name, value) in bad {
        let err = read(&[(name, value)]).expect_err(&format!("{name}={value:?} is rejected"));
        assert!(err.is_config());
        let msg = err.to_string();
        assert!(msg.contains(name), "{name}={value:?}: {msg}");
        assert!(
            !msg.contains("minio123"),
            "the secret is never printed: {msg}"
        );
    }
}

const CHILD_ENV: &str = "SIDEKICK_CACHE_TEST_CHILD";

/// Not a test: the sidecar program, when `SIDEKICK_CACHE_TEST_CHILD` is set (a no-op
/// otherwise).
#[test]
fn child_main() {
    let Ok(site) = std::env::var(CHILD_ENV) else {
        return;
    };
    let code = sidekick::sidecar::run(
        "sidekick",
        ["--address", "127.0.0.1:0", "--quiet", &site].map(String::from),
    );
    std::process::exit(i32::from(code));
}

#[test]
fn the_program_refuses_a_bad_variable_at_start() {
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "http://127.0.0.1:9")
        .env("SIDEKICK_CACHE_ENDPOINT", "http://127.0.0.1:9")
        .env("SIDEKICK_CACHE_ACCESS_KEY", "a")
        .env("SIDEKICK_CACHE_SECRET_KEY", "b")
        .env("SIDEKICK_CACHE_BUCKET", "cache01")
        .env("SIDEKICK_CACHE_MIN_SIZE", "12 parsecs")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the child");
    let pid = child.id();
    let end = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if std::time::Instant::now() >= end {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("child {pid} did not exit");
    }
    let out = child.wait_with_output().expect("child output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("sidekick: <ERROR>") && stderr.contains("SIDEKICK_CACHE_MIN_SIZE"),
        "{stderr}"
    );
}
