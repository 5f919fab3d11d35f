//! Fixtures for the sidecar's tests: an in-process sidecar with a captured console, a backend
//! that streams large bodies, echoes upgrades and sends trailers, raw HTTP/1.1 over TCP, and
//! the example binary as a child process.
#![cfg(feature = "sidecar")]
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sidekick::sidecar::{parse_args, Command, Console, ConsoleOpts, Sidecar};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// What the console printed, shared with the test.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Start a sidecar in-process with these flags (an `--address 127.0.0.1:0` is added first),
/// its console captured in lines mode. Waits until it is ready (or 5 s).
pub async fn start(args: &[String]) -> (Sidecar, Capture) {
    let mut all = vec!["--address".to_string(), "127.0.0.1:0".to_string()];
    all.extend(args.iter().cloned());
    let cfg = match parse_args(all) {
        Ok(Command::Run(c)) => *c,
        other => panic!("bad test flags {args:?}: {other:?}"),
    };
    let capture = Capture::default();
    let console = Arc::new(Console::new(
        ConsoleOpts::from_config(&cfg, false),
        Box::new(capture.clone()),
    ));
    let sidecar = Sidecar::start(cfg, Some(console))
        .await
        .unwrap_or_else(|e| panic!("sidecar did not start: {e}"));
    let _ = sidecar.balancer().ready(Duration::from_secs(5)).await;
    (sidecar, capture)
}

/// Flags shared by most tests: fast probes on `/health`, quiet console.
pub fn flags(extra: &[&str], sites: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--health-path",
        "/health",
        "--health-duration",
        "200ms",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v.extend(sites.iter().cloned());
    v
}

/// Wait until every endpoint of the sidecar is up (at most 5 s).
pub async fn all_up(sidecar: &Sidecar) {
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < end {
        if sidecar
            .balancer()
            .endpoints()
            .iter()
            .all(|e| e.state == sidekick::EndpointState::Up)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "not every endpoint came up: {:?}",
        sidecar.balancer().endpoints()
    );
}

/// A pooled HTTP/1.1 client for talking to the sidecar.
pub fn client<B>(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Send raw bytes and read the whole answer until the server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte at position `i` of a streamed body (a pattern that catches reordering).
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

const CHUNK: usize = 64 * 1024;

/// 64 KiB + 251 pattern bytes: any chunk of the pattern is a slice of it.
fn pattern_table() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..(CHUNK + 251) as u64).map(pattern).collect())
}

/// The pattern bytes from offset `at`, `n` of them (n ≤ 64 KiB).
pub fn pattern_slice(at: u64, n: usize) -> &'static [u8] {
    let start = (at % 251) as usize;
    &pattern_table()[start..start + n]
}

/// A streamed body of `len` pattern bytes in 64 KiB chunks, generated on the fly.
pub struct PatternBody {
    sent: u64,
    len: u64,
}

impl PatternBody {
    pub fn new(len: u64) -> PatternBody {
        PatternBody { sent: 0, len }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.sent >= this.len {
            return Poll::Ready(None);
        }
        let n = (this.len - this.sent).min(CHUNK as u64) as usize;
        let chunk = Bytes::from_static(pattern_slice(this.sent, n));
        this.sent += n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.sent)
    }
}

/// Read a body to its end, checking it is the pattern; returns its length.
pub async fn drain_pattern<B>(mut body: B) -> Result<u64, String>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        let f = f.map_err(|e| e.to_string())?;
        if let Some(d) = f.data_ref() {
            for piece in d.chunks(CHUNK) {
                if piece != pattern_slice(n, piece.len()) {
                    return Err(format!("the bytes from {n} are not the pattern"));
                }
                n += piece.len() as u64;
            }
        }
    }
    Ok(n)
}

type Resp = Response<http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>>;

