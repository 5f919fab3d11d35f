//! The sidecar's HTTP/1.1 head parser (`src/sidecar/forward/parse.rs`), requests and responses:
//! never panics; every range it returns lies inside the head; the verdict does not depend on
//! how much of the stream has been read (every strict prefix of a head is "incomplete", bytes
//! after it change nothing); an accepted request keeps RFC 9112's framing rules (no
//! Content-Length with Transfer-Encoding, one Host, Host on HTTP/1.1); and the head the
//! sidecar forwards for an accepted request (rebuilt here the way the forwarding loop writes
//! it) is accepted again with the same method, target, Host and framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidekick::fuzzing::{
    head_end, parse_request, parse_response, Class, Framing, RequestHead, ResponseHead, MAX_HEADERS,
};

fn within(r: &std::ops::Range<usize>, end: usize) {
    assert!(
        r.start <= r.end && r.end <= end,
        "range {r:?} outside the head (0..{end})"
    );
}

/// The request head as the forwarding loop writes it towards a backend.
fn forwarded(buf: &[u8], h: &RequestHead) -> Vec<u8> {
    let mut w = Vec::new();
    let line = |w: &mut Vec<u8>, name: &[u8], value: &[u8]| {
        w.extend_from_slice(name);
        w.extend_from_slice(b": ");
        w.extend_from_slice(value);
        w.extend_from_slice(b"\r\n");
    };
    w.extend_from_slice(&buf[h.method.clone()]);
    w.push(b' ');
    let path = &buf[h.path.clone()];
    if path.first() != Some(&b'/') {
        w.push(b'/');
    }
    w.extend_from_slice(path);
    w.extend_from_slice(b" HTTP/1.1\r\n");
    for x in &h.headers {
        if matches!(x.class, Class::Other | Class::Server | Class::XProxy) && !x.dropped {
            line(&mut w, &buf[x.name.clone()], &buf[x.value.clone()]);
        }
    }
    line(&mut w, b"X-Forwarded-For", b"127.0.0.1");
    match &h.host {
        Some(host) => line(&mut w, b"Host", &buf[host.clone()]),
        None => line(&mut w, b"Host", b"backend:9000"),
    }
    match h.framing {
        Framing::Length(n) => line(&mut w, b"Content-Length", n.to_string().as_bytes()),
        Framing::Chunked => line(&mut w, b"Transfer-Encoding", b"chunked"),
        _ => {}
    }
    if h.opts.te_trailers {
        line(&mut w, b"TE", b"trailers");
    }
    if let Some(u) = &h.opts.upgrade {
        line(&mut w, b"Connection", b"Upgrade");
        line(&mut w, b"Upgrade", &buf[u.clone()]);
    }
    w.extend_from_slice(b"\r\n");
    w
}

