//! `--sites-file`: the SITE list in a file, read at start and again on SIGHUP.
//!
//! A sidecar's arguments cannot change while it runs, but the cluster behind it can. In
//! Kubernetes the natural source is a ConfigMap mounted as a file (the kubelet swaps the file
//! atomically when the ConfigMap changes): the operator edits the ConfigMap, then sends SIGHUP
//! (`kill -HUP`, or `kubectl exec ... kill -HUP 1`). The sidecar then reads the file again and
//! applies the new list to the running balancer in place (see
//! [`Balancer::set_sites`](crate::Balancer::set_sites)): backends named before and after keep
//! their state (latency estimate, health, ejection, statistics), removed ones stop taking
//! requests at once, added ones are probed before they take any. A file that cannot be read or
//! a SITE that does not parse changes nothing: the running list stays and the reason is printed.
//!
//! Format: the SITEs in order, separated by whitespace or newlines (one per line reads best);
//! `#` starts a comment that runs to the end of the line (a SITE cannot contain `#`: fragments
//! are refused); blank lines are ignored.

use std::path::Path;

/// Largest file accepted: a SITE list is small, a huge file is a mistake.
const MAX_LEN: u64 = 1 << 20;

/// The SITEs `text` lists, in order.
pub fn parse(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_once('#').map_or(l, |(before, _)| before))
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect()
}

/// Read and parse the file at `path`. The error names the file and why (unreadable, too large,
/// not UTF-8, no SITE in it). The SITEs themselves are checked by whoever uses them.
pub fn read(path: &str) -> Result<Vec<String>, String> {
    let p = Path::new(path);
    let meta = std::fs::metadata(p).map_err(|e| format!("--sites-file {path}: {e}"))?;
    if meta.len() > MAX_LEN {
        return Err(format!(
            "--sites-file {path}: {} bytes, more than the {MAX_LEN} a SITE list may take",
            meta.len()
        ));
    }
    let bytes = std::fs::read(p).map_err(|e| format!("--sites-file {path}: {e}"))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("--sites-file {path}: not UTF-8 text ({e})"))?;
    let sites = parse(&text);
    if sites.is_empty() {
        return Err(format!(
            "--sites-file {path}: no SITE in it (one per line, # for comments)"
        ));
    }
    Ok(sites)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_comments_and_blank_lines() {
        let text = "# cluster A\nhttp://10.0.0.{1...4}:9000\n\n  http://10.0.1.1:9000,http://10.0.1.2:9000 # replica\nhttp://a:1 http://b:2\n#http://c:3\n";
        assert_eq!(
            parse(text),
            vec![
                "http://10.0.0.{1...4}:9000",
                "http://10.0.1.1:9000,http://10.0.1.2:9000",
                "http://a:1",
                "http://b:2"
            ]
        );
        assert!(parse("# nothing\n\n").is_empty());
    }

    #[test]
    fn unreadable_empty_and_binary_files_are_named() {
        let dir = std::env::temp_dir().join(format!("sidekick-sites-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing");
        let e = read(missing.to_str().unwrap()).unwrap_err();
        assert!(e.contains("missing") && e.contains("--sites-file"), "{e}");
        let empty = dir.join("empty");
        std::fs::write(&empty, "# only a comment\n").unwrap();
        let e = read(empty.to_str().unwrap()).unwrap_err();
        assert!(e.contains("no SITE"), "{e}");
        let binary = dir.join("binary");
        std::fs::write(&binary, [0xff, 0xfe, b'\n']).unwrap();
        let e = read(binary.to_str().unwrap()).unwrap_err();
        assert!(e.contains("UTF-8"), "{e}");
        let good = dir.join("good");
        std::fs::write(&good, "http://127.0.0.1:1\n").unwrap();
        assert_eq!(
            read(good.to_str().unwrap()).unwrap(),
            vec!["http://127.0.0.1:1"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
