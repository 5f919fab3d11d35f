//! The rules: which requests may use the cache, which responses may be stored, how a stored
//! head is refreshed by a `304`.
//!
//! They are kept apart from the plumbing so that each can be read (and tested) on its own.
//! The rules are deliberately narrow — a shared cache that serves one client's bytes to
//! another must err on the side of not storing:
//!
//! - only `GET` and `HEAD` look entries up; `Range` requests and requests with their own
//!   `If-None-Match`, `If-Modified-Since` or `If-Range` go straight to the origin (the cache's
//!   own `If-None-Match` would change their meaning). `If-Match` and `If-Unmodified-Since`
//!   combine safely with it (the origin evaluates them first) and are allowed;
//! - only a `200` to a `GET` with a `Content-Length` of at least the minimum size, an `ETag`
//!   (nothing to revalidate against otherwise), no `Content-Range`, no `Cache-Control:
//!   no-store` or `private` and no `Vary: *` is stored, and never when the request said
//!   `Cache-Control: no-store`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::response::Parts as ResponseParts;
use http::{Method, StatusCode};

/// Whether a request may look an entry up.
pub(crate) fn may_look_up(req: &Parts) -> bool {
    (req.method == Method::GET || req.method == Method::HEAD)
        && ![
            header::RANGE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_RANGE,
        ]
        .iter()
        .any(|h| req.headers.contains_key(h))
}

/// Whether a request's answer may be stored (besides what the answer itself says).
pub(crate) fn request_allows_store(req: &Parts) -> bool {
    req.method == Method::GET && !cache_control_has(&req.headers, &["no-store"])
}

/// Whether a request changes the object its URL names: its success invalidates the entry.
pub(crate) fn is_write(method: &Method) -> bool {
    *method == Method::PUT || *method == Method::POST || *method == Method::DELETE
}

/// The body length of a response that may be stored, or why it may not.
pub(crate) fn storable(resp: &ResponseParts, min_size: u64) -> Result<u64, &'static str> {
    if resp.status != StatusCode::OK {
        return Err("status is not 200");
    }
    let h = &resp.headers;
    if h.contains_key(header::CONTENT_RANGE) {
        return Err("partial content");
    }
    let len = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or("no Content-Length")?;
    if len < min_size {
        return Err("smaller than the minimum size");
    }
    if !h.contains_key(header::ETAG) {
        return Err("no ETag");
    }
    if cache_control_has(h, &["no-store", "private"]) {
        return Err("Cache-Control forbids storing");
    }
    if vary_fields(h).is_none() {
        return Err("Vary: *");
    }
    Ok(len)
}

