//! Reading the datapath's counters from the pinned maps.
//!
//! The maps are per-CPU: each CPU counts on its own without atomics, and
//! the values are summed here. Every map is read with batch lookups (one
//! syscall per map, per run of registered slots for `DST_STATS`), the
//! mmapable `DST_DIRECT` and `VLAN_POLICY` through a mapping.

use std::collections::BTreeMap;

use netvlan_common::{
    antispoof::EGRESS_STATS,
    decision::{
        vlan_mac_limit, DropReason, DROP_REASON_SLOTS, VLAN_MAC_GUARD, VLAN_MAC_GUARD_COUNT_ONLY,
    },
    frame::Anomaly,
    maps::{self, CounterSlot, Counters, DstCounters, MacGuardState, VlanCounters},
    Mac,
};
use serde::{Deserialize, Deserializer, Serialize};

use super::WireMode;
use super::{
    object::{batch_err, open_data},
    policy_maps, Attachment, DatapathError, InterfacePins,
};
use crate::sys::bpf_batch::{BatchMap, Shape};

/// Packets and bytes received, as printed and serialised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanStats {
    /// 0 = untagged (or priority-tagged).
    pub vlan: u16,
    /// Every classified frame on this VLAN.
    #[serde(flatten)]
    pub counters: RxCounters,
    /// Unicast frames to no registered destination.
    pub unregistered: RxCounters,
    /// Broadcast and multicast frames.
    pub flood: RxCounters,
}

/// One registered destination: a MAC on one outer VLAN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacStats {
    pub mac: Mac,
    /// The outer VLAN it is registered on (0 = untagged).
    pub vlan: u16,
    /// The network and sandbox of the endpoint with this MAC, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// One of the host's own MACs (the wire's or a parent's; ipvlan
    /// endpoints share it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host: bool,
    /// Every frame to it, dropped ones included.
    #[serde(flatten)]
    pub counters: RxCounters,
    /// Frames to it that policy dropped (the reasons are in `vlan_drops`).
    pub dropped: RxCounters,
}

/// Everything counted on one interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStats {
    pub ifname: String,
    pub ifindex: u32,
    pub mode: WireMode,
    pub prog_id: u32,
    /// Every frame the program saw: the VLANs' frames and the malformed.
    pub frames: RxCounters,
    /// Frames that did not classify (their anomalies are in `anomalies`).
    pub malformed: RxCounters,
    /// VLANs with traffic, ascending.
    pub vlans: Vec<VlanStats>,
    /// Every registered destination, by VLAN then MAC.
    pub macs: Vec<MacStats>,
    /// Frames per anomaly, every anomaly listed (zero included).
    #[serde(deserialize_with = "known_keys")]
    pub anomalies: BTreeMap<&'static str, RxCounters>,
    /// Frames dropped by policy, per reason (every reason listed).
    #[serde(deserialize_with = "known_keys")]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacGuardStats {
    pub vlan: u16,
    /// `None` once the guard is off (its last counters are still shown).
    pub limit: Option<u32>,
    /// `drop` or `count`.
    #[serde(deserialize_with = "known_name")]
    pub action: StaticName,
    /// Distinct source MACs learned.
    pub learned: u64,
    /// Frames from new MACs while the VLAN held its limit.
    pub over_limit_packets: u64,
    pub over_limit_bytes: u64,
    /// The last over-limit event, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_over_limit: Option<OverLimitEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverLimitEvent {
    /// The new source MAC that found the VLAN full.
    pub mac: String,
    /// How long ago, in seconds.
    pub seconds_ago: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanDrops {
    pub vlan: u16,
    #[serde(deserialize_with = "known_name")]
    pub reason: StaticName,
    #[serde(flatten)]
    pub counters: RxCounters,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    pub interfaces: Vec<InterfaceStats>,
    /// Per endpoint: what it sent and what anti-spoofing dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointStats>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStats {
    pub network: String,
    pub endpoint: String,
    pub ifname: String,
    /// The endpoint's addresses: what tells ipvlan endpoints (which share
    /// the parent's MAC) apart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(flatten)]
    pub egress: super::endpoint_hooks::EgressStats,
}

