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
//! `datapath upgrade` keeps the wire's maps, so the hairpin stays current
//! across it (it keeps running the build that attached it).
//!
//! `restore` and `check`: [`Datapath::attach_hairpin`] is idempotent and
//! attaches afresh whatever is missing or stale (nothing after a reboot,
//! pins without a program after the link was made anew, a wire attached
//! anew), so restore calls it for every network with host access;
//! [`Datapath::hairpin_status`] is `None` or `current: false` when it
//! needs that.
//!
//! No loops, no double counting: re-injected frames enter the link's
//! ingress and never pass its egress again. Where the wire's TC program
//! runs on the same link (untagged network, hook=tc) they carry
//! `netvlan_common::hairpin::HAIRPIN_MARK` in `skb->mark` (a redirect
//! within one namespace keeps it), and the wire passes them uncounted and
//! clears the mark; XDP never sees them, and a VLAN sub-interface's
//! ingress has no wire program, so nothing is marked there. Anti-spoofing
//! and per-endpoint counters stay the endpoint programs' job: they see
//! these frames on the endpoint link like any other.
//!
//! The link's MAC is read when the hairpin is attached: attach again
//! after changing it.

use aya::{
    maps::MapInfo,
    programs::{
        links::FdLink,
        tc::{SchedClassifierLink, TcHandle},
        ProgramError, ProgramInfo, SchedClassifier, TcAttachType,
    },
};
use netvlan_common::{
    hairpin::{
        HairpinConfig, HAIRPIN_CONFIG, HAIRPIN_IPVLAN, HAIRPIN_MARK_FRAMES, HAIRPIN_PROGRAM,
    },
    maps,
};

use crate::sys::netlink::{IpvlanMode, NetlinkError};

use super::{
    attach_classifier, endpoint_hooks, object, upgrade, Datapath, DatapathError, Hook,
    InterfacePins, WireMode,
};

