//! Frame classification: Ethernet, up to two VLAN tags, and the L3 header.
//!
//! One implementation for every place that needs it: the XDP program reads
//! the packet through [`FrameBytes`] with verifier-friendly bounds checks,
//! unit tests and fuzzers read a `[u8]`.
//!
//! # Rules
//!
//! - A frame whose L2 header is incomplete (shorter than the 14-byte Ethernet
//!   header, or a VLAN TPID whose 4-byte tag is cut off) is [`Malformed`]: it
//!   has no trustworthy VLAN or MAC, so the datapath counts it only under
//!   its [`Anomaly`].
//! - Every other frame is [`Classified`]: it is counted by VLAN and by
//!   destination MAC, and additionally under each anomaly flag it carries
//!   (runt, excess tags, malformed L3 header).
//! - At most two tags are parsed (802.1ad/QinQ: outer S-tag, inner C-tag).
//!   The loop is unrolled by hand: the verifier needs a bound it can see.
//! - VLAN id 0 means untagged. A priority-tagged frame (tag present, VID 0)
//!   also reports VID 0, as 802.1Q says it belongs to the native VLAN.
//! - At TC, with receive VLAN offload on, the kernel has already taken the
//!   outer tag out of the bytes into `skb->vlan_tci`: the view reports it
//!   as an [`OffloadedTag`], which counts as the outer tag (the tags left
//!   in the bytes come after it), so a frame classifies the same with the
//!   offload on or off.
//!
//! [`Malformed`]: Classification::Malformed
//! [`Classified`]: Classification::Classified

/// EtherType of an 802.1Q customer tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad service tag (QinQ outer tag).
pub const ETH_P_8021AD: u16 = 0x88a8;
/// Pre-standard QinQ TPID still emitted by some switches.
pub const ETH_P_QINQ_LEGACY: u16 = 0x9100;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;

/// Bytes of an Ethernet header (two MACs and an EtherType), without tags.
pub const ETH_HLEN: usize = 14;
/// Bytes of one VLAN tag (TCI + the next EtherType).
pub const VLAN_HLEN: usize = 4;
/// 802.3 minimum frame size without the 4-byte FCS; shorter frames are runts.
pub const ETH_ZLEN: usize = 60;
/// Tags the classifier parses; a third one is flagged [`Anomaly::ExcessTags`].
pub const MAX_TAGS: usize = 2;

const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
/// ARP's fixed part before the variable-length addresses.
const ARP_FIXED_LEN: usize = 8;

/// Read access to a frame's bytes.
///
/// The XDP implementation compares `data + offset + N` against `data_end`
/// before every read, which is exactly what the verifier wants to see.
pub trait FrameBytes {
    /// Length of the whole frame in bytes.
    fn frame_len(&self) -> usize;
    /// The `N` bytes starting at `offset`, or `None` past the end.
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
    /// The outer tag the kernel moved out of the bytes (receive VLAN
    /// offload), if any; `frame_len` does not include it.
    #[inline(always)]
    fn offloaded_tag(&self) -> Option<OffloadedTag> {
        None
    }
}

/// An outer VLAN tag carried beside the frame instead of in it
/// (`skb->vlan_present`/`vlan_tci`/`vlan_proto` at TC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffloadedTag {
    /// The tag's TCI (priority, DEI and VLAN id), host byte order.
    pub tci: u16,
}

impl OffloadedTag {
    /// The tag an skb carries beside its bytes: `present` as
    /// `__sk_buff.vlan_present`, `proto` the TPID in host byte order (the
    /// skb keeps it in network order), `tci` as `__sk_buff.vlan_tci`. A TPID
    /// that is no VLAN's is no tag.
    #[inline(always)]
    pub fn from_skb(present: u32, proto: u16, tci: u32) -> Option<Self> {
        (present != 0 && is_vlan_tpid(proto)).then_some(OffloadedTag { tci: tci as u16 })
    }

    #[inline(always)]
    pub const fn vid(self) -> u16 {
        self.tci & 0x0fff
    }
}

