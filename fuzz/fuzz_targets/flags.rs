//! The sidecar's command line: `parse_args` never panics; an accepted configuration keeps the
//! promises of its flags (positive durations, at least one connection, HTTP statuses, an
//! absolute health path, TLS 1.2 or 1.3, the SITEs as given); and the equivalent spellings of
//! one command line (`--flag=value`, `--flag value`, `-flag value`, a `--` before the SITEs)
//! give the same result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidekick::fuzzing::{parse_args, Command, UsageError};

const VALUE_FLAGS: &[&str] = &[
    "address",
    "a",
    "health-path",
    "p",
    "read-health-path",
    "r",
    "health-port",
    "health-duration",
    "d",
    "health-timeout",
    "trace",
    "t",
    "status-code",
    "cacert",
    "client-cert",
    "client-key",
    "cert",
    "key",
    "key-password",
    "tls-max",
    "host-balance",
    "dns-ttl",
    "auto-tls-host",
    "pprof",
    "max-conns",
    "header-timeout",
    "drain-timeout",
    "no-such-flag",
];
const BOOL_FLAGS: &[&str] = &[
    "insecure",
    "i",
    "log",
    "l",
    "quiet",
    "q",
    "json",
    "debug",
    "errors",
    "e",
    "rr-dns-mode",
    "health-optimistic",
    "demo",
    "help",
    "h",
    "version",
    "v",
];

fn check(args: &[String], result: &Result<Command, UsageError>) {
    let Ok(Command::Run(cfg)) = result else {
        return;
    };
    for d in [
        cfg.health_duration,
        cfg.health_timeout,
        cfg.dns_ttl,
        cfg.header_timeout,
        cfg.drain_timeout,
    ] {
        assert!(!d.is_zero(), "zero duration accepted from {args:?}");
    }
    assert!(cfg.max_conns >= 1, "{args:?}");
    assert!(
        cfg.status_codes.iter().all(|c| (100..=599).contains(c)),
        "{args:?}"
    );
    assert!(cfg.health_path.starts_with('/'), "{args:?}");
    assert!(cfg.tls_max == "1.2" || cfg.tls_max == "1.3", "{args:?}");
    assert!(
        args.ends_with(&cfg.sites),
        "SITEs {:?} not the tail of {args:?}",
        cfg.sites
    );
    assert!(!cfg.demo || cfg.sites.is_empty(), "{args:?}");
    let _ = cfg.validate();
}

/// Bytes to text: a length byte, then up to that many bytes (lossy UTF-8).
fn chunk(data: &mut &[u8]) -> String {
    let Some((&n, rest)) = data.split_first() else {
        return String::new();
    };
    let n = usize::from(n).min(rest.len());
    let text = String::from_utf8_lossy(&rest[..n]).into_owned();
    *data = &rest[n..];
    text
}

fn same(a: &Result<Command, UsageError>, b: &Result<Command, UsageError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.flag == b.flag,
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut data)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // Raw: NUL-separated arguments.
        let args: Vec<String> = data
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let result = parse_args(args.clone());
        check(&args, &result);
        return;
    }
    // Structured: flags with values, spelled three ways, then SITEs.
    let mut forms: [Vec<String>; 3] = Default::default();
    while let Some((&b, rest)) = data.split_first() {
        data = rest;
        if b == 0xff {
            break;
        }
        if b & 0x80 == 0 {
            let name = VALUE_FLAGS[usize::from(b) % VALUE_FLAGS.len()];
            let value = chunk(&mut data);
            forms[0].push(format!("--{name}={value}"));
            forms[1].extend([format!("--{name}"), value.clone()]);
            forms[2].extend([format!("-{name}"), value]);
        } else {
            let name = BOOL_FLAGS[usize::from(b & 0x3f) % BOOL_FLAGS.len()];
            if b & 0x40 == 0 {
                forms[0].push(format!("--{name}"));
                forms[1].push(format!("--{name}=true"));
                forms[2].push(format!("-{name}=1"));
            } else {
                forms[0].push(format!("--{name}=false"));
                forms[1].push(format!("--{name}=F"));
                forms[2].push(format!("-{name}=0"));
            }
        }
    }
    let mut sites = Vec::new();
    while !data.is_empty() {
        sites.push(chunk(&mut data));
    }
    for form in &mut forms {
        form.extend(sites.iter().cloned());
    }
    let results: Vec<_> = forms.iter().map(|f| parse_args(f.clone())).collect();
    for (form, result) in forms.iter().zip(&results) {
        check(form, result);
        assert!(
            same(result, &results[0]),
            "{form:?}: {result:?}\nvs {:?}: {:?}",
            forms[0],
            results[0]
        );
    }
    // A flag-like argument among the SITEs is an error without `--` (flags come before the
    // SITEs) and a SITE after it: the two forms agree only when no SITE looks like a flag.
    let flag_like = sites.iter().any(|s| s.len() >= 2 && s.starts_with('-'));
    if !flag_like {
        let mut with_dashes = forms[1].clone();
        with_dashes.insert(with_dashes.len() - sites.len(), "--".to_string());
        let result = parse_args(with_dashes.clone());
        assert!(
            same(&result, &results[0]),
            "{with_dashes:?}: {result:?} vs {:?}",
            results[0]
        );
    }
});
