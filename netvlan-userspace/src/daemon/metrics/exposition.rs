//! The metric names and labels, encoded from one [`Snapshot`] in the
//! Prometheus text format (0.0.4) by `prometheus-client`.
//!
//! A scrape is a [`Collector`]: every family's series are encoded straight
//! from the snapshot, in the order it holds them, with label values
//! borrowed from it. A registry of owned metrics would copy each series'
//! labels into a family's hash map and take its lock per series first,
//! which at 10,000 endpoints cost more than reading the maps did.
//! Counters are named without their `_total` suffix, which the encoder adds.

use std::{fmt, time::Instant};

use prometheus_client::{
    collector::Collector,
    encoding::{
        prometheus_text, DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeLabelValue,
        EncodeMetric, LabelValueEncoder,
    },
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};

use super::snapshot::Snapshot;
use crate::datapath::{counters::InterfaceStats, endpoint_hooks::EgressStats};

/// A label's value: text borrowed from the snapshot, or a number (VLAN and
/// program ids).
#[derive(Clone, Copy)]
enum Value<'a> {
    Text(&'a str),
    Number(u64),
}

impl EncodeLabelValue for Value<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        match self {
            Value::Text(text) => EncodeLabelValue::encode(text, encoder),
            Value::Number(n) => EncodeLabelValue::encode(n, encoder),
        }
    }
}

/// One series' labels, in the order they are written.
type Labels<'a, const N: usize> = [(&'static str, Value<'a>); N];

/// The per-endpoint counters: name, help, and the field they show.
type EndpointCounter = (&'static str, &'static str, fn(&EgressStats) -> u64);

const ENDPOINT_COUNTERS: [EndpointCounter; 5] = [
    (
        "netvlan_endpoint_rx_packets",
        "Frames an endpoint received, counted on its own link.",
        |s| s.rx_packets,
    ),
    (
        "netvlan_endpoint_rx_bytes",
        "Bytes an endpoint received, counted on its own link.",
        |s| s.rx_bytes,
    ),
    (
        "netvlan_endpoint_tx_packets",
        "Frames an endpoint sent (anti-spoofing drops not included).",
        |s| s.tx_packets,
    ),
    (
        "netvlan_endpoint_tx_bytes",
        "Bytes an endpoint sent (anti-spoofing drops not included).",
        |s| s.tx_bytes,
    ),
    (
        "netvlan_endpoint_spoofed_packets",
        "Frames from an endpoint that anti-spoofing dropped.",
        |s| s.spoofed_packets,
    ),
];

/// The exposition of `snapshot`; `errors` is the exporter's error total
/// so far, `started` when this scrape began.
pub fn encode(snapshot: Snapshot, errors: u64, started: Instant) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        snapshot,
        errors,
        started,
    }));
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry).expect("encoding into a String cannot fail");
    out
}

/// One scrape, encoded when the registry is.
#[derive(Debug)]
struct Scrape {
    snapshot: Snapshot,
    errors: u64,
    started: Instant,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        let s = &self.snapshot;
        let endpoints = || s.report.iter().flat_map(|r| &r.endpoints);
        let interfaces = || s.report.iter().flat_map(|r| &r.interfaces);

        for (name, help, field) in ENDPOINT_COUNTERS {
            let series = endpoints().map(|ep| {
                let labels = [
                    ("network", Value::Text(&ep.network)),
                    ("endpoint", Value::Text(&ep.endpoint)),
                ];
                (labels, field(&ep.egress))
            });
            counters(e, name, help, series)?;
        }

        let vlans =
            || interfaces().flat_map(|i| i.vlans.iter().map(move |v| (on_vlan(i, v.vlan), v)));
        counters(
            e,
            "netvlan_vlan_rx_packets",
            "Frames the parent's wire program saw on an outer VLAN (0 = untagged).",
            vlans().map(|(l, v)| (l, v.counters.rx_packets)),
        )?;
        counters(
            e,
            "netvlan_vlan_rx_bytes",
            "Bytes the parent's wire program saw on an outer VLAN (0 = untagged).",
            vlans().map(|(l, v)| (l, v.counters.rx_bytes)),
        )?;

