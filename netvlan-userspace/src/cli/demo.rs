//! `netvlan demo up|down|status`.

use std::path::Path;

use super::error::Result;
use clap::Subcommand;

use super::{
    output::{err, out, print_json, print_table},
    Output,
};
use crate::demo::{Demo, DemoReport};

#[derive(Subcommand, Clone, Copy)]
pub(super) enum DemoAction {
    /// Build the lab, send a little traffic, show what was counted.
    Up,
    /// Remove the lab completely.
    Down,
    /// Show the lab and its counters.
    Status,
}

pub(super) async fn run(
    action: DemoAction,
    prefix: &str,
    state_dir: &Path,
    bpf_dir: &Path,
    output: Output,
) -> Result<()> {
    let demo = Demo::new(prefix, state_dir, bpf_dir);
    match action {
        DemoAction::Down => {
            demo.down().await?;
            if output.json {
                print_json(&serde_json::json!({ "removed": prefix }))
            } else {
                out!("demo removed");
                Ok(())
            }
        }
        DemoAction::Up | DemoAction::Status => {
            let report = if matches!(action, DemoAction::Up) {
                err!("building the demo lab in namespaces {prefix}-* ...");
                demo.up().await?
            } else {
                demo.status().await?
            };
            if output.json {
                print_json(&report)
            } else {
                print_demo(&report);
                Ok(())
            }
        }
    }
}

fn print_demo(report: &DemoReport) {
    out!(
        "netvlan demo: netvlan runs in namespace {}",
        report.host_namespace
    );
    if !report.vlan_network {
        out!("(this kernel has no 802.1Q support: the VLAN network is left out)");
    }
    out!();
    // What the parent's XDP program counted for each container's MAC:
    // frames that came in from the LAN, not what the container sent.
    let rows: Vec<Vec<String>> = report
        .endpoints
        .iter()
        .map(|e| {
            vec![
                e.sandbox.clone(),
                e.network.clone(),
                e.ipv4.clone(),
                e.mac.clone(),
                e.rx_packets.to_string(),
                e.rx_bytes.to_string(),
            ]
        })
        .collect();
    print_table(
        "",
        &[
            "CONTAINER",
            "NETWORK",
            "IPV4",
            "MAC",
            "FRAMES FROM LAN",
            "BYTES FROM LAN",
        ],
        &rows,
        &[4, 5],
    );
    out!();
    out!("Frames on the parent link by VLAN:");
    for v in &report.vlans {
        let label = if v.vlan == 0 {
            "untagged".to_string()
        } else {
            format!("VLAN {}", v.vlan)
        };
        out!(
            "  {:<10} {:>6} frames {:>8} bytes",
            label,
            v.counters.rx_packets,
            v.counters.rx_bytes
        );
    }
    out!();
    out!("Try next:");
    for cmd in &report.next {
        out!("  {cmd}");
    }
}
