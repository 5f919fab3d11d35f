//! `examples/kubernetes/sidecar.yaml` checked against the program, the way the kubelet runs it,
//! without a cluster.
//!
//! The test reads the manifest and the Dockerfile, and runs the `sidekick` binary (the one
//! `cargo install` installs) with the sidekick container's command line resolved as Kubernetes
//! does (the image's `ENTRYPOINT` unless `command` replaces it, then `args`) and with exactly the
//! container's `env` (nothing else: the environment is cleared). Only addresses change, and
//! nothing else in the command line does:
//!
//! - the listen address becomes `127.0.0.1:<free port>`, and the container port the probes name
//!   maps to that port;
//! - each SITE's host and port become loopback backends, as many as the SITE names (site `k`
//!   with `{a...b}` ranges over `n` hosts becomes `http://127.0.k.{1...n}:<port>`), so the
//!   ranges, the site order, the paths and every flag stay as written.
//!
//! Then it does what the kubelet does: the startup probe every `periodSeconds` until it passes
//! (at most `failureThreshold` failures): while no backend exists yet it must fail (502) and the
//! liveness probe must pass (a storage outage must not restart the Pod); then the backends
//! start and it must pass. Readiness (when there is one) and liveness must pass, requests go
//! through, the peak memory stays under the container's limit. Termination: with a request in
//! flight, SIGTERM by PID (the container has no `preStop`; one would be honoured first); new
//! connections must be refused, the request must complete, and the process must exit 0 within
//! what is left of `terminationGracePeriodSeconds` once the application's `preStop` has run
//! (native sidecars are stopped after the application containers).
#![cfg(feature = "sidecar")]

mod support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_norway::Value;
use support::sidecar::{self as sc, Proc, StreamBackend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MANIFEST: &str = include_str!("../examples/kubernetes/sidecar.yaml");
const DOCKERFILE: &str = include_str!("../examples/kubernetes/Dockerfile");
/// The program `cargo install --features sidecar` installs.
const BIN: &str = env!("CARGO_BIN_EXE_sidekick");
/// The container that runs the program.
const CONTAINER: &str = "sidekick";
/// Bounds on the attempts to find a port free on every address of a site.
const PORT_TRIES: usize = 50;

// ===== the manifest =====

/// What a probe checks.
#[derive(Clone, Debug)]
enum Action {
    Http { path: String, port: u16 },
    Tcp { port: u16 },
}

/// A container probe with the kubelet's defaults filled in.
#[derive(Clone, Debug)]
struct Probe {
    action: Action,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    failure_threshold: u64,
}

/// The parts of a container the kubelet uses here.
#[derive(Debug)]
struct Container {
    name: String,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    env: Vec<(String, String)>,
    startup: Option<Probe>,
    liveness: Option<Probe>,
    readiness: Option<Probe>,
    pre_stop_sleep: Option<Duration>,
    memory_limit: Option<u64>,
    /// `restartPolicy: Always` on an init container: a native sidecar.
    restart_always: bool,
}

/// The Pod template of the Deployment.
#[derive(Debug)]
struct Pod {
    grace: Duration,
    sidecar: Container,
    /// Whether the sidecar is an init container (then it is stopped after the others).
    sidecar_is_init: bool,
    /// The longest `preStop` sleep of the other containers.
    others_pre_stop: Duration,
}

fn field<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

fn strings(v: &Value, what: &str) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what}: not a list: {v:?}"))
        .iter()
        .map(|s| match s {
            Value::String(s) => s.clone(),
            other => panic!("{what}: not a string: {other:?}"),
        })
        .collect()
}

fn seconds(v: &Value, what: &str, default: u64) -> Duration {
    match v {
        Value::Null => Duration::from_secs(default),
        v => Duration::from_secs(
            v.as_u64()
                .unwrap_or_else(|| panic!("{what}: not a number of seconds: {v:?}")),
        ),
    }
}

