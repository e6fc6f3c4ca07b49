//! End-to-end harness: starts `detcd` members as separate processes on loopback ports,
//! runs the real `etcdctl`, and stops every process it started (also on panic, by Drop).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of the `detcd` binary built by this workspace (`cargo test`/`nextest` build it).
pub fn detcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("DETCD_BIN") {
        return PathBuf::from(path);
    }
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("..").join("target"));
    let path = target_dir.join("debug").join("detcd");
    assert!(path.exists(), "{} not found: build it with `cargo build -p detcd-node --bin detcd`", path.display());
    path
}

/// First port handed out; below the kernel's ephemeral range (32768 and up), so an
/// outgoing connection cannot take a port between our choosing it and detcd binding it.
pub const TEST_PORT_BASE: u16 = 12000;
/// Ports per test process: each process gets its own block, chosen by its pid.
pub const TEST_PORTS_PER_PROCESS: u16 = 40;
const TEST_PORT_BLOCKS: u16 = 400;

/// A loopback port nobody listens on right now, from this process's own block.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let block = (std::process::id() % u32::from(TEST_PORT_BLOCKS)) as u16;
    for _ in 0..TEST_PORTS_PER_PROCESS {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % TEST_PORTS_PER_PROCESS;
        let port = TEST_PORT_BASE + block * TEST_PORTS_PER_PROCESS + offset;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in this process's block");
}

/// One member's addresses and process.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    process: Option<Child>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }
}

/// A cluster of `detcd` processes, killed when dropped.
pub struct Cluster {
    pub members: Vec<Member>,
    initial_cluster: String,
    root: PathBuf,
    extra_args: Vec<String>,
    /// `http` or `https`, for the client and the peer URLs.
    client_scheme: &'static str,
    peer_scheme: &'static str,
}

impl Cluster {
    /// Starts `size` members with fresh data dirs under a temporary directory.
    pub fn start(size: usize, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster::prepare(size, extra_args);
        for i in 0..size {
            cluster.start_member(i);
        }
        cluster
    }

    /// Names, ports and data dirs for `size` members, none started (a test may fill
    /// the data dirs first, e.g. with `detcd snapshot restore`).
    pub fn prepare(size: usize, extra_args: &[&str]) -> Cluster {
        Cluster::prepare_with_schemes(size, extra_args, "http", "http")
    }