/// A frame's bytes with the outer tag the kernel offloaded, for host
/// tests, models and fuzzers of the TC hook.
pub struct OffloadedFrame<'a> {
    pub bytes: &'a [u8],
    pub tag: Option<OffloadedTag>,
}

impl FrameBytes for OffloadedFrame<'_> {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.bytes.len()
    }

    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.bytes.read(offset)
    }

    #[inline(always)]
    fn offloaded_tag(&self) -> Option<OffloadedTag> {
        self.tag
    }
}

impl FrameBytes for [u8] {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.len()
    }

    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let bytes = self.get(offset..offset.checked_add(N)?)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Some(out)
    }
}

/// A packet in kernel memory as XDP and TC programs see it: the bytes
/// from `data` to `data_end`. Every read compares `data + offset + N` with
/// `data_end` first: the verifier accepts a packet access only after such
/// a check on the same pointer.
pub struct PacketBytes {
    data: usize,
    data_end: usize,
    tag: Option<OffloadedTag>,
}

impl PacketBytes {
    /// # Safety
    ///
    /// `data..data_end` must be readable memory for as long as the value
    /// lives (a program's packet pointers).
    #[inline(always)]
    pub unsafe fn new(data: usize, data_end: usize) -> Self {
        PacketBytes {
            data,
            data_end,
            tag: None,
        }
    }

    /// The same bytes, with the outer tag the kernel took out of them.
    #[inline(always)]
    pub fn with_offloaded_tag(self, tag: Option<OffloadedTag>) -> Self {
        PacketBytes { tag, ..self }
    }
}

impl FrameBytes for PacketBytes {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.data_end - self.data
    }

    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let start = self.data + offset;
        if start + N > self.data_end {
            return None;
        }
        // SAFETY: in bounds (checked above) of memory `new` vouched for;
        // packet data has no alignment.
        Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) })
    }

    #[inline(always)]
    fn offloaded_tag(&self) -> Option<OffloadedTag> {
        self.tag
    }
}

/// Something wrong with a frame. The discriminant is the bit in
/// [`AnomalySet`] and the offset in the datapath's counter array.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Anomaly {
    /// Shorter than the 14-byte Ethernet header. Ethernet drivers do not
    /// deliver these, but the program must not trust that.
    ShortHeader = 0,
    /// A VLAN TPID whose 4-byte tag (TCI and next EtherType) is cut off.
    TruncatedTag = 1,
    /// Shorter than the 802.3 minimum of 60 bytes (without FCS). Virtual
    /// links (veth) do not pad, so small frames between namespaces show up
    /// here too; on a physical port they point at a faulty sender.
    Runt = 2,
    /// More than [`MAX_TAGS`] stacked tags; the outer two are used.
    ExcessTags = 3,
    /// The IPv4, IPv6 or ARP header announced by the EtherType is cut off
    /// or has an impossible length/version field.
    MalformedL3 = 4,
}

impl Anomaly {
    pub const ALL: [Anomaly; 5] = [
        Anomaly::ShortHeader,
        Anomaly::TruncatedTag,
        Anomaly::Runt,
        Anomaly::ExcessTags,
        Anomaly::MalformedL3,
    ];

    /// Stable snake_case name used in JSON, metrics and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Anomaly::ShortHeader => "short_header",
            Anomaly::TruncatedTag => "truncated_tag",
            Anomaly::Runt => "runt",
            Anomaly::ExcessTags => "excess_tags",
            Anomaly::MalformedL3 => "malformed_l3",
        }
    }
}

/// A small set of [`Anomaly`] flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnomalySet(u8);

impl AnomalySet {
    pub const EMPTY: AnomalySet = AnomalySet(0);

    #[inline(always)]
    pub fn insert(&mut self, anomaly: Anomaly) {
        self.0 |= 1 << anomaly as u8;
    }

    #[inline(always)]
    pub const fn contains(self, anomaly: Anomaly) -> bool {
        self.0 & (1 << anomaly as u8) != 0
    }

    #[inline(always)]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The protocol behind the tags.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3 {
    Other = 0,
    Ipv4 = 1,
    Ipv6 = 2,
    Arp = 3,
}

