//! Reading the datapath's counters from the pinned maps.
//!
//! The maps are per-CPU: each CPU counts on its own without atomics, and
//! the values are summed here.

use std::collections::BTreeMap;

use aya::maps::{Array, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use netvlan_common::{
    decision::{
        vlan_mac_limit, DropReason, DROP_REASON_SLOTS, VLAN_MAC_GUARD, VLAN_MAC_GUARD_COUNT_ONLY,
    },
    frame::Anomaly,
    maps::{self, CounterSlot, Counters, MacDrops, MacGuardState, MacKey},
    Mac,
};
use serde::Serialize;

use super::WireMode;
use super::{
    object::{open_map, read_err},
    Attachment, DatapathError, InterfacePins,
};

/// Packets and bytes received, as printed and serialised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RxCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

impl From<Counters> for RxCounters {
    fn from(c: Counters) -> Self {
        RxCounters {
            rx_packets: c.packets,
            rx_bytes: c.bytes,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VlanStats {
    /// 0 = untagged (or priority-tagged).
    pub vlan: u16,
    #[serde(flatten)]
    pub counters: RxCounters,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MacStats {
    pub mac: Mac,
    /// The network and sandbox of the endpoint with this MAC, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(flatten)]
    pub counters: RxCounters,
    /// Frames to this MAC (an endpoint's or the host's) that policy
    /// dropped, per reason; only reasons with drops.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub drops: BTreeMap<&'static str, RxCounters>,
}

/// Everything counted on one interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InterfaceStats {
    pub ifname: String,
    pub ifindex: u32,
    pub mode: WireMode,
    pub prog_id: u32,
    /// Every frame the program saw.
    pub frames: RxCounters,
    /// VLANs with traffic, ascending.
    pub vlans: Vec<VlanStats>,
    /// Destination MACs with traffic, ascending.
    pub macs: Vec<MacStats>,
    /// Frames per anomaly, every anomaly listed (zero included).
    pub anomalies: BTreeMap<&'static str, RxCounters>,
    /// Frames not counted per MAC because the MAC table was full.
    pub mac_table_full: RxCounters,
    /// Frames dropped by policy, per reason (every reason listed).
    pub drops: BTreeMap<&'static str, RxCounters>,
    /// Drops per VLAN and reason, only where something was dropped.
    pub vlan_drops: Vec<VlanDrops>,
    /// Distinct source MACs the MAC-sprawl guards hold, all VLANs together.
    pub learned_macs: u64,
    /// Each VLAN's MAC-sprawl guard (`max_macs`), where one is on or has
    /// counted something.
    pub mac_guards: Vec<MacGuardStats>,
}

/// One VLAN's MAC-sprawl guard, as the kernel holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MacGuardStats {
    pub vlan: u16,
    /// `None` once the guard is off (its last counters are still shown).
    pub limit: Option<u32>,
    /// `drop` or `count`.
    pub action: &'static str,
    /// Distinct source MACs learned.
    pub learned: u64,
    /// Frames from new MACs while the VLAN held its limit.
    pub over_limit_packets: u64,
    pub over_limit_bytes: u64,
    /// The last over-limit event, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_over_limit: Option<OverLimitEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OverLimitEvent {
    /// The new source MAC that found the VLAN full.
    pub mac: String,
    /// How long ago, in seconds.
    pub seconds_ago: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VlanDrops {
    pub vlan: u16,
    pub reason: &'static str,
    #[serde(flatten)]
    pub counters: RxCounters,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsReport {
    pub interfaces: Vec<InterfaceStats>,
    /// Per endpoint: what it sent and what anti-spoofing dropped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointStats>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointStats {
    pub network: String,
    pub endpoint: String,
    pub ifname: String,
    /// The endpoint's addresses: what tells ipvlan endpoints (which share
    /// the parent's MAC) apart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(flatten)]
    pub egress: super::endpoint_hooks::EgressStats,
}

fn sum(values: &PerCpuValues<Counters>) -> Counters {
    values.iter().fold(Counters::default(), |mut acc, c| {
        acc.merge(c);
        acc
    })
}

/// Reads and sums every counter of one attachment.
pub fn read(
    attachment: &Attachment,
    pins: &InterfacePins,
) -> Result<InterfaceStats, DatapathError> {
    let counters: PerCpuArray<MapData, Counters> = open_map(pins, maps::COUNTERS)?;
    let slot = |slot: CounterSlot| -> Result<Counters, DatapathError> {
        let values = counters
            .get(&slot.index(), 0)
            .map_err(read_err(pins, maps::COUNTERS))?;
        Ok(sum(&values))
    };
    let frames = slot(CounterSlot::Frames)?.into();
    let mac_table_full = slot(CounterSlot::MacTableFull)?.into();
    let mut anomalies = BTreeMap::new();
    for anomaly in Anomaly::ALL {
        anomalies.insert(anomaly.name(), slot(CounterSlot::Anomaly(anomaly))?.into());
    }

    let vlan_map: PerCpuArray<MapData, Counters> = open_map(pins, maps::VLAN_STATS)?;
    let mut vlans = Vec::new();
    for (vlan, values) in vlan_map.iter().enumerate() {
        let total = sum(&values.map_err(read_err(pins, maps::VLAN_STATS))?);
        if total.packets > 0 {
            vlans.push(VlanStats {
                vlan: vlan as u16,
                counters: total.into(),
            });
        }
    }

    let mac_map: PerCpuHashMap<MapData, MacKey, Counters> = open_map(pins, maps::MAC_STATS)?;
    let mut macs = Vec::new();
    for entry in mac_map.iter() {
        let (key, values) = entry.map_err(read_err(pins, maps::MAC_STATS))?;
        macs.push((key, sum(&values)));
    }
    macs.sort_by_key(|(key, _)| *key);
    let mac_drops = read_mac_drops(pins)?;
    let macs = macs
        .into_iter()
        .map(|(key, total)| MacStats {
            mac: Mac(key.addr),
            network: None,
            endpoint: None,
            counters: total.into(),
            drops: mac_drops.get(&key).cloned().unwrap_or_default(),
        })
        .collect();

    let drop_map: PerCpuArray<MapData, Counters> = open_map(pins, maps::DROPS)?;
    let mut drops = BTreeMap::new();
    for reason in DropReason::ALL {
        let values = drop_map
            .get(&(reason as u32), 0)
            .map_err(read_err(pins, maps::DROPS))?;
        drops.insert(reason.name(), sum(&values).into());
    }
    let mut vlan_drops = Vec::new();
    if drops.values().any(|c: &RxCounters| c.rx_packets > 0) {
        let per_vlan: PerCpuArray<MapData, Counters> = open_map(pins, maps::VLAN_DROPS)?;
        for (index, values) in per_vlan.iter().enumerate() {
            let total = sum(&values.map_err(read_err(pins, maps::VLAN_DROPS))?);
            let (vlan, slot) = (
                index as u32 / DROP_REASON_SLOTS,
                index as u32 % DROP_REASON_SLOTS,
            );
            if let (true, Some(reason)) = (total.packets > 0, DropReason::ALL.get(slot as usize)) {
                vlan_drops.push(VlanDrops {
                    vlan: vlan as u16,
                    reason: reason.name(),
                    counters: total.into(),
                });
            }
        }
    }

    let mac_guards = read_guards(pins)?;
    Ok(InterfaceStats {
        ifname: attachment.ifname.clone(),
        ifindex: attachment.ifindex,
        mode: attachment.mode,
        prog_id: attachment.prog_id,
        frames,
        vlans,
        macs,
        anomalies,
        mac_table_full,
        drops,
        vlan_drops,
        learned_macs: mac_guards.iter().map(|g| g.learned).sum(),
        mac_guards,
    })
}

/// Per-MAC drops, summed over CPUs, only non-zero reasons.
fn read_mac_drops(
    pins: &InterfacePins,
) -> Result<BTreeMap<MacKey, BTreeMap<&'static str, RxCounters>>, DatapathError> {
    let map: PerCpuHashMap<MapData, MacKey, MacDrops> = open_map(pins, maps::MAC_DROPS)?;
    let mut out = BTreeMap::new();
    for entry in map.iter() {
        let (key, values) = entry.map_err(read_err(pins, maps::MAC_DROPS))?;
        let mut by_reason = BTreeMap::new();
        for reason in DropReason::ALL {
            let total = values.iter().fold(Counters::default(), |mut acc, d| {
                acc.merge(&d.by_reason[reason as usize]);
                acc
            });
            if total.packets > 0 {
                by_reason.insert(reason.name(), total.into());
            }
        }
        if !by_reason.is_empty() {
            out.insert(key, by_reason);
        }
    }
    Ok(out)
}

/// The guards of every VLAN whose flags have one, or whose state is not
/// all zero (a guard switched off keeps nothing, but stats taken between
/// the two steps must not lie either).
fn read_guards(pins: &InterfacePins) -> Result<Vec<MacGuardStats>, DatapathError> {
    let flags: Array<MapData, u32> = open_map(pins, maps::VLAN_POLICY)?;
    let states: Array<MapData, MacGuardState> = open_map(pins, maps::MAC_GUARD)?;
    let now = monotonic_ns();
    let mut out = Vec::new();
    for (vid, (flags, state)) in flags.iter().zip(states.iter()).enumerate() {
        let flags = flags.map_err(read_err(pins, maps::VLAN_POLICY))?;
        let state = state.map_err(read_err(pins, maps::MAC_GUARD))?;
        let on = flags & VLAN_MAC_GUARD != 0;
        if !on && state == MacGuardState::default() {
            continue;
        }
        out.push(MacGuardStats {
            vlan: vid as u16,
            limit: on.then(|| vlan_mac_limit(flags)),
            action: if flags & VLAN_MAC_GUARD_COUNT_ONLY != 0 {
                "count"
            } else {
                "drop"
            },
            learned: state.learned,
            over_limit_packets: state.over_limit_packets,
            over_limit_bytes: state.over_limit_bytes,
            last_over_limit: (state.last_over_limit_ns != 0).then(|| OverLimitEvent {
                mac: Mac(state.last_over_limit_mac).to_string(),
                seconds_ago: now.saturating_sub(state.last_over_limit_ns) / 1_000_000_000,
            }),
        });
    }
    Ok(out)
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}
