//! `cargo xtask fuzz`: libFuzzer (through cargo-fuzz) over the frame
//! classifier and the policy decision, the code the XDP program runs.

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
    println!(
        "xtask: fuzzing the classifier and policy decision for {}s",
        args.seconds
    );
    cmd::run(
        Command::new("cargo")
            .args(["+nightly", "fuzz", "run", "classify", "--fuzz-dir"])
            .arg(workspace_root().join("netvlan-common/fuzz"))
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg("-rss_limit_mb=2048")
            .current_dir(workspace_root().join("netvlan-common"))
            .env("PATH", path)
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
}