/// The request headers a response varies on; `None` for `Vary: *`.
pub(crate) fn vary_fields(h: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut out = Vec::new();
    for v in h.get_all(header::VARY) {
        let s = v.to_str().ok()?;
        for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if t == "*" {
                return None;
            }
            let name = HeaderName::from_bytes(t.as_bytes()).ok()?;
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    Some(out)
}

/// The values a request has for the varied headers (comma-joined when repeated).
pub(crate) fn vary_values(
    fields: &[HeaderName],
    req: &HeaderMap,
) -> Vec<(HeaderName, Option<HeaderValue>)> {
    fields
        .iter()
        .map(|name| (name.clone(), joined(req, name)))
        .collect()
}

/// Whether a request selects the same variant as the one stored.
pub(crate) fn vary_matches(stored: &[(HeaderName, Option<HeaderValue>)], req: &HeaderMap) -> bool {
    stored.iter().all(|(name, v)| joined(req, name) == *v)
}

fn joined(h: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut it = h.get_all(name).iter();
    let first = it.next()?;
    let mut all = first.as_bytes().to_vec();
    for v in it {
        all.extend_from_slice(b", ");
        all.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&all).ok()
}

/// Whether `Cache-Control` lists one of `directives` (case-insensitive, arguments ignored).
pub(crate) fn cache_control_has(h: &HeaderMap, directives: &[&str]) -> bool {
    h.get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(|d| d.split('=').next().unwrap_or("").trim())
        .any(|d| directives.iter().any(|want| d.eq_ignore_ascii_case(want)))
}

/// The headers of a hit: the stored ones, each replaced by the `304`'s when it sent that
/// header (RFC 9111 §4.3.4: `ETag`, `Date`, `Last-Modified`, request ids...), except the
/// framing of the body, which belongs to the stored response.
pub(crate) fn merge_not_modified(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut out = stored.clone();
    let mut fresh = not_modified.clone();
    crate::hop::strip_hop_by_hop(&mut fresh, false);
    for keep in [
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::CONTENT_ENCODING,
        header::CONTENT_TYPE,
    ] {
        fresh.remove(keep);
    }
    let names: Vec<HeaderName> = fresh.keys().cloned().collect();
    for name in names {
        out.remove(&name);
        for v in fresh.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

/// Whether two entity tags match by the weak comparison (RFC 9110 §8.8.3.2), the one
/// `If-None-Match` uses.
pub(crate) fn weak_match(a: &HeaderValue, b: &HeaderValue) -> bool {
    let strip = |v: &HeaderValue| -> Vec<u8> {
        let s = v.as_bytes();
        s.strip_prefix(b"W/").unwrap_or(s).to_vec()
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri("/b/k");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseParts {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn which_requests_look_up() {
        assert!(may_look_up(&req("GET", &[])));
        assert!(may_look_up(&req("HEAD", &[])));
        assert!(may_look_up(&req("GET", &[("if-match", "\"x\"")])));
        assert!(!may_look_up(&req("PUT", &[])));
        assert!(!may_look_up(&req("GET", &[("range", "bytes=0-1")])));
        assert!(!may_look_up(&req("GET", &[("if-none-match", "\"x\"")])));
        assert!(!may_look_up(&req("GET", &[("if-modified-since", "x")])));
        assert!(request_allows_store(&req("GET", &[])));
        assert!(!request_allows_store(&req("HEAD", &[])));
        assert!(!request_allows_store(&req(
            "GET",
            &[("cache-control", "max-age=0, No-Store")]
        )));
    }

    #[test]
    fn which_responses_are_stored() {
        let ok = [("content-length", "2000"), ("etag", "\"e\"")];
        assert_eq!(storable(&resp(200, &ok), 1000), Ok(2000));
        assert_eq!(storable(&resp(200, &ok), 2000), Ok(2000));
        assert!(storable(&resp(200, &ok), 2001).is_err());
        assert!(storable(&resp(206, &ok), 0).is_err());
        assert!(storable(&resp(404, &ok), 0).is_err());
        assert!(storable(&resp(200, &[("content-length", "2000")]), 0).is_err());
        assert!(storable(&resp(200, &[("etag", "\"e\"")]), 0).is_err());
        for extra in [
            ("cache-control", "no-store"),
            ("cache-control", "public, private"),
            ("content-range", "bytes 0-1/2"),
            ("vary", "Origin, *"),
        ] {
            let mut h = ok.to_vec();
            h.push(extra);
            assert!(storable(&resp(200, &h), 0).is_err(), "{extra:?}");
        }
        let mut h = ok.to_vec();
        h.push(("cache-control", "no-cache, max-age=60"));
        assert!(storable(&resp(200, &h), 0).is_ok());
    }

    #[test]
    fn vary_selects_the_variant() {
        let r = resp(
            200,
            &[("vary", "Origin, accept-encoding"), ("vary", "origin")],
        );
        let fields = vary_fields(&r.headers).unwrap();
        assert_eq!(fields.len(), 2);
        let a = req("GET", &[("origin", "https://a")]);
        let stored = vary_values(&fields, &a.headers);
        assert!(vary_matches(&stored, &a.headers));
        assert!(!vary_matches(
            &stored,
            &req("GET", &[("origin", "https://b")]).headers
        ));
        assert!(!vary_matches(&stored, &req("GET", &[]).headers));
    }

    #[test]
    fn not_modified_refreshes_all_but_the_framing() {
        let stored = resp(
            200,
            &[
                ("content-length", "10"),
                ("content-type", "text/plain"),
                ("etag", "\"e\""),
                ("x-amz-request-id", "old"),
                ("x-amz-meta-a", "1"),
            ],
        );
        let nm = resp(
            304,
            &[
                ("content-length", "0"),
                ("x-amz-request-id", "new"),
                ("date", "now"),
                ("connection", "close"),
            ],
        );
        let h = merge_not_modified(&stored.headers, &nm.headers);
        assert_eq!(h["content-length"], "10");
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h["x-amz-request-id"], "new");
        assert_eq!(h["date"], "now");
        assert_eq!(h["x-amz-meta-a"], "1");
        assert!(!h.contains_key("connection"));
    }

    #[test]
    fn weak_comparison() {
        let a = HeaderValue::from_static("\"x\"");
        assert!(weak_match(&a, &HeaderValue::from_static("W/\"x\"")));
        assert!(!weak_match(&a, &HeaderValue::from_static("\"y\"")));
    }
}
