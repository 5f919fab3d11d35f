//! Fixtures for the black-box adversarial suite (`tests/adversarial.rs`): raw-socket backends
//! whose misbehaviour is chosen byte for byte, the sidecar program as a child process stopped
//! by PID, and a raw HTTP/1.1 client that reads exactly what comes back.
//!
//! Nothing here looks inside the sidecar: it is driven through its command line, its socket,
//! its stdout/stderr and `/.prometheus/metrics`, so the suite holds whichever data path serves.
//!
//! The child is the program of `SIDEKICK_BIN` when that variable names one (for example
//! `target/release/sidekick`), otherwise the test binary run again in child mode (its
//! `child_main` test calls `sidekick::sidecar::run_os`, exactly what the `sidekick` binary's
//! `main` calls), so a single `cargo test --test adversarial` never runs a stale binary.
#![cfg(feature = "sidecar")]
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The environment variable naming a sidecar program to test instead of the child mode.
pub const BIN_VAR: &str = "SIDEKICK_BIN";
/// The environment variable carrying the child's arguments (separated by the byte 0x1f).
pub const CHILD_VAR: &str = "SIDEKICK_ADVERSARY_ARGS";
/// The probe path every backend here answers `200` on.
pub const HEALTH: &str = "/health";
/// Longest request or response head read here.
const MAX_HEAD: usize = 256 * 1024;
/// Size of a `/blob/N` answer.
pub const BLOB_LEN: usize = 256 * 1024;

// ===== raw backends =====

/// How a [`RawBackend`] answers requests other than its health probes (which always get `200`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `200` with `x-seen-host` (the Host it got) and `x-seen-body` (the body length it read);
    /// `/blob/N` gets [`BLOB_LEN`] bytes of [`blob_byte`]`(N, i)`; `/bogus204` gets a `204`
    /// followed by the stray bytes `hello`.
    Normal,
    /// Reads the request, never answers, holds the connection.
    Silent,
    /// Answers with both `Content-Length: 5` and a chunked body of 20 bytes.
    BothLengths,
    /// Sends a head announcing 1 MiB (more than the sidecar reads whole before answering), 10
    /// bytes of it, then nothing (connection held).
    StallBody,
    /// Sends a head announcing 100 bytes, 10 of them, then closes the connection.
    CloseMidBody,
}

/// Byte `i` of `/blob/n`: a pattern that differs between blobs and catches reordering.
pub fn blob_byte(n: u64, i: u64) -> u8 {
    ((i * 7 + n * 13) % 251) as u8
}

/// One request as a backend saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Request target as sent on the request line.
    pub target: String,
    /// The `Host` header ("" when absent; values joined by `,` when repeated).
    pub host: String,
    /// Body bytes read.
    pub body: usize,
}

/// A backend on 127.0.0.1 speaking HTTP/1.1 over raw sockets. Dropping it stops every task.
pub struct RawBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    probes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawBackend {
    /// Start one in `mode`.
    pub async fn start(mode: Mode) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let probes = Arc::new(AtomicUsize::new(0));
        let (s, p) = (seen.clone(), probes.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, p) = (s.clone(), p.clone());
                conns.spawn(serve(stream, mode, s, p));
                // Reap finished connections so the set stays small.
                while conns.try_join_next().is_some() {}
            }
        });
        RawBackend {
            addr,
            seen,
            probes,
            task,
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests other than health probes seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// How many requests other than health probes it got.
    pub fn hits(&self) -> usize {
        self.seen.lock().expect("seen").len()
    }

    /// How many health probes it answered.
    pub fn probes(&self) -> usize {
        self.probes.load(Ordering::Relaxed)
    }
}

/// A parsed head: start line and headers (names in lower case).
#[derive(Clone, Debug, Default)]
pub struct Head {
    /// The first line.
    pub line: String,
    /// The header lines, names in lower case, in order.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// Every value of header `name` (lower case).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of header `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// The status code of a response head (0 when unreadable).
    pub fn status(&self) -> u16 {
        self.line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn chunked(&self) -> bool {
        self.all("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Option<usize> {
        self.get("content-length")
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Bytes read from a stream, with what is left over after a head or body.
pub struct Reader<R> {
    io: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Wrap `io`.
    pub fn new(io: R) -> Self {
        Reader {
            io,
            buf: Vec::new(),
        }
    }

    /// The stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.io
    }

    /// Read more; false at end of stream or error.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.io.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Read a head (up to the blank line); `None` at end of stream or when it is too large.
    pub async fn head(&mut self) -> Option<Head> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                let mut lines = text.split("\r\n");
                let line = lines.next().unwrap_or_default().to_string();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                return Some(Head { line, headers });
            }
            if self.buf.len() > MAX_HEAD || !self.fill().await {
                return None;
            }
        }
    }

