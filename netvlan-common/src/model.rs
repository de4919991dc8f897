//! A host model of one wire's maps: the policy state [`decide`] reads
//! through [`PolicyView`] (with the MAC-sprawl guard's learning table and
//! per-VLAN state, which it writes), and the counters the XDP program
//! keeps for every frame. The decision's unit tests, the differential test
//! and the bench all predict the program with it, so there is one model to
//! keep in step with the program, not one per user.
//!
//! Behind the `model` feature (it needs std's collections).

extern crate std;

use core::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::{
    decision::{decide, vlan_drop_index, DropReason, Learning, PolicyView, Verdict},
    frame::{classify, Anomaly, Classification},
    maps::{CounterSlot, Counters, LearnKey, MacGuardState},
};

/// The policy maps of one wire, as the control plane fills them, plus the
/// guard's learning state, as the program updates it.
#[derive(Debug, Default)]
pub struct WireModel {
    /// `WIRE_POLICY[0]`.
    pub wire: u32,
    /// `VLAN_POLICY`, by VLAN (0 = untagged); a missing VLAN has no flags.
    pub vlans: HashMap<u16, u32>,
    /// `ENDPOINT_MACS`.
    pub registered: HashSet<[u8; 6]>,
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

    /// What the program does with `frame`, counting it into `counters` as
    /// the program does (a malformed frame passes, counted as anomalous).
    pub fn run(&self, frame: &[u8], counters: &mut WireCounters) -> Verdict {
        let len = frame.len() as u64;
        bump(&mut counters.counters, CounterSlot::Frames.index(), len);
        match classify(frame) {
            Classification::Malformed(a) => {
                bump(&mut counters.counters, CounterSlot::Anomaly(a).index(), len);
                Verdict::Pass
            }
            Classification::Classified(f) => {
                bump(&mut counters.vlans, f.outer_vid, len);
                counters.macs.entry(f.dst).or_default().add_frame(len);
                for a in Anomaly::ALL {
                    if f.anomalies.contains(a) {
                        bump(&mut counters.counters, CounterSlot::Anomaly(a).index(), len);
                    }
                }
                let verdict = decide(&f, len, self);
                if let Verdict::Drop(reason) = verdict {
                    bump(&mut counters.drops, reason as u32, len);
                    bump(
                        &mut counters.vlan_drops,
                        vlan_drop_index(f.outer_vid, reason),
                        len,
                    );
                    if reason != DropReason::UnknownDst && self.registered.contains(&f.dst) {
                        bump(&mut counters.mac_drops, (f.dst, reason as u32), len);
                    }
                }
                verdict
            }
        }
    }
}

impl PolicyView for WireModel {
    fn wire_flags(&self) -> u32 {
        self.wire
    }
    fn vlan_flags(&self, vid: u16) -> u32 {
        self.vlans.get(&vid).copied().unwrap_or(0)
    }
    fn is_registered(&self, mac: &[u8; 6]) -> bool {
        self.registered.contains(mac)
    }
    fn is_denied(&self, src: &[u8; 6]) -> bool {
        self.denied.contains(src)
    }
    fn is_registered_ip(&self, ip: &[u8; 16]) -> bool {
        self.registered_ips.contains(ip)
    }
    fn is_gateway_ip(&self, ip: &[u8; 16]) -> bool {
        self.gateway_ips.contains(ip)
    }
    fn learn(&self, vid: u16, src: &[u8; 6], limit: u32, len: u64) -> Learning {
        let key = LearnKey { vid, mac: *src };
        let mut learned = self.learned.borrow_mut();
        let mut guard = self.guard.borrow_mut();
        let state = guard.entry(vid).or_default();
        if learned.contains(&key) {
            Learning::Known
        } else if state.learned >= u64::from(limit) {
            state.over_limit_packets += 1;
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
    /// `VLAN_STATS`, by outer VLAN.
    pub vlans: BTreeMap<u16, Counters>,
    /// `MAC_STATS`, by destination MAC.
    pub macs: HashMap<[u8; 6], Counters>,
    /// `DROPS`, by reason.
    pub drops: BTreeMap<u32, Counters>,
    /// `VLAN_DROPS`, by [`vlan_drop_index`].
    pub vlan_drops: BTreeMap<u32, Counters>,
    /// `MAC_DROPS`: drops per registered destination MAC and reason.
    pub mac_drops: BTreeMap<([u8; 6], u32), Counters>,
}

fn bump<K: Ord>(map: &mut BTreeMap<K, Counters>, key: K, len: u64) {
    map.entry(key).or_default().add_frame(len);
}
