//! `netvlan stats`: the counters report of [`crate::control::report`], rendered.

use std::path::Path;

use super::error::Result;
use clap::Args;

use super::{
    output::{out, print_json, print_table},
    Output,
};
use crate::{control, datapath::Datapath};

#[derive(Args)]
pub(super) struct StatsArgs {
    /// Only this interface.
    #[arg(long)]
    iface: Option<String>,
    #[command(flatten)]
    output: Output,
}

pub(super) async fn run(datapath: &Datapath, state_dir: &Path, args: StatsArgs) -> Result<()> {
    let report = control::report::report(datapath, state_dir, args.iface.as_deref()).await?;
    if args.output.json {
        return print_json(&report);
    }
    if !report.endpoints.is_empty() {
        // Counted on the endpoint's own link (TC): what reached the
        // container and what it sent, and the frames anti-spoofing caught.
        let rows: Vec<Vec<String>> = report
            .endpoints
            .iter()
            .map(|e| {
                vec![
                    e.endpoint.clone(),
                    e.network.clone(),
                    e.egress.rx_packets.to_string(),
                    e.egress.rx_bytes.to_string(),
                    e.egress.tx_packets.to_string(),
                    e.egress.tx_bytes.to_string(),
                    e.egress.spoofed_packets.to_string(),
                ]
            })
            .collect();
        print_table(
            "",
            &[
                "ENDPOINT",
                "NETWORK",
                "RECEIVED PKTS",
                "RECEIVED BYTES",
                "SENT PKTS",
                "SENT BYTES",
                "SPOOFED PKTS",
            ],
            &rows,
            &[2, 3, 4, 5, 6],
        );
        out!();
    }
    if report.interfaces.is_empty() {
        out!("no interface has netvlan's datapath attached; try `netvlan datapath attach IFACE`");
    }
    for iface in &report.interfaces {
        out!(
            "{} (ifindex {}, {} XDP, program {}): {} frames, {} bytes",
            iface.ifname,
            iface.ifindex,
            iface.mode,
            iface.prog_id,
            iface.frames.rx_packets,
            iface.frames.rx_bytes
        );
        out!(
            "  {:<20} {:>12} {:>14} {:>14} {:>12}",
            "VLAN",
            "PACKETS",
            "BYTES",
            "UNREGISTERED",
            "FLOOD"
        );
        for v in &iface.vlans {
            out!(
                "  {:<20} {:>12} {:>14} {:>14} {:>12}",
                vlan_label(v.vlan),
                v.counters.rx_packets,
                v.counters.rx_bytes,
                v.unregistered.rx_packets,
                v.flood.rx_packets
            );
        }
        out!(
            "  {:<20} {:>8} {:>12} {:>14} {:>12}",
            "DESTINATION MAC",
            "VLAN",
            "PACKETS",
            "BYTES",
            "DROPPED"
        );
        for m in &iface.macs {
            let owner = match (&m.network, &m.endpoint) {
                (Some(n), Some(e)) => format!("  {e} on {n}"),
                _ if m.host => "  host".to_string(),
                _ => String::new(),
            };
            out!(
                "  {:<20} {:>8} {:>12} {:>14} {:>12}{owner}",
                m.mac.to_string(),
                vlan_label(m.vlan),
                m.counters.rx_packets,
                m.counters.rx_bytes,
                m.dropped.rx_packets
            );
        }
        let anomalies: Vec<_> = iface
            .anomalies
            .iter()
            .filter(|(_, c)| c.rx_packets > 0)
            .collect();
        if anomalies.is_empty() {
            out!("  no anomalies");
        } else {
            out!(
                "  {:<20} {:>12} {:>14}  ({} malformed frames)",
                "ANOMALY",
                "PACKETS",
                "BYTES",
                iface.malformed.rx_packets
            );
            for (name, c) in anomalies {
                out!("  {:<20} {:>12} {:>14}", name, c.rx_packets, c.rx_bytes);
            }
        }
        let drops: Vec<_> = iface
            .drops
            .iter()
            .filter(|(_, c)| c.rx_packets > 0)
            .collect();
        if drops.is_empty() {
            out!("  nothing dropped by policy");
        } else {
            out!(
                "  {:<20} {:>12} {:>14}",
                "DROPPED (POLICY)",
                "PACKETS",
                "BYTES"
            );
            for (reason, c) in drops {
                out!("  {:<20} {:>12} {:>14}", reason, c.rx_packets, c.rx_bytes);
            }
            for d in &iface.vlan_drops {
                let label = format!("  vlan {} {}", d.vlan, d.reason);
                out!(
                    "  {:<20} {:>12} {:>14}",
                    label,
                    d.counters.rx_packets,
                    d.counters.rx_bytes
                );
            }
        }
        if !iface.mac_guards.is_empty() {
            out!(
                "  {:<20} {:>12} {:>14} {:>12}",
                "MAC GUARD (VLAN)",
                "LEARNED/MAX",
                "OVER LIMIT",
                "ACTION"
            );
            for g in &iface.mac_guards {
                let label = vlan_label(g.vlan);
                let limit = g.limit.map_or("off".to_string(), |l| l.to_string());
                let mut line = format!(
                    "  {:<20} {:>12} {:>14} {:>12}",
                    label,
                    format!("{}/{limit}", g.learned),
                    g.over_limit_packets,
                    g.action
                );
                if let Some(event) = &g.last_over_limit {
                    line.push_str(&format!("  last: {} {}s ago", event.mac, event.seconds_ago));
                }
                out!("{line}");
            }
        }
    }
    Ok(())
}

fn vlan_label(vlan: u16) -> String {
    if vlan == 0 {
        "untagged".to_string()
    } else {
        vlan.to_string()
    }
}
