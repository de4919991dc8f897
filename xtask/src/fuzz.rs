//! `cargo xtask fuzz`: libFuzzer (through cargo-fuzz) over the frame
//! classifier, the policy decision and the destination-slot resolution,
//! the code the wire program runs.

use std::process::Command;

use anyhow::{Context, Result};

use crate::{cmd, tools, workspace_root};

#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// How long to fuzz.
    #[arg(long, default_value_t = 60)]
    pub seconds: u32,
}

/// Installs cargo-fuzz under target/tools once.
fn ensure_cargo_fuzz() -> Result<()> {
    if tools::tools_bin().join("cargo-fuzz").is_file() {
        return Ok(());
    }
    println!("xtask: installing cargo-fuzz (once; under target/tools)");
    cmd::run(&mut tools::cargo_install(None, "cargo-fuzz")?).context("installing cargo-fuzz")
}

pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    tools::ensure_rust_src()?;
    ensure_cargo_fuzz()?;
    let path = std::env::join_paths(std::iter::once(tools::tools_bin()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    // The time is shared between the targets.
    let seconds = (args.seconds / TARGETS.len() as u32).max(1);
    for target in TARGETS {
        println!("xtask: fuzzing `{target}` for {seconds}s");
        cmd::run(
            Command::new("cargo")
                .args(["+nightly", "fuzz", "run", target, "--fuzz-dir"])
                .arg(workspace_root().join("netvlan-common/fuzz"))
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .arg("-rss_limit_mb=2048")
                .current_dir(workspace_root().join("netvlan-common"))
                .env("PATH", &path)
                .env_remove("RUSTUP_TOOLCHAIN"),
        )?;
    }
    Ok(())
}

/// The fuzz targets: the classifier with the decision, and the one-lookup
/// layout (destination slots resolved by the program's code, against the
/// model).
const TARGETS: [&str; 2] = ["classify", "layout"];
