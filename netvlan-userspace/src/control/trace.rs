//! What `netvlan trace` traces: its filters (network, endpoint, VLAN,
//! drops, sampling) resolved to the programs to configure, each wire's
//! and endpoint's [`TraceConfig`], and a session that writes them and
//! puts back what was there before when it ends.
//!
//! - no network or endpoint: every wire attached here and every endpoint
//!   of the stored networks;
//! - `--network N`: N's wire, filtered to N's VLAN, and N's endpoints;
//! - `--endpoint E` (a sandbox): its endpoints' own programs, and on the
//!   wire the frames to its destination slot (macvlan; ipvlan endpoints
//!   share the parent's MAC, so only their own programs);
//! - `--vlan V`: the wires filtered to V, and the endpoints of networks on V.

use std::{collections::HashMap, path::Path, time::Duration};

use netvlan_common::trace::{
    TraceConfig, TracePoint, TRACE_DROPS, TRACE_ON, TRACE_SLOT, TRACE_VLAN,
};

use super::{wire_policy::vlan_of, NetworkError, NetworkRecord};
use crate::{
    datapath::{pins::NamespacePins, trace as dtrace, Datapath, InterfacePins},
    store::Store,
};

/// How long resolution waits for the state lock.
const STATE_PATIENCE: Duration = Duration::from_secs(5);

/// The filters of `netvlan trace` (also the query of the daemon's
/// `/v1/trace`).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TraceRequest {
    pub drops: bool,
    pub network: Option<String>,
    /// A sandbox, as connected.
    pub endpoint: Option<String>,
    pub vlan: Option<u16>,
    /// Keep 1 in N matching frames (0 or 1: all).
    pub sample: u32,
}

/// What one program is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetKind {
    Wire { parent: String, ifindex: u32 },
    Endpoint { network: String, endpoint: String },
}

/// One program to trace, and the config it gets.
#[derive(Clone, Debug)]
pub struct Target {
    pub kind: TargetKind,
    pub pins: InterfacePins,
    pub config: TraceConfig,
}

impl Target {
    fn is_wire(&self) -> bool {
        matches!(self.kind, TargetKind::Wire { .. })
    }
}

/// Every program a request traces, with the names its events resolve to.
#[derive(Clone, Debug, Default)]
pub struct TracePlan {
    pub targets: Vec<Target>,
    /// (wire ifindex, destination slot) -> (network, endpoint).
    slots: HashMap<(u32, u32), (String, String)>,
}

impl TracePlan {
    /// Events the targets' rings have lost so far (since they were made).
    pub fn lost(&self) -> Result<u64, NetworkError> {
        let mut total = 0;
        for t in &self.targets {
            total += dtrace::lost(&t.pins)?;
        }
        Ok(total)
    }

    /// The parents traced, by ifindex (one pcapng interface each).
    pub fn parents(&self) -> Vec<(u32, String)> {
        self.targets
            .iter()
            .filter_map(|t| match &t.kind {
                TargetKind::Wire { parent, ifindex } => Some((*ifindex, parent.clone())),
                TargetKind::Endpoint { .. } => None,
            })
            .collect()
    }
}

impl dtrace::TraceNames for TracePlan {
    fn parent(&self, ifindex: u32) -> Option<String> {
        self.parents()
            .into_iter()
            .find(|(i, _)| *i == ifindex)
            .map(|(_, p)| p)
    }

    fn endpoint(&self, point: TracePoint, ifindex: u32, slot: u32) -> Option<(String, String)> {
        match point {
            TracePoint::WireXdp | TracePoint::WireTc => self.slots.get(&(ifindex, slot)).cloned(),
            TracePoint::EndpointEgress | TracePoint::EndpointIngress => {
                match &self.targets.get(slot as usize)?.kind {
                    TargetKind::Endpoint { network, endpoint } => {
                        Some((network.clone(), endpoint.clone()))
                    }
                    TargetKind::Wire { .. } => None,
                }
            }
        }
    }
}

