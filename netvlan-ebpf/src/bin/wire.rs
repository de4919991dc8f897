//! netvlan's wire datapath: classify every frame on a parent link and count
//! it by VLAN, by registered destination (or as unregistered / flood on its
//! VLAN) and by anomaly. One pipeline ([`wire`]),
//! two hooks: XDP (`netvlan_xdp`) and TC ingress (`netvlan_tc`).
//!
//! Frames are counted first, then filtered by the wire's policy maps
//! (`netvlan_common::decision::decide`); malformed frames are counted and
//! passed (the kernel's stack drops what it cannot parse). Classifier and
//! decision are the same code the host unit tests and fuzzers run.
#![no_std]
#![no_main]
// The BPF target has no atomic read-modify-write in `core::sync::atomic`;
// the intrinsic compiles to BPF_ATOMIC (BPF_ADD | BPF_FETCH).
#![allow(internal_features)]
#![feature(core_intrinsics)]

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{xdp_action, BPF_EXIST, BPF_NOEXIST, TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_ktime_get_ns, bpf_redirect},
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use netvlan_common::trace::{
    TraceConfig, TraceFields, TracePoint, TRACE_DROP, TRACE_PASS, WIRE_RING_BYTES,
};
use netvlan_common::{
    decision::{
        decide, Context, Learning, PolicyView, Source as SrcMac, Verdict, DROP_REASON_SLOTS,
        IP_GATEWAY, IP_NOT_REGISTERED, VLAN_DEBUG, VLAN_TRACE,
    },
    frame::{
        classify_headers, Anomaly, Classification, FrameBytes, OffloadedTag, PacketBytes, Unread,
        VLAN_HLEN,
    },
    hairpin::{self, Action, HairpinConfig, HairpinView, HAIRPIN_MARK, HAIRPIN_MARK_FRAMES},
    maps::{
        dst_slot, spill_bit, CounterSlot, Counters, DstKey, DstTables, IpKey, LearnKey,
        MacGuardState, MacKey, VlanCounters, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, COUNTER_SLOTS,
        DENY_MACS_CAPACITY, DST_CAPACITY, DST_SPILL_WORDS, ENDPOINT_IPS_CAPACITY,
        MAC_LEARN_CAPACITY, MAC_LEARN_DENIED, VLAN_SLOTS,
    },
};
use netvlan_ebpf::{
    count_packets, drop, tc_frame,
    trace::{self, Seen, Source, TraceMaps},
    xdp_frame, DropMaps, NO_DST,
};

// Its own module, compiled into this program only: the endpoint programs
// carry no log map.
#[path = "../log.rs"]
mod log;

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map(name = "VLAN_COUNTERS")]
static VLAN_COUNTERS: PerCpuArray<VlanCounters> = PerCpuArray::with_max_entries(VLAN_SLOTS, 0);

#[map(name = "VLAN_POLICY")]
static VLAN_POLICY: Array<u32> = Array::with_max_entries(VLAN_SLOTS, BPF_F_MMAPABLE);

#[map(name = "DST_DIRECT")]
static DST_DIRECT: Array<DstKey> = Array::with_max_entries(DST_CAPACITY, BPF_F_MMAPABLE);

#[map(name = "DST_SPILL")]
static DST_SPILL: Array<u64> = Array::with_max_entries(DST_SPILL_WORDS, 0);

#[map(name = "DST_SLOTS")]
static DST_SLOTS: HashMap<DstKey, u32> = HashMap::with_max_entries(DST_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "DST_STATS")]
static DST_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(DST_CAPACITY, 0);

#[map(name = "DST_DROPS")]
static DST_DROPS: Array<Counters> = Array::with_max_entries(DST_CAPACITY, 0);

#[map(name = "ENDPOINT_IPS")]
static ENDPOINT_IPS: HashMap<IpKey, u32> =
    HashMap::with_max_entries(ENDPOINT_IPS_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "DENY_MACS")]
static DENY_MACS: HashMap<MacKey, u32> =
    HashMap::with_max_entries(DENY_MACS_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "DROPS")]
static DROPS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(DROP_REASON_SLOTS, 0);

#[map(name = "VLAN_DROPS")]
static VLAN_DROPS: PerCpuArray<Counters> =
    PerCpuArray::with_max_entries(VLAN_SLOTS * DROP_REASON_SLOTS, 0);

