//! Strict HTTP/1.1 message heads: what the forwarding loop accepts from clients and backends.
//!
//! A proxy that guesses where a message ends is a request-smuggling proxy: when it and the
//! backend disagree about framing, one client's bytes become another request. So a request head
//! is refused (400, connection closed) for every ambiguity RFC 9112 allows a server to refuse:
//! bare-LF line endings, obs-fold, control characters, conflicting or malformed
//! `Content-Length`s, `Content-Length` with `Transfer-Encoding`, a transfer coding other than a
//! final `chunked`, no `Host` (HTTP/1.1), two `Host`s or a `Host` with bytes no authority has.
//! Token and value syntax is httparse's; the framing rules are ours.
//!
//! Nothing is copied: a parsed head is a list of byte ranges into the buffer it was read into,
//! each header classified once, so the loop can write the forwarded head with only the few
//! lines it adds or drops.

use std::mem::MaybeUninit;
use std::ops::Range;

/// Most header lines in one head; more get `431`.
pub const MAX_HEADERS: usize = 128;

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed syntax (httparse's verdict, a bare LF, obs-fold, a control character).
    Syntax(&'static str),
    /// The framing headers disagree or cannot be read.
    Framing(&'static str),
    /// `Host` missing, repeated or invalid.
    Host(&'static str),
    /// More header lines than [`MAX_HEADERS`].
    TooManyHeaders,
    /// An HTTP version other than 1.0 and 1.1.
    Version,
}

impl HeadError {
    /// The reason, for a `400` body and traces.
    pub fn reason(self) -> &'static str {
        match self {
            HeadError::Syntax(r) | HeadError::Framing(r) | HeadError::Host(r) => r,
            HeadError::TooManyHeaders => "too many header lines",
            HeadError::Version => "unsupported HTTP version",
        }
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for HeadError {}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// No body.
    #[default]
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// What a header line is to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// End to end: forwarded as it is.
    Other,
    /// `Host`.
    Host,
    /// `Content-Length`.
    ContentLength,
    /// `Transfer-Encoding`.
    TransferEncoding,
    /// `Connection`.
    Connection,
    /// `TE`.
    Te,
    /// `Upgrade`.
    Upgrade,
    /// `Expect`.
    Expect,
    /// `X-Forwarded-For`.
    XForwardedFor,
    /// `X-Real-Ip`.
    XRealIp,
    /// `X-Forwarded-Host`.
    XForwardedHost,
    /// `Server` (replaced on answers).
    Server,
    /// `X-Proxy` (replaced on answers).
    XProxy,
    /// `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`: dropped.
    Hop,
}

fn classify(name: &[u8]) -> Class {
    // Lengths first: most names are rejected by one comparison.
    let eq = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    match name.len() {
        2 if eq("te") => Class::Te,
        4 if eq("host") => Class::Host,
        6 if eq("expect") => Class::Expect,
        6 if eq("server") => Class::Server,
        7 if eq("upgrade") => Class::Upgrade,
        7 if eq("x-proxy") => Class::XProxy,
        9 if eq("x-real-ip") => Class::XRealIp,
        10 if eq("connection") => Class::Connection,
        10 if eq("keep-alive") => Class::Hop,
        14 if eq("content-length") => Class::ContentLength,
        15 if eq("x-forwarded-for") => Class::XForwardedFor,
        16 if eq("x-forwarded-host") => Class::XForwardedHost,
        16 if eq("proxy-connection") => Class::Hop,
        17 if eq("transfer-encoding") => Class::TransferEncoding,
        18 if eq("proxy-authenticate") => Class::Hop,
        19 if eq("proxy-authorization") => Class::Hop,
        _ => Class::Other,
    }
}

/// One header line: name and value as ranges of the buffer.
#[derive(Debug, Clone)]
pub struct Header {
    /// The name.
    pub name: Range<usize>,
    /// The value (without surrounding white space).
    pub value: Range<usize>,
    /// What it is to the proxy.
    pub class: Class,
    /// Named by the `Connection` header: hop-by-hop, dropped.
    pub dropped: bool,
}

/// What a head's `Connection`, `Upgrade`, `TE` and `Expect` headers ask for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `Connection: close` (or HTTP/1.0 without `keep-alive`).
    pub close: bool,
    /// `Connection: upgrade` with an `Upgrade` header: its value.
    pub upgrade: Option<Range<usize>>,
    /// `TE: trailers` (and `Connection` does not name `TE`).
    pub te_trailers: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// A parsed request head, as ranges into the buffer it was parsed from.
#[derive(Debug, Default)]
pub struct RequestHead {
    /// Length of the head, the blank line included.
    pub len: usize,
    /// The method.
    pub method: Range<usize>,
    /// The path and query to forward (`/` for an absolute-form target without a path).
    pub path: Range<usize>,
    /// The authority to forward as `Host`: the absolute-form target's, else the `Host` header's.
    pub host: Option<Range<usize>>,
    /// `HTTP/1.x`: x.
    pub minor: u8,
    /// Every header line.
    pub headers: Vec<Header>,
    /// How the body is delimited.
    pub framing: Framing,
    /// Connection options.
    pub opts: Options,
}

/// A parsed response head, as ranges into the buffer it was parsed from.
#[derive(Debug, Default)]
pub struct ResponseHead {
    /// Length of the head, the blank line included.
    pub len: usize,
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: Range<usize>,
    /// `HTTP/1.x`: x.
    pub minor: u8,
    /// Every header line.
    pub headers: Vec<Header>,
    /// How the body is delimited (before the request method is considered: see
    /// [`ResponseHead::framing_for`]).
    pub framing: Framing,
    /// Connection options.
    pub opts: Options,
}

impl ResponseHead {
    /// The body's framing for an answer to `head_request` (RFC 9112 §6.3).
    pub fn framing_for(&self, head_request: bool) -> Framing {
        if head_request || self.status < 200 || self.status == 204 || self.status == 304 {
            Framing::None
        } else {
            self.framing
        }
    }
}

fn range(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// Every LF of the head must follow a CR, and no header line may start with white space
/// (obs-fold). httparse accepts both.
fn check_line_endings(head: &[u8]) -> Result<(), HeadError> {
    // The line ends found by `memchr` (a vector search), not a byte-by-byte walk.
    for i in memchr::memchr_iter(b'\n', head) {
        if i == 0 || head[i - 1] != b'\r' {
            return Err(HeadError::Syntax("bare LF in the head"));
        }
        if matches!(head.get(i + 1), Some(b' ' | b'\t')) {
            return Err(HeadError::Syntax("obs-fold in the head"));
        }
    }
    Ok(())
}

/// Find the end of a head in `buf`: the index after `\r\n\r\n`, or `None` if incomplete.
/// A bare `\n\n` also ends a head (so that it is refused rather than waited for).
pub fn head_end(buf: &[u8]) -> Option<usize> {
    // Line to line by `memchr` (a vector search): a head is a few hundred bytes of a few
    // lines, and the byte-by-byte walk was half the cost of parsing an answer's head.
    let mut i = 0;
    while i < buf.len() {
        let nl = i + memchr::memchr(b'\n', &buf[i..])?;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            Some(_) => i = nl + 1,
            None => return None,
        }
    }
    None
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|&b| !is_ows(b)).map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

/// Comma-separated list elements, trimmed, empty ones skipped.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

fn parse_length(v: &[u8]) -> Result<u64, HeadError> {
    // A list of identical values is allowed (RFC 9112 §6.3 item 5); anything else is not.
    let mut value: Option<u64> = None;
    let mut any = false;
    for t in v.split(|&b| b == b',').map(trim) {
        any = true;
        if t.is_empty() || t.len() > 19 || !t.iter().all(u8::is_ascii_digit) {
            return Err(HeadError::Framing("invalid Content-Length"));
        }
        let n = t.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        match value {
            Some(prev) if prev != n => {
                return Err(HeadError::Framing("conflicting Content-Length values"))
            }
            _ => value = Some(n),
        }
    }
    match value {
        Some(n) if any => Ok(n),
        _ => Err(HeadError::Framing("invalid Content-Length")),
    }
}

/// Whether `host` is a valid `Host` value: reg-name / IPv4 / `[IPv6]` and an optional port.
fn valid_host(host: &[u8]) -> bool {
    if host.is_empty() {
        return false;
    }
    let (name, port) = if host[0] == b'[' {
        let Some(end) = host.iter().position(|&b| b == b']') else {
            return false;
        };
        let inner = &host[1..end];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match &host[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&[][..], port),
            _ => return false,
        }
    } else {
        match host.iter().rposition(|&b| b == b':') {
            Some(i) => (&host[..i], &host[i + 1..]),
            None => (host, &[][..]),
        }
    };
    let name_ok = name.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    });
    let port_ok = port.len() <= 5 && port.iter().all(u8::is_ascii_digit);
    name_ok && port_ok && (host[0] == b'[' || !name.is_empty())
}

