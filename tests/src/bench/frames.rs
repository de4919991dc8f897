//! The frames the per-packet benchmark feeds to the programs: 64 bytes as
//! XDP sees them (no FCS), untagged, 802.1Q or QinQ, carrying a well-formed
//! IPv4/UDP or IPv6 packet, so no anomaly path is taken.

use netvlan_common::frame::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6};

/// Length of every benchmark frame (the minimum Ethernet frame plus FCS
/// is 64 bytes on the wire; XDP never sees the FCS, so these are 4 bytes
/// longer than the minimum: still a minimum-size-class frame, never a runt).
pub const FRAME_LEN: usize = 64;

/// IPv6 "No Next Header": the rest of the frame is padding.
const IPPROTO_NONE: u8 = 59;
const IPPROTO_UDP: u8 = 17;

/// Source MAC of every benchmark frame.
pub const SRC_MAC: [u8; 6] = [0x02, 0xb0, 0x00, 0x00, 0x00, 0x01];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tagging {
    Untagged,
    /// One 802.1Q tag, VLAN 10.
    Dot1q,
    /// 802.1ad service tag VLAN 100 around an 802.1Q tag VLAN 10.
    Qinq,
}

impl Tagging {
    pub const ALL: [Tagging; 3] = [Tagging::Untagged, Tagging::Dot1q, Tagging::Qinq];

    pub fn name(self) -> &'static str {
        match self {
            Tagging::Untagged => "untagged",
            Tagging::Dot1q => "802.1Q",
            Tagging::Qinq => "QinQ",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ip {
    V4,
    V6,
}

impl Ip {
    pub const ALL: [Ip; 2] = [Ip::V4, Ip::V6];

    pub fn name(self) -> &'static str {
        match self {
            Ip::V4 => "IPv4",
            Ip::V6 => "IPv6",
        }
    }
}

/// A 64-byte frame to `dst`.
pub fn frame(dst: [u8; 6], tagging: Tagging, ip: Ip) -> Vec<u8> {
    let mut f = Vec::with_capacity(FRAME_LEN);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&SRC_MAC);
    let tags: &[(u16, u16)] = match tagging {
        Tagging::Untagged => &[],
        Tagging::Dot1q => &[(ETH_P_8021Q, 10)],
        Tagging::Qinq => &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 10)],
    };
    for &(tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    let l3_len = FRAME_LEN - f.len() - 2;
    match ip {
        Ip::V4 => {
            f.extend_from_slice(&ETH_P_IP.to_be_bytes());
            f.extend_from_slice(&ipv4_udp(l3_len));
        }
        Ip::V6 => {
            f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
            f.extend_from_slice(&ipv6_padding(l3_len));
        }
    }
    debug_assert_eq!(f.len(), FRAME_LEN);
    f
}

/// An IPv4/UDP packet of `len` bytes, 172.31.250.1:9 -> 172.31.250.2:9,
/// with a correct header checksum (UDP checksum 0: none, allowed in IPv4).
fn ipv4_udp(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = IPPROTO_UDP;
    p[12..16].copy_from_slice(&[172, 31, 250, 1]);
    p[16..20].copy_from_slice(&[172, 31, 250, 2]);
    let checksum = !ones_complement_sum(&p[..20]);
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    p[20..22].copy_from_slice(&9u16.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..26].copy_from_slice(&((len - 20) as u16).to_be_bytes());
    p
}

/// An IPv6 packet of `len` bytes, fd00::1 -> fd00::2, next header "none"
/// (a QinQ frame has no room for a UDP header within 64 bytes).
fn ipv6_padding(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    p[6] = IPPROTO_NONE;
    p[7] = 64;
    p[8] = 0xfd;
    p[23] = 1;
    p[24] = 0xfd;
    p[39] = 2;
    p
}

fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

impl Tagging {
    /// The outer VLAN id of the frames (what the wire counts them under).
    pub fn outer_vid(self) -> u16 {
        match self {
            Tagging::Untagged => 0,
            Tagging::Dot1q => 10,
            Tagging::Qinq => 100,
        }
    }

    /// Third octet of the bench network on this tagging's outer VLAN
    /// (172.31.N.0/24).
    fn network(self) -> u8 {
        match self {
            Tagging::Untagged => 250,
            Tagging::Dot1q => 10,
            Tagging::Qinq => 100,
        }
    }
}

/// How the wire finds a destination MAC, so the per-packet cases cover
/// every path: its direct slot found by arithmetic (a netvlan MAC or a
/// user-given one), or a hash lookup behind a spill bit (a user-given MAC
/// whose direct slot another registration took).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacKind {
    /// `02:42` + the endpoint's IPv4 address, as netvlan assigns them.
    Netvlan,
    /// A user-given `--mac`, in its own direct slot.
    User,
    /// A user-given `--mac` whose direct slot a netvlan MAC holds (its
    /// last four bytes fold to the netvlan MAC's last two): in the hash.
    Spilled,
}

