//! What the benchmarks build, and the guards that take it down again.
//!
//! Every namespace, bpffs directory and temporary directory of one run is
//! named `nvb-<token>-…` (token random per run), so a run never touches
//! another's objects or the host's, and a check at the end can prove that
//! nothing was left behind. Each object is owned by a guard that removes it
//! on drop: on success, on error and on panic alike.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

pub use crate::lab::{describe, run, try_veth_pair, Netns, OwnedDir};

/// Prefix of everything a benchmark creates.
pub const PREFIX: &str = "nvb";

/// A random token naming one run's objects.
pub fn run_token() -> String {
    let mut bytes = [0u8; 4];
    // SAFETY: the buffer is valid for its length; getrandom writes at most that.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Fall back to the clock and pid: unique enough for names.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        bytes = (nanos ^ std::process::id()).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bench's namespace `nvb-<token>-<kind>` (the prefix its leak check
/// looks for), IPv6 on or off.
pub fn netns(token: &str, kind: &str, ipv6: bool) -> Result<Netns> {
    Netns::named(format!("{PREFIX}-{token}-{kind}"), ipv6)
}

/// Many bare namespaces (the sandboxes of the control-plane benchmark),
/// created and deleted with one `ip -batch` each instead of one process per
/// namespace.
pub struct NetnsSet {
    names: Vec<String>,
}

impl NetnsSet {
    pub fn new(token: &str, kind: &str, count: usize) -> Result<Self> {
        let names: Vec<String> = (0..count)
            .map(|i| format!("{PREFIX}-{token}-{kind}{i}"))
            .collect();
        let mut set = NetnsSet { names: Vec::new() };
        let script: String = names.iter().map(|n| format!("netns add {n}\n")).collect();
        let result = ip_batch(&script);
        // Own whatever exists, so a partial failure is cleaned up too.
        set.names = names
            .into_iter()
            .filter(|n| Path::new("/var/run/netns").join(n).exists())
            .collect();
        result?;
        if set.names.len() != count {
            bail!("created {} of {count} namespaces", set.names.len());
        }
        Ok(set)
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Drop for NetnsSet {
    fn drop(&mut self) {
        let script: String = self
            .names
            .iter()
            .map(|n| format!("netns del {n}\n"))
            .collect();
        if let Err(e) = ip_batch(&script) {
            eprintln!("bench: warning: deleting the sandboxes: {e:#}");
            for name in &self.names {
                let _ = Command::new("ip").args(["netns", "del", name]).output();
            }
        }
    }
}

/// Feeds `script` to `ip -batch -`.
fn ip_batch(script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run ip -batch")?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "ip -batch failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The bench's directories, named for its leak check: a private bpffs
/// directory (`NETVLAN_BPF_DIR`; removing the pins detaches what netvlan
/// attached there) or a temporary directory (state, IPAM, copies).
impl OwnedDir {
    /// `/sys/fs/bpf/nvb-<token>-<kind>` (created by netvlan on first use).
    pub fn bpf(token: &str, kind: &str) -> Self {
        OwnedDir::at(Path::new("/sys/fs/bpf").join(format!("{PREFIX}-{token}-{kind}")))
    }

    /// `$TMPDIR/nvb-<token>-<kind>`, created now.
    pub fn temp(token: &str, kind: &str) -> Result<Self> {
        let dir = OwnedDir::at(std::env::temp_dir().join(format!("{PREFIX}-{token}-{kind}")));
        std::fs::create_dir_all(dir.path())
            .with_context(|| format!("creating {}", dir.path().display()))?;
        Ok(dir)
    }
}

/// A long-running child (a traffic server), ended by its pid on drop.
pub struct Process {
    child: std::process::Child,
    what: String,
    /// The child leads a process group of its own, and the signals go to
    /// that group (a tool that forks workers which outlive a signal to
    /// their parent, like trafgen).
    group: bool,
}

impl Process {
    pub fn spawn(cmd: &mut Command, what: &str) -> Result<Self> {
        Self::start(cmd, what, false)
    }

    /// As [`Process::spawn`], with the child in a new process group: the
    /// group holds only the child and what it forks, and is what drop
    /// signals.
    pub fn spawn_group(cmd: &mut Command, what: &str) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        Self::start(cmd, what, true)
    }

    fn start(cmd: &mut Command, what: &str, group: bool) -> Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {what}: {}", describe(cmd)))?;
        Ok(Process {
            child,
            what: what.to_string(),
            group,
        })
    }

    /// As [`Process::spawn`], its output into files (for a tool whose
    /// output is the result).
    pub fn spawn_with_output(
        cmd: &mut Command,
        what: &str,
        stdout: std::fs::File,
        stderr: std::fs::File,
    ) -> Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {what}: {}", describe(cmd)))?;
        Ok(Process {
            child,
            what: what.to_string(),
            group: false,
        })
    }

    /// SIGINT, then waits for it to exit; fails unless it exits 0.
    pub fn interrupt_and_wait(&mut self) -> Result<()> {
        // SAFETY: kill has no memory preconditions; our own unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let status = self.child.wait()?;
        if !status.success() {
            bail!("{} failed ({status})", self.what);
        }
        Ok(())
    }

    /// Its PID (the program's own: `nsenter --net` execs it).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has already exited (it could not start).
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status})", self.what);
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // The group's id is the child's pid (it leads the group).
        let target = if self.group { -pid } else { pid };
        // SAFETY: kill has no memory preconditions; the pid is our own
        // unreaped child, so neither it nor the group it leads can have
        // been reused.
        unsafe { libc::kill(target, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(target, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(Some(v));
        }
        if std::time::Instant::now() > deadline {
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Namespaces and bpffs directories of this run that still exist.
pub fn leftovers(token: &str) -> Vec<String> {
    let prefix = format!("{PREFIX}-{token}");
    let mut found = Vec::new();
    for (dir, what) in [("/var/run/netns", "netns"), ("/sys/fs/bpf", "bpffs")] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) {
                    found.push(format!("{what} {dir}/{name}"));
                }
            }
        }
    }
    let temp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&temp) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                found.push(format!("directory {}", temp.join(name).display()));
            }
        }
    }
    found
}

/// The installed version of a Debian package, or `?`.
pub fn package_version(package: &str) -> String {
    run(Command::new("dpkg-query").args(["-W", "-f=${Version}", package]))
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "?".into())
}
