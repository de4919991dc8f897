//! Anti-spoofing on an endpoint's egress: a container may send only with its
//! own MAC and its own addresses.
//!
//! Checked on every frame the container sends (TC egress on its link):
//! - the source MAC is the endpoint's, and the frame is untagged (a tag
//!   from inside a container is a VLAN-hopping attempt);
//! - IPv4: the source address is the endpoint's;
//! - ARP: sender MAC is the endpoint's, sender IP is the endpoint's or
//!   0.0.0.0 (address probes);
//! - IPv6: the source is the endpoint's, link-local (fe80::/10, needed for
//!   neighbour discovery) or :: (duplicate address detection);
//! - other EtherTypes pass once the MAC check did.
//!
//! Malformed frames are dropped: the kernel never builds them.

use crate::frame::{classify, Classification, FrameBytes, L3};

/// The endpoint has an IPv4 address (`ipv4` is meaningful).
pub const EGRESS_HAS_IPV4: u16 = 1;
/// The endpoint has an IPv6 address (`ipv6` is meaningful).
pub const EGRESS_HAS_IPV6: u16 = 2;
/// Anti-spoofing is on (`spoofcheck=on`): frames that fail the check are
/// dropped. Without it the program only counts.
pub const EGRESS_ENFORCE: u16 = 4;

/// What one endpoint may send as, in the egress program's config map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressConfig {
    pub mac: [u8; 6],
    pub flags: u16,
    pub ipv4: [u8; 4],
    pub _pad: [u8; 4],
    pub ipv6: [u8; 16],
}

/// Endpoint counter slots (per-CPU array in the endpoint object): what the
/// endpoint sent, what anti-spoofing dropped, and what it received by any
/// path (from the LAN, and from other endpoints on the same parent, which
/// macvlan bridge mode switches without touching the parent).
pub const EGRESS_SENT: u32 = 0;
pub const EGRESS_SPOOFED: u32 = 1;
pub const ENDPOINT_RECEIVED: u32 = 2;
/// Spare slots leave room for new counters without changing the map.
pub const EGRESS_SLOTS: u32 = 8;

