//! Packet traces: the one place a program puts an event in its ring
//! buffer (`netvlan_common::trace`). The wire hooks call [`active`] only
//! for a frame whose VLAN's flags carry `decision::VLAN_TRACE` (set by the
//! tracer on the VLANs its filter can match), so a wire not traced pays
//! one bit test of the flags it read anyway; the endpoint hooks call it
//! once per frame (one array read and a flag test when tracing is off).
//! [`emit`] runs only when tracing is on; the filter is
//! `netvlan_common::trace::wants`, the code the host unit tests run.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    maps::{Array, PerCpuArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use netvlan_common::trace::{
    wants, TraceConfig, TraceEvent, TraceFields, TraceHeader, TracePoint, TRACE_ON, TRACE_SNAPLEN,
};

const _: () = assert!(TRACE_SNAPLEN.is_power_of_two());

/// A program's trace maps.
pub struct TraceMaps {
    pub config: &'static Array<TraceConfig>,
    pub ring: &'static RingBuf,
    /// Events the full ring refused (per CPU, slot 0).
    pub lost: &'static PerCpuArray<u64>,
}

/// The trace config when tracing is on; `None` (after one array read and
/// one flag test) when it is off.
#[inline(always)]
pub fn active(config: &'static Array<TraceConfig>) -> Option<*mut TraceConfig> {
    let cfg = config.get_ptr_mut(0)?;
    // SAFETY: the array value lives as long as the map.
    if unsafe { (*cfg).flags } & TRACE_ON == 0 {
        return None;
    }
    Some(cfg)
}

/// Where the frame's bytes are copied from.
pub enum Source<'a> {
    Xdp(&'a XdpContext),
    Tc(&'a TcContext),
}

/// One frame as the hook saw it.
pub struct Seen {
    pub point: TracePoint,
    pub fields: TraceFields,
    /// The drop reason when dropped.
    pub reason: u8,
    /// Bytes on the wire (all of the skb, plus an offloaded tag).
    pub orig_len: u32,
    pub packets: u32,
}

/// Puts `seen` in the ring if `cfg` (from [`active`]) wants it, with the
/// first [`TRACE_SNAPLEN`] bytes of the frame; counts it as lost if the
/// ring is full. Filters and reads the context's fields here (the
/// verifier allows context reads only at fixed offsets) and leaves the
/// event to [`record`].
#[inline(always)]
pub fn emit(maps: &TraceMaps, cfg: *mut TraceConfig, source: Source, seen: &Seen) {
    // SAFETY: the array value lives as long as the map; the counter is
    // changed atomically, the rest only read.
    let config = unsafe { &*cfg };
    let wanted = wants(config, &seen.fields, || unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(&raw mut (*cfg).seen, 1)
    });
    if !wanted {
        return;
    }
    let (ifindex, linear) = match source {
        // SAFETY: the context's fields, valid for this run.
        Source::Xdp(ctx) => (
            unsafe { (*ctx.ctx).ingress_ifindex },
            (ctx.data_end() - ctx.data()) as u32,
        ),
        Source::Tc(ctx) => (unsafe { (*ctx.skb.skb).ifindex }, ctx.len()),
    };
    record(maps, &source, seen, ifindex, linear);
}

/// [`emit`]'s work once the filter wants the frame: a function of its own
/// (a BPF-to-BPF call), so the pipeline compiles as if tracing did not
/// exist.
#[inline(never)]
fn record(maps: &TraceMaps, source: &Source, seen: &Seen, ifindex: u32, linear: u32) {
    let Some(mut entry) = maps.ring.reserve::<TraceEvent>(0) else {
        if let Some(lost) = maps.lost.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, only this CPU touches it while we run.
            unsafe { *lost += 1 };
        }
        return;
    };
    let event = entry.as_mut_ptr();
    let mut cap = linear;
    if cap > TRACE_SNAPLEN as u32 {
        cap = TRACE_SNAPLEN as u32;
    }
    // Through memory, so LLVM cannot fold the tests below back into
    // pointer compares the verifier does not relate to `cap`.
    // SAFETY: a read of a local.
    let cap = unsafe { core::ptr::read_volatile(&cap) };
    let mut copied = 0u16;
    if cap > 0 {
        // The same value, in a form whose range the verifier sees:
        // 1..=TRACE_SNAPLEN (a power of 2).
        let cap = ((cap - 1) & (TRACE_SNAPLEN as u32 - 1)) + 1;
        // SAFETY: `data` has TRACE_SNAPLEN bytes and 0 < cap <= TRACE_SNAPLEN.
        let data = unsafe { (*event).data.as_mut_ptr().cast() };
        let ret = match *source {
            Source::Xdp(ctx) => unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, data, cap) },
            Source::Tc(ctx) => unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), 0, data, cap) },
        };
        if ret == 0 {
            copied = cap as u16;
        }
    }
    let header = TraceHeader {
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        time_ns: unsafe { bpf_ktime_get_ns() },
        ifindex,
        orig_len: seen.orig_len,
        slot: seen.fields.slot,
        packets: seen.packets,
        cap_len: copied,
        vlan: seen.fields.vlan,
        point: seen.point as u8,
        verdict: seen.fields.verdict,
        reason: seen.reason,
        _pad: 0,
    };
    // SAFETY: the reserved record holds a whole TraceEvent.
    unsafe { (*event).header = header };
    entry.submit(0);
}
