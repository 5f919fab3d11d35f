//! The command line of MinIO's `sidekick`, parsed the way Go's `flag` package does it.
//!
//! Rules (those of Go's `flag`, which sidekick's CLI library sits on):
//!
//! - a flag is written `-name` or `--name`; a value as `--name value` or `--name=value`;
//! - a boolean flag takes no separate value: `--log` or `--log=false` (`--log false` makes `false`
//!   the first SITE);
//! - parsing stops at the first argument that is not a flag (or after `--`): every later argument
//!   is a SITE. Go would take a later `--log` for a SITE too (and sidekick then fails on it as
//!   "missing host address"); here an argument after the first SITE that starts with `-` is a
//!   usage error naming it ("flags must come before the SITEs"), unless `--` came first;
//! - a repeated flag keeps its last value, except `--status-code`, which collects one code per use;
//! - durations use Go's syntax (`5s`, `500ms`, `1m30s`); a bare number is refused.
//!
//! Unlike sidekick, a usage error (unknown flag, bad value, missing value, a SITE that does not
//! parse: see [`Config::validate`]) makes the program exit with status 2 and a message naming the
//! flag and the value, instead of printing the message and exiting 0 as if all went well.
//! Values sidekick accepts and then misuses are refused: a probe path a request line cannot
//! carry (space, control bytes), an unknown `--trace` mode.

use std::fmt;
use std::time::Duration;

use super::format::{go_duration, parse_go_duration};

