//! Writing a wire's policy into its pinned maps.
//!
//! The control plane computes the whole [`WirePolicy`] from every network
//! on the wire and [`apply`] brings the maps to exactly that, without a
//! window where policy is weaker than both the old and the new one: new
//! registrations are inserted before stale ones are removed, and flags are
//! overwritten in place (an array write is atomic per entry).

use std::collections::BTreeSet;

use aya::maps::{Array, HashMap, Map, MapData};
use netvlan_common::{
    maps::{self, MacKey, VLAN_SLOTS},
    policy::{VLAN_ALLOWED, VLAN_UNKNOWN_DST_DROP, WIRE_VLAN_FILTER},
};

use super::{DatapathError, InterfacePins};

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
    /// Source MACs that never reach endpoints.
    pub denied: BTreeSet<[u8; 6]>,
}

fn open<T>(pins: &InterfacePins, name: &str) -> Result<T, DatapathError>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let path = pins.map(name);
    let err = |e: aya::maps::MapError| DatapathError::OpenPin {
        path: path.clone(),
        source: Box::new(e),
    };
    let data = MapData::from_pin(&path).map_err(err)?;
    Map::from_map_data(data)
        .map_err(err)?
        .try_into()
        .map_err(err)
}

fn map_err(pins: &InterfacePins, name: &str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    let path = pins.map(name);
    move |e| DatapathError::OpenPin {
        path: path.clone(),
        source: Box::new(e),
    }
}

/// Brings the wire's maps to exactly `policy`.
pub fn apply(pins: &InterfacePins, policy: &WirePolicy) -> Result<(), DatapathError> {
    // Registrations first: a MAC that is about to become legitimate must
    // not be dropped while flags change.
    sync_set(pins, maps::ENDPOINT_MACS, &policy.registered)?;
    sync_set(pins, maps::DENY_MACS, &policy.denied)?;

    let mut vlans: Array<MapData, u32> = open(pins, maps::VLAN_POLICY)?;
    for vid in 0..VLAN_SLOTS as u16 {
        let mut flags = 0;
        if policy.allowed_vlans.contains(&vid) {
            flags |= VLAN_ALLOWED;
        }
        if policy.unknown_dst_drop_vlans.contains(&vid) {
            flags |= VLAN_UNKNOWN_DST_DROP;
        }
        let current = vlans
            .get(&u32::from(vid), 0)
            .map_err(map_err(pins, maps::VLAN_POLICY))?;
        if current != flags {
            vlans
                .set(u32::from(vid), flags, 0)
                .map_err(map_err(pins, maps::VLAN_POLICY))?;
        }
    }
    let mut wire: Array<MapData, u32> = open(pins, maps::WIRE_POLICY)?;
    let flags = if policy.vlan_filter {
        WIRE_VLAN_FILTER
    } else {
        0
    };
    wire.set(0, flags, 0)
        .map_err(map_err(pins, maps::WIRE_POLICY))?;
    Ok(())
}

/// Makes the hash map's keys exactly `wanted`: inserts, then removes.
fn sync_set(
    pins: &InterfacePins,
    name: &str,
    wanted: &BTreeSet<[u8; 6]>,
) -> Result<(), DatapathError> {
    let mut map: HashMap<MapData, MacKey, u32> = open(pins, name)?;
    let present: BTreeSet<[u8; 6]> = map
        .keys()
        .collect::<Result<Vec<MacKey>, _>>()
        .map_err(map_err(pins, name))?
        .into_iter()
        .map(|k| k.addr)
        .collect();
    for mac in wanted.difference(&present) {
        map.insert(MacKey::new(*mac), 0, 0)
            .map_err(map_err(pins, name))?;
    }
    for mac in present.difference(wanted) {
        map.remove(&MacKey::new(*mac))
            .map_err(map_err(pins, name))?;
    }
    Ok(())
}
