//! Installing what the build and the tests need, once and idempotently.
//!
//! Only the package registries and rustup's component service are used:
//! - the nightly's `rust-src` (for `-Z build-std=core`),
//! - `bpf-linker`, built from crates.io against the nightly's own libLLVM
//!   (no distribution ships an LLVM that matches rustc's), cached under
//!   `target/tools`,
//! - Debian packages the tests call (`ip`, `ethtool`, `nsenter`...).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{cmd, workspace_root};

/// bpf-linker release known to work with the preinstalled nightly.
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn tools_dir() -> PathBuf {
    workspace_root().join("target/tools")
}

pub fn tools_bin() -> PathBuf {
    tools_dir().join("bin")
}

/// PATH with `target/tools/bin` first: the eBPF build finds bpf-linker,
/// and `cargo install --root target/tools` sees its bin directory on PATH
/// and so does not tell the user to change theirs.
pub fn path_with_tools() -> Result<std::ffi::OsString> {
    Ok(std::env::join_paths(std::iter::once(tools_bin()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?)
}

/// `cargo install ... --root target/tools`, quiet about PATH.
pub fn cargo_install(toolchain: Option<&str>, krate: &str) -> Result<Command> {
    let mut cmd = Command::new("cargo");
    if let Some(toolchain) = toolchain {
        cmd.arg(format!("+{toolchain}"));
    }
    cmd.args(["install", krate, "--locked", "--root"])
        .arg(tools_dir())
        .env("PATH", path_with_tools()?)
        .env_remove("RUSTUP_TOOLCHAIN");
    Ok(cmd)
}

/// Ensures the nightly toolchain has `rust-src`.
pub fn ensure_rust_src() -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context(
        "listing the nightly toolchain's components (is the `nightly` toolchain installed?)",
    )?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        return Ok(());
    }
    println!("xtask: installing rust-src for the nightly toolchain (needed by -Z build-std)");
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

/// Ensures `target/tools/bin/bpf-linker` exists and runs, building it if not.
pub fn ensure_bpf_linker() -> Result<()> {
    let linker = tools_bin().join("bpf-linker");
    // It loads the nightly's libLLVM at run time, which `rustup run` puts on
    // the library path (as it does when rustc invokes the linker).
    let works = || {
        Command::new("rustup")
            .args(["run", "nightly"])
            .arg(&linker)
            .arg("--version")
            .env_remove("RUSTUP_TOOLCHAIN")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if linker.is_file() && works() {
        return Ok(());
    }
    println!("xtask: building bpf-linker {BPF_LINKER_VERSION} against the nightly's libLLVM (a minute or two, once; cargo shows its progress)");
    let sysroot = cmd::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let sysroot = Path::new(sysroot.trim());
    let version = cmd::output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("`rustc +nightly -vV` reports no LLVM version")?
        .to_string();
    let libllvm = std::fs::read_dir(sysroot.join("lib"))
        .with_context(|| format!("reading {}/lib", sysroot.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so"))
        })
        .with_context(|| {
            format!(
                "no libLLVM.so* in {}/lib: the nightly toolchain ships none",
                sysroot.display()
            )
        })?;
    // bpf-linker's llvm-sys looks for $LLVM_PREFIX/lib/libLLVM.so.
    let prefix = tools_dir().join("llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    cmd::run(
        cargo_install(Some("nightly"), "bpf-linker")?
            .args(["--version", BPF_LINKER_VERSION, "--no-default-features"])
            .arg("--features")
            .arg(format!("llvm-{major}"))
            .arg("--force")
            .env("LLVM_PREFIX", &prefix),
    )
    .context("building bpf-linker")
}

/// Ensures the Debian packages are installed (runs `apt-get` as root).
pub fn ensure_debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {} (install them as root: apt-get install {})",
            missing.join(" "),
            missing.join(" ")
        );
    }
    println!("xtask: installing Debian packages: {}", missing.join(" "));
    cmd::run(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let _no_services = ServicesHeld::hold()?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Debian's way to keep `apt-get install` from starting the services it
/// installs: `docker.io`, `containerd` and `podman` ship init scripts, and
/// a dockerd started on the host would add a bridge and firewall rules to
/// the machine's own network (the tests start their own, in namespaces).
/// `invoke-rc.d` asks `/usr/sbin/policy-rc.d`; exit 101 means "not now".
/// An existing policy is left as it is; one made here is removed after.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

struct ServicesHeld {
    /// The policy made here, removed on drop.
    made: Option<std::path::PathBuf>,
}

impl ServicesHeld {
    fn hold() -> Result<Self> {
        Self::hold_at(std::path::Path::new(POLICY_RC_D))
    }

    fn hold_at(path: &std::path::Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        if path.exists() {
            return Ok(ServicesHeld { made: None });
        }
        std::fs::write(
            path,
            "#!/bin/sh\n# made by cargo xtask for one apt-get install\nexit 101\n",
        )
        .with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
        Ok(ServicesHeld {
            made: Some(path.into()),
        })
    }
}

impl Drop for ServicesHeld {
    fn drop(&mut self) {
        if let Some(path) = &self.made {
            if let Err(e) = std::fs::remove_file(path) {
                eprintln!("xtask: could not remove {}: {e}", path.display());
            }
        }
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn services_stay_held_during_an_install_and_a_policy_of_the_machines_own_is_kept() {
        let dir = std::env::temp_dir().join(format!("xtask-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy-rc.d");
        {
            let _held = super::ServicesHeld::hold_at(&path).unwrap();
            let out = std::process::Command::new(&path).status().unwrap();
            assert_eq!(out.code(), Some(101), "the policy says \"not now\"");
        }
        assert!(
            !path.exists(),
            "the policy made for the install is gone after it"
        );
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        drop(super::ServicesHeld::hold_at(&path).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "#!/bin/sh\nexit 0\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    use super::*;

    #[test]
    fn cargo_install_runs_with_the_tools_bin_on_path() {
        // cargo prints "be sure to add ... to your PATH" unless the root's
        // bin directory is on the PATH it runs with.
        let cmd = cargo_install(None, "cargo-fuzz").unwrap();
        let path = cmd
            .get_envs()
            .find(|(k, _)| *k == "PATH")
            .and_then(|(_, v)| v)
            .expect("PATH is set");
        let first = std::env::split_paths(path).next();
        assert_eq!(first, Some(tools_bin()));
        let args: Vec<_> = cmd.get_args().collect();
        let root = args.iter().position(|a| *a == "--root").expect("--root");
        assert_eq!(
            Path::new(args[root + 1]).join("bin"),
            tools_bin(),
            "the PATH entry is the root's bin"
        );
    }
}
