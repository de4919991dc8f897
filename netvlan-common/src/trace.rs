//! Packet trace events: what the wire and endpoint programs put in their
//! ring buffer for `netvlan trace`, the daemon's page and pcap files.
//!
//! An event is a fixed header followed by the first bytes of the frame. The
//! kernel fills in only what it already knows (time, link, lengths, VLAN,
//! verdict); MACs, IPs, protocol and ports are parsed in userspace from the
//! captured bytes with the same classifier, so tracing adds no parsing to
//! the fast path.

/// Bytes of each frame kept in an event (the rest is counted in
/// [`TraceHeader::orig_len`]).
pub const TRACE_SNAPLEN: usize = 128;

/// Where in the datapath an event was taken ([`TraceHeader::point`]).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TracePoint {
    /// The wire program at XDP on a parent link.
    WireXdp = 0,
    /// The wire program at TC ingress on a parent link.
    WireTc = 1,
    /// An endpoint link's egress (what the container sends).
    EndpointEgress = 2,
    /// An endpoint link's ingress (what the container receives).
    EndpointIngress = 3,
}

impl TracePoint {
    pub const ALL: [TracePoint; 4] = [
        TracePoint::WireXdp,
        TracePoint::WireTc,
        TracePoint::EndpointEgress,
        TracePoint::EndpointIngress,
    ];

    pub fn from_u8(value: u8) -> Option<TracePoint> {
        TracePoint::ALL.into_iter().find(|p| *p as u8 == value)
    }
}

/// [`TraceHeader::verdict`]: the frame went on.
pub const TRACE_PASS: u8 = 0;
/// [`TraceHeader::verdict`]: the frame was dropped; `reason` says why.
pub const TRACE_DROP: u8 = 1;

/// The fixed part of a trace event, followed in the ring record by
/// `cap_len` bytes of the frame. 32 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceHeader {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the program ran.
    pub time_ns: u64,
    /// The link the program runs on, in the namespace it runs in.
    pub ifindex: u32,
    /// The frame's length on the wire (a TC program's skb->len, plus the
    /// 4 bytes of an offloaded tag).
    pub orig_len: u32,
    /// The destination slot (wire) or endpoint id (endpoint programs);
    /// `u32::MAX` when there is none.
    pub slot: u32,
    /// Wire frames this event stands for (a GRO'd skb carries several).
    pub packets: u32,
    /// Bytes of the frame that follow, at most [`TRACE_SNAPLEN`].
    pub cap_len: u16,
    /// The outer VLAN as classified (0: untagged).
    pub vlan: u16,
    /// A [`TracePoint`].
    pub point: u8,
    /// [`TRACE_PASS`] or [`TRACE_DROP`].
    pub verdict: u8,
    /// The `decision::DropReason` (or endpoint drop) index when dropped.
    pub reason: u8,
    pub _pad: u8,
}

/// A whole event as it sits in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TraceEvent {
    pub header: TraceHeader,
    pub data: [u8; TRACE_SNAPLEN],
}

impl TraceHeader {
    /// The header at the start of a ring record, if it is long enough.
    pub fn parse(record: &[u8]) -> Option<TraceHeader> {
        if record.len() < core::mem::size_of::<TraceHeader>() {
            return None;
        }
        // SAFETY: the record holds at least a header's bytes; the header is
        // plain integers, valid for any bit pattern; read unaligned.
        Some(unsafe { core::ptr::read_unaligned(record.as_ptr().cast::<TraceHeader>()) })
    }

    /// The captured frame bytes that follow the header in `record`.
    pub fn frame<'a>(&self, record: &'a [u8]) -> &'a [u8] {
        let start = core::mem::size_of::<TraceHeader>();
        let end = (start + usize::from(self.cap_len)).min(record.len());
        record.get(start..end).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_32_bytes_without_padding() {
        assert_eq!(core::mem::size_of::<TraceHeader>(), 32);
        assert_eq!(core::mem::align_of::<TraceHeader>(), 8);
        assert_eq!(core::mem::size_of::<TraceEvent>(), 32 + TRACE_SNAPLEN);
    }

    #[test]
    fn a_record_parses_back_into_header_and_frame() {
        let header = TraceHeader {
            time_ns: 7,
            ifindex: 3,
            orig_len: 1514,
            slot: u32::MAX,
            packets: 1,
            cap_len: 4,
            vlan: 50,
            point: TracePoint::WireTc as u8,
            verdict: TRACE_DROP,
            reason: 1,
            _pad: 0,
        };
        let mut record = [0u8; 40];
        // SAFETY: writing plain integers into a buffer large enough.
        unsafe { core::ptr::write_unaligned(record.as_mut_ptr().cast(), header) };
        record[32..36].copy_from_slice(&[1, 2, 3, 4]);
        let parsed = TraceHeader::parse(&record).unwrap();
        assert_eq!(parsed, header);
        assert_eq!(parsed.frame(&record), &[1, 2, 3, 4]);
        assert_eq!(TracePoint::from_u8(parsed.point), Some(TracePoint::WireTc));
        assert!(TraceHeader::parse(&record[..31]).is_none());
    }
}