#[map(name = "MAC_LEARN")]
static MAC_LEARN: HashMap<LearnKey, u64> =
    HashMap::with_max_entries(MAC_LEARN_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "MAC_GUARD")]
static MAC_GUARD: Array<MacGuardState> = Array::with_max_entries(VLAN_SLOTS, 0);

#[map(name = "TRACE_RING")]
static TRACE_RING: RingBuf = RingBuf::with_byte_size(WIRE_RING_BYTES, 0);

#[map(name = "TRACE_CONFIG")]
static TRACE_CONFIG: Array<TraceConfig> = Array::with_max_entries(1, 0);

#[map(name = "TRACE_LOST")]
static TRACE_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

static TRACE: TraceMaps = TraceMaps {
    config: &TRACE_CONFIG,
    ring: &TRACE_RING,
    lost: &TRACE_LOST,
};

/// A traced frame's fields from the pipeline's outcome.
#[inline(always)]
fn seen(point: TracePoint, out: &Outcome, orig_len: u64, packets: u64) -> Seen {
    let (verdict, reason) = match out.verdict {
        Verdict::Pass => (TRACE_PASS, 0),
        Verdict::Drop(r) => (TRACE_DROP, r as u8),
    };
    Seen {
        point,
        fields: TraceFields {
            vlan: out.vlan,
            slot: out.slot,
            verdict,
        },
        reason,
        orig_len: orig_len as u32,
        packets: packets as u32,
    }
}

/// The policy maps as `netvlan_common::decision::decide` reads them.
struct Maps;

impl PolicyView for Maps {
    #[inline(always)]
    fn is_registered_ip(&self, ip: &[u8; 16]) -> bool {
        // SAFETY: read-only lookup of a plain u32.
        unsafe { ENDPOINT_IPS.get(&IpKey { addr: *ip }) }
            .is_some_and(|flags| flags & IP_NOT_REGISTERED == 0)
    }

    #[inline(always)]
    fn is_gateway_ip(&self, ip: &[u8; 16]) -> bool {
        // SAFETY: as above.
        unsafe { ENDPOINT_IPS.get(&IpKey { addr: *ip }) }
            .is_some_and(|flags| flags & IP_GATEWAY != 0)
    }

    #[inline(always)]
    fn is_denied(&self, src: &[u8; 6]) -> bool {
        // SAFETY: as above.
        unsafe { DENY_MACS.get(&MacKey::new(*src)).is_some() }
    }

    #[inline(always)]
    fn source(&self, vid: u16, src: &[u8; 6]) -> SrcMac {
        // SAFETY: read-only lookup of a plain u64.
        match unsafe { MAC_LEARN.get(&LearnKey { vid, mac: *src }) } {
            None => SrcMac::New,
            Some(v) if *v & MAC_LEARN_DENIED != 0 => SrcMac::LearnedDenied,
            Some(_) => SrcMac::Learned,
        }
    }

    /// Exact across CPUs: the count is reserved with an atomic fetch-add
    /// before the MAC is inserted, and given back if the insert loses.
    /// `decide` calls it only after `source` missed, so it does not look
    /// the MAC up again (a MAC another CPU learned meanwhile loses the
    /// NOEXIST insert below and is Known).
    #[inline(always)]
    fn learn(&self, vid: u16, src: &[u8; 6], limit: u32, packets: u64, len: u64) -> Learning {
        let key = LearnKey { vid, mac: *src };
        let Some(state) = MAC_GUARD.get_ptr_mut(u32::from(vid)) else {
            return Learning::Known;
        };
        // SAFETY (every `add` below): the array value lives as long as the
        // map, and every field CPUs change concurrently is changed atomically.
        let learned = unsafe { &raw mut (*state).learned };
        if unsafe { add(learned, 1) } < u64::from(limit) {
            // SAFETY: bpf_ktime_get_ns has no preconditions.
            let now = unsafe { bpf_ktime_get_ns() };
            match MAC_LEARN.insert(&key, &now, u64::from(BPF_NOEXIST)) {
                Ok(()) => {
                    // The control plane marks learned entries after it
                    // writes the deny list; an entry inserted after its
                    // scan is marked here (the MAC passed the deny check
                    // before the list had it). Once per learned MAC.
                    // SAFETY: read-only lookup of a plain u32.
                    if unsafe { DENY_MACS.get(&MacKey::new(*src)) }.is_some() {
                        let denied = now | MAC_LEARN_DENIED;
                        let _ = MAC_LEARN.insert(&key, &denied, u64::from(BPF_EXIST));
                    }
                    return Learning::Learned;
                }
                // Another CPU learned the same MAC first: give the slot back.
                Err(EEXIST) => {
                    unsafe { add(learned, u64::MAX) };
                    return Learning::Known;
                }
                // The table is full (only guards whose limits were lowered
                // after learning more can fill it) or out of memory: the
                // MAC cannot be learned, so it is over the limit, as a
                // switch's port security refuses a MAC it cannot hold.
                Err(_) => {}
            }
        }
        unsafe {
            add(learned, u64::MAX);
            add(&raw mut (*state).over_limit_packets, packets);
            add(&raw mut (*state).over_limit_bytes, len);
            // A report for `stats`; a torn read of it is harmless.
            (*state).last_over_limit_ns = bpf_ktime_get_ns();
            (*state).last_over_limit_mac = *src;
        }
        Learning::OverLimit
    }
}