    /// Exactly `n` bytes; `Err(partial)` when the stream ends first.
    pub async fn exact(&mut self, n: usize) -> Result<Vec<u8>, Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return Err(std::mem::take(&mut self.buf));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Some(l);
            }
            if self.buf.len() > MAX_HEAD || !self.fill().await {
                return None;
            }
        }
    }

    /// A chunked body, decoded; `Err(partial)` when it is cut or malformed.
    pub async fn chunked(&mut self) -> Result<Vec<u8>, Vec<u8>> {
        let mut out = Vec::new();
        // Bounded: every round consumes a chunk of at least one byte, or ends.
        for _ in 0..1_000_000 {
            let Some(size_line) = self.line().await else {
                return Err(out);
            };
            let size = size_line.split(';').next().unwrap_or_default().trim();
            let Ok(size) = usize::from_str_radix(size, 16) else {
                return Err(out);
            };
            if size == 0 {
                // Trailers, up to the blank line.
                for _ in 0..1000 {
                    match self.line().await {
                        Some(l) if l.is_empty() => return Ok(out),
                        Some(_) => {}
                        None => return Err(out),
                    }
                }
                return Err(out);
            }
            match self.exact(size + 2).await {
                Ok(mut data) => {
                    data.truncate(size);
                    out.extend_from_slice(&data);
                }
                Err(partial) => {
                    out.extend_from_slice(&partial);
                    return Err(out);
                }
            }
        }
        Err(out)
    }

    /// Whatever arrives until the end of the stream.
    pub async fn rest(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One backend connection: requests read and answered in turn (at most 10,000).
async fn serve(
    stream: TcpStream,
    mode: Mode,
    seen: Arc<Mutex<Vec<Seen>>>,
    probes: Arc<AtomicUsize>,
) {
    let mut r = Reader::new(stream);
    for _ in 0..10_000 {
        let Some(head) = r.head().await else { return };
        let mut parts = head.line.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let body = if head.chunked() {
            match r.chunked().await {
                Ok(b) => b.len(),
                Err(_) => return,
            }
        } else {
            match r.exact(head.content_length().unwrap_or(0)).await {
                Ok(b) => b.len(),
                Err(_) => return,
            }
        };
        let path = target.split('?').next().unwrap_or_default();
        let answer: Vec<u8> = if path == HEALTH || path.ends_with(HEALTH) {
            probes.fetch_add(1, Ordering::Relaxed);
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
        } else {
            let host = head.all("host").join(",");
            seen.lock().expect("seen").push(Seen {
                method: method.clone(),
                target: target.clone(),
                host: host.clone(),
                body,
            });
            match mode {
                Mode::Normal => normal_answer(path, &host, body),
                Mode::Silent => {
                    hold(&mut r).await;
                    return;
                }
                Mode::BothLengths => {
                    let mut a = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n14\r\n".to_vec();
                    a.extend_from_slice(&[b'z'; 20]);
                    a.extend_from_slice(b"\r\n0\r\n\r\n");
                    a
                }
                Mode::StallBody => {
                    let mut a = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
                    a.extend_from_slice(&[b's'; 10]);
                    if r.get_mut().write_all(&a).await.is_err() {
                        return;
                    }
                    hold(&mut r).await;
                    return;
                }
                Mode::CloseMidBody => {
                    let mut a = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
                    a.extend_from_slice(&[b'c'; 10]);
                    let _ = r.get_mut().write_all(&a).await;
                    return;
                }
            }
        };
        if method == "HEAD" {
            // Head only: cut the body off the answer.
            let end = find(&answer, b"\r\n\r\n").map_or(answer.len(), |e| e + 4);
            if r.get_mut().write_all(&answer[..end]).await.is_err() {
                return;
            }
        } else if r.get_mut().write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// Keep a connection open without answering until the peer closes it (at most 5 minutes).
async fn hold(r: &mut Reader<TcpStream>) {
    let _ = tokio::time::timeout(Duration::from_secs(300), r.rest()).await;
}

fn normal_answer(path: &str, host: &str, body: usize) -> Vec<u8> {
    if path == "/bogus204" {
        // A 204 carries no body; these bytes are garbage left on the connection.
        return b"HTTP/1.1 204 No Content\r\n\r\nhello".to_vec();
    }
    if let Some(n) = path
        .strip_prefix("/blob/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        let mut a = format!("HTTP/1.1 200 OK\r\nContent-Length: {BLOB_LEN}\r\nx-blob: {n}\r\n\r\n")
            .into_bytes();
        a.extend((0..BLOB_LEN as u64).map(|i| blob_byte(n, i)));
        return a;
    }
    let text = format!("ok {path}");
    let host = host.replace(['\r', '\n'], "");
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nx-seen-host: {host}\r\nx-seen-body: {body}\r\n\r\n{text}",
        text.len()
    )
    .into_bytes()
}

// ===== raw client =====

/// One response read off a connection.
#[derive(Debug)]
pub struct Reply {
    /// Its head (`None` when no head arrived).
    pub head: Option<Head>,
    /// The body as framed by the head (decoded when chunked).
    pub body: Vec<u8>,
    /// False when the body was cut short.
    pub complete: bool,
}

impl Reply {
    /// The status code (0 when no head arrived).
    pub fn status(&self) -> u16 {
        self.head.as_ref().map_or(0, Head::status)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Read one response (to a request with `method`) from `r`, within `wait`.
pub async fn read_reply<R: AsyncRead + Unpin>(
    r: &mut Reader<R>,
    method: &str,
    wait: Duration,
) -> Reply {
    let work = async {
        let Some(head) = r.head().await else {
            return Reply {
                head: None,
                body: Vec::new(),
                complete: false,
            };
        };
        let status = head.status();
        let no_body = method == "HEAD" || status == 204 || status == 304 || status < 200;
        let (body, complete) = if no_body {
            (Vec::new(), true)
        } else if head.chunked() {
            match r.chunked().await {
                Ok(b) => (b, true),
                Err(b) => (b, false),
            }
        } else if let Some(n) = head.content_length() {
            match r.exact(n).await {
                Ok(b) => (b, true),
                Err(b) => (b, false),
            }
        } else {
            (r.rest().await, true)
        };
        Reply {
            head: Some(head),
            body,
            complete,
        }
    };
    match tokio::time::timeout(wait, work).await {
        Ok(reply) => reply,
        Err(_) => Reply {
            head: None,
            body: Vec::new(),
            complete: false,
        },
    }
}

/// What one raw exchange gave: every byte until the server closed (or `wait` passed).
#[derive(Debug)]
pub struct Exchange {
    /// All bytes received.
    pub bytes: Vec<u8>,
    /// True when the server closed the connection within `wait`.
    pub closed: bool,
}

impl Exchange {
    /// The bytes as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// How many response status lines the bytes hold.
    pub fn responses(&self) -> usize {
        self.text().matches("HTTP/1.1 ").count()
    }
}

/// Send `request` on a new connection and read until the server closes or `wait` passes.
pub async fn exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> Exchange {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the sidecar");
    let _ = s.write_all(request).await;
    let mut bytes = Vec::new();
    let closed = tokio::time::timeout(wait, s.read_to_end(&mut bytes))
        .await
        .is_ok();
    Exchange { bytes, closed }
}

/// One GET on a new connection (`Connection: close`), read within `wait`.
pub async fn get(addr: SocketAddr, path: &str, wait: Duration) -> Reply {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the sidecar");
    let req = format!("GET {path} HTTP/1.1\r\nHost: sidekick.test\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut r = Reader::new(s);
    read_reply(&mut r, "GET", wait).await
}

/// The sum of every series of metric `name` whose line holds all of `labels`.
pub async fn metric(addr: SocketAddr, name: &str, labels: &[&str]) -> f64 {
    let reply = get(addr, "/.prometheus/metrics", Duration::from_secs(10)).await;
    reply
        .text()
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        .filter(|l| labels.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ===== the sidecar program =====

/// The command running the sidecar program with `args`.
pub fn command(args: &[OsString]) -> Command {
    match std::env::var_os(BIN_VAR) {
        Some(bin) => {
            let mut c = Command::new(bin);
            c.args(args);
            c
        }
        None => {
            let mut c = Command::new(std::env::current_exe().expect("test binary"));
            let mut joined = Vec::new();
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    joined.push(0x1f);
                }
                joined.extend_from_slice(a.as_bytes());
            }
            c.args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
                .env(CHILD_VAR, OsString::from_vec(joined));
            c
        }
    }
}

/// The arguments the child mode received (call from the `child_main` test).
pub fn child_args() -> Option<Vec<OsString>> {
    let raw = std::env::var_os(CHILD_VAR)?;
    let bytes = raw.as_bytes();
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    Some(
        bytes
            .split(|&b| b == 0x1f)
            .map(|a| OsStr::from_bytes(a).to_os_string())
            .collect(),
    )
}

/// Strings as arguments.
pub fn os_args(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// A finished run of the program.
#[derive(Debug)]
pub struct Finished {
    /// Exit code (`None`: killed by a signal, or still running after the bound and killed).
    pub code: Option<i32>,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

/// Run the program to its end (killed by PID after `bound`), with extra environment.
pub fn run(args: &[OsString], env: &[(&str, &str)], bound: Duration) -> Finished {
    let mut c = command(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut p = Proc::spawn(c);
    let code = p.wait(bound);
    if code.is_none() {
        p.kill();
    }
    Finished {
        code: code.flatten(),
        stdout: p.stdout(),
        stderr: p.stderr(),
    }
}

/// A child process with its output captured, killed by PID when dropped.
pub struct Proc {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

fn pump(from: impl Read + Send + 'static, to: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut from = from;
        let mut chunk = [0u8; 8192];
        // Ends at the child's exit (end of the pipe).
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            to.lock().expect("pipe").extend_from_slice(&chunk[..n]);
        }
    });
}

impl Proc {
    /// Spawn `c` with stdout and stderr captured.
    pub fn spawn(mut c: Command) -> Proc {
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the sidecar");
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        if let Some(o) = child.stdout.take() {
            pump(o, out.clone());
        }
        if let Some(e) = child.stderr.take() {
            pump(e, err.clone());
        }
        Proc { child, out, err }
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("stdout")).into_owned()
    }

    /// Stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().expect("stderr")).into_owned()
    }

    /// Wait at most `bound` for the exit; `Some(code)` when it exited.
    pub fn wait(&mut self, bound: Duration) -> Option<Option<i32>> {
        let end = Instant::now() + bound;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                // Let the pipe readers take the last bytes.
                std::thread::sleep(Duration::from_millis(50));
                return Some(s.code());
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a signal by PID.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {} failed", self.pid());
    }

    /// Kill it (by PID) and reap it.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running sidecar on a loopback port.
pub struct Sidekick {
    /// The process.
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Flags every sidecar of the suite gets: fast probes of [`HEALTH`], no trace output.
pub fn base_flags() -> Vec<String> {
    [
        "--health-path",
        HEALTH,
        "--health-duration",
        "200ms",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Sidekick {
    /// Start the program on `127.0.0.1:<free port>` with [`base_flags`], `extra` and `sites`,
    /// and wait (at most 15 s) until `/v1/health` answers `200`.
    pub async fn start(extra: &[&str], sites: &[String]) -> Sidekick {
        Self::start_env(extra, sites, &[]).await
    }

    /// [`Sidekick::start`] with extra environment variables.
    pub async fn start_env(extra: &[&str], sites: &[String], env: &[(&str, &str)]) -> Sidekick {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let mut args: Vec<String> = vec!["--address".into(), addr.to_string()];
        args.extend(base_flags());
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(sites.iter().cloned());
        let os: Vec<OsString> = args.iter().map(OsString::from).collect();
        let mut c = command(&os);
        for (k, v) in env {
            c.env(k, v);
        }
        let mut proc = Proc::spawn(c);
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                let r = get(addr, "/v1/health", Duration::from_secs(2)).await;
                if r.status() == 200 {
                    break;
                }
            }
            if let Some(code) = proc.wait(Duration::ZERO) {
                panic!(
                    "the sidecar exited ({code:?}) before serving: {}{}",
                    proc.stdout(),
                    proc.stderr()
                );
            }
            assert!(
                Instant::now() < end,
                "the sidecar never became healthy on {addr}: {}{}",
                proc.stdout(),
                proc.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Sidekick { proc, addr }
    }

    /// Wait (at most 15 s) until `n` endpoints are up by the probes (the sidecar is healthy
    /// as soon as one is).
    pub async fn wait_up(&self, n: usize) {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let up = metric(self.addr, "sidekick_endpoint_state", &["state=\"up\""]).await;
            if up >= n as f64 {
                return;
            }
            assert!(Instant::now() < end, "only {up} endpoints up, {n} expected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait (at most `bound`) until stdout or stderr contains `needle`.
    pub async fn wait_output(&self, needle: &str, bound: Duration) -> bool {
        let end = Instant::now() + bound;
        while Instant::now() < end {
            if self.proc.stdout().contains(needle) || self.proc.stderr().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}
