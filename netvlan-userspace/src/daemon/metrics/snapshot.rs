//! What one scrape reads: the stats report (the counters `netvlan stats
//! --json` prints), the stored networks (IPAM, endpoints; decoded again
//! only when the store changed, see [`crate::daemon::stored`]) and how full
//! each wire's fillable maps are. A part that fails is logged and
//! counted, and the rest is still read.

use std::{path::Path, sync::Arc, time::Duration};

use aya::maps::MapData;
use netvlan_common::maps;

use crate::{
    control::{report, NetworkRecord},
    daemon::{
        stored::{Stored, StoredNetworks},
        Shared,
    },
    datapath::{
        counters::{Detail, EndpointMaps, StatsReport},
        policy_maps, Attachment, DatapathError, InterfacePins,
    },
    sys::bpf_batch::BatchMap,
};

/// How long a scrape waits for the state lock: a long command makes the
/// store's gauges miss one scrape, never stalls Prometheus.
const STATE_PATIENCE: Duration = Duration::from_secs(1);

/// Hash entries copied per batch lookup while counting.
const COUNT_CHUNK: u32 = 4096;

/// The hashes the control plane or the program fills, counted entry by
/// entry (the kernel keeps no count userspace can read everywhere).
const HASHES: [&str; 4] = [
    maps::DST_SLOTS,
    maps::ENDPOINT_IPS,
    maps::DENY_MACS,
    maps::MAC_LEARN,
];

/// How full one map of one wire is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapFill {
    pub parent: String,
    pub map: &'static str,
    pub entries: u64,
    pub max_entries: u64,
}

/// Everything one scrape read.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The counters, if they could be read.
    pub report: Option<StatsReport>,
    /// The stored networks (empty when there is no state or it could not
    /// be read), shared with the daemon's other readers.
    pub networks: Arc<Vec<NetworkRecord>>,
    pub maps: Vec<MapFill>,
    /// Trace events each parent's ring lost (parent, total).
    pub trace_lost: Vec<(String, u64)>,
    /// Parts that could not be read.
    pub errors: u64,
}

/// Reads everything a scrape serves from `datapath` and `state_dir`: the
/// attachments from netlink, then the store (once) and the maps off the
/// event loop (`daemon::off_loop`).
pub async fn take(shared: &Shared) -> Snapshot {
    let attachments = match shared.datapath.attachments(None).await {
        Ok(attachments) => attachments,
        Err(e) => {
            // Neither the counters nor the map fill can be read.
            let mut snapshot = Snapshot::default();
            snapshot.errors += failed("the attachments (counters, map fill)", &e) * 2;
            return snapshot;
        }
    };
    let bpf_dir = shared.datapath.bpf_dir().to_path_buf();
    let state_dir = shared.state_dir.clone();
    let endpoints = shared.endpoint_maps.clone();
    let stored = shared.networks.clone();
    crate::daemon::off_loop(move || {
        let mut endpoints = endpoints.lock().unwrap_or_else(|e| e.into_inner());
        read(&attachments, &bpf_dir, &state_dir, &stored, &mut endpoints)
    })
    .await
}

/// A part that could not be read, logged: 1 error.
fn failed(what: &str, error: &dyn std::error::Error) -> u64 {
    tracing::warn!(error = %chain(error), "metrics: cannot read {what}");
    1
}

/// [`take`]'s blocking part: the store read once (its networks name the
/// counters and feed the IPAM and endpoint gauges), then every map.
fn read(
    attachments: &[(Attachment, InterfacePins)],
    bpf_dir: &Path,
    state_dir: &Path,
    stored: &StoredNetworks,
    endpoints: &mut EndpointMaps,
) -> Snapshot {
    let mut snapshot = Snapshot::default();
    // Known only when the records were read: they name the counters.
    let mut generation = None;
    match stored.read(state_dir, STATE_PATIENCE) {
        Ok(Stored::Networks {
            networks,
            generation: read,
        }) => {
            snapshot.networks = networks;
            generation = Some(read);
        }
        Ok(Stored::Absent) => {}
        Ok(Stored::Busy) => {
            tracing::warn!("metrics: another netvlan command holds the state; IPAM and endpoint gauges skipped");
            snapshot.errors += 1;
        }
        Err(e) => snapshot.errors += failed("the stored networks", &e),
    }
    let networks = generation.is_some().then_some(&snapshot.networks[..]);
    endpoints.records(generation);
    // No per-MAC series: the registrations are read once, for the map fill.
    match report::read(attachments, bpf_dir, networks, endpoints, Detail::Wire) {
        Ok(report) => snapshot.report = Some(report),
        Err(e) => snapshot.errors += failed("the counters", &e),
    }
    for (attachment, pins) in attachments {
        let (fills, errors) = map_fill(&attachment.ifname, pins);
        snapshot.maps.extend(fills);
        snapshot.errors += errors;
        match crate::datapath::trace::lost(pins) {
            Ok(lost) => snapshot.trace_lost.push((attachment.ifname.clone(), lost)),
            Err(e) => snapshot.errors += failed("a trace ring's lost count", &e),
        }
    }
    snapshot
}

/// The fill of `parent`'s maps that can fill: the hashes by their entries,
/// the per-destination arrays by what is registered in them. A map that
/// cannot be read is left out and counted.
fn map_fill(parent: &str, pins: &InterfacePins) -> (Vec<MapFill>, u64) {
    let mut fills = Vec::new();
    let mut errors = 0;
    for name in HASHES {
        match count_hash(pins, name) {
            Ok((entries, max_entries)) => fills.push(MapFill {
                parent: parent.to_string(),
                map: name,
                entries,
                max_entries,
            }),
            Err(e) => {
                tracing::warn!(%parent, map = name, error = %chain(&e), "metrics: cannot count a map");
                errors += 1;
            }
        }
    }
    match policy_maps::read_slots(pins) {
        Ok(slots) => {
            let resolved = slots.resolved();
            // A taken direct slot holds its key; a free one the zero key.
            let direct = slots.direct.iter().filter(|key| !key.is_free()).count();
            for (map, entries) in [
                (maps::DST_DIRECT, direct),
                (maps::DST_STATS, resolved.len()),
            ] {
                fills.push(MapFill {
                    parent: parent.to_string(),
                    map,
                    entries: entries as u64,
                    max_entries: u64::from(maps::DST_CAPACITY),
                });
            }
        }
        Err(e) => {
            tracing::warn!(%parent, error = %chain(&e), "metrics: cannot read the registrations");
            errors += 1;
        }
    }
    (fills, errors)
}

/// The entries and capacity of the hash `name` pinned in `pins`.
fn count_hash(pins: &InterfacePins, name: &'static str) -> Result<(u64, u64), DatapathError> {
    let path = pins.map(name);
    let data = MapData::from_pin(&path).map_err(|source| DatapathError::OpenMap {
        name,
        path: path.clone(),
        source: Box::new(source),
    })?;
    let batch_err = |source| DatapathError::MapBatch {
        name,
        path: path.clone(),
        source: Box::new(source),
    };
    let batch = BatchMap::new(&data, name).map_err(batch_err)?;
    let entries = batch.count(COUNT_CHUNK).map_err(batch_err)?;
    Ok((u64::from(entries), u64::from(batch.max_entries())))
}

/// An error with its sources, for the log.
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
