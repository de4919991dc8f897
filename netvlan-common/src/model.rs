//! A host model of one wire's maps: the policy state [`decide`] reads
//! through [`PolicyView`] (with the MAC-sprawl guard's learning table and
//! per-VLAN state, which it writes), and the counters the wire program
//! keeps for every frame. The decision's unit tests, the differential test
//! and the bench all predict the program with it, so there is one model to
//! keep in step with the program, not one per user.
//!
//! The model counts by registration, not slot: which slot a
//! registration's counters live in (direct or hashed) is the control
//! plane's choice ([`Placement`] models its rule), and the program must
//! count the same whatever it chose. Tests map the model's
//! per-registration counters to the slots they published.
//!
//! Behind the `model` feature (it needs std's collections).

extern crate std;

use core::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::{
    decision::{decide, vlan_drop_index, Context, Learning, PolicyView, Source, Verdict},
    frame::{classify, Anomaly, Classification, Frame},
    maps::{
        direct_slot, spill_bit, CounterSlot, Counters, DstCounters, DstKey, DstTables, LearnKey,
        MacGuardState, VlanCounters, DST_CAPACITY,
    },
};

/// Where registrations' counters live, by the control plane's rule, in
/// registration order: a registration takes its direct slot when no other
/// registration uses that slot (neither in `DST_DIRECT` nor as a hashed
/// slot: `DST_STATS[i]` must have one owner); otherwise it takes the
/// lowest slot no registration uses, published in `DST_SLOTS`, and its
/// direct slot's `DST_SPILL` bit is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// `DST_DIRECT`: slot -> its registration.
    pub direct: BTreeMap<u32, DstKey>,
    /// `DST_SLOTS`: registration -> slot.
    pub hashed: BTreeMap<DstKey, u32>,
    /// `DST_SPILL`: the words with a bit set, by index.
    pub spill: BTreeMap<u32, u64>,
}

impl Placement {
    /// Places `registrations` (duplicates once). `None` when there are more
    /// than `DST_CAPACITY` (the control plane refuses the registration).
    pub fn new(registrations: impl IntoIterator<Item = DstKey>) -> Option<Placement> {
        let mut p = Placement::default();
        let mut used = BTreeMap::new();
        let mut next_free = 0u32;
        for key in registrations {
            if p.slot_of(&key).is_some() {
                continue;
            }
            match direct_slot(&key.mac) {
                i if !used.contains_key(&i) => {
                    p.direct.insert(i, key);
                    used.insert(i, key);
                }
                _ => {
                    while used.contains_key(&next_free) {
                        next_free += 1;
                    }
                    if next_free >= DST_CAPACITY {
                        return None;
                    }
                    p.hashed.insert(key, next_free);
                    used.insert(next_free, key);
                    let (word, bit) = spill_bit(direct_slot(&key.mac));
                    *p.spill.entry(word).or_insert(0) |= bit;
                }
            }
        }
        Some(p)
    }

    /// The slot of a placed registration.
    pub fn slot_of(&self, key: &DstKey) -> Option<u32> {
        self.hashed
            .get(key)
            .copied()
            .or_else(|| Some(direct_slot(&key.mac)).filter(|i| self.direct.get(i) == Some(key)))
    }

    /// The registration whose counters live in `slot`.
    pub fn owner(&self, slot: u32) -> Option<DstKey> {
        self.direct.get(&slot).copied().or_else(|| {
            self.hashed
                .iter()
                .find_map(|(key, s)| (*s == slot).then_some(*key))
        })
    }
}

impl DstTables for Placement {
    fn direct(&self, slot: u32) -> Option<&DstKey> {
        self.direct.get(&slot)
    }
    fn spilled(&self, slot: u32) -> bool {
        let (word, bit) = spill_bit(slot);
        self.spill.get(&word).is_some_and(|w| w & bit != 0)
    }
    fn hashed(&self, key: &DstKey) -> Option<u32> {
        self.hashed.get(key).copied()
    }
}

