//! `cargo xtask test`: lint, unit tests and the privileged integration
//! tests, then a check that the suite left nothing behind.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{
    cmd,
    lane::{build_test_netvlan, kernel_release, print_table, Tally},
    tools, vm, workspace_root,
};

/// Debian packages the integration tests call.
pub const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "util-linux",
    "iputils-ping",
    "bpftool",
    // The live page test: headless Chromium renders it and takes screenshots.
    "chromium",
    "tcpdump",
    "tshark",
    // promtool and a Prometheus server for tests/tests/metrics.rs.
    "prometheus",
    // tests/tests/package.rs: the shells that read the completion scripts,
    // groff and man for the man pages, systemd-analyze for the unit.
    "bash",
    "zsh",
    "fish",
    "groff-base",
    "man-db",
    "systemd",
    // tests/tests/cni.rs: the reference macvlan and host-local plugins,
    // podman (CNI backend, runc) as the real runtime, busybox for its image.
    "containernetworking-plugins",
    "podman",
    "runc",
    "busybox-static",
    // tests/tests/docker.rs: dockerd (and its containerd) as the real engine
    // for `netvlan docker-plugin`.
    "docker.io",
    // tests/tests/metrics.rs counts the daemon's fsyncs on a read.
    "strace",
];

/// Name prefix of every namespace and bpffs directory the tests create.
pub const TEST_PREFIX: &str = "nvt";

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    no_lint: bool,
    /// Skip the VM lane (for quick local runs; CI runs both lanes).
    #[arg(long)]
    no_vm: bool,
    /// Skip the benchmark smoke run (`cargo xtask bench --quick`; CI runs it).
    #[arg(long)]
    no_bench: bool,
    /// Kernel for the VM lane (see `cargo xtask vm-test --help`).
    #[arg(long)]
    kernel: Option<String>,
    /// Only tests whose name contains this (passed to the test binaries).
    filter: Option<String>,
}