/// Resolves `request` against the wires attached here and the networks
/// stored in `state_dir`.
pub async fn plan(
    datapath: &Datapath,
    state_dir: &Path,
    request: &TraceRequest,
) -> Result<TracePlan, NetworkError> {
    let records: Vec<NetworkRecord> = if Store::exists(state_dir) {
        match Store::open_within(state_dir, STATE_PATIENCE)? {
            Some(store) => store.networks()?,
            None => {
                return Err(NetworkError::NothingToTrace(
                    "another netvlan command holds the state".into(),
                ))
            }
        }
    } else {
        Vec::new()
    };
    if let Some(name) = &request.network {
        if !records.iter().any(|r| &r.name == name) {
            return Err(NetworkError::UnknownNetwork(name.clone()));
        }
    }
    if let Some(sandbox) = &request.endpoint {
        let connected = records.iter().any(|r| {
            request.network.as_ref().is_none_or(|n| n == &r.name)
                && r.endpoints.contains_key(sandbox)
        });
        if !connected {
            return Err(match &request.network {
                Some(network) => NetworkError::NotConnected {
                    network: network.clone(),
                    sandbox: sandbox.clone(),
                },
                None => NetworkError::UnknownEndpoint(sandbox.clone()),
            });
        }
    }
    let networks: Vec<&NetworkRecord> = records
        .iter()
        .filter(|r| request.network.as_ref().is_none_or(|n| n == &r.name))
        .filter(|r| request.vlan.is_none_or(|v| v == vlan_of(r)))
        .filter(|r| {
            request
                .endpoint
                .as_ref()
                .is_none_or(|e| r.endpoints.contains_key(e))
        })
        .collect();
    let mut base = TraceConfig {
        flags: TRACE_ON,
        sample: request.sample,
        ..TraceConfig::default()
    };
    if request.drops {
        base.flags |= TRACE_DROPS;
    }

    let mut plan = TracePlan::default();
    for (attachment, pins) in datapath.attachments(None).await? {
        let on_wire: Vec<&&NetworkRecord> = networks
            .iter()
            .filter(|r| r.parent.wire == attachment.ifname)
            .collect();
        let scoped = request.network.is_some() || request.endpoint.is_some();
        if scoped && on_wire.is_empty() {
            continue;
        }
        let mut config = base;
        if let Some(v) = request.vlan {
            config.flags |= TRACE_VLAN;
            config.vlan = v;
        } else if let (Some(_), Some(r)) = (&request.network, on_wire.first()) {
            config.flags |= TRACE_VLAN;
            config.vlan = vlan_of(r);
        }
        for r in &on_wire {
            let vid = vlan_of(r);
            for (sandbox, endpoint) in &r.endpoints {
                let Some(mac) = endpoint.stored_mac() else {
                    continue;
                };
                if let Some(slot) = dtrace::dst_slot(&pins, vid, mac)? {
                    plan.slots.insert(
                        (attachment.ifindex, slot),
                        (r.name.clone(), sandbox.clone()),
                    );
                    if request.endpoint.as_ref() == Some(sandbox) {
                        config.flags |= TRACE_SLOT | TRACE_VLAN;
                        config.slot = slot;
                        config.vlan = vid;
                    }
                }
            }
        }
        // An endpoint without a slot of its own (ipvlan) is traced only
        // by its own programs.
        let endpoint_without_slot = request.endpoint.is_some() && config.flags & TRACE_SLOT == 0;
        if endpoint_without_slot {
            continue;
        }
        plan.targets.push(Target {
            kind: TargetKind::Wire {
                parent: attachment.ifname.clone(),
                ifindex: attachment.ifindex,
            },
            pins,
            config,
        });
    }
    for r in &networks {
        for (sandbox, endpoint) in &r.endpoints {
            if request.endpoint.as_ref().is_some_and(|e| e != sandbox) {
                continue;
            }
            let Some(netns) = endpoint.netns else {
                continue;
            };
            let pins = NamespacePins::new(datapath.bpf_dir(), netns).egress(endpoint.ifindex);
            if !pins.exists() {
                continue;
            }
            let config = TraceConfig {
                tag: plan.targets.len() as u32,
                ..base
            };
            plan.targets.push(Target {
                kind: TargetKind::Endpoint {
                    network: r.name.clone(),
                    endpoint: sandbox.clone(),
                },
                pins,
                config,
            });
        }
    }
    if plan.targets.is_empty() {
        return Err(NetworkError::NothingToTrace(
            "no wire is attached here and no endpoint matches (`netvlan datapath attach IFACE`, or check --network/--endpoint/--vlan)".into(),
        ));
    }
    Ok(plan)
}

/// The plan's configs written into the programs; [`TraceSession::finish`]
/// (or dropping the session) writes back what each had before.
pub struct TraceSession {
    plan: TracePlan,
    saved: Vec<TraceConfig>,
    restored: bool,
}

impl TraceSession {
    /// Writes every target's config, after saving the one it replaces;
    /// on failure what was written is put back.
    pub fn start(plan: TracePlan) -> Result<TraceSession, NetworkError> {
        let mut session = TraceSession {
            saved: Vec::with_capacity(plan.targets.len()),
            plan,
            restored: false,
        };
        for target in &session.plan.targets {
            let before = dtrace::config(&target.pins)?;
            dtrace::configure(&target.pins, &target.config)?;
            session.saved.push(before);
            // The config first: a marked VLAN always finds it written.
            if target.is_wire() {
                dtrace::mark_vlans(&target.pins, &target.config)?;
            }
        }
        Ok(session)
    }

    pub fn plan(&self) -> &TracePlan {
        &self.plan
    }

    /// Opens every target's ring (needs a tokio runtime).
    pub fn readers(&self) -> Result<Vec<dtrace::RingReader>, NetworkError> {
        Ok(self
            .plan
            .targets
            .iter()
            .map(|t| dtrace::RingReader::open(&t.pins))
            .collect::<Result<_, _>>()?)
    }

    /// Events the targets' rings have lost so far (since they were made).
    pub fn lost(&self) -> Result<u64, NetworkError> {
        self.plan.lost()
    }

    /// Puts back every config this session replaced; keeps going past a
    /// failure and reports the first.
    pub fn finish(mut self) -> Result<(), NetworkError> {
        self.restore()
    }

    fn restore(&mut self) -> Result<(), NetworkError> {
        if self.restored {
            return Ok(());
        }
        self.restored = true;
        let mut first = None;
        for (target, before) in self.plan.targets.iter().zip(&self.saved) {
            let restored = dtrace::configure(&target.pins, before).and_then(|()| {
                // Marked: the VLANs the config put back can trace.
                if target.is_wire() {
                    dtrace::mark_vlans(&target.pins, before)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = restored {
                // An endpoint disconnected meanwhile took its config along.
                if target.pins.exists() {
                    tracing::error!(
                        "cannot restore the trace config in {}: {e}",
                        target.pins.dir().display()
                    );
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl Drop for TraceSession {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}
