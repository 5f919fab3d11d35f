//! The sidecar's command line: every flag, its aliases and value syntaxes, Go's parsing rules,
//! and usage errors that name the flag at fault.
#![cfg(feature = "sidecar")]

use std::time::Duration;

use sidekick::sidecar::{help, host_balance_policy, version};
use sidekick::sidecar::{parse_args, Command, Config};
use sidekick::Policy;

const SITE: &str = "http://127.0.0.1:9000";

fn run(args: &[&str]) -> Config {
    match parse_args(args.iter().copied()) {
        Ok(Command::Run(c)) => *c,
        other => panic!("{args:?}: expected a configuration, got {other:?}"),
    }
}

fn usage_error(args: &[&str]) -> (Option<String>, String) {
    match parse_args(args.iter().copied()) {
        Err(e) => (e.flag, e.message),
        Ok(other) => panic!("{args:?}: expected a usage error, got {other:?}"),
    }
}

type Check = fn(&Config) -> bool;

#[test]
fn every_flag_every_spelling() {
    // (arguments before the SITE, what must hold)
    let table: Vec<(Vec<&str>, Check)> = vec![
        (vec!["--address", ":9001"], |c| c.address == ":9001"),
        (vec!["-a", "127.0.0.1:1"], |c| c.address == "127.0.0.1:1"),
        (vec!["--address=:7"], |c| c.address == ":7"),
        (vec!["-a=:8"], |c| c.address == ":8"),
        (vec!["--health-path", "/minio/health/ready"], |c| {
            c.health_path == "/minio/health/ready"
        }),
        (vec!["-p", "minio/health/live"], |c| {
            c.health_path == "/minio/health/live"
        }),
        (vec!["--health-path="], |c| c.health_path == "/"),
        (vec!["--read-health-path", "/r"], |c| {
            c.read_health_path == "/r"
        }),
        (vec!["-r=/read"], |c| c.read_health_path == "/read"),
        (vec!["--health-port", "4242"], |c| c.health_port == 4242),
        (vec!["-health-port=0x10"], |c| c.health_port == 16),
        (vec!["--health-duration", "500ms"], |c| {
            c.health_duration == Duration::from_millis(500)
        }),
        (vec!["-d", "1m30s"], |c| {
            c.health_duration == Duration::from_secs(90)
        }),
        (vec!["--health-timeout=2s"], |c| {
            c.health_timeout == Duration::from_secs(2)
        }),
        (vec!["--insecure"], |c| c.insecure),
        (vec!["-i"], |c| c.insecure),
        (vec!["--insecure=false"], |c| !c.insecure),
        (vec!["--log"], |c| c.log),
        (vec!["-l=true"], |c| c.log),
        (vec!["--trace", "application"], |c| {
            c.trace == "application" && c.trace_set
        }),
        (vec!["-t", "minio"], |c| c.trace == "minio"),
        (vec!["--response-timeout", "1m30s"], |c| {
            c.response_timeout == Duration::from_secs(90)
        }),
        (vec!["--body-timeout=250ms"], |c| {
            c.body_timeout == Duration::from_millis(250)
        }),
        (vec!["--trace="], |c| c.trace.is_empty() && c.trace_set),
        (vec!["--quiet"], |c| c.quiet),
        (vec!["-q"], |c| c.quiet),
        (vec!["--json"], |c| c.json),
        (vec!["--debug"], |c| c.debug),
        (vec!["--errors"], |c| c.errors),
        (vec!["-e"], |c| c.errors),
        (vec!["--status-code", "500"], |c| c.status_codes == [500]),
        (
            vec![
                "--status-code",
                "500",
                "--status-code=503",
                "-status-code",
                "404",
            ],
            |c| c.status_codes == [500, 503, 404],
        ),
        (vec!["--cacert", "/ca.pem"], |c| c.cacert == "/ca.pem"),
        (
            vec!["--client-cert", "/c.pem", "--client-key", "/k.pem"],
            |c| c.client_cert == "/c.pem" && c.client_key == "/k.pem",
        ),
        (vec!["--cert=/s.pem", "--key=/s.key"], |c| {
            c.cert == "/s.pem" && c.key == "/s.key" && c.tls_listener()
        }),
        (vec!["--key-password", "secret"], |c| {
            c.key_password == "secret"
        }),
        (vec!["--tls-max", "1.2"], |c| c.tls_max == "1.2"),
        (vec!["--tls-max=1.3"], |c| c.tls_max == "1.3"),
        (vec!["--host-balance", "random"], |c| {
            c.host_balance == "random"
        }),
        (vec!["--host-balance=p2c"], |c| c.host_balance == "p2c"),
        (vec!["--dns-ttl", "30s"], |c| {
            c.dns_ttl == Duration::from_secs(30)
        }),
        (vec!["--rr-dns-mode"], |c| c.rr_dns_mode),
        (vec!["--slow-start", "30s"], |c| {
            c.slow_start == Some(Duration::from_secs(30))
        }),
        (vec!["--slow-start=1m30s"], |c| {
            c.slow_start == Some(Duration::from_secs(90))
        }),
        (vec!["--site-spillover"], |c| {
            c.site_spillover && c.overprovisioning == 1.4
        }),
        (vec!["--site-spillover", "--overprovisioning", "2"], |c| {
            c.site_spillover && c.overprovisioning == 2.0
        }),
        (vec!["--health-optimistic"], |c| c.health_optimistic),
        (vec!["--auto-tls-host", "localhost,127.0.0.1"], |c| {
            c.auto_tls_host == "localhost,127.0.0.1"
        }),
        (vec!["--pprof", ":6060"], |c| c.pprof == ":6060"),
        (vec!["--max-conns", "10"], |c| c.max_conns == 10),
        (vec!["--header-timeout", "3s"], |c| {
            c.header_timeout == Duration::from_secs(3)
        }),
        (vec!["--drain-timeout", "1s"], |c| {
            c.drain_timeout == Duration::from_secs(1)
        }),
        // A repeated flag keeps its last value.
        (vec!["-a", ":1", "-a", ":2"], |c| c.address == ":2"),
        // A non-boolean flag takes the next argument whatever it looks like.
        (vec!["--address", "--log"], |c| {
            c.address == "--log" && !c.log
        }),
    ];
    for (flags, check) in table {
        let mut args = flags.clone();
        args.push(SITE);
        let cfg = run(&args);
        assert!(check(&cfg), "{flags:?} gave {cfg:?}");
        assert_eq!(cfg.sites, [SITE], "{flags:?}");
    }
}