/// The policy maps of one wire, as the control plane fills them, plus the
/// guard's learning state, as the program updates it.
#[derive(Debug, Default)]
pub struct WireModel {
    /// `VLAN_POLICY`, by VLAN (0 = untagged); a missing VLAN has only
    /// [`WireModel::every_vlan`].
    pub vlans: HashMap<u16, u32>,
    /// Flags the control plane writes into every VLAN's entry, listed or
    /// not (`VLAN_WIRE_FILTER`, `VLAN_DENY_LIST`).
    pub every_vlan: u32,
    /// `DST_DIRECT` and `DST_SLOTS` together: the registered destinations.
    pub registered: HashSet<DstKey>,
    /// `DENY_MACS`.
    pub denied: HashSet<[u8; 6]>,
    /// `ENDPOINT_IPS` entries without `IP_NOT_REGISTERED` (IPv4-mapped).
    pub registered_ips: HashSet<[u8; 16]>,
    /// `ENDPOINT_IPS` entries with `IP_GATEWAY`.
    pub gateway_ips: HashSet<[u8; 16]>,
    /// `MAC_LEARN`: the MACs the guard learned.
    pub learned: RefCell<HashSet<LearnKey>>,
    /// `MAC_GUARD`: per-VLAN state of the guard (without the time of the
    /// last over-limit frame, which the model cannot know).
    pub guard: RefCell<BTreeMap<u16, MacGuardState>>,
}

impl WireModel {
    /// `VLAN_POLICY[vid]` as the program reads it.
    pub fn vlan_flags(&self, vid: u16) -> u32 {
        self.vlans.get(&vid).copied().unwrap_or(0) | self.every_vlan
    }

    /// Frames over a guard's limit, on every VLAN.
    pub fn over_limit_packets(&self) -> u64 {
        self.guard
            .borrow()
            .values()
            .map(|s| s.over_limit_packets)
            .sum()
    }

    /// MACs the guard learned on `vid`.
    pub fn learned_on(&self, vid: u16) -> usize {
        self.learned
            .borrow()
            .iter()
            .filter(|k| k.vid == vid)
            .count()
    }

    /// The registration a unicast frame's destination resolves to, if any.
    pub fn destination(&self, frame: &Frame) -> Option<DstKey> {
        let key = DstKey {
            vid: frame.outer_vid,
            mac: frame.dst,
        };
        (frame.dst[0] & 1 == 0 && self.registered.contains(&key)).then_some(key)
    }

    /// The decision for one classified frame counted as `packets` frames of
    /// `len` bytes in all, with what the program resolved before deciding.
    pub fn decide(&self, frame: &Frame, packets: u64, len: u64) -> Verdict {
        let cx = Context {
            vlan_flags: self.vlan_flags(frame.outer_vid),
            dst_registered: self.destination(frame).is_some(),
            packets,
            len,
        };
        decide(frame, frame, &cx, self)
    }

    /// What the program does with `frame`, counting it as `packets` wire
    /// frames (1 at XDP; at TC, the skb's GSO segments) into `counters` as
    /// the program does (a malformed frame passes, counted as malformed and
    /// anomalous).
    pub fn run(&self, frame: &[u8], packets: u64, counters: &mut WireCounters) -> Verdict {
        let len = frame.len() as u64;
        match classify(frame) {
            Classification::Malformed(a) => {
                for slot in [CounterSlot::Malformed, CounterSlot::Anomaly(a)] {
                    bump(&mut counters.counters, slot.index(), packets, len);
                }
                Verdict::Pass
            }
            Classification::Classified(f) => {
                let vlan = counters.vlans.entry(f.outer_vid).or_default();
                vlan.frames.add(packets, len);
                let dst = self.destination(&f);
                if f.dst[0] & 1 != 0 {
                    vlan.flood.add(packets, len);
                } else if let Some(key) = dst {
                    counters.dsts.entry(key).or_default().rx.add(packets, len);
                } else {
                    vlan.unregistered.add(packets, len);
                }
                for a in Anomaly::ALL {
                    if f.anomalies.contains(a) {
                        let slot = CounterSlot::Anomaly(a).index();
                        bump(&mut counters.counters, slot, packets, len);
                    }
                }
                let verdict = self.decide(&f, packets, len);
                if let Verdict::Drop(reason) = verdict {
                    bump(&mut counters.drops, reason as u32, packets, len);
                    let index = vlan_drop_index(f.outer_vid, reason);
                    bump(&mut counters.vlan_drops, index, packets, len);
                    if let Some(key) = dst {
                        let dst = counters.dsts.entry(key).or_default();
                        dst.dropped.add(packets, len);
                    }
                }
                verdict
            }
        }
    }
}

