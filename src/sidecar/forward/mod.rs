//! The sidecar's own HTTP/1.1 forwarding loop.
//!
//! # Why not hyper's client and server
//!
//! Through hyper's server and hyper-util's pooled client a proxied request costs about twenty
//! allocations, four task polls, two channel hops to a separately spawned connection task, a
//! `HeaderMap` built and cloned per attempt, and for large bodies a copy of every 64 KiB chunk
//! through a body channel into another task (`../shared/reference/sidecar-perf.md` measured it:
//! three times nginx's user-space work per small request). A proxy does not need most of that:
//! it moves a head it barely changes and a body it never looks into.
//!
//! So one task per client connection drives both directions: it reads a request head into the
//! connection's reused buffer, parses it strictly ([`parse`]), asks the engine for an endpoint
//! and, after each attempt, what to do next ([`crate::retry::Attempts`]: the same attempt policy
//! and budget as every other integration), takes a backend connection from its thread's idle
//! pool ([`pool`]), writes the forwarded head (the client's lines minus the hop-by-hop ones, plus
//! the `X-Forwarded-*` lines) and the body, reads the answer's head into a second reused buffer,
//! and writes it back with the body. Bodies of known length between plain-text sockets move by
//! `splice(2)` ([`io`]); chunked bodies pass through a strict scanner ([`chunked`]).
//!
//! What stays on hyper's path (`super::proxy`): the shared S3 cache, which works on whole
//! `http` messages, and `--debug` traces, which print whole header maps. The listener picks the
//! path per connection.

pub mod chunked;
pub mod deadline;
pub mod io;
pub mod parse;
pub mod pool;

use std::future::Future as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use http::Method;
use tokio::io::AsyncWriteExt;

use self::deadline::Deadline;
use self::io::{relay, send_more, will_splice, write_head, Buf, Output, Pipe, RelayError, Stream};
use self::parse::{Class, Framing, HeadError, RequestHead, ResponseHead};
use self::pool::Backend;
use super::console::TraceRecord;
use super::drain::Drain;
use super::metrics::{self, EpStats};
use super::proxy::{
    backend_down_body, Generation, Shared, CERTIFICATES_PATH, HEALTH_PATH, METRICS_PATH,
};
use super::server::Limits;
use crate::clock::Clock;
use crate::retry::Decision;
use crate::{Lease, Outcome};

/// Request bodies up to this size are read whole before the first attempt, so an idempotent
/// request can be sent again (the engine's `retry_buffer`, 64 KiB by default, caps it too).
const REPLAY_MAX: u64 = 64 * 1024;
/// A request body read whole and up to this size is written in the same call as its head (an
/// answer body that came with its head always is: `write_head`).
const INLINE_MAX: usize = 16 * 1024;
/// An answer to a request that can be sent again is read whole before it is forwarded when its
/// body is known to be at most this long (see `Conn::read_small_body`); below the length from
/// which bodies are spliced (`io::SPLICE_MIN`), so a spliced answer's head is never held.
const WHOLE_MAX: u64 = 16 * 1024;
const _: () = assert!(WHOLE_MAX < io::SPLICE_MIN);

/// Everything one client connection keeps between requests.
struct Conn<C> {
    client: C,
    peer: SocketAddr,
    shared: Arc<Shared>,
    limits: Limits,
    /// Client bytes; the current request head (and a buffered body) stay at its start until
    /// the request is done.
    rbuf: Buf,
    /// Backend bytes.
    bbuf: Buf,
    /// Heads being written.
    wbuf: Vec<u8>,
    pipe: Pipe,
    req: RequestHead,
    resp: ResponseHead,
    /// `X-Real-Ip` / the address appended to `X-Forwarded-For`.
    ip: String,
    texts: Texts,
    /// The current request's HTTP minor version.
    req_minor: u8,
    /// Request body bytes streamed to the backend (when not known from the head).
    rx_body: u64,
    /// Bounds the wait for the next request head (`header_timeout`).
    head_wait: Deadline,
    /// Bounds the wait for a backend's answer head (`response_timeout`).
    answer_wait: Deadline,
}

/// Serve one client connection until it closes, fails, or the server drains.
pub async fn serve<C: Stream>(
    client: C,
    peer: SocketAddr,
    shared: Arc<Shared>,
    limits: Limits,
    drain: Arc<Drain>,
) {
    // For the connection's life: a drain wakes this task wherever it waits.
    let _enlisted = drain.enlist().await;
    let ip = shared.client_ip(peer.ip()).to_string();
    let (head_wait, answer_wait) = (
        Deadline::new(Clock::System, limits.header_timeout),
        Deadline::new(Clock::System, shared.response_timeout),
    );
    let mut c = Conn {
        client,
        peer,
        shared,
        limits,
        rbuf: Buf::new(),
        bbuf: Buf::new(),
        wbuf: Vec::with_capacity(1024),
        pipe: Pipe::default(),
        req: RequestHead::default(),
        resp: ResponseHead::default(),
        ip,
        texts: Texts::default(),
        req_minor: 1,
        rx_body: 0,
        head_wait,
        answer_wait,
    };
    loop {
        if !c.next_head(&drain).await {
            break;
        }
        let keep = c.handle().await;
        if !keep || drain.stopping() {
            break;
        }
        c.rbuf.shrink();
        c.bbuf.shrink();
    }
    let _ = c.client.shutdown().await;
}