#[test]
fn defaults_are_sidekicks() {
    let c = run(&[SITE]);
    assert_eq!(c.address, ":8080");
    assert_eq!(c.health_path, "/");
    assert_eq!(c.read_health_path, "");
    assert_eq!(c.health_port, 0);
    assert_eq!(c.health_duration, Duration::from_secs(5));
    // Ours, off by default: sidekick has neither slow start nor graded spill-over.
    assert_eq!(c.slow_start, None);
    assert!(!c.site_spillover);
    assert_eq!(c.health_timeout, Duration::from_secs(10));
    assert_eq!(c.trace, "all");
    assert!(!c.trace_set);
    assert_eq!(c.tls_max, "1.3");
    assert_eq!(c.host_balance, "least");
    assert_eq!(c.dns_ttl, Duration::from_secs(600));
    assert!(!c.insecure && !c.log && !c.quiet && !c.json && !c.debug && !c.errors);
    assert!(c.status_codes.is_empty());
}

#[test]
fn parsing_stops_at_the_first_site() {
    let c = run(&["-q", "http://a:9000", "http://b:9000"]);
    assert!(c.quiet);
    assert_eq!(c.sites, ["http://a:9000", "http://b:9000"]);
    // Go's flag package would take a later `--log` for a SITE (and sidekick then fails on it):
    // here it is a usage error naming the flag and the SITE before it.
    let (flag, msg) = usage_error(&["-q", "http://a:9000", "--log", "http://b:9000"]);
    assert_eq!(flag.as_deref(), Some("--log"));
    assert!(
        msg.contains("\"--log\" comes after the SITE \"http://a:9000\""),
        "{msg}"
    );
    let (flag, msg) = usage_error(&[SITE, "-x=1"]);
    assert_eq!(flag, None, "not a known flag");
    assert!(msg.contains("\"-x=1\""), "{msg}");
    // A bool flag takes no separate value: `false` becomes the first SITE.
    let c = run(&["--log", "false", SITE]);
    assert!(c.log);
    assert_eq!(c.sites, ["false", SITE]);
    // `--` ends the flags.
    let c = run(&["--", "-x"]);
    assert_eq!(c.sites, ["-x"]);
    // A lone `-` is a SITE.
    assert_eq!(run(&["-", SITE]).sites, ["-", SITE]);
}

