//! `netvlan-bench` (run by `cargo xtask bench`): netvlan side by side with
//! the peers users would pick, every figure a ratio against a peer
//! measured in the same run. It lives in the tests crate so that it links
//! the `netvlan` library and shares the integration tests' lab; xtask
//! builds the eBPF toolchain and the release binaries it measures.
//!
//! Each scenario builds what it measures in namespaces of its own (see
//! [`sandbox`]), repeats every measurement, and hands back a [`Family`] of
//! measurements and ratios. A full run writes `bench/results/<date>.json`,
//! `BENCHMARKS.md` and `bench/charts/<family>.svg`; a `--quick` or `--only`
//! run writes the same under `target/bench/`, so a smoke run never replaces
//! the committed evidence.

mod chart;
mod control;
mod ctx;
mod flood;
mod frames;
mod host_access;
mod livegen;
mod machine;
pub mod memory;
mod metrics;
mod model;
mod netvlan;
mod observe;
mod perf_tools;
mod policies;
mod progress;
mod report;
mod sandbox;
mod stats;
mod timing;
mod trace;
mod traffic;
mod xdp;

use std::{
    path::{Path, PathBuf},
    time::{Instant, SystemTime},
};

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use ctx::Ctx;
use machine::workspace_root;
use model::{Family, Report};
use sandbox::OwnedDir;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Smoke run (CI): fewer rounds, shorter runs, 50 endpoints instead of
    /// 1,000 (500 instead of 10,000 at scale); under 5 minutes. Writes
    /// under target/bench/.
    #[arg(long)]
    quick: bool,
    /// Only this scenario family. Writes under target/bench/.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["xdp", "traffic", "control", "observe", "flood", "trace", "host_access"]))]
    only: Option<String>,
    /// Write the results JSON here instead.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The release `netvlan` binary to measure (xtask builds it).
    #[arg(long, value_name = "FILE")]
    netvlan: PathBuf,
    /// The release `netvlan-cni` plugin from the same build (family
    /// `control` runs it beside the reference CNI plugin).
    #[arg(long, value_name = "FILE")]
    netvlan_cni: PathBuf,
    /// The eBPF object embedded in that binary (from its build).
    #[arg(long, value_name = "FILE")]
    object: PathBuf,
}

/// A scenario family: its progress steps and its run.
struct Scenario {
    key: &'static str,
    steps: fn(&Ctx) -> u64,
    run: fn(&Ctx, &ProgressBar) -> Result<Family>,
}

const SCENARIOS: [Scenario; 7] = [
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
    Scenario {
        key: "trace",
        steps: trace::steps,
        run: trace::run,
    },
    Scenario {
        key: "host_access",
        steps: host_access::steps,
        run: host_access::run,
    },
];

pub fn bench(args: &BenchArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks need root (namespaces, XDP, BPF_PROG_TEST_RUN); run `cargo xtask bench` as root");
    }
    let started = Instant::now();
    let (date, started_at) = machine::utc_stamp(SystemTime::now());
    let token = sandbox::run_token();
    progress::catch_interrupts();

    let work = OwnedDir::temp(&token, "work")?;
    let (netvlan, netvlan_cni, object) = copy_netvlan(args, work.path())?;
    let ctx = Ctx {
        token: token.clone(),
        quick: args.quick,
        netvlan,
        netvlan_cni,
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
        unavailable: Vec::new(),
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

/// Copies the binary and the eBPF object under test into `work`: another
/// build during the run cannot change what is measured.
fn copy_netvlan(args: &BenchArgs, work: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let bin_copy = work.join("netvlan");
    let cni_copy = work.join("netvlan-cni");
    let obj_copy = work.join("netvlan.bpf.o");
    for (from, to) in [
        (&args.netvlan, &bin_copy),
        (&args.netvlan_cni, &cni_copy),
        (&args.object, &obj_copy),
    ] {
        std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    }
    Ok((bin_copy, cni_copy, obj_copy))
}