/// A name of [`static_name`]'s (spelt as an alias so that serde's derive
/// does not take it for a string borrowed from its input).
pub type StaticName = &'static str;

/// The datapath's fixed names (drop reasons, anomalies, guard actions),
/// which a report read back from JSON (the daemon's local API) gets as the
/// same static strings it was made with.
fn static_name(name: &str) -> Option<&'static str> {
    DropReason::ALL
        .iter()
        .map(|r| r.name())
        .chain(Anomaly::ALL.iter().map(|a| a.name()))
        .chain(["drop", "count"])
        .find(|known| *known == name)
}

fn known_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<&'static str, D::Error> {
    let name = String::deserialize(deserializer)?;
    static_name(&name)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown counter name {name:?}")))
}

fn known_keys<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<&'static str, RxCounters>, D::Error> {
    BTreeMap::<String, RxCounters>::deserialize(deserializer)?
        .into_iter()
        .map(|(name, counters)| {
            static_name(&name)
                .map(|known| (known, counters))
                .ok_or_else(|| serde::de::Error::custom(format!("unknown counter name {name:?}")))
        })
        .collect()
}

fn sum(values: &[Counters]) -> Counters {
    values.iter().fold(Counters::default(), |mut acc, c| {
        acc.merge(c);
        acc
    })
}

/// Every entry of the array `name`, per-CPU values summed by `total`,
/// in one batch lookup.
fn read_array<V: aya::Pod, T>(
    pins: &InterfacePins,
    name: &'static str,
    total: impl Fn(&[V]) -> T,
) -> Result<Vec<T>, DatapathError> {
    let data = open_data(pins, name)?;
    let batch = BatchMap::new(&data, name).map_err(batch_err(pins, name, None))?;
    let entries = batch
        .lookup_all::<u32, V>()
        .map_err(batch_err(pins, name, None))?;
    Ok(entries.iter().map(|(_, values)| total(values)).collect())
}

/// Slots read together when they are this close: one syscall per run of
/// registered slots, never one per slot.
const SLOT_RUN_GAP: u32 = 256;

/// `slots` (sorted, distinct) as runs `(first, last)` read by one batch
/// lookup each: neighbours closer than [`SLOT_RUN_GAP`] share a run.
fn slot_runs(slots: &[u32]) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &slot in slots {
        match runs.last_mut() {
            Some((_, last)) if slot - *last <= SLOT_RUN_GAP => *last = slot,
            _ => runs.push((slot, slot)),
        }
    }
    runs
}

/// The `DST_STATS` (summed over CPUs) and `DST_DROPS` of `slots` (sorted,
/// distinct).
fn read_dst_stats(
    pins: &InterfacePins,
    slots: &[u32],
) -> Result<BTreeMap<u32, DstCounters>, DatapathError> {
    let mut out = BTreeMap::new();
    if slots.is_empty() {
        return Ok(out);
    }
    let runs = slot_runs(slots);
    // Every frame per CPU (DST_STATS), drops shared (DST_DROPS).
    for (name, dropped) in [(maps::DST_STATS, false), (maps::DST_DROPS, true)] {
        let data = open_data(pins, name)?;
        let err = || batch_err(pins, name, None);
        let batch = BatchMap::new(&data, name).map_err(err())?;
        for &(first, last) in &runs {
            for (slot, values) in batch
                .lookup_range::<Counters>(first, last - first + 1)
                .map_err(err())?
            {
                let total: &mut DstCounters = out.entry(slot).or_default();
                let half = if dropped {
                    &mut total.dropped
                } else {
                    &mut total.rx
                };
                values.iter().for_each(|c| half.merge(c));
            }
        }
    }
    Ok(out)
}

/// Every registered destination's counters, by VLAN then MAC (names not
/// filled in: the store knows them).
fn read_macs(pins: &InterfacePins) -> Result<Vec<MacStats>, DatapathError> {
    let registered = policy_maps::read_slots(pins)?.resolved();
    let mut slots: Vec<u32> = registered.values().copied().collect();
    slots.sort_unstable();
    slots.dedup();
    let dst_stats = read_dst_stats(pins, &slots)?;
    Ok(registered
        .iter()
        .map(|(key, slot)| {
            let c = dst_stats.get(slot).copied().unwrap_or_default();
            MacStats {
                mac: Mac(key.mac),
                vlan: key.vid,
                network: None,
                endpoint: None,
                host: false,
                counters: c.rx.into(),
                dropped: c.dropped.into(),
            }
        })
        .collect())
}

