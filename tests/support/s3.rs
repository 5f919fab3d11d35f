//! An S3 cluster on loopback for the integration tests, of one of two kinds chosen by
//! `SIDEKICK_S3_TARGET` ([`S3Target::from_env`]):
//!
//! * `s3s-fs` (the default): several `s3s-fs` processes serving one shared data directory, so
//!   that every node sees every bucket and object (s3s-fs keeps objects, metadata and multipart
//!   uploads on disk, written through a temporary file and a rename).
//! * `minio`: a real distributed MinIO cluster, one `minio server` process per node, each with
//!   its own drive directories (see [`S3Target::Minio`]).
//!
//! What the tests must do differently per kind (the health probe) is exposed by the fixture:
//! [`S3Cluster::health_path`] and [`S3Cluster::healthy_statuses`] (also on [`S3Target`]).
//!
//! s3s-fs 0.14.1 checks SigV4 signatures (a wrong secret gets `SignatureDoesNotMatch`), serves
//! path-style requests for any `Host`, and has no health endpoint: an unsigned `GET /` answers
//! 403 `AccessDenied`, which is what tests probe (healthy statuses 200 and 403).
//!
//! One limitation of sharing a directory: every s3s-fs process names its temporary files
//! `.tmp.<n>.internal.part` in the data directory, `n` counting from 0 in each process, so two
//! nodes writing at the same moment can clobber each other's temporary file. One of the writes
//! then fails (500 `InternalError`, which clients retry) and, rarely, an object or its metadata
//! written at that moment ends up with the other write's bytes. Tests must therefore not read
//! back objects that were written concurrently through several nodes (sequential writes, and
//! concurrent writes to keys that are not read during the run, are fine).
//!
//! The s3s-fs binary is looked up in `$SIDEKICK_S3S_FS`, then on `PATH`, then in `~/.cargo/bin`.
//! When it is missing the fixture panics with the install command:
//! `cargo install s3s-fs --version 0.14.1 --locked --features binary`. The MinIO binary is
//! `$SIDEKICK_MINIO`, else `minio` on `PATH` (the panic says how to get it).
//!
//! Every process is started on `127.0.0.1` and stopped by its PID (SIGKILL, then `wait`) by
//! [`S3Node::kill`] or when the [`S3Cluster`] is dropped; the temporary directory (data, drives,
//! logs) is removed then too. Logs go to `<tmp>/logs/node-<i>.log` ([`S3Cluster::log`]).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Access key every node accepts (MinIO's root user: at least 3 characters).
pub const ACCESS_KEY: &str = "SIDEKICKTESTKEY";
/// Secret key every node accepts (MinIO's root password: at least 8 characters).
pub const SECRET_KEY: &str = "sidekick-test-secret-key";
/// How the s3s-fs binary is installed (the version that builds with the project's toolchain).
pub const INSTALL: &str = "cargo install s3s-fs --version 0.14.1 --locked --features binary";
/// How a MinIO binary is obtained (any recent release works).
pub const MINIO_INSTALL: &str = "go install github.com/minio/minio@latest   # then \
     SIDEKICK_MINIO=$(go env GOPATH)/bin/minio\n    (or a release binary: \
     https://dl.min.io/server/minio/release/linux-amd64/minio)";

/// How long an s3s-fs node may take to accept connections.
const START_WAIT: Duration = Duration::from_secs(20);
/// How many times a node (s3s-fs) or the whole cluster (MinIO) is started on fresh ports when a
/// port was taken meanwhile.
const START_TRIES: usize = 5;
/// How long a MinIO cluster may take to form (every node reports write quorum); it usually
/// takes 3 to 10 s.
const MINIO_START_WAIT: Duration = Duration::from_secs(60);
/// The bucket the fixture writes to while it checks that a MinIO cluster has formed (removed
/// before [`S3Cluster::start`] returns).
const READY_BUCKET: &str = "sidekick-fixture-ready";
/// How long one readiness request to a MinIO node may take.
const MINIO_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// What the fixture asks each MinIO node before it counts as up: 200 once its object layer,
/// bucket metadata and IAM are initialised and the cluster has write quorum.
const MINIO_CLUSTER_HEALTH: &str = "/minio/health/cluster";

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// Which S3 server an [`S3Cluster`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Target {
    /// `s3s-fs` processes sharing one data directory (see the module documentation).
    S3sFs,
    /// A distributed MinIO cluster: node `i` runs `minio server --address 127.0.0.1:P<i>` with
    /// the same list of drives `http://127.0.0.1:P<j>/<tmp>/data/n<j>/d<k>` (every node's own
    /// drives, 2 per node, 4 for a single node), root credentials [`ACCESS_KEY`]/[`SECRET_KEY`],
    /// the console off and `--quiet`. With 3 nodes the 6 drives form one erasure set with 3
    /// parity drives: killing one node (2 drives) keeps read quorum (3) and write quorum (4).
    /// Health: `/minio/health/ready`, healthy status 200 only.
    Minio,
}

