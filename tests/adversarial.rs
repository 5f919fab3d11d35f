//! The black-box adversarial suite: the sidecar program as a child process, raw-socket
//! backends that misbehave on purpose, and a raw TCP client that controls every byte.
//!
//! It replays the cases of issue 13 (hung backends, client-body errors that must not eject a
//! backend, mismatched TLS pairs, HTTP framing details, bad arguments) and the framing attacks
//! that were already refused, so that any rewrite of the data path keeps every guarantee. It
//! looks only at what a client, a backend and an operator can see: bytes on the sockets, exit
//! codes, stdout/stderr and `/.prometheus/metrics`.
//!
//! Set `SIDEKICK_BIN=target/release/sidekick` to run it against a built program; by
//! default the child is this test binary calling `sidekick::sidecar::run_os` (see
//! `tests/support/adversary.rs`). Timeouts are shortened by flags so the suite stays quick.
#![cfg(feature = "sidecar")]

mod support;

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::adversary::{
    self as adv, blob_byte, exchange, get, metric, read_reply, Mode, Proc, RawBackend, Reader,
    Sidekick, BLOB_LEN,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Every read of an answer gives up after this long (a hang fails the test, it does not stall
/// the suite).
const WAIT: Duration = Duration::from_secs(20);

/// Not a test: the child's `main` when the suite runs the program in child mode, a no-op
/// otherwise.
#[test]
fn child_main() {
    let Some(args) = adv::child_args() else {
        return;
    };
    let code = sidekick::sidecar::run_os(OsStr::new("sidekick"), args);
    std::process::exit(i32::from(code));
}

/// The flags that pick a data path: the forwarding loop serves plain proxying; `--debug` (whole
/// header maps in traces) makes the hyper path serve. Every data-path case runs on both.
fn with<'a>(path: &[&'a str], flags: &[&'a str]) -> Vec<&'a str> {
    path.iter().chain(flags).copied().collect()
}

/// Run each named case once per data path.
macro_rules! on_both_paths {
    ($($name:ident),* $(,)?) => {
        mod forward_path {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&[]).await
                }
            )*
        }
        mod hyper_path {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&["--debug"]).await
                }
            )*
        }
    };
}

on_both_paths!(
    hung_backend_alone_gives_504_once_per_request,
    hung_backend_is_timed_out_retried_elsewhere_and_ejected,
    stalled_response_body_cuts_the_client,
    stalled_response_body_counts_against_the_backend,
    stalled_request_body_gets_408_and_ejects_nothing,
    client_body_errors_get_400_and_eject_nothing,
    backend_with_both_framings_never_forwards_its_length,
    host_header_rules,
    absolute_form_authority_wins_over_host,
    framing_attacks_are_refused,
    huge_head_gets_431,
    pipelined_requests_are_answered_in_order,
    head_answer_then_get_on_one_connection,
    huge_chunk_size_is_refused_and_ejects_nothing,
    garbage_after_a_204_never_reaches_a_client,
    unread_body_after_a_failure_is_never_a_request,
    slowloris_is_cut,
    aborted_downloads_never_mix_responses,
);

/// A request's bytes with a body.
fn post(target: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r =
        format!("POST {target} HTTP/1.1\r\nHost: sidekick.test\r\n{extra}\r\n").into_bytes();
    r.extend_from_slice(body);
    r
}

async fn ejections(addr: SocketAddr) -> f64 {
    metric(addr, "sidekick_ejections_total", &[]).await
}

// ===== finding 1: a backend that never answers =====

async fn hung_backend_alone_gives_504_once_per_request(path: &[&str]) {
    let silent = RawBackend::start(Mode::Silent).await;
    let sk = Sidekick::start(&with(path, &["--response-timeout", "1s"]), &[silent.url()]).await;

    let r = get(sk.addr, "/bucket/key", WAIT).await;
    assert_eq!(r.status(), 504, "a GET nobody answers: {r:?}");
    assert!(
        r.text().contains("<Code>BackendDown</Code>"),
        "{}",
        r.text()
    );
    assert_eq!(silent.hits(), 1, "nothing else to try: one attempt");

    // Not idempotent: never sent twice.
    let mut s = TcpStream::connect(sk.addr).await.unwrap();
    s.write_all(&post("/bucket/new", "Content-Length: 3\r\n", b"abc"))
        .await
        .unwrap();
    let r = read_reply(&mut Reader::new(s), "POST", WAIT).await;
    assert_eq!(r.status(), 504, "{r:?}");
    assert_eq!(
        silent.hits(),
        2,
        "the POST reached the backend exactly once"
    );
}

