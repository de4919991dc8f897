//! Host access without an extra link (`-o host_access=ebpf`): the hairpin
//! program at TC **egress** of a network's parent link.
//!
//! The kernel keeps a parent and its macvlan (or ipvlan) children apart: a
//! frame the host sends on the parent never reaches a child, and a child's
//! frame to the host leaves through the parent's egress to the wire. Both
//! pass the parent's TC egress hook, where `netvlan_hairpin` (a program of
//! the wire object, sharing the wire's pinned registration maps) hands the
//! frames that are for an endpoint, or from one for the host, to the
//! parent's own ingress (`bpf_redirect(link, BPF_F_INGRESS)`), and clones
//! ARP broadcasts and IPv6 solicited-node multicast there too, so neighbour
//! resolution works both ways without neighbour entries. The decision is
//! `netvlan_common::hairpin::decide`.
//!
//! The program is a TCX link at egress (6.6+) or a clsact egress filter at
//! netvlan's priority and handle, pinned in its own directory
//! (`hairpin-<ifindex>/prog`, `link` for TCX) so it outlives every netvlan
//! process. It reads the maps of the wire it was loaded against: after
//! the wire is detached and attached afresh (new maps), [`HairpinStatus`]
//! says it is stale and [`Datapath::attach_hairpin`] replaces it.

use crate::sys::netlink::IpvlanMode;

use super::{Datapath, DatapathError, WireMode};

/// The kind of links a network's endpoints are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HairpinLower {
    /// macvlan children (any mode; each has its own MAC).
    Macvlan,
    /// ipvlan children: they share the parent's MAC and are told apart by
    /// IP. Only `l2` can have host access this way.
    Ipvlan { mode: IpvlanMode },
}

/// One network's parent link to hairpin, in the current namespace.
#[derive(Clone, Copy, Debug)]
pub struct HairpinSpec<'a> {
    /// The link the wire program runs on (`Parent::wire`), whose pinned
    /// maps register the endpoints; it must be attached.
    pub wire: &'a str,
    /// The network's parent link (`Parent::link`): the wire itself, or an
    /// 802.1Q sub-interface of it. The hairpin runs at its egress.
    pub link: &'a str,
    /// 0 when `link` is the wire (untagged), else the sub-interface's VLAN
    /// id: the VLAN the endpoints are registered on.
    pub vlan: u16,
    pub lower: HairpinLower,
}

/// The hairpin program on one link, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HairpinStatus {
    pub link: String,
    pub ifindex: u32,
    pub prog_id: u32,
    /// `tcx` or `clsact`.
    pub mode: WireMode,
    /// The program still reads the maps of the wire attached now; `false`
    /// after the wire was attached afresh (re-attach the hairpin).
    pub current: bool,
}

impl Datapath {
    /// Attaches the hairpin to `spec.link`'s TC egress and pins it.
    /// Idempotent: a current hairpin is left as it is and reported; a stale
    /// one (the wire's maps were replaced) or one missing from the link
    /// while its pins remain (restore) is attached afresh. Refuses an
    /// ipvlan mode that cannot have host access, naming the link and mode.
    pub async fn attach_hairpin(
        &self,
        spec: &HairpinSpec<'_>,
    ) -> Result<HairpinStatus, DatapathError> {
        Err(DatapathError::HairpinUnsupported {
            link: spec.link.into(),
            what: "not built yet".into(),
        })
    }

    /// Removes the hairpin from `link` (its filter or TCX link, and its
    /// pins). Idempotent: `Ok(false)` when there was none; also clears
    /// the pins of a link that no longer exists.
    pub async fn detach_hairpin(&self, link: &str) -> Result<bool, DatapathError> {
        let _ = link;
        Ok(false)
    }

    /// The hairpin on `link`, if it runs there (for `check` and
    /// `inspect`); `None` when there is none, or only pins of one the
    /// link no longer runs (re-attach with [`Datapath::attach_hairpin`]).
    pub async fn hairpin_status(&self, link: &str) -> Result<Option<HairpinStatus>, DatapathError> {
        let _ = link;
        Ok(None)
    }
}