/// A port as a probe names it: a number, or the name of one of the container's ports.
fn port(v: &Value, ports: &Value, what: &str) -> u16 {
    if let Some(n) = v.as_u64() {
        return u16::try_from(n).unwrap_or_else(|_| panic!("{what}: port {n} out of range"));
    }
    let name = v
        .as_str()
        .unwrap_or_else(|| panic!("{what}: port is neither a number nor a name: {v:?}"));
    ports
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or_else(|| panic!("{what}: no container port named {name:?}"))
}

fn probe(v: &Value, ports: &Value, what: &str) -> Option<Probe> {
    if v.is_null() {
        return None;
    }
    let action = if !v["httpGet"].is_null() {
        let h = &v["httpGet"];
        if let Some(scheme) = h["scheme"].as_str() {
            assert_eq!(
                scheme, "HTTP",
                "{what}: only plain HTTP probes are run here"
            );
        }
        Action::Http {
            path: h["path"].as_str().unwrap_or("/").to_string(),
            port: port(&h["port"], ports, what),
        }
    } else if !v["tcpSocket"].is_null() {
        Action::Tcp {
            port: port(&v["tcpSocket"]["port"], ports, what),
        }
    } else {
        panic!("{what}: only httpGet and tcpSocket probes are run here: {v:?}");
    };
    // The kubelet's defaults.
    Some(Probe {
        action,
        initial_delay: seconds(&v["initialDelaySeconds"], what, 0),
        period: seconds(&v["periodSeconds"], what, 10),
        timeout: seconds(&v["timeoutSeconds"], what, 1),
        failure_threshold: v["failureThreshold"].as_u64().unwrap_or(3),
    })
}

/// `64Mi`, `1Gi`, `500M`, `1048576`: bytes.
fn quantity(s: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    let (digits, unit) = units
        .iter()
        .find_map(|(u, m)| s.strip_suffix(u).map(|d| (d, *m)))
        .unwrap_or((s, 1));
    digits
        .parse::<u64>()
        .map(|n| n * unit)
        .unwrap_or_else(|_| panic!("memory quantity {s:?} not understood"))
}

fn pre_stop_sleep(c: &Value, what: &str) -> Option<Duration> {
    let p = &c["lifecycle"]["preStop"];
    if p.is_null() {
        return None;
    }
    assert!(
        !p["sleep"].is_null(),
        "{what}: only a preStop sleep is simulated here: {p:?}"
    );
    Some(seconds(&p["sleep"]["seconds"], what, 0))
}

fn container(c: &Value) -> Container {
    let name = c["name"].as_str().expect("a container without a name");
    let what = |s: &str| format!("container {name}: {s}");
    let opt_strings = |k: &str| (!c[k].is_null()).then(|| strings(&c[k], &what(k)));
    let env = c["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|e| {
            let n = e["name"].as_str().expect("env without a name").to_string();
            let v = e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: only literal values", what(&n)))
                .to_string();
            (n, v)
        })
        .collect();
    let ports = &c["ports"];
    Container {
        name: name.to_string(),
        command: opt_strings("command"),
        args: opt_strings("args"),
        env,
        startup: probe(&c["startupProbe"], ports, &what("startupProbe")),
        liveness: probe(&c["livenessProbe"], ports, &what("livenessProbe")),
        readiness: probe(&c["readinessProbe"], ports, &what("readinessProbe")),
        pre_stop_sleep: pre_stop_sleep(c, &what("preStop")),
        memory_limit: field(c, "resources.limits.memory").as_str().map(quantity),
        restart_always: c["restartPolicy"].as_str() == Some("Always"),
    }
}

