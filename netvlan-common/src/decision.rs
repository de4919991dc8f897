//! The datapath's filtering decision, shared by the XDP program, the host
//! reference model and the differential tests.
//!
//! Policy lives in maps per parent wire (one XDP attachment): per-VLAN
//! flags (wire-wide ones, [`VLAN_WIRE_FILTER`] and [`VLAN_DENY_LIST`],
//! replicated into every VLAN's entry so one array read gives all of it),
//! and denied source MACs. [`decide`] reads them through [`PolicyView`], so
//! the same decision code runs on both sides. Whether the destination is
//! registered is not looked up here: the caller resolved the destination's
//! counter slot already (`maps::DST_DIRECT` / `maps::DST_SLOTS`) and passes
//! the answer, so counting and the unknown-destination check share one
//! lookup.
//!
//! Order of checks, first match wins:
//! 1. the VLAN's flags say the wire has a deny list ([`VLAN_DENY_LIST`])
//!    and the source MAC is on it ([`DropReason::MacDenied`]); on a
//!    guarded VLAN the guard's entry for a learned MAC answers this, so a
//!    frame pays one source-side lookup ([`Source`]);
//! 2. VLAN filter on ([`VLAN_WIRE_FILTER`]) and the outer VLAN not allowed, or more than one tag
//!    ([`DropReason::VlanNotAllowed`]) — untagged frames always pass this
//!    check, so the host's own untagged traffic on a trunk keeps working;
//! 3. MAC-sprawl guard on the frame's VLAN: the source MAC is learned, and
//!    once the VLAN holds its limit of learned MACs, frames from new ones
//!    are dropped ([`DropReason::MacLimit`]) or, with the count action, only
//!    counted. Learned MACs keep passing, like a switch's port security;
//!    the guard's count goes down only when its policy is reset;
//! 4. unknown-destination drop on the frame's VLAN and a unicast
//!    destination MAC that is not registered ([`DropReason::UnknownDst`]).
//!    Broadcast and multicast (ARP requests, IPv6 ND) always pass;
//! 5. for ipvlan (endpoints share the parent's MAC, so the MAC says
//!    nothing): unicast IPv4/IPv6 whose destination address is neither an
//!    endpoint's nor the host's ([`DropReason::UnknownDst`]). Multicast,
//!    broadcast and IPv6 link-local destinations (neighbour discovery)
//!    pass, and so do ARP and other EtherTypes.

use crate::frame::{Addresses, Frame};

/// VLAN flag: a network uses this VLAN, or an allow-list names it.
pub const VLAN_ALLOWED: u32 = 1;
/// VLAN flag: drop unicast frames to unregistered MACs on this VLAN.
pub const VLAN_UNKNOWN_DST_DROP: u32 = 2;
/// VLAN flag, set on every VLAN of a wire whose VLAN filter is on: the wire
/// flag copied into each VLAN's entry, so one array read gives all policy.
pub const VLAN_WIRE_FILTER: u32 = 32;
/// VLAN flag, set on every VLAN of a wire whose deny list is not empty:
/// without it the deny list is not looked up (free when off).
pub const VLAN_DENY_LIST: u32 = 64;
/// VLAN flag: drop unicast IP packets to unregistered addresses (ipvlan).
pub const VLAN_UNKNOWN_IP_DROP: u32 = 16;
/// VLAN flag, not policy: a trace session's filter can match frames on
/// this VLAN, so the wire program reads `TRACE_CONFIG` for them; frames on
/// other VLANs pay nothing beyond the flags they read anyway. Set and
/// cleared by the tracer (`netvlan_common::trace::traces_vlan`); a policy
/// rewrite keeps it ([`VLAN_RUNTIME`]).
pub const VLAN_TRACE: u32 = 128;
/// VLAN flag, not policy: the wire is being debugged (`netvlan datapath
/// debug PARENT on`), so the wire program writes an aya-log record for each
/// frame it judges on this VLAN. Set on every VLAN of the wire or none; a
/// policy rewrite keeps it ([`VLAN_RUNTIME`]).
pub const VLAN_DEBUG: u32 = 256;
/// The VLAN flags that are run-time switches, not policy: a policy rewrite
/// keeps them as they are.
pub const VLAN_RUNTIME: u32 = VLAN_TRACE | VLAN_DEBUG;
/// VLAN flag: the MAC-sprawl guard learns source MACs on this VLAN, up to
/// the limit in the flags' upper half ([`vlan_mac_limit`]).
pub const VLAN_MAC_GUARD: u32 = 4;
/// VLAN flag: over the guard's limit, count frames from new MACs but let
/// them pass (`max_macs_action=count`).
pub const VLAN_MAC_GUARD_COUNT_ONLY: u32 = 8;
/// The guard's limit lives in the upper 16 bits of the VLAN's flags, so the
/// hot path still reads one array entry per frame.
const VLAN_MAC_LIMIT_SHIFT: u32 = 16;
/// The largest `max_macs` one VLAN can have (the flags' 16 bits, and well
/// under the learning table's size; see `maps::MAC_LEARN_CAPACITY`).
pub const MAX_MACS_LIMIT: u32 = 16_384;
const _: () = assert!(MAX_MACS_LIMIT < 1 << (32 - VLAN_MAC_LIMIT_SHIFT));