/// How a request ended for the client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Ready for the next request.
    KeepAlive,
    /// Close the connection.
    Close,
}

/// What the last attempt produced, when no answer can be forwarded.
enum Failed {
    /// No endpoint was available at all.
    NoEndpoint,
    /// The attempts failed; the last one with this error on this endpoint.
    Attempt {
        outcome: Outcome,
        message: String,
        endpoint: String,
        stats: Option<Arc<EpStats>>,
    },
}

/// How one attempt ended.
enum Tried {
    /// A response head is in `bbuf` (parsed into `resp`), over `conn`.
    Answer(Backend),
    /// It failed before a response head.
    Error {
        outcome: Outcome,
        message: String,
        /// Whether the request body is still whole (nothing of a streamed body was read).
        intact: bool,
        /// A pooled connection the backend had closed while it was idle (nothing was read).
        stale: bool,
    },
    /// The client's side failed (its body broke, or it went away): nothing is held against
    /// the endpoint.
    ClientGone(Option<&'static str>),
}

/// Write an answer of the sidecar's own into `out`: status line, `headers` (whole lines),
/// `Content-Length: length` and the body (empty for a HEAD answer, whose `length` still
/// announces what a GET would carry).
fn local_response(
    out: &mut Vec<u8>,
    status: &str,
    headers: &str,
    length: usize,
    body: &[u8],
    close: bool,
) {
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {length}\r\n"
    );
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

const TEXT_HEADERS: &str =
    "Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n";

/// A BackendDown answer (sidekick's XML body).
fn error_response(out: &mut Vec<u8>, status: u16, body: &str, close: bool) {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    local_response(
        out,
        &format!("{status} {reason}"),
        "Retry-After: 120\r\nContent-Type: application/xml\r\nServer: SideKick\r\n",
        body.len(),
        body.as_bytes(),
        close,
    );
}

/// The time since `start`, a reading of the engine's system clock.
fn since(start: u64) -> Duration {
    Duration::from_nanos(Clock::System.now().saturating_sub(start))
}

/// sidekick's count of a status line: `"<code> <text>\n"` (header lines add
/// `"<name>: <value>\n"` each).
fn status_count(status: u16) -> u64 {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map_or(0, str::len);
    (3 + 1 + reason + 1) as u64
}

impl<C: Stream> Conn<C> {
    /// Read and parse the next request head. False: the connection is done (closed, timed
    /// out, refused: a refusal was answered already).
    async fn next_head(&mut self, drain: &Drain) -> bool {
        self.head_wait.set_after(self.limits.header_timeout);
        // How far the buffer was searched for the end of the head: a head trickling in a
        // byte at a time is searched once in all, not once per byte.
        let mut searched = 0usize;
        loop {
            let filled = self.rbuf.filled();
            let from = searched.saturating_sub(3).min(filled.len());
            // The first end in the new bytes is the first in all: the earlier ones had none.
            let end = parse::head_end(&filled[from..]).map(|e| from + e);
            searched = filled.len();
            let parsed = match end {
                Some(end) => parse::parse_request_head(filled, end, &mut self.req).map(Some),
                None => Ok(None),
            };
            match parsed {
                Ok(Some(())) => {
                    if self.req.len > self.limits.max_header_bytes {
                        self.refuse(431, "request head too large").await;
                        return false;
                    }
                    return true;
                }
                Ok(None) => {}
                Err(HeadError::TooManyHeaders) => {
                    self.refuse(431, "too many header lines").await;
                    return false;
                }
                Err(e) => {
                    self.refuse(400, e.reason()).await;
                    return false;
                }
            }
            if self.rbuf.len() >= self.limits.max_header_bytes {
                self.refuse(431, "request head too large").await;
                return false;
            }
            let idle = self.rbuf.is_empty();
            let read = self.head_wait.bound(self.rbuf.fill(&mut self.client, 4096));
            let n = if idle {
                // Between requests a drain closes the connection at once: the task is enlisted
                // on it, so a drain wakes this wait, which then finds the flag set.
                let mut read = std::pin::pin!(read);
                let waited = std::future::poll_fn(|cx| {
                    if drain.stopping() {
                        return Poll::Ready(None);
                    }
                    read.as_mut().poll(cx).map(Some)
                })
                .await;
                match waited {
                    Some(r) => r,
                    None => return false,
                }
            } else {
                read.await
            };
            match n {
                Ok(Ok(0)) | Ok(Err(_)) => return false,
                Ok(Ok(_)) => {}
                Err(_) => {
                    if !idle {
                        self.refuse(408, "request head not received in time").await;
                    }
                    return false;
                }
            }
        }
    }

