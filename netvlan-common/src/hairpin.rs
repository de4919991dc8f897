//! The host-access hairpin's decision (`host_access=ebpf`): what the TC
//! egress program on a network's parent link does with a frame.
//!
//! Kernel facts it is built on (see the userspace `datapath::host_access`):
//! a frame the host sends on the parent never reaches a macvlan child, and
//! a child's frame to the host leaves through the parent's egress; both
//! pass this hook. Handing such a frame to the parent's own ingress makes
//! macvlan (or ipvlan) deliver it as if it came from the wire: to the child
//! whose MAC (ipvlan: IP) it carries, or to the host stack.
//!
//! - Unicast from the host (source = the link's MAC) to an endpoint
//!   registered on the link's VLAN ([`crate::maps::dst_slot`]):
//!   [`Action::Redirect`].
//! - Unicast to the host (destination = the link's MAC) from a registered
//!   endpoint: [`Action::Redirect`].
//! - ARP broadcasts and IPv6 solicited-node multicast (`33:33:ff:…`), from
//!   the host or from an endpoint: [`Action::Clone`] to ingress, and the
//!   frame itself goes on to the wire. A bridge-mode macvlan child's
//!   broadcast reaches the other children inside macvlan but never the
//!   host stack (it leaves through the parent's egress, and a device does
//!   not receive what it sends): the clone is what delivers it. At ingress
//!   macvlan hands a clone whose source is a bridge-mode child only to
//!   VEPA children (bridge ones saw it on the way out) and to the host, so
//!   nothing is delivered twice. The host also receives its own requests
//!   back; ARP ignores a request from its own address, and IPv6 DAD a
//!   looped-back solicitation by its nonce.
//! - ipvlan ([`HAIRPIN_IPVLAN`]): children share the link's MAC, so a
//!   frame to that MAC from the host is for a child when its destination
//!   IP is registered (`ENDPOINT_IPS`): [`Action::Redirect`]. The other
//!   direction needs nothing: ipvlan l2 forwards a child's frame to the
//!   shared MAC with no matching child IP to the parent itself.
//! - Everything else (and every malformed frame): [`Action::Pass`], after
//!   reading only the Ethernet header for macvlan.
//!
//! The host's own MACs are registered on the VLAN too, so a frame from
//! the link to another of the host's links would also be redirected; the
//! host never sends one (its own addresses route locally), and macvlan
//! would hand it to the host stack anyway.
//!
//! Child <-> child frames are never hairpinned: whatever the macvlan mode
//! does with them (bridge delivers inside, VEPA and private send them to
//! the switch) stays as it was.

use crate::frame::{classify, Classification, FrameBytes, ETH_HLEN, ETH_P_ARP};

/// Children share the link's MAC and are told apart by IP (ipvlan l2).
pub const HAIRPIN_IPVLAN: u32 = 1;
/// Mark re-injected frames with [`HAIRPIN_MARK`]: set where the wire's TC
/// ingress program runs on the same link and would otherwise see them.
pub const HAIRPIN_MARK_FRAMES: u32 = 2;

/// `skb->mark` of a frame the hairpin re-injected. A redirect within one
/// namespace keeps the mark (`skb_scrub_packet` clears it only across
/// namespaces); the wire's TC program passes such a frame uncounted and
/// clears the mark, so the endpoint (or the host stack) never sees it.
/// A frame the hairpin clones goes on to the wire with its own mark.
pub const HAIRPIN_MARK: u32 = 0x4e56_4850;

/// Name of the hairpin program in the wire object.
pub const HAIRPIN_PROGRAM: &str = "netvlan_hairpin";
/// Name of its configuration global (a [`HairpinConfig`], set at load).
pub const HAIRPIN_CONFIG: &str = "HAIRPIN_CONFIG";

/// What one hairpin instance is for, set when it is loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HairpinConfig {
    /// The link's (the host's) MAC.
    pub mac: [u8; 6],
    /// The VLAN its endpoints are registered on (0 = untagged).
    pub vid: u16,
    /// `HAIRPIN_*` flags.
    pub flags: u32,
}