impl S3Target {
    /// `SIDEKICK_S3_TARGET`: unset, empty or `s3s-fs` for [`S3Target::S3sFs`], `minio` for
    /// [`S3Target::Minio`]; anything else panics.
    pub fn from_env() -> S3Target {
        let value = std::env::var("SIDEKICK_S3_TARGET").unwrap_or_default();
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "s3s-fs" | "s3s_fs" | "s3s" => S3Target::S3sFs,
            "minio" => S3Target::Minio,
            other => panic!("SIDEKICK_S3_TARGET={other:?}: expected `s3s-fs` (default) or `minio`"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            S3Target::S3sFs => "s3s-fs",
            S3Target::Minio => "minio",
        }
    }

    /// The path health probes should ask.
    pub fn health_path(self) -> &'static str {
        match self {
            // No health endpoint: an unsigned `GET /` answers 403 while it serves.
            S3Target::S3sFs => "/",
            S3Target::Minio => "/minio/health/ready",
        }
    }

    /// The statuses that mean "healthy" for [`S3Target::health_path`].
    pub fn healthy_statuses(self) -> &'static [u16] {
        match self {
            S3Target::S3sFs => &[200, 403],
            S3Target::Minio => &[200],
        }
    }

    /// How long a request may block on the surviving nodes after a node was SIGKILLed.
    ///
    /// s3s-fs: no time (nodes share nothing but the directory). MinIO: a node takes a
    /// distributed lock on the other nodes for each write (and for a heal), and refreshes it
    /// while it holds it; the locks of a killed node stay until the other nodes expire them (not
    /// refreshed for 1 minute, checked every minute), so a PUT the SDK retries on the key the
    /// killed node was writing waits up to 2 minutes for its lock, then succeeds.
    pub fn max_stall_after_kill(self) -> Duration {
        match self {
            S3Target::S3sFs => Duration::ZERO,
            S3Target::Minio => Duration::from_secs(120),
        }
    }

    /// The server binary, or a panic that says how to get it.
    pub fn binary(self) -> PathBuf {
        match self {
            S3Target::S3sFs => s3s_fs_binary(),
            S3Target::Minio => minio_binary(),
        }
    }
}

fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default()
}

/// Where the s3s-fs binary is, or a panic that says how to install it.
pub fn s3s_fs_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SIDEKICK_S3S_FS") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "SIDEKICK_S3S_FS={} is not a file", p.display());
        return p;
    }
    let mut dirs = path_dirs();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo").join("bin"));
    }
    for dir in dirs {
        let candidate = dir.join("s3s-fs");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "s3s-fs not found (looked at $SIDEKICK_S3S_FS, PATH and ~/.cargo/bin); the S3 tests need \
         it. Install it with:\n    {INSTALL}"
    );
}

/// Where the MinIO binary is (`$SIDEKICK_MINIO`, else `minio` on `PATH`), or a panic that says
/// how to get it.
pub fn minio_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SIDEKICK_MINIO") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "SIDEKICK_MINIO={} is not a file", p.display());
        return p;
    }
    for dir in path_dirs() {
        let candidate = dir.join("minio");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "SIDEKICK_S3_TARGET=minio but no MinIO binary (looked at $SIDEKICK_MINIO and `minio` on \
         PATH). Get one with:\n    {MINIO_INSTALL}"
    );
}