/// The program's version, printed by `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything the command line says. Field defaults are sidekick's.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// `--address, -a`: where to listen (`:8080` = every interface).
    pub address: String,
    /// `--health-path, -p`: probe path (normalised: a leading `/` is added; empty is `/`).
    pub health_path: String,
    /// `--read-health-path, -r`: probe path of the last site when there are several; empty means
    /// the same as `health_path`.
    pub read_health_path: String,
    /// `--health-port`: probe this port instead of the endpoint's (0 = the endpoint's).
    pub health_port: u16,
    /// `--health-duration, -d`: probe interval (plus up to 100 % jitter, like sidekick).
    pub health_duration: Duration,
    /// `--health-timeout`: deadline of one probe.
    pub health_timeout: Duration,
    /// `--insecure, -i`: do not verify the backends' certificates.
    pub insecure: bool,
    /// `--log, -l`: print a line when a backend goes down or comes back.
    pub log: bool,
    /// `--trace, -t`: `all`, `application`, `minio`, or empty for no trace.
    pub trace: String,
    /// Whether `--trace` was given explicitly (it turns the live table off).
    pub trace_set: bool,
    /// `--quiet, -q`: no trace and no log lines.
    pub quiet: bool,
    /// `--json`: trace and log lines as JSON objects.
    pub json: bool,
    /// `--debug`: full traces with headers.
    pub debug: bool,
    /// `--errors, -e`: trace only answers with a status from 400 to 599.
    pub errors: bool,
    /// `--status-code` (repeatable): trace only answers with one of these statuses.
    pub status_codes: Vec<u16>,
    /// `--cacert`: CA bundle (PEM) that replaces the system roots to verify backends.
    pub cacert: String,
    /// `--client-cert`: client certificate (PEM) presented to backends.
    pub client_cert: String,
    /// `--client-key`: its private key (PEM).
    pub client_key: String,
    /// `--cert`: the listener's certificate chain (PEM); with `--key`, the listener speaks TLS.
    pub cert: String,
    /// `--key`: the listener's private key (PEM).
    pub key: String,
    /// `--key-password`: password of a legacy-encrypted PEM key.
    pub key_password: String,
    /// `--tls-max`: highest TLS version, `1.2` or `1.3`.
    pub tls_max: String,
    /// `--host-balance`: `least` (default), `p2c`, `round-robin`; anything else is `random`.
    pub host_balance: String,
    /// `--dns-ttl`: how often host names are resolved again.
    pub dns_ttl: Duration,
    /// `--rr-dns-mode`: one backend per address a host name resolves to.
    pub rr_dns_mode: bool,
    /// `--health-optimistic`: probe a backend that is up only after a request failed on it.
    pub health_optimistic: bool,
    /// `--auto-tls-host`: comma-separated names for a self-signed listener certificate.
    pub auto_tls_host: String,
    /// `--pprof`: accepted for compatibility, ignored (there is no Go profiler to serve).
    pub pprof: String,
    /// `--max-conns` (ours): most client connections served at once.
    pub max_conns: usize,
    /// `--header-timeout` (ours): a client must send a request head within this time.
    pub header_timeout: Duration,
    /// `--drain-timeout` (ours): on SIGTERM/SIGINT, how long in-flight requests may take.
    pub drain_timeout: Duration,
    /// `--response-timeout` (ours): how long a backend may stay silent, waiting for the response
    /// head once the request is sent and between two reads of the response body (nginx's
    /// `proxy_read_timeout`, 60 s). A backend that misses it counts as timed out.
    pub response_timeout: Duration,
    /// `--body-timeout` (ours): how long a client may stay silent between two reads of its
    /// request body (nginx's `client_body_timeout`, 60 s); it then gets `408`.
    pub body_timeout: Duration,
    /// `--demo` (ours): run in front of built-in demo backends with a demo load.
    pub demo: bool,
    /// `--slow-start` (ours): ramp a returning backend's share over this window; `None`: off.
    pub slow_start: Option<Duration>,
    /// `--site-spillover` (ours): graded spill-over between sites instead of all-or-nothing.
    pub site_spillover: bool,
    /// `--overprovisioning` (ours): with `--site-spillover`, the factor a site's healthy share
    /// is multiplied by.
    pub overprovisioning: f64,
    /// Event-loop threads (`SIDEKICK_THREADS`, not a flag: 1 as parsed; the sidecar's `main` sets
    /// it from the variable, by default one per CPU the process may use, see
    /// [`default_threads`](super::default_threads)): each thread runs its
    /// own listening socket on the address (`SO_REUSEPORT`) and its own connections.
    pub threads: usize,
    /// The SITE arguments, in order (with `--sites-file`: the file's, once read).
    pub sites: Vec<String>,
    /// `--sites-file` (ours): read the SITEs from this file instead of the arguments (see
    /// [`sites_file`](super::sites_file)); SIGHUP reads it again and applies the changes in
    /// place. Empty: the SITE arguments.
    pub sites_file: String,
    /// The shared S3 cache: not a flag; [`run`](super::run) reads it from the
    /// `SIDEKICK_CACHE_*` environment variables ([`CacheConfig::from_env`](crate::cache::CacheConfig::from_env)).
    pub cache: Option<crate::cache::CacheConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            address: ":8080".to_string(),
            health_path: "/".to_string(),
            read_health_path: String::new(),
            health_port: 0,
            health_duration: Duration::from_secs(5),
            health_timeout: Duration::from_secs(10),
            insecure: false,
            log: false,
            trace: "all".to_string(),
            trace_set: false,
            quiet: false,
            json: false,
            debug: false,
            errors: false,
            status_codes: Vec::new(),
            cacert: String::new(),
            client_cert: String::new(),
            client_key: String::new(),
            cert: String::new(),
            key: String::new(),
            key_password: String::new(),
            tls_max: "1.3".to_string(),
            host_balance: "least".to_string(),
            dns_ttl: Duration::from_secs(600),
            rr_dns_mode: false,
            health_optimistic: false,
            auto_tls_host: String::new(),
            pprof: String::new(),
            max_conns: 8192,
            header_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
            response_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            demo: false,
            slow_start: None,
            site_spillover: false,
            overprovisioning: 1.4,
            threads: 1,
            sites: Vec::new(),
            sites_file: String::new(),
            cache: None,
        }
    }
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Serve with this configuration.
    Run(Box<Config>),
    /// `--help`/`-h`: print [`help`] and exit 0.
    Help,
    /// `--version`/`-v`: print [`version`] and exit 0.
    Version,
    /// No SITE: print [`help`] and exit 2, a usage error (sidekick exits 1).
    NoSites,
}

/// A command line that cannot be run: the message names the flag or value at fault.
/// Exit status 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError {
    /// The flag at fault, as written in the help (`--health-duration`), when there is one.
    pub flag: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UsageError {}

fn usage(flag: &str, message: String) -> UsageError {
    UsageError {
        flag: Some(format!("--{flag}")),
        message,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    Str,
    Int,
    Duration,
    IntList,
}

struct Spec {
    /// Canonical name first, then aliases.
    names: &'static [&'static str],
    kind: Kind,
    usage: &'static str,
    /// Shown as `(default: ...)` in the help.
    default: Option<&'static str>,
    hidden: bool,
}

