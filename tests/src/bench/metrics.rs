//! Part of family `observe`: what a Prometheus scrape of `netvlan daemon`
//! costs with 1,000 and 10,000 endpoints, against `netvlan stats --json`
//! on the same state: the time to read every counter, and the memory of
//! the reader (the daemon's peak RSS, the CLI's peak RSS).
//!
//! The endpoints are real: one sandbox namespace each (made with one
//! `ip -batch`, as the control family does) connected by sequential
//! `netvlan connect`s to one macvlan network on a veth parent, so every
//! endpoint has its link, its TC counters and its pins, and the store
//! holds them all.

use std::{path::Path, time::Duration};

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use super::{
    ctx::Ctx,
    model::{Basis, Better, Family, Measurement},
    netvlan::Netvlan,
    sandbox::{netns, try_veth_pair, wait_for, Netns, NetnsSet, OwnedDir, Process},
    timing::{peak_rss_kib, timed},
};

const SCRAPE: &str = "netvlan daemon /metrics";
const STATS: &str = "netvlan stats --json";
const READ: &str = "time to read every counter (goal for /metrics: <= 50 ms at 10,000 endpoints)";
const RSS: &str = "peak RSS of the reader (goal for the daemon: <= 30 MiB at 10,000 endpoints)";
const ADDR: &str = "127.0.0.1:9465";
const FULL_SCALES: [usize; 2] = [1_000, 10_000];

fn scales(ctx: &Ctx) -> [usize; 2] {
    ctx.pick([100, 300], FULL_SCALES)
}

fn rounds(ctx: &Ctx) -> usize {
    ctx.pick(5, 21)
}

pub fn steps(ctx: &Ctx) -> u64 {
    let [_, most] = scales(ctx);
    (most + 2 * rounds(ctx)) as u64
}

/// Adds the scrape rows, their method and their comparisons to `family`.
pub fn run(ctx: &Ctx, bar: &ProgressBar, family: &mut Family) -> Result<()> {
    let [small, large] = scales(ctx);
    let rounds = rounds(ctx);
    bar.set_message("metrics: creating the parent");
    let host = netns(&ctx.token, "om-host", false)?;
    try_veth_pair(&host, "lan0", &host, "lan0p")?;
    let netvlan = Netvlan::new(&ctx.netvlan, &host, &ctx.token, "om")?;
    netvlan.create_bench_network("10.200.0.0/16", "lan0", &[])?;
    let scratch = OwnedDir::temp(&ctx.token, "om-scratch")?;
    let run_dir = OwnedDir::temp(&ctx.token, "om-run")?;
    // Declared after netvlan: dropped first, the namespaces take the
    // endpoints' links with them before the pins go.
    bar.set_message(format!("metrics: creating {large} sandboxes"));
    let sandboxes = NetnsSet::new(&ctx.token, "om", large)?;

    let mut connected = 0;
    let mut fill_s = Vec::new();
    for scale in [small, large] {
        bar.set_message(format!("metrics: connecting up to {scale} endpoints"));
        let started = std::time::Instant::now();
        for sandbox in &sandboxes.names()[connected..scale] {
            netvlan.run(&["connect", "bench", sandbox])?;
            super::progress::tick(bar)?;
        }
        fill_s.push(started.elapsed().as_secs_f64());
        connected = scale;

        let mut daemon_cmd = netvlan.command(&["daemon", "--metrics-addr", ADDR]);
        daemon_cmd.env("NETVLAN_RUN_DIR", run_dir.path());
        let mut daemon = Process::spawn(&mut daemon_cmd, "netvlan daemon")?;
        let body = wait_for(Duration::from_secs(30), || {
            daemon.check_running()?;
            Ok(get(&host, "/metrics"))
        })?
        .context("netvlan daemon never answered /metrics")?;
        check_scale(&body, scale)?;

        let (mut scrape_ms, mut render_ms, mut stats_ms, mut stats_rss) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            bar.set_message(format!("metrics: {scale} endpoints, round {}", round + 1));
            scrape_ms.push(scrape_time_ms(&host)?);
            let body = get(&host, "/metrics").context("a scrape failed")?;
            render_ms.push(self_reported_ms(&body)?);
            let mut stats = netvlan.command(&["stats", "--json"]);
            stats_ms.push(timed(&mut stats, None)?.ms());
            stats_rss.push(peak_rss_kib(&stats, scratch.path())? as f64 / 1024.0);
            super::progress::tick(bar)?;
        }
        // The daemon's high-water mark after every scrape of the rounds.
        let daemon_rss = vm_hwm_mib(daemon.id())?;
        drop(daemon);

        let case = format!("{scale} endpoints");
        family.measurements.push(
            Measurement::new(
                SCRAPE,
                &case,
                READ,
                "ms",
                Better::Lower,
                scrape_ms,
                format!(
                    "{rounds} scrapes, curl's time_total for GET /metrics (request to last \
                     byte, on loopback), interleaved with the peer"
                ),
            )?
            .with_aux(
                "the daemon's own netvlan_scrape_duration_seconds",
                "ms",
                &render_ms,
            )?,
        );
        family.measurements.push(Measurement::new(
            STATS,
            &case,
            READ,
            "ms",
            Better::Lower,
            stats_ms,
            format!("{rounds} runs, wall time from spawn to exit"),
        )?);
        family.measurements.push(Measurement::new(
            SCRAPE,
            &case,
            RSS,
            "MiB",
            Better::Lower,
            vec![daemon_rss],
            format!(
                "VmHWM of the daemon (/proc/PID/status) after its {} scrapes",
                2 * rounds + 1
            ),
        )?);
        family.measurements.push(Measurement::new(
            STATS,
            &case,
            RSS,
            "MiB",
            Better::Lower,
            stats_rss,
            format!("{rounds} runs under /usr/bin/time -f %M"),
        )?);
        family.compare(SCRAPE, STATS, &case, READ, Basis::Medians)?;
        family.compare(SCRAPE, STATS, &case, RSS, Basis::Medians)?;
    }
    let quick = if ctx.quick {
        format!(" (quick run: {small} and {large} instead of the full run's 1,000 and 10,000)")
    } else {
        String::new()
    };
    family.method.push(format!(
        "/metrics: {small} and then {large} endpoints{quick}, one sandbox namespace each, \
         connected by sequential `netvlan connect` to one macvlan network on a veth parent \
         ({:.1} s and {:.1} s). At each scale a fresh `netvlan daemon --metrics-addr {ADDR}` \
         in the parent's namespace is checked to report every endpoint \
         (`netvlan_endpoints`), then {rounds} rounds each time one scrape (curl's \
         time_total) and one `netvlan stats --json` on the same state; the daemon's RSS is \
         its VmHWM after the rounds, the CLI's its ru_maxrss.",
        fill_s[0], fill_s[1]
    ));
    Ok(())
}