    /// As [`Cluster::prepare`], with `https` client and/or peer URLs (the TLS flags go in
    /// `extra_args`).
    pub fn prepare_with_schemes(size: usize, extra_args: &[&str], client_scheme: &'static str, peer_scheme: &'static str) -> Cluster {
        let root = std::env::temp_dir().join(format!("detcd-e2e-{}-{}", std::process::id(), free_port()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("temp dir");
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: root.join(format!("m{i}.etcd")),
                process: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={peer_scheme}://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        Cluster { members, initial_cluster, root, extra_args: extra_args.iter().map(|s| s.to_string()).collect(), client_scheme, peer_scheme }
    }

    /// The `--initial-cluster` every member is started with.
    pub fn initial_cluster(&self) -> &str {
        &self.initial_cluster
    }

    /// A scratch directory removed with the cluster.
    pub fn scratch_dir(&self) -> &std::path::Path {
        &self.root
    }

    /// (Re)starts member `i` from its data dir.
    pub fn start_member(&mut self, i: usize) {
        self.start_member_with(i, &[]);
    }

    /// (Re)starts member `i` from its data dir with `more_args` after the cluster's.
    pub fn start_member_with(&mut self, i: usize, more_args: &[&str]) {
        let initial_cluster = self.initial_cluster.clone();
        self.spawn_member(i, &initial_cluster, more_args);
    }

    /// A new member's name, ports and data dir (not started): index of the slot.
    pub fn add_member_slot(&mut self) -> usize {
        let i = self.members.len();
        self.members.push(Member {
            name: format!("m{i}"),
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: self.root.join(format!("m{i}.etcd")),
            process: None,
        });
        i
    }

    /// Starts member `i` to join the running cluster (`--initial-cluster-state
    /// existing`) with the `--initial-cluster` `etcdctl member add` printed for it.
    pub fn start_joining_member(&mut self, i: usize, initial_cluster: &str) {
        self.spawn_member(i, initial_cluster, &["--initial-cluster-state", "existing"]);
    }

    /// Waits (at most `timeout`) for member `i` to exit on its own; its exit status.
    pub fn wait_member_exit(&mut self, i: usize, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.members[i].process.as_mut().map(|c| c.try_wait()) {
                self.members[i].process = None;
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    fn spawn_member(&mut self, i: usize, initial_cluster: &str, more_args: &[&str]) {
        let binary = detcd_binary();
        let member = &self.members[i];
        assert!(member.process.is_none(), "member {i} already runs");
        let log = std::fs::File::create(self.root.join(format!("{}.log", member.name))).expect("log file");
        let child = Command::new(binary)
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .arg("--listen-client-urls")
            .arg(format!("{}://127.0.0.1:{}", self.client_scheme, member.client_port))
            .arg("--advertise-client-urls")
            .arg(format!("{}://127.0.0.1:{}", self.client_scheme, member.client_port))
            .arg("--listen-peer-urls")
            .arg(format!("{}://127.0.0.1:{}", self.peer_scheme, member.peer_port))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("{}://127.0.0.1:{}", self.peer_scheme, member.peer_port))
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-token")
            .arg(CLUSTER_TOKEN)
            .args(&self.extra_args)
            .args(more_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn detcd");
        self.members[i].process = Some(child);
    }

    /// Sends SIGTERM to member `i` and waits for it to exit (at most `timeout`; then it is
    /// SIGKILLed and `None` returned).
    pub fn terminate_member(&mut self, i: usize, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.members[i].process.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGKILLs member `i` (no chance to flush anything).
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().filter(|m| m.is_running()).map(Member::endpoint).collect()
    }

    /// Every member's state and log, for failure messages.
    pub fn diagnostics(&mut self) -> String {
        let mut out = String::new();
        for i in 0..self.members.len() {
            let state = match self.members[i].process.as_mut().map(|c| c.try_wait()) {
                None => "not running (stopped by the test)".to_string(),
                Some(Ok(None)) => "running".to_string(),
                Some(Ok(Some(status))) => format!("EXITED with {status}"),
                Some(Err(e)) => format!("unknown: {e}"),
            };
            out.push_str(&format!("--- {} ({}): {}\n{}\n", self.members[i].name, self.members[i].endpoint(), state, self.log(i)));
        }
        out
    }

    /// The log a member wrote so far (for failure messages).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.root.join(format!("{}.log", self.members[i].name))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The `--initial-cluster-token` every test cluster uses.
pub const CLUSTER_TOKEN: &str = "e2e";

/// Runs `detcd <args>` (the snapshot commands) and collects its output.
pub fn detcd(args: &[&str]) -> Etcdctl {
    let child = Command::new(detcd_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn detcd");
    finish(child)
}

/// Output of one `etcdctl` run.
#[derive(Debug)]
pub struct Etcdctl {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// Runs `etcdctl --endpoints=<endpoints> <args>` with `stdin`.
pub fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Etcdctl {
    run_etcdctl(Command::new("etcdctl"), endpoints, args, stdin)
}

/// Runs `timeout <seconds> etcdctl ...`, for commands that never end on their own
/// (watch); `code` is 124 when the timeout stopped it.
pub fn etcdctl_for(seconds: u32, endpoints: &str, args: &[&str]) -> Etcdctl {
    let mut command = Command::new("timeout");
    command.arg(seconds.to_string()).arg("etcdctl");
    run_etcdctl(command, endpoints, args, None)
}

/// Starts `timeout <seconds> etcdctl ...` in the background; `finish` collects it.
pub fn etcdctl_in_background(seconds: u32, endpoints: &str, args: &[&str]) -> std::process::Child {
    Command::new("timeout")
        .arg(seconds.to_string())
        .arg("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl must be installed (Debian package etcd-client)")
}

/// Waits for a background etcdctl and collects its output.
pub fn finish(child: std::process::Child) -> Etcdctl {
    let Output { status, stdout, stderr } = child.wait_with_output().expect("etcdctl ran");
    Etcdctl {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        code: status.code().unwrap_or(-1),
    }
}

fn run_etcdctl(mut command: Command, endpoints: &str, args: &[&str], stdin: Option<&str>) -> Etcdctl {
    use std::io::Write;
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("etcdctl must be installed (Debian package etcd-client)");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    }
    finish(child)
}

/// Retries `attempt` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = attempt() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A small multi-threaded runtime for tests that drive clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// An `etcd-client` connection to one endpoint with short timeouts.
pub async fn connect(endpoint: &str) -> etcd_client::Client {
    let options = etcd_client::ConnectOptions::new()
        .with_timeout(Duration::from_secs(3))
        .with_connect_timeout(Duration::from_secs(2));
    etcd_client::Client::connect([endpoint], Some(options)).await.expect("connect")
}

/// Waits until member `i` accepts a write (a leader exists and it is reachable).
pub fn wait_writable(rt: &tokio::runtime::Runtime, cluster: &mut Cluster, i: usize) {
    let endpoint = cluster.members[i].endpoint();
    let ready = wait_for(Duration::from_secs(20), || {
        rt.block_on(async { connect(&endpoint).await.put("__ready", "1", None).await.ok().map(|_| ()) })
    });
    if ready.is_none() {
        panic!("{endpoint} never accepted a write\n{}", cluster.diagnostics());
    }
}

/// The index of the member that says it is the leader.
pub async fn leader_index(cluster: &Cluster) -> usize {
    for (i, member) in cluster.members.iter().enumerate() {
        if !member.is_running() {
            continue;
        }
        let Ok(mut client) = etcd_client::Client::connect([member.endpoint()], None).await else { continue };
        let Ok(status) = client.status().await else { continue };
        if status.leader() != 0 && status.header().map(|h| h.member_id()) == Some(status.leader()) {
            return i;
        }
    }
    panic!("no leader");
}

/// A real etcd on loopback, killed when dropped.
pub struct Etcd {
    child: Child,
    pub endpoint: String,
    _dir: std::path::PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Debian's `etcd` 3.4 as one member with its data under `dir`; waits until it
/// accepts a write (at revision 3 then: one put and one delete of `__ready`).
pub fn start_etcd(dir: &std::path::Path) -> Etcd {
    let (client, peer) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("etcd.log")).expect("log");
    let child = Command::new("etcd")
        .args(["--name", "e0", "--data-dir"])
        .arg(dir.join("e0.etcd"))
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}"), "--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}"), "--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-cluster", &format!("e0=http://127.0.0.1:{peer}")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd (Debian's etcd-server) is installed by tests/run-all.sh");
    let endpoint = format!("127.0.0.1:{client}");
    let etcd = Etcd { child, endpoint: endpoint.clone(), _dir: dir.to_path_buf() };
    let up = wait_for(Duration::from_secs(20), || (etcdctl(&endpoint, &["put", "__ready", "1"], None).code == 0).then_some(()));
    assert!(up.is_some(), "etcd did not start: {}", std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default());
    assert_eq!(etcdctl(&endpoint, &["del", "__ready"], None).code, 0);
    etcd
}


/// etcdctl steps that set auth up: `root` (password `rootpw`) with the root role, `alice`
/// (password `alicepw`) whose role `apps` may read and write under `app/`, then auth on.
pub const AUTH_SETUP_ALICE_WRITES_APP: &[&[&str]] = &[
    &["user", "add", "root:rootpw"],
    &["user", "grant-role", "root", "root"],
    &["user", "add", "alice:alicepw"],
    &["role", "add", "apps"],
    &["role", "grant-permission", "apps", "--prefix=true", "readwrite", "app/"],
    &["user", "grant-role", "alice", "apps"],
    &["auth", "enable"],
];
