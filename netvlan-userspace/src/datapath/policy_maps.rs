//! Writing a wire's policy into its pinned maps.
//!
//! The control plane computes the whole [`WirePolicy`] from every network
//! on the wire and [`apply`] brings the maps to exactly that, without a
//! window where policy is weaker than both the old and the new one: new
//! registrations are inserted before stale ones are removed, and flags are
//! overwritten in place (an array write is atomic per entry).
//!
//! The MAC-sprawl guard of a VLAN starts empty when it is switched on and
//! is emptied when it is switched off; changing only its limit or action
//! keeps what it learned (lowering the limit under the learned count lets
//! the learned MACs pass and refuses every new one).

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuHashMap, PerCpuValues};
use netvlan_common::{
    decision::{
        with_mac_limit, IP_GATEWAY, IP_NOT_REGISTERED, VLAN_ALLOWED, VLAN_MAC_GUARD,
        VLAN_UNKNOWN_DST_DROP, VLAN_UNKNOWN_IP_DROP, WIRE_VLAN_FILTER,
    },
    maps::{self, IpKey, LearnKey, MacDrops, MacGuardState, MacKey, VLAN_SLOTS},
};

use super::{
    object::{self, delete_err, open_map as open, read_err},
    DatapathError, InterfacePins,
};

/// Everything the XDP program on one wire enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WirePolicy {
    /// Drop tagged frames on VLANs not in `allowed_vlans` (and stacked tags).
    pub vlan_filter: bool,
    pub allowed_vlans: BTreeSet<u16>,
    /// VLANs (0 = untagged) where unicast to unregistered MACs is dropped.
    pub unknown_dst_drop_vlans: BTreeSet<u16>,
    /// Endpoint MACs and the host's own.
    pub registered: BTreeSet<[u8; 6]>,
    /// VLANs where unicast IP to unregistered addresses is dropped (ipvlan).
    pub unknown_ip_drop_vlans: BTreeSet<u16>,
    /// ipvlan endpoint addresses and the host's own on the wire.
    pub registered_ips: BTreeSet<std::net::IpAddr>,
    /// The gateways of the networks on the wire: never counted by a guard.
    pub gateway_ips: BTreeSet<std::net::IpAddr>,
    /// Source MACs that never reach endpoints.
    pub denied: BTreeSet<[u8; 6]>,
    /// MAC-sprawl guards per VLAN (0 = untagged).
    pub mac_guards: BTreeMap<u16, MacGuard>,
}

/// One VLAN's MAC-sprawl guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacGuard {
    /// Distinct source MACs learned before new ones are refused.
    pub limit: u32,
    /// Over the limit, count frames from new MACs but let them pass.
    pub count_only: bool,
}

/// Errors writing `name`: a full map says so ([`DatapathError::MapFull`]).
fn write_err(pins: &InterfacePins, name: &'static str) -> impl Fn(MapError) -> DatapathError {
    object::write_err(pins, name, capacity_of(name))
}

/// The fixed size of the hash maps the control plane fills.
fn capacity_of(name: &str) -> Option<u32> {
    match name {
        maps::ENDPOINT_MACS => Some(maps::ENDPOINT_MACS_CAPACITY),
        maps::ENDPOINT_IPS => Some(maps::ENDPOINT_IPS_CAPACITY),
        maps::MAC_DROPS => Some(maps::ENDPOINT_MACS_CAPACITY),
        maps::DENY_MACS => Some(maps::DENY_MACS_CAPACITY),
        _ => None,
    }
}