async fn hung_backend_is_timed_out_retried_elsewhere_and_ejected(path: &[&str]) {
    let silent = RawBackend::start(Mode::Silent).await;
    let good = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start(
        &with(
            path,
            &["--response-timeout", "2s", "--host-balance", "round-robin"],
        ),
        &[format!("{},{}", silent.url(), good.url())],
    )
    .await;
    sk.wait_up(2).await;
    for i in 0..6 {
        let r = get(sk.addr, &format!("/bucket/k{i}"), WAIT).await;
        assert_eq!(
            r.status(),
            200,
            "GET {i} answered by the good backend: {r:?}"
        );
    }
    assert!(
        silent.hits() >= 1,
        "round robin sent at least one GET to the silent backend"
    );
    assert_eq!(good.hits(), 6, "every GET ended on the good backend");
    let silent_ep = format!("endpoint=\"{}\"", silent.url());
    assert!(
        metric(
            sk.addr,
            "sidekick_ejections_total",
            &[&silent_ep, "reason=\"timeout\""]
        )
        .await
            >= 1.0,
        "the silent backend was ejected for its timeout"
    );
    assert!(
        metric(
            sk.addr,
            "sidekick_retries_total",
            &[&silent_ep, "reason=\"timeout\""]
        )
        .await
            >= 1.0,
        "the timed-out GET was retried"
    );
}

async fn stalled_response_body_cuts_the_client(path: &[&str]) {
    let stall = RawBackend::start(Mode::StallBody).await;
    let sk = Sidekick::start(&with(path, &["--response-timeout", "1s"]), &[stall.url()]).await;
    let r = get(sk.addr, "/bucket/big", WAIT).await;
    assert_eq!(r.status(), 200, "{r:?}");
    assert!(
        !r.complete,
        "the answer was cut, visibly incomplete (not hung, not padded)"
    );
    assert_eq!(r.body, vec![b's'; 10], "the bytes the backend did send");
}

async fn stalled_response_body_counts_against_the_backend(path: &[&str]) {
    let stall = RawBackend::start(Mode::StallBody).await;
    let good = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start(
        &with(
            path,
            &["--response-timeout", "2s", "--host-balance", "round-robin"],
        ),
        &[format!("{},{}", stall.url(), good.url())],
    )
    .await;
    sk.wait_up(2).await;
    // Round robin: one of the first two GETs goes to the stalling backend.
    for i in 0..2 {
        let r = get(sk.addr, &format!("/bucket/s{i}"), WAIT).await;
        if stall.hits() > 0 {
            assert!(!r.complete, "cut, not complete: {r:?}");
            break;
        }
        assert_eq!(r.status(), 200, "{r:?}");
        assert!(r.complete);
    }
    assert_eq!(stall.hits(), 1, "the stalling backend served one GET");
    let ep = format!("endpoint=\"{}\"", stall.url());
    assert!(
        metric(
            sk.addr,
            "sidekick_ejections_total",
            &[&ep, "reason=\"timeout\""]
        )
        .await
            >= 1.0,
        "a body stalled mid-way counts as a timeout against its backend"
    );
}

/// The forwarding loop reads a small answer to an idempotent request whole before it answers
/// (the hyper path, which serves `--debug`, streams it): a backend that dies in the middle of
/// one costs the request a retry on another backend, not a cut answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_dying_mid_answer_is_retried_not_cut() {
    let dying = RawBackend::start(Mode::CloseMidBody).await;
    let good = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start(
        &["--host-balance", "round-robin"],
        &[format!("{},{}", dying.url(), good.url())],
    )
    .await;
    sk.wait_up(2).await;
    for i in 0..4 {
        let r = get(sk.addr, &format!("/bucket/d{i}"), WAIT).await;
        assert_eq!(r.status(), 200, "GET {i}: {r:?}");
        assert!(r.complete, "GET {i} answered whole: {r:?}");
        assert!(
            !r.body.starts_with(b"cccc"),
            "GET {i}: none of the dying backend's bytes reached the client"
        );
    }
    assert!(dying.hits() >= 1, "round robin tried the dying backend");
    assert_eq!(good.hits(), 4, "every GET ended on the good backend");
    let ep = format!("endpoint=\"{}\"", dying.url());
    assert!(
        metric(
            sk.addr,
            "sidekick_retries_total",
            &[&ep, "reason=\"reset\""]
        )
        .await
            >= 1.0,
        "the cut answer counted as a reset and was retried"
    );
    // A request that is not sent twice gets what the backend sent, cut, as it came.
    let cut = RawBackend::start(Mode::CloseMidBody).await;
    let sk = Sidekick::start(&[], &[cut.url()]).await;
    sk.wait_up(1).await;
    let e = exchange(
        sk.addr,
        &post("/bucket/p", "Content-Length: 2\r\n", b"hi"),
        WAIT,
    )
    .await;
    assert!(e.text().starts_with("HTTP/1.1 200"), "{}", e.text());
    assert!(e.text().ends_with(&"c".repeat(10)), "{}", e.text());
}