/// Read the headers of a head: classify each, resolve framing and options.
fn read_headers(
    buf: &[u8],
    parsed: &[httparse::Header<'_>],
    out: &mut Vec<Header>,
    request: bool,
) -> Result<(Framing, Options, Option<Range<usize>>), HeadError> {
    out.clear();
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut host: Option<Range<usize>> = None;
    let mut hosts = 0;
    let mut opts = Options::default();
    let mut upgrade_value: Option<Range<usize>> = None;
    let mut conn_upgrade = false;
    let mut conn_te = false;
    let mut te_trailers = false;
    let mut conn_named = false;
    for h in parsed {
        let name = range(buf, h.name.as_bytes());
        let value_bytes = trim(h.value);
        let value = if value_bytes.is_empty() {
            let r = range(buf, h.value);
            r.start..r.start
        } else {
            range(buf, value_bytes)
        };
        let class = classify(h.name.as_bytes());
        match class {
            Class::ContentLength => {
                let n = parse_length(value_bytes)?;
                if length.is_some_and(|l| l != n) {
                    return Err(HeadError::Framing("conflicting Content-Length values"));
                }
                length = Some(n);
            }
            Class::TransferEncoding => {
                for t in tokens(value_bytes) {
                    if chunked {
                        // Something after chunked: the body is not chunked-framed.
                        return Err(HeadError::Framing("chunked is not the final coding"));
                    }
                    if t.eq_ignore_ascii_case(b"chunked") {
                        chunked = true;
                    } else if request {
                        return Err(HeadError::Framing("unsupported transfer coding"));
                    }
                }
                te_seen = true;
            }
            Class::Host => {
                hosts += 1;
                if hosts > 1 {
                    return Err(HeadError::Host("more than one Host header"));
                }
                if request && !valid_host(value_bytes) {
                    return Err(HeadError::Host("invalid Host header"));
                }
                host = Some(value.clone());
            }
            Class::Connection => {
                for t in tokens(value_bytes) {
                    if t.eq_ignore_ascii_case(b"close") {
                        opts.close = true;
                    } else if t.eq_ignore_ascii_case(b"upgrade") {
                        conn_upgrade = true;
                    } else if t.eq_ignore_ascii_case(b"te") {
                        conn_te = true;
                    } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                        conn_named = true;
                    }
                }
            }
            Class::Upgrade => upgrade_value = Some(value.clone()),
            Class::Te
                if tokens(value_bytes).any(|t| {
                    t.split(|&b| b == b';')
                        .next()
                        .is_some_and(|c| trim(c).eq_ignore_ascii_case(b"trailers"))
                }) =>
            {
                te_trailers = true;
            }
            Class::Expect if value_bytes.eq_ignore_ascii_case(b"100-continue") => {
                opts.expect_continue = true;
            }
            _ => {}
        }
        out.push(Header {
            name,
            value,
            class,
            dropped: false,
        });
    }
    if te_seen && !chunked && request {
        return Err(HeadError::Framing("Transfer-Encoding without chunked"));
    }
    if te_seen && length.is_some() && request {
        return Err(HeadError::Framing(
            "Content-Length together with Transfer-Encoding",
        ));
    }
    if conn_named {
        // Headers the client named in Connection are hop-by-hop too.
        let mut named: Vec<Range<usize>> = Vec::new();
        for h in out.iter().filter(|h| h.class == Class::Connection) {
            for t in tokens(&buf[h.value.clone()]) {
                named.push(range(buf, t));
            }
        }
        for h in out.iter_mut() {
            let n = &buf[h.name.clone()];
            if named.iter().any(|t| buf[t.clone()].eq_ignore_ascii_case(n))
                && !matches!(h.class, Class::Host | Class::ContentLength)
                && !n.eq_ignore_ascii_case(b"trailer")
            {
                h.dropped = true;
            }
        }
    }
    if conn_upgrade {
        opts.upgrade = upgrade_value;
    }
    opts.te_trailers = te_trailers && !conn_te;
    let framing = if chunked {
        Framing::Chunked
    } else if te_seen {
        // A response whose last coding is not chunked: delimited by the connection's close.
        Framing::Close
    } else {
        match length {
            Some(0) if request => Framing::None,
            Some(n) => Framing::Length(n),
            None if request => Framing::None,
            None => Framing::Close,
        }
    };
    Ok((framing, opts, host))
}

