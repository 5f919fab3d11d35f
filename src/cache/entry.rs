//! How an entry is laid out in the cache bucket.
//!
//! One object holds everything: a head block (the origin's status and headers, the key text,
//! the request header values the response varies on, the body length) followed by the body
//! exactly as the origin sent it. A single object is written and read atomically by any S3
//! store, so a reader can never pair one version's headers with another version's body (a head
//! kept in a second object, or in user metadata next to a body being replaced, could). User
//! metadata would also limit the headers to 2 KiB of restricted characters; the block keeps
//! any header byte for byte.
//!
//! Layout, integers big-endian:
//!
//! ```text
//! "SKC1" | u32 n | n bytes of head:
//!     u16 status | u64 body length | u32 len, key text
//!     u16 count, then per header: u16 len, name | u32 len, value
//!     u16 count, then per varied request header: u16 len, name | u8 present | u32 len, value
//! body (body length bytes)
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

const MAGIC: &[u8; 4] = b"SKC1";
/// A head larger than this is not stored (and not trusted when read).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Bytes before the head proper: magic and length.
pub(crate) const PREFIX: usize = 8;

/// The head of an entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Head {
    /// The origin's status.
    pub(crate) status: StatusCode,
    /// The origin's headers (hop-by-hop ones removed).
    pub(crate) headers: HeaderMap,
    /// The key text (see `key.rs`), checked on read.
    pub(crate) key_text: Vec<u8>,
    /// The request headers the response varies on, with the values of the request that
    /// filled the entry (`None`: absent).
    pub(crate) vary: Vec<(HeaderName, Option<HeaderValue>)>,
    /// Length of the body that follows.
    pub(crate) body_len: u64,
}

/// Why stored bytes are not an entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Corrupt(pub(crate) &'static str);

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt cache entry: {}", self.0)
    }
}

impl std::error::Error for Corrupt {}

impl Head {
    /// The origin's `ETag`.
    pub(crate) fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(http::header::ETAG)
    }

    /// The block written before the body; `None` when it would exceed [`MAX_HEAD`].
    pub(crate) fn encode(&self) -> Option<Bytes> {
        let mut b = BytesMut::with_capacity(512);
        b.put_slice(MAGIC);
        b.put_u32(0);
        b.put_u16(self.status.as_u16());
        b.put_u64(self.body_len);
        put32(&mut b, &self.key_text)?;
        b.put_u16(u16::try_from(self.headers.len()).ok()?);
        for (k, v) in &self.headers {
            put16(&mut b, k.as_str().as_bytes())?;
            put32(&mut b, v.as_bytes())?;
        }
        b.put_u16(u16::try_from(self.vary.len()).ok()?);
        for (k, v) in &self.vary {
            put16(&mut b, k.as_str().as_bytes())?;
            match v {
                Some(v) => {
                    b.put_u8(1);
                    put32(&mut b, v.as_bytes())?;
                }
                None => {
                    b.put_u8(0);
                    b.put_u32(0);
                }
            }
        }
        let n = b.len() - PREFIX;
        if n > MAX_HEAD {
            return None;
        }
        b[4..8].copy_from_slice(&u32::try_from(n).ok()?.to_be_bytes());
        Some(b.freeze())
    }

    /// How long the whole block is, from its first [`PREFIX`] bytes.
    pub(crate) fn block_len(prefix: &[u8]) -> Result<usize, Corrupt> {
        if prefix.len() < PREFIX || &prefix[..4] != MAGIC {
            return Err(Corrupt("bad magic"));
        }
        let n = u32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]) as usize;
        if n > MAX_HEAD {
            return Err(Corrupt("head too large"));
        }
        Ok(PREFIX + n)
    }

    /// Decode a whole block (as long as [`Head::block_len`] said).
    pub(crate) fn decode(block: &[u8]) -> Result<Head, Corrupt> {
        let len = Head::block_len(block)?;
        if block.len() != len {
            return Err(Corrupt("length mismatch"));
        }
        let mut r = Reader(&block[PREFIX..]);
        let status = StatusCode::from_u16(r.u16()?).map_err(|_| Corrupt("bad status"))?;
        let body_len = r.u64()?;
        let key_text = r.take32()?.to_vec();
        // Each header takes at least 7 bytes (lengths and a one-byte name): a count the
        // remaining bytes cannot hold is refused before anything is allocated for it (a
        // HeaderMap capacity over 32,768 would panic).
        let count = r.count(7)?;
        let mut headers = HeaderMap::with_capacity(count);
        for _ in 0..count {
            let name =
                HeaderName::from_bytes(r.take16()?).map_err(|_| Corrupt("bad header name"))?;
            let value =
                HeaderValue::from_bytes(r.take32()?).map_err(|_| Corrupt("bad header value"))?;
            headers.append(name, value);
        }
        let count = r.count(8)?;
        let mut vary = Vec::with_capacity(count);
        for _ in 0..count {
            let name = HeaderName::from_bytes(r.take16()?).map_err(|_| Corrupt("bad vary name"))?;
            let present = r.u8()? == 1;
            let value = r.take32()?;
            let value = if present {
                Some(HeaderValue::from_bytes(value).map_err(|_| Corrupt("bad vary value"))?)
            } else {
                None
            };
            vary.push((name, value));
        }
        if !r.0.is_empty() {
            return Err(Corrupt("trailing bytes in head"));
        }
        Ok(Head {
            status,
            headers,
            key_text,
            vary,
            body_len,
        })
    }
}