fn request(buf: &[u8]) {
    let mut h = RequestHead::default();
    let verdict = parse_request(buf, &mut h);
    let mut longer = buf.to_vec();
    longer.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    match verdict {
        Ok(None) => assert_eq!(head_end(buf), None),
        Err(e) => {
            assert!(!e.reason().is_empty());
            let mut again = RequestHead::default();
            assert_eq!(
                parse_request(&longer, &mut again).err(),
                Some(e),
                "bytes after the head"
            );
        }
        Ok(Some(())) => {
            let end = h.len;
            assert_eq!(head_end(buf), Some(end));
            for r in [&h.method, &h.path] {
                within(r, end);
            }
            assert!(!h.method.is_empty());
            for x in &h.headers {
                within(&x.name, end);
                within(&x.value, end);
            }
            if let Some(r) = h.host.as_ref().or(h.opts.upgrade.as_ref()) {
                within(r, end);
            }
            let count = |c: Class| h.headers.iter().filter(|x| x.class == c).count();
            assert!(
                count(Class::ContentLength) == 0 || count(Class::TransferEncoding) == 0,
                "Content-Length with Transfer-Encoding accepted"
            );
            assert!(count(Class::Host) <= 1, "two Host headers accepted");
            if h.minor == 1 && buf[h.path.clone()].first() == Some(&b'/') {
                assert!(h.host.is_some(), "HTTP/1.1 without Host accepted");
            }
            if let Some(host) = &h.host {
                let host = &buf[host.clone()];
                assert!(!host.is_empty());
                assert!(
                    !host.iter().any(|b| b" \t\r\n@/?#".contains(b)),
                    "Host {host:?} accepted"
                );
            }
            match h.framing {
                Framing::Chunked => assert!(count(Class::TransferEncoding) > 0 && h.minor == 1),
                Framing::Length(n) => assert!(n > 0 && count(Class::ContentLength) > 0),
                Framing::None => assert_eq!(count(Class::TransferEncoding), 0),
                Framing::Close => panic!("a request framed by the connection's close"),
            }
            // Streaming: a strict prefix is incomplete; bytes after the head change nothing.
            for cut in [end - 1, end / 2, end.saturating_sub(3)] {
                let mut p = RequestHead::default();
                assert_eq!(parse_request(&buf[..cut], &mut p), Ok(None), "cut at {cut}");
            }
            let mut again = RequestHead::default();
            assert_eq!(parse_request(&longer, &mut again), Ok(Some(())));
            assert_eq!(
                format!("{h:?}"),
                format!("{again:?}"),
                "bytes after the head"
            );
            // What is forwarded is accepted again, with the same meaning (up to the header
            // count: the sidecar adds a few lines, and the backend's limit is its own).
            if h.headers.len() > MAX_HEADERS - 8 {
                return;
            }
            let fw = forwarded(buf, &h);
            let mut f = RequestHead::default();
            match parse_request(&fw, &mut f) {
                Ok(Some(())) => {}
                other => panic!(
                    "forwarded head refused ({other:?}):\n{}",
                    String::from_utf8_lossy(&fw)
                ),
            }
            assert_eq!(fw[f.method.clone()], buf[h.method.clone()]);
            let path = &buf[h.path.clone()];
            let fpath = &fw[f.path.clone()];
            if path.first() == Some(&b'/') {
                assert_eq!(fpath, path);
            } else {
                assert_eq!(&fpath[1..], path);
            }
            if let Some(host) = &h.host {
                assert_eq!(
                    f.host.as_ref().map(|r| &fw[r.clone()]),
                    Some(&buf[host.clone()])
                );
            }
            assert_eq!(f.framing, h.framing, "{}", String::from_utf8_lossy(&fw));
            assert_eq!(f.opts.te_trailers, h.opts.te_trailers);
            assert_eq!(f.opts.upgrade.is_some(), h.opts.upgrade.is_some());
        }
    }
}

fn response(buf: &[u8]) {
    let mut h = ResponseHead::default();
    let verdict = parse_response(buf, &mut h);
    let mut longer = buf.to_vec();
    longer.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
    match verdict {
        Ok(None) => assert_eq!(head_end(buf), None),
        Err(e) => {
            let mut again = ResponseHead::default();
            assert_eq!(
                parse_response(&longer, &mut again).err(),
                Some(e),
                "bytes after the head"
            );
        }
        Ok(Some(())) => {
            let end = h.len;
            assert_eq!(head_end(buf), Some(end));
            within(&h.reason, end);
            for x in &h.headers {
                within(&x.name, end);
                within(&x.value, end);
            }
            assert!((100..=999).contains(&h.status));
            let count = |c: Class| h.headers.iter().filter(|x| x.class == c).count();
            // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3): chunked when its
            // final coding is chunked, else the body runs to the connection's close.
            match h.framing {
                Framing::Length(_) => assert_eq!(count(Class::TransferEncoding), 0),
                Framing::Chunked => assert!(count(Class::TransferEncoding) > 0),
                Framing::None => panic!("a response head without a body delimiter"),
                Framing::Close => {}
            }
            if count(Class::TransferEncoding) > 0 {
                assert!(matches!(h.framing, Framing::Chunked | Framing::Close));
            }
            for head in [true, false] {
                let f = h.framing_for(head);
                if head || h.status < 200 || h.status == 204 || h.status == 304 {
                    assert_eq!(f, Framing::None);
                } else {
                    assert_eq!(f, h.framing);
                }
            }
            for cut in [end - 1, end / 2] {
                let mut p = ResponseHead::default();
                assert_eq!(
                    parse_response(&buf[..cut], &mut p),
                    Ok(None),
                    "cut at {cut}"
                );
            }
            let mut again = ResponseHead::default();
            assert_eq!(parse_response(&longer, &mut again), Ok(Some(())));
            assert_eq!(
                format!("{h:?}"),
                format!("{again:?}"),
                "bytes after the head"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, buf)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        request(buf);
    } else {
        response(buf);
    }
});
