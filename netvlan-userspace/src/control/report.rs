//! The stats report: the datapath's counters joined with the stored
//! endpoints, so a registered destination (MAC and VLAN) is shown with the
//! endpoint that owns it, or as the host's, and each endpoint with the
//! counters of its own link.

use std::{collections::HashMap, path::Path, time::Duration};

use super::{NetworkError, NetworkRecord};
use crate::{
    datapath::{
        counters::{self, Detail, EndpointMaps, EndpointStats, StatsReport},
        Attachment, Datapath, InterfacePins,
    },
    store::Store,
};

/// How long the report waits for the state lock before it gives up on
/// endpoint names: counters never wait behind a long command.
pub const STATE_PATIENCE: Duration = Duration::from_secs(1);

/// The counters of every attachment (or of `iface` alone), with the MACs
/// and links of the endpoints stored in `state_dir` named, when there is
/// any state and it can be read within [`STATE_PATIENCE`].
pub async fn report(
    datapath: &Datapath,
    state_dir: &Path,
    iface: Option<&str>,
) -> Result<StatsReport, NetworkError> {
    let attachments = datapath.attachments(iface).await?;
    let networks = stored_networks(state_dir)?;
    if networks.is_none() && Store::exists(state_dir) {
        tracing::warn!(
            "another netvlan command holds the state; showing counters without endpoint names and per-endpoint counters"
        );
    }
    let mut endpoints = EndpointMaps::new(0);
    read(
        &attachments,
        datapath.bpf_dir(),
        networks.as_deref(),
        &mut endpoints,
        Detail::PerDestination,
    )
}

/// The networks stored in `state_dir`, read once; `None` when there is no
/// state or another command holds it for longer than [`STATE_PATIENCE`].
pub fn stored_networks(state_dir: &Path) -> Result<Option<Vec<NetworkRecord>>, NetworkError> {
    if !Store::exists(state_dir) {
        return Ok(None);
    }
    match Store::open_within(state_dir, STATE_PATIENCE)? {
        Some(store) => Ok(Some(store.networks::<NetworkRecord>()?)),
        None => Ok(None),
    }
}

/// [`report`]'s reading, given the attachments and the stored networks
/// (`None`: counters without names) and the endpoints' maps open from
/// the last read: map reads only, no runtime needed, so the daemon runs it
/// off its event loop.
pub fn read(
    attachments: &[(Attachment, InterfacePins)],
    bpf_dir: &Path,
    networks: Option<&[NetworkRecord]>,
    endpoints: &mut EndpointMaps,
    detail: Detail,
) -> Result<StatsReport, NetworkError> {
    let mut report = StatsReport::default();
    for (attachment, pins) in attachments {
        report
            .interfaces
            .push(counters::read(attachment, pins, detail)?);
    }
    let Some(networks) = networks else {
        return Ok(report);
    };
    if detail == Detail::PerDestination {
        name_destinations(&mut report, networks);
    }
    for record in networks {
        for endpoint in record.endpoints.values() {
            let Some(netns) = endpoint.netns else {
                continue;
            };
            if let Some(egress) = endpoints.read(bpf_dir, netns, endpoint.ifindex)? {
                report.endpoints.push(EndpointStats {
                    network: record.name.clone(),
                    endpoint: endpoint.display_name().to_string(),
                    ifname: endpoint.ifname.clone(),
                    addresses: endpoint
                        .ipv4
                        .iter()
                        .chain(endpoint.ipv6.iter())
                        .map(|net| net.addr().to_string())
                        .collect(),
                    egress,
                });
            }
        }
    }
    endpoints.sweep();
    Ok(report)
}

/// Names each registered destination: an endpoint's (its MAC on its
/// network's VLAN, on that network's wire) or else the host's own.
fn name_destinations(report: &mut StatsReport, networks: &[NetworkRecord]) {
    let mut owners = HashMap::new();
    for record in networks {
        let vid = super::wire_policy::vlan_of(record);
        if record.options.driver != super::Driver::Macvlan {
            continue; // ipvlan endpoints share the host's MAC
        }
        for endpoint in record.endpoints.values() {
            if let Some(mac) = endpoint.stored_mac() {
                owners.insert(
                    (record.parent.wire.as_str(), vid, mac),
                    (record.name.as_str(), endpoint.sandbox.as_str()),
                );
            }
        }
    }
    for iface in &mut report.interfaces {
        for dst in &mut iface.macs {
            match owners.get(&(iface.ifname.as_str(), dst.vlan, dst.mac)) {
                Some((network, endpoint)) => {
                    dst.network = Some(network.to_string());
                    dst.endpoint = Some(endpoint.to_string());
                }
                None => dst.host = true,
            }
        }
    }
}
