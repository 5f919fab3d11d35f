//! `--demo`: the sidecar in front of built-in backends, with a load and a scenario, so that
//! balancing, a killed backend and a site failover can be watched without installing anything.
//!
//! Two sites of three small HTTP servers run in-process on 127.0.0.1; four clients send GETs
//! through the sidecar; the scenario kills one backend of site 1, then the rest of site 1
//! (traffic fails over to site 2), then restarts site 1 (traffic comes back). On a terminal the
//! live table shows it and the scenario repeats until Ctrl-C; otherwise a table is printed after
//! each phase and the demo ends after one round (about 30 s), with exit status 1 if any request
//! failed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::console::{render_table, table_rows, Console, ConsoleOpts, TraceMode};
use super::flags::Config;
use super::format::Utc;
use super::Sidecar;

/// The probe path of the demo backends.
pub const HEALTH_PATH: &str = "/health";
const SITES: usize = 2;
const PER_SITE: usize = 3;
const CLIENTS: usize = 4;
const PHASE: Duration = Duration::from_secs(7);

/// A tiny HTTP/1.1 server on 127.0.0.1: `/health` answers 200, anything else 200 with the
/// backend's name. It can be killed (listener and connections dropped) and restarted on the
/// same port.
#[derive(Debug)]
pub struct DemoBackend {
    /// `site1-b1`...
    pub name: String,
    /// Its address.
    pub addr: SocketAddr,
    task: Mutex<Option<JoinHandle<()>>>,
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

async fn serve(listener: TcpListener, name: Arc<str>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let name = name.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                            let body = if req.uri().path() == HEALTH_PATH {
                                Bytes::from_static(b"ok")
                            } else {
                                Bytes::from(name.to_string())
                            };
                            async move { Ok::<_, Infallible>(http::Response::new(Full::new(body))) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

impl DemoBackend {
    /// Start one on a free port.
    pub fn start(name: String) -> std::io::Result<DemoBackend> {
        let l = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = l.local_addr()?;
        let task = tokio::spawn(serve(l, name.clone().into()));
        Ok(DemoBackend {
            name,
            addr,
            task: Mutex::new(Some(task)),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.task.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Crash it.
    pub async fn kill(&self) {
        let task = self.lock().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }

    /// Serve again on the same port (retrying the bind for up to 2 s).
    pub async fn restart(&self) {
        if self.lock().is_some() {
            return;
        }
        for _ in 0..40 {
            if let Ok(l) = bind(self.addr) {
                *self.lock() = Some(tokio::spawn(serve(l, self.name.clone().into())));
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    events: Mutex<VecDeque<String>>,
}

impl Counters {
    fn note(&self, line: String) {
        let mut e = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() == 8 {
            e.pop_front();
        }
        e.push_back(line);
    }
}

async fn client(addr: SocketAddr, counters: Arc<Counters>, stop: CancellationToken) {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let uri: http::Uri = match format!("http://{addr}/demo/object").parse() {
        Ok(u) => u,
        Err(_) => return,
    };
    while !stop.is_cancelled() {
        let ok = match tokio::time::timeout(Duration::from_secs(2), http.get(uri.clone())).await {
            Ok(Ok(resp)) => {
                let success = resp.status().is_success();
                success && resp.into_body().collect().await.is_ok()
            }
            _ => false,
        };
        let c = if ok { &counters.ok } else { &counters.failed };
        c.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(4)) => {}
        }
    }
}

/// Run the demo. `cfg` carries the user's other flags (`--address`, `--host-balance`...).
pub async fn run(mut cfg: Config, name: &str) -> u8 {
    let tty = std::io::stdout().is_terminal();
    let mut backends = Vec::new();
    for s in 0..SITES {
        for b in 0..PER_SITE {
            match DemoBackend::start(format!("site{}-b{}", s + 1, b + 1)) {
                Ok(be) => backends.push(be),
                Err(e) => {
                    eprintln!("{name}: <ERROR> cannot start a demo backend: {e}");
                    return 1;
                }
            }
        }
    }
    let backends = Arc::new(backends);
    cfg.sites = backends
        .chunks(PER_SITE)
        .map(|site| {
            site.iter()
                .map(DemoBackend::url)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    cfg.health_path = HEALTH_PATH.to_string();
    if cfg.health_duration == Config::default().health_duration {
        cfg.health_duration = Duration::from_millis(500);
    }
    if cfg.address == Config::default().address {
        cfg.address = "127.0.0.1:0".to_string();
    }
    let counters = Arc::new(Counters::default());
    let opts = ConsoleOpts {
        table: tty,
        quiet: false,
        json: false,
        debug: false,
        log: !tty,
        trace: TraceMode::Off,
        errors_only: false,
        status_codes: Vec::new(),
        health_path: HEALTH_PATH.to_string(),
    };
    let console = Arc::new(Console::stdout(opts));
    let sidecar = match Sidecar::start(cfg.clone(), Some(console.clone())).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: <ERROR> {e}");
            return 1;
        }
    };
    let addr = sidecar.local_addr();
    // State changes, for the footer under the live table (the console prints them itself
    // as --log lines when there is no terminal).
    let _ = sidecar.balancer().ready(Duration::from_secs(5)).await;
    let started = Instant::now();
    let watch = {
        let counters = counters.clone();
        let balancer = sidecar.balancer();
        tokio::spawn(async move {
            let mut last: Vec<(String, crate::EndpointState)> = Vec::new();
            loop {
                let now: Vec<(String, crate::EndpointState)> = balancer
                    .endpoints()
                    .into_iter()
                    .map(|e| (e.url, e.state))
                    .collect();
                for (url, st) in &now {
                    let before = last.iter().find(|(u, _)| u == url).map(|(_, s)| *s);
                    if before.is_some_and(|b| b != *st) {
                        counters.note(format!(
                            "{}  {url} is {}",
                            Utc::from(std::time::SystemTime::now()).clock_millis(),
                            st.as_str()
                        ));
                    }
                }
                last = now;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let stop = CancellationToken::new();
    let mut load = JoinSet::new();
    for _ in 0..CLIENTS {
        load.spawn(client(addr, counters.clone(), stop.clone()));
    }
    let intro = format!(
        "sidekick demo: listening on {addr}; 2 sites of 3 backends on 127.0.0.1, {CLIENTS} clients through the sidecar\n  site 1: {}\n  site 2: {}\n",
        sidecar.config().sites[0],
        sidecar.config().sites[1]
    );
    let phase_line = Arc::new(Mutex::new(String::from("a) steady: every backend up")));
    let table = if tty {
        let counters = counters.clone();
        let phase_line = phase_line.clone();
        let intro = intro.clone();
        let footer: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(move || {
            let mut s = format!(
                "\n{intro}  phase: {}\n  requests: {} ok, {} failed   (Ctrl-C to stop)\n\n",
                phase_line.lock().unwrap_or_else(|p| p.into_inner()),
                counters.ok.load(Ordering::Relaxed),
                counters.failed.load(Ordering::Relaxed)
            );
            for e in counters
                .events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
            {
                s.push_str("  ");
                s.push_str(e);
                s.push_str("\x1b[K\n");
            }
            s
        });
        Some(super::spawn_table(&sidecar, Some(footer), stop.clone()))
    } else {
        console.write(&intro);
        None
    };

    let phases: [(&str, Option<bool>, &[usize]); 4] = [
        ("a) steady: every backend up", None, &[]),
        (
            "b) site1-b1 killed: its share moves to its neighbours",
            Some(false),
            &[0],
        ),
        (
            "c) all of site 1 killed: traffic fails over to site 2",
            Some(false),
            &[1, 2],
        ),
        (
            "d) site 1 restarted: traffic comes back to site 1",
            Some(true),
            &[0, 1, 2],
        ),
    ];
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    'rounds: loop {
        for (title, action, which) in phases {
            *phase_line.lock().unwrap_or_else(|p| p.into_inner()) = title.to_string();
            match action {
                Some(false) => {
                    for &i in which {
                        counters.note(format!(">>> killing {}", backends[i].name));
                        backends[i].kill().await;
                    }
                }
                Some(true) => {
                    for &i in which {
                        counters.note(format!(">>> restarting {}", backends[i].name));
                        backends[i].restart().await;
                    }
                }
                None => {}
            }
            let before = counters.ok.load(Ordering::Relaxed);
            tokio::select! {
                _ = &mut ctrl_c => break 'rounds,
                _ = tokio::time::sleep(PHASE) => {}
            }
            if !tty {
                let reg = sidecar.registry();
                let rows = table_rows(&reg, &sidecar.balancer().endpoints());
                console.write(&format!(
                    "\n[{:>5.1}s] {title}: {} requests ok in this phase, {} failed in all\n{}",
                    started.elapsed().as_secs_f64(),
                    counters.ok.load(Ordering::Relaxed) - before,
                    counters.failed.load(Ordering::Relaxed),
                    render_table(&rows, false)
                ));
            }
        }
        if !tty {
            break;
        }
    }
    stop.cancel();
    while load.join_next().await.is_some() {}
    if let Some(t) = table {
        let _ = t.await;
    }
    watch.abort();
    let ok = counters.ok.load(Ordering::Relaxed);
    let failed = counters.failed.load(Ordering::Relaxed);
    console.write(&format!(
        "\nsidekick demo: {ok} requests through the sidecar, {failed} failed\n"
    ));
    sidecar.shutdown().await;
    for b in backends.iter() {
        b.kill().await;
    }
    u8::from(failed != 0)
}