fn pod() -> Pod {
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(MANIFEST)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("sidecar.yaml: {e}")))
        .collect();
    let deployment = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .expect("sidecar.yaml has no Deployment");
    let spec = field(deployment, "spec.template.spec");
    let list = |k: &str| spec[k].as_sequence().cloned().unwrap_or_default();
    let (init, main) = (list("initContainers"), list("containers"));
    let sidecar_is_init = init.iter().any(|c| c["name"].as_str() == Some(CONTAINER));
    let mut sidecar = None;
    let mut others_pre_stop = Duration::ZERO;
    for c in init.iter().chain(&main) {
        let c = container(c);
        if c.name == CONTAINER {
            sidecar = Some(c);
        } else if let Some(d) = c.pre_stop_sleep {
            others_pre_stop = others_pre_stop.max(d);
        }
    }
    Pod {
        grace: seconds(
            &spec["terminationGracePeriodSeconds"],
            "terminationGracePeriodSeconds",
            30,
        ),
        sidecar: sidecar.unwrap_or_else(|| panic!("no container named {CONTAINER:?}")),
        sidecar_is_init,
        others_pre_stop,
    }
}

/// The image's `ENTRYPOINT` and `CMD` (exec form), and where the Dockerfile puts the program.
fn image() -> (Vec<String>, Option<Vec<String>>, String) {
    let exec_form = |line: &str| -> Vec<String> {
        let inner = line
            .trim()
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or_else(|| panic!("Dockerfile: not the exec form: {line}"));
        inner
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .collect()
    };
    let mut entrypoint = None;
    let mut cmd = None;
    let mut program = None;
    for line in DOCKERFILE.lines() {
        if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            entrypoint = Some(exec_form(rest));
        } else if let Some(rest) = line.strip_prefix("CMD ") {
            cmd = Some(exec_form(rest));
        } else if let Some(rest) = line.strip_prefix("COPY --from=build ") {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            if parts
                .first()
                .is_some_and(|src| src.ends_with("/bin/sidekick"))
            {
                program = parts.last().map(|s| s.to_string());
            }
        }
    }
    (
        entrypoint.expect("Dockerfile: no ENTRYPOINT"),
        cmd,
        program.expect("Dockerfile: no COPY of the installed bin/sidekick"),
    )
}

// ===== the rewrite: addresses only =====

/// A SITE's backends: `count` addresses `127.0.<site>.1..=count`, all on `port`.
#[derive(Debug)]
struct Site {
    ips: Vec<Ipv4Addr>,
    port: u16,
}

/// How many hosts a SITE's host part names (`{a...b}` ranges multiply).
fn hosts_named(host: &str) -> usize {
    let mut n = 1usize;
    let mut rest = host;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .unwrap_or_else(|| panic!("SITE host {host:?}: an unclosed '{{'"));
        let (a, b) = rest[open + 1..close]
            .split_once("...")
            .unwrap_or_else(|| panic!("SITE host {host:?}: not a {{a...b}} range"));
        let (a, b): (usize, usize) = (
            a.parse().expect("a numeric range start"),
            b.parse().expect("a numeric range end"),
        );
        assert!(a <= b, "SITE host {host:?}: an empty range");
        n *= b - a + 1;
        rest = &rest[close + 1..];
    }
    assert!(n <= 250, "SITE host {host:?}: too many hosts for one /24");
    n
}

/// A port free on every one of `ips` (bound, then released).
fn port_free_on(ips: &[Ipv4Addr]) -> u16 {
    for _ in 0..PORT_TRIES {
        let Ok(first) = std::net::TcpListener::bind((ips[0], 0)) else {
            continue;
        };
        let Ok(port) = first.local_addr().map(|a| a.port()) else {
            continue;
        };
        let rest: Result<Vec<_>, _> = ips[1..]
            .iter()
            .map(|ip| std::net::TcpListener::bind((*ip, port)))
            .collect();
        if rest.is_ok() {
            return port;
        }
    }
    panic!("no port free on all of {ips:?} after {PORT_TRIES} tries");
}