/// The clsact egress filter the hairpin is on kernels without TCX: a
/// fixed priority and handle (the wire's are at ingress), so it is found
/// again without a pin.
pub const HAIRPIN_FILTER_PRIORITY: u16 = 1;
pub const HAIRPIN_FILTER_HANDLE: u32 = 0x4e57;

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
    /// One load of the wire object per attach.
    pub async fn attach_hairpin(
        &self,
        spec: &HairpinSpec<'_>,
    ) -> Result<HairpinStatus, DatapathError> {
        let ipvlan = match spec.lower {
            HairpinLower::Macvlan => false,
            HairpinLower::Ipvlan {
                mode: IpvlanMode::L2,
            } => true,
            HairpinLower::Ipvlan { mode } => {
                let mode = match mode {
                    IpvlanMode::L3 => "l3",
                    _ => "l3s",
                };
                return Err(DatapathError::HairpinUnsupported {
                    link: spec.link.into(),
                    what: format!(
                        "ipvlan mode {mode} routes its endpoints' traffic without ARP or \
                         neighbour discovery on {}, so the host has nothing to resolve their \
                         addresses with; use ipvlan_mode=l2 or host_access=shim",
                        spec.link
                    ),
                });
            }
        };
        let link = self.netlink.link_by_name(spec.link).await?;
        let mac = link.mac.ok_or_else(|| DatapathError::HairpinUnsupported {
            link: link.name.clone(),
            what: "the link has no MAC address".into(),
        })?;
        let (wire, wire_pins) = self
            .attachments(Some(spec.wire))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| DatapathError::NotAttached {
                ifname: spec.wire.into(),
            })?;
        // A killed attach's staging pins (a TCX link among them would keep
        // a second hairpin running beside a new one).
        self.remove_dead_staging().await?;
        if let Some(status) = self.hairpin_status(&link.name).await? {
            if status.current {
                return Ok(status);
            }
        }
        // Stale, half-gone or a killed attach's leftovers: start afresh.
        self.remove_hairpin(link.ifindex, &link.name).await?;

        let mut flags = if ipvlan { HAIRPIN_IPVLAN } else { 0 };
        // The wire's TC program sees what is re-injected at its own link.
        if wire.ifindex == link.ifindex && wire.hook == Hook::Tc {
            flags |= HAIRPIN_MARK_FRAMES;
        }
        let config = HairpinConfig {
            mac,
            vid: spec.vlan,
            flags,
        };
        let mut loader = object::loader();
        for &name in maps::WIRE_MAPS {
            let path = wire_pins.map(name);
            // A map this build added and the wire lacks (until `datapath
            // upgrade`) is created unpinned and goes with the loader.
            if path.exists() {
                loader.map_pin_path(name, path);
            }
        }
        loader.override_global(HAIRPIN_CONFIG, &config, true);
        let mut ebpf = loader
            .load(object::WIRE.bytes)
            .map_err(DatapathError::Load)?;
        let program = endpoint_hooks::classifier(&mut ebpf, HAIRPIN_PROGRAM)?;
        program.load().map_err(DatapathError::Program)?;
        // Held until pinned: dropping it on failure detaches it.
        let (mode, held) = attach_classifier(
            program,
            &link.name,
            TcAttachType::Egress,
            (HAIRPIN_FILTER_PRIORITY, HAIRPIN_FILTER_HANDLE),
        )
        .map_err(|(mode, source)| DatapathError::AttachHairpin {
            link: link.name.clone(),
            mode,
            source,
        })?;
        let staging = self.pins.hairpin_staging(link.ifindex);
        let target = self.pins.hairpin(link.ifindex);
        let pinned = (|| {
            std::fs::create_dir_all(staging.dir()).map_err(|source| DatapathError::PinDir {
                path: staging.dir().into(),
                source,
            })?;
            let program = endpoint_hooks::classifier(&mut ebpf, HAIRPIN_PROGRAM)?;
            object::pin_at(staging.program(), |path| program.pin(path))?;
            match mode {
                WireMode::Tcx => {
                    let fd_link = FdLink::try_from(held).map_err(|source| DatapathError::Link {
                        path: staging.link(),
                        source,
                    })?;
                    object::pin_at(staging.link(), |path| fd_link.pin(path).map(drop))?;
                }
                // The filter stays with the kernel: converting releases it
                // untouched.
                _ => drop(FdLink::try_from(held)),
            }
            // Tests kill the command here: pinned, not yet in place.
            upgrade::failpoint("hairpin-before-rename")?;
            std::fs::rename(staging.dir(), target.dir()).map_err(|source| DatapathError::PinDir {
                path: target.dir().into(),
                source,
            })
        })();
        if let Err(e) = pinned {
            if let Err(cleanup) = staging.remove() {
                tracing::error!("cannot remove {}: {cleanup}", staging.dir().display());
            }
            // A clsact filter the kernel holds without a pin.
            self.remove_hairpin(link.ifindex, &link.name).await?;
            return Err(e);
        }
        self.hairpin_status(&link.name)
            .await?
            .ok_or_else(|| DatapathError::NotAttached { ifname: link.name })
    }

    /// Removes the hairpin from `link` (its filter or TCX link, and its
    /// pins). Idempotent: `Ok(false)` when there was none. When `link` no
    /// longer exists, the pins of every hairpin whose link is gone are
    /// removed (the kernel removed the programs with the links).
    pub async fn detach_hairpin(&self, link: &str) -> Result<bool, DatapathError> {
        let info = match self.netlink.link_by_name(link).await {
            Ok(info) => info,
            Err(NetlinkError::NoSuchInterface { .. }) => return self.prune_hairpins().await,
            Err(e) => return Err(e.into()),
        };
        let existed = self.pins.hairpin(info.ifindex).exists()
            || self.hairpin_filter(info.ifindex).await?.is_some();
        self.remove_hairpin(info.ifindex, &info.name).await?;
        Ok(existed)
    }

    /// The hairpin on `link`, if it runs there (for `check` and
    /// `inspect`); `None` when there is none, or only pins of one the
    /// link no longer runs (re-attach with [`Datapath::attach_hairpin`]).
    pub async fn hairpin_status(&self, link: &str) -> Result<Option<HairpinStatus>, DatapathError> {
        let info = self.netlink.link_by_name(link).await?;
        let pins = self.pins.hairpin(info.ifindex);
        if !pins.exists() {
            return Ok(None);
        }
        let running = if pins.link().exists() {
            let id = object::open_link(&pins.link())
                .and_then(|l| object::link_program(&l, &pins.link()))
                .ok();
            id.filter(|id| tcx_egress_programs(&info.name).contains(id))
                .map(|id| (id, WireMode::Tcx))
        } else {
            let pinned = ProgramInfo::from_pin(pins.program()).ok().map(|p| p.id());
            self.hairpin_filter(info.ifindex)
                .await?
                .filter(|&id| Some(id) == pinned)
                .map(|id| (id, WireMode::Clsact))
        };
        let Some((prog_id, mode)) = running else {
            return Ok(None);
        };
        Ok(Some(HairpinStatus {
            link: info.name,
            ifindex: info.ifindex,
            prog_id,
            mode,
            current: self.reads_live_wire_maps(prog_id)?,
        }))
    }

    /// Whether program `prog_id` reads the `DST_DIRECT` of a wire attached
    /// in this namespace now.
    fn reads_live_wire_maps(&self, prog_id: u32) -> Result<bool, DatapathError> {
        let Some(info) = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == prog_id)
        else {
            return Ok(false);
        };
        let used = info
            .map_ids()
            .map_err(DatapathError::Program)?
            .unwrap_or_default();
        let wires = self.pins.list().map_err(|source| DatapathError::PinDir {
            path: self.pins.dir().into(),
            source,
        })?;
        Ok(wires.iter().any(|wire| {
            MapInfo::from_pin(wire.map(maps::DST_DIRECT)).is_ok_and(|m| used.contains(&m.id()))
        }))
    }

    /// The program of netvlan's clsact egress filter on `ifindex`, if it
    /// is the hairpin.
    async fn hairpin_filter(&self, ifindex: u32) -> Result<Option<u32>, DatapathError> {
        let filter = self
            .netlink
            .tc_bpf_filters(ifindex, true)
            .await?
            .into_iter()
            .find(|f| f.priority == HAIRPIN_FILTER_PRIORITY && f.handle == HAIRPIN_FILTER_HANDLE);
        Ok(filter
            .map(|f| f.prog_id)
            .filter(|&id| program_name(id).as_deref() == Some(HAIRPIN_PROGRAM)))
    }

    /// Removes whatever of a hairpin is on link `ifindex` (`ifname`): its
    /// clsact filter, its pins (which closes a TCX link), and waits until
    /// the kernel has let go of it.
    async fn remove_hairpin(&self, ifindex: u32, ifname: &str) -> Result<(), DatapathError> {
        if self.hairpin_filter(ifindex).await?.is_some() {
            // Dropping a filter link deletes the filter by priority and handle.
            drop(
                SchedClassifierLink::attached(
                    ifname,
                    TcAttachType::Egress,
                    HAIRPIN_FILTER_PRIORITY,
                    TcHandle::from(HAIRPIN_FILTER_HANDLE),
                    None,
                )
                .map_err(|e| DatapathError::AttachHairpin {
                    link: ifname.into(),
                    mode: WireMode::Clsact,
                    source: ProgramError::from(aya::programs::tc::TcError::IoError(e)),
                })?,
            );
            if let Some(prog_id) = self.hairpin_filter(ifindex).await? {
                return Err(DatapathError::FilterRemains {
                    ifname: ifname.into(),
                    prog_id,
                });
            }
        }
        let pins = self.pins.hairpin(ifindex);
        let tcx = pinned_link_program(&pins);
        remove_pins(&pins)?;
        self.pins.remove_if_empty();
        if let Some(prog_id) = tcx {
            // The kernel releases an unpinned bpf_link from a workqueue.
            const BOUND: std::time::Duration = std::time::Duration::from_secs(10);
            let start = std::time::Instant::now();
            while tcx_egress_programs(ifname).contains(&prog_id) {
                if start.elapsed() > BOUND {
                    return Err(DatapathError::DetachPending {
                        ifname: ifname.into(),
                        prog_id,
                        waited: BOUND,
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }

    /// Removes the pins of hairpins whose link is gone; whether any were.
    async fn prune_hairpins(&self) -> Result<bool, DatapathError> {
        let all = self
            .pins
            .hairpins()
            .map_err(|source| DatapathError::PinDir {
                path: self.pins.dir().into(),
                source,
            })?;
        let mut removed = false;
        for pins in all {
            match self.netlink.link_by_index(pins.ifindex).await {
                Err(NetlinkError::NoSuchIfindex { .. }) => {
                    remove_pins(&pins)?;
                    removed = true;
                }
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
        }
        self.pins.remove_if_empty();
        Ok(removed)
    }
}

fn remove_pins(pins: &InterfacePins) -> Result<(), DatapathError> {
    pins.remove().map_err(|source| DatapathError::PinDir {
        path: pins.dir().into(),
        source,
    })
}

/// The program the pinned TCX link in `pins` runs, if there is one.
fn pinned_link_program(pins: &InterfacePins) -> Option<u32> {
    let link = object::open_link(&pins.link()).ok()?;
    object::link_program(&link, &pins.link()).ok()
}

/// The ids of the programs on `ifname`'s TCX egress; none on kernels
/// without TCX.
fn tcx_egress_programs(ifname: &str) -> Vec<u32> {
    SchedClassifier::query_tcx(ifname, TcAttachType::Egress)
        .map(|(_, programs)| programs.iter().map(|p| p.id()).collect())
        .unwrap_or_default()
}

/// The name of loaded program `id`.
fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_string))
}
