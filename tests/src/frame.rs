//! Building raw Ethernet frames for the tests.

pub use netvlan_common::frame::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ETH_P_QINQ_LEGACY,
};

/// IEEE "local experimental" EtherType: no stack will react to it.
pub const ETH_P_EXPERIMENTAL: u16 = 0x88b5;

/// A MAC's bytes in wire order (the frames are built from bytes); parsed
/// and printed through `netvlan_common::Mac`.
pub type Mac = [u8; 6];

pub fn mac_string(mac: &Mac) -> String {
    netvlan_common::Mac(*mac).to_string()
}

/// `aa:bb:cc:dd:ee:ff` as bytes; panics on anything else (test input).
pub fn parse_mac(text: &str) -> Mac {
    text.parse::<netvlan_common::Mac>()
        .unwrap_or_else(|e| panic!("bad MAC: {e}"))
        .octets()
}

/// An Ethernet frame under construction.
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    dst: Mac,
    src: Mac,
    tags: Vec<(u16, u16)>,
    ethertype: u16,
}

impl FrameBuilder {
    pub fn new(dst: Mac, src: Mac) -> Self {
        FrameBuilder {
            dst,
            src,
            tags: Vec::new(),
            ethertype: ETH_P_EXPERIMENTAL,
        }
    }

    /// Adds a tag (outermost first).
    pub fn tag(mut self, tpid: u16, vid: u16) -> Self {
        self.tags.push((tpid, vid));
        self
    }

    pub fn ethertype(mut self, ethertype: u16) -> Self {
        self.ethertype = ethertype;
        self
    }

    /// The frame zero-padded (or, for headers longer than `len`, cut) to
    /// exactly `len` bytes.
    pub fn build(&self, len: usize) -> Vec<u8> {
        let mut f = Vec::with_capacity(len.max(64));
        f.extend_from_slice(&self.dst);
        f.extend_from_slice(&self.src);
        for &(tpid, vid) in &self.tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&self.ethertype.to_be_bytes());
        f.resize(len, 0);
        f
    }
}

/// An IPv4 packet (UDP protocol number, empty payload, valid header
/// checksum) from `src` to `dst`, padded to `len` bytes.
pub fn ipv4_frame(dst_mac: Mac, src_mac: Mac, src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
    let mut frame = FrameBuilder::new(dst_mac, src_mac)
        .ethertype(ETH_P_IP)
        .build(14);
    let mut ip = [0u8; 28];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&28u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let mut sum: u32 = ip[..20]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.resize(len, 0);
    frame
}