/// The command line with the listen address and the SITEs on loopback; returns it with the
/// sites and the (container port, local port) of the listener.
fn rewrite(args: &[String]) -> (Vec<String>, Vec<Site>, (u16, u16)) {
    let mut out = Vec::with_capacity(args.len());
    let mut sites = Vec::new();
    let mut listener = None;
    let mut it = args.iter().peekable();
    let mut relisten = |value: &str| -> String {
        let port: u16 = value
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("--address {value:?}: no port"));
        let local = sc::free_port();
        listener = Some((port, local));
        format!("127.0.0.1:{local}")
    };
    while let Some(a) = it.next() {
        let flag = a.trim_start_matches('-');
        if a.starts_with('-') && matches!(flag.split('=').next(), Some("address" | "a")) {
            match flag.split_once('=') {
                Some((name, value)) => out.push(format!("--{name}={}", relisten(value))),
                None => {
                    out.push(a.clone());
                    let value = it.next().expect("--address without a value");
                    out.push(relisten(value));
                }
            }
            continue;
        }
        assert!(
            !(a.starts_with('-') && flag.starts_with("health-port")),
            "--health-port would need its own rewrite"
        );
        if let Some(rest) = a.strip_prefix("http://") {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
            let n = hosts_named(host);
            let k = u8::try_from(sites.len() + 1).expect("fewer than 255 sites");
            let ips: Vec<Ipv4Addr> = (1..=n as u8).map(|i| Ipv4Addr::new(127, 0, k, i)).collect();
            let port = port_free_on(&ips);
            let hosts = if n == 1 {
                format!("127.0.{k}.1")
            } else {
                format!("127.0.{k}.{{1...{n}}}")
            };
            out.push(format!("http://{hosts}:{port}{path}"));
            sites.push(Site { ips, port });
            continue;
        }
        assert!(
            !a.starts_with("https://"),
            "a TLS SITE: the test's backends speak plain HTTP"
        );
        out.push(a.clone());
    }
    (
        out,
        sites,
        listener.expect("the container's command line sets no --address"),
    )
}

/// `20s`, `1m30s`, `500ms` (the forms the manifest may use for `--drain-timeout`).
fn go_duration(s: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("duration {s:?}"));
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        total += match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(60 * n),
            "h" => Duration::from_secs(3600 * n),
            u => panic!("duration {s:?}: unit {u:?}"),
        };
        rest = &rest[unit..];
    }
    total
}

fn flag_value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, a)| {
        let flag = a.strip_prefix("--").or_else(|| a.strip_prefix('-'))?;
        match flag.split_once('=') {
            Some((n, v)) if n == name => Some(v),
            None if flag == name => args.get(i + 1).map(String::as_str),
            _ => None,
        }
    })
}

// ===== the kubelet =====

/// One probe's result: passed, and what was seen.
#[derive(Debug)]
struct Verdict {
    ok: bool,
    status: Option<u16>,
    detail: String,
}

/// Run a probe once against the container, whose ports map through `ports`.
async fn probe_once(p: &Probe, ports: (u16, u16)) -> Verdict {
    let local = |port: u16| {
        assert_eq!(
            port, ports.0,
            "a probe targets port {port}, but the program listens on {} (--address)",
            ports.0
        );
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, ports.1))
    };
    match &p.action {
        Action::Tcp { port } => {
            match tokio::time::timeout(p.timeout, TcpStream::connect(local(*port))).await {
                Ok(Ok(_)) => Verdict {
                    ok: true,
                    status: None,
                    detail: "connected".into(),
                },
                Ok(Err(e)) => Verdict {
                    ok: false,
                    status: None,
                    detail: format!("connect: {e}"),
                },
                Err(_) => Verdict {
                    ok: false,
                    status: None,
                    detail: "connect timed out".into(),
                },
            }
        }
        Action::Http { path, port } => {
            let addr = local(*port);
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.31\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            );
            let answer = tokio::time::timeout(p.timeout, async {
                let mut s = TcpStream::connect(addr).await?;
                s.write_all(req.as_bytes()).await?;
                let mut out = Vec::new();
                s.read_to_end(&mut out).await?;
                Ok::<_, std::io::Error>(String::from_utf8_lossy(&out).into_owned())
            })
            .await;
            match answer {
                Ok(Ok(text)) => {
                    let status = text
                        .strip_prefix("HTTP/1.1 ")
                        .and_then(|r| r.get(..3))
                        .and_then(|s| s.parse::<u16>().ok());
                    Verdict {
                        // The kubelet: 200 ≤ status < 400 passes.
                        ok: status.is_some_and(|s| (200..400).contains(&s)),
                        status,
                        detail: text.lines().next().unwrap_or("").to_string(),
                    }
                }
                Ok(Err(e)) => Verdict {
                    ok: false,
                    status: None,
                    detail: format!("{e}"),
                },
                Err(_) => Verdict {
                    ok: false,
                    status: None,
                    detail: format!("no answer within {:?}", p.timeout),
                },
            }
        }
    }
}