/// One server process.
pub struct S3Node {
    addr: SocketAddr,
    child: Option<Child>,
}

impl S3Node {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL the process and wait for it to be gone (its sockets are closed by the kernel:
    /// open connections are reset, new ones refused). Does nothing if it was stopped already.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit status if the process ended by itself (it is then reaped and forgotten).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }
}

impl Drop for S3Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Several S3 nodes: s3s-fs over one data directory, or a distributed MinIO cluster.
pub struct S3Cluster {
    target: S3Target,
    root: PathBuf,
    pub nodes: Vec<S3Node>,
}

fn free_port() -> SocketAddr {
    free_ports(1)[0]
}

/// `n` distinct free loopback ports (all bound at once, then released).
fn free_ports(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"))
        })
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .unwrap_or_else(|e| panic!("no local address: {e}"))
        })
        .collect()
}

fn create_dir(path: &Path) {
    std::fs::create_dir_all(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
}

/// A log file for stdout and stderr of a child.
fn log_files(path: &Path) -> (std::fs::File, std::fs::File) {
    let log = std::fs::File::create(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let err_log = log
        .try_clone()
        .unwrap_or_else(|e| panic!("cannot share {}: {e}", path.display()));
    (log, err_log)
}

impl S3Cluster {
    /// Start `n` nodes of the kind `SIDEKICK_S3_TARGET` selects ([`S3Target::from_env`]); see
    /// [`S3Cluster::start_target`].
    pub async fn start(n: usize) -> S3Cluster {
        S3Cluster::start_target(S3Target::from_env(), n).await
    }

    /// Start `n` nodes of `target` on loopback over a fresh temporary directory; returns once
    /// every node serves (s3s-fs: accepts connections, at most 20 s each; MinIO: every node
    /// reports a cluster with write quorum and writes to every drive, at most 60 s in all), or
    /// panics saying why not.
    pub async fn start_target(target: S3Target, n: usize) -> S3Cluster {
        assert!(n >= 1, "a cluster needs at least one node");
        let bin = target.binary();
        let root = std::env::temp_dir().join(format!(
            "sidekick-{}-{}-{}",
            target.name(),
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        for sub in ["data", "logs"] {
            create_dir(&root.join(sub));
        }
        let mut cluster = S3Cluster {
            target,
            root,
            nodes: Vec::with_capacity(n),
        };
        match target {
            S3Target::S3sFs => {
                for i in 0..n {
                    let node = cluster.start_s3s_fs_node(&bin, i).await;
                    cluster.nodes.push(node);
                }
            }
            S3Target::Minio => cluster.start_minio(&bin, n).await,
        }
        cluster
    }

    async fn start_s3s_fs_node(&self, bin: &Path, index: usize) -> S3Node {
        let mut last = String::new();
        for _ in 0..START_TRIES {
            let addr = free_port();
            let log_path = self.log_path(index);
            let (log, err_log) = log_files(&log_path);
            let child = Command::new(bin)
                .arg("--host")
                .arg("127.0.0.1")
                .arg("--port")
                .arg(addr.port().to_string())
                .arg("--access-key")
                .arg(ACCESS_KEY)
                .arg("--secret-key")
                .arg(SECRET_KEY)
                .arg(self.root.join("data"))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err_log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let mut node = S3Node {
                addr,
                child: Some(child),
            };
            match wait_accepting(&mut node).await {
                Ok(()) => return node,
                Err(e) => {
                    node.kill();
                    last = format!("{e}; log: {}", tail(&log_path));
                }
            }
        }
        panic!("s3s-fs node {index} did not start after {START_TRIES} tries: {last}");
    }

    /// Start the `n` MinIO processes of one distributed cluster and wait until every node
    /// reports write quorum and writes to every drive. A node that exits at start (most likely its port was taken between
    /// [`free_ports`] and its bind) makes the whole cluster start again on fresh ports and
    /// fresh drives; a cluster that does not form in time is a panic.
    async fn start_minio(&mut self, bin: &Path, n: usize) {
        let drives_per_node = if n == 1 { 4 } else { 2 };
        let mut last = String::new();
        for attempt in 0..START_TRIES {
            let data = self.root.join("data");
            let _ = std::fs::remove_dir_all(&data);
            let addrs = free_ports(n);
            let mut drives = Vec::with_capacity(n * drives_per_node);
            for (i, addr) in addrs.iter().enumerate() {
                for d in 1..=drives_per_node {
                    let dir = data.join(format!("n{i}")).join(format!("d{d}"));
                    create_dir(&dir);
                    drives.push(format!("http://{addr}{}", dir.display()));
                }
            }
            for (i, addr) in addrs.iter().enumerate() {
                let conf = self.root.join("minio").join(format!("n{i}"));
                let log_path = self.log_path(i);
                let (log, err_log) = log_files(&log_path);
                let mut cmd = Command::new(bin);
                // Nothing inherited may reconfigure the server (MINIO_VOLUMES, a KMS, ...).
                for (key, _) in std::env::vars_os() {
                    let k = key.to_string_lossy();
                    if k.starts_with("MINIO_") || k.starts_with("_MINIO_") {
                        cmd.env_remove(&key);
                    }
                }
                cmd.arg("server")
                    .arg("--quiet")
                    .arg("--address")
                    .arg(addr.to_string())
                    .arg("--config-dir")
                    .arg(conf.join("config"))
                    .arg("--certs-dir")
                    .arg(conf.join("certs"))
                    .args(&drives)
                    .env("MINIO_ROOT_USER", ACCESS_KEY)
                    .env("MINIO_ROOT_PASSWORD", SECRET_KEY)
                    .env("MINIO_BROWSER", "off")
                    .env("MINIO_UPDATE", "off")
                    // The drives sit on the root file system, which MinIO refuses otherwise.
                    .env("MINIO_CI_CD", "1")
                    // In a container (/.dockerenv) MinIO waits forever for a loopback endpoint
                    // to "resolve to a valid IP"; this names the node's own endpoints instead
                    // (only read in containers).
                    .env("_MINIO_SERVER_LOCAL", addr.to_string())
                    .stdin(Stdio::null())
                    .stdout(log)
                    .stderr(err_log);
                let child = cmd
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
                self.nodes.push(S3Node {
                    addr: *addr,
                    child: Some(child),
                });
            }
            match self.wait_minio_ready().await {
                Ok(()) => return,
                Err(MinioStart::Exited(e)) => {
                    last = e;
                    for node in &mut self.nodes {
                        node.kill();
                    }
                    self.nodes.clear();
                    eprintln!("minio cluster attempt {attempt} failed, retrying: {last}");
                }
                Err(MinioStart::TimedOut(e)) => panic!("{e}"),
            }
        }
        panic!("the MinIO cluster did not start after {START_TRIES} tries: {last}");
    }

    /// Poll every node's [`MINIO_CLUSTER_HEALTH`] until all answer 200.
    async fn wait_minio_ready(&mut self) -> Result<(), MinioStart> {
        let deadline = tokio::time::Instant::now() + MINIO_START_WAIT;
        let mut ready = vec![false; self.nodes.len()];
        let mut last = vec![String::from("not asked yet"); self.nodes.len()];
        loop {
            for i in 0..self.nodes.len() {
                if let Some(status) = self.nodes[i].exited() {
                    return Err(MinioStart::Exited(format!(
                        "minio node {i} ({}) exited at start with {status}; log: {}",
                        self.nodes[i].addr,
                        self.log(i)
                    )));
                }
                if ready[i] {
                    continue;
                }
                match http_status(self.nodes[i].addr, MINIO_CLUSTER_HEALTH).await {
                    Ok(200) => ready[i] = true,
                    Ok(status) => last[i] = format!("status {status}"),
                    Err(e) => last[i] = e,
                }
            }
            if ready.iter().all(|r| *r) {
                return self.wait_minio_full_view(deadline).await;
            }
            if tokio::time::Instant::now() >= deadline {
                let report: Vec<String> = (0..self.nodes.len())
                    .filter(|i| !ready[*i])
                    .map(|i| {
                        format!(
                            "node {i} ({}): {}; log: {}",
                            self.nodes[i].addr,
                            last[i],
                            self.log(i)
                        )
                    })
                    .collect();
                return Err(MinioStart::TimedOut(format!(
                    "the MinIO cluster did not report write quorum on every node within \
                     {MINIO_START_WAIT:?} ({MINIO_CLUSTER_HEALTH}):\n{}",
                    report.join("\n")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until every node writes to every drive, then remove what that took.
    ///
    /// A node that could not reach a drive of another node while it initialised leaves that
    /// drive out of its erasure set until its next reconnection pass, 15 s later, and
    /// `/minio/health/cluster` does not show it (it counts drives as the peers report them).
    /// Meanwhile that node writes objects to the drives it has (4 of 6 still make write
    /// quorum) and another node may then not find them: a GET right after a PUT answered
    /// `NoSuchKey`. So each node PUTs a small object (root credentials, SigV4) and the drive
    /// directories are checked for its `xl.meta` on every drive; a fresh key is tried every
    /// 250 ms until each node passes.
    async fn wait_minio_full_view(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<(), MinioStart> {
        let drives = self.minio_drives();
        let n = self.nodes.len();
        let mut full = vec![false; n];
        let mut last = vec![String::from("not tried yet"); n];
        let mut written: Vec<(usize, String)> = Vec::new();
        let mut bucket_made = false;
        for attempt in 0usize.. {
            if !bucket_made {
                match minio_request(self.nodes[0].addr, "PUT", &format!("/{READY_BUCKET}")).await {
                    // 409: made by an earlier try whose answer was lost.
                    Ok(200 | 409) => bucket_made = true,
                    Ok(status) => last[0] = format!("create bucket: status {status}"),
                    Err(e) => last[0] = format!("create bucket: {e}"),
                }
            }
            if bucket_made {
                for i in 0..n {
                    if full[i] {
                        continue;
                    }
                    if let Some(status) = self.nodes[i].exited() {
                        return Err(MinioStart::Exited(format!(
                            "minio node {i} exited at start with {status}; log: {}",
                            self.log(i)
                        )));
                    }
                    let key = format!("node-{i}-try-{attempt}");
                    let path = format!("/{READY_BUCKET}/{key}");
                    match minio_request(self.nodes[i].addr, "PUT", &path).await {
                        Ok(200) => {
                            written.push((i, path.clone()));
                            let missing: Vec<String> = drives
                                .iter()
                                .filter(|d| {
                                    !d.join(READY_BUCKET).join(&key).join("xl.meta").is_file()
                                })
                                .map(|d| d.display().to_string())
                                .collect();
                            if missing.is_empty() {
                                full[i] = true;
                            } else {
                                last[i] = format!("PUT {path} left out {missing:?}");
                            }
                        }
                        Ok(status) => last[i] = format!("PUT {path}: status {status}"),
                        Err(e) => last[i] = format!("PUT {path}: {e}"),
                    }
                }
            }
            if full.iter().all(|f| *f) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let report: Vec<String> = (0..n)
                    .filter(|i| !full[*i])
                    .map(|i| format!("node {i} ({}): {}", self.nodes[i].addr, last[i]))
                    .collect();
                return Err(MinioStart::TimedOut(format!(
                    "MinIO reported write quorum, but not every node writes to every drive \
                     within {MINIO_START_WAIT:?}:\n{}",
                    report.join("\n")
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Leave the cluster as empty as it was.
        for (i, path) in &written {
            match minio_request(self.nodes[*i].addr, "DELETE", path).await {
                Ok(204) => {}
                other => eprintln!("s3 fixture: DELETE {path}: {other:?}"),
            }
        }
        match minio_request(self.nodes[0].addr, "DELETE", &format!("/{READY_BUCKET}")).await {
            Ok(204) => {}
            other => eprintln!("s3 fixture: DELETE /{READY_BUCKET}: {other:?}"),
        }
        Ok(())
    }

    /// Every MinIO drive directory (`<tmp>/data/n<i>/d<k>`).
    fn minio_drives(&self) -> Vec<PathBuf> {
        let data = self.data_dir();
        let mut drives: Vec<PathBuf> = std::fs::read_dir(&data)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", data.display()))
            .filter_map(|node| node.ok())
            .flat_map(|node| std::fs::read_dir(node.path()).into_iter().flatten())
            .filter_map(|drive| drive.ok().map(|d| d.path()))
            .collect();
        drives.sort();
        drives
    }

    /// What kind of server the nodes run.
    pub fn target(&self) -> S3Target {
        self.target
    }

    /// The path health probes should ask (see [`S3Target::health_path`]).
    pub fn health_path(&self) -> &'static str {
        self.target.health_path()
    }

    /// The statuses that mean "healthy" (see [`S3Target::healthy_statuses`]).
    pub fn healthy_statuses(&self) -> &'static [u16] {
        self.target.healthy_statuses()
    }

    /// How long a request may block after a node was killed (see
    /// [`S3Target::max_stall_after_kill`]).
    pub fn max_stall_after_kill(&self) -> Duration {
        self.target.max_stall_after_kill()
    }

    /// How many nodes the cluster has (running or killed).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The nodes as one sidekick SITE argument: `http://127.0.0.1:P1,http://127.0.0.1:P2,...`.
    pub fn site(&self) -> String {
        self.nodes
            .iter()
            .map(S3Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(S3Node::url).collect()
    }

    /// Kill node `i` (see [`S3Node::kill`]).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// s3s-fs: the shared data directory. MinIO: the directory that holds every node's drives
    /// (`n<i>/d<k>`).
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The last lines of node `i`'s log.
    pub fn log(&self, i: usize) -> String {
        tail(&self.log_path(i))
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.root.join("logs").join(format!("node-{i}.log"))
    }
}

impl Drop for S3Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Why a MinIO cluster did not start.
enum MinioStart {
    /// A process ended: worth another try on fresh ports.
    Exited(String),
    /// The processes run but the cluster did not form in time.
    TimedOut(String),
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Wait until the node accepts TCP connections, or its process exits, or 20 s pass.
async fn wait_accepting(node: &mut S3Node) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + START_WAIT;
    loop {
        if let Some(child) = node.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("s3s-fs exited at start with {status}"));
            }
        }
        if tokio::net::TcpStream::connect(node.addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "not accepting on {} after {START_WAIT:?}",
                node.addr
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The status of an unsigned `GET path` to `addr` (HTTP/1.1, `Connection: close`), within
/// [`MINIO_PROBE_TIMEOUT`].
async fn http_status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http_exchange(addr, request.as_bytes()).await
}

/// Send `request` (a whole HTTP/1.1 request) to `addr` and return the status of the answer,
/// within [`MINIO_PROBE_TIMEOUT`].
async fn http_exchange(addr: SocketAddr, request: &[u8]) -> Result<u16, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        // Only the status line is needed: "HTTP/1.1 200 OK\r\n".
        let mut head = Vec::with_capacity(64);
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        line.split(' ')
            .nth(1)
            .and_then(|s| s.trim().parse::<u16>().ok())
            .ok_or_else(|| format!("not an HTTP answer: {:?}", line.lines().next()))
    };
    tokio::time::timeout(MINIO_PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {MINIO_PROBE_TIMEOUT:?}"))?
}

/// A request signed with the root credentials (SigV4, header auth, unsigned payload) for
/// `path` on `addr`, with a small body for a PUT of an object: its status, within
/// [`MINIO_PROBE_TIMEOUT`].
async fn minio_request(addr: SocketAddr, method: &str, path: &str) -> Result<u16, String> {
    use aws_sdk_s3::config::Credentials;
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
        SigningSettings, UriPathNormalizationMode,
    };
    use aws_sigv4::sign::v4;

    let is_object = method == "PUT" && path.matches('/').count() > 1;
    let body: &[u8] = if is_object { b"ready" } else { b"" };
    let url = format!("http://{addr}{path}");
    let identity = Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "fixture").into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(std::time::SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| format!("signing params: {e}"))?
        .into();
    let signable = SignableRequest::new(
        method,
        &url,
        std::iter::empty(),
        SignableBody::UnsignedPayload,
    )
    .map_err(|e| format!("signable request: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("sign: {e}"))?
        .into_parts();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in instructions.headers() {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    http_exchange(addr, &request).await
}
