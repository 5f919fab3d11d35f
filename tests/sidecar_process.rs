//! The sidecar program as a child process: exit codes and messages, SIGTERM with a request in
//! flight, SIGHUP, and 1 GiB up and down with the child's memory bounded.
//!
//! The child is this test binary run again with `SIDEKICK_CHILD_ARGS` set: its `child_main`
//! test then runs `sidekick::sidecar::run`, exactly what the `sidekick` binary's `main` calls,
//! and exits with its status. (`tests/kubernetes.rs` runs the `sidekick` binary itself.)
#![cfg(feature = "sidecar")]

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use support::sidecar::{self as sc, Proc, StreamBackend};

const CHILD_ARGS: &str = "SIDEKICK_CHILD_ARGS";

/// Not a test: the child's `main` when `SIDEKICK_CHILD_ARGS` is set (arguments separated by
/// U+001F), a no-op otherwise.
#[test]
fn child_main() {
    let Ok(args) = std::env::var(CHILD_ARGS) else {
        return;
    };
    let args: Vec<String> = args
        .split('\u{1f}')
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect();
    let code = sidekick::sidecar::run("sidekick", args);
    std::process::exit(i32::from(code));
}

/// A command running the sidecar program with `args`.
fn command(args: &[String]) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("test binary"));
    c.args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
        .env(CHILD_ARGS, args.join("\u{1f}"));
    c
}

async fn spawn(args: &[String]) -> (Proc, SocketAddr) {
    let port = sc::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut all = vec!["--address".to_string(), addr.to_string()];
    all.extend(args.iter().cloned());
    let child = command(&all)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the sidecar");
    let p = Proc(child);
    assert!(
        sc::wait_listening(addr, Duration::from_secs(10)).await,
        "the child never listened on {addr}"
    );
    // Ready: /v1/health answers 200.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let text = sc::raw(
            addr,
            b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        if text.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < end, "never healthy: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (p, addr)
}

fn output(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    command(&args).output().expect("run the sidecar")
}