        let drops = || {
            interfaces().flat_map(|i| {
                i.vlan_drops.iter().map(move |d| {
                    let [parent, vlan] = on_vlan(i, d.vlan);
                    ([parent, vlan, ("reason", Value::Text(d.reason))], d)
                })
            })
        };
        counters(
            e,
            "netvlan_drops",
            "Frames policy dropped on the parent's wire, by VLAN and reason.",
            drops().map(|(l, d)| (l, d.counters.rx_packets)),
        )?;
        counters(
            e,
            "netvlan_drop_bytes",
            "Bytes policy dropped on the parent's wire, by VLAN and reason.",
            drops().map(|(l, d)| (l, d.counters.rx_bytes)),
        )?;
        counters(
            e,
            "netvlan_anomalies",
            "Frames with an anomaly (runt, truncated tag, ...) on the parent's wire.",
            interfaces().flat_map(|i| {
                i.anomalies
                    .iter()
                    .map(move |(kind, c)| ([parent(i), ("kind", Value::Text(kind))], c.rx_packets))
            }),
        )?;

        let guards =
            || interfaces().flat_map(|i| i.mac_guards.iter().map(move |g| (on_vlan(i, g.vlan), g)));
        gauges(
            e,
            "netvlan_learned_macs",
            "Source MACs the MAC-sprawl guard of a VLAN has learned.",
            guards().map(|(l, g)| (l, g.learned)),
        )?;
        gauges(
            e,
            "netvlan_learned_macs_limit",
            "The MAC-sprawl guard's limit of a VLAN (max_macs), where it is on.",
            guards().filter_map(|(l, g)| Some((l, u64::from(g.limit?)))),
        )?;

        // (network, subnet, used, assignable), counted once for both families.
        let subnets: Vec<(&str, String, u64, u128)> = s
            .networks
            .iter()
            .flat_map(|network| {
                network.ipam.config().subnets().iter().map(move |subnet| {
                    let used = network
                        .ipam
                        .allocated()
                        .filter(|a| subnet.subnet.contains(*a))
                        .count();
                    let name = network.name.as_str();
                    (
                        name,
                        subnet.subnet.to_string(),
                        used as u64,
                        subnet.assignable(),
                    )
                })
            })
            .collect();
        let in_subnet = |network, subnet| {
            [
                ("network", Value::Text(network)),
                ("subnet", Value::Text(subnet)),
            ]
        };
        gauges(
            e,
            "netvlan_ipam_addresses_used",
            "Addresses of a subnet handed out to endpoints.",
            subnets
                .iter()
                .map(|(n, s, used, _)| (in_subnet(n, s), *used)),
        )?;
        gauges(
            e,
            "netvlan_ipam_addresses_capacity",
            "Addresses of a subnet endpoints can hold (less network, broadcast, gateway, aux-addresses).",
            // A float: an IPv6 subnet holds more than a u64 counts.
            subnets.iter().map(|(n, s, _, cap)| (in_subnet(n, s), *cap as f64)),
        )?;

        let fills = || {
            s.maps.iter().map(|fill| {
                let labels = [
                    ("parent", Value::Text(&fill.parent)),
                    ("map", Value::Text(fill.map)),
                ];
                (labels, fill)
            })
        };
        gauges(
            e,
            "netvlan_map_entries",
            "Entries in a datapath map of a parent that can fill.",
            fills().map(|(l, f)| (l, f.entries)),
        )?;
        gauges(
            e,
            "netvlan_map_max_entries",
            "Capacity of a datapath map of a parent.",
            fills().map(|(l, f)| (l, f.max_entries)),
        )?;
        counters(
            e,
            "netvlan_trace_lost_events",
            "Trace events a parent's wire program could not write (its ring was full).",
            s.trace_lost
                .iter()
                .map(|(parent, lost)| ([("parent", Value::Text(parent))], *lost)),
        )?;