/// What the classifier learned from a frame whose L2 header is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Number of tags parsed (0..=2).
    pub tags: u8,
    /// VLAN id of the outermost tag; 0 when untagged.
    pub outer_vid: u16,
    /// VLAN id of the second tag (QinQ C-tag); 0 when there is none.
    pub inner_vid: u16,
    /// EtherType after the parsed tags (host byte order).
    pub ethertype: u16,
    pub l3: L3,
    /// Offset of the L3 header from the start of the frame.
    pub l3_offset: u16,
    pub anomalies: AnomalySet,
    /// Destination address of a well-formed IPv4 or IPv6 header, IPv4 as
    /// an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`); all zero otherwise
    /// (`::` is never a destination).
    pub dst_ip: [u8; 16],
    /// Source address of a well-formed IPv4 or IPv6 header, or the sender
    /// address of an IPv4 ARP packet; IPv4 IPv4-mapped as for `dst_ip`,
    /// all zero otherwise.
    pub src_ip: [u8; 16],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classification {
    Classified(Frame),
    Malformed(Anomaly),
}

#[inline(always)]
pub const fn is_vlan_tpid(ethertype: u16) -> bool {
    matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ_LEGACY)
}

/// Reads the tag at `offset` (TCI then next EtherType): `(vid, next)`.
#[inline(always)]
fn read_tag<F: FrameBytes + ?Sized>(frame: &F, offset: usize) -> Option<(u16, u16)> {
    let tag: [u8; VLAN_HLEN] = frame.read(offset)?;
    let vid = u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff;
    Some((vid, u16::from_be_bytes([tag[2], tag[3]])))
}

/// Classifies one frame, its L3 addresses included. Never panics and
/// never reads out of bounds.
#[inline(always)]
pub fn classify<F: FrameBytes + ?Sized>(frame: &F) -> Classification {
    match classify_headers(frame) {
        Classification::Classified(mut f) => {
            f.read_addresses(frame);
            Classification::Classified(f)
        }
        malformed => malformed,
    }
}

/// [`classify`] without the L3 addresses (`dst_ip`, `src_ip` stay `::`):
/// the tags, the L3 header's checks and every anomaly, nothing else. The
/// wire program's common path: only a VLAN whose policy looks at an
/// address pays for reading them ([`Frame::read_addresses`]).
#[inline(always)]
pub fn classify_headers<F: FrameBytes + ?Sized>(frame: &F) -> Classification {
    let len = frame.frame_len();
    let Some(header) = frame.read::<ETH_HLEN>(0) else {
        return Classification::Malformed(Anomaly::ShortHeader);
    };
    let mut anomalies = AnomalySet::EMPTY;
    let offloaded = frame.offloaded_tag();
    // On the wire an offloaded tag stood in the frame: a runt is judged by
    // the frame as sent.
    let wire_len = if offloaded.is_some() {
        len + VLAN_HLEN
    } else {
        len
    };
    if wire_len < ETH_ZLEN {
        anomalies.insert(Anomaly::Runt);
    }
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&header[0..6]);
    src.copy_from_slice(&header[6..12]);
    let mut ethertype = u16::from_be_bytes([header[12], header[13]]);
    let mut offset = ETH_HLEN;
    let (mut tags, mut outer_vid) = match offloaded {
        Some(tag) => (1u8, tag.vid()),
        None => (0u8, 0u16),
    };
    let mut inner_vid = 0u16;

    if is_vlan_tpid(ethertype) {
        let Some((vid, next)) = read_tag(frame, offset) else {
            return Classification::Malformed(Anomaly::TruncatedTag);
        };
        if tags == 0 {
            outer_vid = vid;
        } else {
            inner_vid = vid;
        }
        ethertype = next;
        offset += VLAN_HLEN;
        tags += 1;
        if is_vlan_tpid(ethertype) {
            if usize::from(tags) == MAX_TAGS {
                anomalies.insert(Anomaly::ExcessTags);
            } else {
                let Some((vid, next)) = read_tag(frame, offset) else {
                    return Classification::Malformed(Anomaly::TruncatedTag);
                };
                inner_vid = vid;
                ethertype = next;
                offset += VLAN_HLEN;
                tags = 2;
                if is_vlan_tpid(ethertype) {
                    anomalies.insert(Anomaly::ExcessTags);
                }
            }
        }
    }

    let l3 = match ethertype {
        ETH_P_IP => L3::Ipv4,
        ETH_P_IPV6 => L3::Ipv6,
        ETH_P_ARP => L3::Arp,
        _ => L3::Other,
    };
    if !l3_header_ok(frame, l3, offset, len) {
        anomalies.insert(Anomaly::MalformedL3);
    }

    Classification::Classified(Frame {
        dst,
        src,
        tags,
        outer_vid,
        inner_vid,
        ethertype,
        l3,
        l3_offset: offset as u16,
        anomalies,
        dst_ip: [0; 16],
        src_ip: [0; 16],
    })
}

