//! The stats report: the datapath's counters joined with the stored
//! endpoints, so a registered destination (MAC and VLAN) is shown with the
//! endpoint that owns it, or as the host's, and each endpoint with the
//! counters of its own link.

use std::{collections::HashMap, path::Path, time::Duration};

use super::{NetworkError, NetworkRecord};
use crate::{
    datapath::{
        counters::{self, EndpointStats, StatsReport},
        endpoint_hooks, Datapath,
    },
    store::Store,
};

/// How long the report waits for the state lock before it gives up on
/// endpoint names: counters never wait behind a long command.
const STATE_PATIENCE: Duration = Duration::from_secs(1);

/// The counters of every attachment (or of `iface` alone), with the MACs
/// and links of the endpoints stored in `state_dir` named, when there is
/// any state and it can be read within [`STATE_PATIENCE`].
pub async fn report(
    datapath: &Datapath,
    state_dir: &Path,
    iface: Option<&str>,
) -> Result<StatsReport, NetworkError> {
    let mut report = StatsReport::default();
    for (attachment, pins) in datapath.attachments(iface).await? {
        report.interfaces.push(counters::read(&attachment, &pins)?);
    }
    let store = if Store::exists(state_dir) {
        let store = Store::open_within(state_dir, STATE_PATIENCE)?;
        if store.is_none() {
            tracing::warn!(
                "another netvlan command holds the state; showing counters without endpoint names and per-endpoint counters"
            );
        }
        store
    } else {
        None
    };
    let Some(store) = store else {
        return Ok(report);
    };
    // A registered destination is an endpoint's (its MAC on its network's
    // VLAN, on that network's wire) or else the host's own.
    let mut owners = HashMap::new();
    for record in store.networks::<NetworkRecord>()? {
        let vid = super::wire_policy::vlan_of(&record);
        if record.options.driver != super::Driver::Macvlan {
            continue; // ipvlan endpoints share the host's MAC
        }
        for endpoint in record.endpoints.values() {
            if let Some(mac) = endpoint.stored_mac() {
                owners.insert(
                    (record.parent.wire.clone(), vid, mac),
                    (record.name.clone(), endpoint.sandbox.clone()),
                );
            }
        }
    }
    for iface in &mut report.interfaces {
        for dst in &mut iface.macs {
            match owners.get(&(iface.ifname.clone(), dst.vlan, dst.mac)) {
                Some((network, endpoint)) => {
                    dst.network = Some(network.clone());
                    dst.endpoint = Some(endpoint.clone());
                }
                None => dst.host = true,
            }
        }
    }
    for record in store.networks::<NetworkRecord>()? {
        for endpoint in record.endpoints.values() {
            let Some(netns) = endpoint.netns else {
                continue;
            };
            if let Some(egress) =
                endpoint_hooks::read_stats(datapath.bpf_dir(), netns, endpoint.ifindex)?
            {
                report.endpoints.push(EndpointStats {
                    network: record.name.clone(),
                    endpoint: endpoint.sandbox.clone(),
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
    Ok(report)
}
