//! What netvlan's eBPF programs share: the panic handler, the license,
//! counting into per-CPU maps and the one place a dropped frame goes
//! through ([`drop`]), where a trace hook will go.
//!
//! One binary per hook: `src/bin/wire.rs` (XDP or TC on a parent link) and
//! `src/bin/endpoint.rs` (TC on an endpoint link).
#![no_std]
// The BPF target has no atomic read-modify-write in `core::sync::atomic`;
// the intrinsic compiles to BPF_ATOMIC (BPF_ADD).
#![allow(internal_features)]
#![feature(core_intrinsics)]

use core::intrinsics::{atomic_xadd, AtomicOrdering};

pub mod trace;

use aya_ebpf::{
    maps::{Array, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use netvlan_common::{
    decision::{vlan_drop_index, DropReason},
    frame::PacketBytes,
    maps::Counters,
};

/// The frame an XDP program sees.
#[inline(always)]
pub fn xdp_frame(ctx: &XdpContext) -> PacketBytes {
    // SAFETY: the context's packet pointers, valid for this run.
    unsafe { PacketBytes::new(ctx.data(), ctx.data_end()) }
}

/// The frame a TC program sees, its first `headers` bytes (or all of a
/// shorter frame) pulled into the linear area first.
#[inline(always)]
pub fn tc_frame(ctx: &TcContext, headers: u32) -> PacketBytes {
    let len = ctx.len();
    let _ = ctx.pull_data(if len < headers { len } else { headers });
    // SAFETY: the context's packet pointers, valid for this run.
    unsafe { PacketBytes::new(ctx.data(), ctx.data_end()) }
}

/// Adds a frame of `len` bytes to slot `index` of a per-CPU counter array.
#[inline(always)]
pub fn count(map: &PerCpuArray<Counters>, index: u32, len: u64) {
    count_packets(map, index, 1, len);
}

/// Adds `packets` frames of `bytes` in all to slot `index` of a per-CPU
/// counter array.
#[inline(always)]
pub fn count_packets(map: &PerCpuArray<Counters>, index: u32, packets: u64, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { (*c).add(packets, bytes) };
    }
}

/// Where the wire program counts its drops.
pub struct DropMaps {
    /// By reason.
    pub drops: &'static PerCpuArray<Counters>,
    /// By VLAN and reason (`decision::vlan_drop_index`).
    pub vlan_drops: &'static PerCpuArray<Counters>,
    /// By registered destination slot, shared by every CPU.
    pub dst_drops: &'static Array<Counters>,
}

/// No registered destination: a slot outside `DST_DROPS`, whose lookup
/// finds nothing. (A plain `u32`, not an `Option`: LLVM spills the
/// payload of a `None` uninitialized, which the verifier refuses.)
pub const NO_DST: u32 = u32::MAX;

/// Counts a frame the policy refused by reason, VLAN and, when its
/// destination is registered, in that destination's slot `dst` (already
/// resolved: an array slot, no hash lookup here; [`NO_DST`] when not
/// registered); the hook turns the verdict into its own drop action.
#[inline(always)]
pub fn drop(maps: &DropMaps, dst: u32, outer_vid: u16, reason: DropReason, packets: u64, len: u64) {
    count_packets(maps.drops, reason as u32, packets, len);
    let index = vlan_drop_index(outer_vid, reason);
    count_packets(maps.vlan_drops, index, packets, len);
    if let Some(d) = maps.dst_drops.get_ptr_mut(dst) {
        // SAFETY: the array value lives as long as the map; every CPU adds
        // to it, atomically.
        unsafe {
            atomic_add(&raw mut (*d).packets, packets);
            atomic_add(&raw mut (*d).bytes, len);
        }
    }
}

/// Atomic add to a counter every CPU shares (the result is not needed, so
/// Relaxed is right here: a plain BPF_ADD without fetch).
///
/// # Safety
/// `ptr` must point into a live map value.
#[inline(always)]
unsafe fn atomic_add(ptr: *mut u64, value: u64) {
    atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(ptr, value);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The kernel reads the license from this section of every object.
#[link_section = "license"]
#[no_mangle]
#[used]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
