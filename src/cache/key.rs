//! Which entry a request maps to.
//!
//! An entry is named by the request's `Host` (or the URI's authority when there is no `Host`),
//! its path and its query, byte for byte: the query is not re-sorted or re-encoded, so the
//! request that reaches the origin is exactly the client's (sidekick re-encoded it, which broke
//! presigned URLs). The object name in the cache bucket is the SHA-256 of that text in hex,
//! under two levels of two-character prefixes (`ab/cd/abcd…`), which spreads entries over
//! directories on file-system-backed stores. The text itself is kept in the entry and compared
//! on every read, so a hash collision can never serve another URL's body.
//!
//! One exception to "byte for byte": the `x-id` query parameter, which the AWS SDKs add to name
//! the operation (`?x-id=GetObject`, `?x-id=PutObject`) and S3 ignores, is left out of the key,
//! so that an SDK's GET, HEAD, PUT and DELETE of one object name the same entry.
//!
//! Method, credentials and `Range` are not part of the name: GET and HEAD share an entry, and
//! credentials are checked by the origin on every use (see the module documentation).

use http::header::HOST;
use http::request::Parts;

/// The name of an entry: the text it stands for and the object that holds it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// `host` + path + `?query` (when there is a query).
    pub(crate) text: Vec<u8>,
    /// The object name in the cache bucket.
    pub(crate) object: String,
}

impl Key {
    /// The key of a request.
    pub(crate) fn of(parts: &Parts) -> Key {
        let host: &[u8] = match parts.headers.get(HOST) {
            Some(h) => h.as_bytes(),
            None => parts
                .uri
                .authority()
                .map_or(&[][..], |a| a.as_str().as_bytes()),
        };
        let path = parts.uri.path();
        let mut text = Vec::with_capacity(host.len() + path.len() + 32);
        text.extend_from_slice(host);
        text.extend_from_slice(path.as_bytes());
        let base = text.len();
        if let Some(q) = parts.uri.query() {
            for pair in q.split('&').filter(|p| !is_operation_id(p)) {
                text.push(if text.len() == base { b'?' } else { b'&' });
                text.extend_from_slice(pair.as_bytes());
            }
        }
        Key::from_text(text)
    }

    /// The key of the same host and path without the query (what a write to the object
    /// invalidates besides its exact key), when the key has a query.
    pub(crate) fn without_query(parts: &Parts) -> Option<Key> {
        let k = Key::of(parts);
        let host_path = k.text.iter().position(|&b| b == b'?')?;
        Some(Key::from_text(k.text[..host_path].to_vec()))
    }

    fn from_text(text: Vec<u8>) -> Key {
        let digest = ring::digest::digest(&ring::digest::SHA256, &text);
        let mut hex = String::with_capacity(64);
        for b in digest.as_ref() {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        let object = format!("{}/{}/{hex}", &hex[0..2], &hex[2..4]);
        Key { text, object }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether a query pair is the SDKs' operation name (`x-id=...`).
fn is_operation_id(pair: &str) -> bool {
    pair == "x-id" || pair.starts_with("x-id=")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut b = http::Request::get(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn host_path_and_query_all_count() {
        let a = Key::of(&parts("/b/k?x=1&y=2", Some("s3:9000")));
        assert_eq!(a.text, b"s3:9000/b/k?x=1&y=2");
        // Query order is kept as sent: a different order is a different entry.
        assert_ne!(a, Key::of(&parts("/b/k?y=2&x=1", Some("s3:9000"))));
        assert_ne!(a, Key::of(&parts("/b/k?x=1&y=2", Some("s3:9001"))));
        assert_ne!(a, Key::of(&parts("/b/k2?x=1&y=2", Some("s3:9000"))));
        let abs = Key::of(&parts("http://s3:9000/b/k?x=1&y=2", None));
        assert_eq!(abs, a);
        assert_eq!(a.object.len(), 2 + 1 + 2 + 1 + 64);
        assert_eq!(&a.object[0..2], &a.object[6..8]);
        assert_eq!(&a.object[3..5], &a.object[8..10]);
    }

    #[test]
    fn the_sdk_operation_id_is_not_part_of_the_key() {
        let plain = Key::of(&parts("/b/k", Some("h")));
        assert_eq!(Key::of(&parts("/b/k?x-id=GetObject", Some("h"))), plain);
        assert_eq!(
            Key::of(&parts("/b/k?versionId=3&x-id=GetObject", Some("h"))).text,
            b"h/b/k?versionId=3"
        );
        assert_eq!(
            Key::of(&parts("/b/k?x-id=GetObject&versionId=3", Some("h"))).text,
            b"h/b/k?versionId=3"
        );
        assert!(Key::without_query(&parts("/b/k?x-id=PutObject", Some("h"))).is_none());
    }

    #[test]
    fn without_query_drops_only_the_query() {
        let p = parts("/b/k?uploadId=7", Some("h"));
        assert_eq!(
            Key::without_query(&p).unwrap(),
            Key::of(&parts("/b/k", Some("h")))
        );
        assert!(Key::without_query(&parts("/b/k", Some("h"))).is_none());
    }
}