async fn stalled_request_body_gets_408_and_ejects_nothing(path: &[&str]) {
    let a = RawBackend::start(Mode::Normal).await;
    let b = RawBackend::start(Mode::Normal).await;
    // The client's silence must be told apart from the backend's, even when the backend's
    // bound is the shorter one.
    let sk = Sidekick::start(
        &with(path, &["--response-timeout", "2s", "--body-timeout", "3s"]),
        &[format!("{},{}", a.url(), b.url())],
    )
    .await;
    sk.wait_up(2).await;
    for method in ["PUT", "POST"] {
        let mut s = TcpStream::connect(sk.addr).await.unwrap();
        let head = format!(
            "{method} /bucket/slow HTTP/1.1\r\nHost: sidekick.test\r\nContent-Length: 100\r\n\r\n0123456789"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let r = read_reply(&mut Reader::new(s), method, WAIT).await;
        assert_eq!(r.status(), 408, "{method} with a stalled body: {r:?}");
    }
    assert!(a.hits() + b.hits() <= 2, "at most one backend request each");
    assert_eq!(ejections(sk.addr).await, 0.0, "nobody ejected");
    for i in 0..4 {
        assert_eq!(get(sk.addr, &format!("/k{i}"), WAIT).await.status(), 200);
    }
}

// ===== finding 2: the client's own body errors are the client's =====

async fn client_body_errors_get_400_and_eject_nothing(path: &[&str]) {
    let a = RawBackend::start(Mode::Normal).await;
    let b = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start(
        &with(path, &["--host-balance", "round-robin"]),
        &[format!("{},{}", a.url(), b.url())],
    )
    .await;
    sk.wait_up(2).await;
    let mut sent = 0;
    for i in 0..12 {
        let method = if i % 2 == 0 { "POST" } else { "PUT" };
        // An invalid chunk-size line after a valid chunk.
        let mut req = format!(
            "{method} /bucket/bad{i} HTTP/1.1\r\nHost: sidekick.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(b"5\r\nhello\r\nZZ\r\nworld\r\n0\r\n\r\n");
        let x = exchange(sk.addr, &req, WAIT).await;
        sent += 1;
        assert!(
            x.text().starts_with("HTTP/1.1 400"),
            "bad chunk {i}: {}",
            x.text()
        );
        assert!(x.closed, "the connection is closed after a broken body");
    }
    // A body shorter than its Content-Length, the client half-closing.
    for i in 0..4 {
        let mut s = TcpStream::connect(sk.addr).await.unwrap();
        s.write_all(&post(
            &format!("/bucket/short{i}"),
            "Content-Length: 100\r\n",
            b"0123456789",
        ))
        .await
        .unwrap();
        s.shutdown().await.unwrap();
        let r = read_reply(&mut Reader::new(s), "POST", WAIT).await;
        sent += 1;
        assert!(
            r.status() == 400 || r.head.is_none(),
            "a short body is the client's fault (400 or nothing): {r:?}"
        );
    }
    // The client going away mid-body.
    for i in 0..4 {
        let mut s = TcpStream::connect(sk.addr).await.unwrap();
        s.write_all(&post(
            &format!("/bucket/gone{i}"),
            "Content-Length: 100000\r\n",
            b"x",
        ))
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(s);
        sent += 1;
    }
    assert!(
        a.hits() + b.hits() <= sent,
        "never more than one backend request per client request"
    );
    // Let the last disconnections be noticed before reading the counters.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ejections(sk.addr).await, 0.0, "no backend was ejected");
    assert_eq!(
        metric(sk.addr, "sidekick_endpoint_state", &["state=\"up\""]).await,
        2.0,
        "both backends are still up"
    );
    for i in 0..4 {
        assert_eq!(
            get(sk.addr, &format!("/after{i}"), WAIT).await.status(),
            200
        );
    }
}

// ===== finding 3: a certificate and a key that do not match =====

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "sidekick-adv-{tag}-{}-{}",
            std::process::id(),
            adv::free_port()
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn self_signed() -> (String, String, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    (
        ck.cert.pem(),
        ck.signing_key.serialize_pem(),
        ck.cert.der().to_vec(),
    )
}

/// GET /v1/health over TLS trusting only `root`: the status, or the handshake error.
async fn tls_health(addr: SocketAddr, root: &[u8]) -> Result<u16, String> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(root.to_vec()))
        .map_err(|e| e.to_string())?;
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    tls.write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let r = read_reply(&mut Reader::new(tls), "GET", Duration::from_secs(5)).await;
    Ok(r.status())
}

