//! Writing a wire's policy into its pinned maps.
//!
//! The control plane computes the whole [`WirePolicy`] from every network
//! on the wire and [`apply`] brings the maps to exactly that, without a
//! window where policy is weaker than both the old and the new one: new
//! registrations are published before stale ones are unpublished, and
//! flags are overwritten in place (an array write is atomic per entry).
//! Every map is read with one batch lookup and only the entries that
//! differ are written (batch updates and deletes), so a connect costs the
//! same on an empty wire and on one with 10,000 endpoints.
//!
//! Registered destinations live in slots ([`plan_slots`]): a registration
//! in its direct slot when that is free, any other in the lowest slot no
//! registration uses, published in `DST_SLOTS` behind its direct slot's
//! `DST_SPILL` bit.
//!
//! The MAC-sprawl guard of a VLAN starts empty when it is switched on and
//! is emptied when it is switched off; changing only its limit or action
//! keeps what it learned (lowering the limit under the learned count lets
//! the learned MACs pass and refuses every new one).

use std::collections::{BTreeMap, BTreeSet};

use netvlan_common::{
    decision::{
        with_mac_limit, IP_GATEWAY, IP_NOT_REGISTERED, VLAN_ALLOWED, VLAN_DENY_LIST,
        VLAN_MAC_GUARD, VLAN_RUNTIME, VLAN_UNKNOWN_DST_DROP, VLAN_UNKNOWN_IP_DROP,
        VLAN_WIRE_FILTER,
    },
    maps::{
        self, direct_slot, is_assigned_mac, spill_bit, Counters, DstKey, IpKey, LearnKey,
        MacGuardState, MacKey, DST_CAPACITY, DST_SPILL_WORDS, MAC_LEARN_DENIED, VLAN_SLOTS,
    },
};

use super::{
    object::{batch_err, open_data},
    DatapathError, InterfacePins,
};
use crate::sys::bpf_batch::{BatchError, BatchMap};

/// Everything the wire program enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WirePolicy {
    /// Drop tagged frames on VLANs not in `allowed_vlans` (and stacked tags).
    pub vlan_filter: bool,
    pub allowed_vlans: BTreeSet<u16>,
    /// VLANs (0 = untagged) where unicast to unregistered MACs is dropped.
    pub unknown_dst_drop_vlans: BTreeSet<u16>,
    /// Registered destinations: each endpoint's MAC on its network's outer
    /// VLAN, the host's own MACs on 0 and on every VLAN a network uses.
    pub registered: BTreeSet<DstKey>,
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

impl WirePolicy {
    /// The `VLAN_POLICY` flags of `vid`: the wire-wide switches (VLAN
    /// filter, deny list) are replicated on every VLAN, so the program
    /// reads all its policy in one array entry.
    pub fn vlan_flags(&self, vid: u16) -> u32 {
        let mut flags = 0;
        if self.vlan_filter {
            flags |= VLAN_WIRE_FILTER;
        }
        if !self.denied.is_empty() {
            flags |= VLAN_DENY_LIST;
        }
        if self.allowed_vlans.contains(&vid) {
            flags |= VLAN_ALLOWED;
        }
        if self.unknown_dst_drop_vlans.contains(&vid) {
            flags |= VLAN_UNKNOWN_DST_DROP;
        }
        if self.unknown_ip_drop_vlans.contains(&vid) {
            flags |= VLAN_UNKNOWN_IP_DROP;
        }
        if let Some(guard) = self.mac_guards.get(&vid) {
            flags = with_mac_limit(flags, guard.limit, guard.count_only);
        }
        flags
    }
}

/// The slots of a wire's registered destinations, as its maps hold them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slots {
    /// `DST_DIRECT` by slot (the all-zero key is free; missing = free).
    pub direct: Vec<DstKey>,
    /// `DST_SLOTS`: key -> slot.
    pub hashed: BTreeMap<DstKey, u32>,
    /// `DST_SPILL`'s words (missing = 0). `None` when the wire runs a
    /// program from before it (its pins have no `DST_SPILL`): that program
    /// finds only netvlan-assigned MACs in their direct slot and looks every
    /// other one up in the hash, so nothing else may be placed direct until
    /// `datapath upgrade`.
    pub spill: Option<Vec<u64>>,
}

impl Slots {
    /// No registration, on a wire whose program reads `DST_SPILL`.
    pub fn spilling() -> Slots {
        Slots {
            spill: Some(Vec::new()),
            ..Slots::default()
        }
    }

    /// Whether `key` may take its direct slot, where the program looks.
    fn may_be_direct(&self, key: &DstKey) -> bool {
        self.spill.is_some() || is_assigned_mac(&key.mac)
    }

    /// The key in direct slot `slot` (the free key past the end).
    pub fn direct_at(&self, slot: u32) -> DstKey {
        self.direct.get(slot as usize).copied().unwrap_or_default()
    }

    /// Writes `key` in direct slot `slot`, growing the table as needed.
    pub fn set_direct(&mut self, slot: u32, key: DstKey) {
        if self.direct.len() <= slot as usize {
            self.direct.resize(slot as usize + 1, DstKey::default());
        }
        self.direct[slot as usize] = key;
    }

    /// `key` is in its own direct slot, where the program finds it first.
    fn is_direct(&self, key: &DstKey) -> bool {
        self.direct_at(direct_slot(&key.mac)) == *key
    }

    /// Whether the program looks `key` up in `DST_SLOTS` when its direct
    /// slot holds another key: behind its direct slot's spill bit, or
    /// always on a wire whose program predates `DST_SPILL`.
    pub fn looks_up_hash(&self, key: &DstKey) -> bool {
        let Some(words) = &self.spill else {
            return true;
        };
        let (word, bit) = spill_bit(direct_slot(&key.mac));
        words.get(word as usize).is_some_and(|w| w & bit != 0)
    }

