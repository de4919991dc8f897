//! Harness for netvlan's privileged integration tests.
//!
//! Every test builds its own little network out of namespaces (unique
//! `nvt…` names) joined by veth pairs created directly inside them, so the
//! host's own interfaces are never touched. Every object is owned by a guard
//! that removes it on drop, so a failing or panicking test cleans up too;
//! `cargo xtask test` checks afterwards that nothing with the prefix is left.
//!
//! Environment (set by `cargo xtask test`):
//! - `NETVLAN_BIN`: the `netvlan` binary under test.
//! - `NETVLAN_TEST_LANE`: `host` or `vm`; decides what a missing kernel
//!   feature means (see [`require_kernel_feature`]).
//! - `NETVLAN_TEST_NOTES`: a file collecting [`note`]s for the summary.

pub mod bench;
pub mod daemon;
pub mod frame;
pub mod lab;
pub mod packet;
pub mod snapshot;

pub use lab::{require_root, run_prefix, unique_name, veth_pair, Netns, OwnedDir, PREFIX};

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

/// Runs a command and panics with its output unless it succeeds.
pub fn sh(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A private bpffs directory for one test (`NETVLAN_BPF_DIR`), removed
/// with everything pinned in it on drop (which also detaches programs a
/// failed test left attached).
pub struct BpfDir {
    dir: OwnedDir,
}

impl BpfDir {
    pub fn new() -> Self {
        require_root();
        BpfDir {
            dir: OwnedDir::at(Path::new("/sys/fs/bpf").join(unique_name("bpf"))),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Files and directories pinned below this directory, relative paths.
    pub fn contents(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                out.push(
                    path.strip_prefix(base)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                );
                if path.is_dir() {
                    walk(&path, base, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.path(), self.path(), &mut out);
        out.sort();
        out
    }
}

impl Default for BpfDir {
    fn default() -> Self {
        Self::new()
    }
}

/// The usual lab: a "host" namespace (where netvlan runs) whose `eth0` is
/// wired to a "switch" namespace's `peer0`, with private pins and state.
pub struct Lan {
    pub host: Netns,
    pub switch: Netns,
    pub bpf: BpfDir,
    pub state: StateDir,
}

impl Lan {
    /// `ipv6`: keep IPv6 on in every namespace of the lab.
    pub fn new(ipv6: bool) -> Self {
        let make = |kind| {
            if ipv6 {
                Netns::with_ipv6(kind)
            } else {
                Netns::new(kind)
            }
        };
        let host = make("nhost");
        let switch = make("nsw");
        veth_pair(&host, "eth0", &switch, "peer0");
        Lan {
            host,
            switch,
            bpf: BpfDir::new(),
            state: StateDir::new(),
        }
    }

    /// `netvlan ARGS` in the host namespace.
    pub fn netvlan(&self, args: &[&str]) -> Run {
        netvlan_with_state(&self.host, &self.bpf, &self.state, args)
    }

    /// `netvlan ARGS` in the host namespace with more environment (e.g.
    /// `NETVLAN_RUN_DIR` of a test's daemon).
    pub fn netvlan_env(&self, env: &[(&str, &str)], args: &[&str]) -> Run {
        run_netvlan(&self.host, &self.bpf, Some(&self.state), env, args)
    }

    /// Starts `netvlan ARGS` stopped at `failpoint` (it sleeps there),
    /// waits until it has got there (the failpoint leaves a file in
    /// `NETVLAN_FAILPOINTS_REACHED`), checks that `there` holds (what the
    /// scenario expects the command to have made by then), then kills it
    /// with SIGKILL: a command dying half-way, at exactly that step however
    /// loaded the machine is.
    pub fn kill_midway(&self, failpoint: &str, args: &[&str], mut there: impl FnMut() -> bool) {
        let spec = format!("{failpoint}=sleep(60000)");
        let reached = StateDir::new();
        std::fs::create_dir_all(reached.path()).expect("the failpoint marker directory");
        let marker = reached.path().join(failpoint);
        let dir = reached.path().to_string_lossy().into_owned();
        let mut child = spawn_netvlan(
            &self.host,
            &self.bpf,
            &self.state,
            &[("FAILPOINTS", &spec), ("NETVLAN_FAILPOINTS_REACHED", &dir)],
            args,
        );
        // The cap only guards against a command that hangs before it: a
        // slow machine (TCG, load) only makes it get there later.
        let give_up = std::time::Instant::now() + Duration::from_secs(300);
        let got_there = loop {
            if marker.exists() {
                break true;
            }
            let ended = child.try_wait().expect("poll our own child").is_some();
            if ended || std::time::Instant::now() > give_up {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let holds = got_there && there();
        child.kill().expect("SIGKILL our own child");
        let status = child.wait().expect("reap it");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "netvlan ended on its own ({status}) instead of waiting at {failpoint}: \
             is {} built with --features failpoints? (`cargo xtask test` does that)",
            netvlan_bin().display()
        );
        assert!(got_there, "the command never reached {failpoint} in 300 s");
        assert!(
            holds,
            "at {failpoint}, the command had not made what the test expects"
        );
    }

    /// `network inspect NAME`, the one network's object.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        self.netvlan(&["network", "inspect", name]).ok().json()[0].clone()
    }

    /// The `Containers` entry of the endpoint of `sandbox` (as connected)
    /// in `network inspect NAME`; entries are keyed by endpoint id.
    pub fn inspect_container(&self, network: &str, sandbox: &str) -> serde_json::Value {
        container_entry(&self.inspect(network), sandbox)
    }

    /// Names of every link in the host namespace.
    pub fn host_links(&self) -> Vec<String> {
        self.host.link_names()
    }

    /// `network create --subnet SUBNET -o OPTION… NAME` in the host
    /// namespace (the run, to check either way).
    pub fn create_network(&self, name: &str, subnet: &str, options: &[&str]) -> Run {
        let mut args = vec!["network", "create", "--subnet", subnet];
        for o in options {
            args.extend(["-o", o]);
        }
        args.push(name);
        self.netvlan(&args)
    }

    /// A network `name` on eth0, subnet 10.`subnet`.0.0/24, whose gateway
    /// 10.`subnet`.0.1 the switch namespace answers.
    pub fn network_on_eth0(&self, name: &str, subnet: u8) {
        self.network_on_eth0_with(name, subnet, &[]);
    }

    /// [`Lan::network_on_eth0`] with more `-o` options (`hook=xdp`, ...).
    pub fn network_on_eth0_with(&self, name: &str, subnet: u8, options: &[&str]) {
        let gateway = format!("10.{subnet}.0.1");
        self.switch.exec(
            "ip",
            &["addr", "add", &format!("{gateway}/24"), "dev", "peer0"],
        );
        let subnet = format!("10.{subnet}.0.0/24");
        let mut args = vec![
            "network",
            "create",
            "--subnet",
            &subnet,
            "--gateway",
            &gateway,
            "-o",
            "parent=eth0",
        ];
        for option in options {
            args.extend(["-o", option]);
        }
        args.push(name);
        self.netvlan(&args).ok();
    }

    /// `netvlan ARGS` in the host namespace with the fault `failpoint`
    /// injected; it must fail and say that the fault stopped it.
    pub fn fails_at(&self, failpoint: &str, args: &[&str]) -> Run {
        let run = netvlan_failing_at(&self.host, &self.bpf, &self.state, failpoint, args).failed();
        assert!(
            run.stderr
                .contains(&format!("injected fault at {failpoint}")),
            "{failpoint}: {}",
            run.stderr
        );
        run
    }

    /// Stats of `eth0` once the program has seen at least `frames` frames
    /// in total.
    pub fn stats_after(&self, frames: u64) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        wait_for(Duration::from_secs(5), || {
            last = self
                .netvlan(&["stats", "--iface", "eth0", "--json"])
                .ok()
                .json()["interfaces"][0]
                .clone();
            (last["frames"]["rx_packets"].as_u64() >= Some(frames)).then(|| last.clone())
        })
        .unwrap_or_else(|| panic!("expected {frames} frames, stats are {last:#}"))
    }

    /// A fresh container namespace (not connected).
    pub fn container(&self, ipv6: bool) -> Netns {
        if ipv6 {
            Netns::with_ipv6("nctr")
        } else {
            Netns::new("nctr")
        }
    }
}

/// The `Containers` entry named `sandbox` in one network's inspect
/// object (Docker keys them by id; `Name` is the sandbox).
pub fn container_entry(inspect: &serde_json::Value, sandbox: &str) -> serde_json::Value {
    inspect["Containers"]
        .as_object()
        .unwrap_or_else(|| panic!("inspect has no Containers object: {inspect:#}"))
        .values()
        .find(|entry| entry["Name"] == sandbox)
        .unwrap_or_else(|| panic!("no endpoint of {sandbox} in inspect: {inspect:#}"))
        .clone()
}

/// The `netvlan` binary under test.
pub fn netvlan_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NETVLAN_BIN") {
        return bin.into();
    }
    let fallback = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/netvlan");
    assert!(
        fallback.is_file(),
        "NETVLAN_BIN is not set and {} does not exist: run the suite with `cargo xtask test`",
        fallback.display()
    );
    fallback
}

/// The result of one `netvlan` invocation.
#[derive(Debug)]
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the output unless the command succeeded.
    pub fn ok(self) -> Self {
        assert!(
            self.status.success(),
            "netvlan failed ({}):\n{}\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the command failed, and returns it.
    pub fn failed(self) -> Self {
        assert!(
            !self.status.success(),
            "netvlan should have failed but printed:\n{}",
            self.stdout
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("netvlan printed no JSON ({e}):\n{}", self.stdout))
    }
}

/// A private state directory (`NETVLAN_STATE_DIR`), removed on drop.
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn new() -> Self {
        StateDir {
            path: std::env::temp_dir().join(unique_name("state")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for StateDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs `netvlan ARGS` inside `ns` with its pins under `bpf`.
pub fn netvlan(ns: &Netns, bpf: &BpfDir, args: &[&str]) -> Run {
    run_netvlan(ns, bpf, None, &[], args)
}

/// Runs `netvlan ARGS` inside `ns` with pins under `bpf` and state under `state`.
pub fn netvlan_with_state(ns: &Netns, bpf: &BpfDir, state: &StateDir, args: &[&str]) -> Run {
    run_netvlan(ns, bpf, Some(state), &[], args)
}

/// As [`netvlan_with_state`], with the fault `failpoint` injected (the
/// test build of netvlan has the `failpoints` feature).
pub fn netvlan_failing_at(
    ns: &Netns,
    bpf: &BpfDir,
    state: &StateDir,
    failpoint: &str,
    args: &[&str],
) -> Run {
    let spec = format!("{failpoint}=return");
    run_netvlan(ns, bpf, Some(state), &[("FAILPOINTS", spec.as_str())], args)
}

/// Starts `netvlan ARGS` in `ns` without waiting (to kill it mid-command).
/// `nsenter` execs netvlan in place, so the child's PID is netvlan's.
pub fn spawn_netvlan(
    ns: &Netns,
    bpf: &BpfDir,
    state: &StateDir,
    env: &[(&str, &str)],
    args: &[&str],
) -> std::process::Child {
    let mut cmd = ns.command(netvlan_bin());
    cmd.args(args)
        .env("NETVLAN_BPF_DIR", bpf.path())
        .env("NETVLAN_STATE_DIR", state.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.spawn().expect("netvlan starts")
}

fn run_netvlan(
    ns: &Netns,
    bpf: &BpfDir,
    state: Option<&StateDir>,
    env: &[(&str, &str)],
    args: &[&str],
) -> Run {
    let mut cmd = ns.command(netvlan_bin());
    cmd.args(args).env("NETVLAN_BPF_DIR", bpf.path());
    for (key, value) in env {
        cmd.env(key, value);
    }
    if let Some(state) = state {
        cmd.env("NETVLAN_STATE_DIR", state.path());
    }
    let out = cmd.output().expect("netvlan runs");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Polls `f` until it returns `Some`, for at most `timeout`. Frames cross
/// a veth asynchronously (the receive backlog), so counters settle shortly
/// after the send returns; this waits for a condition, it times nothing.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The running kernel is `major.minor` or newer (from its release string).
/// For behaviour that changed between the two lanes' kernels (6.18, 6.1).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    let mut parts = release.trim().split(['.', '-']);
    let mut next = || -> u32 {
        parts
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("kernel release {release:?} is not major.minor"))
    };
    (next(), next()) >= (major, minor)
}

/// The kernel features some tests need, and which the host kernel may lack.
#[derive(Clone, Copy, Debug)]
pub enum KernelFeature {
    /// 802.1Q VLAN links (CONFIG_VLAN_8021Q).
    Vlan,
    /// ipvlan links (CONFIG_IPVLAN).
    Ipvlan,
    /// dummy links (CONFIG_DUMMY).
    Dummy,
}

impl KernelFeature {
    fn link_kind(self) -> &'static str {
        match self {
            KernelFeature::Vlan => "vlan",
            KernelFeature::Ipvlan => "ipvlan",
            KernelFeature::Dummy => "dummy",
        }
    }
}

/// Returns whether the test may go on. On the VM lane every feature must
/// be present (panic otherwise); on the host lane a missing one is
/// reported as covered by the VM lane.
pub fn require_kernel_feature(feature: KernelFeature) -> bool {
    let ns = Netns::new("probe");
    // VLAN and ipvlan links need an Ethernet parent (loopback refuses VLANs).
    ns.exec(
        "ip",
        &[
            "link", "add", "probe1", "type", "veth", "peer", "name", "probe2",
        ],
    );
    let parent: &[&str] = match feature {
        KernelFeature::Vlan | KernelFeature::Ipvlan => &["link", "probe1"],
        KernelFeature::Dummy => &[],
    };
    let extra: &[&str] = match feature {
        KernelFeature::Vlan => &["id", "2"],
        _ => &[],
    };
    let probe = ns
        .command("ip")
        .args(["link", "add", "probe0"])
        .args(parent)
        .args(["type", feature.link_kind()])
        .args(extra)
        .output()
        .expect("ip runs");
    if probe.status.success() {
        return true;
    }
    let lane = std::env::var("NETVLAN_TEST_LANE").unwrap_or_default();
    assert_ne!(
        lane,
        "vm",
        "the VM lane must have {feature:?}: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    note(&format!(
        "needs kernel feature {feature:?}: covered by the VM lane"
    ));
    false
}

/// Records a note for the run's summary: libtest hides the output of passing
/// tests, so `cargo xtask test` collects these from `NETVLAN_TEST_NOTES`
/// and prints them after the lane.
pub fn note(message: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    eprintln!("{test}: {message}");
    if let Some(path) = std::env::var_os("NETVLAN_TEST_NOTES") {
        use std::io::Write;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        if let Ok(mut file) = file {
            let _ = writeln!(file, "{test}: {message}");
        }
    }
}