/// Parse a request head at the start of `buf`. `Ok(None)`: incomplete, read more. (The
/// forwarding loop takes the two steps itself, [`head_end`] over the new bytes only and then
/// `parse_request_head`.)
#[cfg_attr(not(any(test, feature = "fuzzing")), allow(dead_code))]
pub fn parse_request(buf: &[u8], head: &mut RequestHead) -> Result<Option<()>, HeadError> {
    let Some(end) = head_end(buf) else {
        return Ok(None);
    };
    parse_request_head(buf, end, head).map(Some)
}

/// Parse the request head that ends at `end` (as [`head_end`] found it) at the start of `buf`.
pub fn parse_request_head(buf: &[u8], end: usize, head: &mut RequestHead) -> Result<(), HeadError> {
    let Some(bytes) = buf.get(..end) else {
        return Err(HeadError::Syntax("malformed request head"));
    };
    check_line_endings(bytes)?;
    // Left uninitialised for httparse to fill: initialising 128 entries (4 KiB) was a third of
    // the cost of a small request's parse.
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(bytes, &mut raw) {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        Ok(_) => return Err(HeadError::Syntax("malformed request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HeadError::Version),
        Err(httparse::Error::HeaderName) => return Err(HeadError::Syntax("invalid header name")),
        Err(httparse::Error::HeaderValue) => return Err(HeadError::Syntax("invalid header value")),
        Err(httparse::Error::Token) => return Err(HeadError::Syntax("invalid method")),
        Err(httparse::Error::Status) => return Err(HeadError::Syntax("invalid request line")),
        Err(_) => return Err(HeadError::Syntax("malformed request head")),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Syntax("malformed request line"));
    };
    let (framing, mut opts, host) = read_headers(buf, req.headers, &mut head.headers, true)?;
    if minor == 0 {
        // HTTP/1.0: close unless the client asked to keep the connection.
        let keep = head.headers.iter().any(|h| {
            h.class == Class::Connection
                && tokens(&buf[h.value.clone()]).any(|t| t.eq_ignore_ascii_case(b"keep-alive"))
        });
        opts.close = opts.close || !keep;
        if framing == Framing::Chunked {
            return Err(HeadError::Framing("chunked body in an HTTP/1.0 request"));
        }
    }
    let target_r = range(buf, target.as_bytes());
    let t = target.as_bytes();
    let (path, host) = if t.first() == Some(&b'/') || t == b"*" {
        if minor == 1 && host.is_none() {
            return Err(HeadError::Host("no Host header"));
        }
        (target_r, host)
    } else if let Some(rest) = strip_scheme(t) {
        // absolute-form: the target's authority wins over Host (RFC 9112 §3.2.2).
        let auth_len = rest
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(rest.len());
        let auth = &rest[..auth_len];
        if auth.contains(&b'@') || !valid_host(auth) {
            return Err(HeadError::Host("invalid authority in the request target"));
        }
        let auth_r = range(buf, auth);
        let path_r = auth_r.end..target_r.end;
        (path_r, Some(auth_r))
    } else {
        // authority-form (CONNECT) or garbage: the caller answers 404 / 400.
        (target_r, host)
    };
    head.len = end;
    head.method = range(buf, method.as_bytes());
    head.path = path;
    head.host = host;
    head.minor = minor;
    head.framing = framing;
    head.opts = opts;
    Ok(())
}

fn strip_scheme(t: &[u8]) -> Option<&[u8]> {
    for scheme in [&b"http://"[..], b"https://"] {
        if t.len() >= scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(&t[scheme.len()..]);
        }
    }
    None
}