impl MacKind {
    pub const ALL: [MacKind; 3] = [MacKind::Netvlan, MacKind::User, MacKind::Spilled];

    pub fn name(self) -> &'static str {
        match self {
            MacKind::Netvlan => "netvlan MAC",
            MacKind::User => "--mac MAC",
            MacKind::Spilled => "--mac MAC (hashed)",
        }
    }
}

/// Endpoints per bench network and MAC kind: hosts 2..=ENDPOINTS+1.
pub const ENDPOINTS: u8 = 200;
/// The host number of the endpoint the "hit" frames go to.
pub const HIT_HOST: u8 = 2;
/// A host number no endpoint has: the "miss" frames go there.
pub const MISS_HOST: u8 = 254;

/// The MAC of endpoint `host` of the bench network on `tagging`'s outer
/// VLAN (172.31.N.host). Registered in the order of [`MacKind::ALL`], the
/// netvlan MACs take their direct slots (N << 8 | host), the user ones
/// theirs (0xb0 + tagging << 8 | 0xbe ^ host: no other MAC's), and the
/// spilled ones find the netvlan MAC of the same host in theirs.
pub fn endpoint_mac(kind: MacKind, tagging: Tagging, host: u8) -> [u8; 6] {
    let net = tagging.network();
    match kind {
        MacKind::Netvlan => [0x02, 0x42, 172, 31, net, host],
        MacKind::User => [0x52, 0x54, 0xb0 | tagging as u8, 0xbe, 0x00, host],
        MacKind::Spilled => [0x52, 0x54, net, 0x00, 0x00, host],
    }
}

/// A MAC nobody registered, on the path of `kind`: a free direct slot for
/// the first two kinds, a spilled slot (the hit endpoint's) for the third,
/// so its miss pays the hash lookup.
pub fn miss_mac(kind: MacKind, tagging: Tagging) -> [u8; 6] {
    match kind {
        MacKind::Spilled => {
            let mut mac = endpoint_mac(kind, tagging, HIT_HOST);
            mac[1] = 0x55;
            mac
        }
        _ => endpoint_mac(kind, tagging, MISS_HOST),
    }
}

/// `02:b1:…` MAC number `i`: locally administered unicast, distinct per `i`.
pub fn numbered_mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0xb1, b[0], b[1], b[2], b[3]]
}

pub use crate::frame::mac_string;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_is_64_bytes_with_a_consistent_l3_header() {
        for t in Tagging::ALL {
            for ip in Ip::ALL {
                let f = frame([2, 0, 0, 0, 0, 2], t, ip);
                assert_eq!(f.len(), FRAME_LEN, "{t:?} {ip:?}");
                let l3 = 14 + 4 * t as usize;
                match ip {
                    Ip::V4 => {
                        assert_eq!(&f[l3 - 2..l3], &[0x08, 0x00]);
                        let total = u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]) as usize;
                        assert_eq!(total, FRAME_LEN - l3);
                        assert_eq!(ones_complement_sum(&f[l3..l3 + 20]), 0xffff);
                    }
                    Ip::V6 => {
                        assert_eq!(&f[l3 - 2..l3], &[0x86, 0xdd]);
                        let payload = u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]) as usize;
                        assert_eq!(payload, FRAME_LEN - l3 - 40);
                    }
                }
            }
        }
    }

    #[test]
    fn each_kind_of_mac_takes_the_path_it_is_named_for() {
        use netvlan_common::maps::direct_slot;
        for t in Tagging::ALL {
            let slot = |kind, host| direct_slot(&endpoint_mac(kind, t, host));
            for host in HIT_HOST..HIT_HOST + ENDPOINTS {
                assert_eq!(slot(MacKind::Spilled, host), slot(MacKind::Netvlan, host));
                for other in Tagging::ALL {
                    for h in HIT_HOST..HIT_HOST + ENDPOINTS {
                        let theirs = |kind| direct_slot(&endpoint_mac(kind, other, h));
                        if (other, h) != (t, host) {
                            assert_ne!(slot(MacKind::User, host), theirs(MacKind::User));
                        }
                        assert_ne!(slot(MacKind::User, host), theirs(MacKind::Netvlan));
                    }
                }
            }
            assert_eq!(
                direct_slot(&miss_mac(MacKind::Spilled, t)),
                slot(MacKind::Netvlan, HIT_HOST)
            );
        }
    }

    #[test]
    fn numbered_macs_are_unicast_and_distinct() {
        assert_ne!(numbered_mac(1), numbered_mac(256));
        assert_eq!(numbered_mac(7)[0] & 1, 0);
        assert_eq!(mac_string(&numbered_mac(258)), "02:b1:00:00:01:02");
    }
}