#[test]
fn mismatched_certificate_and_key_are_refused_at_start() {
    let dir = TempDir::new("start");
    let (cert_a, _, _) = self_signed();
    let (_, key_b, _) = self_signed();
    let cert = dir.file("a.crt", &cert_a);
    let key = dir.file("b.key", &key_b);
    let port = adv::free_port();
    let f = adv::run(
        &adv::os_args(&[
            "--address",
            &format!("127.0.0.1:{port}"),
            "--cert",
            &cert,
            "--key",
            &key,
            "http://127.0.0.1:1",
        ]),
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(f.code, Some(1), "refused at start: {f:?}");
    assert!(f.stderr.contains("does not match"), "{}", f.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_pair_on_sighup_keeps_the_running_one() {
    let backend = RawBackend::start(Mode::Normal).await;
    let dir = TempDir::new("hup");
    let (cert_a, key_a, der_a) = self_signed();
    let (_, key_b, _) = self_signed();
    let cert = dir.file("tls.crt", &cert_a);
    let key = dir.file("tls.key", &key_a);
    let port = adv::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut args = vec![
        "--address".to_string(),
        addr.to_string(),
        "--cert".into(),
        cert,
        "--key".into(),
        key.clone(),
    ];
    args.extend(adv::base_flags());
    args.push(backend.url());
    let args: Vec<OsString> = args.into_iter().map(OsString::from).collect();
    let p = Proc::spawn(adv::command(&args));
    let end = Instant::now() + Duration::from_secs(15);
    while tls_health(addr, &der_a).await != Ok(200) {
        assert!(
            Instant::now() < end,
            "never served TLS: {}{}",
            p.stdout(),
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&key, key_b).unwrap();
    p.signal("HUP");
    let end = Instant::now() + Duration::from_secs(10);
    while !(p.stdout() + &p.stderr()).contains("does not match") {
        assert!(
            Instant::now() < end,
            "the refused pair was not reported: {}{}",
            p.stdout(),
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        (p.stdout() + &p.stderr()).contains("running certificate stays"),
        "{}",
        p.stdout()
    );
    assert_eq!(
        tls_health(addr, &der_a).await,
        Ok(200),
        "the running pair still serves"
    );
}

// ===== finding 5: HTTP details =====

async fn backend_with_both_framings_never_forwards_its_length(path: &[&str]) {
    let both = RawBackend::start(Mode::BothLengths).await;
    let sk = Sidekick::start(&with(path, &[]), &[both.url()]).await;
    let r = get(sk.addr, "/bucket/both", WAIT).await;
    if r.status() == 200 {
        assert!(r.complete, "{r:?}");
        assert_eq!(r.body, vec![b'z'; 20], "the whole chunked body");
        if let Some(cl) = r.head.as_ref().and_then(|h| h.get("content-length")) {
            assert_eq!(cl, "20", "a Content-Length must describe the body sent");
        }
    } else {
        assert_eq!(
            r.status(),
            502,
            "either the decoded body or a refusal: {r:?}"
        );
    }
}

async fn host_header_rules(path: &[&str]) {
    let b = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start(&with(path, &[]), &[b.url()]).await;
    let bad: [&[u8]; 5] = [
        b"GET /two HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        b"GET /none HTTP/1.1\r\nAccept: */*\r\n\r\n",
        b"GET /space HTTP/1.1\r\nHost: a b.example\r\n\r\n",
        b"GET /at HTTP/1.1\r\nHost: user@a.example\r\n\r\n",
        b"GET /slash HTTP/1.1\r\nHost: a.example/x\r\n\r\n",
    ];
    for req in bad {
        let x = exchange(sk.addr, req, WAIT).await;
        assert!(
            x.text().starts_with("HTTP/1.1 400"),
            "{:?}: {}",
            String::from_utf8_lossy(req),
            x.text()
        );
        assert!(x.closed, "closed after 400");
    }
    assert_eq!(b.hits(), 0, "none of them reached the backend");
    // HTTP/1.0 needs no Host.
    let x = exchange(sk.addr, b"GET /old HTTP/1.0\r\n\r\n", WAIT).await;
    let text = x.text();
    assert!(
        text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"),
        "{text}"
    );
    assert_eq!(b.hits(), 1);
}

async fn absolute_form_authority_wins_over_host(path: &[&str]) {
    let b = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start(&with(path, &[]), &[b.url()]).await;
    let x = exchange(
        sk.addr,
        b"GET http://real.example:9000/abs?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(x.text().starts_with("HTTP/1.1 200"), "{}", x.text());
    let seen = b.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].host, "real.example:9000",
        "the target's authority is the Host"
    );
    assert_eq!(seen[0].target, "/abs?q=1", "origin form to the backend");
}

// ===== framing attacks =====

/// A request the sidecar must refuse with 400 and a closed connection, never passing anything
/// to the backend.
const MUST_REFUSE: &[(&str, &[u8])] = &[
    (
        "two different Content-Lengths",
        b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "negative Content-Length",
        b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "Content-Length with junk",
        b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "hexadecimal Content-Length",
        b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "obs-fold",
        b"GET /f HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "NUL in a header value",
        b"GET /f HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "space in a header name",
        b"GET /f HTTP/1.1\r\nHost: x\r\nBad Name: x\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "parenthesis in a header name",
        b"GET /f HTTP/1.1\r\nHost: x\r\nX(y): z\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "chunked not last",
        b"POST /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "unknown transfer coding",
        b"POST /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "Transfer-Encoding on HTTP/1.0",
        b"POST /f HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
];

/// Ambiguous framings RFC 9112 lets a server either refuse (400) or read one way and then
/// close (Transfer-Encoding over Content-Length, §6.1; bare LF, §2.2). Either way the hidden
/// request must never reach the backend.
const REFUSE_OR_CLOSE: &[(&str, &[u8])] = &[
    (
        "Content-Length then Transfer-Encoding",
        b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "Transfer-Encoding then Content-Length",
        b"POST /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "bare LF line endings",
        b"POST /f HTTP/1.1\nHost: x\nContent-Length: 32\n\nGET /smuggled HTTP/1.1\nHost: x\n\n",
    ),
];

async fn framing_attacks_are_refused(path: &[&str]) {
    let b = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start(&with(path, &["--header-timeout", "1s"]), &[b.url()]).await;
    for (name, req) in MUST_REFUSE {
        let before = b.hits();
        let x = exchange(sk.addr, req, WAIT).await;
        assert!(x.text().starts_with("HTTP/1.1 400"), "{name}: {}", x.text());
        assert!(x.closed, "{name}: the connection is closed");
        assert_eq!(x.responses(), 1, "{name}: one answer only: {}", x.text());
        assert_eq!(b.hits(), before, "{name}: nothing reached the backend");
    }
    for (name, req) in REFUSE_OR_CLOSE {
        let before = b.hits();
        let x = exchange(sk.addr, req, WAIT).await;
        let text = x.text();
        assert!(
            text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.1 200"),
            "{name}: {text}"
        );
        assert!(x.closed, "{name}: the connection is closed");
        assert_eq!(x.responses(), 1, "{name}: one answer only: {text}");
        assert!(
            b.hits() <= before + 1,
            "{name}: at most one backend request"
        );
    }
    assert!(
        b.seen().iter().all(|s| !s.target.contains("smuggled")),
        "a hidden request reached the backend: {:?}",
        b.seen()
    );
}

async fn huge_head_gets_431(path: &[&str]) {
    let b = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start(&with(path, &[]), &[b.url()]).await;
    let mut req = b"GET /big HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 200 * 1024));
    req.extend_from_slice(b"\r\n\r\n");
    let x = exchange(sk.addr, &req, WAIT).await;
    assert!(x.text().starts_with("HTTP/1.1 431"), "{}", x.text());
    assert_eq!(b.hits(), 0);
}

async fn slowloris_is_cut(path: &[&str]) {
    let b = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start(&with(path, &["--header-timeout", "1s"]), &[b.url()]).await;
    let mut s = TcpStream::connect(sk.addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut cut = false;
    // 60 drips 200 ms apart: far longer than the header timeout.
    for i in 0..60 {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::io::AsyncReadExt::read(&mut s, &mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            Ok(Ok(_)) => {} // a 408 may come first; the close follows
            Err(_) => {}
        }
        if s.write_all(format!("X-Drip-{i}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "a head dripped byte by byte is cut by --header-timeout"
    );
    assert_eq!(b.hits(), 0);
}

async fn aborted_downloads_never_mix_responses(path: &[&str]) {
    let b = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start(&with(path, &[]), &[b.url()]).await;
    for i in 0..30u64 {
        if i % 3 == 0 {
            // Two full downloads on one keep-alive connection, checked byte for byte.
            let s = TcpStream::connect(sk.addr).await.unwrap();
            let mut r = Reader::new(s);
            for n in [i, i + 1000] {
                r.get_mut()
                    .write_all(format!("GET /blob/{n} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                let reply = read_reply(&mut r, "GET", WAIT).await;
                assert_eq!(reply.status(), 200, "blob {n}");
                assert!(reply.complete, "blob {n} complete");
                assert_eq!(reply.body.len(), BLOB_LEN);
                let wrong =
                    (0..BLOB_LEN as u64).find(|&k| reply.body[k as usize] != blob_byte(n, k));
                assert_eq!(wrong, None, "blob {n}: foreign bytes at this offset");
            }
        } else {
            // Ask, read a little, hang up.
            let mut s = TcpStream::connect(sk.addr).await.unwrap();
            s.write_all(format!("GET /blob/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut buf = [0u8; 4096];
            let _ =
                tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await;
            drop(s);
        }
    }
}

// ===== finding 6: bad arguments =====

const BOUND: Duration = Duration::from_secs(30);

fn usage_error(args: &[OsString], env: &[(&str, &str)], names: &str) {
    let f = adv::run(args, env, BOUND);
    assert_eq!(f.code, Some(2), "{args:?} {env:?}: a usage error: {f:?}");
    assert!(
        f.stderr.contains(names),
        "{args:?} {env:?}: the message names {names:?}: {}",
        f.stderr
    );
}

#[test]
fn non_utf8_argument_is_a_usage_error() {
    let args = vec![
        OsString::from("--address"),
        OsString::from("127.0.0.1:0"),
        OsString::from_vec(b"http://h\xff\xfe:9000".to_vec()),
    ];
    usage_error(&args, &[], "UTF-8");
}

#[test]
fn sidekick_threads_is_validated() {
    let args = adv::os_args(&["--address", "127.0.0.1:0", "http://127.0.0.1:1"]);
    for bad in ["0", "-1", "abc", "100000", "2x"] {
        usage_error(&args, &[("SIDEKICK_THREADS", bad)], "SIDEKICK_THREADS");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidekick_threads_in_range_serves() {
    let b = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start_env(&[], &[b.url()], &[("SIDEKICK_THREADS", "2")]).await;
    assert_eq!(get(sk.addr, "/k", WAIT).await.status(), 200);
}

/// The sidecar's extra event loops (threads named `sidekick-io-N`; the first loop is the main
/// thread) with the CPU time each has run so far, in ns (`/proc/PID/task/*/schedstat`).
fn event_loops(pid: u32) -> Vec<(String, u64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the sidecar's threads");
    let mut loops: Vec<(String, u64)> = tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let name = name.trim();
            let ran = std::fs::read_to_string(dir.join("schedstat")).ok()?;
            let ran = ran.split_whitespace().next()?.parse().ok()?;
            name.starts_with("sidekick-io-")
                .then(|| (name.to_string(), ran))
        })
        .collect();
    loops.sort();
    loops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_per_core_spreads_connections_over_every_loop() {
    let b = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start_env(&[], &[b.url()], &[("SIDEKICK_THREADS", "3")]).await;
    let before = event_loops(sk.proc.pid());
    let names: Vec<&str> = before.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["sidekick-io-1", "sidekick-io-2"],
        "3 loops: main + 2"
    );
    // New connections are spread by the kernel over the loops' listeners (SO_REUSEPORT, by a
    // hash of the address pair): 60 of them leave no loop out but with odds of 3 x (2/3)^60.
    for i in 0..60 {
        assert_eq!(get(sk.addr, &format!("/k{i}"), WAIT).await.status(), 200);
    }
    let after = event_loops(sk.proc.pid());
    for ((name, t0), (_, t1)) in before.iter().zip(&after) {
        // An idle loop sleeps in epoll_wait and runs not at all; one that served ran.
        assert!(
            t1 > t0,
            "{name} served none of 60 connections ({t0} -> {t1} ns)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_one_event_loop_per_usable_cpu() {
    let b = RawBackend::start(Mode::Normal).await;
    // Empty is unset (and overrides any value this test process inherited).
    let sk = Sidekick::start_env(&[], &[b.url()], &[("SIDEKICK_THREADS", "")]).await;
    // The child inherits this process's affinity and cgroup, so it counts the same CPUs.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(event_loops(sk.proc.pid()).len(), cpus - 1, "{cpus} CPUs");
    assert_eq!(get(sk.addr, "/k", WAIT).await.status(), 200);
}

#[test]
fn bad_flag_values_are_usage_errors() {
    let site = "http://127.0.0.1:1";
    let cases: [(&[&str], &str); 5] = [
        (&["--health-path", "/a b", site], "health-path"),
        (&["--health-path", "/a\r\nb", site], "health-path"),
        (&["--read-health-path", "/x\ty", site], "read-health-path"),
        (&["--trace", "bogus", site], "trace"),
        (&["--response-timeout", "5", site], "response-timeout"),
    ];
    for (args, name) in cases {
        usage_error(&adv::os_args(args), &[], name);
    }
}

#[test]
fn site_errors_and_missing_site_exit_2() {
    let f = adv::run(&adv::os_args(&["--address", "127.0.0.1:0"]), &[], BOUND);
    assert_eq!(f.code, Some(2), "no SITE: {f:?}");
    assert!(f.stdout.contains("USAGE:"), "the help is printed");
    for bad in [
        "ftp://x",
        "http://h{1...}:9000",
        "http://a:1,,http://b:1",
        "",
    ] {
        usage_error(
            &adv::os_args(&["--address", "127.0.0.1:0", bad]),
            &[],
            "SITE",
        );
    }
    // Go's flag package stops at the first SITE: a later flag is named, not taken for a SITE.
    usage_error(
        &adv::os_args(&["--address", "127.0.0.1:0", "http://127.0.0.1:1", "--log"]),
        &[],
        "--log",
    );
}

#[test]
fn cert_from_an_endless_file_fails_fast() {
    let f = adv::run(
        &adv::os_args(&[
            "--address",
            "127.0.0.1:0",
            "--cert",
            "/dev/zero",
            "--key",
            "/dev/zero",
            "http://127.0.0.1:1",
        ]),
        &[],
        BOUND,
    );
    assert_eq!(f.code, Some(1), "{f:?}");
    assert!(f.stderr.contains("/dev/zero"), "{}", f.stderr);
    assert!(f.stderr.contains("larger than"), "{}", f.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_zero_announces_the_port_bound() {
    let b = RawBackend::start(Mode::Normal).await;
    let mut args = vec!["--address".to_string(), "127.0.0.1:0".to_string()];
    args.extend(["--health-path", adv::HEALTH, "--trace", ""].map(String::from));
    args.push(b.url());
    let args: Vec<OsString> = args.into_iter().map(OsString::from).collect();
    let p = Proc::spawn(adv::command(&args));
    let end = Instant::now() + Duration::from_secs(15);
    let port: u16 = loop {
        let out = p.stdout();
        if let Some(rest) = out.split("listening on '127.0.0.1:").nth(1) {
            if let Some((port, _)) = rest.split_once('\'') {
                break port.parse().expect("a port number");
            }
        }
        assert!(Instant::now() < end, "no banner: {out}{}", p.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(port, 0, "the port actually bound is announced");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let r = get(addr, "/.prometheus/metrics", WAIT).await;
    assert_eq!(r.status(), 200, "it serves on the announced port");
}

// ===== message boundaries =====

async fn pipelined_requests_are_answered_in_order(path: &[&str]) {
    let b = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start(&with(path, &[]), &[b.url()]).await;
    let mut s = TcpStream::connect(sk.addr).await.unwrap();
    let mut all = b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    all.extend_from_slice(&post("/p2", "Content-Length: 5\r\n", b"hello"));
    all.extend_from_slice(b"GET /p3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(&all).await.unwrap();
    let mut r = Reader::new(s);
    for (method, target) in [("GET", "/p1"), ("POST", "/p2"), ("GET", "/p3")] {
        let reply = read_reply(&mut r, method, WAIT).await;
        assert_eq!(reply.status(), 200, "{target}: {reply:?}");
        assert_eq!(
            reply.text(),
            format!("ok {target}"),
            "answers in request order"
        );
    }
    let seen: Vec<String> = b.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(seen, ["/p1", "/p2", "/p3"], "one backend request each");
    assert_eq!(
        b.seen()[1].body,
        5,
        "the pipelined body went with its request"
    );
}

async fn head_answer_then_get_on_one_connection(path: &[&str]) {
    let b = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start(&with(path, &[]), &[b.url()]).await;
    let s = TcpStream::connect(sk.addr).await.unwrap();
    let mut r = Reader::new(s);
    for round in 0..3 {
        r.get_mut()
            .write_all(b"HEAD /blob/7 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let head = read_reply(&mut r, "HEAD", WAIT).await;
        assert_eq!(head.status(), 200, "round {round}: {head:?}");
        assert_eq!(
            head.head.as_ref().and_then(|h| h.get("content-length")),
            Some(BLOB_LEN.to_string().as_str()),
            "a HEAD answer keeps the length of what a GET would get"
        );
        r.get_mut()
            .write_all(format!("GET /g{round} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let get = read_reply(&mut r, "GET", WAIT).await;
        assert_eq!(
            get.text(),
            format!("ok /g{round}"),
            "no body bytes after a HEAD answer"
        );
    }
}

async fn huge_chunk_size_is_refused_and_ejects_nothing(path: &[&str]) {
    let a = RawBackend::start(Mode::Normal).await;
    let b = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start(&with(path, &[]), &[format!("{},{}", a.url(), b.url())]).await;
    sk.wait_up(2).await;
    for size in ["FFFFFFFFFFFFFFFFFFFF", "-1", "1 2", "0x10"] {
        let req = post(
            "/bucket/chunks",
            "Transfer-Encoding: chunked\r\n",
            format!("{size}\r\nhello\r\n0\r\n\r\n").as_bytes(),
        );
        let x = exchange(sk.addr, &req, WAIT).await;
        let text = x.text();
        assert!(
            text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.1 413"),
            "chunk size {size:?}: {text}"
        );
        assert!(x.closed, "chunk size {size:?}: closed");
    }
    assert!(a.hits() + b.hits() <= 4, "at most one backend request each");
    assert_eq!(ejections(sk.addr).await, 0.0, "nobody ejected");
}

async fn garbage_after_a_204_never_reaches_a_client(path: &[&str]) {
    let b = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start(&with(path, &[]), &[b.url()]).await;
    let r = get(sk.addr, "/bogus204", WAIT).await;
    assert_eq!(r.status(), 204, "{r:?}");
    assert!(r.body.is_empty());
    for i in 0..4 {
        let r = get(sk.addr, &format!("/after{i}"), WAIT).await;
        assert!(
            !r.text().contains("hello"),
            "stray bytes of another answer reached a client: {r:?}"
        );
        assert!(r.status() == 200 || r.status() == 502, "{r:?}");
        if r.status() == 200 {
            assert_eq!(r.text(), format!("ok /after{i}"));
        }
    }
}

/// A request refused before its body was read (no backend could take it) closes the
/// connection: the body bytes that arrive afterwards are never read as the next request.
async fn unread_body_after_a_failure_is_never_a_request(path: &[&str]) {
    let b = RawBackend::start(Mode::Normal).await;
    let sk = Sidekick::start(&with(path, &[]), &[b.url()]).await;
    drop(b);
    // Wait (bounded) until the probes see it down: then no attempt is made at all.
    for _ in 0..100 {
        if get(sk.addr, "/v1/health", WAIT).await.status() == 502 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let head = format!(
        "PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        smuggled.len()
    );
    let mut s = TcpStream::connect(sk.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut r = Reader::new(s);
    let mut answer = tokio::time::timeout(WAIT, r.head())
        .await
        .expect("an answer in time")
        .expect("an answer");
    // The body the refusal did not read, which looks like a request of its own. (A path that
    // asks for the body first, with 100 Continue, reads it as the body: also no desync.)
    let _ = r.get_mut().write_all(smuggled).await;
    if answer.status() == 100 {
        answer = tokio::time::timeout(WAIT, r.head())
            .await
            .expect("an answer in time")
            .expect("an answer");
    }
    let status = answer.status();
    assert!(
        status == 502 || status == 504,
        "no backend: a BackendDown answer, got {status}"
    );
    if let Some(n) = answer
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let _ = tokio::time::timeout(WAIT, r.exact(n)).await;
    }
    let rest = tokio::time::timeout(WAIT, r.rest())
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&rest);
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        0,
        "nothing answers the unread body: {text}"
    );
}