/// Parse a response head at the start of `buf`. `Ok(None)`: incomplete, read more.
///
/// Backends get a little more leeway than clients (a bare LF is read as a line end, as every
/// HTTP client does), but never over framing: conflicting lengths are an error, and with both
/// `Content-Length` and chunked the body is read as chunked and the length is not forwarded.
pub fn parse_response(buf: &[u8], head: &mut ResponseHead) -> Result<Option<()>, HeadError> {
    let Some(end) = head_end(buf) else {
        return Ok(None);
    };
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        &buf[..end],
        &mut raw,
    ) {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        Ok(_) => return Err(HeadError::Syntax("malformed response head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HeadError::Version),
        Err(_) => return Err(HeadError::Syntax("malformed response head")),
    }
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(HeadError::Syntax("malformed status line"));
    };
    if status < 100 {
        // httparse takes any three digits; 000-099 is no status class (RFC 9110 §15).
        return Err(HeadError::Syntax("invalid status code"));
    }
    // httparse hands out a static "" (not a slice of `buf`) for a reason phrase with obs-text
    // bytes: an empty reason is the empty range, never an offset computed from that pointer.
    let reason = resp
        .reason
        .filter(|r| !r.is_empty())
        .map(|r| range(buf, r.as_bytes()))
        .unwrap_or(0..0);
    let (framing, mut opts, _) = read_headers(buf, resp.headers, &mut head.headers, false)?;
    if minor == 0 {
        let keep = head.headers.iter().any(|h| {
            h.class == Class::Connection
                && tokens(&buf[h.value.clone()]).any(|t| t.eq_ignore_ascii_case(b"keep-alive"))
        });
        opts.close = opts.close || !keep;
    }
    head.len = end;
    head.status = status;
    head.reason = reason;
    head.minor = minor;
    head.framing = framing;
    head.opts = opts;
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Result<RequestHead, HeadError> {
        let mut h = RequestHead::default();
        parse_request(text.as_bytes(), &mut h).map(|r| {
            assert!(r.is_some(), "complete");
            h
        })
    }

    fn resp(text: &str) -> Result<ResponseHead, HeadError> {
        let mut h = ResponseHead::default();
        parse_response(text.as_bytes(), &mut h).map(|r| {
            assert!(r.is_some(), "complete");
            h
        })
    }

    #[test]
    fn plain_get() {
        let t = "GET /b/k?x=1 HTTP/1.1\r\nHost: s3:9000\r\nX-A: 1\r\n\r\n";
        let h = req(t).unwrap();
        assert_eq!(&t[h.method.clone()], "GET");
        assert_eq!(&t[h.path.clone()], "/b/k?x=1");
        assert_eq!(&t[h.host.clone().unwrap()], "s3:9000");
        assert_eq!(h.framing, Framing::None);
        assert_eq!(h.len, t.len());
        assert!(!h.opts.close);
    }

    #[test]
    fn incomplete_heads_wait() {
        let mut h = RequestHead::default();
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n", &mut h),
            Ok(None)
        );
    }

    #[test]
    fn framing_attacks_are_refused() {
        let bad = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\n\n",
            "GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nBad(): 1\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a:99999x\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for t in bad {
            assert!(req(t).is_err(), "accepted: {t:?}");
        }
    }

    #[test]
    fn lengths_and_chunked() {
        let h = req("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Length(10));
        let h = req("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 7, 7\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Length(7));
        let h = req("PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        let h = req("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::None);
    }

    #[test]
    fn absolute_form_authority_wins() {
        let t = "GET http://real:9000/b/k?q HTTP/1.1\r\nHost: other\r\n\r\n";
        let h = req(t).unwrap();
        assert_eq!(&t[h.host.clone().unwrap()], "real:9000");
        assert_eq!(&t[h.path.clone()], "/b/k?q");
        let t = "GET http://real HTTP/1.1\r\nHost: other\r\n\r\n";
        let h = req(t).unwrap();
        assert_eq!(&t[h.path.clone()], "");
    }

    #[test]
    fn http10_without_host_is_fine_and_closes() {
        let h = req("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(h.opts.close);
        assert!(h.host.is_none());
        let h = req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(!h.opts.close);
    }

    #[test]
    fn connection_options() {
        let t = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, X-Hop\r\nUpgrade: websocket\r\nX-Hop: 1\r\nTE: trailers\r\nExpect: 100-continue\r\n\r\n";
        let h = req(t).unwrap();
        assert_eq!(&t[h.opts.upgrade.clone().unwrap()], "websocket");
        assert!(h.opts.te_trailers && h.opts.expect_continue && !h.opts.close);
        let hop = h.headers.iter().find(|x| &t[x.name.clone()] == "X-Hop");
        assert!(hop.unwrap().dropped);
        let h = req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close, te\r\nTE: trailers\r\n\r\n")
            .unwrap();
        assert!(h.opts.close && !h.opts.te_trailers);
    }

    #[test]
    fn host_values() {
        for ok in ["a", "a:1", "10.0.0.1:9000", "[::1]:80", "[::1]", "x_y.z-w"] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in ["", ":80", "a:b", "[::1", "a b", "a\"b", "[zz]", "a:123456"] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn responses() {
        let h = resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!((h.status, h.framing), (200, Framing::Length(3)));
        assert_eq!(h.framing_for(true), Framing::None);
        let h = resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked, "chunked wins over a length");
        let h = resp("HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Close);
        let h = resp("HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!(h.framing_for(false), Framing::None);
        assert!(resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n").is_err());
        let h = resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").unwrap();
        assert!(h.opts.close);
    }

    /// The byte-by-byte walks `head_end` and `check_line_endings` replaced, as the reference.
    fn walked_head_end(buf: &[u8]) -> Option<usize> {
        (0..buf.len()).find_map(|i| match (buf[i], buf.get(i + 1), buf.get(i + 2)) {
            (b'\n', Some(b'\n'), _) => Some(i + 2),
            (b'\n', Some(b'\r'), Some(b'\n')) => Some(i + 3),
            _ => None,
        })
    }

    fn walked_line_endings(head: &[u8]) -> Result<(), HeadError> {
        let mut prev = 0u8;
        for (i, &b) in head.iter().enumerate() {
            if b == b'\n' {
                if prev != b'\r' {
                    return Err(HeadError::Syntax("bare LF in the head"));
                }
                if matches!(head.get(i + 1), Some(b' ' | b'\t')) {
                    return Err(HeadError::Syntax("obs-fold in the head"));
                }
            }
            prev = b;
        }
        Ok(())
    }

    #[test]
    fn vector_searches_agree_with_the_byte_walk() {
        // Short strings over the bytes that matter, and long ones (past the vector width),
        // from a fixed xorshift sequence.
        let alphabet = [b'a', b'\r', b'\n', b' ', b'\t', b':'];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..30_000 {
            let len = if case % 10 == 0 {
                200
            } else {
                (next() % 24) as usize
            };
            let buf: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            assert_eq!(head_end(&buf), walked_head_end(&buf), "{buf:?}");
            assert_eq!(
                check_line_endings(&buf),
                walked_line_endings(&buf),
                "{buf:?}"
            );
        }
        // A long clean head: its end is found past the vector width, and it passes the check.
        let head = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X-Long: 0123456789\r\n".repeat(40)
        );
        assert_eq!(head_end(head.as_bytes()), Some(head.len()));
        assert_eq!(check_line_endings(head.as_bytes()), Ok(()));
    }

    #[test]
    fn head_end_finds_bare_lf_heads_too() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn obs_text_reason_and_status_below_100() {
        // Found by the http_head fuzz target: the reason's range was computed from a pointer
        // outside the buffer (overflow in debug builds, a range far past the head in release).
        let h = resp("HTTP/1.0 200 OK\u{ef}\r\n\r\n").unwrap();
        assert_eq!(h.reason, 0..0);
        assert_eq!(h.status, 200);
        // Also from the fuzzer: status 000-099 is refused, not forwarded.
        let mut h = ResponseHead::default();
        assert_eq!(
            parse_response(b"HTTP/1.0 000 OK\r\n\r\n", &mut h),
            Err(HeadError::Syntax("invalid status code"))
        );
        let t = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(&t[resp(t).unwrap().reason], "Not Found");
    }
}