/// XDP on a parent whose driver runs it on its own buffers (physical NICs).
#[xdp]
pub fn netvlan_xdp(ctx: XdpContext) -> u32 {
    let frame = xdp_frame(&ctx);
    let len = frame.frame_len() as u64;
    let out = wire(&frame, 1, len);
    // Only on a VLAN a trace can match is `TRACE_CONFIG` read.
    if out.traced {
        if let Some(cfg) = trace::active(&TRACE_CONFIG) {
            let seen = seen(TracePoint::WireXdp, &out, len, 1);
            trace::emit(&TRACE, cfg, Source::Xdp(&ctx), &seen);
        }
    }
    if out.debug {
        log::record(&ctx, "xdp", &frame, out.vlan, out.verdict);
    }
    match out.verdict {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop(_) => xdp_action::XDP_DROP,
    }
}

/// Headers the classifier reads at TC: Ethernet, two tags and the longest
/// L3 header it looks into (IPv6, 40 bytes), pulled into the linear area.
const TC_HEADERS: u32 = 14 + 8 + 40;

/// The same classifier and decision at TC ingress, for parents where
/// native XDP would cost the receive offloads (veth, virtio-net).
///
/// With receive VLAN offload on, the kernel has moved the outer tag out of
/// the bytes into the skb: the frame view carries it, so it classifies as
/// the outer tag, and the 4 bytes it took on the wire are counted.
#[classifier]
pub fn netvlan_tc(ctx: TcContext) -> i32 {
    // A frame the host-access hairpin re-injected at this link's ingress:
    // not LAN traffic (it never was on the wire), so neither counted nor
    // judged by LAN policy here; the endpoint programs see and count it.
    // The mark is cleared so neither the endpoint nor the host sees it.
    // SAFETY: the context's skb, valid for this run; a plain field read.
    if unsafe { (*ctx.skb.skb).mark } == HAIRPIN_MARK {
        ctx.set_mark(0);
        return TC_ACT_OK;
    }
    // SAFETY: the context's skb, valid for this run; plain field reads.
    let (present, proto, tci) = unsafe {
        let skb = &*ctx.skb.skb;
        (skb.vlan_present, skb.vlan_proto, skb.vlan_tci)
    };
    // vlan_proto is kept in network byte order.
    let tag = OffloadedTag::from_skb(present, u16::from_be(proto as u16), tci);
    let frame = tc_frame(&ctx, TC_HEADERS).with_offloaded_tag(tag);
    // skb->len, not the linear part the frame view covers.
    let len = u64::from(ctx.len()) + if tag.is_some() { VLAN_HLEN as u64 } else { 0 };
    // A GRO'd skb carries gso_segs wire frames (0 for one never GRO'd).
    // SAFETY: the context pointer is valid for this run; gso_segs is a
    // readable field of __sk_buff for TC programs.
    let segs = unsafe { (*ctx.skb.skb).gso_segs };
    let packets = u64::from(if segs > 1 { segs } else { 1 });
    let out = wire(&frame, packets, len);
    // Only on a VLAN a trace can match is `TRACE_CONFIG` read.
    if out.traced {
        if let Some(cfg) = trace::active(&TRACE_CONFIG) {
            let seen = seen(TracePoint::WireTc, &out, len, packets);
            trace::emit(&TRACE, cfg, Source::Tc(&ctx), &seen);
        }
    }
    if out.debug {
        log::record(&ctx, "tc", &frame, out.vlan, out.verdict);
    }
    match out.verdict {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Drop(_) => TC_ACT_SHOT,
    }
}

