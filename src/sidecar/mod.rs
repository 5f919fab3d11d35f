//! The localhost HTTP sidecar: MinIO sidekick's command line and behaviour over this crate's
//! balancer (feature `sidecar`).
//!
//! Programs that cannot link the library run the sidecar next to them and send plain HTTP to
//! `localhost`; the sidecar balances it over the backends with health probes, passive ejection,
//! site failover and retries on another endpoint. The `sidekick` example is the binary: it parses
//! the flags and calls [`main`]. Everything else lives here, so it is tested in-process and can be
//! embedded:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sidekick::sidecar::{parse_args, Command, Sidecar};
//! let Command::Run(cfg) = parse_args(["--address", "127.0.0.1:0", "http://127.0.0.1:9000"])? else {
//!     unreachable!()
//! };
//! let sidecar = Sidecar::start(*cfg, None).await?;
//! println!("listening on {}", sidecar.local_addr());
//! sidecar.shutdown().await;
//! # Ok(()) }
//! ```

mod console;
mod demo;
mod drain;
pub(crate) mod flags;
pub(crate) mod format;
pub(crate) mod forward;
mod metrics;
mod proxy;
mod server;
pub mod sites_file;
pub(crate) mod tls;
pub mod trim;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

pub use console::{Console, ConsoleOpts, TraceMode};
pub use flags::{help, host_balance_policy, parse_args, version, Command, Config, UsageError};
use metrics::Registry;
use proxy::Generation;
use server::Limits;

use proxy::Shared;
use server::Server;

/// How often `--cert`/`--key` are checked for changes.
pub(crate) const CERT_POLL: Duration = Duration::from_secs(2);