#[test]
fn help_version_and_no_site() {
    assert_eq!(parse_args(["--help"]), Ok(Command::Help));
    assert_eq!(parse_args(["-h", SITE]), Ok(Command::Help));
    assert_eq!(parse_args(["--version"]), Ok(Command::Version));
    assert_eq!(parse_args(["-v"]), Ok(Command::Version));
    assert_eq!(parse_args(Vec::<String>::new()), Ok(Command::NoSites));
    assert_eq!(parse_args(["-q"]), Ok(Command::NoSites));
    assert!(matches!(parse_args(["--demo"]), Ok(Command::Run(c)) if c.demo && c.sites.is_empty()));
    let h = help("./sidekick");
    for flag in [
        "--address",
        "--health-path",
        "--read-health-path",
        "--health-port",
        "--health-duration",
        "--health-timeout",
        "--insecure",
        "--log",
        "--trace",
        "--quiet",
        "--json",
        "--debug",
        "--errors",
        "--status-code",
        "--cacert",
        "--client-cert",
        "--client-key",
        "--cert",
        "--key",
        "--key-password",
        "--host-balance",
        "--dns-ttl",
        "--rr-dns-mode",
        "--health-optimistic",
        "--slow-start",
        "--site-spillover",
        "--overprovisioning",
        "--auto-tls-host",
        "--help",
        "--version",
    ] {
        assert!(
            h.contains(&format!("{flag} ")) || h.contains(&format!("{flag},")),
            "{flag} missing from help"
        );
    }
    assert!(!h.contains("--tls-max"), "--tls-max is hidden");
    assert!(h.contains("USAGE:\n  ./sidekick [FLAGS] SITE1 [SITE2..]"));
    assert!(version("./sidekick").starts_with("./sidekick version "));
}

#[test]
fn usage_errors_name_the_flag_and_value() {
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["--nope", SITE],
            "--nope",
            "flag provided but not defined: -nope",
        ),
        (
            vec!["--health-duration", "5", SITE],
            "--health-duration",
            "invalid value \"5\" for flag -health-duration",
        ),
        (vec!["-d", "5x", SITE], "--health-duration", "unknown unit"),
        (
            vec!["--health-duration=0s", SITE],
            "--health-duration",
            "greater than zero",
        ),
        (
            vec!["--health-timeout", "-1s", SITE],
            "--health-timeout",
            "greater than zero",
        ),
        (
            vec!["--dns-ttl", "ten", SITE],
            "--dns-ttl",
            "invalid value \"ten\"",
        ),
        (
            vec!["--slow-start", "0s", SITE],
            "--slow-start",
            "greater than zero",
        ),
        (
            vec!["--overprovisioning", "lots", SITE],
            "--overprovisioning",
            "invalid value \"lots\"",
        ),
        (
            vec!["--overprovisioning=0", SITE],
            "--overprovisioning",
            "above 0",
        ),
        (
            vec!["--health-port", "65536", SITE],
            "--health-port",
            "invalid health check port \"65536\": must be in [0, 65535]",
        ),
        (
            vec!["--health-port", "-1", SITE],
            "--health-port",
            "must be in [0, 65535]",
        ),
        (
            vec!["--health-port", "abc", SITE],
            "--health-port",
            "not an integer",
        ),
        (
            vec!["--status-code", "abc", SITE],
            "--status-code",
            "invalid value \"abc\" for flag -status-code",
        ),
        (
            vec!["--status-code", "999", SITE],
            "--status-code",
            "not an HTTP status",
        ),
        (
            vec!["--tls-max", "1.1", SITE],
            "--tls-max",
            "invalid TLS max version specified '1.1' - supported values [1.2, 1.3]",
        ),
        (
            vec!["--log=maybe", SITE],
            "--log",
            "invalid boolean value \"maybe\" for flag -log",
        ),
        (
            vec!["--address"],
            "--address",
            "flag needs an argument: -address",
        ),
        (vec!["--max-conns", "0", SITE], "--max-conns", "at least 1"),
        (vec!["--demo", SITE], "--demo", "no SITE may be given"),
    ];
    for (args, flag, message) in cases {
        let (got_flag, got) = usage_error(&args);
        assert_eq!(got_flag.as_deref(), Some(flag), "{args:?}: {got}");
        assert!(got.contains(message), "{args:?}: {got:?} lacks {message:?}");
    }
    let (flag, msg) = usage_error(&["---x", SITE]);
    assert_eq!(flag, None);
    assert!(msg.contains("bad flag syntax: ---x"));
}

