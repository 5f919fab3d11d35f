//! One version for every artifact: `scripts/bump-version --check` passes on the repository as it
//! is, and `scripts/bump-version X.Y.Z` on a copy of the versioned files changes exactly the
//! version lines of every artifact, to the same version, opens its CHANGELOG section, and
//! refuses bad input without touching anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The files that carry the version, relative to the repository root.
const VERSIONED: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "README.md",
    "CHANGELOG.md",
    "ffi/Cargo.toml",
    "python/Cargo.toml",
    "python/pyproject.toml",
    "ffi/java/pom.xml",
];

/// How many lines of each file carry the version (the Cargo.lock has the three workspace
/// packages; the ffi crate its own version and that of its dependency on the root crate).
const VERSION_LINES: &[(&str, usize)] = &[
    ("Cargo.toml", 1),
    ("Cargo.lock", 3),
    ("README.md", 1),
    ("ffi/Cargo.toml", 2),
    ("python/Cargo.toml", 1),
    ("ffi/java/pom.xml", 1),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch copy of the versioned files (and the Go sources), removed when dropped.
struct Copy(PathBuf);

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Copy {
    fn new(tag: &str) -> Copy {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "sidekick-versions-{tag}-{}-{nanos}",
            std::process::id()
        ));
        let mut files: Vec<String> = VERSIONED.iter().map(|s| s.to_string()).collect();
        for entry in std::fs::read_dir(repo().join("ffi/go")).expect("ffi/go") {
            let name = entry.expect("ffi/go entry").file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".go") {
                files.push(format!("ffi/go/{name}"));
            }
        }
        for f in &files {
            let to = dir.join(f);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(repo().join(f), &to).unwrap_or_else(|e| panic!("copy {f}: {e}"));
        }
        Copy(dir)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.0.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// Every file of the copy, relative path → text.
    fn snapshot(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut stack = vec![self.0.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read_dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(&self.0).expect("prefix");
                    let text = std::fs::read_to_string(&path).expect("read");
                    out.push((rel.to_string_lossy().into_owned(), text));
                }
            }
        }
        out.sort();
        out
    }
}

fn bump(root: &Path, args: &[&str]) -> Output {
    Command::new("python3")
        .arg(repo().join("scripts/bump-version"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run python3 scripts/bump-version")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_artifact_has_the_crate_version_today() {
    let out = bump(&repo(), &["--check"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "versions disagree:\n{stdout}{}",
        text(&out.stderr)
    );
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        stdout.contains(&format!("every artifact is at {version}")),
        "{stdout}"
    );
    for (file, lines) in VERSION_LINES {
        let listed = stdout
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(file))
            .count();
        assert_eq!(listed, *lines, "{file} in the check's list:\n{stdout}");
    }
}

#[test]
fn bump_changes_exactly_the_version_lines_of_every_file() {
    let copy = Copy::new("bump");
    let old = env!("CARGO_PKG_VERSION");
    let new = "7.8.9";
    let before = copy.snapshot();
    let out = bump(&copy.0, &[new]);
    assert!(out.status.success(), "bump failed: {}", text(&out.stderr));
    let after = copy.snapshot();
    assert_eq!(
        before.iter().map(|(f, _)| f).collect::<Vec<_>>(),
        after.iter().map(|(f, _)| f).collect::<Vec<_>>(),
        "the bump added or removed files"
    );
    for ((file, was), (_, is)) in before.iter().zip(&after) {
        if file == "CHANGELOG.md" {
            continue;
        }
        let was: Vec<&str> = was.lines().collect();
        let is: Vec<&str> = is.lines().collect();
        assert_eq!(was.len(), is.len(), "{file}: lines added or removed");
        let mut changed = 0;
        for (a, b) in was.iter().zip(&is) {
            if a != b {
                assert_eq!(
                    a.replace(old, new),
                    *b,
                    "{file}: a change other than the version"
                );
                changed += 1;
            }
        }
        let expected = VERSION_LINES
            .iter()
            .find(|(f, _)| f == file)
            .map(|(_, n)| *n)
            // A Go source changes only if it defines a Version constant (one line).
            .unwrap_or_else(|| usize::from(was.iter().any(|l| l.contains("Version = \""))));
        assert_eq!(changed, expected, "{file}: version lines changed");
    }
    let changelog = copy.read("CHANGELOG.md");
    let unreleased = changelog.find("## [Unreleased]").expect("Unreleased");
    let opened = changelog
        .find(&format!("## [{new}] - "))
        .expect("new section");
    let previous = changelog.find(&format!("## [{old}]")).expect("old section");
    assert!(
        unreleased < opened && opened < previous,
        "sections out of order"
    );
    assert!(changelog.contains(&format!("/compare/v{old}...v{new}")));
    let check = bump(&copy.0, &["--check"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(text(&check.stdout).contains(&format!("every artifact is at {new}")));
}

#[test]
fn bad_input_changes_nothing_and_names_the_problem() {
    let copy = Copy::new("bad");
    let before = copy.snapshot();
    for (args, needle) in [
        (&["1.2"][..], "'1.2' is not a version"),
        (&["v1.2.3"][..], "'v1.2.3' is not a version"),
        (&[env!("CARGO_PKG_VERSION")][..], "already at"),
    ] {
        let out = bump(&copy.0, args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(text(&out.stderr).contains(needle), "{}", text(&out.stderr));
        assert_eq!(copy.snapshot(), before, "{args:?} changed files");
    }
    // A file whose version line is gone stops the bump before anything is written.
    let pom = copy.0.join("ffi/java/pom.xml");
    let broken = copy.read("ffi/java/pom.xml").replacen(
        "<artifactId>sidekick-jna</artifactId>",
        "<artifactId>x</artifactId>",
        1,
    );
    std::fs::write(&pom, broken).expect("write pom");
    let before = copy.snapshot();
    let out = bump(&copy.0, &["7.8.9"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ffi/java/pom.xml: no version found"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(copy.snapshot(), before, "a failed bump wrote files");
    // Disagreeing versions fail the check, naming both.
    let readme = copy.read("README.md").replacen(
        &format!("sidekick-lb = \"{}\"", env!("CARGO_PKG_VERSION")),
        "sidekick-lb = \"9.9.9\"",
        1,
    );
    std::fs::write(copy.0.join("README.md"), readme).expect("write readme");
    std::fs::copy(repo().join("ffi/java/pom.xml"), &pom).expect("restore pom");
    let out = bump(&copy.0, &["--check"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("versions disagree") && err.contains("9.9.9"),
        "{err}"
    );
}