/// What a read of a wire's counters covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Every registered destination's counters as well (`stats`, the live
    /// page): a lookup of the registrations and of one slot per MAC.
    PerDestination,
    /// The wire's, the VLANs' and the drops' counters only (`/metrics`,
    /// which has no per-MAC series): `macs` stays empty.
    Wire,
}

/// Reads and sums every counter of one attachment, each map with batch
/// lookups.
pub fn read(
    attachment: &Attachment,
    pins: &InterfacePins,
    detail: Detail,
) -> Result<InterfaceStats, DatapathError> {
    let counters = read_array::<Counters, _>(pins, maps::COUNTERS, sum)?;
    let slot = |slot: CounterSlot| {
        counters
            .get(slot.index() as usize)
            .copied()
            .unwrap_or_default()
    };
    let malformed = slot(CounterSlot::Malformed);
    let mut anomalies = BTreeMap::new();
    for anomaly in Anomaly::ALL {
        anomalies.insert(anomaly.name(), slot(CounterSlot::Anomaly(anomaly)).into());
    }

    let per_vlan = read_array::<VlanCounters, _>(pins, maps::VLAN_COUNTERS, |values| {
        values.iter().fold(VlanCounters::default(), |mut acc, c| {
            acc.frames.merge(&c.frames);
            acc.unregistered.merge(&c.unregistered);
            acc.flood.merge(&c.flood);
            acc
        })
    })?;
    let mut frames = malformed;
    let mut vlans = Vec::new();
    for (vlan, total) in per_vlan.iter().enumerate() {
        frames.merge(&total.frames);
        if total.frames.packets > 0 {
            vlans.push(VlanStats {
                vlan: vlan as u16,
                counters: total.frames.into(),
                unregistered: total.unregistered.into(),
                flood: total.flood.into(),
            });
        }
    }

    let macs = match detail {
        Detail::PerDestination => read_macs(pins)?,
        Detail::Wire => Vec::new(),
    };

    let by_reason = read_array::<Counters, _>(pins, maps::DROPS, sum)?;
    let mut drops = BTreeMap::new();
    for reason in DropReason::ALL {
        let total = by_reason.get(reason as usize).copied().unwrap_or_default();
        drops.insert(reason.name(), total.into());
    }
    let mut vlan_drops = Vec::new();
    if drops.values().any(|c: &RxCounters| c.rx_packets > 0) {
        let per_vlan = read_array::<Counters, _>(pins, maps::VLAN_DROPS, sum)?;
        for (index, total) in per_vlan.iter().enumerate() {
            let (vlan, slot) = (
                index as u32 / DROP_REASON_SLOTS,
                index as u32 % DROP_REASON_SLOTS,
            );
            if let (true, Some(reason)) = (total.packets > 0, DropReason::ALL.get(slot as usize)) {
                vlan_drops.push(VlanDrops {
                    vlan: vlan as u16,
                    reason: reason.name(),
                    counters: (*total).into(),
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
        frames: frames.into(),
        malformed: malformed.into(),
        vlans,
        macs,
        anomalies,
        drops,
        vlan_drops,
        learned_macs: mac_guards.iter().map(|g| g.learned).sum(),
        mac_guards,
    })
}

/// The guards of every VLAN whose flags have one, or whose state is not
/// all zero (a guard switched off keeps nothing, but stats taken between
/// the two steps must not lie either).
fn read_guards(pins: &InterfacePins) -> Result<Vec<MacGuardStats>, DatapathError> {
    let data = open_data(pins, maps::VLAN_POLICY)?;
    let flags = BatchMap::new(&data, maps::VLAN_POLICY)
        .and_then(|b| b.read_array::<u32>())
        .map_err(batch_err(pins, maps::VLAN_POLICY, None))?;
    let states = read_array::<MacGuardState, _>(pins, maps::MAC_GUARD, |v| v[0])?;
    let now = monotonic_ns();
    let mut out = Vec::new();
    for (vid, (flags, state)) in flags.into_iter().zip(states).enumerate() {
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

/// Endpoints' counter maps (`EGRESS_STATS`, one per endpoint) kept open
/// between reads: the daemon's scrapes reuse an open map while its pin is
/// the same file (same inode; a reconnected endpoint's new pin is another),
/// so an endpoint costs its lookups, not an open, an info query and a close
/// as well. At most `capacity` maps stay open (file descriptors); the rest
/// are opened per read. [`EndpointMaps::sweep`] closes the maps of
/// endpoints not read since the last sweep.
///
/// Checking that a pin is still the same file is a path walk per endpoint,
/// a fifth of a scrape at 5,000 endpoints. Only commands that commit to the
/// store make or replace an endpoint's pins (connect, disconnect, restore
/// and its repairs), so while the reader's stored records are the ones it
/// checked the pins against ([`EndpointMaps::records`]), open maps are
/// used unchecked.
#[derive(Default)]
pub struct EndpointMaps {
    open: std::collections::HashMap<(crate::sys::netns::NetnsId, u32), OpenStats>,
    capacity: usize,
    /// The generation of the stored records the open maps were checked
    /// against, and whether this read's records are that generation.
    checked: Option<u64>,
    unchanged: bool,
}

struct OpenStats {
    ino: u64,
    map: aya::maps::MapData,
    shape: Shape,
    read: bool,
}

impl OpenStats {
    fn stats(
        &mut self,
        pins: &InterfacePins,
    ) -> Result<super::endpoint_hooks::EgressStats, DatapathError> {
        self.read = true;
        let map = BatchMap::with_shape(&self.map, EGRESS_STATS, self.shape);
        super::endpoint_hooks::stats_of(pins, &map)
    }
}

impl EndpointMaps {
    /// A cache that keeps up to `capacity` maps open (0: none, as the CLI).
    pub fn new(capacity: usize) -> EndpointMaps {
        EndpointMaps {
            capacity,
            ..Default::default()
        }
    }

    /// The reads up to the next sweep are of the stored records of
    /// `generation` (`None`: unknown, every pin is checked).
    pub fn records(&mut self, generation: Option<u64>) {
        self.unchanged = generation.is_some() && generation == self.checked;
        self.checked = generation;
    }

    /// The counters of the endpoint `ifindex` in `netns`; `None` when it
    /// has no pins (no programs).
    pub fn read(
        &mut self,
        bpf_dir: &std::path::Path,
        netns: crate::sys::netns::NetnsId,
        ifindex: u32,
    ) -> Result<Option<super::endpoint_hooks::EgressStats>, DatapathError> {
        use super::endpoint_hooks;
        use std::os::unix::fs::MetadataExt as _;

        let key = (netns, ifindex);
        let pins = super::NamespacePins::new(bpf_dir, netns).egress(ifindex);
        if self.unchanged {
            if let Some(open) = self.open.get_mut(&key) {
                return open.stats(&pins).map(Some);
            }
        }
        let Ok(meta) = std::fs::metadata(pins.map(EGRESS_STATS)) else {
            self.open.remove(&key);
            return endpoint_hooks::read_stats(bpf_dir, netns, ifindex);
        };
        if let Some(open) = self.open.get_mut(&key) {
            if open.ino == meta.ino() {
                return open.stats(&pins).map(Some);
            }
        }
        if self.open.len() >= self.capacity && !self.open.contains_key(&key) {
            return endpoint_hooks::read_stats(bpf_dir, netns, ifindex);
        }
        let map = open_data(&pins, EGRESS_STATS)?;
        let shape = BatchMap::new(&map, EGRESS_STATS)
            .map_err(batch_err(&pins, EGRESS_STATS, None))?
            .shape();
        let mut open = OpenStats {
            ino: meta.ino(),
            map,
            shape,
            read: true,
        };
        let stats = open.stats(&pins)?;
        self.open.insert(key, open);
        Ok(Some(stats))
    }

    /// Closes the maps not read since the last sweep (endpoints gone).
    pub fn sweep(&mut self) {
        self.open.retain(|_, open| std::mem::take(&mut open.read));
    }

    /// Maps open now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_slots_are_read_in_few_runs() {
        // 1,000 endpoints in their direct slots 2..=1001, the host's MAC
        // hashed in slot 0, one user-given MAC far away.
        let mut slots: Vec<u32> = (2..=1001).collect();
        slots.insert(0, 0);
        slots.push(40_000);
        assert_eq!(slot_runs(&slots), vec![(0, 1001), (40_000, 40_000)]);
        assert_eq!(slot_runs(&[]), vec![]);
        assert_eq!(
            slot_runs(&[5, 5 + SLOT_RUN_GAP, 6 + 2 * SLOT_RUN_GAP]),
            vec![
                (5, 5 + SLOT_RUN_GAP),
                (6 + 2 * SLOT_RUN_GAP, 6 + 2 * SLOT_RUN_GAP)
            ]
        );
    }

    /// A cached endpoint map follows its pin: counts written later are
    /// read, a pin replaced by another map (a reconnect) is read anew, a
    /// pin gone is no endpoint, and a sweep closes what was not read.
    #[test]
    fn endpoint_maps_follow_their_pins() {
        use aya::maps::{IterableMap as _, MapData, PerCpuArray, PerCpuValues};
        use netvlan_common::antispoof::{EGRESS_SENT, EGRESS_SLOTS, EGRESS_STATS};
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "this test pins BPF maps: run it as root"
        );
        let dir = std::path::PathBuf::from(format!(
            "/sys/fs/bpf/netvlan-unit-endpoint-maps-{}",
            std::process::id()
        ));
        struct Cleanup(std::path::PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _cleanup = Cleanup(dir.clone());
        let netns = crate::sys::netns::NetnsId::current().unwrap();
        let pins = super::super::NamespacePins::new(&dir, netns).egress(7);
        std::fs::create_dir_all(pins.dir()).unwrap();
        let cpus = aya::util::nr_cpus().unwrap();
        let pinned = |sent: u64| {
            let mut map = PerCpuArray::<MapData, Counters>::create(EGRESS_SLOTS, 0).unwrap();
            let one = Counters {
                packets: sent,
                bytes: sent * 100,
            };
            let mut values = vec![Counters::default(); cpus];
            values[0] = one;
            map.set(EGRESS_SENT, PerCpuValues::try_from(values).unwrap(), 0)
                .unwrap();
            map.map().pin(pins.map(EGRESS_STATS)).unwrap();
            map
        };

        let mut maps = EndpointMaps::new(16);
        let mut first = pinned(3);
        let read = |maps: &mut EndpointMaps| maps.read(&dir, netns, 7).unwrap();
        assert_eq!(read(&mut maps).map(|s| s.tx_packets), Some(3));
        assert_eq!(maps.len(), 1);
        let mut values = vec![Counters::default(); cpus];
        values[0] = Counters {
            packets: 5,
            bytes: 500,
        };
        first
            .set(EGRESS_SENT, PerCpuValues::try_from(values).unwrap(), 0)
            .unwrap();
        assert_eq!(read(&mut maps).map(|s| s.tx_bytes), Some(500), "live");

        std::fs::remove_file(pins.map(EGRESS_STATS)).unwrap();
        drop(first);
        let _second = pinned(9);
        assert_eq!(read(&mut maps).map(|s| s.tx_packets), Some(9), "re-pinned");
        assert_eq!(maps.len(), 1);

        std::fs::remove_dir_all(pins.dir()).unwrap();
        assert_eq!(read(&mut maps), None, "pins gone");
        assert!(maps.is_empty());

        std::fs::create_dir_all(pins.dir()).unwrap();
        let _third = pinned(1);
        read(&mut maps);
        maps.sweep();
        assert_eq!(maps.len(), 1, "read since the last sweep");
        maps.sweep();
        assert!(maps.is_empty(), "not read since: closed");

        let mut uncached = EndpointMaps::new(0);
        assert_eq!(read(&mut uncached).map(|s| s.tx_packets), Some(1));
        assert!(uncached.is_empty());
    }
}