    /// Every registration the program resolves, with its slot: a direct
    /// entry counts only in its own direct slot, and wins over a hashed
    /// entry of the same key (the program looks there first); a hashed
    /// entry counts only behind its spill bit (without it no frame finds
    /// it, so `netvlan check` reports it missing and the next apply sets
    /// the bit).
    pub fn resolved(&self) -> BTreeMap<DstKey, u32> {
        let mut out: BTreeMap<DstKey, u32> = self
            .hashed
            .iter()
            .filter(|(key, _)| self.looks_up_hash(key))
            .map(|(key, slot)| (*key, *slot))
            .collect();
        for (slot, key) in self.direct.iter().enumerate() {
            if !key.is_free() && direct_slot(&key.mac) == slot as u32 {
                out.insert(*key, slot as u32);
            }
        }
        out
    }
}

/// What [`apply`] changes in the slot maps, in the order it writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotChanges {
    /// New direct registrations (their `DST_STATS` slot zeroed first).
    pub new_direct: Vec<(u32, DstKey)>,
    /// New hashed registrations (their `DST_STATS` slot zeroed first).
    pub new_hashed: Vec<(DstKey, u32)>,
    /// `DST_DIRECT` slots to free once the new ones are published.
    pub old_direct: Vec<u32>,
    /// `DST_SLOTS` keys to remove once the new ones are published.
    pub old_hashed: Vec<DstKey>,
    /// `DST_SPILL` words to write before anything is published: the bits
    /// new hashed registrations need, added to those set.
    pub spill: Vec<(u32, u64)>,
    /// `DST_SPILL` words to write last: only the bits the registrations
    /// left in the hash need.
    pub unspill: Vec<(u32, u64)>,
}

impl SlotChanges {
    pub fn is_empty(&self) -> bool {
        self == &SlotChanges::default()
    }
}

/// Every one of the [`DST_CAPACITY`] slots is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotsFull;

/// Plans the slots that bring `current` to `wanted`: kept registrations
/// keep their slot; a new one takes its direct slot when neither a direct
/// nor a hashed registration uses it; every other new one takes the
/// lowest slot no registration uses, and its direct slot's spill bit. Slots of registrations
/// being removed stay taken until the next apply (they are unpublished
/// after the new ones are published, and a frame in between must not count
/// in a new registration's slot).
pub fn plan_slots(current: &Slots, wanted: &BTreeSet<DstKey>) -> Result<SlotChanges, SlotsFull> {
    // One pass over `wanted` with array lookups, one over the slots: a
    // connect costs the same with 10 or 10,000 registrations present.
    let capacity = DST_CAPACITY as usize;
    let mut used = vec![false; capacity];
    let mut kept_direct = vec![false; capacity];
    for (slot, key) in current.direct.iter().enumerate().take(capacity) {
        used[slot] = !key.is_free();
    }
    for slot in current.hashed.values() {
        if let Some(used) = used.get_mut(*slot as usize) {
            *used = true;
        }
    }
    let mut new = Vec::new();
    for key in wanted {
        if current.is_direct(key) {
            kept_direct[direct_slot(&key.mac) as usize] = true;
        } else if !current.hashed.contains_key(key) {
            new.push(*key);
        }
    }
    let mut changes = SlotChanges::default();
    for (slot, key) in current.direct.iter().enumerate().take(capacity) {
        if !key.is_free() && !kept_direct[slot] {
            changes.old_direct.push(slot as u32);
        }
    }
    for key in current.hashed.keys() {
        if !wanted.contains(key) || current.is_direct(key) {
            changes.old_hashed.push(*key);
        }
    }
    let mut rest = Vec::new();
    for key in new {
        let slot = direct_slot(&key.mac);
        if current.may_be_direct(&key) && !used[slot as usize] {
            used[slot as usize] = true;
            changes.new_direct.push((slot, key));
        } else {
            rest.push(key);
        }
    }
    let mut next = 0usize;
    for key in rest {
        while next < capacity && used[next] {
            next += 1;
        }
        if next >= capacity {
            return Err(SlotsFull);
        }
        used[next] = true;
        changes.new_hashed.push((key, next as u32));
    }
    if let Some(words) = &current.spill {
        plan_spill(words, current, &mut changes);
    }
    Ok(changes)
}

/// The `DST_SPILL` writes of `changes`: the bits of every registration
/// the hash holds after them, set before anything is published (a frame
/// to a new hashed one must find its bit) and cleared of the others last.
fn plan_spill(words: &[u64], current: &Slots, changes: &mut SlotChanges) {
    let removed: BTreeSet<&DstKey> = changes.old_hashed.iter().collect();
    let mut wanted = vec![0u64; DST_SPILL_WORDS as usize];
    let hashed = current.hashed.keys().filter(|k| !removed.contains(k));
    for key in hashed.chain(changes.new_hashed.iter().map(|(key, _)| key)) {
        let (word, bit) = spill_bit(direct_slot(&key.mac));
        wanted[word as usize] |= bit;
    }
    for (i, want) in wanted.into_iter().enumerate() {
        let have = words.get(i).copied().unwrap_or(0);
        let during = have | want;
        if during != have {
            changes.spill.push((i as u32, during));
        }
        if want != during {
            changes.unspill.push((i as u32, want));
        }
    }
}

/// The fixed size of the hash maps the control plane fills.
fn capacity_of(name: &str) -> Option<u32> {
    match name {
        maps::DST_SLOTS => Some(DST_CAPACITY),
        maps::ENDPOINT_IPS => Some(maps::ENDPOINT_IPS_CAPACITY),
        maps::DENY_MACS => Some(maps::DENY_MACS_CAPACITY),
        _ => None,
    }
}

/// Runs `f` on the batch view of the map `name` pinned in `pins`.
fn with_batch<T>(
    pins: &InterfacePins,
    name: &'static str,
    f: impl FnOnce(&BatchMap) -> Result<T, BatchError>,
) -> Result<T, DatapathError> {
    let data = open_data(pins, name)?;
    let batch = BatchMap::new(&data, name).map_err(batch_err(pins, name, None))?;
    f(&batch).map_err(batch_err(pins, name, capacity_of(name)))
}

/// The registered destinations' slots, read with one batch lookup of
/// each slot map.
pub fn read_slots(pins: &InterfacePins) -> Result<Slots, DatapathError> {
    let direct = with_batch(pins, maps::DST_DIRECT, |b| b.read_array::<DstKey>())?;
    let hashed = with_batch(pins, maps::DST_SLOTS, |b| b.lookup_all::<DstKey, u32>())?
        .into_iter()
        .map(|(key, slot)| (key, slot[0]))
        .collect();
    let spill = if pins.map(maps::DST_SPILL).exists() {
        Some(with_batch(pins, maps::DST_SPILL, |b| {
            b.read_array::<u64>()
        })?)
    } else {
        None
    };
    Ok(Slots {
        direct,
        hashed,
        spill,
    })
}