    /// Answer a refused request and close.
    async fn refuse(&mut self, status: u16, reason: &str) {
        let line = match status {
            431 => "431 Request Header Fields Too Large",
            408 => "408 Request Timeout",
            _ => "400 Bad Request",
        };
        let body = format!("{line}: {reason}\n");
        local_response(
            &mut self.wbuf,
            line,
            TEXT_HEADERS,
            body.len(),
            body.as_bytes(),
            true,
        );
        let _ = self.client.write_all(&self.wbuf).await;
        self.rbuf.clear();
    }

    /// Serve the parsed request; true to keep the connection.
    async fn handle(&mut self) -> bool {
        let buf = self.rbuf.filled();
        let method = &buf[self.req.method.clone()];
        let target = &buf[self.req.path.clone()];
        let path = target.split(|&b| b == b'?').next().unwrap_or(target);
        let close = self.req.opts.close;
        let local: Option<(String, &str, Vec<u8>)> = if path == METRICS_PATH.as_bytes() {
            Some((
                "200 OK".into(),
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics().into_bytes(),
            ))
        } else if path == CERTIFICATES_PATH.as_bytes() && method == b"GET" {
            Some(match &self.shared.certificate_pem {
                Some(pem) => (
                    "200 OK".into(),
                    "text/plain; charset=utf-8",
                    pem.clone().into_bytes(),
                ),
                None => (
                    "404 Not Found".into(),
                    "text/plain; charset=utf-8",
                    b"no configured certificates found\n".to_vec(),
                ),
            })
        } else if path == HEALTH_PATH.as_bytes() {
            let gen = self.shared.generation.load();
            if gen.balancer.is_available() {
                self.wbuf.clear();
                self.wbuf.extend_from_slice(
                    b"HTTP/1.1 200 OK\r\nServer: SideKick\r\nContent-Length: 0\r\n",
                );
                if close {
                    self.wbuf.extend_from_slice(b"Connection: close\r\n");
                }
                self.wbuf.extend_from_slice(b"\r\n");
                return self.finish_local(close).await;
            }
            let body = backend_down_body("all backend servers are offline", HEALTH_PATH);
            error_response(&mut self.wbuf, 502, &body, close);
            return self.finish_local(close).await;
        } else if method == b"CONNECT" || !(path.first() == Some(&b'/') || path.is_empty()) {
            Some((
                "404 Not Found".into(),
                "text/plain; charset=utf-8",
                b"404 page not found\n".to_vec(),
            ))
        } else {
            None
        };
        if let Some((status, ct, body)) = local {
            let headers = format!("Content-Type: {ct}\r\nX-Content-Type-Options: nosniff\r\n");
            // A HEAD answer announces the length of the body it does not carry.
            let sent: &[u8] = if method == b"HEAD" { b"" } else { &body };
            local_response(&mut self.wbuf, &status, &headers, body.len(), sent, close);
            return self.finish_local(close).await;
        }
        // A local answer leaves the request body unread: only proxied requests read it.
        self.proxy().await == After::KeepAlive
    }

    async fn finish_local(&mut self, close: bool) -> bool {
        let framing = self.req.framing;
        let used = self.req.len;
        if self.client.write_all(&self.wbuf).await.is_err() {
            return false;
        }
        // Skip a body the local endpoint did not read.
        match framing {
            Framing::None => {
                self.rbuf.consume(used);
                !close
            }
            _ => false,
        }
    }

    fn metrics(&self) -> String {
        let gen = self.shared.generation.load();
        let mut body = metrics::render(&gen.registry, &gen.balancer.endpoints());
        if let Some(cache) = gen.cache() {
            body.push_str(&cache.metrics().to_prometheus());
        }
        body
    }

