//! `cargo xtask bench`: installs what the benchmarks call, builds the
//! release `netvlan` and `netvlan-cni` they measure and the `netvlan-bench`
//! binary (tests crate) that measures them, and runs the latter with the
//! caller's flags.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::Stdio,
};

use anyhow::{bail, Context, Result};

use crate::tools;

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
    let built = build_release()?;
    let mut child = std::process::Command::new(&built.bench)
        .arg("--netvlan")
        .arg(&built.netvlan)
        .arg("--netvlan-cni")
        .arg(&built.cni)
        .arg("--object")
        .arg(&built.object)
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

/// What one release build gives the benchmarks.
struct Built {
    netvlan: PathBuf,
    cni: PathBuf,
    bench: PathBuf,
    /// The eBPF object embedded in `netvlan`.
    object: PathBuf,
}

/// Builds the release `netvlan`, `netvlan-cni` and `netvlan-bench`
/// (installing rust-src and bpf-linker if needed) in one cargo run: built
/// apart, cargo compiled netvlan-userspace twice (the tests crate adds
/// netvlan-common's `model` feature), about 3 minutes of CI. Unified, the
/// measured binaries carry the model's code unlinked: nothing calls it.
fn build_release() -> Result<Built> {
    println!("bench: building netvlan, netvlan-cni and netvlan-bench (release)");
    let mut cargo = crate::cargo()?;
    cargo
        .args(crate::BUILD_RELEASE)
        .args(["--bin", "netvlan-cni"])
        .args(["--package", "netvlan-tests", "--bin", "netvlan-bench"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let mut child = cargo.spawn().context("starting cargo build")?;
    let mut binary = None;
    let mut cni = None;
    let mut bench = None;
    let mut out_dir = None;
    for line in BufReader::new(child.stdout.take().expect("stdout is piped")).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line?) else {
            continue;
        };
        let package = msg["package_id"].as_str().unwrap_or_default();
        let from_userspace = package.contains("netvlan-userspace");
        let bin_named =
            |name: &str| msg["target"]["name"] == name && msg["target"]["kind"][0] == "bin";
        let executable = || msg["executable"].as_str().map(PathBuf::from);
        match msg["reason"].as_str() {
            Some("compiler-artifact") if from_userspace && bin_named("netvlan") => {
                binary = executable();
            }
            Some("compiler-artifact") if from_userspace && bin_named("netvlan-cni") => {
                cni = executable();
            }
            Some("compiler-artifact") if bin_named("netvlan-bench") => bench = executable(),
            Some("build-script-executed") if from_userspace => {
                out_dir = msg["out_dir"].as_str().map(PathBuf::from);
            }
            _ => {}
        }
    }
    if !child.wait()?.success() {
        bail!("building netvlan failed");
    }
    Ok(Built {
        netvlan: binary.context("cargo reported no netvlan binary")?,
        cni: cni.context("cargo reported no netvlan-cni binary")?,
        bench: bench.context("cargo reported no netvlan-bench binary")?,
        object: out_dir
            .context("cargo reported no build-script output for netvlan-userspace")?
            .join("netvlan.bpf.o"),
    })
}
