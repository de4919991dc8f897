//! The metric names and labels, filled from one [`Snapshot`] and encoded
//! in the Prometheus text format (0.0.4). Counters are registered without
//! their `_total` suffix, which the encoder adds.

use std::{sync::atomic::AtomicU64, time::Instant};

use prometheus_client::{
    encoding::{prometheus_text, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::snapshot::Snapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    network: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VlanLabels {
    parent: String,
    vlan: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    parent: String,
    vlan: u16,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnomalyLabels {
    parent: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubnetLabels {
    network: String,
    subnet: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    parent: String,
    map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatapathLabels {
    parent: String,
    hook: String,
    mode: String,
    prog_id: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ParentLabels {
    parent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetworkLabels {
    network: String,
}

type Counters<L> = Family<L, Counter>;
type Gauges<L> = Family<L, Gauge<u64, AtomicU64>>;

/// Registers `metric` as `name` with `help` and hands it back to be filled.
fn add<M: prometheus_client::registry::Metric + Clone + Default>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// The exposition of `snapshot`; `errors` is the exporter's error total
/// so far, `started` when this scrape began.
pub fn encode(snapshot: &Snapshot, errors: u64, started: Instant) -> String {
    let mut r = Registry::default();

    let ep_rx_packets: Counters<EndpointLabels> = add(
        &mut r,
        "netvlan_endpoint_rx_packets",
        "Frames an endpoint received, counted on its own link",
    );
    let ep_rx_bytes: Counters<EndpointLabels> = add(
        &mut r,
        "netvlan_endpoint_rx_bytes",
        "Bytes an endpoint received, counted on its own link",
    );
    let ep_tx_packets: Counters<EndpointLabels> = add(
        &mut r,
        "netvlan_endpoint_tx_packets",
        "Frames an endpoint sent (anti-spoofing drops not included)",
    );
    let ep_tx_bytes: Counters<EndpointLabels> = add(
        &mut r,
        "netvlan_endpoint_tx_bytes",
        "Bytes an endpoint sent (anti-spoofing drops not included)",
    );
    let ep_spoofed: Counters<EndpointLabels> = add(
        &mut r,
        "netvlan_endpoint_spoofed_packets",
        "Frames from an endpoint that anti-spoofing dropped",
    );
    let vlan_rx_packets: Counters<VlanLabels> = add(
        &mut r,
        "netvlan_vlan_rx_packets",
        "Frames the parent's wire program saw on an outer VLAN (0 = untagged)",
    );
    let vlan_rx_bytes: Counters<VlanLabels> = add(
        &mut r,
        "netvlan_vlan_rx_bytes",
        "Bytes the parent's wire program saw on an outer VLAN (0 = untagged)",
    );
    let drops: Counters<DropLabels> = add(
        &mut r,
        "netvlan_drops",
        "Frames policy dropped on the parent's wire, by VLAN and reason",
    );
    let drop_bytes: Counters<DropLabels> = add(
        &mut r,
        "netvlan_drop_bytes",
        "Bytes policy dropped on the parent's wire, by VLAN and reason",
    );
    let anomalies: Counters<AnomalyLabels> = add(
        &mut r,
        "netvlan_anomalies",
        "Frames with an anomaly (runt, truncated tag, ...) on the parent's wire",
    );
    let learned: Gauges<VlanLabels> = add(
        &mut r,
        "netvlan_learned_macs",
        "Source MACs the MAC-sprawl guard of a VLAN has learned",
    );
    let limit: Gauges<VlanLabels> = add(
        &mut r,
        "netvlan_learned_macs_limit",
        "The MAC-sprawl guard's limit of a VLAN (max_macs), where it is on",
    );
    let ipam_used: Gauges<SubnetLabels> = add(
        &mut r,
        "netvlan_ipam_addresses_used",
        "Addresses of a subnet handed out to endpoints",
    );
    let ipam_capacity: Family<SubnetLabels, Gauge<f64, AtomicU64>> = add(
        &mut r,
        "netvlan_ipam_addresses_capacity",
        "Addresses of a subnet endpoints can hold (less network, broadcast, gateway, aux-addresses)",
    );
    let map_entries: Gauges<MapLabels> = add(
        &mut r,
        "netvlan_map_entries",
        "Entries in a datapath map of a parent that can fill",
    );
    let map_max: Gauges<MapLabels> = add(
        &mut r,
        "netvlan_map_max_entries",
        "Capacity of a datapath map of a parent",
    );
    let trace_lost: Counters<ParentLabels> = add(
        &mut r,
        "netvlan_trace_lost_events",
        "Trace events a parent's wire program could not write (its ring was full)",
    );
    let datapath: Gauges<DatapathLabels> = add(
        &mut r,
        "netvlan_datapath_info",
        "The wire program on a parent: its hook, mode and program id (always 1)",
    );
    let endpoints: Gauges<NetworkLabels> = add(
        &mut r,
        "netvlan_endpoints",
        "Endpoints connected to a network",
    );
    let scrape_errors: Counter = add(
        &mut r,
        "netvlan_scrape_errors",
        "Parts of scrapes the exporter could not read since the daemon started",
    );
    let scrape_duration: Gauge<f64, AtomicU64> = add(
        &mut r,
        "netvlan_scrape_duration_seconds",
        "How long this scrape took to read the maps and the store",
    );

    if let Some(report) = &snapshot.report {
        for e in &report.endpoints {
            let labels = EndpointLabels {
                network: e.network.clone(),
                endpoint: e.endpoint.clone(),
            };
            ep_rx_packets
                .get_or_create(&labels)
                .inc_by(e.egress.rx_packets);
            ep_rx_bytes.get_or_create(&labels).inc_by(e.egress.rx_bytes);
            ep_tx_packets
                .get_or_create(&labels)
                .inc_by(e.egress.tx_packets);
            ep_tx_bytes.get_or_create(&labels).inc_by(e.egress.tx_bytes);
            ep_spoofed
                .get_or_create(&labels)
                .inc_by(e.egress.spoofed_packets);
        }
        for iface in &report.interfaces {
            let parent = || iface.ifname.clone();
            for v in &iface.vlans {
                let labels = VlanLabels {
                    parent: parent(),
                    vlan: v.vlan,
                };
                vlan_rx_packets
                    .get_or_create(&labels)
                    .inc_by(v.counters.rx_packets);
                vlan_rx_bytes
                    .get_or_create(&labels)
                    .inc_by(v.counters.rx_bytes);
            }
            for d in &iface.vlan_drops {
                let labels = DropLabels {
                    parent: parent(),
                    vlan: d.vlan,
                    reason: d.reason.to_string(),
                };
                drops.get_or_create(&labels).inc_by(d.counters.rx_packets);
                drop_bytes
                    .get_or_create(&labels)
                    .inc_by(d.counters.rx_bytes);
            }
            for (kind, c) in &iface.anomalies {
                anomalies
                    .get_or_create(&AnomalyLabels {
                        parent: parent(),
                        kind: kind.to_string(),
                    })
                    .inc_by(c.rx_packets);
            }
            for g in &iface.mac_guards {
                let labels = VlanLabels {
                    parent: parent(),
                    vlan: g.vlan,
                };
                learned.get_or_create(&labels).set(g.learned);
                if let Some(n) = g.limit {
                    limit.get_or_create(&labels).set(u64::from(n));
                }
            }
            datapath
                .get_or_create(&DatapathLabels {
                    parent: parent(),
                    hook: name_of(&iface.mode.hook()),
                    mode: name_of(&iface.mode),
                    prog_id: iface.prog_id,
                })
                .set(1);
        }
    }

    for network in snapshot.networks.iter() {
        endpoints
            .get_or_create(&NetworkLabels {
                network: network.name.clone(),
            })
            .set(network.endpoints.len() as u64);
        for subnet in network.ipam.config().subnets() {
            let in_it = network
                .ipam
                .allocated()
                .filter(|a| subnet.subnet.contains(*a))
                .count();
            let labels = SubnetLabels {
                network: network.name.clone(),
                subnet: subnet.subnet.to_string(),
            };
            ipam_used.get_or_create(&labels).set(in_it as u64);
            ipam_capacity
                .get_or_create(&labels)
                .set(subnet.assignable() as f64);
        }
    }

    for fill in &snapshot.maps {
        let labels = MapLabels {
            parent: fill.parent.clone(),
            map: fill.map.to_string(),
        };
        map_entries.get_or_create(&labels).set(fill.entries);
        map_max.get_or_create(&labels).set(fill.max_entries);
    }

    for (parent, lost) in &snapshot.trace_lost {
        trace_lost
            .get_or_create(&ParentLabels {
                parent: parent.clone(),
            })
            .inc_by(*lost);
    }

    scrape_errors.inc_by(errors);
    scrape_duration.set(started.elapsed().as_secs_f64());
    let mut out = String::new();
    prometheus_text::encode(&mut out, &r).expect("encoding into a String cannot fail");
    out
}

/// The lowercase name serde gives a datapath enum (`xdp`, `native`, ...).
fn name_of(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "unknown".to_string(),
    }
}
