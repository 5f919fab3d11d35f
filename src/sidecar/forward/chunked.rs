//! The chunked transfer coding, checked byte by byte as it passes through.
//!
//! The forwarding loop passes a chunked body on as it came (chunk sizes, extensions and
//! trailers untouched), so the decoder's only jobs are to find where the message ends and to
//! refuse a body whose framing is not exactly RFC 9112 §7.1: hex sizes without overflow, CRLF
//! line ends, CRLF after each chunk's data, no control characters in extensions or trailers.
//! A proxy that forwarded a malformed chunk stream would let the backend guess where the
//! message ends: the desync this module exists to prevent. For HTTP/1.0 clients the same
//! decoder hands out the data ranges instead, so the answer can be sent unchunked.

use std::ops::Range;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid chunked body: {}", self.0)
    }
}

impl std::error::Error for ChunkError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a size line (no digit yet).
    SizeStart,
    /// Reading hex digits.
    Size,
    /// After the digits: white space, extensions, until CR.
    Ext,
    /// After the size line's CR.
    SizeLf,
    /// Chunk data: `remaining` bytes to go.
    Data,
    /// After the data: CR.
    DataCr,
    /// After the data: LF.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the final CR.
    EndLf,
    /// The message ended.
    Done,
}

/// A chunked-body scanner.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: u8,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::new()
    }
}

fn is_line_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

impl Chunked {
    /// A scanner at the start of a body.
    pub fn new() -> Chunked {
        Chunked {
            state: State::SizeStart,
            size: 0,
            digits: 0,
        }
    }

    /// Whether the last chunk and the trailers have been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scan `input`; returns how many of its bytes belong to the body (all of them unless the
    /// body ends inside it). `data` is called with the ranges of `input` that are chunk data.
    pub fn advance(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(Range<usize>),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::SizeStart | State::Size => {
                    if let Some(d) = (b as char).to_digit(16) {
                        if self.digits >= 16 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        self.size = (self.size << 4) | u64::from(d);
                        self.digits += 1;
                        self.state = State::Size;
                    } else if self.state == State::SizeStart {
                        return Err(ChunkError("chunk size expected"));
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        self.state = State::Ext;
                    } else {
                        return Err(ChunkError("invalid chunk size"));
                    }
                    i += 1;
                }
                State::Ext => {
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if !is_line_byte(b) {
                        return Err(ChunkError("control character in a chunk extension"));
                    }
                    i += 1;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("CR without LF after a chunk size"));
                    }
                    i += 1;
                    self.digits = 0;
                    if self.size == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        self.state = State::Data;
                    }
                }
                State::Data => {
                    let take =
                        (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    data(i..i + take);
                    i += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError("chunk data longer than its size"));
                    }
                    self.state = State::DataLf;
                    i += 1;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("CR without LF after chunk data"));
                    }
                    self.state = State::SizeStart;
                    i += 1;
                }
                State::TrailerStart => {
                    if b == b'\r' {
                        self.state = State::EndLf;
                    } else if b == b' ' || b == b'\t' {
                        return Err(ChunkError("obs-fold in the trailers"));
                    } else if is_line_byte(b) {
                        self.state = State::Trailer;
                    } else {
                        return Err(ChunkError("control character in the trailers"));
                    }
                    i += 1;
                }
                State::Trailer => {
                    if b == b'\r' {
                        self.state = State::TrailerLf;
                    } else if !is_line_byte(b) {
                        return Err(ChunkError("control character in the trailers"));
                    }
                    i += 1;
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError("CR without LF in the trailers"));
                    }
                    self.state = State::TrailerStart;
                    i += 1;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError("CR without LF at the end of the body"));
                    }
                    self.state = State::Done;
                    i += 1;
                    return Ok(i);
                }
                State::Done => return Ok(i),
            }
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(parts: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut c = Chunked::new();
        let mut out = Vec::new();
        let mut used = 0;
        for p in parts {
            let n = c.advance(p, |r| out.extend_from_slice(&p[r]))?;
            used += n;
        }
        Ok((out, used, c.is_done()))
    }

    #[test]
    fn whole_and_split_bodies() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 1\r\n\r\nNEXT";
        let (data, used, done) = scan(&[body]).unwrap();
        assert_eq!(data, b"hello world");
        assert!(done);
        assert_eq!(
            used,
            body.len() - 4,
            "the next message is not part of the body"
        );
        // The same body one byte at a time.
        let bytes: Vec<&[u8]> = body[..body.len() - 4].chunks(1).collect();
        let (data, _, done) = scan(&bytes).unwrap();
        assert_eq!(data, b"hello world");
        assert!(done);
    }

    #[test]
    fn upper_case_hex_and_leading_zeros() {
        let (data, _, done) = scan(&[b"00A\r\n0123456789\r\n0\r\n\r\n"]).unwrap();
        assert_eq!(data.len(), 10);
        assert!(done);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let bad: [&[u8]; 10] = [
            b"x\r\n",
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\rX",
            b"-1\r\n",
            b"11111111111111111\r\n",
            b"5;a\0b\r\n",
            b"0\r\nX: 1\n",
            b"0\r\n folded\r\n\r\n",
        ];
        for b in bad {
            assert!(
                scan(&[b]).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn incomplete_is_not_done() {
        let (_, _, done) = scan(&[b"5\r\nhel"]).unwrap();
        assert!(!done);
        let (_, _, done) = scan(&[b"0\r\n"]).unwrap();
        assert!(!done);
    }
}
