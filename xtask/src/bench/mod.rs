//! `cargo xtask bench`: netvlan side by side with the peers users would
//! pick, every figure a ratio against a peer measured in the same run.
//!
//! Each scenario builds what it measures in namespaces of its own (see
//! [`sandbox`]), repeats every measurement, and hands back a [`Family`] of
//! measurements and ratios. A full run writes `bench/results/<date>.json`,
//! `BENCHMARKS.md` and `bench/charts/<family>.svg`; a `--quick` or `--only`
//! run writes the same under `target/bench/`, so a smoke run never replaces
//! the committed evidence.

mod chart;
mod control;
mod flood;
mod frames;
mod livegen;
mod machine;
mod model;
mod netvlan;
mod observe;
mod policies;
mod progress;
mod report;
mod sandbox;
mod stats;
mod timing;
mod traffic;
mod xdp;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Instant, SystemTime},
};

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use crate::{tools, workspace_root};
use model::{Family, Report, Unavailable};
use sandbox::OwnedDir;

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
];

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Smoke run (CI): fewer rounds, shorter runs, 50 endpoints instead of
    /// 1,000; under 5 minutes. Writes under target/bench/.
    #[arg(long)]
    quick: bool,
    /// Only this scenario family. Writes under target/bench/.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["xdp", "traffic", "control", "observe", "flood"]))]
    only: Option<String>,
    /// Write the results JSON here instead.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// What every scenario needs.
pub struct Ctx {
    /// Names this run's namespaces and directories (`nvb-<token>-…`).
    pub token: String,
    pub quick: bool,
    /// A private copy of the release `netvlan` binary.
    pub netvlan: PathBuf,
    /// A private copy of the eBPF object embedded in that binary.
    pub object: PathBuf,
}