/// Brings the wire's maps to exactly `policy`.
pub fn apply(pins: &InterfacePins, policy: &WirePolicy) -> Result<(), DatapathError> {
    // Registrations first: a MAC that is about to become legitimate must
    // not be dropped while flags change.
    let macs = |set: &BTreeSet<[u8; 6]>| set.iter().map(|m| MacKey::new(*m)).collect();
    let registered = macs(&policy.registered);
    sync_set(pins, maps::ENDPOINT_MACS, &registered)?;
    let key = |ip: &std::net::IpAddr| IpKey {
        addr: match ip {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        },
    };
    let mut ips: BTreeMap<IpKey, u32> = policy
        .registered_ips
        .iter()
        .map(|ip| (key(ip), 0))
        .collect();
    for gateway in &policy.gateway_ips {
        ips.entry(key(gateway))
            .and_modify(|flags| *flags |= IP_GATEWAY)
            .or_insert(IP_GATEWAY | IP_NOT_REGISTERED);
    }
    sync_values(pins, maps::ENDPOINT_IPS, &ips)?;
    sync_set(pins, maps::DENY_MACS, &macs(&policy.denied))?;
    sync_drop_keys(pins, &registered)?;

    let mut vlans: Array<MapData, u32> = open(pins, maps::VLAN_POLICY)?;
    for vid in 0..VLAN_SLOTS as u16 {
        let mut flags = 0;
        if policy.allowed_vlans.contains(&vid) {
            flags |= VLAN_ALLOWED;
        }
        if policy.unknown_dst_drop_vlans.contains(&vid) {
            flags |= VLAN_UNKNOWN_DST_DROP;
        }
        if policy.unknown_ip_drop_vlans.contains(&vid) {
            flags |= VLAN_UNKNOWN_IP_DROP;
        }
        if let Some(guard) = policy.mac_guards.get(&vid) {
            flags = with_mac_limit(flags, guard.limit, guard.count_only);
        }
        let current = vlans
            .get(&u32::from(vid), 0)
            .map_err(read_err(pins, maps::VLAN_POLICY))?;
        if current == flags {
            continue;
        }
        let (was, now) = (current & VLAN_MAC_GUARD != 0, flags & VLAN_MAC_GUARD != 0);
        if now && !was {
            reset_guard(pins, vid)?;
        }
        vlans
            .set(u32::from(vid), flags, 0)
            .map_err(write_err(pins, maps::VLAN_POLICY))?;
        if was && !now {
            reset_guard(pins, vid)?;
        }
    }
    let mut wire: Array<MapData, u32> = open(pins, maps::WIRE_POLICY)?;
    let flags = if policy.vlan_filter {
        WIRE_VLAN_FILTER
    } else {
        0
    };
    wire.set(0, flags, 0)
        .map_err(write_err(pins, maps::WIRE_POLICY))?;
    Ok(())
}

/// Gives every registered MAC (and only those) a per-endpoint drop counter
/// entry, so the program only ever looks up, never inserts. A MAC that
/// stops being registered loses its counters with its entry.
fn sync_drop_keys(pins: &InterfacePins, wanted: &BTreeSet<MacKey>) -> Result<(), DatapathError> {
    let mut map: PerCpuHashMap<MapData, MacKey, MacDrops> = open(pins, maps::MAC_DROPS)?;
    let cpus = aya::util::nr_cpus().map_err(|(_, source)| DatapathError::PossibleCpus(source))?;
    let present: BTreeSet<MacKey> = map
        .keys()
        .collect::<Result<_, _>>()
        .map_err(read_err(pins, maps::MAC_DROPS))?;
    sync_keys(&present, wanted, |key, insert| {
        if insert {
            let zero = PerCpuValues::try_from(vec![MacDrops::default(); cpus])
                .map_err(DatapathError::PossibleCpus)?;
            map.insert(key, zero, 0)
                .map_err(write_err(pins, maps::MAC_DROPS))
        } else {
            map.remove(key).map_err(delete_err(pins, maps::MAC_DROPS))
        }
    })
}