/// Probe until it passes, as the kubelet does; panics after `failureThreshold` failures.
async fn until_passes(name: &str, p: &Probe, ports: (u16, u16)) {
    tokio::time::sleep(p.initial_delay).await;
    let mut seen = Vec::new();
    for _ in 0..p.failure_threshold {
        let v = probe_once(p, ports).await;
        if v.ok {
            return;
        }
        seen.push(v.detail);
        tokio::time::sleep(p.period).await;
    }
    panic!(
        "the {name} probe failed {} times (the kubelet would restart the container): {seen:?}",
        p.failure_threshold
    );
}

async fn start_backends(sites: &[Site]) -> Vec<StreamBackend> {
    let mut all = Vec::new();
    for site in sites {
        for ip in &site.ips {
            let at = SocketAddr::V4(SocketAddrV4::new(*ip, site.port));
            all.push(
                StreamBackend::try_start_at(at)
                    .await
                    .unwrap_or_else(|e| panic!("backend {at}: {e} (the port was taken meanwhile)")),
            );
        }
    }
    all
}

#[test]
fn the_manifest_parses_into_what_the_test_runs() {
    let pod = pod();
    let c = &pod.sidecar;
    assert!(
        pod.sidecar_is_init && c.restart_always,
        "the sidecar is a native sidecar (an init container with restartPolicy: Always)"
    );
    assert!(c.startup.is_some(), "the sidecar has a startup probe");
    assert!(c.liveness.is_some(), "the sidecar has a liveness probe");
    let (entrypoint, _, program) = image();
    assert_eq!(
        entrypoint.first(),
        Some(&program),
        "the image's ENTRYPOINT runs the installed program"
    );
    assert!(
        DOCKERFILE.contains("cargo install") && DOCKERFILE.contains("--features sidecar"),
        "the image installs the program with the sidecar feature"
    );
    let args = c.args.clone().unwrap_or_default();
    let drain = go_duration(flag_value(&args, "drain-timeout").unwrap_or("20s"));
    // The kubelet's grace period covers the application's preStop, then (native sidecars stop
    // after the application) the sidecar's drain.
    assert!(
        pod.others_pre_stop + drain < pod.grace,
        "preStop {:?} + --drain-timeout {drain:?} must fit in terminationGracePeriodSeconds {:?}",
        pod.others_pre_stop,
        pod.grace
    );
    assert_eq!(quantity("64Mi"), 64 << 20);
    assert_eq!(hosts_named("minio-{0...3}.svc"), 4);
    assert_eq!(hosts_named("m{1...2}-p{1...3}"), 6);
    assert_eq!(go_duration("1m30s"), Duration::from_secs(90));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_program_behaves_as_the_manifest_expects() {
    let pod = pod();
    let c = &pod.sidecar;
    let (entrypoint, cmd, program) = image();
    // Kubernetes: `command` replaces ENTRYPOINT, `args` replace CMD.
    let mut argv = c.command.clone().unwrap_or(entrypoint);
    argv.extend(c.args.clone().or(cmd).unwrap_or_default());
    assert_eq!(argv[0], program, "the container runs the installed program");
    let (args, sites, ports) = rewrite(&argv[1..]);
    assert!(!sites.is_empty(), "the command line names no SITE");

    let child = Command::new(BIN)
        .args(&args)
        .env_clear()
        .envs(c.env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the sidekick binary");
    let mut proc = Proc(child);
    let pid = proc.0.id();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ports.1));

    // Start-up, no backend yet: the startup probe must fail (and be answered 502 once the
    // program listens) while liveness passes; then the backends come, and it must pass.
    let startup = c.startup.clone().expect("a startup probe");
    let liveness = c.liveness.clone().expect("a liveness probe");
    tokio::time::sleep(startup.initial_delay).await;
    let mut backends = None;
    let mut failures = Vec::new();
    loop {
        let v = probe_once(&startup, ports).await;
        if v.ok {
            break;
        }
        if let Ok(Some(status)) = proc.0.try_wait() {
            let (out, err) = proc.output();
            panic!("the program exited ({status}) during start-up:\n{out}\n{err}");
        }
        if backends.is_none() && v.status.is_some() {
            assert_eq!(
                v.status,
                Some(502),
                "with no backend, the startup probe's answer: {}",
                v.detail
            );
            let live = probe_once(&liveness, ports).await;
            assert!(
                live.ok,
                "liveness must pass while the storage is down (else the Pod restarts): {}",
                live.detail
            );
            backends = Some(start_backends(&sites).await);
        }
        failures.push(v.detail);
        assert!(
            (failures.len() as u64) < startup.failure_threshold,
            "the startup probe failed {} times: {failures:?}",
            failures.len()
        );
        tokio::time::sleep(startup.period).await;
    }
    let _backends = backends.expect("the startup probe passed before any backend existed");
    if let Some(r) = &c.readiness {
        until_passes("readiness", r, ports).await;
    }
    until_passes("liveness", &liveness, ports).await;

    // Requests go through to the backends.
    for _ in 0..20 {
        let text = sc::raw(
            addr,
            b"GET /bucket/object HTTP/1.1\r\nHost: s3\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        )
        .await;
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "through the sidecar: {text}"
        );
    }
    if let Some(limit) = c.memory_limit {
        let peak = sc::peak_rss_kib(pid).expect("the program's VmHWM") * 1024;
        assert!(
            peak < limit,
            "peak memory {peak} B is over the container's limit {limit} B"
        );
    }

    // Termination, with a request in flight.
    let slow = tokio::spawn(async move {
        sc::raw(
            addr,
            b"GET /slow/4000 HTTP/1.1\r\nHost: s3\r\n\r\n",
            Duration::from_secs(20),
        )
        .await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(d) = c.pre_stop_sleep {
        tokio::time::sleep(d).await;
    }
    sc::signal(pid, "TERM");
    let refused_by = Instant::now() + Duration::from_secs(5);
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < refused_by,
            "new connections still accepted 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !slow.is_finished(),
        "the request in flight ended before new connections were refused"
    );
    let text = slow.await.expect("the request in flight");
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("done"),
        "the request in flight completes during the drain: {text}"
    );
    // What is left of the grace period once the application's preStop has run.
    let budget = pod.grace.saturating_sub(pod.others_pre_stop);
    let (status, mut proc) = tokio::task::spawn_blocking(move || {
        let s = proc.wait(budget);
        (s, proc)
    })
    .await
    .expect("wait for the program");
    let (out, err) = proc.output();
    let status = status.unwrap_or_else(|| {
        panic!("still running {budget:?} after SIGTERM: the kubelet would SIGKILL it\n{out}\n{err}")
    });
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after the drain\n{out}\n{err}"
    );
    assert!(out.contains("listening on"), "{out}");
    assert!(out.contains("caught signal 'terminated'"), "{out}");
    assert!(!err.contains("<ERROR>"), "{err}");
}