/// GET `path` from the daemon with curl in `ns`; the body, if it answered.
fn get(ns: &Netns, path: &str) -> Option<String> {
    let out = ns
        .command("curl")
        .args(["-sf", "--max-time", "30"])
        .arg(format!("http://{ADDR}{path}"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One scrape's time as curl measures it (connect to last byte), in ms.
fn scrape_time_ms(ns: &Netns) -> Result<f64> {
    let out = ns
        .command("curl")
        .args([
            "-sf",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{time_total}",
        ])
        .arg(format!("http://{ADDR}/metrics"))
        .output()
        .context("running curl")?;
    if !out.status.success() {
        bail!("curl GET /metrics failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let seconds: f64 = text
        .trim()
        .parse()
        .with_context(|| format!("curl printed {text:?} as time_total"))?;
    Ok(seconds * 1000.0)
}

/// The sample `name` (no labels) of an exposition.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn self_reported_ms(body: &str) -> Result<f64> {
    sample(body, "netvlan_scrape_duration_seconds")
        .map(|s| s * 1000.0)
        .context("the exposition has no netvlan_scrape_duration_seconds")
}

/// A scrape that missed endpoints (or failed to read something) must not
/// look fast.
fn check_scale(body: &str, scale: usize) -> Result<()> {
    let endpoints = sample(body, "netvlan_endpoints{network=\"bench\"}");
    let errors = sample(body, "netvlan_scrape_errors_total");
    let series = body
        .lines()
        .filter(|l| l.starts_with("netvlan_endpoint_rx_packets_total{"))
        .count();
    if endpoints != Some(scale as f64) || series != scale || errors != Some(0.0) {
        bail!(
            "/metrics reports {endpoints:?} endpoints, {series} endpoint series and \
             {errors:?} scrape errors; expected {scale}, {scale} and 0"
        );
    }
    Ok(())
}

/// VmHWM of `pid` in MiB.
fn vm_hwm_mib(pid: u32) -> Result<f64> {
    let path = Path::new("/proc").join(pid.to_string()).join("status");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{} has no VmHWM", path.display()))?;
    Ok(kib / 1024.0)
}
