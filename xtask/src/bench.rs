//! `cargo xtask bench`: installs what the benchmarks call, builds the
//! release `netvlan` and `netvlan-cni` they measure and the `netvlan-bench` binary (tests
//! crate) that measures it, and runs the latter with the caller's flags.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::Stdio,
};

use anyhow::{bail, Context, Result};

use crate::{cmd, tools, workspace_root};

/// Debian packages the scenarios call (peers, traffic tools, `ip`…).
pub const PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "util-linux",
    "iputils-ping",
    "bpftool",
    "xdp-tools",
    "containernetworking-plugins",
    "iperf3",
    "sockperf",
    "time",
    "netsniff-ng",
    "nftables",
    // Scrapes of `netvlan daemon`'s /metrics (family observe).
    "curl",
];

#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct BenchArgs {
    /// netvlan-bench's flags (`cargo xtask bench --help` lists them):
    /// --quick, --only FAMILY, --json FILE.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    let help = args.args.iter().any(|a| a == "--help" || a == "-h");
    if !help {
        if !tools::is_root() {
            bail!("the benchmarks need root (namespaces, XDP, BPF_PROG_TEST_RUN); run `cargo xtask bench` as root");
        }
        tools::ensure_debian_packages(PACKAGES)?;
    }
    let (netvlan, cni, object) = build_netvlan()?;
    cmd::run(crate::cargo()?.args([
        "build",
        "--release",
        "--package",
        "netvlan-tests",
        "--bin",
        "netvlan-bench",
    ]))?;
    let mut child =
        std::process::Command::new(workspace_root().join("target/release/netvlan-bench"))
            .arg("--netvlan")
            .arg(&netvlan)
            .arg("--netvlan-cni")
            .arg(&cni)
            .arg("--object")
            .arg(&object)
            .args(&args.args)
            .spawn()
            .context("starting netvlan-bench")?;
    // Ctrl-C reaches the bench too, which stops in order and takes down
    // what it built: wait for that instead of returning under it.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: ignoring a signal has no memory preconditions.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let status = child.wait().context("waiting for netvlan-bench")?;
    if !status.success() {
        bail!("netvlan-bench failed ({status})");
    }
    Ok(())
}

/// Builds the release `netvlan` and `netvlan-cni` (installing rust-src
/// and bpf-linker if needed) and returns both binaries and the eBPF object
/// embedded in them.
fn build_netvlan() -> Result<(PathBuf, PathBuf, PathBuf)> {
    println!("bench: building netvlan and netvlan-cni (release)");
    let mut cargo = crate::cargo()?;
    cargo
        .args(crate::BUILD_RELEASE)
        .args(["--bin", "netvlan-cni"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let mut child = cargo.spawn().context("starting cargo build")?;
    let mut binary = None;
    let mut cni = None;
    let mut out_dir = None;
    for line in BufReader::new(child.stdout.take().expect("stdout is piped")).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line?) else {
            continue;
        };
        let from_userspace = msg["package_id"]
            .as_str()
            .is_some_and(|id| id.contains("netvlan-userspace"));
        match msg["reason"].as_str() {
            Some("compiler-artifact")
                if from_userspace
                    && msg["target"]["name"] == "netvlan"
                    && msg["target"]["kind"][0] == "bin" =>
            {
                binary = msg["executable"].as_str().map(PathBuf::from);
            }
            Some("compiler-artifact")
                if from_userspace
                    && msg["target"]["name"] == "netvlan-cni"
                    && msg["target"]["kind"][0] == "bin" =>
            {
                cni = msg["executable"].as_str().map(PathBuf::from);
            }
            Some("build-script-executed") if from_userspace => {
                out_dir = msg["out_dir"].as_str().map(PathBuf::from);
            }
            _ => {}
        }
    }
    if !child.wait()?.success() {
        bail!("building netvlan failed");
    }
    let binary = binary.context("cargo reported no netvlan binary")?;
    let cni = cni.context("cargo reported no netvlan-cni binary")?;
    let object = out_dir
        .context("cargo reported no build-script output for netvlan-userspace")?
        .join("netvlan.bpf.o");
    Ok((binary, cni, object))
}
