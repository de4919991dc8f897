//! `cargo xtask`: build, run and test netvlan on a fresh machine.
//!
//! Every command first installs what it needs (once): the nightly's
//! rust-src, bpf-linker, and the Debian packages the tests call.

mod bench;
mod cmd;
mod fuzz;
mod lane;
mod test;
mod tools;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test netvlan")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain pieces and build the netvlan binary (release,
    /// target/release/netvlan).
    Build,
    /// Build, then copy the netvlan binary to PREFIX/bin (default
    /// /usr/local/bin, on every user's PATH), so `netvlan ...` runs as
    /// the demo and the README print it.
    Install {
        /// Installation prefix; the binary goes to PREFIX/bin/netvlan.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
    },
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
        Cmd::Build => build_release().map(|binary| {
            println!(
                "xtask: built {} (`cargo xtask install` puts it on PATH)",
                binary.display()
            )
        }),
        Cmd::Install { prefix } => build_release().and_then(|binary| install(&binary, &prefix)),
        Cmd::Run { args } => run(&args),
        Cmd::Test(args) => test::test(&args),
        Cmd::VmTest(args) => vm::vm_only(&args),
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
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root())
        .env("PATH", tools::path_with_tools()?);
    Ok(cmd)
}

/// `cargo build` arguments of the release `netvlan` binary.
pub const BUILD_RELEASE: [&str; 6] = [
    "build",
    "--release",
    "--package",
    "netvlan-userspace",
    "--bin",
    "netvlan",
];

fn build_release() -> Result<PathBuf> {
    cmd::run(cargo()?.args(BUILD_RELEASE))?;
    Ok(workspace_root().join("target/release/netvlan"))
}

/// Copies `binary` to `prefix/bin/netvlan`, replacing any older one
/// atomically (a running netvlan keeps its file).
fn install(binary: &Path, prefix: &Path) -> Result<()> {
    let bin = prefix.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    let target = bin.join("netvlan");
    let staging = bin.join(".netvlan.new");
    std::fs::copy(binary, &staging)
        .with_context(|| format!("copying {} to {}", binary.display(), staging.display()))?;
    std::fs::rename(&staging, &target)
        .with_context(|| format!("moving {} into place", target.display()))?;
    println!("xtask: installed {}", target.display());
    let on_path =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|dir| dir == bin);
    if !on_path {
        println!(
            "xtask: {} is not on this shell's PATH; run it as {}",
            bin.display(),
            target.display()
        );
    }
    Ok(())
}

fn run(args: &[String]) -> Result<()> {
    let binary = build_release()?;
    eprintln!(
        "xtask: running {} (`cargo xtask install` puts `netvlan` on PATH)",
        binary.display()
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_puts_an_executable_netvlan_under_prefix_bin() {
        let root = std::env::temp_dir().join(format!("xtask-install-{}", std::process::id()));
        let built = root.join("netvlan-built");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(&built, "#!/bin/sh\necho netvlan-from-install\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&built, std::fs::Permissions::from_mode(0o755)).unwrap();
        let prefix = root.join("prefix");
        install(&built, &prefix).unwrap();
        // Twice: replacing an installed binary works too.
        install(&built, &prefix).unwrap();
        let out = Command::new(prefix.join("bin/netvlan")).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "netvlan-from-install\n"
        );
        let left: Vec<_> = std::fs::read_dir(prefix.join("bin"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["netvlan"], "no staging file left");
        std::fs::remove_dir_all(root).unwrap();
    }
}