#[test]
fn flag_pairs_are_checked() {
    let c = run(&["--client-cert", "/c.pem", SITE]);
    let e = c.validate().unwrap_err();
    assert_eq!(e.flag.as_deref(), Some("--client-key"));
    let c = run(&["--key", "/k.pem", SITE]);
    let e = c.validate().unwrap_err();
    assert_eq!(e.flag.as_deref(), Some("--cert"), "{e}");
    assert!(run(&["--cert", "/c", "--key", "/k", SITE])
        .validate()
        .is_ok());
}

#[test]
fn host_balance_values() {
    assert_eq!(host_balance_policy("least"), Policy::Least);
    assert_eq!(host_balance_policy(""), Policy::Least);
    assert_eq!(host_balance_policy("p2c"), Policy::PeakEwma);
    assert_eq!(host_balance_policy("round-robin"), Policy::RoundRobin);
    assert_eq!(host_balance_policy("random"), Policy::Random);
    assert_eq!(
        host_balance_policy("leest"),
        Policy::Random,
        "like sidekick, anything else is random"
    );
}

#[test]
fn read_health_path_only_with_several_sites() {
    let one = run(&["-r", "/read", "http://a:9000"]);
    assert_eq!(one.last_site_health_path(), None);
    let two = run(&["-r", "read", "http://a:9000", "http://b:9000"]);
    assert_eq!(two.last_site_health_path().as_deref(), Some("/read"));
}

#[test]
fn timeouts_default_to_a_minute() {
    let c = run(&[SITE]);
    assert_eq!(c.response_timeout, Duration::from_secs(60));
    assert_eq!(c.body_timeout, Duration::from_secs(60));
    for flag in ["--response-timeout", "--body-timeout"] {
        let (f, msg) = usage_error(&[flag, "0s", SITE]);
        assert_eq!(f.as_deref(), Some(flag));
        assert!(msg.contains("greater than zero"), "{msg}");
    }
}

#[test]
fn unusable_probe_paths_and_trace_modes_are_refused() {
    for bad in ["/a b", "/a\r\nb", "/a\nb", "/\u{7f}", "/a\tb", "/a#b c"] {
        let (flag, msg) = usage_error(&["--health-path", bad, SITE]);
        assert_eq!(flag.as_deref(), Some("--health-path"), "{bad:?}");
        assert!(msg.contains("invalid value"), "{bad:?}: {msg}");
        let (flag, _) = usage_error(&["-r", bad, SITE]);
        assert_eq!(flag.as_deref(), Some("--read-health-path"), "{bad:?}");
    }
    assert_eq!(
        run(&["--health-path", "/minio/health/ready?x=1", SITE]).health_path,
        "/minio/health/ready?x=1"
    );
    let (flag, msg) = usage_error(&["--trace", "bogus", SITE]);
    assert_eq!(flag.as_deref(), Some("--trace"));
    assert!(msg.contains("all, application, minio"), "{msg}");
}

#[test]
fn site_arguments_are_checked_by_validate() {
    let c = run(&["http://a:9000", "ftp://b"]);
    let e = c.validate().expect_err("a bad SITE");
    assert!(
        e.message.contains("invalid SITE \"ftp://b\""),
        "{}",
        e.message
    );
    assert!(run(&["http://a{1...3}:9000"]).validate().is_ok());
}
