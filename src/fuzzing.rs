//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`, hidden from the docs).
//!
//! The parsers worth fuzzing are crate-private (the cache's stored-entry decoder, the legacy-PEM
//! decryption, the sidecar's HTTP/1.1 head parser and chunked scanner) or spread over several
//! modules. These thin functions give the fuzz targets one
//! `&[u8]`/`&str` door to each without widening the public API. Where the property to check
//! needs crate-private types (the cache head), the check is made here and a violation panics,
//! which is what libFuzzer reports; everything else is checked in the target itself.
//!
//! Nothing here is for applications: the module exists only with the `fuzzing` feature.

use std::time::Duration;

use crate::cache::entry::{Head, PREFIX};
use crate::sidecar::{format, tls};

pub use crate::sidecar::flags::{parse_args, Command, Config, UsageError};
pub use crate::sidecar::forward::chunked::{ChunkError, Chunked};
pub use crate::sidecar::forward::parse::{
    head_end, parse_request, parse_response, Class, Framing, HeadError, RequestHead, ResponseHead,
    MAX_HEADERS,
};
pub use crate::site::{expand_pool, parse_site, SiteError, Target};

/// `time.ParseDuration` as the sidecar's flags read it: signed nanoseconds or a message.
pub fn parse_go_duration(text: &str) -> Result<i128, String> {
    format::parse_go_duration(text)
}

/// `time.Duration.String()` as the sidecar's traces print it.
pub fn print_go_duration(d: Duration) -> String {
    format::go_duration(d)
}

/// Decrypt a legacy encrypted PEM key (`Proc-Type: 4,ENCRYPTED`, the `--key-password` form):
/// the secret DER bytes, or the message the sidecar would print.
pub fn decrypt_legacy_pem(pem: &str, password: &str) -> Result<Vec<u8>, String> {
    tls::legacy_pem::decrypt(pem, password).map(|key| key.secret_der().to_vec())
}

/// Decode `block` as a stored cache-entry head. When it decodes, check that encoding the head
/// and decoding that again gives the same head, that the encoding's prefix announces its own
/// length, and that every strict prefix of the encoding is refused; panic when not. Returns
/// the re-encoding (`None`: `block` is not a head).
pub fn cache_entry_decode(block: &[u8]) -> Option<Vec<u8>> {
    let _ = Head::block_len(block);
    let head = Head::decode(block).ok()?;
    // Names are lower-cased and values regrouped by name on decode, neither of which grows
    // the head, so whatever decoded fits when encoded again.
    let encoded = match head.encode() {
        Some(e) => e,
        None => panic!("a decoded head does not encode again: {head:?}"),
    };
    assert!(
        encoded.len() <= block.len(),
        "re-encoding grew the head from {} to {} bytes",
        block.len(),
        encoded.len()
    );
    assert_eq!(Head::block_len(&encoded[..PREFIX]), Ok(encoded.len()));
    assert_eq!(Head::decode(&encoded).as_ref(), Ok(&head));
    for cut in [encoded.len() - 1, PREFIX, (PREFIX + encoded.len()) / 2] {
        if cut < encoded.len() {
            assert!(
                Head::decode(&encoded[..cut]).is_err(),
                "a head cut to {cut} of {} bytes decodes",
                encoded.len()
            );
        }
    }
    Some(encoded.to_vec())
}

/// Build a cache-entry head from arbitrary bytes (status, body length, key text, headers and
/// varied request headers, each taken from the input when the bytes make a valid one), encode
/// it and check that decoding gives it back; panic when not. Returns whether a head was built
/// and encoded (`false`: it exceeded the head size limit, which encode must refuse).
pub fn cache_entry_round_trip(data: &[u8]) -> bool {
    use http::header::{HeaderMap, HeaderName, HeaderValue};
    use http::StatusCode;

    let mut input = Input(data);
    let status = StatusCode::from_u16(100 + input.u16() % 900).unwrap_or(StatusCode::OK);
    let body_len = u64::from(input.u16()) << (input.byte() % 48);
    let key_text = input.chunk().to_vec();
    let mut headers = HeaderMap::new();
    let mut vary = Vec::new();
    while !input.0.is_empty() {
        let selector = input.byte();
        let name = HeaderName::from_bytes(input.chunk());
        let value = HeaderValue::from_bytes(input.chunk());
        let Ok(name) = name else { continue };
        match (selector % 3, value) {
            (0, Ok(value)) => {
                headers.append(name, value);
            }
            (1, Ok(value)) => vary.push((name, Some(value))),
            (2, _) => vary.push((name, None)),
            _ => {}
        }
    }
    let head = Head {
        status,
        headers,
        key_text,
        vary,
        body_len,
    };
    let Some(encoded) = head.encode() else {
        return false;
    };
    assert_eq!(Head::block_len(&encoded[..PREFIX]), Ok(encoded.len()));
    assert_eq!(Head::decode(&encoded), Ok(head));
    true
}

/// A cursor over fuzz bytes that yields zeros once they run out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// A length byte, then up to that many bytes.
    fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte()).min(self.0.len());
        let (chunk, rest) = self.0.split_at(n);
        self.0 = rest;
        chunk
    }
}