const fn flag(names: &'static [&'static str], kind: Kind, usage: &'static str) -> Spec {
    Spec {
        names,
        kind,
        usage,
        default: None,
        hidden: false,
    }
}

const fn with_default(mut s: Spec, d: &'static str) -> Spec {
    s.default = Some(d);
    s
}

const fn hidden(mut s: Spec) -> Spec {
    s.hidden = true;
    s
}

/// Every flag, in help order.
const FLAGS: &[Spec] = &[
    with_default(
        flag(&["address", "a"], Kind::Str, "address to listen on"),
        "\":8080\"",
    ),
    flag(
        &["health-path", "p"],
        Kind::Str,
        "path probed on every backend to decide whether it is up",
    ),
    flag(
        &["read-health-path", "r"],
        Kind::Str,
        "probe path for the last site (a read-only failover site) when there are several",
    ),
    with_default(
        flag(
            &["health-port"],
            Kind::Int,
            "probe this port instead of the backend's own (0: the backend's)",
        ),
        "0",
    ),
    with_default(
        flag(
            &["health-duration", "d"],
            Kind::Duration,
            "time between probes, plus up to as much again of random jitter",
        ),
        "5s",
    ),
    with_default(
        flag(
            &["health-timeout"],
            Kind::Duration,
            "time a probe may take before it counts as failed",
        ),
        "10s",
    ),
    flag(
        &["insecure", "i"],
        Kind::Bool,
        "do not verify the backends' TLS certificates",
    ),
    flag(
        &["log", "l"],
        Kind::Bool,
        "print a line when a backend goes down or comes back up",
    ),
    with_default(
        flag(
            &["trace", "t"],
            Kind::Str,
            "trace requests: all, application (not probes) or minio; empty for none",
        ),
        "\"all\"",
    ),
    flag(
        &["quiet", "q"],
        Kind::Bool,
        "print no trace and no log lines",
    ),
    flag(&["json"], Kind::Bool, "print traces and log lines as JSON"),
    flag(
        &["debug"],
        Kind::Bool,
        "print full traces, with request and response headers",
    ),
    flag(
        &["errors", "e"],
        Kind::Bool,
        "trace only answers with a status from 400 to 599",
    ),
    flag(
        &["status-code"],
        Kind::IntList,
        "trace only answers with this status (repeat for several)",
    ),
    flag(
        &["cacert"],
        Kind::Str,
        "PEM file of CA certificates to verify the backends with (instead of the system's)",
    ),
    flag(
        &["client-cert"],
        Kind::Str,
        "PEM certificate presented to the backends (with --client-key)",
    ),
    flag(
        &["client-key"],
        Kind::Str,
        "PEM private key of --client-cert",
    ),
    flag(
        &["cert"],
        Kind::Str,
        "PEM certificate chain of the listener (with --key: serve HTTPS, reloaded on change)",
    ),
    flag(&["key"], Kind::Str, "PEM private key of --cert"),
    flag(
        &["key-password"],
        Kind::Str,
        "password of an encrypted PEM private key (--key)",
    ),
    hidden(with_default(
        flag(
            &["tls-max"],
            Kind::Str,
            "highest TLS version, 1.2 or 1.3, for the listener and the backends",
        ),
        "\"1.3\"",
    )),
    with_default(
        flag(
            &["host-balance"],
            Kind::Str,
            "how to choose a backend in a site: least, p2c, round-robin or random",
        ),
        "\"least\"",
    ),
    with_default(
        flag(
            &["dns-ttl"],
            Kind::Duration,
            "how often backend host names are resolved again",
        ),
        "10m0s",
    ),
    flag(
        &["rr-dns-mode"],
        Kind::Bool,
        "make one backend of every address a backend host name resolves to",
    ),
    flag(
        &["health-optimistic"],
        Kind::Bool,
        "probe a backend that is up only after a request to it failed",
    ),
    flag(
        &["auto-tls-host"],
        Kind::Str,
        "serve HTTPS with a self-signed certificate for these comma-separated names",
    ),
    hidden(flag(
        &["pprof"],
        Kind::Str,
        "accepted for compatibility and ignored",
    )),
    with_default(
        flag(
            &["max-conns"],
            Kind::Int,
            "most client connections served at once; more wait to be accepted",
        ),
        "8192",
    ),
    with_default(
        flag(
            &["header-timeout"],
            Kind::Duration,
            "a client connection must send a whole request head within this time",
        ),
        "10s",
    ),
    with_default(
        flag(
            &["drain-timeout"],
            Kind::Duration,
            "on SIGTERM or SIGINT, time in-flight requests get to finish",
        ),
        "20s",
    ),
    with_default(
        flag(
            &["response-timeout"],
            Kind::Duration,
            "a backend may stay silent this long, before its response head and between body reads",
        ),
        "1m0s",
    ),
    with_default(
        flag(
            &["body-timeout"],
            Kind::Duration,
            "a client may stay silent this long between two reads of its request body",
        ),
        "1m0s",
    ),
    flag(
        &["sites-file"],
        Kind::Str,
        "read the SITEs from this file (one or more per line, # comments) instead of the \
         arguments; SIGHUP reads it again and applies the changes, keeping unchanged backends' state",
    ),
    flag(
        &["slow-start"],
        Kind::Duration,
        "ramp a backend that comes back up from 10 % to its full share over this time (off by default)",
    ),
    flag(
        &["site-spillover"],
        Kind::Bool,
        "share a degraded site's traffic with the next site by its healthy share, not all-or-nothing",
    ),
    with_default(
        flag(
            &["overprovisioning"],
            Kind::Str,
            "with --site-spillover, the factor a site's healthy share is multiplied by",
        ),
        "1.4",
    ),
    flag(
        &["demo"],
        Kind::Bool,
        "run in front of built-in demo backends (two sites on 127.0.0.1) with a demo load",
    ),
    flag(&["help", "h"], Kind::Bool, "show this help"),
    flag(&["version", "v"], Kind::Bool, "print the version"),
];