    /// Forward the request through the balancer.
    async fn proxy(&mut self) -> After {
        // The engine's clock: the time-stamp counter where calibrated (see `crate::clock`).
        let start = Clock::System.now();
        let gen = self.shared.generation.load_full();
        if gen.is_warming() {
            let _ = gen.balancer.ready(self.shared.warm_wait).await;
        }
        let tracing = self.shared.console.tracing();
        let buf = self.rbuf.filled();
        let method_bytes = &buf[self.req.method.clone()];
        let target = &buf[self.req.path.clone()];
        let path = target.split(|&b| b == b'?').next().unwrap_or(target);
        self.texts.resource.clear();
        self.texts
            .resource
            .push_str(std::str::from_utf8(path).unwrap_or("/"));
        if tracing {
            let t = &mut self.texts;
            t.method.clear();
            t.method
                .push_str(std::str::from_utf8(method_bytes).unwrap_or(""));
            t.path.clone_from(&t.resource);
            t.query.clear();
            if let Some(q) = target.iter().position(|&b| b == b'?') {
                t.query
                    .push_str(std::str::from_utf8(&target[q + 1..]).unwrap_or(""));
            }
            t.client = trace_client(buf, &self.req.headers, self.peer.ip());
        }
        let is_head = method_bytes == b"HEAD";
        let method = Method::from_bytes(method_bytes).unwrap_or(Method::POST);
        let has_key = self.req.headers.iter().any(|h| {
            h.class == Class::Other && buf[h.name.clone()].eq_ignore_ascii_case(b"idempotency-key")
        });
        let idempotent = crate::retry::is_idempotent(&method, has_key);
        let rx_head: u64 = self
            .req
            .headers
            .iter()
            .map(|h| (h.name.len() + h.value.len()) as u64)
            .sum();
        let framing = self.req.framing;
        let head_len = self.req.len;
        let client_minor = self.req.minor;
        self.req_minor = client_minor;
        let upgrade = self.req.opts.upgrade.is_some();
        let close = self.req.opts.close;

        // A body small enough is read whole first, so that every attempt can send it.
        let replay = match framing {
            Framing::None => Some(0usize),
            Framing::Length(n) if n <= REPLAY_MAX.min(gen.retry_buffer as u64) => {
                Some(usize::try_from(n).unwrap_or(usize::MAX))
            }
            _ => None,
        };
        let mut attempts = gen.balancer.attempts(idempotent, replay.is_some());
        let mut lease = match attempts.pick() {
            Ok(l) => l,
            Err(_) => {
                return self
                    .fail(&gen, Failed::NoEndpoint, start, rx_head, replay)
                    .await
            }
        };
        if self.req.opts.expect_continue && framing != Framing::None {
            // The body is wanted: say so (the sidecar reads it for the backend).
            if self
                .client
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
            {
                lease.finish(Outcome::Cancelled);
                return After::Close;
            }
        }
        if let Some(n) = replay {
            let whole = head_len.saturating_add(n);
            while self.rbuf.len() < whole {
                let want = whole - self.rbuf.len();
                let read = tokio::time::timeout(
                    self.shared.body_timeout,
                    self.rbuf.fill(&mut self.client, want),
                )
                .await;
                match read {
                    Ok(Ok(k)) if k > 0 => {}
                    Ok(_) => {
                        lease.finish(Outcome::Cancelled);
                        return After::Close;
                    }
                    Err(_) => {
                        lease.finish(Outcome::Cancelled);
                        self.refuse(408, "request body not received in time").await;
                        return After::Close;
                    }
                }
            }
        }

        // The attempts, as the engine's policy says.
        let mut fresh = false;
        self.rx_body = 0;
        let (conn, id, lease, stats) = loop {
            let id = lease.id();
            let stats = gen
                .connect
                .stats(id, || gen.registry.get(lease.authority().as_str()));
            match self.attempt(&gen, &lease, replay, idempotent, fresh).await {
                Tried::Answer(conn) => {
                    let status = self.resp.status;
                    match attempts.decide(lease, Outcome::Status(status), replay.is_some()) {
                        Decision::Done(l) => break (conn, id, Some(l), stats),
                        Decision::Retry(next, _) => {
                            fresh = false;
                            lease = next;
                        }
                        // The answer stands (a retryable status, but no retry allowed).
                        Decision::GiveUp(_) => break (conn, id, None, stats),
                    }
                }
                Tried::Error { stale: true, .. } if !fresh => {
                    // A pooled connection the backend had closed: once more on a new
                    // connection to the same endpoint; not an attempt.
                    fresh = true;
                }
                Tried::Error {
                    outcome,
                    message,
                    intact,
                    ..
                } => {
                    let endpoint = lease.url().to_string();
                    match attempts.decide(lease, outcome, intact) {
                        Decision::Retry(next, _) => {
                            fresh = false;
                            lease = next;
                            continue;
                        }
                        Decision::Done(l) => l.finish(outcome),
                        Decision::GiveUp(_) => {}
                    }
                    let failed = Failed::Attempt {
                        outcome,
                        message,
                        endpoint,
                        stats,
                    };
                    let replay = if intact { replay } else { None };
                    return self.fail(&gen, failed, start, rx_head, replay).await;
                }
                Tried::ClientGone(reason) => {
                    lease.finish(Outcome::Cancelled);
                    if let Some(r) = reason {
                        let status = if r == BODY_TIMEOUT { 408 } else { 400 };
                        self.refuse(status, r).await;
                    }
                    return After::Close;
                }
            }
        };
        let ttfb = since(start);
        let status = self.resp.status;
        let endpoint_url = if tracing {
            match (&lease, &stats) {
                (Some(l), _) => l.url().to_string(),
                (None, Some(s)) => s.url.clone(),
                _ => String::new(),
            }
        } else {
            String::new()
        };
        if let Some(l) = lease {
            l.finish(Outcome::Status(status));
        }
        // The request is done with: its head and a buffered body leave the buffer.
        if let Some(n) = replay {
            self.rbuf.consume(head_len.saturating_add(n));
        }
        let sent = self
            .respond(conn, &gen, id, is_head, client_minor == 0 || close, upgrade)
            .await;
        let rx_body = match framing {
            Framing::Length(n) => n,
            _ => self.rx_body,
        };
        let rx = rx_head + rx_body;
        let latency = since(start);
        if let Some(s) = &stats {
            s.record(status, rx, sent.tx, latency);
        }
        if tracing {
            let t = &self.texts;
            let (time, end) = wall_span(latency);
            self.shared.console.trace(&TraceRecord {
                time,
                end,
                endpoint: &endpoint_url,
                client: &t.client,
                method: &t.method,
                path: &t.path,
                query: &t.query,
                status,
                rx,
                tx: sent.tx,
                latency,
                ttfb,
                req_headers: None,
                resp_headers: None,
                error_body: None,
            });
        }
        if sent.keep && !close && client_minor == 1 {
            After::KeepAlive
        } else {
            After::Close
        }
    }

