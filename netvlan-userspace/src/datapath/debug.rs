//! The wire's debug switch: `decision::VLAN_DEBUG` on every VLAN of the
//! wire's `VLAN_POLICY` (on) or none (off). With it on, the wire program
//! writes an aya-log record for each frame it judges (netvlan-ebpf's
//! `log.rs`), which `netvlan daemon` forwards to its log. A run-time
//! switch, not policy: it lives in the pinned map, so a policy rewrite, an
//! upgrade (the map carries over) and a daemon restart keep it.

use aya::maps::{Array, MapData};
use netvlan_common::{decision::VLAN_DEBUG, maps::VLAN_POLICY};

use super::{object, pins::InterfacePins, policy_maps, DatapathError};

/// aya-log's ring in the wire object. Not pinned: each loaded program has
/// its own, which `netvlan daemon` finds through the program's id (so an
/// upgrade starts an empty one).
pub const LOG_MAP: &str = "AYA_LOGS";

/// Switches the debug records of the wire pinned in `pins` on or off.
pub fn set(pins: &InterfacePins, on: bool) -> Result<(), DatapathError> {
    policy_maps::set_vlan_bit(pins, VLAN_DEBUG, |_| on)
}

/// Whether the wire pinned in `pins` is being debugged (VLAN 0's flags:
/// the switch sets every VLAN alike).
pub fn is_on(pins: &InterfacePins) -> Result<bool, DatapathError> {
    let map: Array<MapData, u32> = object::open_map(pins, VLAN_POLICY)?;
    let flags = map
        .get(&0, 0)
        .map_err(object::read_err(pins, VLAN_POLICY))?;
    Ok(flags & VLAN_DEBUG != 0)
}