/// Sets the `DST_SPILL` bit of every registration in `DST_SLOTS`, for a
/// program about to run on pins from a build without `DST_SPILL` (whose
/// program looked every MAC not in its direct slot up in the hash). The
/// upgrade calls it after the map is created and before the swap; bits
/// already set stay.
pub(super) fn mark_pinned_spills(pins: &InterfacePins) -> Result<(), DatapathError> {
    let slots = read_slots(pins)?;
    let Some(words) = &slots.spill else {
        return Ok(());
    };
    let mut changes = SlotChanges::default();
    plan_spill(words, &slots, &mut changes);
    with_batch(pins, maps::DST_SPILL, |b| b.update(&changes.spill, 0))
}

/// Brings the wire's maps to exactly `policy`; whether they held anything
/// else. A full registration table is refused before anything is written.
pub fn apply(pins: &InterfacePins, policy: &WirePolicy) -> Result<bool, DatapathError> {
    // Registrations first: a MAC that is about to become legitimate must
    // not be dropped while flags change.
    let slots = read_slots(pins)?;
    let changes =
        plan_slots(&slots, &policy.registered).map_err(|SlotsFull| DatapathError::MapFull {
            path: pins.map(maps::DST_SLOTS),
            capacity: DST_CAPACITY,
        })?;
    let mut changed = !changes.is_empty();
    write_slots(pins, &changes)?;

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
    changed |= sync_values(pins, maps::ENDPOINT_IPS, &ips)?;
    let denied = policy
        .denied
        .iter()
        .map(|mac| (MacKey::new(*mac), 0))
        .collect();
    if sync_values(pins, maps::DENY_MACS, &denied)? {
        changed = true;
        mark_denied(pins, &policy.denied)?;
    }
    Ok(write_vlan_flags(pins, policy)? || changed)
}

/// Keeps the denied bit of every learned entry (`maps::MAC_LEARN_DENIED`)
/// in step with `denied`, so a guarded VLAN answers the deny check from
/// the guard's own entry (one lookup per frame). Runs after `DENY_MACS` is
/// written and before the VLAN flags turn a new deny list on; the program
/// marks an entry it learns while a MAC is being denied (it looks
/// `DENY_MACS` up again after the insert), so no learned MAC escapes it.
fn mark_denied(pins: &InterfacePins, denied: &BTreeSet<[u8; 6]>) -> Result<(), DatapathError> {
    let learned = with_batch(pins, maps::MAC_LEARN, |b| b.lookup_all::<LearnKey, u64>())?;
    let marks: Vec<(LearnKey, u64)> = learned
        .into_iter()
        .filter_map(|(key, value)| {
            let was = value[0];
            let now = if denied.contains(&key.mac) {
                was | MAC_LEARN_DENIED
            } else {
                was & !MAC_LEARN_DENIED
            };
            (now != was).then_some((key, now))
        })
        .collect();
    with_batch(pins, maps::MAC_LEARN, |b| b.update(&marks, 0))
}

/// Marks the learned entries of the MACs the pinned `DENY_MACS` holds
/// ([`mark_denied`]): what `datapath upgrade` does to pins of the layout
/// before the denied bit, whose learned entries were never marked. The
/// bit means nothing to such an older program, so it is set before the
/// swap.
pub(super) fn mark_pinned_denied(pins: &InterfacePins) -> Result<(), DatapathError> {
    // A build without the guard (or the deny list) pinned no such map: the
    // upgrade creates it empty, so there is nothing to mark.
    if ![maps::DENY_MACS, maps::MAC_LEARN]
        .iter()
        .all(|name| pins.map(name).exists())
    {
        return Ok(());
    }
    let denied = with_batch(pins, maps::DENY_MACS, |b| b.lookup_all::<MacKey, u32>())?
        .into_iter()
        .map(|(key, _)| key.addr)
        .collect();
    mark_denied(pins, &denied)
}

/// Publishes new slots (counters zeroed first), then unpublishes old ones.
fn write_slots(pins: &InterfacePins, changes: &SlotChanges) -> Result<(), DatapathError> {
    if changes.is_empty() {
        return Ok(());
    }
    let zeroed: Vec<(u32, Counters)> = changes
        .new_direct
        .iter()
        .map(|(slot, _)| *slot)
        .chain(changes.new_hashed.iter().map(|(_, slot)| *slot))
        .map(|slot| (slot, Counters::default()))
        .collect();
    with_batch(pins, maps::DST_STATS, |b| b.update(&zeroed, 0))?;
    with_batch(pins, maps::DST_DROPS, |b| b.update(&zeroed, 0))?;
    if !changes.spill.is_empty() {
        with_batch(pins, maps::DST_SPILL, |b| b.update(&changes.spill, 0))?;
    }
    with_batch(pins, maps::DST_DIRECT, |b| b.update(&changes.new_direct, 0))?;
    with_batch(pins, maps::DST_SLOTS, |b| b.update(&changes.new_hashed, 0))?;
    let freed: Vec<(u32, DstKey)> = changes
        .old_direct
        .iter()
        .map(|slot| (*slot, DstKey::default()))
        .collect();
    with_batch(pins, maps::DST_DIRECT, |b| b.update(&freed, 0))?;
    with_batch(pins, maps::DST_SLOTS, |b| b.delete(&changes.old_hashed))?;
    if !changes.unspill.is_empty() {
        with_batch(pins, maps::DST_SPILL, |b| b.update(&changes.unspill, 0))?;
    }
    Ok(())
}