impl Frame {
    /// Fills `dst_ip` and `src_ip` from the L3 header of the `frame` this
    /// was classified from by [`classify_headers`].
    #[inline(always)]
    pub fn read_addresses<F: FrameBytes + ?Sized>(&mut self, frame: &F) {
        self.dst_ip = self.dst_ip_in(frame);
        self.src_ip = self.src_ip_in(frame);
    }

    /// The destination address of a well-formed IPv4 or IPv6 header in
    /// `frame` (the bytes this was classified from), as [`Frame::dst_ip`].
    /// Reads only the address's bytes.
    #[inline(always)]
    pub fn dst_ip_in<F: FrameBytes + ?Sized>(&self, frame: &F) -> [u8; 16] {
        let mut ip = [0u8; 16];
        if self.anomalies.contains(Anomaly::MalformedL3) {
            return ip;
        }
        let offset = usize::from(self.l3_offset);
        // `black_box` on the offsets: having checked the length, LLVM would
        // drop the reads' own bounds checks, and the BPF verifier accepts
        // packet reads only behind a check against `data_end` itself.
        // (Nested `if let`s, not `Option` combinators: LLVM may compute a
        // combinator's result from the unset payload of a `None`, which the
        // verifier refuses.)
        if self.l3 == L3::Ipv4 {
            if let Some(v4) = frame.read::<4>(core::hint::black_box(offset + 16)) {
                ip = v4_mapped(v4);
            }
        } else if self.l3 == L3::Ipv6 {
            if let Some(v6) = frame.read::<16>(core::hint::black_box(offset + 24)) {
                ip = v6;
            }
        }
        ip
    }

    /// The source address of a well-formed IPv4 or IPv6 header, or the
    /// sender of an Ethernet/IPv4 ARP packet, in `frame`, as
    /// [`Frame::src_ip`]. Reads only the bytes it needs.
    #[inline(always)]
    pub fn src_ip_in<F: FrameBytes + ?Sized>(&self, frame: &F) -> [u8; 16] {
        let mut ip = [0u8; 16];
        if self.anomalies.contains(Anomaly::MalformedL3) {
            return ip;
        }
        let offset = usize::from(self.l3_offset);
        if self.l3 == L3::Ipv4 {
            if let Some(v4) = frame.read::<4>(core::hint::black_box(offset + 12)) {
                ip = v4_mapped(v4);
            }
        } else if self.l3 == L3::Ipv6 {
            if let Some(v6) = frame.read::<16>(core::hint::black_box(offset + 8)) {
                ip = v6;
            }
        } else if self.l3 == L3::Arp {
            // Ethernet/IPv4 ARP (hlen 6, plen 4): the sender's address
            // follows the 8 fixed bytes and the sender's MAC.
            if let Some([hlen, plen]) = frame.read::<2>(core::hint::black_box(offset + 4)) {
                if hlen == 6 && plen == 4 {
                    if let Some(v4) = frame.read::<4>(core::hint::black_box(offset + 14)) {
                        ip = v4_mapped(v4);
                    }
                }
            }
        }
        ip
    }
}

/// Where [`crate::decision::decide`] takes a frame's L3 addresses from:
/// a [`Frame`] that has them ([`classify`]), or [`Unread`], which reads
/// each one from the packet only when the decision asks for it.
pub trait Addresses {
    fn dst_ip(&self) -> [u8; 16];
    fn src_ip(&self) -> [u8; 16];
}