/// The guard's limit encoded in a VLAN's flags.
#[inline(always)]
pub const fn vlan_mac_limit(flags: u32) -> u32 {
    flags >> VLAN_MAC_LIMIT_SHIFT
}

/// VLAN flags with the guard on and `limit` learned MACs allowed (at most
/// [`MAX_MACS_LIMIT`]; larger values are clamped).
pub const fn with_mac_limit(flags: u32, limit: u32, count_only: bool) -> u32 {
    let limit = if limit > MAX_MACS_LIMIT {
        MAX_MACS_LIMIT
    } else {
        limit
    };
    let mut out = (flags & 0xffff) | VLAN_MAC_GUARD | (limit << VLAN_MAC_LIMIT_SHIFT);
    if count_only {
        out |= VLAN_MAC_GUARD_COUNT_ONLY;
    }
    out
}

/// `ENDPOINT_IPS` value flag: a configured gateway of a network on the
/// wire. The MAC-sprawl guard never counts (nor drops) a frame whose ARP
/// sender, IPv4 or IPv6 source is a gateway: its MAC is not known in
/// advance, and a guard that locked it out would cut the network off.
pub const IP_GATEWAY: u32 = 1;
/// `ENDPOINT_IPS` value flag: the entry is there for [`IP_GATEWAY`] only;
/// the address is not behind the wire (not registered). Entries with
/// value 0 are registered addresses, as before these flags existed.
pub const IP_NOT_REGISTERED: u32 = 2;

/// Why a frame was dropped. The discriminant indexes the drop counters.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    UnknownDst = 0,
    VlanNotAllowed = 1,
    MacDenied = 2,
    /// The VLAN's MAC-sprawl guard is full and the source MAC is new.
    MacLimit = 3,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::UnknownDst,
        DropReason::VlanNotAllowed,
        DropReason::MacDenied,
        DropReason::MacLimit,
    ];

    /// Stable snake_case name for JSON and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::UnknownDst => "unknown_dst",
            DropReason::VlanNotAllowed => "vlan_not_allowed",
            DropReason::MacDenied => "mac_denied",
            DropReason::MacLimit => "mac_limit",
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

/// What the MAC-sprawl guard made of a frame's source MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learning {
    /// Learned before (or just now by another CPU).
    Known,
    /// New, and there was room: now learned.
    Learned,
    /// New, and the VLAN already holds its limit: not learned. The view
    /// records the event (count, time, MAC).
    OverLimit,
}

/// Read access to one wire's policy maps (and, for the guard, its learning
/// table: [`PolicyView::learn`] is the one call that writes). The VLAN's
/// flags are not read through it: the caller read them once per frame (it
/// counts into the same VLAN's slot) and passes them to [`decide`].
pub trait PolicyView {
    fn is_denied(&self, src: &[u8; 6]) -> bool;
    /// An endpoint or the host owns this address (IPv4-mapped for IPv4).
    fn is_registered_ip(&self, ip: &[u8; 16]) -> bool;
    /// A configured gateway of a network on the wire has this address.
    fn is_gateway_ip(&self, ip: &[u8; 16]) -> bool;
    /// Learns `src` on `vid` unless the VLAN already holds `limit` MACs.
    /// Called only after [`PolicyView::source`] said [`Source::New`].
    /// `packets` and `len` (bytes) are what the frame counts for, for the
    /// over-limit counters.
    fn learn(&self, vid: u16, src: &[u8; 6], limit: u32, packets: u64, len: u64) -> Learning;
    /// What the guard's table says of `src` on `vid` (one lookup, nothing
    /// written): the one source-side lookup of a frame on a guarded VLAN.
    fn source(&self, vid: u16, src: &[u8; 6]) -> Source;
}

