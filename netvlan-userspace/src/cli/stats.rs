//! `netvlan stats`: the counters report of [`crate::control::report`],
//! rendered once, or live with `--watch` (rates from the deltas between
//! two reports).

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    path::Path,
    time::{Duration, Instant},
};

use super::error::{CliError, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::{
    output::{out, print_json, print_table},
    Output,
};
use crate::{
    control,
    daemon::client::Client,
    datapath::{counters::StatsReport, Datapath},
};

#[derive(Args)]
pub(super) struct StatsArgs {
    /// Only this interface.
    #[arg(long)]
    iface: Option<String>,
    /// A live table of endpoints and VLANs: rates over each interval and
    /// totals. With --json, one JSON object a line per interval.
    #[arg(long)]
    watch: bool,
    /// Seconds between two reports of --watch (at least 0.1).
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_interval, requires = "watch")]
    interval: Duration,
    /// What --watch sorts by, largest first: packets/s (pps), bits/s
    /// (bps) or drops/s (drops).
    #[arg(long, value_enum, default_value_t = SortKey::Pps, requires = "watch")]
    sort: SortKey,
    /// Stop --watch after N intervals (default: until interrupted).
    #[arg(long, value_name = "N", requires = "watch")]
    count: Option<u64>,
    #[command(flatten)]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SortKey {
    Pps,
    Bps,
    Drops,
}

impl SortKey {
    fn name(self) -> &'static str {
        match self {
            SortKey::Pps => "pps",
            SortKey::Bps => "bps",
            SortKey::Drops => "drops",
        }
    }
}

