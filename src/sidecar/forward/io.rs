//! Buffers, body relays and `splice(2)`.
//!
//! One read buffer per side, reused for every request of a connection, so a small answer is
//! read, rewritten and written from warm memory in the task that read it. Bodies of known
//! length between two plain-text sockets move kernel to kernel through a pipe (`splice(2)`):
//! they never enter user space, which is what makes a 1 MiB answer cheap. The head before such
//! a body is written with `MSG_MORE` ([`send_more`]) so that it leaves with the body's first
//! bytes rather than as a small segment of its own (the receiver's wake-up and read it costs
//! were most of what separated this loop from haproxy's at 1 MiB). TLS, chunked bodies and small
//! remainders take the copying path.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net::SendFlags;
use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::chunked::{ChunkError, Chunked};
use super::parse::Framing;

/// A connection the loop reads from and writes to; plain-text TCP can also splice.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP socket when the stream is plain text (bodies may then be spliced).
    fn tcp(&self) -> Option<&TcpStream>;
}

impl Stream for TcpStream {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl Stream for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

/// Initial size of a read buffer; it grows for large heads (up to the head limit) and for
/// bodies, and shrinks back between requests.
pub const INITIAL: usize = 8 * 1024;
/// Size of a body-copy read.
pub const CHUNK: usize = 64 * 1024;
/// Bodies with at least this much left to move are spliced (when both sides are plain TCP).
pub const SPLICE_MIN: u64 = 32 * 1024;

/// A read buffer: `data[start..end]` is read and not yet used.
#[derive(Debug)]
pub struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for Buf {
    fn default() -> Self {
        Buf::new()
    }
}

impl Buf {
    /// An empty buffer (allocated on first read).
    pub fn new() -> Buf {
        Buf {
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// The bytes read and not yet consumed.
    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// How many bytes are buffered.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Mark `n` bytes as used.
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drop everything buffered.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Give memory back after a large request (idle keep-alive connections stay small).
    pub fn shrink(&mut self) {
        if self.is_empty() && self.data.len() > INITIAL {
            self.data = Vec::new();
        }
    }

    /// Read once from `io`, appending; makes room for at least `want` bytes first. Returns the
    /// number of bytes read (0 at end of stream).
    pub async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        want: usize,
    ) -> io::Result<usize> {
        if self.start > 0 && self.data.len() - self.end < want {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.data.len() - self.end < want {
            let size = (self.end + want).max(INITIAL);
            self.data.resize(size, 0);
        }
        let n = io.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// Which side of a relay failed.
#[derive(Debug)]
pub enum RelayError {
    /// Reading the source failed, timed out, or it ended early.
    Read(io::Error),
    /// The source's framing is broken.
    Framing(ChunkError),
    /// Writing to the destination failed.
    Write(io::Error),
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayError::Read(e) => write!(f, "read: {e}"),
            RelayError::Framing(e) => e.fmt(f),
            RelayError::Write(e) => write!(f, "write: {e}"),
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no data within the timeout")
}

fn early_eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the body ended early")
}

/// Read once with an idle timeout.
async fn fill_timed<R: AsyncRead + Unpin>(
    buf: &mut Buf,
    io: &mut R,
    idle: Duration,
) -> Result<usize, RelayError> {
    match tokio::time::timeout(idle, buf.fill(io, CHUNK)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(RelayError::Read(e)),
        Err(_) => Err(RelayError::Read(timed_out())),
    }
}

/// The size asked for a splice pipe. Measured on loopback (4 nginx backends, `wrk -c64`, 1 MiB
/// bodies, interleaved runs, heads sent with [`send_more`]): 128 KiB is the best of the three
/// sizes overall. Answers written from user space (as MinIO writes them): 1.04–1.2× the
/// requests a second of 64 or 256 KiB for 0.75–0.9× the LB CPU; answers sent from the backend's
/// page cache (`sendfile`): 0.8× the CPU of 256 KiB, 1.0–1.15× that of 64 KiB; uploads: within
/// noise of both.
const PIPE_SIZE: usize = 128 * 1024;

/// A pipe for splicing, made on first use and kept for the connection.
#[derive(Debug, Default)]
pub struct Pipe {
    fds: Option<(OwnedFd, OwnedFd)>,
    capacity: usize,
}

impl Pipe {
    fn get(&mut self) -> io::Result<(&OwnedFd, &OwnedFd, usize)> {
        if self.fds.is_none() {
            let (r, w) = rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
            // The default (64 KiB) is kept when the system refuses PIPE_SIZE.
            self.capacity = rustix::pipe::fcntl_setpipe_size(&w, PIPE_SIZE).unwrap_or(64 * 1024);
            self.fds = Some((r, w));
        }
        match &self.fds {
            Some((r, w)) => Ok((r, w, self.capacity)),
            None => Err(io::Error::other("no pipe")),
        }
    }
}

/// How long a head written with [`send_more`] may wait for the first bytes of its body.
const HOLD_MAX: Duration = Duration::from_millis(1);

/// Send what `dst` holds from a [`send_more`] now. Setting TCP_NODELAY (on already for every
/// socket of the sidecar) pushes the socket's pending data.
fn push(dst: &TcpStream, held: &mut bool) -> Result<(), RelayError> {
    *held = false;
    dst.set_nodelay(true).map_err(RelayError::Write)
}

/// Move exactly `n` bytes from `src` to `dst` through `pipe`, kernel to kernel.
async fn splice_exact(
    src: &TcpStream,
    dst: &TcpStream,
    pipe: &mut Pipe,
    mut n: u64,
    idle: Duration,
) -> Result<(), RelayError> {
    let (pr, pw, cap) = pipe.get().map_err(RelayError::Read)?;
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    // Data written before with `MSG_MORE` waits for the first spliced bytes, for at most
    // `HOLD_MAX`: then it is sent alone, not held for as long as the source is silent.
    let mut held = true;
    while n > 0 {
        // Socket → pipe.
        let want = usize::try_from(n).unwrap_or(usize::MAX).min(cap);
        let got = loop {
            if held
                && tokio::time::timeout(HOLD_MAX, src.readable())
                    .await
                    .is_err()
            {
                push(dst, &mut held)?;
            }
            match tokio::time::timeout(idle, src.readable()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(RelayError::Read(e)),
                Err(_) => return Err(RelayError::Read(timed_out())),
            }
            match src.try_io(Interest::READABLE, || {
                rustix::pipe::splice(src, None, pw, None, want, flags).map_err(io::Error::from)
            }) {
                Ok(0) => return Err(RelayError::Read(early_eof())),
                Ok(k) => break k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(RelayError::Read(e)),
            }
        };
        held = false;
        n -= got as u64;
        // Pipe → socket, all of it (the pipe must be empty before the next read into it).
        let mut left = got;
        while left > 0 {
            dst.writable().await.map_err(RelayError::Write)?;
            match dst.try_io(Interest::WRITABLE, || {
                rustix::pipe::splice(pr, None, dst, None, left, flags).map_err(io::Error::from)
            }) {
                Ok(0) => return Err(RelayError::Write(io::ErrorKind::WriteZero.into())),
                Ok(k) => left -= k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(RelayError::Write(e)),
            }
        }
    }
    Ok(())
}

/// Whether a body of `len` bytes (after what came with the head) from `src` to `dst` is
/// spliced: long enough, and both sides plain TCP.
pub fn will_splice(len: u64, src: Option<&TcpStream>, dst: Option<&TcpStream>) -> bool {
    len >= SPLICE_MIN && src.is_some() && dst.is_some()
}

/// Write all of `data` with `MSG_MORE`: the kernel holds it and sends it in the same segments
/// as what is written next (here: the first spliced body bytes), instead of in a small segment
/// of its own that costs the receiver a wake-up and a read. Whatever follows must be written
/// without the flag, or the socket closed, for the data to leave; [`splice_exact`] pushes it
/// explicitly when the body's source is not ready at once.
pub async fn send_more(tcp: &TcpStream, data: &[u8]) -> io::Result<()> {
    let flags = SendFlags::MORE | SendFlags::NOSIGNAL;
    let mut sent = 0;
    while sent < data.len() {
        tcp.writable().await?;
        match tcp.try_io(Interest::WRITABLE, || {
            rustix::net::send(tcp, &data[sent..], flags).map_err(io::Error::from)
        }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => sent += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Write `head`, followed by the body bytes already read into `buf` (at most `body_len`), in
/// one call, and return how many body bytes went with it; with `MSG_MORE` ([`send_more`]) when
/// the rest will be spliced (`src` is the body's source).
pub async fn write_head<D: Stream>(
    dst: &mut D,
    head: &mut Vec<u8>,
    buf: &mut Buf,
    body_len: u64,
    src: Option<&TcpStream>,
) -> io::Result<u64> {
    let first = buf
        .len()
        .min(usize::try_from(body_len).unwrap_or(usize::MAX));
    head.extend_from_slice(&buf.filled()[..first]);
    buf.consume(first);
    match dst.tcp() {
        Some(tcp) if will_splice(body_len - first as u64, src, Some(tcp)) => {
            send_more(tcp, head).await?
        }
        _ => dst.write_all(head).await?,
    }
    Ok(first as u64)
}

/// How a relayed body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// As it came (chunked stays chunked).
    Same,
    /// A chunked body written as plain data (for an HTTP/1.0 client).
    Dechunk,
}

/// Relay one body of `framing` from `src` (whose buffer `buf` may already hold its first
/// bytes) to `dst`. Returns the body bytes moved. Bytes after the body stay in `buf`.
#[allow(clippy::too_many_arguments)]
pub async fn relay<S: Stream, D: Stream>(
    src: &mut S,
    buf: &mut Buf,
    dst: &mut D,
    framing: Framing,
    output: Output,
    pipe: &mut Pipe,
    idle: Duration,
) -> Result<u64, RelayError> {
    match framing {
        Framing::None => Ok(0),
        Framing::Length(total) => {
            let mut left = total;
            // What was read with the head first.
            let first = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            if first > 0 {
                let bytes = &buf.filled()[..first];
                match dst.tcp() {
                    Some(d) if will_splice(left - first as u64, src.tcp(), Some(d)) => {
                        send_more(d, bytes).await
                    }
                    _ => dst.write_all(bytes).await,
                }
                .map_err(RelayError::Write)?;
                buf.consume(first);
                left -= first as u64;
            }
            if will_splice(left, src.tcp(), dst.tcp()) {
                dst.flush().await.map_err(RelayError::Write)?;
                if let (Some(s), Some(d)) = (src.tcp(), dst.tcp()) {
                    splice_exact(s, d, pipe, left, idle).await?;
                    return Ok(total);
                }
            }
            while left > 0 {
                if fill_timed(buf, src, idle).await? == 0 {
                    return Err(RelayError::Read(early_eof()));
                }
                let k = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                dst.write_all(&buf.filled()[..k])
                    .await
                    .map_err(RelayError::Write)?;
                buf.consume(k);
                left -= k as u64;
            }
            Ok(total)
        }
        Framing::Chunked => {
            let mut scan = Chunked::new();
            let mut moved = 0u64;
            let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
            loop {
                if buf.is_empty() && fill_timed(buf, src, idle).await? == 0 {
                    return Err(RelayError::Read(early_eof()));
                }
                let input = buf.filled();
                let used = match output {
                    Output::Same => {
                        let used = scan.advance(input, |_| {}).map_err(RelayError::Framing)?;
                        dst.write_all(&input[..used])
                            .await
                            .map_err(RelayError::Write)?;
                        used
                    }
                    Output::Dechunk => {
                        ranges.clear();
                        let used = scan
                            .advance(input, |r| ranges.push(r))
                            .map_err(RelayError::Framing)?;
                        for r in &ranges {
                            moved += r.len() as u64;
                            dst.write_all(&input[r.clone()])
                                .await
                                .map_err(RelayError::Write)?;
                        }
                        used
                    }
                };
                if output == Output::Same {
                    moved += used as u64;
                }
                buf.consume(used);
                if scan.is_done() {
                    return Ok(moved);
                }
            }
        }
        Framing::Close => {
            let mut moved = 0u64;
            loop {
                if !buf.is_empty() {
                    dst.write_all(buf.filled())
                        .await
                        .map_err(RelayError::Write)?;
                    moved += buf.len() as u64;
                    buf.clear();
                }
                if fill_timed(buf, src, idle).await? == 0 {
                    return Ok(moved);
                }
            }
        }
    }
}
