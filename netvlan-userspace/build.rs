//! Builds the eBPF crate (`netvlan-ebpf`) and hands its object to
//! `include_bytes_aligned!` through `OUT_DIR`.
//!
//! The eBPF crate needs the nightly toolchain, `rust-src` and `bpf-linker`;
//! `cargo xtask build` installs all three (bpf-linker under
//! `target/tools/bin`, which is put on PATH here). It is built in its own
//! target directory so the nested cargo never waits on the outer one's lock.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("netvlan-userspace lives in the workspace root");
    let ebpf_dir = root.join("netvlan-ebpf");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out_dir.join("netvlan.bpf.o");

    for path in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        root.join("netvlan-common/src"),
        root.join("netvlan-common/Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed=NETVLAN_EBPF_OBJECT");

    // Prebuilt objects (e.g. from a packaging pipeline) skip the build:
    // NETVLAN_EBPF_OBJECT is the XDP object; the egress object sits beside
    // it, named netvlan-egress.
    if let Some(prebuilt) = env::var_os("NETVLAN_EBPF_OBJECT") {
        let prebuilt = PathBuf::from(prebuilt);
        let egress = prebuilt.with_file_name("netvlan-egress");
        for (from, to) in [
            (&prebuilt, &object),
            (&egress, &out_dir.join("netvlan-egress.bpf.o")),
        ] {
            std::fs::copy(from, to)
                .unwrap_or_else(|e| panic!("cannot copy prebuilt {}: {e}", from.display()));
        }
        return;
    }

    let tools_bin = root.join("target/tools/bin");
    let target_dir = root.join("target/bpf");
    if !has_bpf_linker(&tools_bin) {
        panic!(
            "bpf-linker not found (looked in {} and PATH).\n\
             Run `cargo xtask build` once: it installs the nightly's rust-src and builds bpf-linker.",
            tools_bin.display()
        );
    }
    let path = env::join_paths(
        std::iter::once(tools_bin)
            .chain(env::split_paths(&env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH entries are valid");

    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
    ])
    .arg("--target-dir")
    .arg(&target_dir)
    .current_dir(&ebpf_dir)
    .env("PATH", path);
    // The outer cargo's settings (stable rustc, host flags, wrappers) must
    // not leak into the nightly bpf build.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key == "RUSTUP_TOOLCHAIN"
            || key == "RUSTFLAGS"
        {
            cmd.env_remove(key.as_ref());
        }
    }
    // BPF ISA v3 (kernel 5.1+): 32-bit jumps and sub-registers, and the
    // fetching atomics (5.12+) the MAC-sprawl guard counts with. Both
    // supported kernels (Debian 6.1 and newer) have them.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-cpu=v3");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run `rustup run nightly cargo`: {e}"));
    if !status.success() {
        panic!("building netvlan-ebpf failed ({status}); see the output above");
    }
    for (bin, out) in [
        ("netvlan", object),
        ("netvlan-egress", out_dir.join("netvlan-egress.bpf.o")),
    ] {
        let built = target_dir.join("bpfel-unknown-none/release").join(bin);
        std::fs::copy(&built, &out)
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", built.display()));
    }
}

fn has_bpf_linker(tools_bin: &Path) -> bool {
    tools_bin.join("bpf-linker").is_file()
        || env::split_paths(&env::var_os("PATH").unwrap_or_default())
            .any(|dir| dir.join("bpf-linker").is_file())
}