fn find(name: &str) -> Option<&'static Spec> {
    FLAGS.iter().find(|s| s.names.contains(&name))
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(v, 0, 64)`: decimal, `0x`, `0o`/`0`, `0b` prefixes, `_` separators.
fn parse_int(v: &str) -> Option<i64> {
    let (neg, body) = match v.as_bytes().first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    let n = i128::from_str_radix(&clean, radix).ok()?;
    let n = if neg { -n } else { n };
    i64::try_from(n).ok()
}

/// Parse the arguments after the program name.
pub fn parse_args<I, S>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let mut cfg = Config::default();
    let mut help = false;
    let mut version = false;
    let mut i = 0;
    let mut dashdash = false;
    while i < args.len() {
        let arg = &args[i];
        if arg.len() < 2 || !arg.starts_with('-') {
            break; // the first SITE (a lone "-" is one too)
        }
        if arg == "--" {
            i += 1;
            dashdash = true;
            break;
        }
        let body = arg.strip_prefix("--").unwrap_or_else(|| &arg[1..]);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(UsageError {
                flag: None,
                message: format!("bad flag syntax: {arg}"),
            });
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some(spec) = find(name) else {
            return Err(UsageError {
                flag: Some(format!("--{name}")),
                message: format!("flag provided but not defined: -{name} (see --help)"),
            });
        };
        let canon = spec.names[0];
        i += 1;
        if spec.kind == Kind::Bool {
            let value = match inline {
                None => true,
                Some(v) => parse_bool(&v).ok_or_else(|| {
                    usage(
                        canon,
                        format!("invalid boolean value {v:?} for flag -{name}: use true or false"),
                    )
                })?,
            };
            match canon {
                "insecure" => cfg.insecure = value,
                "log" => cfg.log = value,
                "quiet" => cfg.quiet = value,
                "json" => cfg.json = value,
                "debug" => cfg.debug = value,
                "errors" => cfg.errors = value,
                "rr-dns-mode" => cfg.rr_dns_mode = value,
                "health-optimistic" => cfg.health_optimistic = value,
                "demo" => cfg.demo = value,
                "site-spillover" => cfg.site_spillover = value,
                "help" => help = value,
                "version" => version = value,
                _ => unreachable!("bool flag {canon} not handled"),
            }
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => match args.get(i) {
                Some(v) => {
                    i += 1;
                    v.clone()
                }
                None => return Err(usage(canon, format!("flag needs an argument: -{name}"))),
            },
        };
        set(&mut cfg, spec, name, value)?;
    }
    if help {
        return Ok(Command::Help);
    }
    if version {
        return Ok(Command::Version);
    }
    cfg.sites = args[i..].to_vec();
    if !dashdash {
        // Go's flag package stops at the first SITE, so sidekick takes a later `--log` for a
        // SITE and then fails on it. Say what happened instead (after `--`, all are SITEs).
        if let Some(late) = cfg.sites.iter().find(|a| a.len() > 1 && a.starts_with('-')) {
            let name = late.trim_start_matches('-');
            let name = name.split_once('=').map_or(name, |(n, _)| n);
            return Err(UsageError {
                flag: find(name).map(|s| format!("--{}", s.names[0])),
                message: format!(
                    "{late:?} comes after the SITE {:?}: flags must come before the SITEs",
                    cfg.sites[0]
                ),
            });
        }
    }
    if !cfg.sites_file.is_empty() && !cfg.sites.is_empty() {
        return Err(usage(
            "sites-file",
            format!(
                "--sites-file names the SITEs: no SITE argument may be given too (got {:?})",
                cfg.sites[0]
            ),
        ));
    }
    if !cfg.sites_file.is_empty() && cfg.demo {
        return Err(usage(
            "demo",
            "--demo brings its own backends: --sites-file may not be given".to_string(),
        ));
    }
    if cfg.sites.is_empty() && !cfg.demo && cfg.sites_file.is_empty() {
        return Ok(Command::NoSites);
    }
    if cfg.demo && !cfg.sites.is_empty() {
        return Err(usage(
            "demo",
            format!(
                "--demo brings its own backends: no SITE may be given (got {:?})",
                cfg.sites[0]
            ),
        ));
    }
    Ok(Command::Run(Box::new(cfg)))
}

fn set(cfg: &mut Config, spec: &Spec, written: &str, value: String) -> Result<(), UsageError> {
    let canon = spec.names[0];
    let bad = |why: String| {
        usage(
            canon,
            format!("invalid value {value:?} for flag -{written}: {why}"),
        )
    };
    match spec.kind {
        Kind::Duration => {
            let ns = parse_go_duration(&value).map_err(|e| {
                bad(format!(
                    "{e} (write a Go duration such as 5s, 500ms or 1m30s)"
                ))
            })?;
            if ns <= 0 {
                return Err(bad("the duration must be greater than zero".to_string()));
            }
            let d = Duration::from_nanos(ns as u64);
            match canon {
                "health-duration" => cfg.health_duration = d,
                "health-timeout" => cfg.health_timeout = d,
                "dns-ttl" => cfg.dns_ttl = d,
                "header-timeout" => cfg.header_timeout = d,
                "drain-timeout" => cfg.drain_timeout = d,
                "response-timeout" => cfg.response_timeout = d,
                "body-timeout" => cfg.body_timeout = d,
                "slow-start" => cfg.slow_start = Some(d),
                _ => unreachable!("duration flag {canon} not handled"),
            }
        }
        Kind::Int => {
            let n = parse_int(&value).ok_or_else(|| bad("not an integer".to_string()))?;
            match canon {
                "health-port" => {
                    cfg.health_port = u16::try_from(n).map_err(|_| {
                        usage(
                            canon,
                            format!(
                                "invalid health check port {:?}: must be in [0, 65535]",
                                value
                            ),
                        )
                    })?;
                }
                "max-conns" => {
                    cfg.max_conns = usize::try_from(n)
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| bad("must be at least 1".to_string()))?;
                }
                _ => unreachable!("int flag {canon} not handled"),
            }
        }
        Kind::IntList => {
            let n = parse_int(&value).ok_or_else(|| bad("not an integer".to_string()))?;
            let code = u16::try_from(n)
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| bad("not an HTTP status (100-599)".to_string()))?;
            cfg.status_codes.push(code);
        }
        Kind::Str => match canon {
            "address" => cfg.address = value,
            "health-path" => {
                check_path(&value).map_err(bad)?;
                cfg.health_path = normalize_path(&value);
            }
            "read-health-path" => {
                check_path(&value).map_err(bad)?;
                cfg.read_health_path = value;
            }
            "trace" => {
                if !TRACE_MODES.contains(&value.as_str()) {
                    return Err(bad(
                        "use all, application, minio, or \"\" for no trace".to_string()
                    ));
                }
                cfg.trace = value;
                cfg.trace_set = true;
            }
            "cacert" => cfg.cacert = value,
            "client-cert" => cfg.client_cert = value,
            "client-key" => cfg.client_key = value,
            "cert" => cfg.cert = value,
            "key" => cfg.key = value,
            "key-password" => cfg.key_password = value,
            "tls-max" => {
                if value != "1.2" && value != "1.3" {
                    return Err(usage(
                        canon,
                        format!(
                            "invalid TLS max version specified '{value}' - supported values [1.2, 1.3]"
                        ),
                    ));
                }
                cfg.tls_max = value;
            }
            "host-balance" => cfg.host_balance = value,
            "auto-tls-host" => cfg.auto_tls_host = value,
            "pprof" => cfg.pprof = value,
            "sites-file" => {
                if value.is_empty() {
                    return Err(bad("a file name is needed".to_string()));
                }
                cfg.sites_file = value;
            }
            "overprovisioning" => {
                cfg.overprovisioning = value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| *f > 0.0 && *f <= 100.0)
                    .ok_or_else(|| {
                        bad("a decimal number above 0 and at most 100, e.g. 1.4".to_string())
                    })?;
            }
            _ => unreachable!("string flag {canon} not handled"),
        },
        Kind::Bool => unreachable!("bool flags are set by the parser"),
    }
    Ok(())
}

/// The values `--trace` accepts.
const TRACE_MODES: [&str; 4] = ["all", "application", "minio", ""];

/// A probe path must be sendable as the path of a request line: no space, no control byte,
/// nothing a URI path cannot hold.
fn check_path(p: &str) -> Result<(), String> {
    if let Some(b) = p.bytes().find(|&b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "the path contains the byte 0x{b:02x} (space and control characters are not \
             allowed; percent-encode them)"
        ));
    }
    http::uri::PathAndQuery::try_from(normalize_path(p).as_str())
        .map(|_| ())
        .map_err(|e| format!("not a URL path: {e}"))
}

/// A leading `/` is added when missing (so an empty path is `/`).
pub fn normalize_path(p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

/// The policy named by `--host-balance`: `least` (and empty) → least requests in flight,
/// `p2c` → power of two choices over peak-EWMA, `round-robin`/`rr` → round robin, anything else
/// → uniformly random (as sidekick does with any value but `least`).
pub fn host_balance_policy(value: &str) -> crate::Policy {
    match value {
        "" | "least" => crate::Policy::Least,
        "p2c" | "peak-ewma" => crate::Policy::PeakEwma,
        "round-robin" | "rr" => crate::Policy::RoundRobin,
        _ => crate::Policy::Random,
    }
}

impl Config {
    /// The probe path of the last site: `--read-health-path` when given and there are several
    /// sites, `None` otherwise (every site uses `--health-path`).
    pub fn last_site_health_path(&self) -> Option<String> {
        (self.sites.len() > 1 && !self.read_health_path.is_empty())
            .then(|| normalize_path(&self.read_health_path))
    }

    /// Whether the listener speaks TLS with the `--cert`/`--key` pair.
    pub fn tls_listener(&self) -> bool {
        !self.cert.is_empty() && !self.key.is_empty()
    }

    /// Checks that need more than one flag, and the SITE arguments. Run before serving.
    pub fn validate(&self) -> Result<(), UsageError> {
        for site in &self.sites {
            crate::site::parse_site(site).map_err(|e| UsageError {
                flag: None,
                message: format!("invalid SITE {site:?}: {e}"),
            })?;
        }
        if self.client_cert.is_empty() != self.client_key.is_empty() {
            let (given, missing) = if self.client_cert.is_empty() {
                ("client-key", "client-cert")
            } else {
                ("client-cert", "client-key")
            };
            return Err(usage(
                missing,
                format!("--{given} needs --{missing}: both --client-cert and --client-key must be specified"),
            ));
        }
        if self.cert.is_empty() != self.key.is_empty() {
            let (given, missing) = if self.cert.is_empty() {
                ("key", "cert")
            } else {
                ("cert", "key")
            };
            return Err(usage(
                missing,
                format!("--{given} needs --{missing}: both --cert and --key must be specified"),
            ));
        }
        Ok(())
    }
}

/// The `--version` line: `<program> version <version>`.
pub fn version(program: &str) -> String {
    format!("{program} version {VERSION}\n")
}

/// The `--help` text.
pub fn help(program: &str) -> String {
    let mut rows: Vec<(String, &str, Option<&str>)> = Vec::new();
    for s in FLAGS.iter().filter(|s| !s.hidden) {
        let takes = if s.kind == Kind::Bool { "" } else { " value" };
        let names: Vec<String> = s
            .names
            .iter()
            .map(|n| {
                let dash = if n.len() == 1 { "-" } else { "--" };
                format!("{dash}{n}{takes}")
            })
            .collect();
        rows.push((names.join(", "), s.usage, s.default));
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0) + 2;
    let mut out = String::new();
    out.push_str("NAME:\n");
    out.push_str(&format!(
        "  {program} - client-side load balancer for MinIO and S3, run as a localhost sidecar\n\n"
    ));
    out.push_str("USAGE:\n");
    out.push_str(&format!("  {program} [FLAGS] SITE1 [SITE2..]\n\n"));
    out.push_str("FLAGS:\n");
    for (names, text, default) in rows {
        out.push_str(&format!("  {names:<width$}{text}"));
        if let Some(d) = default {
            out.push_str(&format!(" (default: {d})"));
        }
        out.push('\n');
    }
    out.push_str(
        "\nSITE:\n  A SITE is one argument: comma-separated pools of backends, each pool a URL \
         with optional\n  {N...M} ranges, e.g. http://10.0.0.{1...4}:9000,http://10.0.1.{1...4}:9000.\n  \
         Sites are tried in order: all traffic goes to the first site with a backend up, the next\n  \
         site takes over only while every backend of the earlier ones is down.\n",
    );
    out.push_str(&format!(
        "\nEXAMPLES:\n  \
         1. Balance over four MinIO servers, listening on port 8000:\n     \
         $ {program} --health-path /minio/health/ready --address :8000 http://minio{{1...4}}:9000\n\n  \
         2. Two sites; the second is used only while the first is down:\n     \
         $ {program} --health-path /minio/health/cluster http://site1-minio{{1...4}}:9000 http://site2-minio{{1...4}}:9000\n\n  \
         3. A read-only failover site probed on its read-quorum path:\n     \
         $ {program} --health-path /minio/health/cluster --read-health-path /minio/health/cluster/read \\\n         \
         http://site1-minio{{1...4}}:9000 http://site2-minio{{1...4}}:9000\n\n  \
         4. Terminate TLS on the sidecar with a certificate reloaded when it changes:\n     \
         $ {program} --cert public.crt --key private.key --health-path /minio/health/ready http://minio{{1...4}}:9000\n\n  \
         5. Backends over HTTPS with a private CA and a client certificate:\n     \
         $ {program} --cacert ca.crt --client-cert client.crt --client-key client.key https://minio{{1...4}}:9000\n\n  \
         6. Try it without any backend: built-in demo backends, a demo load and the live table:\n     \
         $ {program} --demo\n"
    ));
    out
}

/// Describe a duration flag's value back in Go syntax (for messages).
pub fn describe(d: Duration) -> String {
    go_duration(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_integers() {
        assert_eq!(parse_int("42"), Some(42));
        assert_eq!(parse_int("0x10"), Some(16));
        assert_eq!(parse_int("010"), Some(8));
        assert_eq!(parse_int("0b11"), Some(3));
        assert_eq!(parse_int("1_000"), Some(1000));
        assert_eq!(parse_int("-5"), Some(-5));
        assert_eq!(parse_int("0"), Some(0));
        for bad in ["", "x", "1.5", "_1", "1__0", "99999999999999999999"] {
            assert_eq!(parse_int(bad), None, "{bad}");
        }
    }

    #[test]
    fn help_lists_visible_flags_only() {
        let h = help("sidekick");
        assert!(h.contains("--address value, -a value"));
        assert!(h.contains("--insecure, -i"));
        assert!(!h.contains("--tls-max"));
        assert!(h.starts_with("NAME:\n"));
        for section in ["USAGE:", "FLAGS:", "SITE:", "EXAMPLES:"] {
            assert!(h.contains(section), "{section}");
        }
        assert_eq!(
            version("./sidekick"),
            format!("./sidekick version {VERSION}\n")
        );
    }
}