/// Why the sidecar could not start (printed as `<program>: <ERROR> <message>`, exit status 1).
#[derive(Debug)]
pub struct StartError(String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// The balancing part of a configuration: a balancer over the SITE arguments with sidekick's
/// probe settings, and the proxy's client over it.
fn build_generation(cfg: &Config, console: Arc<Console>) -> Result<Generation, StartError> {
    let tls = tls::client_config(cfg).map_err(|e| StartError(e.0))?;
    let registry = Arc::new(Registry::default());
    let events = registry.clone();
    let mut b = crate::Balancer::builder()
        .sites(&cfg.sites)
        .health_path(&cfg.health_path)
        .health_interval(cfg.health_duration)
        // sidekick waits `duration + uniform[0, duration)` between probes.
        .health_jitter(1.0)
        .health_timeout(cfg.health_timeout)
        .health_optimistic(cfg.health_optimistic)
        .policy(flags::host_balance_policy(&cfg.host_balance))
        .rr_dns(cfg.rr_dns_mode)
        .dns_refresh(cfg.dns_ttl)
        // sidekick's transport: 10 s dial timeout, idle connections kept 15 s, 1024 per host.
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(1024)
        // The proxy bounds the wait for a response head itself (`--response-timeout`, with its
        // own 504 and accounting): the engine's bound would only race it.
        .response_timeout(None)
        .slow_start(cfg.slow_start)
        .site_spillover(cfg.site_spillover)
        .overprovisioning(cfg.overprovisioning)
        .tls_config(tls)
        .on_event(move |ev| {
            let downtime = events.on_event(ev);
            console.event(ev, downtime);
        });
    if let Some(p) = cfg.last_site_health_path() {
        b = b.last_site_health_path(p);
    }
    if cfg.health_port != 0 {
        b = b.health_port(cfg.health_port);
    }
    let balancer = b.build().map_err(|e| {
        let msg = e.to_string();
        StartError(
            msg.strip_prefix("invalid configuration: ")
                .unwrap_or(&msg)
                .to_string(),
        )
    })?;
    let generation = Generation::new(balancer, registry).map_err(|e| StartError(e.to_string()))?;
    match &cfg.cache {
        Some(c) => {
            let cache = crate::cache::Cache::new(c.clone())
                .map_err(|e| StartError(format!("cache: {e}")))?;
            Ok(generation.with_cache(cache))
        }
        None => Ok(generation),
    }
}

/// How long a request that arrives before the first probe verdicts waits for them.
fn warm_wait(cfg: &Config) -> Duration {
    cfg.health_timeout.min(Duration::from_secs(5)) + Duration::from_secs(1)
}

/// A running sidecar: listener, balancer, certificate watcher.
#[derive(Debug)]
pub struct Sidecar {
    cfg: Config,
    shared: Arc<Shared>,
    server: Server,
    stop: CancellationToken,
    /// The listener's `--cert`/`--key` pair, read again on SIGHUP.
    cert_store: Option<Arc<tls::CertStore>>,
    /// Lines printed at start (`listening on`, the auto-TLS banner).
    pub banner: String,
}

impl Sidecar {
    /// Bind, build the balancer and serve. `console` defaults to stdout with the mode the flags
    /// and the terminal ask for.
    pub async fn start(cfg: Config, console: Option<Arc<Console>>) -> Result<Sidecar, StartError> {
        let mut cfg = cfg;
        if !cfg.sites_file.is_empty() && cfg.sites.is_empty() {
            cfg.sites = sites_file::read(&cfg.sites_file).map_err(StartError)?;
        }
        cfg.validate().map_err(|e| StartError(e.message))?;
        let console = console.unwrap_or_else(|| {
            Arc::new(Console::stdout(ConsoleOpts::from_config(
                &cfg,
                std::io::stdout().is_terminal(),
            )))
        });
        let stop = CancellationToken::new();
        let mut banner = String::new();

        // The listener's TLS: --cert/--key (reloaded on change) or --auto-tls-host.
        let mut certificate_pem = None;
        let mut cert_store = None;
        let store = if cfg.tls_listener() {
            let pair =
                tls::load_pair(&cfg.cert, &cfg.key, &cfg.key_password).map_err(StartError)?;
            let store = tls::CertStore::new(pair);
            cert_store = Some(store.clone());
            let report = {
                let console = console.clone();
                move |msg: String| console.write(&format!("sidekick: <ERROR> {msg}\n"))
            };
            tokio::spawn(tls::watch(
                store.clone(),
                cfg.cert.clone().into(),
                cfg.key.clone().into(),
                cfg.key_password.clone(),
                CERT_POLL,
                stop.clone(),
                report,
            ));
            Some(store)
        } else if !cfg.auto_tls_host.is_empty() {
            let auto = tls::auto_cert(&cfg.auto_tls_host).map_err(|e| StartError(e.0))?;
            banner.push_str(&auto.banner);
            certificate_pem = Some(auto.pem);
            Some(tls::CertStore::new(auto.key))
        } else {
            None
        };
        let acceptor = match store {
            Some(store) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                tls::server_config(store, &cfg.tls_max).map_err(|e| StartError(e.0))?,
            ))),
            None => None,
        };

        let generation = build_generation(&cfg, console.clone())?;
        let listeners = if cfg.threads > 1 {
            server::bind_shared(&cfg.address, cfg.threads).await
        } else {
            server::bind(&cfg.address).await.map(|l| vec![l])
        }
        .map_err(|e| StartError(format!("listen tcp {}: {e}", cfg.address)))?;
        if !console.opts.table {
            // The address actually bound: `127.0.0.1:0` announces the port it got.
            let shown = match listeners.first().map(|l| l.local_addr()) {
                Some(Ok(a)) if cfg.address.starts_with(':') => format!(":{}", a.port()),
                Some(Ok(a)) => a.to_string(),
                _ => cfg.address.clone(),
            };
            banner.push_str(&format!("sidekick: listening on '{shown}'\n"));
        }
        let generation = Arc::new(generation);
        let warm = generation.clone();
        let wait = warm_wait(&cfg);
        tokio::spawn(async move { warm.warm_up(wait).await });
        let shared = Arc::new(Shared {
            generation: ArcSwap::new(generation),
            console,
            certificate_pem,
            host_ip: proxy::host_ip(),
            warm_wait: wait,
            response_timeout: cfg.response_timeout,
            body_timeout: cfg.body_timeout,
            tunnels: tokio_util::task::TaskTracker::new(),
            draining: AtomicBool::new(false),
        });
        let limits = Limits {
            max_conns: cfg.max_conns,
            header_timeout: cfg.header_timeout,
            ..Limits::default()
        };
        let server = Server::spawn(listeners, acceptor, shared.clone(), limits)
            .map_err(|e| StartError(format!("listen tcp {}: {e}", cfg.address)))?;
        Ok(Sidecar {
            cfg,
            shared,
            server,
            stop,
            cert_store,
            banner,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The configuration it runs.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The balancer in force.
    pub fn balancer(&self) -> crate::Balancer {
        self.shared.generation.load().balancer.clone()
    }

    /// The shared cache in force, when `SIDEKICK_CACHE_*` configured one.
    pub fn cache(&self) -> Option<crate::cache::Cache> {
        self.shared.generation.load().cache().cloned()
    }
    /// Requests relayed to the endpoint `url` (as a SITE names it) since the configuration in
    /// force was built: what `sidekick_requests_total` reports for it.
    pub fn requests_served(&self, url: &str) -> u64 {
        self.registry().entry(url).snapshot().requests
    }

    /// The statistics in force.
    pub(crate) fn registry(&self) -> Arc<Registry> {
        self.shared.generation.load().registry.clone()
    }

    /// The console it prints to.
    pub fn console(&self) -> Arc<Console> {
        self.shared.console.clone()
    }

    /// SIGHUP: build everything again from the same configuration (the `--cert`/`--key` pair
    /// and files such as `--cacert` are read again, host names resolved again, statistics start from zero). The old
    /// configuration keeps serving until the new one is ready (or its first probes took
    /// longer than the warm-up bound); requests in flight finish on the old one.
    ///
    /// With `--sites-file`, SIGHUP instead reads that file again and applies its SITE list to
    /// the running balancer in place (see [`sites_file`]): unchanged backends keep their state
    /// and statistics. The `--cert`/`--key` pair is read again either way.
    pub async fn reload(&self) -> Result<(), StartError> {
        if let Some(store) = &self.cert_store {
            // A pair that does not load (a key that does not match, say) is not taken: the
            // running one keeps serving, and the reason is printed.
            match tls::load_pair(&self.cfg.cert, &self.cfg.key, &self.cfg.key_password) {
                Ok(pair) => store.set(pair),
                Err(e) => self.shared.console.write(&format!(
                    "sidekick: <ERROR> unable to reload the certificate {}: {e}; the running certificate stays\n",
                    self.cfg.cert
                )),
            }
        }
        if !self.cfg.sites_file.is_empty() {
            return self.reload_sites();
        }
        let generation = Arc::new(build_generation(&self.cfg, self.shared.console.clone())?);
        generation.warm_up(warm_wait(&self.cfg)).await;
        self.shared.generation.store(generation);
        Ok(())
    }

    /// Read `--sites-file` again and apply it to the balancer in force, in place.
    fn reload_sites(&self) -> Result<(), StartError> {
        let path = &self.cfg.sites_file;
        let sites = sites_file::read(path).map_err(StartError)?;
        let generation = self.shared.generation.load_full();
        let changes = generation
            .balancer
            .set_sites(&sites)
            .map_err(|e| StartError(format!("--sites-file {path}: {e}")))?;
        generation.registry.sync(&generation.balancer.endpoints());
        self.shared.console.write(&format!(
            "sidekick: SITEs read again from {path}: {} site(s), {} backend(s) added, {} removed, {} kept\n",
            sites.len(),
            changes.added,
            changes.removed,
            changes.kept
        ));
        Ok(())
    }

    /// Stop accepting and let requests in flight finish within `--drain-timeout`. True when
    /// they all did.
    pub async fn shutdown(self) -> bool {
        self.stop.cancel();
        self.server.shutdown(self.cfg.drain_timeout).await
    }
}

/// Draw the live table every 500 ms until `stop`; `footer` adds lines under it.
pub(crate) fn spawn_table(
    sidecar: &Sidecar,
    footer: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let shared = sidecar.shared.clone();
    tokio::spawn(async move {
        shared.console.write("\x1b[H\x1b[2J");
        loop {
            let gen = shared.generation.load_full();
            let rows = console::table_rows(&gen.registry, &gen.balancer.endpoints());
            drop(gen);
            let mut screen = String::from("\x1b[H");
            screen.push_str(&console::render_table(&rows, true));
            if let Some(f) = &footer {
                screen.push_str(&f());
            }
            screen.push_str("\x1b[J");
            shared.console.write(&screen);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    })
}

fn program_name(argv0: &str) -> String {
    std::path::Path::new(argv0).file_name().map_or_else(
        || "sidekick".to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The whole program: parse `args` (without the program name), serve until SIGTERM/SIGINT,
/// rebuild on SIGHUP. `argv0` is how the program was invoked (for help and messages).
pub fn main(argv0: &str, args: impl IntoIterator<Item = String>) -> ExitCode {
    ExitCode::from(run(argv0, args))
}

/// The environment variable that sets the number of worker threads.
pub const THREADS_VAR: &str = "SIDEKICK_THREADS";

/// The worker threads when `SIDEKICK_THREADS` is unset: one per CPU this process may use, as
/// the standard library counts them (the affinity mask and a cgroup CPU quota, rounded up), 1
/// when that cannot be told.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Most worker threads `SIDEKICK_THREADS` may ask for.
pub const MAX_THREADS: usize = 1024;

/// The worker thread count: what `SIDEKICK_THREADS` asks for, an integer from 1 to
/// [`MAX_THREADS`] (anything else is refused with a message naming the value); when it is unset
/// or empty, `cores`, the CPUs this process may run on (see [`default_threads`]).
pub(crate) fn threads(value: Option<std::ffi::OsString>, cores: usize) -> Result<usize, String> {
    let Some(raw) = value.filter(|v| !v.is_empty()) else {
        return Ok(cores.clamp(1, MAX_THREADS));
    };
    let text = raw.to_string_lossy();
    match text.trim().parse::<i64>() {
        Ok(n) if (1..=MAX_THREADS as i64).contains(&n) => Ok(n as usize),
        _ => Err(format!(
            "invalid {THREADS_VAR}={text:?}: must be a whole number of worker threads from 1 to \
             {MAX_THREADS}"
        )),
    }
}

/// [`main`] for arguments as the operating system gives them (`std::env::args_os`): an argument
/// that is not UTF-8 is a usage error naming it (exit 2), not a panic.
pub fn main_os(
    argv0: &std::ffi::OsStr,
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> ExitCode {
    ExitCode::from(run_os(argv0, args))
}

/// [`run`] for arguments as the operating system gives them; see [`main_os`].
pub fn run_os(argv0: &std::ffi::OsStr, args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let argv0 = argv0.to_string_lossy().into_owned();
    let mut text = Vec::new();
    for (i, a) in args.into_iter().enumerate() {
        match a.into_string() {
            Ok(s) => text.push(s),
            Err(bad) => {
                eprintln!(
                    "{}: Incorrect Usage. argument {} is not valid UTF-8: {:?}\nRun '{argv0} --help' for the flags.",
                    program_name(&argv0),
                    i + 1,
                    bad
                );
                return 2;
            }
        }
    }
    run(&argv0, text)
}

/// [`main`], returning the exit status: 0 after a clean stop (SIGTERM/SIGINT included), 1 for a
/// fatal error or a demo with failed requests, 2 for a usage error (a bad flag, a bad or missing
/// SITE, a bad `SIDEKICK_THREADS`).
pub fn run(argv0: &str, args: impl IntoIterator<Item = String>) -> u8 {
    let name = program_name(argv0);
    let cfg = match parse_args(args) {
        Ok(Command::Help) => {
            print!("{}", flags::help(argv0));
            return 0;
        }
        Ok(Command::Version) => {
            print!("{}", flags::version(argv0));
            return 0;
        }
        Ok(Command::NoSites) => {
            print!("{}", flags::help(argv0));
            return 2;
        }
        Ok(Command::Run(cfg)) => *cfg,
        Err(e) => {
            eprintln!("{name}: Incorrect Usage. {e}\nRun '{argv0} --help' for the flags.");
            return 2;
        }
    };
    let mut cfg = cfg;
    if !cfg.sites_file.is_empty() {
        match sites_file::read(&cfg.sites_file) {
            Ok(sites) => cfg.sites = sites,
            Err(e) => {
                eprintln!("{name}: <ERROR> {e}");
                return 1;
            }
        }
    }
    if let Err(e) = cfg.validate() {
        eprintln!("{name}: Incorrect Usage. {e}\nRun '{argv0} --help' for the flags.");
        return 2;
    }
    match crate::cache::CacheConfig::from_env() {
        Ok(cache) => cfg.cache = cache,
        Err(e) => {
            eprintln!("{name}: <ERROR> {e}");
            return 1;
        }
    }
    if !cfg.pprof.is_empty() {
        eprintln!(
            "{name}: --pprof is accepted for compatibility and ignored (no Go profiler here)"
        );
    }
    // Thread per core by default, like the Go sidekick (GOMAXPROCS) and nginx's `auto`: on
    // the 2-core reference box two event loops served 1.03-1.27x the requests of one for the
    // same or less CPU per request. The CPUs counted are those the process may use (affinity,
    // the cgroup's CPU quota), so a Pod's CPU limit bounds it; SIDEKICK_THREADS=N overrides.
    cfg.threads = match threads(std::env::var_os(THREADS_VAR), default_threads()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{name}: Incorrect Usage. {e}");
            return 2;
        }
    };
    // Thread per core: this runtime runs the engine and one listener; each further thread its
    // own listener and connections (see `Limits::threads`).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: <ERROR> cannot start the runtime: {e}");
            return 1;
        }
    };
    let code = rt.block_on(async move {
        if cfg.demo {
            demo::run(cfg, &name).await
        } else {
            serve(cfg, &name).await
        }
    });
    // Connections of a drain that timed out are abandoned, not waited for.
    rt.shutdown_timeout(Duration::from_millis(100));
    code
}

/// Serve `cfg` until SIGTERM/SIGINT; SIGHUP rebuilds.
async fn serve(cfg: Config, name: &str) -> u8 {
    let sidecar = match Sidecar::start(cfg, None).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: <ERROR> {e}");
            return 1;
        }
    };
    let console = sidecar.console();
    console.write(&sidecar.banner);
    let table_stop = CancellationToken::new();
    let table = console
        .opts
        .table
        .then(|| spawn_table(&sidecar, None, table_stop.clone()));
    let signal = wait_for_signals(&sidecar, name).await;
    table_stop.cancel();
    if let Some(t) = table {
        let _ = t.await;
    }
    console.write(&format!("{name}: caught signal '{signal}'\n"));
    if !sidecar.shutdown().await {
        console.write(&format!(
            "{name}: drain timeout: connections still open were closed\n"
        ));
    }
    0
}