pub fn test(args: &TestArgs) -> Result<()> {
    tools::ensure_debian_packages(TEST_PACKAGES)?;
    if !tools::is_root() {
        bail!("the integration tests need root (network namespaces, XDP); run `sudo -E cargo xtask test`");
    }
    if !args.no_lint {
        lint()?;
    }
    let mut rows = Vec::new();
    let mut failures = Vec::new();

    let started = Instant::now();
    let netvlan = build_test_netvlan()?;
    let notes = workspace_root().join("target/test-notes.txt");
    let _ = std::fs::remove_file(&notes);
    println!(
        "xtask: host lane: unit and integration tests on {}",
        kernel_release()
    );
    let mut cargo_test = crate::cargo()?;
    cargo_test
        .args(["test", "--workspace", "--"])
        .args(args.filter.iter())
        .env("NETVLAN_BIN", &netvlan)
        .env("NETVLAN_TEST_LANE", "host")
        .env("NETVLAN_TEST_NOTES", &notes)
        .env("NETVLAN_TEST_RUN", format!("{:x}", std::process::id()));
    let (host, host_ok) = run_counting(&mut cargo_test)?;
    if let Ok(text) = std::fs::read_to_string(&notes) {
        println!("xtask: host lane notes (checked in the other lane):");
        for line in text.lines() {
            println!("  {line}");
        }
    }
    let leaks = leftovers()?;
    if !leaks.is_empty() {
        failures.push(format!("host lane left these behind: {}", leaks.join(", ")));
    }
    if !host_ok || host.failed > 0 {
        failures.push("host lane: tests failed".into());
    } else if host.passed == 0 {
        failures.push("host lane ran no test".into());
    }
    rows.push(("host", kernel_release(), host, started.elapsed()));

    if args.no_vm {
        println!("xtask: --no-vm: skipping the VM lane (CI always runs it)");
    } else {
        let vm = vm::vm_test(&vm::VmArgs {
            kernel: args.kernel.clone(),
            filter: args.filter.clone(),
        })?;
        if let Some(why) = vm.failure {
            failures.push(why);
        }
        rows.push(("vm", vm.kernel, vm.tally, vm.elapsed));
    }

    // A short libFuzzer run over the classifier and policy decision.
    let fuzz_started = Instant::now();
    let fuzzed = crate::fuzz::fuzz(&crate::fuzz::FuzzArgs { seconds: 30 });
    let tally = match &fuzzed {
        Ok(()) => Tally {
            passed: 1,
            failed: 0,
        },
        Err(e) => {
            failures.push(format!("fuzzing found a problem: {e:#}"));
            Tally {
                passed: 0,
                failed: 1,
            }
        }
    };
    rows.push((
        "fuzz",
        "libFuzzer, 30s".into(),
        tally,
        fuzz_started.elapsed(),
    ));

    if args.no_bench {
        println!("xtask: --no-bench: skipping the benchmark smoke run (CI always runs it)");
    } else {
        let bench_started = Instant::now();
        let tally = match bench_smoke() {
            Ok(families) => {
                println!("xtask: bench --quick: valid results for {families}");
                Tally {
                    passed: 1,
                    failed: 0,
                }
            }
            Err(e) => {
                failures.push(format!("bench --quick: {e:#}"));
                Tally {
                    passed: 0,
                    failed: 1,
                }
            }
        };
        rows.push((
            "bench",
            "--quick smoke run".into(),
            tally,
            bench_started.elapsed(),
        ));
    }

    print_table(&rows);
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// Runs `cargo xtask bench --quick` as its own process (it builds and
/// installs what it needs) and checks that it finished and wrote a results
/// file that parses, with every family measured and every figure a finite
/// number. Goals are not asserted: they are read from the full run.
fn bench_smoke() -> Result<String> {
    let json = workspace_root().join("target/bench/ci-smoke.json");
    let _ = std::fs::remove_file(&json);
    let status = Command::new(std::env::current_exe().context("finding xtask itself")?)
        .args(["bench", "--quick", "--json"])
        .arg(&json)
        .status()
        .context("running cargo xtask bench --quick")?;
    if !status.success() {
        bail!("it failed ({status})");
    }
    let text = std::fs::read_to_string(&json)
        .with_context(|| format!("it wrote no results file {}", json.display()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", json.display()))?;
    let families = report["families"]
        .as_array()
        .filter(|f| !f.is_empty())
        .context("the results list no family")?;
    let mut names = Vec::new();
    for family in families {
        let key = family["key"].as_str().unwrap_or("?");
        let measurements = family["measurements"]
            .as_array()
            .filter(|m| !m.is_empty())
            .with_context(|| format!("family {key} has no measurement"))?;
        for m in measurements {
            let samples = m["samples"]
                .as_array()
                .filter(|s| !s.is_empty())
                .with_context(|| format!("{key}: a measurement without samples: {m}"))?;
            if !samples
                .iter()
                .all(|v| v.as_f64().is_some_and(f64::is_finite))
            {
                bail!("{key}: a sample is not a finite number: {m}");
            }
        }
        names.push(key.to_string());
    }
    Ok(names.join(", "))
}

fn lint() -> Result<()> {
    println!("xtask: cargo fmt --check and cargo clippy -D warnings");
    cmd::run(crate::cargo()?.args(["fmt", "--all", "--check"]))?;
    cmd::run(
        Command::new("cargo")
            .args(["+nightly", "fmt", "--check"])
            .current_dir(workspace_root().join("netvlan-ebpf"))
            .env_remove("RUSTUP_TOOLCHAIN"),
    )?;
    cmd::run(crate::cargo()?.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))
}

/// Runs `cmd`, echoing its stdout, and tallies libtest summary lines.
fn run_counting(cmd: &mut Command) -> Result<(Tally, bool)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut tally = Tally::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        tally.add_summary_line(&line);
    }
    let status = child.wait()?;
    Ok((tally, status.success()))
}

/// This run's prefix for namespaces and bpffs directories (see the test
/// harness's `run_prefix`).
fn run_prefix() -> String {
    format!("{TEST_PREFIX}{:x}", std::process::id())
}

/// Namespaces and bpffs directories of this run that still exist.
fn leftovers() -> Result<Vec<String>> {
    let prefix = run_prefix();
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/var/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                found.push(format!("netns {name}"));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                found.push(format!("bpffs /sys/fs/bpf/{name}"));
            }
        }
    }
    Ok(found)
}
