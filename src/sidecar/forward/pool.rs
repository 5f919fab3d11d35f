//! Connections to the backends, and the idle ones kept for the next request.
//!
//! The idle pool is per thread: each runtime thread keeps its own idle connections per endpoint,
//! so checking a connection out or back in takes no lock and touches no shared cache line (a
//! connection is registered with the I/O driver of the runtime that made it, and on a
//! thread-per-core sidecar that is this thread's). Idle connections are reused most recent
//! first (warm in the backend too) and are dropped when they have been idle too long, when the
//! backend closed them (seen from the socket's readiness, without a system call), or when the
//! configuration they belong to was replaced.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::io::Stream;
use crate::clock::Clock;
use crate::sidecar::metrics::EpStats;
use crate::transport::ServerNames;

/// A connection to a backend.
#[derive(Debug)]
pub enum Backend {
    /// Plain text.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Backend {
    /// Whether the backend has closed the connection (or sent something unasked) while it was
    /// idle: such a connection must not carry a request.
    fn is_stale(&mut self) -> bool {
        let tcp = match self {
            Backend::Plain(s) => s,
            Backend::Tls(s) => s.get_ref().0,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match tcp.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            // Readable while idle: end of stream, an error, or bytes nobody asked for.
            Poll::Ready(_) => {
                let mut probe = [0u8; 1];
                !matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

impl Stream for Backend {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Backend::Plain(s) => Some(s),
            Backend::Tls(_) => None,
        }
    }
}

impl AsyncRead for Backend {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Backend::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Backend::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Backend {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Backend::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Backend::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Backend::Plain(s) => Pin::new(s).poll_flush(cx),
            Backend::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Backend::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Backend::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How a generation connects to its backends.
pub struct Connect {
    /// Distinguishes generations in the per-thread pools.
    pub generation: u64,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    tls: Option<tokio_rustls::TlsConnector>,
    names: ServerNames,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl Connect {
    /// Connection settings; `tls` is the client configuration for `https` endpoints.
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        tls: Option<Arc<rustls::ClientConfig>>,
        names: ServerNames,
    ) -> Connect {
        let tls = tls.map(|cfg| {
            let mut cfg = rustls::ClientConfig::clone(&cfg);
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            tokio_rustls::TlsConnector::from(Arc::new(cfg))
        });
        Connect {
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            connect_timeout,
            idle_timeout,
            max_idle,
            tls,
            names,
        }
    }

    /// A new connection to `authority` (`host:port`), TLS when `https`.
    pub async fn connect(&self, authority: &str, https: bool) -> io::Result<Backend> {
        let dial = async {
            let tcp = TcpStream::connect(authority).await?;
            tcp.set_nodelay(true)?;
            if !https {
                return Ok(Backend::Plain(tcp));
            }
            let Some(tls) = &self.tls else {
                return Err(io::Error::other(
                    "https endpoint without a TLS configuration",
                ));
            };
            let host = match self.names.lookup(authority) {
                Some(h) => h,
                None => {
                    let h = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
                    h.trim_start_matches('[').trim_end_matches(']').to_string()
                }
            };
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let s = tls.connect(name, tcp).await?;
            Ok(Backend::Tls(Box::new(s)))
        };
        match tokio::time::timeout(self.connect_timeout, dial).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        }
    }

    /// An idle connection to endpoint `id`, if a usable one is pooled on this thread.
    pub fn checkout(&self, id: u64) -> Option<Backend> {
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            p.retire(self.generation);
            let slot = p.slots.get_mut(&id)?;
            // Millisecond precision is plenty against an idle timeout of seconds.
            let now = Clock::System.coarse();
            while let Some(mut idle) = slot.idle.pop() {
                let idle_for = Duration::from_nanos(now.saturating_sub(idle.since));
                if idle_for < self.idle_timeout && !idle.conn.is_stale() {
                    return Some(idle.conn);
                }
            }
            None
        })
    }

    /// Give a connection that finished a request cleanly back to this thread's pool.
    pub fn checkin(&self, id: u64, conn: Backend) {
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            p.retire(self.generation);
            let slot = p.slots.entry(id).or_default();
            if slot.idle.len() >= self.max_idle {
                // Oldest out.
                slot.idle.remove(0);
            }
            slot.idle.push(Idle {
                conn,
                since: Clock::System.coarse(),
            });
        })
    }

    /// The statistics of endpoint `id`, cached on this thread (looked up by `find` once).
    pub fn stats(
        &self,
        id: u64,
        find: impl FnOnce() -> Option<Arc<EpStats>>,
    ) -> Option<Arc<EpStats>> {
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            p.retire(self.generation);
            let slot = p.slots.entry(id).or_default();
            if slot.stats.is_none() {
                slot.stats = find();
            }
            slot.stats.clone()
        })
    }
}

struct Idle {
    conn: Backend,
    /// When it was given back (the engine's coarse clock, ns).
    since: u64,
}

#[derive(Default)]
struct Slot {
    idle: Vec<Idle>,
    stats: Option<Arc<EpStats>>,
}

#[derive(Default)]
struct Pool {
    generation: u64,
    slots: HashMap<u64, Slot, BuildIdHasher>,
}

impl Pool {
    /// Forget another generation's connections (after a reload).
    fn retire(&mut self, generation: u64) {
        if self.generation != generation {
            self.slots.clear();
            self.generation = generation;
        }
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Endpoint ids are small distinct integers: no need for SipHash.
#[derive(Default, Clone, Copy)]
struct BuildIdHasher;

impl std::hash::BuildHasher for BuildIdHasher {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Spread the bits so the table's low bits differ (multiplicative hashing).
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}
