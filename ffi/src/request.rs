//! The blocking request helper (the engine's `sidekick::Client` on the balancer's runtime) and
//! the response object it returns.

use std::ffi::{c_char, CString};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};

use crate::balancer::sidekick_balancer;
use crate::error::{c_string, sidekick_error, sidekick_status, Failure};
use crate::ffi::{self, Castable, StrArrayError};

/// The response of `sidekick_balancer_request`: status, headers and the whole body.
///
/// Owned by the caller; free it with `sidekick_response_free`. Immutable: its accessors may be
/// called from any thread at once. Pointers it returns stay valid until it is freed.
#[derive(Debug)]
pub struct sidekick_response {
    _private: [u8; 0],
}

#[derive(Debug)]
pub(crate) struct ResponseObj {
    status: u16,
    /// One entry per header name (lowercase), repeated values joined with ", ".
    headers: Vec<(HeaderName, CString)>,
    body: Vec<u8>,
}

impl Castable for sidekick_response {
    type RustType = ResponseObj;
}

fn build_request(
    method: Option<&str>,
    target: &str,
    headers: &[&str],
    body: &[u8],
) -> Result<http::Request<Full<Bytes>>, Failure> {
    let method = method.unwrap_or("GET");
    let mut req = http::Request::builder()
        .method(
            http::Method::from_bytes(method.as_bytes())
                .map_err(|_| Failure::invalid(format!("`{method}` is not an HTTP method")))?,
        )
        .uri(target);
    for (i, h) in headers.iter().enumerate() {
        let bad = || {
            Failure::invalid(format!(
                "headers[{i}] `{h}` is not a valid `Name: value` header"
            ))
        };
        let (name, value) = h.split_once(':').ok_or_else(bad)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
        req = req.header(name, value);
    }
    req.body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| Failure::invalid(format!("`{target}` is not a valid request target: {e}")))
}

fn collect_headers(map: &http::HeaderMap) -> Vec<(HeaderName, CString)> {
    map.keys()
        .map(|name| {
            let joined = map
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ");
            (name.clone(), c_string(&joined))
        })
        .collect()
}

/// Send one HTTP/1.1 request through the balancer and wait for the whole response: the endpoint
/// is picked, the request sent, the outcome reported, and failures retried on another endpoint
/// (connect failures always; idempotent requests also on resets, timeouts and `retry_statuses`,
/// within `max_attempts` and the retry budget). For simple C callers; services with their own
/// HTTP stack use `sidekick_balancer_pick` and `sidekick_lease_finish` instead.
///
/// - `method`: e.g. `"GET"`, `"PUT"`; NULL means `"GET"`.
/// - `target`: a path with optional query (`"/bucket/key?x=1"`) or a full URL, whose scheme and
///   authority are replaced by the endpoint's (the authority is kept as `Host`, see `host_policy`).
/// - `headers`: `n_headers` strings `"Name: value"` (NULL when `n_headers` is 0).
/// - `body`, `body_len`: the request body (NULL when `body_len` is 0); copied during the call.
/// - `timeout_ms`: deadline of the whole call; 0 means none (then only `attempt_timeout_ms` and
///   `connect_timeout_ms` bound it).
///
/// Any response is success, whatever its status: `*out` receives it (written only on success).
/// Failures: `SIDEKICK_STATUS_NO_ENDPOINT`, `_CONNECT`, `_TIMEOUT`, `_REQUEST`, `_BODY`,
/// `_INVALID_ARGUMENT` (bad method, target or header), `_RUNTIME` (called from a runtime thread).
/// Ownership: the caller owns `*out` and frees it with `sidekick_response_free`; every input is
/// only read during the call. Threads: any of yours, concurrently; blocks the calling thread.
/// Panics: `SIDEKICK_STATUS_PANIC`.
#[no_mangle]
#[allow(clippy::too_many_arguments)] // the C signature: one argument per request part
pub extern "C" fn sidekick_balancer_request(
    b: *const sidekick_balancer,
    method: *const c_char,
    target: *const c_char,
    headers: *const *const c_char,
    n_headers: usize,
    body: *const u8,
    body_len: usize,
    timeout_ms: u64,
    out: *mut *mut sidekick_response,
    err: *mut *mut sidekick_error,
) -> sidekick_status {
    ffi::status_boundary(err, || {
        let obj = ffi::try_ref(b).ok_or_else(|| Failure::null("b"))?;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let not_utf8 = |name: &str| Failure::invalid(format!("argument `{name}` is not UTF-8"));
        let method = ffi::try_str(method).map_err(|()| not_utf8("method"))?;
        let target = ffi::try_str(target)
            .map_err(|()| not_utf8("target"))?
            .ok_or_else(|| Failure::null("target"))?;
        let headers = ffi::try_str_array(headers, n_headers).map_err(|e| match e {
            StrArrayError::NullArray => Failure::null("headers"),
            StrArrayError::NullElement(i) => Failure::null(&format!("headers[{i}]")),
            StrArrayError::NotUtf8(i) => not_utf8(&format!("headers[{i}]")),
        })?;
        let body = ffi::try_slice(body, body_len).ok_or_else(|| Failure::null("body"))?;
        let req = build_request(method, target, &headers, body)?;

        let client = obj.client.clone();
        let exchange = async move {
            let resp = client.request(req).await?;
            let (parts, incoming) = resp.into_parts();
            let body = incoming.collect().await.map_err(|e| {
                Failure::new(
                    sidekick_status::SIDEKICK_STATUS_BODY,
                    format!("reading the response body failed: {e}"),
                )
            })?;
            Ok::<_, Failure>(ResponseObj {
                status: parts.status.as_u16(),
                headers: collect_headers(&parts.headers),
                body: body.to_bytes().to_vec(),
            })
        };
        let response = match timeout_ms {
            0 => obj.runtime.block_on(exchange)??,
            ms => {
                let limit = Duration::from_millis(ms);
                obj.runtime
                    .block_on(async { tokio::time::timeout(limit, exchange).await })?
                    .map_err(|_| {
                        Failure::new(
                            sidekick_status::SIDEKICK_STATUS_TIMEOUT,
                            format!("request timed out after {ms} ms"),
                        )
                    })??
            }
        };
        ffi::write_out(out, ffi::to_boxed_mut_ptr::<sidekick_response>(response));
        Ok(())
    })
}

