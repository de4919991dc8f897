//! The "all policies on" configuration of the per-packet benchmark: every
//! filter the datapath has, switched on for the benchmark's frames, written
//! into the policy maps of a loaded object, and the verdict each frame must
//! get (from `netvlan_common::decision::decide`, the same decision code the
//! program runs), so a run that took another path fails instead of timing
//! the wrong thing.

use anyhow::{Context, Result};
use aya::{
    maps::{Array, HashMap},
    Ebpf,
};
use netvlan_common::{
    decision::{
        decide, with_mac_limit, Learning, PolicyView, Verdict, VLAN_ALLOWED, VLAN_UNKNOWN_DST_DROP,
        WIRE_VLAN_FILTER,
    },
    frame::{classify, Classification},
    maps::{MacKey, DENY_MACS, ENDPOINT_MACS, VLAN_POLICY, WIRE_POLICY},
};

/// VLAN the tagged benchmark frames use (the inner one for QinQ).
const VLAN: u16 = 10;
/// Registered endpoints besides the one the "hit" frames go to.
const OTHER_ENDPOINTS: u32 = 255;
/// Denied source MACs (none of them the benchmark frames' source).
const DENIED: u32 = 64;
/// The MAC-sprawl guard's limit on untagged and VLAN 10. The frames' one
/// source MAC is learned by the first run, so the timed runs measure the
/// steady state (a lookup in the learning table per frame).
const MAX_MACS: u32 = 1024;

/// Every policy on: VLAN filtering with VLAN 10 allowed (so stacked tags
/// are dropped), unknown-destination drop and a MAC-sprawl guard on
/// untagged and VLAN 10, the hit MAC among 256 registered endpoints, 64
/// denied source MACs.
pub struct AllPolicies {
    registered: Vec<[u8; 6]>,
    denied: Vec<[u8; 6]>,
}

impl AllPolicies {
    pub fn new(endpoint: [u8; 6]) -> Self {
        let registered = std::iter::once(endpoint)
            .chain((0..OTHER_ENDPOINTS).map(|i| mac(0x42, i)))
            .collect();
        let denied = (0..DENIED).map(|i| mac(0xde, i)).collect();
        AllPolicies { registered, denied }
    }

    /// What `--help`-level text calls this configuration.
    pub fn describe(&self) -> String {
        format!(
            "VLAN filter on (VLAN {VLAN} allowed, stacked tags dropped), unknown_dst=drop and \
             max_macs={MAX_MACS} on untagged and VLAN {VLAN}, {} registered endpoint MACs, {} \
             denied source MACs",
            self.registered.len(),
            self.denied.len()
        )
    }

    /// Writes the configuration into a loaded object's policy maps.
    pub fn apply(&self, obj: &mut Ebpf) -> Result<()> {
        let mut wire: Array<_, u32> = map(obj, WIRE_POLICY)?;
        wire.set(0, WIRE_VLAN_FILTER, 0)?;
        let mut vlans: Array<_, u32> = map(obj, VLAN_POLICY)?;
        vlans.set(0, self.vlan_flags(0), 0)?;
        vlans.set(u32::from(VLAN), self.vlan_flags(VLAN), 0)?;
        let mut endpoints: HashMap<_, MacKey, u32> = map(obj, ENDPOINT_MACS)?;
        for m in &self.registered {
            endpoints.insert(MacKey::new(*m), 0, 0)?;
        }
        let mut denied: HashMap<_, MacKey, u32> = map(obj, DENY_MACS)?;
        for m in &self.denied {
            denied.insert(MacKey::new(*m), 0, 0)?;
        }
        Ok(())
    }

    /// The XDP action the program must return for `frame`.
    pub fn expected_action(&self, frame: &[u8]) -> u32 {
        match classify(frame) {
            Classification::Classified(f) => match decide(&f, frame.len() as u64, self) {
                Verdict::Pass => super::xdp::XDP_PASS,
                Verdict::Drop(_) => super::xdp::XDP_DROP,
            },
            Classification::Malformed(_) => super::xdp::XDP_PASS,
        }
    }
}

impl PolicyView for AllPolicies {
    fn wire_flags(&self) -> u32 {
        WIRE_VLAN_FILTER
    }

    fn vlan_flags(&self, vid: u16) -> u32 {
        match vid {
            0 => with_mac_limit(VLAN_UNKNOWN_DST_DROP, MAX_MACS, false),
            VLAN => with_mac_limit(VLAN_ALLOWED | VLAN_UNKNOWN_DST_DROP, MAX_MACS, false),
            _ => 0,
        }
    }

    /// One source MAC, far under the limit: learned or known, never over.
    fn learn(&self, _vid: u16, _src: &[u8; 6], _limit: u32, _len: u64) -> Learning {
        Learning::Known
    }

    fn is_registered(&self, mac: &[u8; 6]) -> bool {
        self.registered.contains(mac)
    }

    fn is_denied(&self, src: &[u8; 6]) -> bool {
        self.denied.contains(src)
    }

    /// ipvlan's address check is off in this (macvlan) configuration.
    fn is_registered_ip(&self, _ip: &[u8; 16]) -> bool {
        true
    }

    /// No gateway in this configuration.
    fn is_gateway_ip(&self, _ip: &[u8; 16]) -> bool {
        false
    }
}

fn mac(kind: u8, i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, kind, 0xbe, b[1], b[2], b[3]]
}

fn map<'a, T>(obj: &'a mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    obj.map_mut(name)
        .with_context(|| format!("the eBPF object has no map {name}"))?
        .try_into()
        .with_context(|| format!("{name} has an unexpected type"))
}