/// A source MAC as the MAC-sprawl guard's table (`maps::MAC_LEARN`) has
/// it. A learned entry also says whether the MAC is on the wire's deny
/// list (`maps::MAC_LEARN_DENIED`), so on a guarded VLAN the deny check and
/// the guard share one lookup; only a MAC the guard has not learned is
/// looked up in the deny list itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Not learned on this VLAN.
    New,
    /// Learned, and not on the deny list.
    Learned,
    /// Learned, and on the deny list (denied after it was learned).
    LearnedDenied,
}

/// What [`decide`] is told about one frame besides its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// `VLAN_POLICY[frame.outer_vid]`.
    pub vlan_flags: u32,
    /// The unicast destination (VLAN, MAC) has a counter slot: an endpoint
    /// or the host owns it. Ignored for broadcast and multicast.
    pub dst_registered: bool,
    /// Wire frames this one counts for (a GRO'd skb at TC carries several).
    pub packets: u64,
    /// Bytes it counts for.
    pub len: u64,
}

/// Decides one classified frame. See the module docs for the rules.
///
/// The L3 addresses come from `addresses` (the `frame` itself when it has
/// them), asked for only by the checks that need them: a new source MAC
/// under the guard, and ipvlan's address check.
#[inline(always)]
pub fn decide<P: PolicyView + ?Sized, A: Addresses + ?Sized>(
    frame: &Frame,
    addresses: &A,
    cx: &Context,
    policy: &P,
) -> Verdict {
    let vlan = cx.vlan_flags;
    let guarded = vlan & VLAN_MAC_GUARD != 0;
    // One source-side lookup where the guard is on (its entry answers the
    // deny check too), one where only the deny list is, none where neither.
    let source = if guarded {
        policy.source(frame.outer_vid, &frame.src)
    } else {
        Source::New
    };
    if vlan & VLAN_DENY_LIST != 0 {
        let denied = match source {
            Source::LearnedDenied => true,
            Source::Learned => false,
            Source::New => policy.is_denied(&frame.src),
        };
        if denied {
            return Verdict::Drop(DropReason::MacDenied);
        }
    }
    let filtering = vlan & VLAN_WIRE_FILTER != 0;
    if filtering && frame.tags > 0 && (frame.tags > 1 || vlan & VLAN_ALLOWED == 0) {
        return Verdict::Drop(DropReason::VlanNotAllowed);
    }
    // A learned MAC passes the guard on the lookup above (the steady
    // state); only a new one pays for the gateway check and the learning.
    if guarded
        && source == Source::New
        && !from_gateway(&addresses.src_ip(), policy)
        && policy.learn(
            frame.outer_vid,
            &frame.src,
            vlan_mac_limit(vlan),
            cx.packets,
            cx.len,
        ) == Learning::OverLimit
        && vlan & VLAN_MAC_GUARD_COUNT_ONLY == 0
    {
        return Verdict::Drop(DropReason::MacLimit);
    }
    let unicast = frame.dst[0] & 1 == 0;
    if unicast && vlan & VLAN_UNKNOWN_DST_DROP != 0 && !cx.dst_registered {
        return Verdict::Drop(DropReason::UnknownDst);
    }
    if unicast && vlan & VLAN_UNKNOWN_IP_DROP != 0 {
        let dst_ip = addresses.dst_ip();
        if is_unicast_ip(&dst_ip) && !policy.is_registered_ip(&dst_ip) {
            return Verdict::Drop(DropReason::UnknownDst);
        }
    }
    Verdict::Pass
}

/// The frame's source address (ARP sender, IPv4 or IPv6 source) is a
/// network's gateway: exempt from the MAC-sprawl guard.
#[inline(always)]
fn from_gateway<P: PolicyView + ?Sized>(src_ip: &[u8; 16], policy: &P) -> bool {
    *src_ip != [0; 16] && policy.is_gateway_ip(src_ip)
}