/// Map and program names in the endpoint object.
pub const EGRESS_PROGRAM: &str = "netvlan_egress";
/// Counts what the endpoint receives (TC ingress on its link).
pub const INGRESS_PROGRAM: &str = "netvlan_ingress";
pub const EGRESS_CONFIG: &str = "EGRESS_CONFIG";
pub const EGRESS_STATS: &str = "EGRESS_STATS";
/// Every map of the endpoint (TC) object, each pinned per endpoint; a test
/// in netvlan-userspace checks this list against the built object.
pub const ENDPOINT_MAPS: &[&str] = &[
    EGRESS_CONFIG,
    EGRESS_STATS,
    crate::trace::TRACE_RING,
    crate::trace::TRACE_CONFIG,
    crate::trace::TRACE_LOST,
];

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]` byte arrays and a u16, padding explicit.
    unsafe impl aya::Pod for super::EgressConfig {}
}

/// Whether the endpoint may send this frame.
#[inline(always)]
pub fn egress_allowed<F: FrameBytes + ?Sized>(frame: &F, cfg: &EgressConfig) -> bool {
    let Classification::Classified(f) = classify(frame) else {
        return false;
    };
    if f.src != cfg.mac || f.tags != 0 {
        return false;
    }
    let l3 = usize::from(f.l3_offset);
    match f.l3 {
        L3::Ipv4 => {
            let Some(src) = frame.read::<4>(l3 + 12) else {
                return false;
            };
            cfg.flags & EGRESS_HAS_IPV4 != 0 && src == cfg.ipv4
        }
        L3::Arp => {
            let (Some(sender_mac), Some(sender_ip)) =
                (frame.read::<6>(l3 + 8), frame.read::<4>(l3 + 14))
            else {
                return false;
            };
            sender_mac == cfg.mac
                && (sender_ip == [0; 4]
                    || (cfg.flags & EGRESS_HAS_IPV4 != 0 && sender_ip == cfg.ipv4))
        }
        L3::Ipv6 => {
            let Some(src) = frame.read::<16>(l3 + 8) else {
                return false;
            };
            let link_local = src[0] == 0xfe && src[1] & 0xc0 == 0x80;
            let unspecified = src == [0; 16];
            link_local || unspecified || (cfg.flags & EGRESS_HAS_IPV6 != 0 && src == cfg.ipv6)
        }
        L3::Other => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0x42, 10, 0, 0, 2];
    const OTHER_MAC: [u8; 6] = [2, 0x42, 10, 0, 0, 9];

    fn cfg() -> EgressConfig {
        let mut ipv6 = [0u8; 16];
        ipv6[..4].copy_from_slice(&[0xfd, 0, 0, 0x86]);
        ipv6[15] = 2;
        EgressConfig {
            mac: MAC,
            flags: EGRESS_HAS_IPV4 | EGRESS_HAS_IPV6,
            ipv4: [10, 0, 0, 2],
            _pad: [0; 4],
            ipv6,
        }
    }

    fn eth(src: [u8; 6], ethertype: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f.resize(f.len().max(60), 0);
        f
    }

    fn ipv4(src: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0] = 0x45;
        h[12..16].copy_from_slice(&src);
        h
    }

    fn arp(sender_mac: [u8; 6], sender_ip: [u8; 4]) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&sender_mac);
        a.extend_from_slice(&sender_ip);
        a.extend_from_slice(&[0; 10]);
        a
    }

    fn ipv6(src: [u8; 16]) -> Vec<u8> {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[8..24].copy_from_slice(&src);
        h
    }

    #[test]
    fn own_addresses_pass_and_foreign_ones_do_not() {
        let c = cfg();
        assert!(egress_allowed(
            eth(MAC, 0x0800, &ipv4([10, 0, 0, 2])).as_slice(),
            &c
        ));
        assert!(
            !egress_allowed(eth(MAC, 0x0800, &ipv4([10, 0, 0, 3])).as_slice(), &c),
            "foreign IPv4"
        );
        assert!(
            !egress_allowed(eth(OTHER_MAC, 0x0800, &ipv4([10, 0, 0, 2])).as_slice(), &c),
            "foreign MAC"
        );
        assert!(egress_allowed(
            eth(MAC, 0x0806, &arp(MAC, [10, 0, 0, 2])).as_slice(),
            &c
        ));
        assert!(
            egress_allowed(eth(MAC, 0x0806, &arp(MAC, [0; 4])).as_slice(), &c),
            "ARP probe"
        );
        assert!(
            !egress_allowed(
                eth(MAC, 0x0806, &arp(OTHER_MAC, [10, 0, 0, 2])).as_slice(),
                &c
            ),
            "ARP sender MAC"
        );
        assert!(
            !egress_allowed(eth(MAC, 0x0806, &arp(MAC, [10, 0, 0, 7])).as_slice(), &c),
            "ARP sender IP"
        );
        assert!(egress_allowed(
            eth(MAC, 0x86dd, &ipv6(c.ipv6)).as_slice(),
            &c
        ));
        let mut link_local = [0u8; 16];
        link_local[..2].copy_from_slice(&[0xfe, 0x80]);
        assert!(egress_allowed(
            eth(MAC, 0x86dd, &ipv6(link_local)).as_slice(),
            &c
        ));
        assert!(
            egress_allowed(eth(MAC, 0x86dd, &ipv6([0; 16])).as_slice(), &c),
            "DAD"
        );
        let mut foreign = c.ipv6;
        foreign[15] = 3;
        assert!(
            !egress_allowed(eth(MAC, 0x86dd, &ipv6(foreign)).as_slice(), &c),
            "foreign IPv6"
        );
        assert!(
            egress_allowed(eth(MAC, 0x88cc, &[0; 20]).as_slice(), &c),
            "LLDP-like other EtherType"
        );
    }

    #[test]
    fn tagged_truncated_and_addressless_frames_are_refused() {
        let c = cfg();
        let mut tagged = eth(MAC, 0x8100, &[0, 10, 0x08, 0x00]);
        tagged.extend_from_slice(&ipv4([10, 0, 0, 2]));
        assert!(
            !egress_allowed(tagged.as_slice(), &c),
            "VLAN hop from a container"
        );
        let cut = &eth(MAC, 0x0800, &ipv4([10, 0, 0, 2]))[..20];
        assert!(!egress_allowed(cut, &c), "cut IPv4 header");
        let no_v4 = EgressConfig {
            flags: EGRESS_HAS_IPV6,
            ..c
        };
        assert!(!egress_allowed(
            eth(MAC, 0x0800, &ipv4([10, 0, 0, 2])).as_slice(),
            &no_v4
        ));
        assert!(!egress_allowed(&[0u8; 10][..], &c));
    }

    #[test]
    fn config_has_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<EgressConfig>(), 32);
    }
}
