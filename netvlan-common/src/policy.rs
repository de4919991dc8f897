//! The datapath's filtering decision, shared by the XDP program, the host
//! reference model and the differential tests.
//!
//! Policy lives in maps per parent wire (one XDP attachment): wire-wide
//! flags, per-VLAN flags, the MACs registered behind the wire (endpoints and
//! the host's own), and denied source MACs. [`decide`] reads them through
//! [`PolicyView`], so the same decision code runs on both sides.
//!
//! Order of checks, first match wins:
//! 1. source MAC denied ([`DropReason::MacDenied`]);
//! 2. VLAN filter on and the outer VLAN not allowed, or more than one tag
//!    ([`DropReason::VlanNotAllowed`]) — untagged frames always pass this
//!    check, so the host's own untagged traffic on a trunk keeps working;
//! 3. unknown-destination drop on the frame's VLAN and a unicast
//!    destination MAC that is not registered ([`DropReason::UnknownDst`]).
//!    Broadcast and multicast (ARP requests, IPv6 ND) always pass.

use crate::frame::Frame;

/// Wire flag: drop frames on VLANs not marked [`VLAN_ALLOWED`].
pub const WIRE_VLAN_FILTER: u32 = 1;
/// VLAN flag: a network uses this VLAN, or an allow-list names it.
pub const VLAN_ALLOWED: u32 = 1;
/// VLAN flag: drop unicast frames to unregistered MACs on this VLAN.
pub const VLAN_UNKNOWN_DST_DROP: u32 = 2;

/// Why a frame was dropped. The discriminant indexes the drop counters.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    UnknownDst = 0,
    VlanNotAllowed = 1,
    MacDenied = 2,
}

impl DropReason {
    pub const ALL: [DropReason; 3] = [
        DropReason::UnknownDst,
        DropReason::VlanNotAllowed,
        DropReason::MacDenied,
    ];

    /// Stable snake_case name for JSON and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::UnknownDst => "unknown_dst",
            DropReason::VlanNotAllowed => "vlan_not_allowed",
            DropReason::MacDenied => "mac_denied",
        }
    }
}

/// Slots reserved per VLAN in the per-VLAN drop counters (room to grow).
pub const DROP_REASON_SLOTS: u32 = 4;

/// Index of (VLAN, reason) in the per-VLAN drop counter array.
#[inline(always)]
pub const fn vlan_drop_index(vid: u16, reason: DropReason) -> u32 {
    (vid as u32) * DROP_REASON_SLOTS + reason as u32
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop(DropReason),
}

/// Read access to one wire's policy maps.
pub trait PolicyView {
    fn wire_flags(&self) -> u32;
    fn vlan_flags(&self, vid: u16) -> u32;
    /// An endpoint or the host owns this MAC.
    fn is_registered(&self, mac: &[u8; 6]) -> bool;
    fn is_denied(&self, src: &[u8; 6]) -> bool;
}

