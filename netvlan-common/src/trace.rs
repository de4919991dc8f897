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

/// [`TraceHeader::reason`] of an endpoint's egress drop: anti-spoofing
/// refused the frame (wire drops use the `decision::DropReason` index).
pub const TRACE_REASON_SPOOFED: u8 = 16;

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

/// Map names, in both the wire and the endpoint object (each object's
/// own instance, pinned with the rest of its maps).
///
/// The ring buffer the events go to.
pub const TRACE_RING: &str = "TRACE_RING";
/// One [`TraceConfig`]: what is traced (nothing unless [`TRACE_ON`]).
pub const TRACE_CONFIG: &str = "TRACE_CONFIG";
/// Per-CPU count of events lost because the ring was full.
pub const TRACE_LOST: &str = "TRACE_LOST";

/// A bench-only entry of the wire object: the XDP hook without its trace
/// call, the baseline tracing's cost is measured against.
pub const BENCH_NOTRACE_PROGRAM: &str = "bench_xdp_notrace";

/// A wire's ring: 128 KiB holds 780 events (160 B + the ring's 8 B record
/// header each), some milliseconds of a saturated wire at full tracing,
/// while all of a wire's maps stay within issue #12's 8 MiB
/// (`tests/tests/fastpath.rs`).
pub const WIRE_RING_BYTES: u32 = 128 * 1024;
/// An endpoint's ring: 32 KiB (about 190 events); there is one per
/// endpoint, so it is kept small.
pub const ENDPOINT_RING_BYTES: u32 = 32 * 1024;

/// [`TraceConfig::flags`]: tracing is on. Without it the programs read
/// this one word and go on.
pub const TRACE_ON: u32 = 1;
/// Only dropped frames.
pub const TRACE_DROPS: u32 = 2;
/// Only frames whose outer VLAN is [`TraceConfig::vlan`].
pub const TRACE_VLAN: u32 = 4;
/// Only frames to the destination slot [`TraceConfig::slot`] (the wire).
pub const TRACE_SLOT: u32 = 8;

/// What a program traces: the value of its [`TRACE_CONFIG`] map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceConfig {
    /// `TRACE_*` bits.
    pub flags: u32,
    /// With [`TRACE_VLAN`].
    pub vlan: u16,
    pub _pad: u16,
    /// With [`TRACE_SLOT`].
    pub slot: u32,
    /// Keep 1 in `sample` matching frames (0 and 1: all of them).
    pub sample: u32,
    /// Matching frames seen so far, counted atomically across CPUs when
    /// sampling; the writer sets it to 0.
    pub seen: u64,
    /// Written into [`TraceHeader::slot`] by the endpoint programs, which
    /// do not know which endpoint they are: the tracer's own tag for it.
    pub tag: u32,
    pub _pad2: u32,
}

/// What the filter looks at in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceFields {
    pub vlan: u16,
    /// The destination slot; `u32::MAX` when there is none.
    pub slot: u32,
    /// [`TRACE_PASS`] or [`TRACE_DROP`].
    pub verdict: u8,
}

impl TraceConfig {
    /// Whether tracing is on at all: the one check a frame pays when off.
    #[inline(always)]
    pub const fn is_on(&self) -> bool {
        self.flags & TRACE_ON != 0
    }

    /// Whether a frame passes the filter (sampling aside).
    #[inline(always)]
    pub const fn matches(&self, f: &TraceFields) -> bool {
        self.is_on()
            && (self.flags & TRACE_DROPS == 0 || f.verdict == TRACE_DROP)
            && (self.flags & TRACE_VLAN == 0 || f.vlan == self.vlan)
            && (self.flags & TRACE_SLOT == 0 || f.slot == self.slot)
    }
}

/// Whether a wire tracing with `cfg` can trace frames on VLAN `vid`, so
/// that VLAN's flags get `decision::VLAN_TRACE` (frames the wire program
/// cannot classify have no VLAN flags: they always read the config).
#[inline(always)]
pub const fn traces_vlan(cfg: &TraceConfig, vid: u16) -> bool {
    cfg.is_on() && (cfg.flags & TRACE_VLAN == 0 || cfg.vlan == vid)
}