/// What to do with a frame at the link's egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// On to the wire, untouched.
    Pass,
    /// To the link's own ingress instead of the wire.
    Redirect,
    /// A copy to the link's own ingress, and the frame on to the wire.
    Clone,
}

/// The registrations the decision reads (the wire's maps).
pub trait HairpinView {
    /// A destination registered on `vid` (`DST_DIRECT`/`DST_SLOTS`).
    fn mac_registered(&self, vid: u16, mac: &[u8; 6]) -> bool;
    /// An address in `ENDPOINT_IPS` (IPv4 as IPv4-mapped IPv6).
    fn ip_registered(&self, ip: &[u8; 16]) -> bool;
}

const BROADCAST: [u8; 6] = [0xff; 6];

/// The decision for one frame (see the module's rules).
#[inline(always)]
pub fn decide<F: FrameBytes + ?Sized, V: HairpinView + ?Sized>(
    frame: &F,
    cfg: &HairpinConfig,
    view: &V,
) -> Action {
    let Some(header) = frame.read::<ETH_HLEN>(0) else {
        return Action::Pass;
    };
    let dst = [
        header[0], header[1], header[2], header[3], header[4], header[5],
    ];
    if dst[0] & 1 != 0 {
        let ethertype = u16::from_be_bytes([header[12], header[13]]);
        let arp_broadcast = dst == BROADCAST && ethertype == ETH_P_ARP;
        let solicited_node = dst[0] == 0x33 && dst[1] == 0x33 && dst[2] == 0xff;
        return if arp_broadcast || solicited_node {
            Action::Clone
        } else {
            Action::Pass
        };
    }
    let src = [
        header[6], header[7], header[8], header[9], header[10], header[11],
    ];
    if cfg.flags & HAIRPIN_IPVLAN != 0 {
        if dst != cfg.mac {
            return Action::Pass;
        }
        return match classify(frame) {
            Classification::Classified(f) if view.ip_registered(&f.dst_ip) => Action::Redirect,
            _ => Action::Pass,
        };
    }
    if dst == cfg.mac {
        // To the host: only from one of its endpoints.
        if view.mac_registered(cfg.vid, &src) {
            return Action::Redirect;
        }
        return Action::Pass;
    }
    if src == cfg.mac && view.mac_registered(cfg.vid, &dst) {
        return Action::Redirect;
    }
    Action::Pass
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]` bytes and integers, no implicit padding.
    unsafe impl aya::Pod for super::HairpinConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Frame(Vec<u8>);
    impl FrameBytes for Frame {
        fn frame_len(&self) -> usize {
            self.0.len()
        }
        fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
            self.0.get(offset..offset + N)?.try_into().ok()
        }
    }

    struct View {
        macs: Vec<(u16, [u8; 6])>,
        ips: Vec<[u8; 16]>,
    }
    impl HairpinView for View {
        fn mac_registered(&self, vid: u16, mac: &[u8; 6]) -> bool {
            self.macs.contains(&(vid, *mac))
        }
        fn ip_registered(&self, ip: &[u8; 16]) -> bool {
            self.ips.contains(ip)
        }
    }

    const HOST: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const EP: [u8; 6] = [2, 0x42, 10, 71, 0, 2];
    const OTHER_HOST_LINK: [u8; 6] = [0x52, 0x54, 0, 0, 0, 9];
    const LAN: [u8; 6] = [0x52, 0x54, 0, 0, 0, 7];

    fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Frame {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.resize(60, 0);
        Frame(f)
    }

    fn ipv4(dst: [u8; 6], src: [u8; 6], to: [u8; 4]) -> Frame {
        let mut f = eth(dst, src, 0x0800).0;
        f.truncate(14);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 71, 0, 250]);
        ip[16..20].copy_from_slice(&to);
        f.extend_from_slice(&ip);
        f.resize(60, 0);
        Frame(f)
    }

    fn mapped(v4: [u8; 4]) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&v4);
        a
    }

    fn macvlan(vid: u16) -> (HairpinConfig, View) {
        (
            HairpinConfig {
                mac: HOST,
                vid,
                flags: 0,
            },
            View {
                // The host's MACs are registered too (policy_maps).
                macs: vec![(vid, EP), (vid, HOST), (vid, OTHER_HOST_LINK)],
                ips: vec![],
            },
        )
    }

    #[test]
    fn host_to_a_registered_endpoint_and_back_is_hairpinned() {
        let (cfg, view) = macvlan(0);
        assert_eq!(
            decide(&eth(EP, HOST, 0x0800), &cfg, &view),
            Action::Redirect
        );
        assert_eq!(
            decide(&eth(HOST, EP, 0x86dd), &cfg, &view),
            Action::Redirect
        );
    }

    #[test]
    fn the_vlan_of_the_link_is_the_one_looked_up() {
        let (cfg, view) = macvlan(10);
        assert_eq!(
            decide(&eth(EP, HOST, 0x0800), &cfg, &view),
            Action::Redirect
        );
        let cfg20 = HairpinConfig { vid: 20, ..cfg };
        assert_eq!(decide(&eth(EP, HOST, 0x0800), &cfg20, &view), Action::Pass);
        assert_eq!(decide(&eth(HOST, EP, 0x0800), &cfg20, &view), Action::Pass);
    }

    #[test]
    fn everything_else_goes_to_the_wire_untouched() {
        let (cfg, view) = macvlan(0);
        // host -> LAN, endpoint -> LAN, endpoint -> endpoint (VEPA/private:
        // the switch's job), a LAN MAC -> host.
        for (dst, src) in [(LAN, HOST), (LAN, EP), (EP, EP), (HOST, LAN)] {
            assert_eq!(
                decide(&eth(dst, src, 0x0800), &cfg, &view),
                Action::Pass,
                "{dst:x?} <- {src:x?}"
            );
        }
        // Other broadcasts and multicast: DHCP, all-nodes, IPv4 multicast.
        assert_eq!(
            decide(&eth(BROADCAST, HOST, 0x0800), &cfg, &view),
            Action::Pass
        );
        assert_eq!(
            decide(&eth([0x33, 0x33, 0, 0, 0, 1], HOST, 0x86dd), &cfg, &view),
            Action::Pass
        );
        assert_eq!(
            decide(&eth([1, 0, 0x5e, 0, 0, 1], HOST, 0x0800), &cfg, &view),
            Action::Pass
        );
        // Shorter than an Ethernet header.
        assert_eq!(decide(&Frame(vec![0xff; 13]), &cfg, &view), Action::Pass);
    }

    #[test]
    fn neighbour_resolution_is_cloned_both_ways() {
        let (cfg, view) = macvlan(0);
        let ns = [0x33, 0x33, 0xff, 0, 0, 2];
        for src in [HOST, EP] {
            assert_eq!(
                decide(&eth(BROADCAST, src, 0x0806), &cfg, &view),
                Action::Clone
            );
            assert_eq!(decide(&eth(ns, src, 0x86dd), &cfg, &view), Action::Clone);
        }
    }

    #[test]
    fn ipvlan_tells_children_apart_by_their_registered_address() {
        let cfg = HairpinConfig {
            mac: HOST,
            vid: 0,
            flags: HAIRPIN_IPVLAN,
        };
        let view = View {
            macs: vec![(0, HOST)],
            ips: vec![mapped([10, 71, 0, 2])],
        };
        assert_eq!(
            decide(&ipv4(HOST, HOST, [10, 71, 0, 2]), &cfg, &view),
            Action::Redirect
        );
        assert_eq!(
            decide(&ipv4(HOST, HOST, [10, 71, 0, 3]), &cfg, &view),
            Action::Pass
        );
        assert_eq!(
            decide(&ipv4(LAN, HOST, [10, 71, 0, 2]), &cfg, &view),
            Action::Pass
        );
        assert_eq!(
            decide(&eth(BROADCAST, HOST, 0x0806), &cfg, &view),
            Action::Clone
        );
    }

    #[test]
    fn the_config_has_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<HairpinConfig>(), 12);
    }
}