fn full(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(http_body_util::Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    r
}

/// A backend for the streaming, upgrade, trailer and slow-request tests.
///
/// - `GET /health` → 200;
/// - `GET /big/<n>` → `n` pattern bytes, streamed;
/// - `PUT /sink` → reads the body (checking the pattern), answers `<length>`;
/// - `GET /headers` → the request head as text (`name: value` lines), and hop-by-hop and
///   `Server` headers of its own;
/// - `GET /trailers` → chunked `hello` with trailer `x-checksum: abc`;
/// - `POST /trailers` → answers the request's `x-req-trailer` trailer;
/// - `GET /slow/<ms>` → waits, then `done`;
/// - an `Upgrade` request → `101`, then echoes every byte back.
pub struct StreamBackend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StreamBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StreamBackend {
    pub async fn start() -> StreamBackend {
        Self::try_start_at(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("bind")
    }

    /// The same backend on a given loopback address (an error when it is taken).
    pub async fn try_start_at(at: SocketAddr) -> std::io::Result<StreamBackend> {
        let l = TcpListener::bind(at).await?;
        let addr = l.local_addr()?;
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    r = l.accept() => {
                        let Ok((s, _)) = r else { continue };
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(answer);
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(s), svc)
                                .with_upgrades()
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(StreamBackend { addr, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

struct TrailerBody {
    state: u8,
}

impl Body for TrailerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        this.state += 1;
        Poll::Ready(match this.state {
            1 => Some(Ok(Frame::data(Bytes::from_static(b"hello")))),
            2 => {
                let mut t = HeaderMap::new();
                t.insert("x-checksum", "abc".parse().unwrap());
                Some(Ok(Frame::trailers(t)))
            }
            _ => None,
        })
    }
}

async fn answer(mut req: Request<Incoming>) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_string();
    if req.headers().contains_key(http::header::UPGRADE) {
        let proto = req.headers()[http::header::UPGRADE].clone();
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 4096];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let mut r = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
        r.headers_mut().insert(http::header::UPGRADE, proto);
        r.headers_mut()
            .insert(http::header::CONNECTION, "Upgrade".parse().unwrap());
        r.headers_mut().insert(
            "sec-websocket-accept",
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".parse().unwrap(),
        );
        return Ok(r);
    }
    if path == "/health" {
        return Ok(full(StatusCode::OK, "ok"));
    }
    if let Some(n) = path.strip_prefix("/big/") {
        let n: u64 = n.parse().unwrap_or(0);
        let mut r = Response::new(PatternBody::new(n).boxed_unsync());
        r.headers_mut()
            .insert(http::header::CONTENT_LENGTH, n.into());
        return Ok(r);
    }
    if path == "/sink" {
        return Ok(match drain_pattern(req.into_body()).await {
            Ok(n) => full(StatusCode::OK, n.to_string()),
            Err(e) => full(StatusCode::BAD_REQUEST, e),
        });
    }
    if path == "/headers" {
        let mut text = format!("{} {}\n", req.method(), req.uri());
        for (k, v) in req.headers() {
            text.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
        }
        let mut r = full(StatusCode::OK, text);
        let h = r.headers_mut();
        h.insert("server", "backend".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-authenticate", "Basic".parse().unwrap());
        h.insert("x-proxy", "from-backend".parse().unwrap());
        return Ok(r);
    }
    if path == "/trailers" && req.method() == http::Method::GET {
        let mut r = Response::new(TrailerBody { state: 0 }.boxed_unsync());
        r.headers_mut()
            .insert(http::header::TRAILER, "x-checksum".parse().unwrap());
        return Ok(r);
    }
    if path == "/trailers" {
        let collected = req.into_body().collect().await;
        let value = collected
            .ok()
            .and_then(|c| c.trailers().and_then(|t| t.get("x-req-trailer").cloned()))
            .map(|v| v.to_str().unwrap_or("?").to_string())
            .unwrap_or_else(|| "none".to_string());
        return Ok(full(StatusCode::OK, format!("trailer={value}")));
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        return Ok(full(StatusCode::OK, "done"));
    }
    Ok(full(StatusCode::OK, "ok"))
}

// ===== the example binary as a child process =====

/// A program run as a child process, stopped (killed) by its PID when dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Wait for the exit status, at most `d`.
    pub fn wait(&mut self, d: Duration) -> Option<std::process::ExitStatus> {
        let end = std::time::Instant::now() + d;
        while std::time::Instant::now() < end {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Everything it wrote to its piped stdout and stderr (read to the end: call it after it
    /// exited).
    pub fn output(&mut self) -> (String, String) {
        use std::io::Read;
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = self.0.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = self.0.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        (out, err)
    }
}

/// The child's peak resident set (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Send a signal to a child by PID.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid} failed");
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Wait until `addr` accepts connections (at most `wait`).
pub async fn wait_listening(addr: SocketAddr, wait: Duration) -> bool {
    let end = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < end {
        if TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