impl Ctx {
    /// The quick or the full run's value of a knob.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// A scenario family: its progress steps and its run.
struct Scenario {
    key: &'static str,
    steps: fn(&Ctx) -> u64,
    run: fn(&Ctx, &ProgressBar) -> Result<Family>,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario {
        key: "xdp",
        steps: xdp::rounds,
        run: xdp::run,
    },
    Scenario {
        key: "traffic",
        steps: traffic::steps,
        run: traffic::run,
    },
    Scenario {
        key: "control",
        steps: control::steps,
        run: control::run,
    },
    Scenario {
        key: "observe",
        steps: observe::steps,
        run: observe::run,
    },
    Scenario {
        key: "flood",
        steps: flood::steps,
        run: flood::run,
    },
];

pub fn bench(args: &BenchArgs) -> Result<()> {
    if !tools::is_root() {
        bail!("the benchmarks need root (namespaces, XDP, BPF_PROG_TEST_RUN); run `cargo xtask bench` as root");
    }
    tools::ensure_debian_packages(PACKAGES)?;
    let started = Instant::now();
    let (date, started_at) = machine::utc_stamp(SystemTime::now());
    let token = sandbox::run_token();
    progress::catch_interrupts();

    let work = OwnedDir::temp(&token, "work")?;
    let (netvlan, object) = build_netvlan(work.path())?;
    let ctx = Ctx {
        token: token.clone(),
        quick: args.quick,
        netvlan,
        object,
    };
    println!(
        "bench: {} run, token {token} (namespaces and bpffs directories nvb-{token}-*)",
        if args.quick { "quick" } else { "full" }
    );

    let mut families = Vec::new();
    for scenario in SCENARIOS
        .iter()
        .filter(|s| args.only.as_deref().is_none_or(|o| o == s.key))
    {
        let bar = progress::bar(scenario.key, (scenario.steps)(&ctx));
        let t = Instant::now();
        match (scenario.run)(&ctx, &bar) {
            Ok(family) => {
                bar.finish_with_message("done");
                println!(
                    "bench: {}: done in {:.0} s",
                    scenario.key,
                    t.elapsed().as_secs_f64()
                );
                families.push(family);
            }
            Err(e) => {
                bar.abandon_with_message("failed");
                return Err(e.context(format!("benchmark `{}` failed", scenario.key)));
            }
        }
    }
    drop(work);
    let leaks = sandbox::leftovers(&token);
    if !leaks.is_empty() {
        bail!("the bench left these behind: {}", leaks.join(", "));
    }

    let report = Report {
        schema: model::SCHEMA,
        date: date.clone(),
        started_at,
        mode: if args.quick { "quick" } else { "full" },
        only: args.only.clone(),
        wall_seconds: started.elapsed().as_secs_f64(),
        machine: machine::Machine::probe(),
        families,
        unavailable: vec![Unavailable::new(
            "host access",
            "not available yet (netvlan has no host-access path)",
        )],
    };
    write_outputs(&report, args, &date)?;
    print!("{}", report::summary(&report));
    println!(
        "bench: finished in {:.1} min",
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

/// Writes the JSON, the charts and the Markdown report.
fn write_outputs(report: &Report, args: &BenchArgs, date: &str) -> Result<()> {
    let root = workspace_root();
    let official = !args.quick && args.only.is_none();
    let (out_dir, md_path) = if official {
        (root.join("bench"), root.join("BENCHMARKS.md"))
    } else {
        let dir = root.join("target/bench");
        (dir.clone(), dir.join("BENCHMARKS.md"))
    };
    let json_path = match &args.json {
        Some(p) => p.clone(),
        None if official => out_dir.join("results").join(format!("{date}.json")),
        None => out_dir.join(format!(
            "{date}-{}.json",
            args.only
                .as_deref()
                .unwrap_or(if args.quick { "quick" } else { "full" })
        )),
    };
    let charts = out_dir.join("charts");
    for dir in [json_path.parent(), Some(charts.as_path())]
        .into_iter()
        .flatten()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut json = serde_json::to_string_pretty(report)?;
    json.push('\n');
    std::fs::write(&json_path, json).with_context(|| format!("writing {}", json_path.display()))?;
    for family in &report.families {
        let path = charts.join(format!("{}.svg", family.key));
        chart::render(family, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    let md_dir = md_path.parent().unwrap_or(Path::new("."));
    let md = report::markdown(
        report,
        &relative(&json_path, md_dir),
        &relative(&charts, md_dir),
    );
    std::fs::write(&md_path, md).with_context(|| format!("writing {}", md_path.display()))?;
    println!("bench: results {}", json_path.display());
    println!("bench: report  {}", md_path.display());
    println!("bench: charts  {}", charts.display());
    Ok(())
}

/// `path` relative to `base` when it lies below it (links in the report).
fn relative(path: &Path, base: &Path) -> String {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    absolute
        .strip_prefix(base)
        .unwrap_or(&absolute)
        .display()
        .to_string()
}

/// Builds the release `netvlan` (installing rust-src and bpf-linker if
/// needed) and copies the binary and the eBPF object embedded in it into
/// `work`: another build during the run cannot change what is measured.
fn build_netvlan(work: &Path) -> Result<(PathBuf, PathBuf)> {
    println!("bench: building netvlan (release)");
    let mut cargo = crate::cargo()?;
    cargo
        .args([
            "build",
            "--release",
            "--package",
            "netvlan-userspace",
            "--bin",
            "netvlan",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped());
    let mut child = cargo.spawn().context("starting cargo build")?;
    let mut binary = None;
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
    let object = out_dir
        .context("cargo reported no build-script output for netvlan-userspace")?
        .join("netvlan.bpf.o");
    let bin_copy = work.join("netvlan");
    let obj_copy = work.join("netvlan.bpf.o");
    std::fs::copy(&binary, &bin_copy).with_context(|| format!("copying {}", binary.display()))?;
    std::fs::copy(&object, &obj_copy).with_context(|| format!("copying {}", object.display()))?;
    Ok((bin_copy, obj_copy))
}
