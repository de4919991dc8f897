//! The stats report: the datapath's counters joined with the stored
//! endpoints, so a MAC is shown with the endpoint that owns it and each
//! endpoint with the counters of its own link.

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
    let mut owners = HashMap::new();
    for record in store.networks::<NetworkRecord>()? {
        for endpoint in record.endpoints.values() {
            if let Some(mac) = endpoint.mac {
                owners.insert(mac, (record.name.clone(), endpoint.sandbox.clone()));
            }
        }
    }
    for mac in report.interfaces.iter_mut().flat_map(|i| i.macs.iter_mut()) {
        if let Some((network, endpoint)) = owners.get(&mac.mac) {
            mac.network = Some(network.clone());
            mac.endpoint = Some(endpoint.clone());
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
