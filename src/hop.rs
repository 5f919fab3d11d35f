//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so whatever forwards or
//! stores a message (the sidecar's proxy, the shared cache) drops them. One list, so that the
//! two never disagree about what is end-to-end.

use http::header::{self, HeaderMap, HeaderName};

const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Remove the hop-by-hop headers and those the `Connection` header names. `keep_trailer` keeps
/// the `Trailer` announcement (a proxy that forwards trailers: hyper only sends announced
/// ones); otherwise it goes too.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap, keep_trailer: bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !keep_trailer || *n != header::TRAILER)
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        PROXY_CONNECTION,
        KEEP_ALIVE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        h.remove(n);
    }
    if !keep_trailer {
        h.remove(header::TRAILER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn hop_headers_and_connection_named_ones_go() {
        let all = [
            ("connection", "close, x-hop, trailer"),
            ("x-hop", "1"),
            ("keep-alive", "5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("trailer", "x-sum"),
            ("etag", "\"e\""),
        ];
        let mut h = map(&all);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["etag"]);
        let mut h = map(&all);
        strip_hop_by_hop(&mut h, true);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["etag", "trailer"]);
    }
}
