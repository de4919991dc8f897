//! The wire's debug records through aya-log: one per frame judged on a VLAN
//! whose flags carry `decision::VLAN_DEBUG` (switched per wire at run time
//! by `netvlan datapath debug PARENT on|off`), with the point, the VLAN,
//! the MACs and the verdict with its drop reason. `netvlan daemon` forwards
//! them into its `tracing` log. A wire that is not being debugged pays the
//! flag test on the VLAN flags it reads anyway, nothing more.

use aya_ebpf::EbpfContext;
use aya_log_ebpf::debug;
use netvlan_common::{
    decision::Verdict,
    frame::{FrameBytes, PacketBytes},
};

/// Records the decision on `frame` (VLAN `vid`) made at `point`.
#[inline(always)]
pub(crate) fn record<C: EbpfContext>(
    ctx: &C,
    point: &str,
    frame: &PacketBytes,
    vid: u16,
    verdict: Verdict,
) {
    let (Some(dst), Some(src)) = (frame.read::<6>(0), frame.read::<6>(6)) else {
        return;
    };
    match verdict {
        Verdict::Pass => debug!(
            ctx,
            "{} vlan {} {:mac} > {:mac}: pass", point, vid, src, dst
        ),
        Verdict::Drop(reason) => debug!(
            ctx,
            "{} vlan {} {:mac} > {:mac}: drop reason={}",
            point,
            vid,
            src,
            dst,
            reason.name()
        ),
    }
}