impl Addresses for Frame {
    #[inline(always)]
    fn dst_ip(&self) -> [u8; 16] {
        self.dst_ip
    }

    #[inline(always)]
    fn src_ip(&self) -> [u8; 16] {
        self.src_ip
    }
}

/// The addresses of a frame from [`classify_headers`], read from its
/// bytes on demand.
pub struct Unread<'a, F: ?Sized> {
    pub frame: &'a Frame,
    pub bytes: &'a F,
}

impl<F: FrameBytes + ?Sized> Addresses for Unread<'_, F> {
    #[inline(always)]
    fn dst_ip(&self) -> [u8; 16] {
        self.frame.dst_ip_in(self.bytes)
    }

    #[inline(always)]
    fn src_ip(&self) -> [u8; 16] {
        self.frame.src_ip_in(self.bytes)
    }
}

/// `a.b.c.d` as `::ffff:a.b.c.d`.
#[inline(always)]
const fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[10] = 0xff;
    out[11] = 0xff;
    out[12] = v4[0];
    out[13] = v4[1];
    out[14] = v4[2];
    out[15] = v4[3];
    out
}

/// Checks that the L3 header at `offset` is complete and self-consistent.
#[inline(always)]
fn l3_header_ok<F: FrameBytes + ?Sized>(frame: &F, l3: L3, offset: usize, len: usize) -> bool {
    match l3 {
        L3::Other => true,
        L3::Ipv4 => {
            let Some([version_ihl]) = frame.read::<1>(offset) else {
                return false;
            };
            let ihl_bytes = usize::from(version_ihl & 0x0f) * 4;
            version_ihl >> 4 == 4 && ihl_bytes >= IPV4_MIN_HLEN && len >= offset + ihl_bytes
        }
        L3::Ipv6 => match frame.read::<1>(offset) {
            Some([version]) => version >> 4 == 6 && len >= offset + IPV6_HLEN,
            None => false,
        },
        L3::Arp => match frame.read::<2>(offset + 4) {
            Some([hlen, plen]) => {
                len >= offset + ARP_FIXED_LEN + 2 * (usize::from(hlen) + usize::from(plen))
            }
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DST: [u8; 6] = [0x02, 0x42, 0xac, 0x10, 0x56, 0x02];
    const SRC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

    /// An Ethernet frame with the given tags `(tpid, vid)` and payload type,
    /// padded (or not) to `len` bytes.
    fn frame(tags: &[(u16, u16)], ethertype: u16, l3: &[u8], len: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&DST);
        f.extend_from_slice(&SRC);
        for &(tpid, vid) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(vid | 0x2000).to_be_bytes()); // PCP 1 must be masked off
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f.resize(len.max(f.len()), 0);
        f
    }

    fn ipv4_header() -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0] = 0x45;
        h
    }

    fn classified(bytes: &[u8]) -> Frame {
        match classify(bytes) {
            Classification::Classified(f) => f,
            other => panic!("expected a classified frame, got {other:?} for {bytes:02x?}"),
        }
    }

    #[test]
    fn untagged_ipv4_frame_is_vlan_0_without_anomalies() {
        let f = classified(&frame(&[], ETH_P_IP, &ipv4_header(), 64));
        assert_eq!(f.dst, DST);
        assert_eq!(f.src, SRC);
        assert_eq!((f.tags, f.outer_vid, f.inner_vid), (0, 0, 0));
        assert_eq!(f.l3, L3::Ipv4);
        assert_eq!(f.l3_offset, 14);
        assert!(f.anomalies.is_empty(), "{:?}", f.anomalies);
    }

    #[test]
    fn single_tag_reports_vid_and_masks_priority_bits() {
        let f = classified(&frame(&[(ETH_P_8021Q, 10)], ETH_P_IPV6, &[0x60; 40], 80));
        assert_eq!((f.tags, f.outer_vid, f.inner_vid), (1, 10, 0));
        assert_eq!((f.l3, f.l3_offset), (L3::Ipv6, 18));
        assert!(f.anomalies.is_empty());
    }

    #[test]
    fn qinq_reports_outer_and_inner_vid_for_every_tpid() {
        for outer in [ETH_P_8021AD, ETH_P_8021Q, ETH_P_QINQ_LEGACY] {
            let bytes = frame(
                &[(outer, 100), (ETH_P_8021Q, 20)],
                ETH_P_IP,
                &ipv4_header(),
                64,
            );
            let f = classified(&bytes);
            assert_eq!(
                (f.tags, f.outer_vid, f.inner_vid),
                (2, 100, 20),
                "tpid {outer:#x}"
            );
            assert_eq!((f.l3, f.l3_offset), (L3::Ipv4, 22));
        }
    }

    #[test]
    fn third_tag_is_flagged_and_outer_two_are_kept() {
        let bytes = frame(
            &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 20), (ETH_P_8021Q, 30)],
            ETH_P_IP,
            &ipv4_header(),
            64,
        );
        let f = classified(&bytes);
        assert_eq!((f.tags, f.outer_vid, f.inner_vid), (2, 100, 20));
        assert!(f.anomalies.contains(Anomaly::ExcessTags));
        assert_eq!(f.l3, L3::Other);
    }

    #[test]
    fn vid_4095_is_kept_as_is() {
        let f = classified(&frame(&[(ETH_P_8021Q, 4095)], 0x88b5, &[], 60));
        assert_eq!(f.outer_vid, 4095);
    }

    #[test]
    fn frames_below_the_802_3_minimum_are_runts_but_still_classified() {
        let f = classified(&frame(&[], 0x88b5, &[], 20));
        assert!(f.anomalies.contains(Anomaly::Runt));
        let f = classified(&frame(&[], 0x88b5, &[], 59));
        assert!(f.anomalies.contains(Anomaly::Runt));
        let f = classified(&frame(&[], 0x88b5, &[], 60));
        assert!(!f.anomalies.contains(Anomaly::Runt));
    }

    #[test]
    fn every_truncation_of_a_qinq_frame_is_classified_by_the_rule() {
        let full = frame(
            &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 20)],
            ETH_P_IP,
            &ipv4_header(),
            64,
        );
        for cut in 0..=full.len() {
            let bytes = &full[..cut];
            let got = classify(bytes);
            match cut {
                0..=13 => assert_eq!(
                    got,
                    Classification::Malformed(Anomaly::ShortHeader),
                    "cut {cut}"
                ),
                // Outer tag (14..18) or inner tag (18..22) incomplete.
                14..=21 => assert_eq!(
                    got,
                    Classification::Malformed(Anomaly::TruncatedTag),
                    "cut {cut}"
                ),
                _ => {
                    let f = classified(bytes);
                    assert_eq!(
                        (f.tags, f.outer_vid, f.inner_vid),
                        (2, 100, 20),
                        "cut {cut}"
                    );
                    assert_eq!(f.anomalies.contains(Anomaly::Runt), cut < 60, "cut {cut}");
                    // IPv4 header is 22..42.
                    assert_eq!(
                        f.anomalies.contains(Anomaly::MalformedL3),
                        cut < 42,
                        "cut {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_l3_headers_are_flagged() {
        let mut bad_ihl = ipv4_header();
        bad_ihl[0] = 0x44;
        let mut long_ihl = ipv4_header();
        long_ihl[0] = 0x4f; // 60-byte header in a 34-byte frame
        let mut wrong_version = ipv4_header();
        wrong_version[0] = 0x65;
        for (what, l3) in [
            ("ihl 4", bad_ihl),
            ("ihl 15", long_ihl),
            ("version 6", wrong_version),
        ] {
            let f = classified(&frame(&[], ETH_P_IP, &l3, 0));
            assert!(f.anomalies.contains(Anomaly::MalformedL3), "{what}");
        }
        let f = classified(&frame(&[], ETH_P_IPV6, &[0x60; 39], 0));
        assert!(
            f.anomalies.contains(Anomaly::MalformedL3),
            "39-byte IPv6 header"
        );
        let mut arp = vec![0u8; 28];
        arp[4] = 6;
        arp[5] = 4;
        let f = classified(&frame(&[], ETH_P_ARP, &arp, 0));
        assert!(
            !f.anomalies.contains(Anomaly::MalformedL3),
            "complete 42-byte ARP"
        );
        assert!(
            f.anomalies.contains(Anomaly::Runt),
            "unpadded ARP is a runt"
        );
        let f = classified(&frame(&[], ETH_P_ARP, &arp[..27], 0));
        assert!(f.anomalies.contains(Anomaly::MalformedL3), "27-byte ARP");
    }

    /// The frame with its outer tag taken out, as receive VLAN offload
    /// hands it to TC: the tag's TCI beside the remaining bytes.
    fn offload_outer_tag(bytes: &[u8]) -> (Vec<u8>, OffloadedTag) {
        let tci = u16::from_be_bytes([bytes[14], bytes[15]]);
        let mut rest = bytes[..12].to_vec();
        rest.extend_from_slice(&bytes[16..]);
        (rest, OffloadedTag { tci })
    }

    #[test]
    fn an_offloaded_outer_tag_classifies_as_the_tag_in_the_frame() {
        let cases = [
            frame(&[(ETH_P_8021Q, 10)], ETH_P_IP, &ipv4_header(), 64),
            frame(&[(ETH_P_8021Q, 10)], ETH_P_IP, &ipv4_header(), 50),
            frame(
                &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 20)],
                ETH_P_IP,
                &ipv4_header(),
                64,
            ),
            frame(
                &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 20), (ETH_P_8021Q, 30)],
                ETH_P_IP,
                &ipv4_header(),
                64,
            ),
            frame(&[(ETH_P_8021Q, 4095)], ETH_P_IPV6, &[0x60; 40], 80),
            frame(&[(ETH_P_8021Q, 7)], ETH_P_IP, &[0x45; 3], 0),
        ];
        for inline in &cases {
            let (bytes, tag) = offload_outer_tag(inline);
            let offloaded = OffloadedFrame {
                bytes: &bytes,
                tag: Some(tag),
            };
            let (a, b) = (classified(inline), classify(&offloaded));
            let Classification::Classified(b) = b else {
                panic!("{b:?} for {inline:02x?}");
            };
            // Everything but where L3 starts in the bytes handed over.
            assert_eq!(
                (a.tags, a.outer_vid, a.inner_vid, a.ethertype, a.l3),
                (b.tags, b.outer_vid, b.inner_vid, b.ethertype, b.l3),
                "{inline:02x?}"
            );
            assert_eq!(
                (a.anomalies, a.dst, a.src, a.dst_ip, a.src_ip),
                (b.anomalies, b.dst, b.src, b.dst_ip, b.src_ip)
            );
            assert_eq!(
                usize::from(a.l3_offset),
                usize::from(b.l3_offset) + VLAN_HLEN
            );
        }
    }

    #[test]
    fn offloaded_tags_come_from_the_skb_fields_only_when_present_and_a_vlan_tpid() {
        assert_eq!(
            OffloadedTag::from_skb(1, ETH_P_8021Q, 0x200a).map(OffloadedTag::vid),
            Some(10)
        );
        assert_eq!(
            OffloadedTag::from_skb(1, ETH_P_8021AD, 100).map(OffloadedTag::vid),
            Some(100)
        );
        assert_eq!(OffloadedTag::from_skb(0, ETH_P_8021Q, 10), None);
        assert_eq!(OffloadedTag::from_skb(1, ETH_P_IP, 10), None);
        // Without a tag beside it, the view classifies the bytes as they are.
        let plain = frame(&[], ETH_P_IP, &ipv4_header(), 64);
        let f = classify(&OffloadedFrame {
            bytes: &plain,
            tag: None,
        });
        assert_eq!(f, classify(plain.as_slice()));
    }

    #[test]
    fn classify_never_panics_on_arbitrary_short_inputs() {
        // Exhaustive over every 1- and 2-byte frame plus a sweep of longer
        // pseudo-random ones; the fuzz target goes much further.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..80 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        // Bias towards TPIDs so stacked tags are common.
                        [0x81, 0x00, 0x88, 0xa8, seed as u8][(seed >> 8) as usize % 5]
                    })
                    .collect();
                let _ = classify(bytes.as_slice());
            }
        }
    }

    /// A frame view that records which bytes were read.
    struct Recorded<'a> {
        bytes: &'a [u8],
        read: std::cell::RefCell<Vec<usize>>,
    }

    impl FrameBytes for Recorded<'_> {
        fn frame_len(&self) -> usize {
            self.bytes.len()
        }

        fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
            self.read.borrow_mut().extend(offset..offset + N);
            self.bytes.read(offset)
        }
    }

    /// IPv4 (10.0.0.1 -> 10.0.0.2), IPv6 (2001:db8::1 -> 2001:db8::2) and
    /// ARP (sender 10.0.0.1) frames, each untagged and in QinQ.
    fn l3_frames() -> Vec<(Vec<u8>, [u8; 16], [u8; 16])> {
        let mut v4 = ipv4_header();
        v4[12..16].copy_from_slice(&[10, 0, 0, 1]);
        v4[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        let (mut v6_src, mut v6_dst) = ([0u8; 16], [0u8; 16]);
        v6_src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        v6_src[15] = 1;
        v6_dst[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        v6_dst[15] = 2;
        v6[8..24].copy_from_slice(&v6_src);
        v6[24..40].copy_from_slice(&v6_dst);
        let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
        arp.extend_from_slice(&SRC);
        arp.extend_from_slice(&[10, 0, 0, 1]);
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&[10, 0, 0, 2]);
        let mapped = |ip: [u8; 4]| v4_mapped(ip);
        let mut out = Vec::new();
        for tags in [&[][..], &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 20)][..]] {
            out.push((
                frame(tags, ETH_P_IP, &v4, 64),
                mapped([10, 0, 0, 2]),
                mapped([10, 0, 0, 1]),
            ));
            out.push((frame(tags, ETH_P_IPV6, &v6, 80), v6_dst, v6_src));
            out.push((
                frame(tags, ETH_P_ARP, &arp, 64),
                [0; 16],
                mapped([10, 0, 0, 1]),
            ));
        }
        out
    }

    #[test]
    fn the_headers_alone_read_no_address_byte_and_the_addresses_are_read_on_demand() {
        for (bytes, dst_ip, src_ip) in l3_frames() {
            let view = Recorded {
                bytes: &bytes,
                read: Default::default(),
            };
            let Classification::Classified(headers) = classify_headers(&view) else {
                panic!("{bytes:02x?} did not classify");
            };
            let l3 = usize::from(headers.l3_offset);
            let address_bytes = match headers.l3 {
                L3::Ipv4 => l3 + 12..l3 + 20,
                L3::Ipv6 => l3 + 8..l3 + 40,
                _ => l3 + 14..l3 + 18,
            };
            let read = view.read.take();
            assert!(
                !read.iter().any(|b| address_bytes.contains(b)),
                "{:?}: the headers read address bytes {read:?}",
                headers.l3
            );
            assert_eq!((headers.dst_ip, headers.src_ip), ([0; 16], [0; 16]));
            let lazy = Unread {
                frame: &headers,
                bytes: bytes.as_slice(),
            };
            assert_eq!((lazy.dst_ip(), lazy.src_ip()), (dst_ip, src_ip));
            let full = classified(&bytes);
            assert_eq!((full.dst_ip, full.src_ip), (dst_ip, src_ip));
            let mut filled = headers;
            filled.read_addresses(bytes.as_slice());
            assert_eq!(filled, full, "classify = classify_headers + read_addresses");
        }
    }

    #[test]
    fn a_malformed_l3_header_has_no_addresses_to_read() {
        let mut short_v4 = ipv4_header();
        short_v4[0] = 0x4f; // IHL 60 bytes, longer than the frame
        short_v4[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let bytes = frame(&[], ETH_P_IP, &short_v4, 64);
        let f = classified(&bytes);
        assert!(f.anomalies.contains(Anomaly::MalformedL3));
        assert_eq!(f.dst_ip_in(bytes.as_slice()), [0; 16]);
        assert_eq!(f.dst_ip, [0; 16]);
    }
}