/// The host-access hairpin's configuration, set when it is loaded (one
/// instance per link): `netvlan_common::hairpin::HairpinConfig`.
#[no_mangle]
static HAIRPIN_CONFIG: HairpinConfig = HairpinConfig {
    mac: [0; 6],
    vid: 0,
    flags: 0,
};

/// The wire's registrations as the hairpin's decision reads them.
struct Registrations;

impl HairpinView for Registrations {
    #[inline(always)]
    fn mac_registered(&self, vid: u16, mac: &[u8; 6]) -> bool {
        dst_slot(&Destinations, vid, mac).is_some()
    }

    #[inline(always)]
    fn ip_registered(&self, ip: &[u8; 16]) -> bool {
        // SAFETY: read-only lookup of a plain u32.
        unsafe { ENDPOINT_IPS.get(&IpKey { addr: *ip }) }.is_some()
    }
}

/// Host access without an extra link: TC egress on a network's parent
/// link (`netvlan_common::hairpin` has the rules). Re-injected frames
/// enter the link's ingress, never its egress again, so they cannot loop;
/// where the wire's TC program runs on the same link they carry
/// `HAIRPIN_MARK` past it.
#[classifier]
pub fn netvlan_hairpin(ctx: TcContext) -> i32 {
    // SAFETY: a read of the program's own constant, which the loader set.
    let cfg = unsafe { core::ptr::read_volatile(&HAIRPIN_CONFIG) };
    let frame = tc_frame(&ctx, TC_HEADERS);
    let action = hairpin::decide(&frame, &cfg, &Registrations);
    if action == Action::Pass {
        return TC_ACT_OK;
    }
    // SAFETY: the context's skb, valid for this run; plain field reads.
    let (ifindex, mark) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).mark) };
    let marking = cfg.flags & HAIRPIN_MARK_FRAMES != 0;
    if marking {
        ctx.set_mark(HAIRPIN_MARK);
    }
    match action {
        Action::Redirect => {
            // SAFETY: a helper call with plain arguments.
            unsafe { bpf_redirect(ifindex, BPF_F_INGRESS) as i32 }
        }
        _ => {
            let _ = ctx.clone_redirect(ifindex, BPF_F_INGRESS);
            if marking {
                ctx.set_mark(mark);
            }
            TC_ACT_OK
        }
    }
}

/// `bpf_redirect`'s flag: to the device's receive path.
const BPF_F_INGRESS: u64 = 1;