/// Handle SIGHUP (reload) until SIGTERM or SIGINT, whose name is returned.
async fn wait_for_signals(sidecar: &Sidecar, name: &str) -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // No signal handling possible: serve until the process is killed.
        std::future::pending::<()>().await;
        return "killed";
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if let Err(e) = sidecar.reload().await {
                    sidecar.console().write(&format!("{name}: <ERROR> reload failed, the previous configuration stays: {e}\n"));
                }
            }
            _ = term.recv() => return "terminated",
            _ = int.recv() => return "interrupt",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidekick_threads_values() {
        assert_eq!(threads(None, 2), Ok(2));
        assert_eq!(threads(Some("".into()), 8), Ok(8));
        assert_eq!(threads(None, 0), Ok(1));
        assert_eq!(threads(None, 5000), Ok(MAX_THREADS));
        assert_eq!(threads(Some("4".into()), 2), Ok(4));
        assert_eq!(threads(Some(" 2 ".into()), 64), Ok(2));
        assert_eq!(threads(Some("1024".into()), 1), Ok(MAX_THREADS));
        for bad in ["0", "-1", "abc", "100000", "1025", "1.5"] {
            let e = threads(Some(bad.into()), 2).expect_err(bad);
            assert!(e.contains("SIDEKICK_THREADS") && e.contains(bad), "{e}");
        }
    }
}
