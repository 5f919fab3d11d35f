//! The listener: accept loop, connection limit, optional TLS, HTTP/1.1 with a header-read
//! timeout and a bounded head size, and a graceful drain.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::drain::Drain;
use super::proxy::{self, Shared};

/// How the listener defends itself.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most connections served at once; more wait in the kernel's accept queue.
    pub max_conns: usize,
    /// A connection must deliver each request head within this time (also how long an idle
    /// keep-alive connection is kept).
    pub header_timeout: Duration,
    /// Largest request head, in bytes; larger heads get `431`.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_conns: 8192,
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// A running listener.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    conns: TaskTracker,
    accept: JoinHandle<()>,
    shared: Arc<Shared>,
}

/// Bind `address` `n` times with `SO_REUSEPORT` (for [`Limits::threads`] > 1): the first socket
/// decides the port (`:0` picks one), the others join it.
pub async fn bind_shared(address: &str, n: usize) -> std::io::Result<Vec<TcpListener>> {
    let first = if let Some(port) = address.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid port {port:?}"),
            )
        })?;
        match reuseport_listener(SocketAddr::from(([0u16; 8], port))) {
            Ok(l) => l,
            Err(_) => reuseport_listener(SocketAddr::from(([0u8; 4], port)))?,
        }
    } else {
        let addr = tokio::net::lookup_host(address)
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
            })?;
        reuseport_listener(addr)?
    };
    let at = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n {
        all.push(reuseport_listener(at)?);
    }
    Ok(all)
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Bind `address` in Go's syntax: `:8080` is every interface (IPv6 and IPv4 when available),
/// `host:port` a given one.
pub async fn bind(address: &str) -> std::io::Result<TcpListener> {
    if let Some(port) = address.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid port {port:?}"),
            )
        })?;
        return match TcpListener::bind(SocketAddr::from(([0u16; 8], port))).await {
            Ok(l) => Ok(l),
            Err(_) => TcpListener::bind(SocketAddr::from(([0u8; 4], port))).await,
        };
    }
    TcpListener::bind(address).await
}

/// Give freed memory back after start-up and after the open connections fell well below their
/// peak (see [`trim`](super::trim)), until `stop`.
async fn trim_after_load(conns: TaskTracker, stop: CancellationToken) {
    // The first look comes after the start-up's probe burst.
    let mut wait = super::trim::TICK * 3;
    let mut trimmer = super::trim::Trimmer::new();
    // Bounded by `stop`: the loop ends with the server.
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = super::trim::TICK;
        if trimmer.observe(conns.len()) {
            // malloc_trim walks the heaps: off the event loop.
            let _ = tokio::task::spawn_blocking(super::trim::release_free_memory).await;
        }
    }
}

impl Server {
    /// Serve on `listeners` (TLS with `tls`) until [`Server::shutdown`]. Several listeners are
    /// bound to one address ([`bind_shared`]): thread per core, the first on the calling
    /// runtime, each other one on a thread of its own with a single-threaded runtime, its own
    /// connections and its own idle backend connections (`SIDEKICK_THREADS`). The connection
    /// limit is shared by all.
    pub fn spawn(
        listeners: Vec<TcpListener>,
        tls: Option<tokio_rustls::TlsAcceptor>,
        shared: Arc<Shared>,
        limits: Limits,
    ) -> std::io::Result<Server> {
        let mut listeners = listeners.into_iter();
        let listener = listeners
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no listener"))?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let conns = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(limits.max_conns));
        for (i, extra) in listeners.enumerate() {
            let extra = extra.into_std()?;
            let (tls, shared, stop, conns, slots) = (
                tls.clone(),
                shared.clone(),
                stop.clone(),
                conns.clone(),
                slots.clone(),
            );
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name(format!("sidekick-io-{}", i + 1))
                .spawn(move || {
                    rt.block_on(async move {
                        let Ok(listener) = TcpListener::from_std(extra) else {
                            return;
                        };
                        accept_loop(listener, tls, shared, limits, stop, conns.clone(), slots)
                            .await;
                        // Keep this runtime (and its connections) alive through the drain.
                        conns.wait().await;
                    });
                })?;
        }
        tokio::spawn(trim_after_load(conns.clone(), stop.clone()));
        let accept = tokio::spawn(accept_loop(
            listener,
            tls,
            shared.clone(),
            limits,
            stop.clone(),
            conns.clone(),
            slots,
        ));
        Ok(Server {
            addr,
            stop,
            conns,
            accept,
            shared,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, let the connections finish their requests (each closes after its
    /// current answer), and wait for them and for WebSocket tunnels at most `grace`. True when
    /// everything finished in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.shared.draining.store(true, Ordering::Release);
        self.stop.cancel();
        let _ = self.accept.await;
        self.conns.close();
        self.shared.tunnels.close();
        let all = async {
            self.conns.wait().await;
            self.shared.tunnels.wait().await;
        };
        tokio::time::timeout(grace, all).await.is_ok()
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    limits: Limits,
    stop: CancellationToken,
    conns: TaskTracker,
    slots: Arc<Semaphore>,
) {
    // A token of this loop's own for its connections, cancelled with `stop`: each connection
    // checks it and waits on it between requests, and a token's state sits behind a lock. One
    // per event loop keeps that lock on one thread instead of bouncing it between cores.
    let stop = stop.child_token();
    // What the forwarding loop's idle connections wait on instead (see `drain`): it follows
    // this loop's token, by one task for the loop's life.
    let drain = Arc::new(Drain::default());
    {
        let (stop, drain) = (stop.clone(), drain.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            drain.stop();
        });
    }
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                // Out of file descriptors, a connection reset before accept...: pause, go on.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let stop = stop.clone();
        let drain = drain.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            connection(stream, peer, tls, shared, limits, stop, drain).await;
            drop(permit);
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    limits: Limits,
    stop: CancellationToken,
    drain: Arc<Drain>,
) {
    match tls {
        None => serve_io(stream, peer, shared, limits, stop, drain).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream));
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    _ => return,
                },
            };
            serve_io(stream, peer, shared, limits, stop, drain).await
        }
    }
}

/// Serve a connection on the forwarding loop, or on hyper when the configuration needs whole
/// messages (the shared cache, `--debug` traces).
async fn serve_io<I>(
    io: I,
    peer: SocketAddr,
    shared: Arc<Shared>,
    limits: Limits,
    stop: CancellationToken,
    drain: Arc<Drain>,
) where
    I: super::forward::io::Stream + 'static,
{
    let whole_messages = shared.console.opts.debug || shared.generation.load().cache().is_some();
    if whole_messages {
        serve_hyper(io, peer, shared, limits, stop).await
    } else {
        super::forward::serve(io, peer, shared, limits, drain).await
    }
}

async fn serve_hyper<I>(
    io: I,
    peer: SocketAddr,
    shared: Arc<Shared>,
    limits: Limits,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| proxy::handle(shared.clone(), peer, req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        // Bounds what a connection buffers (and so the memory of 64 parallel 1 MiB answers).
        .max_buf_size(proxy::BUF_SIZE)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