/// Writes the `VLAN_POLICY` entries whose flags change (one batch read of
/// all 4,096, one batch write of the differences). A guard switched on
/// starts empty (reset before its flags are written); one switched off is
/// emptied after (the program no longer touches it by then).
/// Whether any changed.
fn write_vlan_flags(pins: &InterfacePins, policy: &WirePolicy) -> Result<bool, DatapathError> {
    let current = with_batch(pins, maps::VLAN_POLICY, |b| b.read_array::<u32>())?;
    let mut changed = Vec::new();
    let (mut guard_on, mut guard_off) = (BTreeSet::new(), BTreeSet::new());
    for (vid, was) in current.into_iter().enumerate() {
        let vid = vid as u32;
        if vid >= VLAN_SLOTS {
            continue;
        }
        // Run-time switches (a trace's VLAN_TRACE) are not policy: kept.
        let now = policy.vlan_flags(vid as u16) | (was & VLAN_RUNTIME);
        if was == now {
            continue;
        }
        match (was & VLAN_MAC_GUARD != 0, now & VLAN_MAC_GUARD != 0) {
            (false, true) => guard_on.insert(vid as u16),
            (true, false) => guard_off.insert(vid as u16),
            _ => false,
        };
        changed.push((vid, now));
    }
    reset_guards(pins, &guard_on)?;
    with_batch(pins, maps::VLAN_POLICY, |b| b.update(&changed, 0))?;
    reset_guards(pins, &guard_off)?;
    Ok(!changed.is_empty())
}

/// Sets the run-time VLAN flag `bit` (`decision::VLAN_RUNTIME`) on the
/// VLANs `on` names and clears it on the others, policy bits untouched (one
/// batch read of all 4,096 entries, one batch write of the differences).
pub fn set_vlan_bit(
    pins: &InterfacePins,
    bit: u32,
    on: impl Fn(u16) -> bool,
) -> Result<(), DatapathError> {
    debug_assert_eq!(bit & !VLAN_RUNTIME, 0, "{bit:#x} is policy");
    let current = with_batch(pins, maps::VLAN_POLICY, |b| b.read_array::<u32>())?;
    let changed: Vec<(u32, u32)> = current
        .into_iter()
        .take(VLAN_SLOTS as usize)
        .enumerate()
        .filter_map(|(vid, was)| {
            let now = if on(vid as u16) {
                was | bit
            } else {
                was & !bit
            };
            (now != was).then_some((vid as u32, now))
        })
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    with_batch(pins, maps::VLAN_POLICY, |b| b.update(&changed, 0))
}

/// Forgets what the guards of `vids` learned. Only called while those
/// guards are off, so the program does not touch their entries meanwhile.
fn reset_guards(pins: &InterfacePins, vids: &BTreeSet<u16>) -> Result<(), DatapathError> {
    if vids.is_empty() {
        return Ok(());
    }
    let learned = with_batch(pins, maps::MAC_LEARN, |b| b.lookup_all::<LearnKey, u64>())?;
    let stale: Vec<LearnKey> = learned
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| vids.contains(&key.vid))
        .collect();
    with_batch(pins, maps::MAC_LEARN, |b| delete_present(b, &stale))?;
    let states: Vec<(u32, MacGuardState)> = vids
        .iter()
        .map(|vid| (u32::from(*vid), MacGuardState::default()))
        .collect();
    with_batch(pins, maps::MAC_GUARD, |b| b.update(&states, 0))
}

