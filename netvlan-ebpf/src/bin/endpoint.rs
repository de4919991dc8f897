//! netvlan's endpoint programs (TC), one instance per endpoint link:
//! - egress: a container may send only as itself (with `spoofcheck=on`;
//!   configured through `EGRESS_CONFIG`; the decision is
//!   `netvlan_common::antispoof::egress_allowed`, the code the host unit tests
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
    antispoof::{
        egress_allowed, EgressConfig, EGRESS_ENFORCE, EGRESS_SENT, EGRESS_SLOTS, EGRESS_SPOOFED,
        ENDPOINT_RECEIVED,
    },
    maps::Counters,
};
use netvlan_ebpf::{count, tc_frame};

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
    let frame = tc_frame(&ctx, HEADERS);
    // SAFETY: reading a field of the context the kernel hands us.
    let offloaded_tag = unsafe { (*ctx.skb.skb).vlan_present } != 0;
    let allowed = match EGRESS_CONFIG.get(0) {
        Some(cfg) if cfg.flags & EGRESS_ENFORCE == 0 => true,
        Some(cfg) => !offloaded_tag && egress_allowed(&frame, cfg),
        // No config yet: the control plane writes it before attaching.
        None => false,
    };
    count(
        &EGRESS_STATS,
        if allowed { EGRESS_SENT } else { EGRESS_SPOOFED },
        u64::from(len),
    );
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
    count(&EGRESS_STATS, ENDPOINT_RECEIVED, u64::from(ctx.len()));
    TC_ACT_OK
}