/// The response's HTTP status (100-599).
///
/// NULL: 0. Threads: any, concurrently. Panics: 0.
#[no_mangle]
pub extern "C" fn sidekick_response_status(resp: *const sidekick_response) -> u16 {
    ffi::boundary(|| ffi::try_ref(resp).map_or(0, |r| r.status))
}

/// The response body's bytes (not NUL-terminated; `sidekick_response_body_len` of them). An
/// empty body gives a non-NULL pointer to zero bytes.
///
/// Ownership: borrowed from `resp`, valid until it is freed. NULL: NULL. Threads: any,
/// concurrently. Panics: NULL.
#[no_mangle]
pub extern "C" fn sidekick_response_body(resp: *const sidekick_response) -> *const u8 {
    ffi::boundary(|| ffi::try_ref(resp).map_or(std::ptr::null(), |r| r.body.as_ptr()))
}

/// The response body's length in bytes.
///
/// NULL: 0. Threads: any, concurrently. Panics: 0.
#[no_mangle]
pub extern "C" fn sidekick_response_body_len(resp: *const sidekick_response) -> usize {
    ffi::boundary(|| ffi::try_ref(resp).map_or(0, |r| r.body.len()))
}

/// The value of response header `name` (case-insensitive), repeated values joined with `", "`;
/// NULL when the response has no such header.
///
/// Ownership: borrowed from `resp`, valid until it is freed. NULL `resp` or `name` (or a `name`
/// that is not UTF-8): NULL. Threads: any, concurrently. Panics: NULL.
#[no_mangle]
pub extern "C" fn sidekick_response_header(
    resp: *const sidekick_response,
    name: *const c_char,
) -> *const c_char {
    ffi::boundary(|| {
        let (Some(r), Ok(Some(name))) = (ffi::try_ref(resp), ffi::try_str(name)) else {
            return std::ptr::null();
        };
        r.headers
            .iter()
            .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
            .map_or(std::ptr::null(), |(_, v)| v.as_ptr())
    })
}

/// Free a response.
///
/// Ownership: consumes `resp`; pointers borrowed from it become invalid. NULL: does nothing.
/// Threads: any, once no other thread reads it. Panics: never unwinds.
#[no_mangle]
pub extern "C" fn sidekick_response_free(resp: *mut sidekick_response) {
    ffi::boundary(|| drop(ffi::try_take(resp)))
}
