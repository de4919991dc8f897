//! What netvlan's eBPF programs share: the panic handler, the license,
//! counting into per-CPU maps and the one place a dropped frame goes
//! through ([`drop`]), where a trace hook will go.
//!
//! One binary per hook: `src/bin/wire.rs` (XDP or TC on a parent link) and
//! `src/bin/endpoint.rs` (TC on an endpoint link).
#![no_std]
// The BPF target has no atomic read-modify-write in `core::sync::atomic`.
#![allow(internal_features)]
#![feature(core_intrinsics)]

pub mod trace;

use aya_ebpf::{
    maps::PerCpuArray,
    programs::{TcContext, XdpContext},
};
use netvlan_common::{
    decision::{vlan_drop_index, DropReason},
    frame::PacketBytes,
    maps::{Counters, DstCounters},
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
}

/// Counts a frame the policy refused by reason, VLAN and, when its
/// destination is registered, in that destination's counters (already
/// resolved: no lookup here); the hook turns the verdict into its own
/// drop action.
#[inline(always)]
pub fn drop(
    maps: &DropMaps,
    dst: Option<&mut DstCounters>,
    outer_vid: u16,
    reason: DropReason,
    packets: u64,
    len: u64,
) {
    count_packets(maps.drops, reason as u32, packets, len);
    let index = vlan_drop_index(outer_vid, reason);
    count_packets(maps.vlan_drops, index, packets, len);
    if let Some(d) = dst {
        d.dropped.add(packets, len);
    }
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