    /// Write the forwarded request head for `lease` into `wbuf`.
    fn request_head(&mut self, lease: &Lease) {
        let buf = self.rbuf.filled();
        let req = &self.req;
        let w = &mut self.wbuf;
        w.clear();
        w.extend_from_slice(&buf[req.method.clone()]);
        w.push(b' ');
        w.extend_from_slice(lease.base_path().as_bytes());
        let path = &buf[req.path.clone()];
        if path.first() != Some(&b'/') {
            w.push(b'/');
        }
        w.extend_from_slice(path);
        w.extend_from_slice(b" HTTP/1.1\r\n");
        let mut had_length = false;
        let mut xff = false;
        for h in &req.headers {
            match h.class {
                Class::Other | Class::Server | Class::XProxy if !h.dropped => {
                    line(w, &buf[h.name.clone()], &buf[h.value.clone()]);
                }
                Class::XForwardedFor if !h.dropped => xff = true,
                Class::ContentLength => had_length = true,
                _ => {}
            }
        }
        // Earlier hops first, then this client, on one line.
        w.extend_from_slice(b"X-Forwarded-For: ");
        if xff {
            for h in req
                .headers
                .iter()
                .filter(|h| h.class == Class::XForwardedFor && !h.dropped)
            {
                w.extend_from_slice(&buf[h.value.clone()]);
                w.extend_from_slice(b", ");
            }
        }
        w.extend_from_slice(self.ip.as_bytes());
        w.extend_from_slice(b"\r\n");
        line(w, b"X-Real-Ip", self.ip.as_bytes());
        match &req.host {
            Some(host) => {
                line(w, b"Host", &buf[host.clone()]);
                line(w, b"X-Forwarded-Host", &buf[host.clone()]);
            }
            None => match lease.virtual_host() {
                Some(v) => line(w, b"Host", v.as_bytes()),
                None => line(w, b"Host", lease.authority().as_str().as_bytes()),
            },
        }
        match req.framing {
            Framing::Length(n) => {
                let _ = write!(w, "Content-Length: {n}\r\n");
            }
            Framing::Chunked => w.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            Framing::None if had_length => w.extend_from_slice(b"Content-Length: 0\r\n"),
            _ => {}
        }
        if req.opts.te_trailers {
            w.extend_from_slice(b"TE: trailers\r\n");
        }
        if let Some(u) = &req.opts.upgrade {
            w.extend_from_slice(b"Connection: Upgrade\r\n");
            line(w, b"Upgrade", &buf[u.clone()]);
        }
        w.extend_from_slice(b"\r\n");
    }