/// Deletes `keys`, skipping those already gone (the LRU may evict one
/// between the read and the delete).
fn delete_present<K: aya::Pod>(batch: &BatchMap, mut keys: &[K]) -> Result<(), BatchError> {
    while !keys.is_empty() {
        match batch.delete(keys) {
            Ok(()) => return Ok(()),
            Err(BatchError::Syscall { done, source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                keys = &keys[(done as usize + 1).min(keys.len())..];
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes the hash map exactly `wanted`, values included: writes what is
/// missing or different, then removes the rest. Says whether it changed
/// anything.
fn sync_values<K>(
    pins: &InterfacePins,
    name: &'static str,
    wanted: &BTreeMap<K, u32>,
) -> Result<bool, DatapathError>
where
    K: aya::Pod + Ord,
{
    let present: BTreeMap<K, u32> = with_batch(pins, name, |b| b.lookup_all::<K, u32>())?
        .into_iter()
        .map(|(key, value)| (key, value[0]))
        .collect();
    let writes: Vec<(K, u32)> = wanted
        .iter()
        .filter(|(key, value)| present.get(key) != Some(value))
        .map(|(key, value)| (*key, *value))
        .collect();
    let stale: Vec<K> = present
        .keys()
        .filter(|key| !wanted.contains_key(key))
        .copied()
        .collect();
    with_batch(pins, name, |b| {
        b.update(&writes, 0)?;
        b.delete(&stale)
    })?;
    Ok(!writes.is_empty() || !stale.is_empty())
}

/// What a wire's maps register now (what `netvlan check` compares with
/// the stored endpoints).
pub struct Registered {
    /// The destinations a frame finds.
    pub found: BTreeSet<DstKey>,
    /// Every destination the slot maps hold, found or not (a hashed key
    /// without its spill bit takes a slot no frame reaches).
    pub stored: BTreeSet<DstKey>,
    /// The registered endpoint addresses (ipvlan).
    pub ips: BTreeSet<std::net::IpAddr>,
}

/// The destinations and addresses registered in the wire's maps now.
pub fn registered(pins: &InterfacePins) -> Result<Registered, DatapathError> {
    let slots = read_slots(pins)?;
    let found: BTreeSet<DstKey> = slots.resolved().into_keys().collect();
    let stored = found.iter().chain(slots.hashed.keys()).copied().collect();
    let ips = with_batch(pins, maps::ENDPOINT_IPS, |b| b.lookup_all::<IpKey, u32>())?
        .into_iter()
        .filter(|(_, flags)| flags[0] & IP_NOT_REGISTERED == 0)
        .map(|(key, _)| {
            let v6 = std::net::Ipv6Addr::from(key.addr);
            match v6.to_ipv4_mapped() {
                Some(v4) => std::net::IpAddr::V4(v4),
                None => std::net::IpAddr::V6(v6),
            }
        })
        .collect();
    Ok(Registered { found, stored, ips })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netvlan-assigned MAC (`02:42` + an IPv4 address).
    fn assigned(c: u8, d: u8) -> [u8; 6] {
        [0x02, 0x42, 10, 1, c, d]
    }

    fn dst(vid: u16, mac: [u8; 6]) -> DstKey {
        DstKey { vid, mac }
    }

    const USER_MAC: [u8; 6] = [0x5a, 0, 0, 0, 0, 0x09];

    /// `current` after `changes` are written, as the maps would hold it.
    fn written(current: &Slots, changes: &SlotChanges) -> Slots {
        let mut out = current.clone();
        for (slot, key) in &changes.new_direct {
            out.set_direct(*slot, *key);
        }
        for (key, slot) in &changes.new_hashed {
            out.hashed.insert(*key, *slot);
        }
        for slot in &changes.old_direct {
            out.set_direct(*slot, DstKey::default());
        }
        for key in &changes.old_hashed {
            out.hashed.remove(key);
        }
        if let Some(words) = &mut out.spill {
            words.resize(DST_SPILL_WORDS as usize, 0);
            for (i, word) in changes.spill.iter().chain(&changes.unspill) {
                words[*i as usize] = *word;
            }
        }
        out
    }

    /// Whether the program would look `key` up in the hash.
    fn spilled(slots: &Slots, key: &DstKey) -> bool {
        slots.spill.is_some() && slots.looks_up_hash(key)
    }

    #[test]
    fn every_mac_takes_its_direct_slot_and_one_whose_slot_is_taken_spills_to_the_hash() {
        let web = dst(0, assigned(1, 2));
        let user = dst(0, USER_MAC);
        // Same last four bytes folded: the same direct slot as USER_MAC.
        let user_same_slot = dst(0, [0x5a, 0, 0, 9, 0, 0]);
        assert_eq!(direct_slot(&user.mac), direct_slot(&user_same_slot.mac));
        let wanted = [web, user, user_same_slot].into();
        let changes = plan_slots(&Slots::spilling(), &wanted).unwrap();
        assert_eq!(
            changes.new_direct,
            vec![(0x0102, web), (direct_slot(&user.mac), user)]
        );
        assert_eq!(changes.new_hashed, vec![(user_same_slot, 0)]);
        let (word, bit) = spill_bit(direct_slot(&user.mac));
        assert_eq!(changes.spill, vec![(word, bit)], "set before publishing");
        assert!(changes.unspill.is_empty());
        let maps = written(&Slots::spilling(), &changes);
        assert!(spilled(&maps, &user_same_slot));
        assert!(plan_slots(&maps, &wanted).unwrap().is_empty());

        // The last hashed registration behind the bit leaves: it is cleared
        // after the key is unpublished, in the same apply.
        let gone = plan_slots(&maps, &[web, user].into()).unwrap();
        assert_eq!(gone.old_hashed, vec![user_same_slot]);
        assert!(gone.spill.is_empty());
        assert_eq!(gone.unspill, vec![(word, 0)]);
        assert!(!spilled(&written(&maps, &gone), &user_same_slot));
    }

    #[test]
    fn a_hashed_registration_without_its_spill_bit_is_not_resolved_and_the_next_plan_sets_it() {
        let user = dst(0, USER_MAC);
        let user_same_slot = dst(0, [0x5a, 0, 0, 9, 0, 0]);
        let wanted = [user, user_same_slot].into();
        let mut maps = written(
            &Slots::spilling(),
            &plan_slots(&Slots::spilling(), &wanted).unwrap(),
        );
        assert!(maps.resolved().contains_key(&user_same_slot));
        // A writer that published the key but lost the bit (or never set it).
        maps.spill = Some(vec![0; DST_SPILL_WORDS as usize]);
        assert!(
            !maps.resolved().contains_key(&user_same_slot),
            "no frame finds it"
        );
        let repair = plan_slots(&maps, &wanted).unwrap();
        assert!(repair.new_hashed.is_empty() && repair.old_hashed.is_empty());
        let (word, bit) = spill_bit(direct_slot(&user.mac));
        assert_eq!(repair.spill, vec![(word, bit)]);
        assert!(written(&maps, &repair)
            .resolved()
            .contains_key(&user_same_slot));
    }

    #[test]
    fn a_spill_bit_stays_while_a_hashed_registration_needs_it() {
        // 10.1.0.2 and 10.2.0.2 share direct slot 2; two more behind it.
        let a = dst(0, assigned(0, 2));
        let b = dst(0, [0x02, 0x42, 10, 2, 0, 2]);
        let c = dst(7, assigned(0, 2));
        let maps = written(
            &Slots::spilling(),
            &plan_slots(&Slots::spilling(), &[a, b, c].into()).unwrap(),
        );
        assert_eq!(maps.hashed.len(), 2);
        let less = plan_slots(&maps, &[a, c].into()).unwrap();
        assert_eq!(less.old_hashed, vec![b]);
        assert!(
            less.spill.is_empty() && less.unspill.is_empty(),
            "c still needs it"
        );
        assert!(spilled(&written(&maps, &less), &c));
    }

    #[test]
    fn a_wire_running_a_program_without_spill_bits_hashes_every_unassigned_mac() {
        let web = dst(0, assigned(1, 2));
        let user = dst(0, USER_MAC);
        let changes = plan_slots(&Slots::default(), &[web, user].into()).unwrap();
        assert_eq!(changes.new_direct, vec![(0x0102, web)]);
        assert_eq!(changes.new_hashed, vec![(user, 0)]);
        assert!(changes.spill.is_empty() && changes.unspill.is_empty());
        assert!(changes.old_direct.is_empty() && changes.old_hashed.is_empty());
    }

    #[test]
    fn an_assigned_mac_takes_its_direct_slot_and_others_the_lowest_free_one() {
        let web = dst(0, assigned(1, 2));
        let user = dst(0, USER_MAC);
        let changes = plan_slots(&Slots::default(), &[web, user].into()).unwrap();
        assert_eq!(changes.new_direct, vec![(0x0102, web)]);
        assert_eq!(changes.new_hashed, vec![(user, 0)]);
        assert!(changes.old_direct.is_empty() && changes.old_hashed.is_empty());
    }

    #[test]
    fn a_taken_direct_slot_sends_the_next_mac_to_the_hash() {
        // 10.1.0.2 and 10.2.0.2 share the direct slot 2; the same MAC on
        // two VLANs too. The first in key order keeps the direct slot.
        let a = dst(0, assigned(0, 2));
        let b = dst(0, [0x02, 0x42, 10, 2, 0, 2]);
        let tagged = dst(20, assigned(0, 2));
        let changes = plan_slots(&Slots::default(), &[a, b, tagged].into()).unwrap();
        assert_eq!(changes.new_direct, vec![(2, a)]);
        assert_eq!(changes.new_hashed, vec![(b, 0), (tagged, 1)]);
        // A direct slot whose counters a hashed registration uses is taken.
        let current = Slots {
            hashed: [(dst(0, USER_MAC), 5)].into(),
            ..Slots::default()
        };
        let e = dst(0, assigned(0, 5));
        let changes = plan_slots(&current, &[dst(0, USER_MAC), e].into()).unwrap();
        assert_eq!(changes.new_direct, vec![]);
        assert_eq!(changes.new_hashed, vec![(e, 0)]);
    }

    #[test]
    fn slots_stay_stable_and_only_differences_are_written() {
        let keys: BTreeSet<DstKey> = [dst(0, assigned(0, 2)), dst(0, USER_MAC)].into();
        let first = plan_slots(&Slots::default(), &keys).unwrap();
        let maps = written(&Slots::default(), &first);
        assert!(plan_slots(&maps, &keys).unwrap().is_empty());
        // One more registration: only it is written, the others stay.
        let mut more = keys.clone();
        more.insert(dst(0, assigned(0, 3)));
        let next = plan_slots(&maps, &more).unwrap();
        assert_eq!(
            next,
            SlotChanges {
                new_direct: vec![(3, dst(0, assigned(0, 3)))],
                ..SlotChanges::default()
            }
        );
    }

    #[test]
    fn a_removed_slot_is_freed_after_the_apply_and_reused_by_the_next() {
        let user = dst(0, USER_MAC);
        let web = dst(0, assigned(0, 2));
        let maps = written(
            &Slots::default(),
            &plan_slots(&Slots::default(), &[user, web].into()).unwrap(),
        );
        assert_eq!(maps.hashed[&user], 0);
        let other = dst(0, [0x5a, 0, 0, 0, 0, 0x0a]);
        // Removed and added in one apply: the old slot stays taken until
        // the old key is unpublished.
        let swap = plan_slots(&maps, &[web, other].into()).unwrap();
        assert_eq!(swap.old_hashed, vec![user]);
        assert_eq!(swap.new_hashed, vec![(other, 1)]);
        let maps = written(&maps, &swap);
        let removed = plan_slots(&maps, &[web].into()).unwrap();
        assert_eq!(removed.old_hashed, vec![other]);
        let maps = written(&maps, &removed);
        let reused = plan_slots(&maps, &[web, user].into()).unwrap();
        assert_eq!(reused.new_hashed, vec![(user, 0)]);
        // A direct registration removed frees its slot the same way.
        let gone = plan_slots(&maps, &BTreeSet::new()).unwrap();
        assert_eq!(gone.old_direct, vec![2]);
    }

    #[test]
    fn a_full_table_refuses_the_registration_that_does_not_fit() {
        let current = Slots {
            hashed: (0..DST_CAPACITY)
                .map(|i| (dst(1, [0x5a, 0, 0, 0, (i >> 8) as u8, i as u8]), i))
                .collect(),
            ..Slots::default()
        };
        let mut wanted: BTreeSet<DstKey> = current.hashed.keys().copied().collect();
        assert!(plan_slots(&current, &wanted).unwrap().is_empty());
        wanted.insert(dst(0, USER_MAC));
        assert_eq!(plan_slots(&current, &wanted), Err(SlotsFull));
        // An assigned MAC has no free direct slot either: every one is used.
        wanted.remove(&dst(0, USER_MAC));
        wanted.insert(dst(0, assigned(0, 2)));
        assert_eq!(plan_slots(&current, &wanted), Err(SlotsFull));
    }

    #[test]
    fn stray_copies_of_registrations_are_removed() {
        let web = dst(0, assigned(0, 2));
        let mut current = Slots {
            hashed: [(web, 7)].into(),
            ..Slots::default()
        };
        current.set_direct(2, web);
        // A key in a direct slot that is not its own is never matched.
        current.set_direct(9, dst(0, assigned(0, 3)));
        let changes = plan_slots(&current, &[web].into()).unwrap();
        assert_eq!(changes.old_hashed, vec![web]);
        assert_eq!(changes.old_direct, vec![9]);
        assert!(changes.new_direct.is_empty() && changes.new_hashed.is_empty());
    }

    /// A wire's control-plane maps, made by the kernel with the layout's
    /// shapes and pinned in a bpffs directory of the test's own (removed
    /// when dropped). The program is not needed to check what is written.
    struct PinnedMaps {
        pins: InterfacePins,
    }

    impl PinnedMaps {
        fn new(test: &str) -> Self {
            use aya::maps::{Array, HashMap, MapData, PerCpuArray};
            assert!(
                nix::unistd::Uid::effective().is_root(),
                "apply tests pin BPF maps: run them as root"
            );
            let dir = std::path::PathBuf::from(format!(
                "/sys/fs/bpf/netvlan-unit-{test}-{}",
                std::process::id()
            ));
            let netns = crate::sys::netns::NetnsId::current().unwrap();
            let pins = super::super::NamespacePins::new(&dir, netns).interface(1);
            std::fs::create_dir_all(pins.dir()).unwrap();
            let pin = |name: &str, map: &MapData| map.pin(pins.map(name)).unwrap();
            const NO_PREALLOC: u32 = 1;
            let direct =
                Array::<MapData, DstKey>::create(DST_CAPACITY, maps::BPF_F_MMAPABLE).unwrap();
            pin(maps::DST_DIRECT, direct.map());
            let spill = Array::<MapData, u64>::create(DST_SPILL_WORDS, 0).unwrap();
            pin(maps::DST_SPILL, spill.map());
            let slots = HashMap::<MapData, DstKey, u32>::create(DST_CAPACITY, NO_PREALLOC).unwrap();
            pin(maps::DST_SLOTS, slots.map());
            let stats = PerCpuArray::<MapData, Counters>::create(DST_CAPACITY, 0).unwrap();
            pin(maps::DST_STATS, stats.map());
            let drops = Array::<MapData, Counters>::create(DST_CAPACITY, 0).unwrap();
            pin(maps::DST_DROPS, drops.map());
            let ips = HashMap::<MapData, IpKey, u32>::create(1024, NO_PREALLOC).unwrap();
            pin(maps::ENDPOINT_IPS, ips.map());
            let deny = HashMap::<MapData, MacKey, u32>::create(1024, NO_PREALLOC).unwrap();
            pin(maps::DENY_MACS, deny.map());
            let flags = Array::<MapData, u32>::create(VLAN_SLOTS, maps::BPF_F_MMAPABLE).unwrap();
            pin(maps::VLAN_POLICY, flags.map());
            let learn = HashMap::<MapData, LearnKey, u64>::create(1024, 0).unwrap();
            pin(maps::MAC_LEARN, learn.map());
            let guard = Array::<MapData, MacGuardState>::create(VLAN_SLOTS, 0).unwrap();
            pin(maps::MAC_GUARD, guard.map());
            PinnedMaps { pins }
        }

        fn batch<T>(&self, name: &'static str, f: impl FnOnce(&BatchMap) -> T) -> T {
            let data = open_data(&self.pins, name).unwrap();
            f(&BatchMap::new(&data, name).unwrap())
        }

        /// Counts `packets` in a slot on every CPU, as the program would.
        fn count(&self, slot: u32, packets: u64) {
            let c = Counters {
                packets,
                bytes: packets * 64,
            };
            for name in [maps::DST_STATS, maps::DST_DROPS] {
                self.batch(name, |b| b.update(&[(slot, c)], 0)).unwrap();
            }
        }

        fn stats(&self, slot: u32) -> DstCounters {
            let read = |name| {
                self.batch(name, |b| b.lookup_range::<Counters>(slot, 1))
                    .unwrap()[0]
                    .1[0]
            };
            DstCounters {
                rx: read(maps::DST_STATS),
                dropped: read(maps::DST_DROPS),
            }
        }
    }

    impl Drop for PinnedMaps {
        fn drop(&mut self) {
            let namespace = self.pins.dir().parent().unwrap();
            let _ = std::fs::remove_dir_all(namespace.parent().unwrap());
        }
    }

    use aya::maps::IterableMap as _;
    use netvlan_common::maps::DstCounters;

    #[test]
    fn apply_keeps_live_slots_and_zeroes_a_new_slot_before_publishing_it() {
        let maps = PinnedMaps::new("slots");
        let web = dst(0, assigned(0, 2));
        let user = dst(0, USER_MAC);
        let mut policy = WirePolicy {
            registered: [web, user].into(),
            unknown_dst_drop_vlans: [0].into(),
            ..WirePolicy::default()
        };
        // Slot 3 holds counts from a registration gone long ago.
        maps.count(3, 99);
        apply(&maps.pins, &policy).unwrap();
        assert_eq!(
            read_slots(&maps.pins).unwrap().resolved(),
            [(web, 2), (user, 9)].into()
        );
        // Traffic to web; then one more endpoint takes the old slot 3.
        maps.count(2, 5);
        let db = dst(0, assigned(0, 3));
        policy.registered.insert(db);
        apply(&maps.pins, &policy).unwrap();
        assert_eq!(maps.stats(2).rx.packets, 5, "a live slot is never zeroed");
        assert_eq!(
            maps.stats(3),
            DstCounters::default(),
            "a new slot starts at zero"
        );
        assert_eq!(registered(&maps.pins).unwrap().found, policy.registered);
        // Disconnect: only its key goes, the others keep slot and counts.
        policy.registered.remove(&web);
        apply(&maps.pins, &policy).unwrap();
        assert_eq!(
            read_slots(&maps.pins).unwrap().resolved(),
            [(db, 3), (user, 9)].into()
        );
    }

    #[test]
    fn apply_refuses_a_full_table_and_writes_nothing() {
        let maps = PinnedMaps::new("full");
        let fillers: Vec<(DstKey, u32)> = (0..DST_CAPACITY)
            .map(|i| (dst(9, [0x5a, 1, 0, 0, (i >> 8) as u8, i as u8]), i))
            .collect();
        maps.batch(maps::DST_SLOTS, |b| b.update(&fillers, 0))
            .unwrap();
        let mut policy = WirePolicy {
            registered: fillers.iter().map(|(key, _)| *key).collect(),
            ..WirePolicy::default()
        };
        policy.registered.insert(dst(0, assigned(0, 2)));
        policy.unknown_dst_drop_vlans.insert(0);
        let before = read_slots(&maps.pins).unwrap();
        let err = apply(&maps.pins, &policy).unwrap_err();
        assert!(
            err.to_string()
                .contains("DST_SLOTS is full: it holds at most 65536 entries"),
            "{err}"
        );
        assert_eq!(read_slots(&maps.pins).unwrap(), before);
        let flags = maps
            .batch(maps::VLAN_POLICY, |b| b.lookup_range::<u32>(0, 1))
            .unwrap();
        assert_eq!(flags[0].1[0], 0, "no flag written either");
    }

    /// The trace mark is a run-time switch: a policy rewrite of the
    /// marked VLANs keeps it, and clearing it leaves the policy alone.
    #[test]
    fn a_policy_rewrite_keeps_the_trace_mark_and_unmarking_keeps_the_policy() {
        use netvlan_common::decision::VLAN_TRACE;
        let maps = PinnedMaps::new("mark");
        let flags = |maps: &PinnedMaps| -> Vec<u32> {
            maps.batch(maps::VLAN_POLICY, |b| b.read_array::<u32>())
                .unwrap()
        };
        set_vlan_bit(&maps.pins, VLAN_TRACE, |vid| vid == 20 || vid == 30).unwrap();
        let policy = WirePolicy {
            vlan_filter: true,
            allowed_vlans: [20].into(),
            ..WirePolicy::default()
        };
        apply(&maps.pins, &policy).unwrap();
        let now = flags(&maps);
        for (vid, f) in now.iter().enumerate() {
            let marked = vid == 20 || vid == 30;
            assert_eq!(f & VLAN_TRACE != 0, marked, "VLAN {vid}");
            assert_eq!(f & !VLAN_TRACE, policy.vlan_flags(vid as u16), "VLAN {vid}");
        }
        set_vlan_bit(&maps.pins, VLAN_TRACE, |_| false).unwrap();
        let now = flags(&maps);
        for (vid, f) in now.iter().enumerate() {
            assert_eq!(*f, policy.vlan_flags(vid as u16), "VLAN {vid}");
        }
    }

    #[test]
    fn apply_writes_only_the_vlan_flags_that_change_and_resets_a_new_guard() {
        let maps = PinnedMaps::new("flags");
        // A learned MAC left on VLAN 20 by an earlier guard, one on VLAN 30.
        let left = LearnKey {
            vid: 20,
            mac: USER_MAC,
        };
        let other = LearnKey {
            vid: 30,
            mac: USER_MAC,
        };
        maps.batch(maps::MAC_LEARN, |b| {
            b.update(&[(left, 1u64), (other, 1)], 0)
        })
        .unwrap();
        let policy = WirePolicy {
            vlan_filter: true,
            allowed_vlans: [20].into(),
            mac_guards: [(
                20,
                MacGuard {
                    limit: 8,
                    count_only: false,
                },
            )]
            .into(),
            ..WirePolicy::default()
        };
        apply(&maps.pins, &policy).unwrap();
        let flags: Vec<u32> = maps
            .batch(maps::VLAN_POLICY, |b| b.lookup_all::<u32, u32>())
            .unwrap()
            .into_iter()
            .map(|(_, v)| v[0])
            .collect();
        assert_eq!(flags.len(), VLAN_SLOTS as usize);
        for (vid, flags) in flags.iter().enumerate() {
            assert_eq!(*flags, policy.vlan_flags(vid as u16), "VLAN {vid}");
        }
        let learned: Vec<LearnKey> = maps
            .batch(maps::MAC_LEARN, |b| b.lookup_all::<LearnKey, u64>())
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            learned,
            vec![other],
            "the new guard of VLAN 20 starts empty"
        );
        // The same policy again changes nothing: a guard that stays on
        // keeps what it learned.
        maps.batch(maps::MAC_LEARN, |b| b.update(&[(left, 1u64)], 0))
            .unwrap();
        apply(&maps.pins, &policy).unwrap();
        let learned = maps
            .batch(maps::MAC_LEARN, |b| b.lookup_all::<LearnKey, u64>())
            .unwrap();
        assert_eq!(learned.len(), 2, "{learned:?}");
    }

    #[test]
    fn denying_a_learned_mac_marks_its_entries_and_allowing_it_again_clears_them() {
        let maps = PinnedMaps::new("denybit");
        let guard = MacGuard {
            limit: 8,
            count_only: false,
        };
        let mut policy = WirePolicy {
            mac_guards: [(0, guard), (20, guard)].into(),
            ..WirePolicy::default()
        };
        apply(&maps.pins, &policy).unwrap();
        // The guards learned USER_MAC on both VLANs and another MAC on 20.
        let other_mac = [0x52, 0x54, 0, 0, 0, 9];
        let learned = [
            (
                LearnKey {
                    vid: 0,
                    mac: USER_MAC,
                },
                5u64,
            ),
            (
                LearnKey {
                    vid: 20,
                    mac: USER_MAC,
                },
                6,
            ),
            (
                LearnKey {
                    vid: 20,
                    mac: other_mac,
                },
                7,
            ),
        ];
        maps.batch(maps::MAC_LEARN, |b| b.update(&learned, 0))
            .unwrap();
        let table = || -> BTreeMap<LearnKey, u64> {
            maps.batch(maps::MAC_LEARN, |b| b.lookup_all::<LearnKey, u64>())
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k, v[0]))
                .collect()
        };

        policy.denied = [USER_MAC].into();
        apply(&maps.pins, &policy).unwrap();
        let marked: BTreeMap<LearnKey, u64> = learned
            .iter()
            .map(|(k, v)| {
                let bit = if k.mac == USER_MAC {
                    MAC_LEARN_DENIED
                } else {
                    0
                };
                (*k, v | bit)
            })
            .collect();
        assert_eq!(
            table(),
            marked,
            "the denied MAC's entries, and only those, are marked"
        );

        // Marks lost (pins of a build before the bit): upgrade's re-mark
        // from the pinned deny list puts them back.
        maps.batch(maps::MAC_LEARN, |b| b.update(&learned, 0))
            .unwrap();
        mark_pinned_denied(&maps.pins).unwrap();
        assert_eq!(table(), marked);

        policy.denied = [other_mac].into();
        apply(&maps.pins, &policy).unwrap();
        let remarked: BTreeMap<LearnKey, u64> = learned
            .iter()
            .map(|(k, v)| {
                let bit = if k.mac == other_mac {
                    MAC_LEARN_DENIED
                } else {
                    0
                };
                (*k, v | bit)
            })
            .collect();
        assert_eq!(
            table(),
            remarked,
            "allowed again: unmarked; newly denied: marked"
        );
        policy.denied.clear();
        apply(&maps.pins, &policy).unwrap();
        let unmarked: BTreeMap<LearnKey, u64> = learned.into_iter().collect();
        assert_eq!(table(), unmarked, "an empty deny list leaves no mark");
    }

    #[test]
    fn wire_switches_are_replicated_on_every_vlan() {
        let policy = WirePolicy {
            vlan_filter: true,
            allowed_vlans: [0, 20].into(),
            denied: [USER_MAC].into(),
            ..WirePolicy::default()
        };
        for vid in [0, 20, 4095] {
            let flags = policy.vlan_flags(vid);
            assert_eq!(flags & VLAN_WIRE_FILTER, VLAN_WIRE_FILTER, "vid {vid}");
            assert_eq!(flags & VLAN_DENY_LIST, VLAN_DENY_LIST, "vid {vid}");
        }
        assert_eq!(policy.vlan_flags(20) & VLAN_ALLOWED, VLAN_ALLOWED);
        assert_eq!(policy.vlan_flags(30) & VLAN_ALLOWED, 0);
        assert_eq!(WirePolicy::default().vlan_flags(0), 0);
    }
}