        let datapaths: Vec<(&InterfaceStats, String, String)> = interfaces()
            .map(|i| (i, name_of(&i.mode.hook()), name_of(&i.mode)))
            .collect();
        gauges(
            e,
            "netvlan_datapath_info",
            "The wire program on a parent: its hook, mode and program id (always 1).",
            datapaths.iter().map(|(i, hook, mode)| {
                let labels = [
                    parent(i),
                    ("hook", Value::Text(hook)),
                    ("mode", Value::Text(mode)),
                    ("prog_id", Value::Number(u64::from(i.prog_id))),
                ];
                (labels, 1u64)
            }),
        )?;
        gauges(
            e,
            "netvlan_endpoints",
            "Endpoints connected to a network.",
            s.networks.iter().map(|network| {
                let labels = [("network", Value::Text(&network.name))];
                (labels, network.endpoints.len() as u64)
            }),
        )?;

        ConstCounter::new(self.errors).encode(e.encode_descriptor(
            "netvlan_scrape_errors",
            "Parts of scrapes the exporter could not read since the daemon started.",
            None,
            MetricType::Counter,
        )?)?;
        // Everything above is encoded by now: the duration counts it too.
        ConstGauge::new(self.started.elapsed().as_secs_f64()).encode(e.encode_descriptor(
            "netvlan_scrape_duration_seconds",
            "How long this scrape took to read the maps and the store and encode them.",
            None,
            MetricType::Gauge,
        )?)
    }
}

/// The labels of a parent.
fn parent(iface: &InterfaceStats) -> (&'static str, Value<'_>) {
    ("parent", Value::Text(&iface.ifname))
}

/// The labels of one VLAN of a parent.
fn on_vlan(iface: &InterfaceStats, vlan: u16) -> Labels<'_, 2> {
    [parent(iface), ("vlan", Value::Number(u64::from(vlan)))]
}

/// A counter family `name`: its descriptor, then one series per item.
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (L, u64)>,
) -> fmt::Result {
    let series = series.map(|(labels, value)| (labels, ConstCounter::new(value)));
    family(encoder, name, help, MetricType::Counter, series)
}

/// A gauge family `name`: its descriptor, then one series per item.
fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (L, V)>,
) -> fmt::Result {
    let series = series.map(|(labels, value)| (labels, ConstGauge::new(value)));
    family(encoder, name, help, MetricType::Gauge, series)
}