#[test]
fn exit_codes_and_messages() {
    let o = output(&["--health-duration", "5", "http://127.0.0.1:9000"]);
    assert_eq!(o.status.code(), Some(2), "a usage error exits 2");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Incorrect Usage.")
            && err.contains("-health-duration")
            && err.contains("\"5\""),
        "{err}"
    );
    let o = output(&["--bogus", "http://127.0.0.1:9000"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("-bogus"));
    let o = output(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains(" version "));
    let o = output(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("USAGE:"));
    let o = output(&[]);
    assert_eq!(o.status.code(), Some(2), "no SITE: help and exit 2 (usage)");
    assert!(String::from_utf8_lossy(&o.stdout).contains("USAGE:"));
    let o = output(&["--address", "127.0.0.1:1", "ftp://x"]);
    assert_eq!(o.status.code(), Some(2), "a bad SITE is a usage error");
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid SITE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish() {
    let b = StreamBackend::start().await;
    let (mut p, addr) = spawn(&sc::flags(&["--drain-timeout", "5s"], &[b.url()])).await;
    let slow = tokio::spawn(async move {
        sc::raw(
            addr,
            b"GET /slow/1500 HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(10),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sc::signal(p.pid(), "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No new connection is accepted while draining.
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after SIGTERM"
    );
    let text = slow.await.unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the request in flight finished: {text}"
    );
    assert!(text.ends_with("done"), "{text}");
    let status = tokio::task::spawn_blocking(move || {
        let s = p.wait(Duration::from_secs(10));
        (s, p)
    })
    .await
    .unwrap();
    let (status, mut p) = status;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit 0 after draining"
    );
    let mut out = String::new();
    use std::io::Read;
    p.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(out.contains("caught signal 'terminated'"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_an_idle_keep_alive_connection_at_once() {
    // An idle client connection waits for its next request head for up to --header-timeout;
    // a drain must end that wait at once, not when it times out (nor at --drain-timeout).
    let b = StreamBackend::start().await;
    let (p, addr) = spawn(&sc::flags(
        &["--drain-timeout", "30s", "--header-timeout", "30s"],
        &[b.url()],
    ))
    .await;
    let idle = tokio::spawn(async move {
        // One answered request, then the connection stays open (HTTP/1.1 keep-alive) until the
        // sidecar closes it; at most 60 s.
        let text = sc::raw(
            addr,
            b"GET /slow/0 HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(60),
        )
        .await;
        (text, std::time::Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !idle.is_finished(),
        "the connection is kept open while idle"
    );
    let signalled = std::time::Instant::now();
    sc::signal(p.pid(), "TERM");
    let (text, closed) = idle.await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("done"), "{text}");
    let after = closed.duration_since(signalled);
    assert!(
        after < Duration::from_secs(10),
        "the idle connection was closed {after:?} after SIGTERM, not at once"
    );
    let status = tokio::task::spawn_blocking(move || {
        let mut p = p;
        p.wait(Duration::from_secs(20))
    })
    .await
    .unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit 0 after draining"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rebuilds_without_dropping_requests() {
    let b = StreamBackend::start().await;
    let (p, addr) = spawn(&sc::flags(&[], &[b.url()])).await;
    let client = sc::client::<Empty<Bytes>>();
    let get = |path: &'static str| get_from(&client, addr, path);
    for _ in 0..5 {
        assert_eq!(get("/obj").await.0, 200);
    }
    let metrics = String::from_utf8(get("/.prometheus/metrics").await.1.to_vec()).unwrap();
    let line = format!("sidekick_requests_total{{endpoint=\"{}\"}} 5", b.url());
    assert!(metrics.contains(&line), "{metrics}");
    sc::signal(p.pid(), "HUP");
    // Requests keep succeeding through the reload; the statistics start again.
    let end = Instant::now() + Duration::from_secs(5);
    let mut reset = false;
    while Instant::now() < end {
        assert_eq!(get("/obj").await.0, 200);
        let m = String::from_utf8(get("/.prometheus/metrics").await.1.to_vec()).unwrap();
        let n: u64 = m
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "sidekick_requests_total{{endpoint=\"{}\"}} ",
                    b.url()
                ))
            })
            .and_then(|v| v.parse().ok())
            .unwrap();
        if n < 5 {
            reset = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reset, "SIGHUP rebuilt the balancer (statistics reset)");
    drop(p);
}

/// GET `path` from the sidecar at `addr`: the status and the whole body.
async fn get_from(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Empty<Bytes>,
    >,
    addr: SocketAddr,
    path: &str,
) -> (http::StatusCode, Bytes) {
    let resp = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// The `sidekick_requests_total` of `url` in the metrics text, if listed.
fn requests_total(metrics: &str, url: &str) -> Option<u64> {
    let prefix = format!("sidekick_requests_total{{endpoint=\"{url}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

/// Whether the metrics text says `url` is up.
fn is_up(metrics: &str, url: &str) -> bool {
    metrics.lines().any(|l| {
        l.starts_with(&format!("sidekick_endpoint_state{{endpoint=\"{url}\","))
            && l.contains("state=\"up\"} 1")
    })
}

/// `--sites-file`: SIGHUP reads the file again and applies it in place. The backend that stays
/// keeps its statistics (not rebuilt), the removed one gets no request after the change, the
/// added one takes requests once probed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_changed_sites_file_in_place() {
    let keep = support::Backend::start("keep", support::Behavior::Ok).await;
    let gone = support::Backend::start("gone", support::Behavior::Ok).await;
    let new = support::Backend::start("new", support::Behavior::Ok).await;
    let dir = std::env::temp_dir().join(format!("sidekick-sites-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sites");
    std::fs::write(
        &file,
        format!("# the cluster\n{},{}\n", keep.url(), gone.url()),
    )
    .unwrap();
    let path = file.to_str().unwrap().to_string();
    let (p, addr) = spawn(&sc::flags(&["--sites-file", &path], &[])).await;
    let client = sc::client::<Empty<Bytes>>();
    let get = |path: &'static str| get_from(&client, addr, path);
    // Both up (the sidecar serves once one is), and `keep` has served: its statistics count.
    let end = Instant::now() + Duration::from_secs(10);
    let mut sent = 0;
    loop {
        let m = String::from_utf8(get("/.prometheus/metrics").await.1.to_vec()).unwrap();
        if keep.hits() > 0 && is_up(&m, &keep.url()) && is_up(&m, &gone.url()) {
            break;
        }
        assert!(Instant::now() < end, "never both up and served: {m}");
        assert_eq!(get("/obj").await.0, 200);
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(keep.hits() + gone.hits(), sent);
    let metrics = String::from_utf8(get("/.prometheus/metrics").await.1.to_vec()).unwrap();
    let kept_before = requests_total(&metrics, &keep.url()).expect("listed");
    assert_eq!(kept_before, keep.hits(), "{metrics}");

    // The ConfigMap changed: `gone` left, `new` joined.
    std::fs::write(&file, format!("{},{}\n", keep.url(), new.url())).unwrap();
    sc::signal(p.pid(), "HUP");
    // Bounded: until `new` took a request (it is probed first), at most 10 s.
    let end = Instant::now() + Duration::from_secs(10);
    let gone_at_change = loop {
        let (status, body) = get("/obj").await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let m = String::from_utf8(get("/.prometheus/metrics").await.1.to_vec()).unwrap();
        if new.hits() > 0 {
            break gone.hits();
        }
        assert!(
            Instant::now() < end,
            "the added backend never took a request: {m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for _ in 0..50 {
        assert_eq!(get("/obj").await.0, 200);
    }
    assert_eq!(
        gone.hits(),
        gone_at_change,
        "the removed backend got requests"
    );
    let metrics = String::from_utf8(get("/.prometheus/metrics").await.1.to_vec()).unwrap();
    let kept_after = requests_total(&metrics, &keep.url()).expect("listed");
    assert!(
        kept_after >= kept_before,
        "the backend that stayed kept its statistics ({kept_before} then {kept_after})"
    );
    assert_eq!(kept_after, keep.hits(), "{metrics}");

    // A file that no longer parses changes nothing: the running list stays.
    std::fs::write(&file, "http://bad{\n").unwrap();
    sc::signal(p.pid(), "HUP");
    let before = (keep.hits(), new.hits());
    for _ in 0..20 {
        assert_eq!(get("/obj").await.0, 200);
    }
    assert_eq!(keep.hits() + new.hits(), before.0 + before.1 + 20);
    assert_eq!(gone.hits(), gone_at_change);
    drop(p);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_up_and_down_with_bounded_memory() {
    const GIB: u64 = 1 << 30;
    let b = StreamBackend::start().await;
    let (p, addr) = spawn(&sc::flags(&[], &[b.url()])).await;
    let started = Instant::now();
    let down = sc::client::<Empty<Bytes>>();
    let resp = down
        .get(format!("http://{addr}/big/{GIB}").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sc::drain_pattern(resp.into_body()).await.unwrap(), GIB);
    let up = sc::client::<sc::PatternBody>();
    let req = Request::put(format!("http://{addr}/sink"))
        .body(sc::PatternBody::new(GIB))
        .unwrap();
    let resp = up.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        GIB.to_string()
    );
    let rss = sc::peak_rss_kib(p.pid()).expect("VmHWM of the child");
    eprintln!(
        "1 GiB down + 1 GiB up in {:?}; sidecar peak RSS {} KiB",
        started.elapsed(),
        rss
    );
    assert!(
        rss < 64 * 1024,
        "the sidecar's peak RSS is {rss} KiB: bodies must stream, not buffer"
    );
    drop(p);
}