fn parse_interval(text: &str) -> std::result::Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.1..=86_400.0).contains(&seconds) {
        return Err(format!(
            "{text} s is out of range: the interval is 0.1 to 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The API path of the report for `iface` (or every interface).
fn api_path(iface: Option<&str>) -> String {
    match iface {
        Some(iface) => format!(
            "/v1/stats?iface={}",
            crate::daemon::client::encode_segment(iface)
        ),
        None => "/v1/stats".to_string(),
    }
}

/// `stats` (not --watch) answered by a running daemon, with the same
/// output; `false` when it cannot answer and the command runs here.
pub(super) async fn via_daemon(daemon: &Client, args: &StatsArgs) -> Result<bool> {
    if args.watch {
        return Ok(false);
    }
    let Some(answer) = daemon.get(&api_path(args.iface.as_deref())).await else {
        return Ok(false);
    };
    if !answer.status.is_success() {
        return Ok(false);
    }
    if args.output.json {
        // The daemon renders it exactly as print_json does.
        out!("{}", answer.body);
        return Ok(true);
    }
    match serde_json::from_str::<StatsReport>(&answer.body) {
        Ok(report) => {
            print_report(&report);
            Ok(true)
        }
        Err(e) => {
            tracing::debug!("the daemon's report does not parse ({e}); reading the maps here");
            Ok(false)
        }
    }
}

/// The report from the daemon when it answers, else read here.
async fn fetch(
    datapath: &Datapath,
    state_dir: &Path,
    daemon: Option<&Client>,
    iface: Option<&str>,
) -> Result<StatsReport> {
    if let Some(daemon) = daemon {
        if let Some(answer) = daemon.get(&api_path(iface)).await {
            if answer.status.is_success() {
                if let Ok(report) = serde_json::from_str(&answer.body) {
                    return Ok(report);
                }
            }
        }
    }
    Ok(control::report::report(datapath, state_dir, iface).await?)
}

pub(super) async fn run(
    datapath: &Datapath,
    state_dir: &Path,
    daemon: Option<&Client>,
    args: StatsArgs,
) -> Result<()> {
    if args.watch {
        return watch(datapath, state_dir, daemon, &args).await;
    }
    let report = fetch(datapath, state_dir, daemon, args.iface.as_deref()).await?;
    if args.output.json {
        return print_json(&report);
    }
    print_report(&report);
    Ok(())
}

/// Counters of one row of `--watch`: totals, or what one interval added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
struct Totals {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    /// Endpoints: frames anti-spoofing dropped; VLANs: frames policy dropped.
    drops: u64,
}

impl Totals {
    fn minus(self, earlier: Totals) -> Totals {
        Totals {
            rx_packets: self.rx_packets.saturating_sub(earlier.rx_packets),
            rx_bytes: self.rx_bytes.saturating_sub(earlier.rx_bytes),
            tx_packets: self.tx_packets.saturating_sub(earlier.tx_packets),
            tx_bytes: self.tx_bytes.saturating_sub(earlier.tx_bytes),
            drops: self.drops.saturating_sub(earlier.drops),
        }
    }
}

/// Who a row is: an endpoint (network, sandbox) or a VLAN (parent, vid).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RowKey {
    Endpoint { network: String, endpoint: String },
    Vlan { parent: String, vlan: u16 },
}

/// The totals of every endpoint and VLAN in a report.
fn totals(report: &StatsReport) -> BTreeMap<RowKey, Totals> {
    let mut rows = BTreeMap::new();
    for e in &report.endpoints {
        rows.insert(
            RowKey::Endpoint {
                network: e.network.clone(),
                endpoint: e.endpoint.clone(),
            },
            Totals {
                rx_packets: e.egress.rx_packets,
                rx_bytes: e.egress.rx_bytes,
                tx_packets: e.egress.tx_packets,
                tx_bytes: e.egress.tx_bytes,
                drops: e.egress.spoofed_packets,
            },
        );
    }
    for iface in &report.interfaces {
        let key = |vlan| RowKey::Vlan {
            parent: iface.ifname.clone(),
            vlan,
        };
        for v in &iface.vlans {
            let row: &mut Totals = rows.entry(key(v.vlan)).or_default();
            row.rx_packets = v.counters.rx_packets;
            row.rx_bytes = v.counters.rx_bytes;
        }
        for d in &iface.vlan_drops {
            rows.entry(key(d.vlan)).or_default().drops += d.counters.rx_packets;
        }
    }
    rows
}

/// One row of `--watch`, as printed and as a JSON line's element.
#[derive(Debug, Serialize)]
struct WatchRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vlan: Option<u16>,
    /// Packets per second over the interval, received and sent.
    pps: f64,
    /// Bits per second over the interval, received and sent.
    bps: f64,
    /// Drops per second over the interval.
    drops_per_s: f64,
    /// What the interval added.
    delta: Totals,
    total: Totals,
}

impl WatchRow {
    fn sort_value(&self, key: SortKey) -> f64 {
        match key {
            SortKey::Pps => self.pps,
            SortKey::Bps => self.bps,
            SortKey::Drops => self.drops_per_s,
        }
    }
}

/// One interval of `--watch`.
#[derive(Debug, Serialize)]
struct WatchLine {
    /// The interval as measured between the two reports, in seconds.
    interval_s: f64,
    sort: &'static str,
    endpoints: Vec<WatchRow>,
    vlans: Vec<WatchRow>,
}

/// The rows of one interval: `now` against `before`, `seconds` apart,
/// each kind sorted by `sort` (largest first, then by name).
fn watch_line(
    before: &BTreeMap<RowKey, Totals>,
    now: &BTreeMap<RowKey, Totals>,
    seconds: f64,
    sort: SortKey,
) -> WatchLine {
    let per_second = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    let (mut endpoints, mut vlans) = (Vec::new(), Vec::new());
    for (key, total) in now {
        let delta = total.minus(before.get(key).copied().unwrap_or_default());
        let mut row = WatchRow {
            network: None,
            endpoint: None,
            parent: None,
            vlan: None,
            pps: per_second(delta.rx_packets + delta.tx_packets),
            bps: per_second((delta.rx_bytes + delta.tx_bytes) * 8),
            drops_per_s: per_second(delta.drops),
            delta,
            total: *total,
        };
        match key {
            RowKey::Endpoint { network, endpoint } => {
                row.network = Some(network.clone());
                row.endpoint = Some(endpoint.clone());
                endpoints.push(row);
            }
            RowKey::Vlan { parent, vlan } => {
                row.parent = Some(parent.clone());
                row.vlan = Some(*vlan);
                vlans.push(row);
            }
        }
    }
    // Stable: rows of equal value keep their name order.
    for rows in [&mut endpoints, &mut vlans] {
        rows.sort_by(|a, b| b.sort_value(sort).total_cmp(&a.sort_value(sort)));
    }
    WatchLine {
        interval_s: seconds,
        sort: sort.name(),
        endpoints,
        vlans,
    }
}

async fn watch(
    datapath: &Datapath,
    state_dir: &Path,
    daemon: Option<&Client>,
    args: &StatsArgs,
) -> Result<()> {
    let iface = args.iface.as_deref();
    let mut before = totals(&fetch(datapath, state_dir, daemon, iface).await?);
    let mut taken = Instant::now();
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let clear = !args.output.json && std::io::stdout().is_terminal();
    let mut shown = 0u64;
    while args.count.is_none_or(|count| shown < count) {
        ticks.tick().await;
        let now = totals(&fetch(datapath, state_dir, daemon, iface).await?);
        let at = Instant::now();
        let line = watch_line(
            &before,
            &now,
            at.duration_since(taken).as_secs_f64(),
            args.sort,
        );
        (before, taken) = (now, at);
        shown += 1;
        if args.output.json {
            out!("{}", serde_json::to_string(&line).map_err(CliError::Json)?);
            continue;
        }
        if clear {
            // Home and clear: the table redrawn in place.
            out!("\x1b[H\x1b[2J");
        } else if shown > 1 {
            out!();
        }
        print_watch(&line);
    }
    Ok(())
}

fn print_watch(line: &WatchLine) {
    out!(
        "every {:.1} s, sorted by {} (rates over the last interval, then totals)",
        line.interval_s,
        line.sort
    );
    let rates = |r: &WatchRow| {
        [
            format!("{:.1}", r.pps),
            format!("{:.0}", r.bps),
            format!("{:.1}", r.drops_per_s),
            r.total.rx_packets.to_string(),
            r.total.rx_bytes.to_string(),
            r.total.tx_packets.to_string(),
            r.total.tx_bytes.to_string(),
            r.total.drops.to_string(),
        ]
    };
    let numbers = [
        "PKT/S", "BIT/S", "DROP/S", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES", "DROPS",
    ];
    if line.endpoints.is_empty() {
        out!("no endpoints");
    } else {
        let rows: Vec<Vec<String>> = line
            .endpoints
            .iter()
            .map(|r| {
                [
                    r.endpoint.clone().unwrap_or_default(),
                    r.network.clone().unwrap_or_default(),
                ]
                .into_iter()
                .chain(rates(r))
                .collect()
            })
            .collect();
        let header: Vec<&str> = ["ENDPOINT", "NETWORK"].into_iter().chain(numbers).collect();
        print_table("", &header, &rows, &[2, 3, 4, 5, 6, 7, 8, 9]);
    }
    out!();
    if line.vlans.is_empty() {
        out!("no VLAN traffic");
    } else {
        let rows: Vec<Vec<String>> = line
            .vlans
            .iter()
            .map(|r| {
                [
                    r.parent.clone().unwrap_or_default(),
                    vlan_label(r.vlan.unwrap_or_default()),
                ]
                .into_iter()
                .chain(rates(r))
                .collect()
            })
            .collect();
        let header: Vec<&str> = ["PARENT", "VLAN"].into_iter().chain(numbers).collect();
        print_table("", &header, &rows, &[2, 3, 4, 5, 6, 7, 8, 9]);
    }
}

/// The table of one report (what `stats` prints without --json).
fn print_report(report: &StatsReport) {
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
}

fn vlan_label(vlan: u16) -> String {
    if vlan == 0 {
        "untagged".to_string()
    } else {
        vlan.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(name: &str) -> RowKey {
        RowKey::Endpoint {
            network: "lan".into(),
            endpoint: name.into(),
        }
    }

    fn totals(rx_packets: u64, rx_bytes: u64, drops: u64) -> Totals {
        Totals {
            rx_packets,
            rx_bytes,
            drops,
            ..Totals::default()
        }
    }

    /// `many` sends more packets, `big` more bytes, `bad` more drops; the
    /// rates are the deltas over the two seconds between the reports.
    #[test]
    fn rates_come_from_deltas_and_each_key_sorts_largest_first() {
        let before = BTreeMap::from([
            (endpoint("many"), totals(1000, 64_000, 0)),
            (endpoint("big"), totals(10, 10_000, 0)),
            (endpoint("bad"), totals(0, 0, 0)),
        ]);
        let now = BTreeMap::from([
            (endpoint("many"), totals(1200, 76_800, 0)),
            (endpoint("big"), totals(60, 60_000, 2)),
            (endpoint("bad"), totals(20, 1_280, 20)),
            // New since the last report: all of it is this interval's.
            (endpoint("new"), totals(4, 256, 0)),
        ]);
        let order = |sort| -> Vec<String> {
            watch_line(&before, &now, 2.0, sort)
                .endpoints
                .into_iter()
                .map(|r| r.endpoint.unwrap())
                .collect()
        };
        assert_eq!(order(SortKey::Pps), ["many", "big", "bad", "new"]);
        assert_eq!(order(SortKey::Bps), ["big", "many", "bad", "new"]);
        assert_eq!(order(SortKey::Drops), ["bad", "big", "many", "new"]);
        let line = watch_line(&before, &now, 2.0, SortKey::Pps);
        let many = &line.endpoints[0];
        assert_eq!(many.delta, totals(200, 12_800, 0));
        assert_eq!(many.total, totals(1200, 76_800, 0));
        assert_eq!(
            (many.pps, many.bps, many.drops_per_s),
            (100.0, 51_200.0, 0.0)
        );
        let new = &line.endpoints[3];
        assert_eq!((new.delta, new.pps), (totals(4, 256, 0), 2.0));
    }

    #[test]
    fn a_report_read_back_from_the_daemons_json_is_the_same_report() {
        let report: StatsReport = serde_json::from_value(serde_json::json!({
            "interfaces": [{
                "ifname": "eth0", "ifindex": 2, "mode": "native", "prog_id": 7,
                "frames": { "rx_packets": 3, "rx_bytes": 192 },
                "malformed": { "rx_packets": 0, "rx_bytes": 0 },
                "vlans": [], "macs": [],
                "anomalies": { "runt": { "rx_packets": 0, "rx_bytes": 0 } },
                "drops": { "unknown_dst": { "rx_packets": 1, "rx_bytes": 64 } },
                "vlan_drops": [{ "vlan": 0, "reason": "unknown_dst", "rx_packets": 1, "rx_bytes": 64 }],
                "learned_macs": 0, "mac_guards": []
            }]
        }))
        .unwrap();
        let text = serde_json::to_string_pretty(&report).unwrap();
        let again: StatsReport = serde_json::from_str(&text).unwrap();
        assert_eq!(again, report);
        assert_eq!(report.interfaces[0].vlan_drops[0].reason, "unknown_dst");
        let unknown = serde_json::from_str::<StatsReport>(&text.replace("unknown_dst", "bogus"));
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown counter name \"bogus\""));
    }
}