/// Decides one classified frame. See the module docs for the rules.
#[inline(always)]
pub fn decide<P: PolicyView + ?Sized>(frame: &Frame, policy: &P) -> Verdict {
    if policy.is_denied(&frame.src) {
        return Verdict::Drop(DropReason::MacDenied);
    }
    // One map lookup per frame for the VLAN's flags (this is the XDP hot path).
    let vlan = policy.vlan_flags(frame.outer_vid);
    let filtering = policy.wire_flags() & WIRE_VLAN_FILTER != 0;
    if filtering && frame.tags > 0 && (frame.tags > 1 || vlan & VLAN_ALLOWED == 0) {
        return Verdict::Drop(DropReason::VlanNotAllowed);
    }
    let unicast = frame.dst[0] & 1 == 0;
    if unicast && vlan & VLAN_UNKNOWN_DST_DROP != 0 && !policy.is_registered(&frame.dst) {
        return Verdict::Drop(DropReason::UnknownDst);
    }
    Verdict::Pass
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::frame::{classify, Classification};

    #[derive(Default)]
    struct Model {
        wire: u32,
        vlans: HashMap<u16, u32>,
        registered: HashSet<[u8; 6]>,
        denied: HashSet<[u8; 6]>,
    }

    impl PolicyView for Model {
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
    }

    const ENDPOINT: [u8; 6] = [2, 0x42, 10, 0, 0, 2];
    const STRANGER: [u8; 6] = [2, 0x42, 10, 0, 0, 99];
    const BROADCAST: [u8; 6] = [0xff; 6];

    fn frame(dst: [u8; 6], src: [u8; 6], tags: &[u16]) -> Frame {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&dst);
        bytes.extend_from_slice(&src);
        for (i, vid) in tags.iter().enumerate() {
            let tpid: u16 = if i == 0 && tags.len() > 1 {
                0x88a8
            } else {
                0x8100
            };
            bytes.extend_from_slice(&tpid.to_be_bytes());
            bytes.extend_from_slice(&vid.to_be_bytes());
        }
        bytes.extend_from_slice(&0x88b5u16.to_be_bytes());
        bytes.resize(64, 0);
        match classify(bytes.as_slice()) {
            Classification::Classified(f) => f,
            other => panic!("test frame did not classify: {other:?}"),
        }
    }

    #[test]
    fn with_no_policy_everything_passes() {
        let m = Model::default();
        assert_eq!(
            decide(&frame(STRANGER, STRANGER, &[10, 20]), &m),
            Verdict::Pass
        );
    }

    #[test]
    fn unknown_unicast_is_dropped_only_where_asked_and_broadcast_passes() {
        let mut m = Model::default();
        m.vlans.insert(0, VLAN_UNKNOWN_DST_DROP);
        m.registered.insert(ENDPOINT);
        assert_eq!(
            decide(&frame(STRANGER, ENDPOINT, &[]), &m),
            Verdict::Drop(DropReason::UnknownDst)
        );
        assert_eq!(decide(&frame(ENDPOINT, STRANGER, &[]), &m), Verdict::Pass);
        assert_eq!(decide(&frame(BROADCAST, STRANGER, &[]), &m), Verdict::Pass);
        assert_eq!(
            decide(&frame([0x33, 0x33, 0, 0, 0, 1], STRANGER, &[]), &m),
            Verdict::Pass
        );
        assert_eq!(
            decide(&frame(STRANGER, ENDPOINT, &[10]), &m),
            Verdict::Pass,
            "VLAN 10 did not ask"
        );
    }

    #[test]
    fn vlan_filter_drops_unused_vlans_and_stacked_tags_but_not_untagged() {
        let mut m = Model {
            wire: WIRE_VLAN_FILTER,
            ..Model::default()
        };
        m.vlans.insert(10, VLAN_ALLOWED);
        assert_eq!(decide(&frame(ENDPOINT, STRANGER, &[10]), &m), Verdict::Pass);
        assert_eq!(
            decide(&frame(ENDPOINT, STRANGER, &[20]), &m),
            Verdict::Drop(DropReason::VlanNotAllowed)
        );
        assert_eq!(
            decide(&frame(ENDPOINT, STRANGER, &[10, 20]), &m),
            Verdict::Drop(DropReason::VlanNotAllowed),
            "QinQ inside an allowed VLAN"
        );
        assert_eq!(decide(&frame(ENDPOINT, STRANGER, &[]), &m), Verdict::Pass);
    }

    #[test]
    fn denied_sources_lose_first() {
        let mut m = Model::default();
        m.denied.insert(STRANGER);
        m.vlans.insert(0, VLAN_UNKNOWN_DST_DROP);
        assert_eq!(
            decide(&frame(BROADCAST, STRANGER, &[]), &m),
            Verdict::Drop(DropReason::MacDenied)
        );
    }

    #[test]
    fn vlan_drop_indices_never_collide() {
        let mut seen = HashSet::new();
        for vid in [0u16, 1, 10, 4094, 4095] {
            for r in DropReason::ALL {
                assert!(seen.insert(vlan_drop_index(vid, r)));
                assert!(vlan_drop_index(vid, r) < 4096 * DROP_REASON_SLOTS);
            }
        }
        assert!((DropReason::ALL.len() as u32) <= DROP_REASON_SLOTS);
    }
}