/// The family `name` of `metric_type`, written even when it has no series.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    series: impl Iterator<Item = (L, M)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in series {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The lowercase name serde gives a datapath enum (`xdp`, `native`, ...).
fn name_of(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        control::{fixture, Driver},
        daemon::metrics::snapshot::MapFill,
        ipam::Request,
    };

    /// A scrape of one wire with two endpoints, a VLAN drop, two guards
    /// (one switched off since) and a label value that needs escaping.
    fn snapshot() -> Snapshot {
        let report = serde_json::json!({
            "interfaces": [{
                "ifname": "lan0", "ifindex": 3, "mode": "tcx", "prog_id": 90588,
                "frames": {"rx_packets": 30, "rx_bytes": 3000},
                "malformed": {"rx_packets": 1, "rx_bytes": 60},
                "vlans": [
                    {"vlan": 0, "rx_packets": 8, "rx_bytes": 616,
                     "unregistered": {"rx_packets": 0, "rx_bytes": 0},
                     "flood": {"rx_packets": 8, "rx_bytes": 616}},
                    {"vlan": 20, "rx_packets": 21, "rx_bytes": 2324,
                     "unregistered": {"rx_packets": 2, "rx_bytes": 128},
                     "flood": {"rx_packets": 0, "rx_bytes": 0}}
                ],
                "macs": [],
                "anomalies": {
                    "excess_tags": {"rx_packets": 0, "rx_bytes": 0},
                    "malformed_l3": {"rx_packets": 0, "rx_bytes": 0},
                    "runt": {"rx_packets": 1, "rx_bytes": 60},
                    "short_header": {"rx_packets": 0, "rx_bytes": 0},
                    "truncated_tag": {"rx_packets": 0, "rx_bytes": 0}
                },
                "drops": {
                    "mac_denied": {"rx_packets": 0, "rx_bytes": 0},
                    "mac_limit": {"rx_packets": 3, "rx_bytes": 192},
                    "unknown_dst": {"rx_packets": 2, "rx_bytes": 128},
                    "vlan_not_allowed": {"rx_packets": 0, "rx_bytes": 0}
                },
                "vlan_drops": [
                    {"vlan": 20, "reason": "mac_limit", "rx_packets": 3, "rx_bytes": 192},
                    {"vlan": 20, "reason": "unknown_dst", "rx_packets": 2, "rx_bytes": 128}
                ],
                "learned_macs": 5,
                "mac_guards": [
                    {"vlan": 0, "limit": null, "action": "drop", "learned": 1,
                     "over_limit_packets": 0, "over_limit_bytes": 0},
                    {"vlan": 20, "limit": 4, "action": "drop", "learned": 4,
                     "over_limit_packets": 3, "over_limit_bytes": 192}
                ]
            }],
            "endpoints": [
                {"network": "lan", "endpoint": "web/\"blue\"", "ifname": "eth0",
                 "addresses": ["10.9.0.2"], "rx_packets": 1422, "rx_bytes": 90876,
                 "tx_packets": 11, "tx_bytes": 854, "spoofed_packets": 2, "spoofed_bytes": 140},
                {"network": "lan", "endpoint": "db", "ifname": "eth0",
                 "addresses": ["10.9.0.3"], "rx_packets": 0, "rx_bytes": 0,
                 "tx_packets": 0, "tx_bytes": 0, "spoofed_packets": 0, "spoofed_bytes": 0}
            ]
        });
        let mut lan = fixture::network("lan", Driver::Macvlan, "10.9.0.0/24", &[]);
        for (sandbox, mac, ip) in [
            ("web", "02:42:0a:09:00:02", "10.9.0.2"),
            ("db", "02:42:0a:09:00:03", "10.9.0.3"),
        ] {
            lan.ipam
                .allocate(Request::Exact(ip.parse().unwrap()))
                .unwrap();
            lan.endpoints.insert(
                sandbox.into(),
                fixture::endpoint(sandbox, mac, &format!("{ip}/24")),
            );
        }
        let empty = fixture::network("spare", Driver::Ipvlan, "10.8.0.0/24", &[]);
        Snapshot {
            report: Some(serde_json::from_value(report).unwrap()),
            networks: Arc::new(vec![lan, empty]),
            maps: vec![MapFill {
                parent: "lan0".into(),
                map: "DST_SLOTS",
                entries: 2,
                max_entries: 65536,
            }],
            trace_lost: vec![("lan0".into(), 7)],
            errors: 0,
        }
    }

    /// The exposition with the scrape's own duration (the one value that
    /// differs between runs) blanked.
    fn exposition(snapshot: Snapshot, errors: u64) -> String {
        encode(snapshot, errors, Instant::now())
            .lines()
            .map(
                |line| match line.strip_prefix("netvlan_scrape_duration_seconds ") {
                    Some(_) => "netvlan_scrape_duration_seconds <elapsed>".to_string(),
                    None => line.to_string(),
                },
            )
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_scrape_encodes_every_name_and_label_as_the_readme_lists_them() {
        let golden = include_str!("exposition.golden");
        let text = exposition(snapshot(), 3);
        if std::env::var_os("NETVLAN_WRITE_GOLDEN").is_some() {
            std::fs::write(
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/src/daemon/metrics/exposition.golden"
                ),
                format!("{text}\n"),
            )
            .unwrap();
        }
        assert_eq!(text, golden.trim_end());
    }
}
