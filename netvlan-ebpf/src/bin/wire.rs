//! netvlan's wire datapath: classify every frame on a parent link and count
//! it by VLAN, by destination MAC and by anomaly. One pipeline ([`wire`]),
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
    bindings::{xdp_action, BPF_NOEXIST, TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::{TcContext, XdpContext},
};
use netvlan_common::{
    decision::{
        decide, Learning, PolicyView, Verdict, DROP_REASON_SLOTS, IP_GATEWAY, IP_NOT_REGISTERED,
    },
    frame::{classify, Anomaly, Classification, FrameBytes, OffloadedTag, PacketBytes, VLAN_HLEN},
    maps::{
        CounterSlot, Counters, IpKey, LearnKey, MacDrops, MacGuardState, MacKey, COUNTER_SLOTS,
        DENY_MACS_CAPACITY, ENDPOINT_IPS_CAPACITY, ENDPOINT_MACS_CAPACITY, MAC_LEARN_CAPACITY,
        MAC_STATS_CAPACITY, VLAN_SLOTS,
    },
};
use netvlan_ebpf::{count, drop, tc_frame, xdp_frame, DropMaps};

#[map(name = "VLAN_STATS")]
static VLAN_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(VLAN_SLOTS, 0);

#[map(name = "MAC_STATS")]
static MAC_STATS: PerCpuHashMap<MacKey, Counters> =
    PerCpuHashMap::with_max_entries(MAC_STATS_CAPACITY, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map(name = "WIRE_POLICY")]
static WIRE_POLICY: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "VLAN_POLICY")]
static VLAN_POLICY: Array<u32> = Array::with_max_entries(VLAN_SLOTS, 0);

#[map(name = "ENDPOINT_MACS")]
static ENDPOINT_MACS: HashMap<MacKey, u32> = HashMap::with_max_entries(ENDPOINT_MACS_CAPACITY, 0);

#[map(name = "ENDPOINT_IPS")]
static ENDPOINT_IPS: HashMap<IpKey, u32> = HashMap::with_max_entries(ENDPOINT_IPS_CAPACITY, 0);

#[map(name = "MAC_DROPS")]
static MAC_DROPS: PerCpuHashMap<MacKey, MacDrops> =
    PerCpuHashMap::with_max_entries(ENDPOINT_MACS_CAPACITY, 0);

#[map(name = "DENY_MACS")]
static DENY_MACS: HashMap<MacKey, u32> = HashMap::with_max_entries(DENY_MACS_CAPACITY, 0);

#[map(name = "DROPS")]
static DROPS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(DROP_REASON_SLOTS, 0);

#[map(name = "VLAN_DROPS")]
static VLAN_DROPS: PerCpuArray<Counters> =
    PerCpuArray::with_max_entries(VLAN_SLOTS * DROP_REASON_SLOTS, 0);

#[map(name = "MAC_LEARN")]
static MAC_LEARN: LruHashMap<LearnKey, u64> = LruHashMap::with_max_entries(MAC_LEARN_CAPACITY, 0);

#[map(name = "MAC_GUARD")]
static MAC_GUARD: Array<MacGuardState> = Array::with_max_entries(VLAN_SLOTS, 0);

/// The policy maps as `netvlan_common::decision::decide` reads them.
struct Maps;