impl PolicyView for WireModel {
    fn is_denied(&self, src: &[u8; 6]) -> bool {
        self.denied.contains(src)
    }
    fn is_registered_ip(&self, ip: &[u8; 16]) -> bool {
        self.registered_ips.contains(ip)
    }
    fn is_gateway_ip(&self, ip: &[u8; 16]) -> bool {
        self.gateway_ips.contains(ip)
    }
    /// The program's entry carries the denied bit the control plane keeps
    /// in step with the deny list; the model derives it from `denied`.
    fn source(&self, vid: u16, src: &[u8; 6]) -> Source {
        if !self.learned.borrow().contains(&LearnKey { vid, mac: *src }) {
            Source::New
        } else if self.denied.contains(src) {
            Source::LearnedDenied
        } else {
            Source::Learned
        }
    }
    fn learn(&self, vid: u16, src: &[u8; 6], limit: u32, packets: u64, len: u64) -> Learning {
        let key = LearnKey { vid, mac: *src };
        let mut learned = self.learned.borrow_mut();
        let mut guard = self.guard.borrow_mut();
        let state = guard.entry(vid).or_default();
        if learned.contains(&key) {
            Learning::Known
        } else if state.learned >= u64::from(limit) {
            state.over_limit_packets += packets;
            state.over_limit_bytes += len;
            state.last_over_limit_mac = *src;
            Learning::OverLimit
        } else {
            learned.insert(key);
            state.learned += 1;
            Learning::Learned
        }
    }
}

/// The counter maps of one wire, as the program must have them after the
/// frames [`WireModel::run`] saw.
#[derive(Debug, Default)]
pub struct WireCounters {
    /// `COUNTERS`, by slot.
    pub counters: BTreeMap<u32, Counters>,
    /// `VLAN_COUNTERS`, by outer VLAN.
    pub vlans: BTreeMap<u16, VlanCounters>,
    /// `DST_STATS`, by the registration that owns the slot.
    pub dsts: BTreeMap<DstKey, DstCounters>,
    /// `DROPS`, by reason.
    pub drops: BTreeMap<u32, Counters>,
    /// `VLAN_DROPS`, by [`vlan_drop_index`].
    pub vlan_drops: BTreeMap<u32, Counters>,
}

impl WireCounters {
    /// Every frame the program saw: `COUNTERS[Malformed]` plus every
    /// VLAN's `frames` (how userspace computes the total).
    pub fn frames(&self) -> Counters {
        let mut total = self
            .counters
            .get(&CounterSlot::Malformed.index())
            .copied()
            .unwrap_or_default();
        for v in self.vlans.values() {
            total.merge(&v.frames);
        }
        total
    }
}

fn bump<K: Ord>(map: &mut BTreeMap<K, Counters>, key: K, packets: u64, len: u64) {
    map.entry(key).or_default().add(packets, len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::dst_slot;

    fn key(vid: u16, mac: [u8; 6]) -> DstKey {
        DstKey { vid, mac }
    }

    #[test]
    fn a_direct_slot_a_hashed_registration_already_uses_is_not_taken_again() {
        // Two user MACs share direct slot 1: the second takes slot 0
        // (lowest free) in the hash; the netvlan MAC whose direct slot is 0
        // must then go to the hash too, or two registrations would share
        // DST_STATS[0].
        let user = key(0, [0x52, 0x54, 0, 0, 0, 1]);
        let user_same_slot = key(0, [0x52, 0x54, 0, 1, 0, 0]);
        let netvlan = key(0, [2, 0x42, 10, 0, 0, 0]);
        let p = Placement::new([user, user_same_slot, netvlan]).unwrap();
        assert_eq!(p.slot_of(&user), Some(1));
        assert_eq!(p.slot_of(&user_same_slot), Some(0));
        assert_eq!(p.slot_of(&netvlan), Some(2));
        assert_eq!(p.direct, [(1, user)].into());
        assert_eq!(p.spill, [(0, 0b11)].into());
        for k in [user, user_same_slot, netvlan] {
            assert_eq!(dst_slot(&p, k.vid, &k.mac), p.slot_of(&k));
        }
    }

    #[test]
    fn registrations_take_their_direct_slot_and_the_rest_the_lowest_free_one() {
        let a = key(0, [2, 0x42, 10, 0, 0, 1]);
        let same_slot = key(0, [2, 0x42, 10, 1, 0, 1]);
        let other_vlan = key(10, [2, 0x42, 10, 0, 0, 1]);
        let p = Placement::new([a, same_slot, other_vlan, a]).unwrap();
        assert_eq!(p.direct, [(1, a)].into());
        assert_eq!(p.hashed, [(same_slot, 0), (other_vlan, 2)].into());
        assert_eq!(p.owner(2), Some(other_vlan));
        assert_eq!(p.owner(3), None);
    }
}
