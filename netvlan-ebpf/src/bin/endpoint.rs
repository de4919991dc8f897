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
    maps::{Array, PerCpuArray, RingBuf},
    programs::TcContext,
};
use netvlan_common::trace::{
    TraceConfig, TraceFields, TracePoint, ENDPOINT_RING_BYTES, TRACE_DROP, TRACE_PASS,
    TRACE_REASON_SPOOFED,
};
use netvlan_common::{
    antispoof::{
        egress_allowed, EgressConfig, EGRESS_ENFORCE, EGRESS_SENT, EGRESS_SLOTS, EGRESS_SPOOFED,
        ENDPOINT_RECEIVED,
    },
    maps::Counters,
};
use netvlan_ebpf::{
    count, tc_frame,
    trace::{self, Seen, Source, TraceMaps},
};

#[map(name = "EGRESS_CONFIG")]
static EGRESS_CONFIG: Array<EgressConfig> = Array::with_max_entries(1, 0);

#[map(name = "EGRESS_STATS")]
static EGRESS_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(EGRESS_SLOTS, 0);

#[map(name = "TRACE_RING")]
static TRACE_RING: RingBuf = RingBuf::with_byte_size(ENDPOINT_RING_BYTES, 0);

#[map(name = "TRACE_CONFIG")]
static TRACE_CONFIG: Array<TraceConfig> = Array::with_max_entries(1, 0);

#[map(name = "TRACE_LOST")]
static TRACE_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

static TRACE: TraceMaps = TraceMaps {
    config: &TRACE_CONFIG,
    ring: &TRACE_RING,
    lost: &TRACE_LOST,
};

/// Traces a frame of `len` bytes at `point` if tracing is on; the endpoint
/// is the tag the tracer put in the config.
#[inline(always)]
fn traced(ctx: &TcContext, point: TracePoint, allowed: bool, len: u32) {
    if let Some(cfg) = trace::active(&TRACE_CONFIG) {
        let seen = Seen {
            point,
            fields: TraceFields {
                vlan: 0,
                // SAFETY: the array value lives as long as the map.
                slot: unsafe { (*cfg).tag },
                verdict: if allowed { TRACE_PASS } else { TRACE_DROP },
            },
            reason: if allowed { 0 } else { TRACE_REASON_SPOOFED },
            orig_len: len,
            packets: 1,
        };
        trace::emit(&TRACE, cfg, Source::Tc(ctx), &seen);
    }
}

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
    traced(&ctx, TracePoint::EndpointEgress, allowed, len);
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
    let len = ctx.len();
    count(&EGRESS_STATS, ENDPOINT_RECEIVED, u64::from(len));
    traced(&ctx, TracePoint::EndpointIngress, true, len);
    TC_ACT_OK
}