/// A routable unicast destination: not `::` (no IP header), not IPv4
/// multicast or limited broadcast, not IPv6 multicast or link-local.
#[inline(always)]
pub fn is_unicast_ip(ip: &[u8; 16]) -> bool {
    let v4_mapped = ip[..10] == [0; 10] && ip[10] == 0xff && ip[11] == 0xff;
    if v4_mapped {
        let first = ip[12];
        let broadcast = ip[12..] == [0xff; 4];
        return !(first >= 224 || broadcast);
    }
    let unspecified = *ip == [0; 16];
    let multicast = ip[0] == 0xff;
    let link_local = ip[0] == 0xfe && ip[1] & 0xc0 == 0x80;
    !(unspecified || multicast || link_local)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::{
        frame::{classify, Classification},
        maps::{DstKey, LearnKey},
        model::WireModel as Model,
    };

    const ENDPOINT: [u8; 6] = [2, 0x42, 10, 0, 0, 2];
    const STRANGER: [u8; 6] = [2, 0x42, 10, 0, 0, 99];
    const SENDER: [u8; 6] = [2, 0, 0, 0, 0, 0x11];
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
            m.decide(&frame(STRANGER, STRANGER, &[10, 20]), 1, 64),
            Verdict::Pass
        );
    }

    #[test]
    fn unknown_unicast_is_dropped_only_where_asked_and_broadcast_passes() {
        let mut m = Model::default();
        m.vlans.insert(0, VLAN_UNKNOWN_DST_DROP);
        m.registered.insert(DstKey {
            vid: 0,
            mac: ENDPOINT,
        });
        assert_eq!(
            m.decide(&frame(STRANGER, ENDPOINT, &[]), 1, 64),
            Verdict::Drop(DropReason::UnknownDst)
        );
        assert_eq!(
            m.decide(&frame(ENDPOINT, STRANGER, &[]), 1, 64),
            Verdict::Pass
        );
        assert_eq!(
            m.decide(&frame(BROADCAST, STRANGER, &[]), 1, 64),
            Verdict::Pass
        );
        assert_eq!(
            m.decide(&frame([0x33, 0x33, 0, 0, 0, 1], STRANGER, &[]), 1, 64),
            Verdict::Pass
        );
        assert_eq!(
            m.decide(&frame(STRANGER, ENDPOINT, &[10]), 1, 64),
            Verdict::Pass,
            "VLAN 10 did not ask"
        );
    }

    #[test]
    fn a_destination_is_registered_per_vlan_and_decide_trusts_the_resolved_answer() {
        let mut m = Model::default();
        m.vlans.insert(0, VLAN_UNKNOWN_DST_DROP);
        m.vlans.insert(10, VLAN_ALLOWED | VLAN_UNKNOWN_DST_DROP);
        m.registered.insert(DstKey {
            vid: 0,
            mac: ENDPOINT,
        });
        assert_eq!(
            m.decide(&frame(ENDPOINT, STRANGER, &[]), 1, 64),
            Verdict::Pass
        );
        assert_eq!(
            m.decide(&frame(ENDPOINT, STRANGER, &[10]), 1, 64),
            Verdict::Drop(DropReason::UnknownDst),
            "registered on the untagged VLAN only"
        );
        // decide() looks nothing up for the destination: the caller's answer wins.
        let f = frame(STRANGER, ENDPOINT, &[]);
        let cx = |dst_registered| Context {
            vlan_flags: VLAN_UNKNOWN_DST_DROP,
            dst_registered,
            packets: 1,
            len: 64,
        };
        assert_eq!(decide(&f, &f, &cx(true), &m), Verdict::Pass);
        assert_eq!(
            decide(&f, &f, &cx(false), &m),
            Verdict::Drop(DropReason::UnknownDst)
        );
    }

    #[test]
    fn vlan_filter_drops_unused_vlans_and_stacked_tags_but_not_untagged() {
        let mut m = Model {
            every_vlan: VLAN_WIRE_FILTER,
            ..Model::default()
        };
        m.vlans.insert(10, VLAN_ALLOWED);
        assert_eq!(
            m.decide(&frame(ENDPOINT, STRANGER, &[10]), 1, 64),
            Verdict::Pass
        );
        assert_eq!(
            m.decide(&frame(ENDPOINT, STRANGER, &[20]), 1, 64),
            Verdict::Drop(DropReason::VlanNotAllowed)
        );
        assert_eq!(
            m.decide(&frame(ENDPOINT, STRANGER, &[10, 20]), 1, 64),
            Verdict::Drop(DropReason::VlanNotAllowed),
            "QinQ inside an allowed VLAN"
        );
        assert_eq!(
            m.decide(&frame(ENDPOINT, STRANGER, &[]), 1, 64),
            Verdict::Pass
        );
    }

    #[test]
    fn denied_sources_lose_first() {
        let mut m = Model::default();
        m.denied.insert(STRANGER);
        m.vlans.insert(0, VLAN_UNKNOWN_DST_DROP);
        assert_eq!(
            m.decide(&frame(BROADCAST, STRANGER, &[]), 1, 64),
            Verdict::Pass,
            "without VLAN_DENY_LIST the deny list is not read"
        );
        m.every_vlan = VLAN_DENY_LIST;
        assert_eq!(
            m.decide(&frame(BROADCAST, STRANGER, &[]), 1, 64),
            Verdict::Drop(DropReason::MacDenied)
        );
    }

    fn mac(n: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, n]
    }

    #[test]
    fn the_guard_learns_up_to_its_limit_then_drops_only_new_macs() {
        let mut m = Model::default();
        m.vlans.insert(10, with_mac_limit(VLAN_ALLOWED, 2, false));
        let from = |n: u8| m.decide(&frame(BROADCAST, mac(n), &[10]), 1, 64);
        assert_eq!(from(1), Verdict::Pass);
        assert_eq!(from(2), Verdict::Pass);
        assert_eq!(from(3), Verdict::Drop(DropReason::MacLimit));
        assert_eq!(from(1), Verdict::Pass, "learned MACs keep passing");
        assert_eq!(from(3), Verdict::Drop(DropReason::MacLimit));
        assert_eq!(m.over_limit_packets(), 2);
        assert_eq!(
            m.decide(&frame(BROADCAST, mac(4), &[10]), 3, 3 * 64),
            Verdict::Drop(DropReason::MacLimit)
        );
        assert_eq!(
            m.over_limit_packets(),
            5,
            "a GRO'd frame counts as its segments"
        );
        assert_eq!(
            m.decide(&frame(BROADCAST, mac(9), &[]), 1, 64),
            Verdict::Pass,
            "the guard is per VLAN"
        );
    }

    /// An ARP request or IPv4 packet from `src` claiming `sender`.
    fn from_ip(src: [u8; 6], sender: [u8; 4], arp: bool) -> Frame {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&BROADCAST);
        bytes.extend_from_slice(&src);
        if arp {
            bytes.extend_from_slice(&0x0806u16.to_be_bytes());
            bytes.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            bytes.extend_from_slice(&src);
            bytes.extend_from_slice(&sender);
            bytes.extend_from_slice(&[0; 6]);
            bytes.extend_from_slice(&[10, 0, 0, 2]);
        } else {
            bytes.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut header = [0u8; 20];
            header[0] = 0x45;
            header[12..16].copy_from_slice(&sender);
            header[16..20].copy_from_slice(&[10, 0, 0, 2]);
            bytes.extend_from_slice(&header);
        }
        bytes.resize(64, 0);
        match classify(bytes.as_slice()) {
            Classification::Classified(f) => f,
            other => panic!("test frame did not classify: {other:?}"),
        }
    }

    #[test]
    fn a_full_guard_never_locks_out_a_gateway_and_the_gateway_takes_no_slot() {
        let mut m = Model::default();
        m.vlans.insert(0, with_mac_limit(VLAN_ALLOWED, 1, false));
        m.gateway_ips.insert(mapped([10, 0, 0, 1]));
        let gateway_mac = mac(0xfe);
        assert_eq!(
            m.decide(&from_ip(gateway_mac, [10, 0, 0, 1], true), 1, 64),
            Verdict::Pass,
            "the gateway's ARP"
        );
        assert_eq!(
            m.decide(&frame(BROADCAST, mac(1), &[]), 1, 64),
            Verdict::Pass
        );
        assert_eq!(
            m.decide(&frame(BROADCAST, mac(2), &[]), 1, 64),
            Verdict::Drop(DropReason::MacLimit),
            "the one slot went to mac(1), not to the gateway"
        );
        assert_eq!(
            m.decide(&from_ip(gateway_mac, [10, 0, 0, 1], false), 1, 64),
            Verdict::Pass,
            "the gateway's IPv4, with the guard full"
        );
        assert_eq!(
            m.decide(&from_ip(mac(3), [10, 0, 0, 7], false), 1, 64),
            Verdict::Drop(DropReason::MacLimit),
            "any other address still counts"
        );
    }

    #[test]
    fn the_count_action_lets_new_macs_pass_but_records_them() {
        let mut m = Model::default();
        m.vlans.insert(0, with_mac_limit(0, 1, true));
        let from = |n: u8| m.decide(&frame(BROADCAST, mac(n), &[]), 1, 64);
        assert_eq!(from(1), Verdict::Pass);
        assert_eq!(from(2), Verdict::Pass);
        assert_eq!(m.over_limit_packets(), 1);
        assert_eq!(m.learned_on(0), 1, "over-limit MACs are not learned");
    }

    fn ipv4_to(dst_mac: [u8; 6], ip: [u8; 4]) -> Frame {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&dst_mac);
        bytes.extend_from_slice(&STRANGER);
        bytes.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut header = [0u8; 20];
        header[0] = 0x45;
        header[16..20].copy_from_slice(&ip);
        bytes.extend_from_slice(&header);
        bytes.resize(64, 0);
        match classify(bytes.as_slice()) {
            Classification::Classified(f) => f,
            other => panic!("test frame did not classify: {other:?}"),
        }
    }

    fn mapped(ip: [u8; 4]) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[10] = 0xff;
        out[11] = 0xff;
        out[12..].copy_from_slice(&ip);
        out
    }

    #[test]
    fn ipvlan_drops_unicast_to_unknown_addresses_only() {
        let mut m = Model::default();
        m.vlans
            .insert(0, VLAN_UNKNOWN_DST_DROP | VLAN_UNKNOWN_IP_DROP);
        m.registered.insert(DstKey {
            vid: 0,
            mac: ENDPOINT,
        }); // the parent's MAC, shared
        m.registered_ips.insert(mapped([10, 0, 0, 2]));
        let to = |ip| m.decide(&ipv4_to(ENDPOINT, ip), 1, 64);
        assert_eq!(to([10, 0, 0, 2]), Verdict::Pass);
        assert_eq!(to([10, 0, 0, 3]), Verdict::Drop(DropReason::UnknownDst));
        assert_eq!(to([224, 0, 0, 1]), Verdict::Pass, "multicast");
        assert_eq!(to([255, 255, 255, 255]), Verdict::Pass, "broadcast");
        assert_eq!(
            m.decide(&frame(ENDPOINT, STRANGER, &[]), 1, 64),
            Verdict::Pass,
            "not IP: nothing to check"
        );
        let mut v6 = [0u8; 16];
        v6[0] = 0xfe;
        v6[1] = 0x80;
        assert!(!is_unicast_ip(&v6), "link-local is for neighbour discovery");
        assert!(!is_unicast_ip(&[0; 16]));
        v6[0] = 0x20;
        assert!(is_unicast_ip(&v6));
    }

    #[test]
    fn the_guard_limit_round_trips_through_the_flags() {
        let flags = with_mac_limit(VLAN_ALLOWED | VLAN_UNKNOWN_DST_DROP, MAX_MACS_LIMIT, false);
        assert_eq!(vlan_mac_limit(flags), MAX_MACS_LIMIT);
        assert_eq!(
            flags & 0xf,
            VLAN_ALLOWED | VLAN_UNKNOWN_DST_DROP | VLAN_MAC_GUARD
        );
        assert_eq!(
            vlan_mac_limit(with_mac_limit(0, u32::MAX, true)),
            MAX_MACS_LIMIT
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

    /// Addresses that count how often the decision asked for them.
    struct Asked<'a> {
        frame: &'a Frame,
        times: std::cell::Cell<u32>,
    }

    impl Addresses for Asked<'_> {
        fn dst_ip(&self) -> [u8; 16] {
            self.times.set(self.times.get() + 1);
            self.frame.dst_ip
        }
        fn src_ip(&self) -> [u8; 16] {
            self.times.set(self.times.get() + 1);
            self.frame.src_ip
        }
    }

    #[test]
    fn only_a_new_mac_under_the_guard_or_the_ipvlan_check_asks_for_an_address() {
        let f = ipv4_to(ENDPOINT, [10, 0, 0, 2]);
        let mut m = Model::default();
        m.registered_ips.insert(mapped([10, 0, 0, 2]));
        let asked = |m: &Model, flags: u32| {
            let a = Asked {
                frame: &f,
                times: Default::default(),
            };
            let cx = Context {
                vlan_flags: flags,
                dst_registered: true,
                packets: 1,
                len: 64,
            };
            assert_eq!(decide(&f, &a, &cx, m), Verdict::Pass);
            a.times.get()
        };
        let every_check = VLAN_ALLOWED | VLAN_WIRE_FILTER | VLAN_DENY_LIST | VLAN_UNKNOWN_DST_DROP;
        assert_eq!(asked(&m, 0), 0, "policies off");
        assert_eq!(asked(&m, every_check), 0, "no check on an address");
        let guarded = with_mac_limit(every_check, 4, false);
        assert_eq!(asked(&m, guarded), 1, "a new source MAC: the gateway check");
        assert_eq!(asked(&m, guarded), 0, "a learned one: nothing");
        assert_eq!(asked(&m, VLAN_UNKNOWN_IP_DROP), 1, "ipvlan's check");
    }

    /// A policy view that counts the source-side lookups (deny list and
    /// the guard's table) the decision makes.
    struct Lookups<'a> {
        model: &'a Model,
        times: std::cell::Cell<u32>,
    }

    impl PolicyView for Lookups<'_> {
        fn is_denied(&self, src: &[u8; 6]) -> bool {
            self.times.set(self.times.get() + 1);
            self.model.is_denied(src)
        }
        fn is_registered_ip(&self, ip: &[u8; 16]) -> bool {
            self.model.is_registered_ip(ip)
        }
        fn is_gateway_ip(&self, ip: &[u8; 16]) -> bool {
            self.model.is_gateway_ip(ip)
        }
        fn learn(&self, vid: u16, src: &[u8; 6], limit: u32, packets: u64, len: u64) -> Learning {
            self.model.learn(vid, src, limit, packets, len)
        }
        fn source(&self, vid: u16, src: &[u8; 6]) -> Source {
            self.times.set(self.times.get() + 1);
            self.model.source(vid, src)
        }
    }

    #[test]
    fn source_checks_cost_no_lookup_when_off_and_one_when_on() {
        let mut m = Model::default();
        m.denied.insert(STRANGER);
        let run = |m: &Model, flags: u32, src: [u8; 6]| {
            let view = Lookups {
                model: m,
                times: Default::default(),
            };
            let f = frame(ENDPOINT, src, &[]);
            let cx = Context {
                vlan_flags: flags,
                dst_registered: true,
                packets: 1,
                len: 64,
            };
            (decide(&f, &f, &cx, &view), view.times.get())
        };
        let denied = Verdict::Drop(DropReason::MacDenied);
        let guard = with_mac_limit(VLAN_DENY_LIST, 4, false);
        assert_eq!(run(&m, 0, ENDPOINT), (Verdict::Pass, 0), "both off");
        assert_eq!(run(&m, VLAN_DENY_LIST, ENDPOINT), (Verdict::Pass, 1));
        assert_eq!(run(&m, VLAN_DENY_LIST, STRANGER), (denied, 1));
        let guard_only = with_mac_limit(0, 4, false);
        assert_eq!(run(&m, guard_only, ENDPOINT), (Verdict::Pass, 1), "learns");
        assert_eq!(run(&m, guard_only, ENDPOINT), (Verdict::Pass, 1), "learned");
        // Both on: a learned source (the steady state) is one lookup; the
        // guard's entry says it is not denied.
        assert_eq!(run(&m, guard, ENDPOINT), (Verdict::Pass, 1));
        // A source the guard learned and the wire denied later: its entry
        // says so (the control plane marks it), still one lookup.
        m.learned.borrow_mut().insert(LearnKey {
            vid: 0,
            mac: STRANGER,
        });
        assert_eq!(run(&m, guard, STRANGER), (denied, 1));
        // Only a source the guard has not learned pays a second lookup
        // (the deny list) before it may be learned.
        assert_eq!(run(&m, guard, SENDER), (Verdict::Pass, 2), "new: learned");
        assert_eq!(run(&m, guard, SENDER), (Verdict::Pass, 1));
    }
}
