//! netvlan's endpoint programs (TC), one instance per endpoint link:
//! - egress: a container may send only as itself (with `spoofcheck=on`;
//!   configured through `EGRESS_CONFIG`; the decision is
//!   `netvlan_common::egress::egress_allowed`, the code the host unit tests
//!   run), and what it sends is counted;
//! - ingress: what it receives is counted, whichever path it came by.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::{classifier, map},
    maps::{Array, PerCpuArray},
    programs::TcContext,
};
use netvlan_common::{
    egress::{
        egress_allowed, EgressConfig, EGRESS_ENFORCE, EGRESS_SENT, EGRESS_SLOTS, EGRESS_SPOOFED,
        ENDPOINT_RECEIVED,
    },
    frame::PacketBytes,
    maps::Counters,
};

#[map(name = "EGRESS_CONFIG")]
static EGRESS_CONFIG: Array<EgressConfig> = Array::with_max_entries(1, 0);

#[map(name = "EGRESS_STATS")]
static EGRESS_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(EGRESS_SLOTS, 0);

/// Headers the decision reads: Ethernet + the longest L3 header checked
/// (IPv6, 40 bytes) with room for a tag. Pulled into the linear area first.
const HEADERS: u32 = 64;

#[classifier]
pub fn netvlan_egress(ctx: TcContext) -> i32 {
    let len = ctx.len();
    let _ = ctx.pull_data(if len < HEADERS { len } else { HEADERS });
    // SAFETY: the context's packet pointers, valid for this run.
    let frame = unsafe { PacketBytes::new(ctx.data(), ctx.data_end()) };
    // SAFETY: reading a field of the context the kernel hands us.
    let offloaded_tag = unsafe { (*ctx.skb.skb).vlan_present } != 0;
    let allowed = match EGRESS_CONFIG.get(0) {
        Some(cfg) if cfg.flags & EGRESS_ENFORCE == 0 => true,
        Some(cfg) => !offloaded_tag && egress_allowed(&frame, cfg),
        // No config yet: the control plane writes it before attaching.
        None => false,
    };
    count(if allowed { EGRESS_SENT } else { EGRESS_SPOOFED }, len);
    if allowed {
        TC_ACT_OK
    } else {
        TC_ACT_SHOT
    }
}

/// Counts every frame delivered to the endpoint. At TC ingress the skb
/// starts at the Ethernet header, so lengths match the egress side's.
#[classifier]
pub fn netvlan_ingress(ctx: TcContext) -> i32 {
    count(ENDPOINT_RECEIVED, ctx.len());
    TC_ACT_OK
}

#[inline(always)]
fn count(slot: u32, len: u32) {
    if let Some(c) = EGRESS_STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { (*c).add_frame(u64::from(len)) };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
