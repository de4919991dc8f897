//! The `netvlan` CLI under test, run inside one of the bench's namespaces
//! with a private state database and bpffs directory, so nothing it
//! creates is shared with the host or another run.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use super::{
    sandbox::{run, wait_for, Netns, OwnedDir, Process},
    timing::{timed, Timed},
};

/// Dropping it removes its state and pins; the caller's namespace (dropped
/// after it) takes the links and with them the attached programs.
pub struct Netvlan {
    bin: PathBuf,
    netns: PathBuf,
    state: OwnedDir,
    bpf: OwnedDir,
    /// Its own `NETVLAN_RUN_DIR`: no daemon unless [`Netvlan::start_daemon`]
    /// starts one there (never one of the host's).
    run: OwnedDir,
}

impl Netvlan {
    /// netvlan acting in `ns`; `kind` names its private directories.
    pub fn new(bin: &Path, ns: &Netns, token: &str, kind: &str) -> Result<Self> {
        Ok(Netvlan {
            bin: bin.to_path_buf(),
            netns: ns.path(),
            state: OwnedDir::temp(token, &format!("{kind}-state"))?,
            bpf: OwnedDir::bpf(token, &format!("{kind}-bpf")),
            run: OwnedDir::temp(token, &format!("{kind}-run"))?,
        })
    }

    /// `nsenter --net=NS netvlan ARGS`, as the README says to run it.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg(&self.bin)
            .args(args)
            .env("NETVLAN_STATE_DIR", self.state.path())
            .env("NETVLAN_BPF_DIR", self.bpf.path())
            .env("NETVLAN_RUN_DIR", self.run.path())
            .env_remove("RUST_LOG");
        cmd
    }

    /// `netvlan daemon` for this instance (metrics on an ephemeral
    /// loopback port), once its API socket is there: from then on this
    /// instance's commands are run by it. Dropping it ends it by PID.
    pub fn start_daemon(&self) -> Result<Process> {
        let mut cmd = self.command(&["daemon", "--metrics-addr", "127.0.0.1:0"]);
        let mut daemon = Process::spawn(&mut cmd, "netvlan daemon")?;
        let socket = self.run.path().join("netvlan.sock");
        wait_for(std::time::Duration::from_secs(30), || {
            daemon.check_running()?;
            Ok(socket.exists().then_some(()))
        })?
        .context("netvlan daemon never made its API socket")?;
        Ok(daemon)
    }

    /// Runs `netvlan ARGS`; fails with its output unless it succeeds.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out =
            run(&mut self.command(args)).with_context(|| format!("netvlan {}", args.join(" ")))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `netvlan network create -d macvlan --subnet SUBNET -o parent=PARENT
    /// [-o OPTION…] bench`: the one network every scenario measures.
    /// Returns the arguments as one line, for the report's method text.
    pub fn create_bench_network(
        &self,
        subnet: &str,
        parent: &str,
        options: &[&str],
    ) -> Result<String> {
        let parent = format!("parent={parent}");
        let mut args = vec!["network", "create", "-d", "macvlan", "--subnet", subnet];
        for option in std::iter::once(parent.as_str()).chain(options.iter().copied()) {
            args.extend(["-o", option]);
        }
        args.push("bench");
        self.run(&args)?;
        Ok(args.join(" "))
    }

    /// Runs `netvlan ARGS` and times it.
    pub fn timed(&self, args: &[&str]) -> Result<Timed> {
        timed(&mut self.command(args), None).with_context(|| format!("netvlan {}", args.join(" ")))
    }

    /// Where netvlan keeps its state.
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Where netvlan pins its programs and maps.
    pub fn bpf_dir(&self) -> &Path {
        self.bpf.path()
    }
}