/// Whether a frame is traced: it matches `cfg`'s filter and, when sampling
/// 1 in N, it is the first of its group of N. `seen` is called only for a
/// matching frame with sampling on; it returns how many matching frames
/// came before this one (an atomic fetch-add in the kernel), so of `n`
/// matching frames exactly `ceil(n / N)` are traced: the 1st, the N+1st...
#[inline(always)]
pub fn wants(cfg: &TraceConfig, fields: &TraceFields, seen: impl FnOnce() -> u64) -> bool {
    if !cfg.matches(fields) {
        return false;
    }
    cfg.sample <= 1 || seen().is_multiple_of(u64::from(cfg.sample))
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]` integers, padding explicit.
    unsafe impl aya::Pod for super::TraceConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_32_bytes_without_padding() {
        assert_eq!(core::mem::size_of::<TraceHeader>(), 32);
        assert_eq!(core::mem::align_of::<TraceHeader>(), 8);
        assert_eq!(core::mem::size_of::<TraceEvent>(), 32 + TRACE_SNAPLEN);
        assert_eq!(core::mem::size_of::<TraceConfig>(), 32);
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

    fn fields(vlan: u16, slot: u32, verdict: u8) -> TraceFields {
        TraceFields {
            vlan,
            slot,
            verdict,
        }
    }

    #[test]
    fn a_config_without_trace_on_matches_nothing() {
        let cfg = TraceConfig {
            flags: TRACE_DROPS,
            ..TraceConfig::default()
        };
        assert!(!wants(&cfg, &fields(0, 0, TRACE_DROP), || 0));
        let on = TraceConfig {
            flags: TRACE_ON,
            ..TraceConfig::default()
        };
        assert!(wants(&on, &fields(0, 0, TRACE_PASS), || 0));
    }

    #[test]
    fn each_filter_keeps_only_its_frames() {
        let drops = TraceConfig {
            flags: TRACE_ON | TRACE_DROPS,
            ..TraceConfig::default()
        };
        assert!(wants(&drops, &fields(5, 1, TRACE_DROP), || 0));
        assert!(!wants(&drops, &fields(5, 1, TRACE_PASS), || 0));
        let vlan = TraceConfig {
            flags: TRACE_ON | TRACE_VLAN,
            vlan: 50,
            ..TraceConfig::default()
        };
        assert!(wants(&vlan, &fields(50, 1, TRACE_PASS), || 0));
        assert!(!wants(&vlan, &fields(51, 1, TRACE_PASS), || 0));
        let slot = TraceConfig {
            flags: TRACE_ON | TRACE_SLOT | TRACE_VLAN,
            vlan: 50,
            slot: 7,
            ..TraceConfig::default()
        };
        assert!(wants(&slot, &fields(50, 7, TRACE_PASS), || 0));
        assert!(!wants(&slot, &fields(50, u32::MAX, TRACE_PASS), || 0));
        assert!(!wants(&slot, &fields(0, 7, TRACE_PASS), || 0));
    }

    #[test]
    fn only_the_vlans_a_filter_can_match_are_marked() {
        let off = TraceConfig::default();
        assert!(!(0..4096).any(|v| traces_vlan(&off, v)));
        let all = TraceConfig {
            flags: TRACE_ON | TRACE_DROPS,
            ..TraceConfig::default()
        };
        assert!((0..4096).all(|v| traces_vlan(&all, v)));
        let one = TraceConfig {
            flags: TRACE_ON | TRACE_VLAN | TRACE_SLOT,
            vlan: 50,
            slot: 3,
            ..TraceConfig::default()
        };
        let marked: Vec<u16> = (0..4096).filter(|v| traces_vlan(&one, *v)).collect();
        assert_eq!(marked, [50]);
        // Whatever the filter matches is on a marked VLAN.
        for cfg in [off, all, one] {
            for vlan in [0, 50, 51] {
                let f = fields(vlan, 3, TRACE_DROP);
                assert!(!cfg.matches(&f) || traces_vlan(&cfg, vlan));
            }
        }
    }

    #[test]
    fn sampling_keeps_the_ceiling_of_n_over_rate() {
        let cfg = TraceConfig {
            flags: TRACE_ON | TRACE_DROPS,
            sample: 4,
            ..TraceConfig::default()
        };
        for n in [0u64, 1, 3, 4, 5, 8, 9, 101] {
            let mut seen = 0u64;
            let mut kept = 0u64;
            for _ in 0..n {
                let f = fields(0, 0, TRACE_DROP);
                if wants(&cfg, &f, || {
                    seen += 1;
                    seen - 1
                }) {
                    kept += 1;
                }
                // Frames the filter refuses do not advance the sampler.
                assert!(!wants(&cfg, &fields(0, 0, TRACE_PASS), || unreachable!()));
            }
            assert_eq!(kept, n.div_ceil(4), "{n} matching frames");
        }
    }
}