impl PolicyView for Maps {
    #[inline(always)]
    fn wire_flags(&self) -> u32 {
        WIRE_POLICY.get(0).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn vlan_flags(&self, vid: u16) -> u32 {
        VLAN_POLICY.get(u32::from(vid)).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn is_registered(&self, mac: &[u8; 6]) -> bool {
        // SAFETY: read-only lookup; the value is not used.
        unsafe { ENDPOINT_MACS.get(&MacKey::new(*mac)).is_some() }
    }

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

    /// Exact across CPUs: the count is reserved with an atomic fetch-add
    /// before the MAC is inserted, and given back if the insert loses.
    #[inline(always)]
    fn learn(&self, vid: u16, src: &[u8; 6], limit: u32, len: u64) -> Learning {
        let key = LearnKey { vid, mac: *src };
        // SAFETY: lookup only; LRU lookups also mark the entry as used.
        if unsafe { MAC_LEARN.get(&key).is_some() } {
            return Learning::Known;
        }
        let Some(state) = MAC_GUARD.get_ptr_mut(u32::from(vid)) else {
            return Learning::Known;
        };
        // SAFETY (every `add` below): the array value lives as long as the
        // map, and every field CPUs change concurrently is changed atomically.
        let learned = unsafe { &raw mut (*state).learned };
        if unsafe { add(learned, 1) } >= u64::from(limit) {
            unsafe {
                add(learned, u64::MAX);
                add(&raw mut (*state).over_limit_packets, 1);
                add(&raw mut (*state).over_limit_bytes, len);
                // A report for `stats`; a torn read of it is harmless.
                (*state).last_over_limit_ns = bpf_ktime_get_ns();
                (*state).last_over_limit_mac = *src;
            }
            return Learning::OverLimit;
        }
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        if MAC_LEARN
            .insert(&key, &now, u64::from(BPF_NOEXIST))
            .is_err()
        {
            // Another CPU learned the same MAC first: give the slot back.
            unsafe { add(learned, u64::MAX) };
            return Learning::Known;
        }
        Learning::Learned
    }
}

/// XDP on a parent whose driver runs it on its own buffers (physical NICs).
#[xdp]
pub fn netvlan_xdp(ctx: XdpContext) -> u32 {
    let frame = xdp_frame(&ctx);
    let len = frame.frame_len() as u64;
    match wire(&frame, len) {
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
    match wire(&frame, len) {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Drop(_) => TC_ACT_SHOT,
    }
}

/// What both hooks do with a frame of `len` bytes: count it, then decide.
#[inline(always)]
fn wire(frame: &PacketBytes, len: u64) -> Verdict {
    count(&COUNTERS, CounterSlot::Frames.index(), len);
    match classify(frame) {
        Classification::Malformed(anomaly) => {
            count(&COUNTERS, CounterSlot::Anomaly(anomaly).index(), len);
            Verdict::Pass
        }
        Classification::Classified(f) => {
            count(&VLAN_STATS, u32::from(f.outer_vid), len);
            count_mac(MacKey::new(f.dst), len);
            if !f.anomalies.is_empty() {
                for anomaly in Anomaly::ALL {
                    if f.anomalies.contains(anomaly) {
                        count(&COUNTERS, CounterSlot::Anomaly(anomaly).index(), len);
                    }
                }
            }
            let verdict = decide(&f, len, &Maps);
            if let Verdict::Drop(reason) = verdict {
                let maps = DropMaps {
                    drops: &DROPS,
                    vlan_drops: &VLAN_DROPS,
                    mac_drops: &MAC_DROPS,
                };
                drop(&maps, f.dst, f.outer_vid, reason, len);
            }
            verdict
        }
    }
}

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

/// errno value; aya-ebpf's bindings do not carry errno constants.
const EEXIST: i32 = 17;

/// The floor for benchmarks: an XDP program that does nothing but pass.
/// `cargo xtask bench` reports netvlan's per-packet cost against it.
#[xdp]
pub fn bench_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Counts a frame under its destination MAC, inserting the MAC on first
/// sight. A full table is counted, never silently skipped.
///
/// Entries are never deleted while the program is attached, so once this
/// CPU has counted a frame as `mac_table_full`, the table is still full:
/// later misses skip the insert that would fail (a failed insert into a
/// full hash map costs as much as the whole rest of the program).
#[inline(always)]
fn count_mac(key: MacKey, len: u64) {
    if let Some(c) = MAC_STATS.get_ptr_mut(&key) {
        // SAFETY: per-CPU value of an existing entry.
        unsafe { (*c).add_frame(len) };
        return;
    }
    let full = CounterSlot::MacTableFull.index();
    if let Some(c) = COUNTERS.get_ptr_mut(full) {
        // SAFETY: per-CPU slot, only this CPU touches it while we run.
        if unsafe { (*c).packets } > 0 {
            unsafe { (*c).add_frame(len) };
            return;
        }
    }
    let first = Counters {
        packets: 1,
        bytes: len,
    };
    match MAC_STATS.insert(&key, &first, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        // Another CPU inserted the same MAC between our lookup and insert.
        Err(e) if e == -EEXIST => {
            if let Some(c) = MAC_STATS.get_ptr_mut(&key) {
                // SAFETY: as above.
                unsafe { (*c).add_frame(len) };
            }
        }
        Err(_) => count(&COUNTERS, CounterSlot::MacTableFull.index(), len),
    }
}