    /// One attempt: a connection, the request, the answer's head.
    async fn attempt(
        &mut self,
        gen: &Generation,
        lease: &Lease,
        replay: Option<usize>,
        idempotent: bool,
        fresh: bool,
    ) -> Tried {
        let authority = lease.authority().as_str();
        let https = *lease.scheme() == http::uri::Scheme::HTTPS;
        let pooled = if fresh {
            None
        } else {
            gen.connect.checkout(lease.id())
        };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => match gen.connect.connect(authority, https).await {
                Ok(c) => c,
                Err(e) => {
                    return Tried::Error {
                        outcome: Outcome::Connect,
                        message: format!("dial tcp {authority}: {e}"),
                        intact: true,
                        stale: false,
                    }
                }
            },
        };
        self.request_head(lease);
        let head_len = self.req.len;
        let framing = self.req.framing;
        match replay {
            Some(n) if n <= INLINE_MAX => {
                let body = &self.rbuf.filled()[head_len..head_len + n];
                self.wbuf.extend_from_slice(body);
                if let Err(e) = conn.write_all(&self.wbuf).await {
                    return sent_error(e, reused, true);
                }
            }
            Some(n) => {
                if let Err(e) = conn.write_all(&self.wbuf).await {
                    return sent_error(e, reused, true);
                }
                let body = &self.rbuf.filled()[head_len..head_len + n];
                if let Err(e) = conn.write_all(body).await {
                    return sent_error(e, false, true);
                }
            }
            None => {
                // A body to splice: the head leaves with its first bytes (`send_more`).
                let rest = match framing {
                    Framing::Length(n) => n.saturating_sub((self.rbuf.len() - head_len) as u64),
                    _ => 0,
                };
                let written = match conn.tcp() {
                    Some(tcp) if will_splice(rest, self.client.tcp(), Some(tcp)) => {
                        send_more(tcp, &self.wbuf).await
                    }
                    _ => conn.write_all(&self.wbuf).await,
                };
                if let Err(e) = written {
                    return sent_error(e, reused, true);
                }
                // The body streams: from here on the request cannot be sent again.
                self.rbuf.consume(head_len);
                let r = relay(
                    &mut self.client,
                    &mut self.rbuf,
                    &mut conn,
                    framing,
                    Output::Same,
                    &mut self.pipe,
                    self.shared.body_timeout,
                )
                .await;
                match r {
                    Ok(n) => self.rx_body = n,
                    Err(RelayError::Read(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                        return Tried::ClientGone(Some(BODY_TIMEOUT))
                    }
                    Err(RelayError::Read(_)) => return Tried::ClientGone(None),
                    Err(RelayError::Framing(e)) => return Tried::ClientGone(Some(e.0)),
                    Err(RelayError::Write(e)) => {
                        // The backend stopped reading: it may have answered already (an early
                        // refusal); otherwise the attempt broke after sending.
                        let quick = Duration::from_millis(200);
                        return match self.read_head(&mut conn, quick, false).await {
                            Ok(()) => Tried::Answer(conn),
                            Err(_) => Tried::Error {
                                outcome: Outcome::Reset,
                                message: e.to_string(),
                                intact: false,
                                stale: false,
                            },
                        };
                    }
                }
            }
        }
        let intact = replay.is_some();
        let read = match self
            .read_head(&mut conn, self.shared.response_timeout, reused && intact)
            .await
        {
            // A request the engine may send again: a small answer is read whole first.
            Ok(()) if intact && idempotent => self.read_small_body(&mut conn).await,
            r => r,
        };
        match read {
            Ok(()) => Tried::Answer(conn),
            Err((outcome, message, stale)) => Tried::Error {
                outcome,
                message,
                intact,
                stale,
            },
        }
    }

    /// With the answer's head in `bbuf`: when its body has a known length of at most
    /// [`WHOLE_MAX`], read the rest of it into `bbuf` too, within the answer's wait
    /// (`response_timeout`, counted from the request). Nothing has gone to the client yet, so a
    /// backend that closes or stalls in the middle of a small answer to an idempotent request
    /// costs it an attempt (retried as the engine decides), not a cut answer. Larger bodies,
    /// and answers to requests that are not sent twice, stream as they come.
    async fn read_small_body(&mut self, conn: &mut Backend) -> Result<(), (Outcome, String, bool)> {
        let is_head = self.rbuf.filled().get(self.req.method.clone()) == Some(&b"HEAD"[..]);
        let Framing::Length(n) = self.resp.framing_for(is_head) else {
            return Ok(());
        };
        if n > WHOLE_MAX {
            return Ok(());
        }
        // `n` is at most WHOLE_MAX: the whole answer fits in memory.
        let whole = self.resp.len + n as usize;
        while self.bbuf.len() < whole {
            let want = whole - self.bbuf.len();
            match self.answer_wait.bound(self.bbuf.fill(conn, want)).await {
                Ok(Ok(k)) if k > 0 => {}
                Ok(r) => {
                    let message = match r {
                        Err(e) => e.to_string(),
                        Ok(_) => {
                            "the backend closed the connection in the middle of its answer".into()
                        }
                    };
                    return Err((Outcome::Reset, message, false));
                }
                Err(_) => {
                    return Err((
                        Outcome::Timeout,
                        format!(
                            "no whole answer within {}",
                            humantime(self.shared.response_timeout)
                        ),
                        false,
                    ))
                }
            }
        }
        Ok(())
    }