/// What both hooks do with a frame that counts for `packets` wire frames
/// of `len` bytes in all: count it, then decide. One array read for the
/// VLAN's flags, one slot of per-VLAN counters, and the destination's
/// direct slot (`maps::dst_slot`: a hash lookup only behind a spill bit);
/// policy adds lookups only where the VLAN's flags turn it on.
#[inline(always)]
fn wire(frame: &PacketBytes, packets: u64, len: u64) -> Outcome {
    // The L3 addresses are read only if the decision asks for them.
    match classify_headers(frame) {
        Classification::Malformed(anomaly) => {
            count_packets(&COUNTERS, CounterSlot::Malformed.index(), packets, len);
            let slot = CounterSlot::Anomaly(anomaly).index();
            count_packets(&COUNTERS, slot, packets, len);
            Outcome {
                verdict: Verdict::Pass,
                vlan: 0,
                slot: NO_DST,
                // No VLAN flags read here: a (rare) malformed frame reads
                // the trace config itself.
                traced: true,
                debug: false,
            }
        }
        Classification::Classified(f) => {
            let vid = u32::from(f.outer_vid);
            let vlan_flags = VLAN_POLICY.get(vid).copied().unwrap_or(0);
            let vlan = VLAN_COUNTERS.get_ptr_mut(vid);
            if let Some(v) = vlan {
                // SAFETY (every use of `v`): per-CPU slot, only this CPU
                // touches it while we run.
                unsafe { (*v).frames.add(packets, len) };
            }
            let mut dst = NO_DST;
            if f.dst[0] & 1 != 0 {
                if let Some(v) = vlan {
                    unsafe { (*v).flood.add(packets, len) };
                }
            } else if let Some((slot, d)) = dst_slot(&Destinations, f.outer_vid, &f.dst)
                .and_then(|slot| Some((slot, DST_STATS.get_ptr_mut(slot)?)))
            {
                // SAFETY: per-CPU slot, as above.
                unsafe { (*d).add(packets, len) };
                dst = slot;
            } else if let Some(v) = vlan {
                unsafe { (*v).unregistered.add(packets, len) };
            }
            if !f.anomalies.is_empty() {
                for anomaly in Anomaly::ALL {
                    if f.anomalies.contains(anomaly) {
                        let slot = CounterSlot::Anomaly(anomaly).index();
                        count_packets(&COUNTERS, slot, packets, len);
                    }
                }
            }
            let cx = Context {
                vlan_flags,
                dst_registered: dst != NO_DST,
                packets,
                len,
            };
            let addresses = Unread {
                frame: &f,
                bytes: frame,
            };
            let verdict = decide(&f, &addresses, &cx, &Maps);
            if let Verdict::Drop(reason) = verdict {
                let maps = DropMaps {
                    drops: &DROPS,
                    vlan_drops: &VLAN_DROPS,
                    dst_drops: &DST_DROPS,
                };
                drop(&maps, dst, f.outer_vid, reason, packets, len);
            }
            Outcome {
                verdict,
                vlan: f.outer_vid,
                slot: dst,
                traced: vlan_flags & VLAN_TRACE != 0,
                debug: vlan_flags & VLAN_DEBUG != 0,
            }
        }
    }
}

/// What the pipeline decided, with what a trace filter looks at.
struct Outcome {
    verdict: Verdict,
    vlan: u16,
    /// The registered destination's slot; `NO_DST` when none.
    slot: u32,
    /// The VLAN's flags have [`VLAN_TRACE`]: a trace may want the frame.
    traced: bool,
    /// The VLAN's flags have [`VLAN_DEBUG`]: the wire is being debugged.
    debug: bool,
}

/// The destination maps as `netvlan_common::maps::dst_slot` reads them.
struct Destinations;

impl DstTables for Destinations {
    #[inline(always)]
    fn direct(&self, slot: u32) -> Option<&DstKey> {
        DST_DIRECT.get(slot)
    }

    #[inline(always)]
    fn spilled(&self, slot: u32) -> bool {
        let (word, bit) = spill_bit(slot);
        DST_SPILL.get(word).is_some_and(|w| w & bit != 0)
    }

    #[inline(always)]
    fn hashed(&self, key: &DstKey) -> Option<u32> {
        // SAFETY: read-only lookup of a plain u32.
        unsafe { DST_SLOTS.get(key) }.copied()
    }
}

/// `-EEXIST`, what a `BPF_NOEXIST` insert of a present key returns.
const EEXIST: i32 = -17;

/// Atomic wrapping add; returns the previous value (`u64::MAX` subtracts 1).
///
/// SeqCst, not Relaxed: with Relaxed, the nightly's LLVM emits a plain
/// `lock add` (BPF_ADD without BPF_FETCH) yet reads its result register as
/// if it had fetched, so the previous value is silently wrong. SeqCst
/// selects `atomic_fetch_add`; `llvm-objdump -d` shows which one you got.
///
/// # Safety
/// `ptr` must point into a live map value.
#[inline(always)]
unsafe fn add(ptr: *mut u64, value: u64) -> u64 {
    atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(ptr, value)
}

/// Benchmarks only: the XDP hook with its trace call and its debug record
/// compiled out, the baseline `cargo xtask bench --only trace` prices
/// tracing and debugging that are off against.
#[xdp]
pub fn bench_xdp_notrace(ctx: XdpContext) -> u32 {
    let frame = xdp_frame(&ctx);
    let len = frame.frame_len() as u64;
    match wire(&frame, 1, len).verdict {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop(_) => xdp_action::XDP_DROP,
    }
}

/// The floor for benchmarks: an XDP program that does nothing but pass.
/// `cargo xtask bench` reports netvlan's per-packet cost against it.
#[xdp]
pub fn bench_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