fn put16(b: &mut BytesMut, s: &[u8]) -> Option<()> {
    b.put_u16(u16::try_from(s.len()).ok()?);
    b.put_slice(s);
    Some(())
}

fn put32(b: &mut BytesMut, s: &[u8]) -> Option<()> {
    if s.len() > MAX_HEAD {
        return None;
    }
    b.put_u32(u32::try_from(s.len()).ok()?);
    b.put_slice(s);
    Some(())
}

/// Checked reads over a byte slice: every read fails cleanly past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if self.0.len() < n {
            return Err(Corrupt("truncated head"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Corrupt> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    fn u32(&mut self) -> Result<u32, Corrupt> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self) -> Result<u64, Corrupt> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }

    /// A u16 item count, refused when `min_item` bytes per item would not fit in the rest.
    fn count(&mut self, min_item: usize) -> Result<usize, Corrupt> {
        let n = usize::from(self.u16()?);
        if n > self.0.len() / min_item {
            return Err(Corrupt("item count larger than the head"));
        }
        Ok(n)
    }

    fn take16(&mut self) -> Result<&'a [u8], Corrupt> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }

    fn take32(&mut self) -> Result<&'a [u8], Corrupt> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Head {
        let mut headers = HeaderMap::new();
        headers.insert("etag", "\"abc\"".parse().unwrap());
        headers.append("x-multi", "1".parse().unwrap());
        headers.append("x-multi", "2".parse().unwrap());
        headers.insert(
            "x-bytes",
            HeaderValue::from_bytes(b"caf\xc3\xa9 \x80").unwrap(),
        );
        Head {
            status: StatusCode::OK,
            headers,
            key_text: b"h:1/b/k?x=1".to_vec(),
            vary: vec![
                (
                    "origin".parse().unwrap(),
                    Some("https://a".parse().unwrap()),
                ),
                ("accept-encoding".parse().unwrap(), None),
            ],
            body_len: 32 << 20,
        }
    }

    #[test]
    fn round_trip_keeps_every_byte() {
        let h = head();
        let block = h.encode().unwrap();
        assert_eq!(Head::block_len(&block[..PREFIX]).unwrap(), block.len());
        assert_eq!(Head::decode(&block).unwrap(), h);
    }

    #[test]
    fn every_truncation_and_bad_magic_is_an_error_not_a_panic() {
        let block = head().encode().unwrap();
        for cut in 0..block.len() {
            assert!(Head::decode(&block[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = block.to_vec();
        bad[0] = b'X';
        assert_eq!(Head::decode(&bad), Err(Corrupt("bad magic")));
        let mut huge = block.to_vec();
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Head::block_len(&huge), Err(Corrupt("head too large")));
    }

    #[test]
    fn a_header_count_beyond_the_head_is_an_error_not_a_panic() {
        // Found by the cache_entry fuzz target: 0xfb01 headers announced in a 61-byte head
        // (HeaderMap::with_capacity panics above 32,768).
        let mut block = head().encode().unwrap().to_vec();
        let at = PREFIX + 2 + 8 + 4 + b"h:1/b/k?x=1".len();
        for count in [u16::MAX, 0xfb01, 40_000] {
            block[at..at + 2].copy_from_slice(&count.to_be_bytes());
            assert_eq!(
                Head::decode(&block),
                Err(Corrupt("item count larger than the head"))
            );
        }
    }

    #[test]
    fn oversized_heads_are_not_stored() {
        let mut h = head();
        h.headers.insert(
            "x-big",
            HeaderValue::from_bytes(&vec![b'a'; MAX_HEAD]).unwrap(),
        );
        assert!(h.encode().is_none());
    }
}
