//! iperf3 and sockperf, the traffic families' peers: their servers in a
//! namespace, one client run of each, and what their reports say.

use std::{process::Command, time::Duration};

use anyhow::{bail, Context, Result};

use super::sandbox::{self, wait_for, Netns, Process};

pub const IPERF_PORT: &str = "5201";
pub const SOCKPERF_PORT: &str = "11111";

/// An iperf3 and a sockperf server on `ip` in `ns`, returned once both
/// listen (a client started earlier would measure a refused connection).
pub fn start_servers(ns: &Netns, ip: &str) -> Result<[Process; 2]> {
    let mut iperf = Process::spawn(
        ns.command("iperf3")
            .args(["-s", "-B", ip, "-p", IPERF_PORT]),
        "iperf3 server",
    )?;
    let mut sockperf = Process::spawn(
        ns.command("sockperf")
            .args(["server", "-i", ip, "-p", SOCKPERF_PORT]),
        "sockperf server",
    )?;
    for (proto, port) in [("-Hltn", IPERF_PORT), ("-Hlun", SOCKPERF_PORT)] {
        let filter = format!("sport = :{port}");
        let up = wait_for(Duration::from_secs(10), || {
            let out = ns.command("ss").args([proto, &filter]).output()?;
            Ok((!out.stdout.is_empty()).then_some(()))
        })?;
        if up.is_none() {
            iperf.check_running()?;
            sockperf.check_running()?;
            bail!("no server listens on {ip}:{port} in {}", ns.name());
        }
    }
    Ok([iperf, sockperf])
}

/// An iperf3 client run of `secs` from `client` to the server on `ip`;
/// `reverse`: the server sends (`-R`).
pub fn iperf3_command(client: &Netns, ip: &str, secs: u64, reverse: bool) -> Command {
    let mut cmd = client.command("iperf3");
    cmd.args(["-c", ip, "-p", IPERF_PORT, "-J", "-t"])
        .arg(secs.to_string());
    if reverse {
        cmd.arg("-R");
    }
    cmd
}

/// Gbit/s received, from an iperf3 `-J` report of a run on `what`.
pub fn iperf3_gbps(stdout: &[u8], what: &str) -> Result<f64> {
    let report: serde_json::Value =
        serde_json::from_slice(stdout).context("iperf3 -J printed no JSON")?;
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 reported no received rate: {}", report["error"]))?;
    if bps <= 0.0 {
        bail!("iperf3 received nothing on {what}");
    }
    Ok(bps / 1e9)
}

/// (median, p99) one-way latency in µs of one sockperf ping-pong run of
/// `secs` from `client` to the server on `ip`.
pub fn sockperf(client: &Netns, ip: &str, secs: u64) -> Result<(f64, f64)> {
    let out = sandbox::run(
        client
            .command("sockperf")
            .args(["ping-pong", "-i", ip, "-p", SOCKPERF_PORT, "-t"])
            .arg(secs.to_string()),
    )?;
    // sockperf prints part of its report on stderr.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pick = |p: &str| {
        text.lines()
            .find(|l| l.contains(&format!("percentile {p} =")))
            .and_then(|l| l.rsplit('=').next())
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    match (pick("50.000"), pick("99.000")) {
        (Some(p50), Some(p99)) => Ok((p50, p99)),
        _ => bail!("sockperf printed no percentiles:\n{text}"),
    }
}
