//! The lab every privileged scenario is built in, by the integration tests
//! and the bench alike: network namespaces joined by veth pairs created
//! directly inside them (the host's own interfaces are never touched), each
//! namespace deleted when its guard drops, on success, failure and panic.
//!
//! The fallible forms (`named`, `run`, `try_link_json`, `try_veth_pair`,
//! `in_thread`) serve the bench, which reports errors; the panicking ones
//! serve the tests, whose failure is the panic.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context, Result};
use netvlan::sys::netns::NetnsGuard;

use crate::frame;

/// Prefix of everything the suite creates (checked for leaks by xtask).
pub const PREFIX: &str = "nvt";

/// Panics unless running as root: these tests are the privileged lane and
/// must never pass by doing nothing.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "integration tests need root (namespaces, veth, XDP): run `cargo xtask test` as root"
    );
}

/// A name no other test (or run) uses: prefix, pid, counter and clock.
pub fn unique_name(kind: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{kind}-{}-{n}-{:x}",
        run_prefix(),
        std::process::id(),
        nanos & 0xffff
    )
}

/// `nvt`, or `nvt<RUN>` when `NETVLAN_TEST_RUN` is set: `cargo xtask test`
/// gives each run its own, so its leak check never mistakes another run's
/// objects (a second suite on the same machine) for its own leftovers.
pub fn run_prefix() -> String {
    match std::env::var("NETVLAN_TEST_RUN") {
        Ok(run) if !run.is_empty() => format!("{PREFIX}{run}"),
        _ => PREFIX.to_string(),
    }
}

/// Runs a command; fails with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(out)
}

/// The command line, for error messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A network namespace that is deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// A test's namespace (unique name) with IPv6 off (no router
    /// solicitations or DAD probes to disturb exact counters), loopback up.
    pub fn new(kind: &str) -> Self {
        require_root();
        Self::named(unique_name(kind), false).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A test's namespace that keeps IPv6 on (dual-stack scenarios).
    pub fn with_ipv6(kind: &str) -> Self {
        require_root();
        Self::named(unique_name(kind), true).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Creates the namespace `name` with loopback up and, unless `ipv6`,
    /// IPv6 off. The caller picks a name no one else uses.
    pub fn named(name: String, ipv6: bool) -> Result<Self> {
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        if !ipv6 {
            for knob in ["all", "default"] {
                let path = format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6");
                ns.run("sh", &["-c", &format!("echo 1 > {path}")])?;
            }
        }
        ns.run("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Whether `ping` from this namespace reaches `address` (one probe).
    /// A ping that could not run at all panics: a negative answer must
    /// mean "no reply", never "no ping binary".
    pub fn can_ping(&self, address: &str) -> bool {
        let out = self
            .command("ping")
            .args(["-c", "1", "-W", "2", address])
            .output()
            .expect("nsenter runs");
        match out.status.code() {
            Some(0) => true,
            Some(1) => false,
            _ => panic!(
                "ping {address} in {} could not run ({}): {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// A command that runs inside the namespace. `nsenter --net` keeps the
    /// host's mounts (unlike `ip netns exec`, which hides /sys/fs/bpf) and
    /// execs the program, so the child's pid is the program's own.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs a command inside the namespace; fails unless it succeeds.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        run(self.command(program).args(args)).with_context(|| format!("in namespace {}", self.name))
    }

    /// Runs a command inside the namespace and panics unless it succeeds.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.run(program, args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Runs `job` on a thread of its own that entered the namespace through
    /// the library's guard (a namespace is per thread), and hands back its
    /// result. What the job opens (sockets, bpf objects, files under
    /// /proc/thread-self/net) stays bound to the namespace after the
    /// thread is gone.
    pub fn in_thread<T: Send>(&self, job: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| -> Result<T> {
                let _inside = NetnsGuard::enter(&netvlan::sys::netns::Netns::open(&path)?)?;
                job()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread inside {} panicked", self.name))?
        })
    }

    /// `ip -j -d link show DEV` inside the namespace, parsed.
    pub fn try_link_json(&self, dev: &str) -> Result<serde_json::Value> {
        let out = self.run("ip", &["-j", "-d", "link", "show", "dev", dev])?;
        let mut v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("`ip -j link` printed no JSON")?;
        Ok(v[0].take())
    }

    /// [`Netns::try_link_json`], panicking on failure.
    pub fn link_json(&self, dev: &str) -> serde_json::Value {
        self.try_link_json(dev).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The id of the XDP program attached to DEV, if any.
    pub fn xdp_prog_id(&self, dev: &str) -> Result<Option<u32>> {
        let link = self.try_link_json(dev)?;
        Ok(link["xdp"]["prog"]["id"].as_u64().map(|id| id as u32))
    }

    /// The MAC address of `dev`.
    pub fn mac(&self, dev: &str) -> frame::Mac {
        let json = self.link_json(dev);
        let text = json["address"]
            .as_str()
            .unwrap_or_else(|| panic!("{dev} has no address: {json:#}"));
        frame::parse_mac(text)
    }

    pub fn ifindex(&self, dev: &str) -> u32 {
        self.link_json(dev)["ifindex"].as_u64().expect("ifindex") as u32
    }

    /// Names of every link in the namespace, in the kernel's order.
    pub fn link_names(&self) -> Vec<String> {
        let out = self.exec("ip", &["-j", "link", "show"]);
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        links
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    /// Names of every link in the namespace, sorted (to compare as a set).
    pub fn sorted_link_names(&self) -> Vec<String> {
        let mut names = self.link_names();
        names.sort();
        names
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: cannot delete netns {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: cannot delete netns {}: {e}", self.name),
        }
    }
}

/// A directory removed with everything in it on drop (for a bpffs
/// directory, removing the pins also detaches what was attached there).
pub struct OwnedDir {
    path: PathBuf,
}

impl OwnedDir {
    /// Owns `path`, whether or not it exists yet.
    pub fn at(path: PathBuf) -> Self {
        OwnedDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OwnedDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("warning: cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

/// Creates a veth pair with one end in each namespace (never in the host's),
/// VLAN offloads off so tags stay in the frame bytes, both ends up.
pub fn try_veth_pair(a: &Netns, a_name: &str, b: &Netns, b_name: &str) -> Result<()> {
    run(Command::new("ip").args([
        "link",
        "add",
        a_name,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ]))?;
    for (ns, dev) in [(a, a_name), (b, b_name)] {
        ns.run("ethtool", &["-K", dev, "rxvlan", "off", "txvlan", "off"])?;
        ns.run("ip", &["link", "set", dev, "up"])?;
    }
    Ok(())
}

/// [`try_veth_pair`], panicking on failure.
pub fn veth_pair(a: &Netns, a_name: &str, b: &Netns, b_name: &str) {
    try_veth_pair(a, a_name, b, b_name).unwrap_or_else(|e| panic!("{e:#}"))
}