    /// Read the answer's head into `bbuf`/`resp` (interim 1xx answers other than 101 are
    /// skipped). Errors: the outcome, a message, and whether it is a closed pooled connection.
    async fn read_head(
        &mut self,
        conn: &mut Backend,
        wait: Duration,
        may_be_stale: bool,
    ) -> Result<(), (Outcome, String, bool)> {
        self.bbuf.clear();
        self.answer_wait.set_after(wait);
        loop {
            match parse::parse_response(self.bbuf.filled(), &mut self.resp) {
                Ok(Some(())) => {
                    let s = self.resp.status;
                    if (100..200).contains(&s) && s != 101 {
                        self.bbuf.consume(self.resp.len);
                        continue;
                    }
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => {
                    return Err((
                        Outcome::Failed,
                        format!("malformed response: {}", e.reason()),
                        false,
                    ))
                }
            }
            if self.bbuf.len() >= self.limits.max_header_bytes {
                return Err((Outcome::Failed, "response head too large".into(), false));
            }
            match self.answer_wait.bound(self.bbuf.fill(conn, 8192)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(r) => {
                    let stale = may_be_stale && self.bbuf.is_empty();
                    let message = match r {
                        Err(e) => e.to_string(),
                        Ok(_) => "the backend closed the connection before answering".into(),
                    };
                    return Err((Outcome::Reset, message, stale));
                }
                Err(_) => {
                    return Err((
                        Outcome::Timeout,
                        format!("no response within {}", humantime(wait)),
                        false,
                    ))
                }
            }
        }
    }

    /// Send the answer whose head is in `bbuf` to the client, with its body.
    async fn respond(
        &mut self,
        mut conn: Backend,
        gen: &Generation,
        id: u64,
        is_head: bool,
        client_closes: bool,
        upgrade: bool,
    ) -> Sent {
        let resp = &self.resp;
        let status = resp.status;
        let framing = resp.framing_for(is_head);
        let tunnel = status == 101 && upgrade;
        let dechunk = framing == Framing::Chunked && client_closes && self.req_minor == 0;
        let closing = framing == Framing::Close || dechunk || client_closes;
        let buf = self.bbuf.filled();
        let w = &mut self.wbuf;
        w.clear();
        let _ = write!(w, "HTTP/1.1 {status} ");
        w.extend_from_slice(&buf[resp.reason.clone()]);
        w.extend_from_slice(b"\r\n");
        let mut lines = 0u64;
        let mut upgrade_value: Option<std::ops::Range<usize>> = None;
        for h in &resp.headers {
            let keep = match h.class {
                Class::Other => !h.dropped,
                Class::ContentLength => {
                    framing != Framing::Chunked && resp.framing != Framing::Chunked
                }
                Class::Upgrade => {
                    upgrade_value = Some(h.value.clone());
                    false
                }
                _ => false,
            };
            if keep {
                lines += (h.name.len() + 2 + h.value.len() + 1) as u64;
                line(w, &buf[h.name.clone()], &buf[h.value.clone()]);
            }
        }
        w.extend_from_slice(b"Server: SideKick\r\nX-Proxy: true\r\n");
        lines += 17 + 14;
        if framing == Framing::Chunked && !dechunk {
            w.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        if tunnel {
            w.extend_from_slice(b"Connection: Upgrade\r\n");
            if let Some(u) = upgrade_value {
                line(w, b"Upgrade", &buf[u]);
            }
        } else if closing {
            w.extend_from_slice(b"Connection: close\r\n");
        }
        w.extend_from_slice(b"\r\n");
        let mut tx = status_count(status) + lines;
        let resp_len = resp.len;
        // A 101 switched the connection to another protocol: it never goes back to the pool.
        let reusable_head =
            !resp.opts.close && resp.minor == 1 && framing != Framing::Close && status != 101;
        self.bbuf.consume(resp_len);

        if tunnel {
            if self.client.write_all(&self.wbuf).await.is_err() {
                return Sent { keep: false, tx };
            }
            // Bytes that came with the heads belong to the tunnel.
            if !self.bbuf.is_empty() && self.client.write_all(self.bbuf.filled()).await.is_err() {
                return Sent { keep: false, tx };
            }
            if !self.rbuf.is_empty() && conn.write_all(self.rbuf.filled()).await.is_err() {
                return Sent { keep: false, tx };
            }
            self.bbuf.clear();
            self.rbuf.clear();
            if let Ok((up, down)) = tokio::io::copy_bidirectional(&mut self.client, &mut conn).await
            {
                tx += down;
                self.rx_body += up;
            }
            return Sent { keep: false, tx };
        }

        // The head, with the body bytes that came with it when the length is known (a small
        // body read with the head goes out whole in this one write; the relay then has none left).
        let framing = match framing {
            Framing::Length(n) => {
                match write_head(
                    &mut self.client,
                    &mut self.wbuf,
                    &mut self.bbuf,
                    n,
                    conn.tcp(),
                )
                .await
                {
                    Ok(first) => {
                        tx += first;
                        Framing::Length(n - first)
                    }
                    Err(_) => return Sent { keep: false, tx },
                }
            }
            other => {
                if self.client.write_all(&self.wbuf).await.is_err() {
                    return Sent { keep: false, tx };
                }
                other
            }
        };
        let output = if dechunk {
            Output::Dechunk
        } else {
            Output::Same
        };
        let r = relay(
            &mut conn,
            &mut self.bbuf,
            &mut self.client,
            framing,
            output,
            &mut self.pipe,
            self.shared.response_timeout,
        )
        .await;
        match r {
            Ok(n) => {
                tx += n;
                let clean = self.bbuf.is_empty();
                if reusable_head && clean {
                    gen.connect.checkin(id, conn);
                }
                self.bbuf.clear();
                Sent { keep: !closing, tx }
            }
            Err(e) => {
                // The answer broke mid-way (the backend failed or the client left): the client
                // sees a short body and a closed connection, never a guess.
                if let RelayError::Read(e) = &e {
                    if e.kind() == std::io::ErrorKind::TimedOut {
                        // The backend fell silent: a timeout against it, as a missed head is.
                        super::proxy::report_stall(&gen.balancer, None, Some(id));
                    }
                }
                self.bbuf.clear();
                Sent { keep: false, tx }
            }
        }
    }

    /// Answer a request no backend could serve.
    async fn fail(
        &mut self,
        gen: &Generation,
        failed: Failed,
        start: u64,
        rx_head: u64,
        replay: Option<usize>,
    ) -> After {
        // The connection goes on only when the request's body was read whole: unread body
        // bytes must never be taken for the next request.
        let body_read = replay.is_some_and(|n| self.rbuf.len() >= self.req.len.saturating_add(n));
        let close = self.req.opts.close || !body_read;
        let (status, body) = match &failed {
            Failed::NoEndpoint => (
                502,
                backend_down_body("all backend servers are offline", &self.texts.resource),
            ),
            Failed::Attempt {
                outcome, message, ..
            } => (
                if *outcome == Outcome::Timeout {
                    504
                } else {
                    502
                },
                backend_down_body(message, &self.texts.resource),
            ),
        };
        error_response(&mut self.wbuf, status, &body, close);
        let tx = self.wbuf.len() as u64;
        if let Failed::Attempt {
            endpoint, stats, ..
        } = &failed
        {
            let latency = since(start);
            if let Some(s) = stats {
                s.record(status, rx_head, tx, latency);
            }
            if self.shared.console.tracing() {
                let t = &self.texts;
                let (time, end) = wall_span(latency);
                self.shared.console.trace(&TraceRecord {
                    time,
                    end,
                    endpoint,
                    client: &t.client,
                    method: &t.method,
                    path: &t.path,
                    query: &t.query,
                    status,
                    rx: rx_head,
                    tx,
                    latency,
                    ttfb: latency,
                    req_headers: None,
                    resp_headers: None,
                    error_body: None,
                });
            }
        }
        let _ = gen;
        if self.client.write_all(&self.wbuf).await.is_err() {
            return After::Close;
        }
        match replay {
            Some(n) if !close => {
                self.rbuf.consume(self.req.len.saturating_add(n));
                After::KeepAlive
            }
            _ => After::Close,
        }
    }
}

/// What sending an answer did.
struct Sent {
    /// The client connection can take another request.
    keep: bool,
    /// Bytes sent, as sidekick counts them.
    tx: u64,
}

/// Texts kept for error bodies and trace lines (reused, so no allocation per request once
/// they have grown).
#[derive(Debug, Default)]
struct Texts {
    resource: String,
    method: String,
    path: String,
    query: String,
    client: String,
}

const BODY_TIMEOUT: &str = "request body not received in time";

/// The wall-clock start and end of a request that took `latency` and ends now: one read of
/// the wall clock, and only for a traced request (the start is not read up front).
fn wall_span(latency: Duration) -> (SystemTime, SystemTime) {
    let end = SystemTime::now();
    (end.checked_sub(latency).unwrap_or(end), end)
}

fn sent_error(e: std::io::Error, reused: bool, intact: bool) -> Tried {
    Tried::Error {
        outcome: Outcome::Reset,
        message: e.to_string(),
        intact,
        stale: reused,
    }
}

fn line(w: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    w.extend_from_slice(name);
    w.extend_from_slice(b": ");
    w.extend_from_slice(value);
    w.extend_from_slice(b"\r\n");
}

fn humantime(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The client's address as traces show it: the first `X-Forwarded-For` entry, `X-Real-Ip`, or
/// the peer.
fn trace_client(buf: &[u8], headers: &[parse::Header], peer: std::net::IpAddr) -> String {
    let value = |class: Class| {
        headers
            .iter()
            .find(|h| h.class == class)
            .and_then(|h| std::str::from_utf8(&buf[h.value.clone()]).ok())
    };
    if let Some(first) = value(Class::XForwardedFor)
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        return first.to_string();
    }
    if let Some(v) = value(Class::XRealIp) {
        return v.trim().to_string();
    }
    peer.to_string()
}
