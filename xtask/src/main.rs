//! `cargo xtask`: build, run and test netvlan on a fresh machine.
//!
//! Every command first installs what it needs (once): the nightly's
//! rust-src, bpf-linker, and the Debian packages the tests call.

mod bench;
mod cmd;
mod fuzz;
mod test;
mod tools;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test netvlan")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain pieces and build the netvlan binary (release).
    Build,
    /// Build, then run netvlan as root with ARGS (sudo -E when not root).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The whole suite: formatting, clippy, unit tests and the privileged
    /// integration tests (root; namespaces, veth, XDP).
    Test(test::TestArgs),
    /// Only the VM lane: the integration tests inside Debian's 6.1 kernel
    /// under QEMU (802.1Q, ipvlan and dummy links; no TCX).
    VmTest(vm::VmArgs),
    /// Fuzz the frame classifier and policy decision (cargo-fuzz, libFuzzer).
    Fuzz(fuzz::FuzzArgs),
    /// Benchmarks against the peers users would pick (root): writes
    /// bench/results/<date>.json, BENCHMARKS.md and bench/charts/.
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Build => build_release().map(|_| ()),
        Cmd::Run { args } => run(&args),
        Cmd::Test(args) => test::test(&args),
        Cmd::VmTest(args) => test::vm_only(&args),
        Cmd::Bench(args) => bench::bench(&args),
        Cmd::Fuzz(args) => fuzz::fuzz(&args),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// Installs rust-src and bpf-linker, and returns a `cargo` command with
/// bpf-linker on PATH, run from the workspace root.
pub fn cargo() -> Result<Command> {
    tools::ensure_rust_src()?;
    tools::ensure_bpf_linker()?;
    let path = std::env::join_paths(std::iter::once(tools::tools_bin()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root()).env("PATH", path);
    Ok(cmd)
}

fn build_release() -> Result<PathBuf> {
    cmd::run(cargo()?.args([
        "build",
        "--release",
        "--package",
        "netvlan-userspace",
        "--bin",
        "netvlan",
    ]))?;
    Ok(workspace_root().join("target/release/netvlan"))
}

fn run(args: &[String]) -> Result<()> {
    let binary = build_release()?;
    let mut command = if tools::is_root() {
        Command::new(&binary)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&binary);
        sudo
    };
    let status = command.args(args).status()?;
    std::process::exit(status.code().unwrap_or(1));
}