/// Forgets what the guard of `vid` learned. Only called while the guard is
/// off, so the XDP program does not touch this VLAN's entries meanwhile.
fn reset_guard(pins: &InterfacePins, vid: u16) -> Result<(), DatapathError> {
    let mut learned: HashMap<MapData, LearnKey, u64> = open(pins, maps::MAC_LEARN)?;
    let stale: Vec<LearnKey> = learned
        .keys()
        .filter(|k| k.as_ref().map_or(true, |k| k.vid == vid))
        .collect::<Result<_, _>>()
        .map_err(read_err(pins, maps::MAC_LEARN))?;
    for key in stale {
        learned
            .remove(&key)
            .map_err(delete_err(pins, maps::MAC_LEARN))?;
    }
    let mut state: Array<MapData, MacGuardState> = open(pins, maps::MAC_GUARD)?;
    state
        .set(u32::from(vid), MacGuardState::default(), 0)
        .map_err(write_err(pins, maps::MAC_GUARD))
}

/// Makes the hash map's keys exactly `wanted`: inserts, then removes.
fn sync_set<K>(
    pins: &InterfacePins,
    name: &'static str,
    wanted: &BTreeSet<K>,
) -> Result<(), DatapathError>
where
    K: aya::Pod + Ord,
{
    let mut map: HashMap<MapData, K, u32> = open(pins, name)?;
    let present: BTreeSet<K> = map
        .keys()
        .collect::<Result<_, _>>()
        .map_err(read_err(pins, name))?;
    sync_keys(&present, wanted, |key, insert| {
        if insert {
            map.insert(key, 0, 0).map_err(write_err(pins, name))
        } else {
            map.remove(key).map_err(delete_err(pins, name))
        }
    })
}

/// Makes the hash map exactly `wanted`, values included: writes what is
/// missing or different, then removes the rest.
fn sync_values<K>(
    pins: &InterfacePins,
    name: &'static str,
    wanted: &BTreeMap<K, u32>,
) -> Result<(), DatapathError>
where
    K: aya::Pod + Ord,
{
    let mut map: HashMap<MapData, K, u32> = open(pins, name)?;
    let present: BTreeMap<K, u32> = map
        .iter()
        .collect::<Result<_, _>>()
        .map_err(read_err(pins, name))?;
    for (key, value) in wanted {
        if present.get(key) != Some(value) {
            map.insert(key, value, 0).map_err(write_err(pins, name))?;
        }
    }
    for key in present.keys().filter(|k| !wanted.contains_key(k)) {
        map.remove(key).map_err(delete_err(pins, name))?;
    }
    Ok(())
}

/// Inserts the keys of `wanted` that are missing, then removes the keys
/// `present` has beyond it (`apply(key, true)` inserts, `false` removes).
fn sync_keys<K: Ord>(
    present: &BTreeSet<K>,
    wanted: &BTreeSet<K>,
    mut apply: impl FnMut(&K, bool) -> Result<(), DatapathError>,
) -> Result<(), DatapathError> {
    for key in wanted.difference(present) {
        apply(key, true)?;
    }
    for key in present.difference(wanted) {
        apply(key, false)?;
    }
    Ok(())
}

/// The MACs and addresses registered in the wire's maps now (what
/// `netvlan check` compares with the stored endpoints).
pub fn registered(
    pins: &InterfacePins,
) -> Result<(BTreeSet<[u8; 6]>, BTreeSet<std::net::IpAddr>), DatapathError> {
    let macs: HashMap<MapData, MacKey, u32> = open(pins, maps::ENDPOINT_MACS)?;
    let macs = macs
        .keys()
        .map(|k| k.map(|k| k.addr))
        .collect::<Result<_, _>>()
        .map_err(read_err(pins, maps::ENDPOINT_MACS))?;
    let ips: HashMap<MapData, IpKey, u32> = open(pins, maps::ENDPOINT_IPS)?;
    let ips = ips
        .keys()
        .map(|k| {
            k.map(|k| {
                let v6 = std::net::Ipv6Addr::from(k.addr);
                match v6.to_ipv4_mapped() {
                    Some(v4) => std::net::IpAddr::V4(v4),
                    None => std::net::IpAddr::V6(v6),
                }
            })
        })
        .collect::<Result<_, _>>()
        .map_err(read_err(pins, maps::ENDPOINT_IPS))?;
    Ok((macs, ips))
}
