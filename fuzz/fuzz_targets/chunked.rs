//! The sidecar's chunked-body scanner (`src/sidecar/forward/chunked.rs`): never panics; the
//! verdict, the bytes it claims and the data it hands out do not depend on how the stream is
//! split into reads; and a body chunked here (any chunk sizes, extensions, trailers) scans to
//! exactly its data, ends where the encoding ends, and leaves the bytes after it alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidekick::fuzzing::{ChunkError, Chunked};

/// Scan `input` in the given pieces: (claimed bytes, data, done) or the first error.
fn scan(input: &[u8], cuts: &[usize]) -> Result<(usize, Vec<u8>, bool), ChunkError> {
    let mut c = Chunked::new();
    let mut data = Vec::new();
    let mut used = 0;
    let mut start = 0;
    for &cut in cuts.iter().chain([&input.len()]) {
        let cut = cut.clamp(start, input.len());
        let piece = &input[start..cut];
        let n = c.advance(piece, |r| data.extend_from_slice(&piece[r]))?;
        assert!(n <= piece.len());
        used += n;
        if n < piece.len() {
            assert!(c.is_done(), "stopped early without being done");
            break;
        }
        start = cut;
    }
    Ok((used, data, c.is_done()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // Any bytes, whole and in 2-4 pieces.
        let whole = scan(rest, &[]);
        let n = rest.len().max(1);
        let cuts = [usize::from(mode) % n, usize::from(mode) * 7 % n, n / 2];
        let mut sorted = cuts;
        sorted.sort_unstable();
        let pieces = scan(rest, &sorted);
        assert_eq!(whole, pieces, "split at {sorted:?}");
        let bytewise: Vec<usize> = (1..rest.len().min(512)).collect();
        if rest.len() <= 512 {
            assert_eq!(scan(rest, &bytewise), whole, "byte by byte");
        }
        return;
    }
    // Encode: length byte, data; an extension or a trailer when bits of mode say so.
    let mut body = Vec::new();
    let mut expected = Vec::new();
    let mut input = rest;
    while let Some((&len, tail)) = input.split_first() {
        let len = usize::from(len).min(tail.len());
        if len == 0 {
            input = tail;
            continue;
        }
        let (chunk, tail) = tail.split_at(len);
        if mode & 2 == 0 {
            body.extend_from_slice(format!("{len:x}\r\n").as_bytes());
        } else {
            body.extend_from_slice(format!("{len:X};name=\"v\"\r\n").as_bytes());
        }
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
        expected.extend_from_slice(chunk);
        input = tail;
    }
    body.extend_from_slice(b"0\r\n");
    if mode & 4 != 0 {
        body.extend_from_slice(b"X-Checksum: abc\r\n");
    }
    body.extend_from_slice(b"\r\n");
    let end = body.len();
    body.extend_from_slice(b"5\r\nnext!\r\n");
    let cuts = [usize::from(mode) % end, end / 3];
    let mut sorted = cuts;
    sorted.sort_unstable();
    for cuts in [&[][..], &sorted[..]] {
        assert_eq!(scan(&body, cuts), Ok((end, expected.clone(), true)));
    }
});
