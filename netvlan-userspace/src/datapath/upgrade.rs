//! Replacing a running wire program with this binary's build, in place.
//!
//! The new program is loaded against the attachment's pinned maps (so
//! counters, policy and learned MACs carry over; maps the old build did not
//! have are created and pinned next to them), then swapped in atomically:
//! one `BPF_LINK_UPDATE` on the pinned link (XDP, or TCX at TC ingress on
//! 6.6+), or at a clsact hook a replace of netvlan's filter by its priority
//! and handle. Every frame sees either the old program or the new one,
//! never no program. Policy is never unenforced.
//!
//! Learned MACs the wire denies are marked in the guard's table before the
//! swap (`maps::MAC_LEARN_DENIED`, which builds before it never set and
//! ignore), so the new program drops them on the guard's one lookup.
//! Pins without `DST_SPILL` (builds that hashed every MAC not in its
//! direct slot) get its bits for what `DST_SLOTS` holds before the swap.
//!
//! A map whose shape (type, key, value, size) changed between builds cannot
//! be carried over, nor can pinned maps this build no longer has (another
//! map layout, such as the per-MAC hash maps before the destination
//! slots): the upgrade refuses before touching anything, and a detach +
//! attach (which resets counters) is the way forward.
//!
//! The endpoint programs (TC egress and ingress on each endpoint link) are
//! upgraded the same way, against the endpoint's pinned maps (counters and
//! the anti-spoofing config carry over): a TCX link (6.6+) is updated with
//! `BPF_LINK_UPDATE`; a clsact filter (older kernels) is replaced in place
//! by a netlink filter change with its own priority and handle, which
//! cls_bpf swaps atomically too. Neither leaves a frame unchecked.

use std::path::{Path, PathBuf};

use aya::{
    maps::MapInfo,
    programs::{
        links::FdLink,
        tc::{SchedClassifierLink, TcHandle},
        xdp::XdpLink,
        ProgramInfo, TcAttachType,
    },
};
use netvlan_common::{
    antispoof::{EGRESS_PROGRAM, INGRESS_PROGRAM},
    maps::DST_SPILL,
};
use serde::Serialize;

use super::{
    endpoint_hooks::{self, EgressMode},
    object::{self, ENDPOINT, WIRE},
    Attachment, Datapath, DatapathError, InterfacePins, NamespacePins, WireMode,
    WIRE_FILTER_HANDLE, WIRE_FILTER_PRIORITY,
};
use crate::sys::{
    netlink::{Netlink, NetlinkError, TcBpfFilter},
    netns::{run_blocking_in, Netns},
};

/// What `upgrade` did on one attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum UpgradeOutcome {
    /// The running program is this build already (same tag); not forced.
    Current { ifname: String, prog_id: u32 },
    Replaced {
        ifname: String,
        old_prog_id: u32,
        new_prog_id: u32,
        /// Maps this build added, created empty and pinned.
        new_maps: Vec<String>,
    },
}

impl Datapath {
    /// Replaces the program on `ifname` (every attachment when `None`) with
    /// this build. Unless `force`, an attachment already running this build
    /// (same program tag) is left alone.
    pub async fn upgrade(
        &self,
        ifname: Option<&str>,
        force: bool,
    ) -> Result<Vec<UpgradeOutcome>, DatapathError> {
        let mut out = Vec::new();
        for (attachment, pins) in self.attachments(ifname).await? {
            out.push(upgrade_one(&attachment, &pins, force)?);
        }
        Ok(out)
    }
}

/// What `upgrade` did on one endpoint's programs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum EndpointUpgradeOutcome {
    /// Both programs are this build already (same tag); not forced.
    Current {
        ifname: String,
        pin_dir: PathBuf,
        egress_prog_id: u32,
        ingress_prog_id: u32,
    },
    Replaced {
        ifname: String,
        pin_dir: PathBuf,
        mode: EgressMode,
        egress: ProgramSwap,
        ingress: ProgramSwap,
        /// Maps this build added, created empty and pinned.
        new_maps: Vec<String>,
    },
}

/// One hook's program before and after an upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ProgramSwap {
    pub old_prog_id: u32,
    pub new_prog_id: u32,
}

impl Datapath {
    /// Replaces the endpoint programs of every endpoint pinned under the
    /// bpf directory, in every sandbox namespace, with this build. Unless
    /// `force`, endpoints already running this build are left alone.
    /// Endpoints whose namespace or link is gone are skipped (stale:
    /// `netvlan datapath prune` removes their pins).
    pub async fn upgrade_endpoints(
        &self,
        force: bool,
    ) -> Result<Vec<EndpointUpgradeOutcome>, DatapathError> {
        let mut out = Vec::new();
        for endpoint_hooks::NamespaceEndpoints { ino, endpoints } in
            endpoint_hooks::pinned_endpoints(self.bpf_dir())?
        {
            let Some(ns) = crate::sys::netns::find_by_inode(ino) else {
                tracing::warn!("network namespace {ino} is gone; its endpoint pins are stale");
                continue;
            };
            let netns = Netns::open(&ns)?;
            let netlink = Netlink::connect_in(&netns)?;
            let mut upgraded = Vec::new();
            for (pin_dir, ifindex) in endpoints {
                let link = match netlink.link_by_index(ifindex).await {
                    Ok(link) => link,
                    Err(NetlinkError::NoSuchIfindex { .. }) => {
                        tracing::warn!("{}: its link is gone; stale", pin_dir.display());
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                upgraded.push(
                    upgrade_endpoint(self.bpf_dir(), &netlink, &netns, ifindex, &link.name, force)
                        .await?,
                );
            }
            out.extend(upgraded);
        }
        Ok(out)
    }
}

/// One TC hook of an endpoint and its pins.
struct Hook {
    name: &'static str,
    program: &'static str,
    direction: TcAttachType,
    program_pin: PathBuf,
    link_pin: PathBuf,
}

/// What runs in a hook now: a pinned TCX link or a clsact filter.
enum Running {
    Tcx(FdLink),
    Filter(TcBpfFilter),
}

/// Replaces the endpoint programs of link `ifindex` (named `ifname`) in
/// `netns` with this build; `netlink` is connected to `netns`.
pub async fn upgrade_endpoint(
    bpf_dir: &Path,
    netlink: &Netlink,
    netns: &Netns,
    ifindex: u32,
    ifname: &str,
    force: bool,
) -> Result<EndpointUpgradeOutcome, DatapathError> {
    let pins = NamespacePins::new(bpf_dir, netns.id()).egress(ifindex);
    let (mut ebpf, new_maps) = ENDPOINT.load_reusing(&pins)?;
    // Until the first swap, a failure takes back the maps this load pinned.
    let mut swapped = false;
    let upgraded = async {
        // The attachment's own kind: TCX links are pinned, filters are not.
        let mode = if pins.link().exists() {
            EgressMode::Tcx
        } else {
            EgressMode::Clsact
        };
        let hooks = [
            Hook {
                name: "egress",
                program: EGRESS_PROGRAM,
                direction: TcAttachType::Egress,
                program_pin: pins.program(),
                link_pin: pins.link(),
            },
            Hook {
                name: "ingress",
                program: INGRESS_PROGRAM,
                direction: TcAttachType::Ingress,
                program_pin: pins.ingress_program(),
                link_pin: pins.ingress_link(),
            },
        ];
        let mut plan = Vec::new();
        for hook in &hooks {
            let program = endpoint_hooks::classifier(&mut ebpf, hook.program)?;
            program.load().map_err(DatapathError::Program)?;
            let new_info = program.info().map_err(DatapathError::Program)?;
            let (running, old_prog_id) = match mode {
                EgressMode::Tcx => {
                    let link = object::open_link(&hook.link_pin)?;
                    let id = object::link_program(&link, &hook.link_pin)?;
                    (Running::Tcx(link), id)
                }
                EgressMode::Clsact => {
                    let filter = running_filter(netlink, ifindex, ifname, &pins, hook).await?;
                    (Running::Filter(filter), filter.prog_id)
                }
            };
            let current = is_current(old_prog_id, &hook.program_pin, &new_info);
            plan.push((running, old_prog_id, new_info.id(), current));
        }
        if !force && new_maps.is_empty() && plan.iter().all(|(.., current)| *current) {
            return Ok(EndpointUpgradeOutcome::Current {
                ifname: ifname.into(),
                pin_dir: pins.dir().into(),
                egress_prog_id: plan[0].1,
                ingress_prog_id: plan[1].1,
            });
        }

        // aya resolves the link by name and (for clsact) talks netlink from
        // the calling thread: the swap runs with a thread in the namespace.
        let swaps = run_blocking_in(netns, || -> Result<Vec<ProgramSwap>, DatapathError> {
            let mut swaps = Vec::new();
            for (hook, (running, old_prog_id, new_prog_id, _)) in hooks.iter().zip(plan) {
                let program = endpoint_hooks::classifier(&mut ebpf, hook.program)?;
                let link = match running {
                    Running::Tcx(link) => {
                        SchedClassifierLink::try_from(link).map_err(|source| {
                            DatapathError::Link {
                                path: hook.link_pin.clone(),
                                source,
                            }
                        })?
                    }
                    Running::Filter(filter) => SchedClassifierLink::attached(
                        ifname,
                        hook.direction,
                        filter.priority,
                        TcHandle::from(filter.handle),
                        None,
                    )
                    .map_err(|e| DatapathError::ReplaceEndpoint {
                        ifname: ifname.into(),
                        hook: hook.name,
                        source: e.into(),
                    })?,
                };
                // The swap: BPF_LINK_UPDATE on the TCX link, or a change of the
                // filter with the same priority and handle; atomic either way.
                let id = program.attach_to_link(link).map_err(|source| {
                    DatapathError::ReplaceEndpoint {
                        ifname: ifname.into(),
                        hook: hook.name,
                        source,
                    }
                })?;
                // The TCX link stays pinned and the filter stays with the kernel:
                // let go of ours without detaching (converting a filter releases
                // it untouched; a TCX fd just closes).
                swapped = true;
                let _ = FdLink::try_from(program.take_link(id).map_err(DatapathError::Program)?);
                object::replace_pin(hook.program_pin.clone(), |path| program.pin(path))?;
                swaps.push(ProgramSwap {
                    old_prog_id,
                    new_prog_id,
                });
            }
            Ok(swaps)
        })??;
        Ok::<_, DatapathError>(EndpointUpgradeOutcome::Replaced {
            ifname: ifname.into(),
            pin_dir: pins.dir().into(),
            mode,
            egress: swaps[0],
            ingress: swaps[1],
            new_maps: new_maps.clone(),
        })
    }
    .await;
    match upgraded {
        Err(error) if !swapped => Err(unpin_added(&pins, &new_maps, error)),
        upgraded => upgraded,
    }
}

/// The clsact filter in `hook` that runs the endpoint's pinned program. A
/// lone filter is taken for ours even when the pin lags behind it (an
/// upgrade killed between swap and re-pin): the link is netvlan's alone.
async fn running_filter(
    netlink: &Netlink,
    ifindex: u32,
    ifname: &str,
    pins: &InterfacePins,
    hook: &Hook,
) -> Result<TcBpfFilter, DatapathError> {
    let filters = netlink
        .tc_bpf_filters(ifindex, hook.direction == TcAttachType::Egress)
        .await?;
    let pinned = ProgramInfo::from_pin(&hook.program_pin)
        .map(|p| p.id())
        .ok();
    let ours = filters.iter().find(|f| Some(f.prog_id) == pinned);
    match (ours, filters.as_slice()) {
        (Some(filter), _) | (None, [filter]) => Ok(*filter),
        _ => Err(DatapathError::EndpointProgramMissing {
            ifname: ifname.into(),
            hook: hook.name,
            pin_dir: pins.dir().into(),
        }),
    }
}

/// A named step where tests stop the command (`FAILPOINTS=NAME=sleep(MS)`
/// with the `failpoints` feature) to kill it there, or fail it
/// (`NAME=return`); a no-op otherwise.
pub(super) fn failpoint(name: &str) -> Result<(), DatapathError> {
    if crate::sys::failpoint::step(name) {
        return Err(DatapathError::Injected(name.into()));
    }
    Ok(())
}

/// Removes the pins of `added`, the maps this build added that the
/// failed upgrade's load pinned, and returns `error`. Until the swap
/// only the new program (never run) used them; left behind, the next
/// upgrade would take them for carried-over state: a `DST_SPILL` without
/// its bits, so the hashed MACs of the old program would not be found.
fn unpin_added(pins: &InterfacePins, added: &[String], error: DatapathError) -> DatapathError {
    let left: Vec<String> = added
        .iter()
        .map(|name| pins.map(name))
        .filter_map(|path| match std::fs::remove_file(&path) {
            Ok(()) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("{}: {e}", path.display())),
        })
        .collect();
    if left.is_empty() {
        return error;
    }
    DatapathError::UpgradeLeftMaps {
        error: Box::new(error),
        left: left.join(", "),
    }
}

fn upgrade_one(
    attachment: &Attachment,
    pins: &InterfacePins,
    force: bool,
) -> Result<UpgradeOutcome, DatapathError> {
    check_layout(attachment, pins)?;
    // Learned entries of denied MACs carry the denied bit this build's
    // program reads instead of the deny list (older builds never set it).
    super::policy_maps::mark_pinned_denied(pins)?;
    let (mut ebpf, new_maps) = WIRE.load_reusing(pins)?;
    let mut swapped = false;
    match swap_wire(attachment, pins, force, &mut ebpf, &new_maps, &mut swapped) {
        Err(error) if !swapped => Err(unpin_added(pins, &new_maps, error)),
        upgraded => upgraded,
    }
}

/// The rest of [`upgrade_one`], from the loaded object to the re-pin;
/// sets `swapped` once the new program runs (from then on the maps it
/// added are in use).
fn swap_wire(
    attachment: &Attachment,
    pins: &InterfacePins,
    force: bool,
    ebpf: &mut aya::Ebpf,
    new_maps: &[String],
    swapped: &mut bool,
) -> Result<UpgradeOutcome, DatapathError> {
    // Pins from a build without `DST_SPILL`: the map was just created
    // empty; its bits must be set before this build's program runs, or
    // it would not look up what that build left in the hash.
    if new_maps.iter().any(|m| m == DST_SPILL) {
        super::policy_maps::mark_pinned_spills(pins)?;
    }
    failpoint("upgrade-before-swap")?;
    if attachment.hook == super::Hook::Tc {
        return upgrade_tc(attachment, pins, force, ebpf, new_maps, swapped);
    }
    let program = super::xdp_program(ebpf)?;
    program.load().map_err(DatapathError::Program)?;
    let new_info = program.info().map_err(DatapathError::Program)?;

    let link = object::open_link(&pins.link())?;
    // What the link runs now (the program pin may lag behind it after a
    // crashed upgrade; the link is the truth).
    let old_prog_id = object::link_program(&link, &pins.link())?;
    if !force && is_current(old_prog_id, &pins.program(), &new_info) && new_maps.is_empty() {
        return Ok(UpgradeOutcome::Current {
            ifname: attachment.ifname.clone(),
            prog_id: old_prog_id,
        });
    }
    let link = XdpLink::try_from(link).map_err(|source| DatapathError::Link {
        path: pins.link(),
        source,
    })?;
    // The swap: one BPF_LINK_UPDATE, atomic for every CPU.
    let id = program
        .attach_to_link(link)
        .map_err(|source| DatapathError::Replace {
            ifname: attachment.ifname.clone(),
            source,
        })?;
    *swapped = true;
    // The link stays pinned; our fd to it can go.
    drop(program.take_link(id).map_err(DatapathError::Program)?);
    failpoint("upgrade-after-swap")?;

    // Re-point the program pin (for bpftool and friends; netvlan itself
    // goes by the link).
    object::replace_pin(pins.program(), |path| program.pin(path))?;
    Ok(UpgradeOutcome::Replaced {
        ifname: attachment.ifname.clone(),
        old_prog_id,
        new_prog_id: new_info.id(),
        new_maps: new_maps.to_vec(),
    })
}

/// [`upgrade_one`] at TC ingress: a TCX link update, or a replace of
/// netvlan's clsact filter in place (same priority and handle).
fn upgrade_tc(
    attachment: &Attachment,
    pins: &InterfacePins,
    force: bool,
    ebpf: &mut aya::Ebpf,
    new_maps: &[String],
    swapped: &mut bool,
) -> Result<UpgradeOutcome, DatapathError> {
    let program = super::tc_program(ebpf)?;
    program.load().map_err(DatapathError::Program)?;
    let new_info = program.info().map_err(DatapathError::Program)?;
    let replace_err = |source| DatapathError::Replace {
        ifname: attachment.ifname.clone(),
        source,
    };
    let (link, old_prog_id) = if attachment.mode == WireMode::Tcx {
        let link = object::open_link(&pins.link())?;
        let old_prog_id = object::link_program(&link, &pins.link())?;
        let link = SchedClassifierLink::try_from(link).map_err(|source| DatapathError::Link {
            path: pins.link(),
            source,
        })?;
        (link, old_prog_id)
    } else {
        // The filter netvlan keeps at its own priority and handle.
        let link = SchedClassifierLink::attached(
            &attachment.ifname,
            TcAttachType::Ingress,
            WIRE_FILTER_PRIORITY,
            TcHandle::from(WIRE_FILTER_HANDLE),
            None,
        )
        .map_err(|e| replace_err(aya::programs::tc::TcError::IoError(e).into()))?;
        (link, attachment.prog_id)
    };
    if !force && is_current(old_prog_id, &pins.program(), &new_info) && new_maps.is_empty() {
        // Let go of the filter without deleting it (a TCX fd just closes).
        let _ = FdLink::try_from(link);
        return Ok(UpgradeOutcome::Current {
            ifname: attachment.ifname.clone(),
            prog_id: old_prog_id,
        });
    }
    // The swap: BPF_LINK_UPDATE on the TCX link, or a change of the filter
    // with the same priority and handle; atomic either way.
    let id = program.attach_to_link(link).map_err(replace_err)?;
    *swapped = true;
    // The TCX link stays pinned and the filter stays with the kernel: let
    // go of ours without detaching (converting a filter releases it
    // untouched; a TCX fd just closes).
    let _ = FdLink::try_from(program.take_link(id).map_err(DatapathError::Program)?);
    failpoint("upgrade-after-swap")?;
    object::replace_pin(pins.program(), |path| program.pin(path))?;
    Ok(UpgradeOutcome::Replaced {
        ifname: attachment.ifname.clone(),
        old_prog_id,
        new_prog_id: new_info.id(),
        new_maps: new_maps.to_vec(),
    })
}

/// Refuses, before anything is loaded, an attachment whose pins hold maps
/// this build does not declare (another map layout: what they hold cannot
/// be carried over, and swapping would drop it silently).
fn check_layout(attachment: &Attachment, pins: &InterfacePins) -> Result<(), DatapathError> {
    let pinned = pinned_maps(pins)?;
    let (gone, missing) = layout_change(&pinned, WIRE.maps);
    if gone.is_empty() {
        return Ok(());
    }
    Err(DatapathError::OtherMapLayout {
        ifname: attachment.ifname.clone(),
        pin_dir: pins.dir().into(),
        gone: gone.join(", "),
        missing: if missing.is_empty() {
            "none".into()
        } else {
            missing.join(", ")
        },
    })
}

/// The names of the maps pinned in `pins` (programs and links left out).
fn pinned_maps(pins: &InterfacePins) -> Result<Vec<String>, DatapathError> {
    let pin_dir_err = |source| DatapathError::PinDir {
        path: pins.dir().into(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(pins.dir()).map_err(pin_dir_err)? {
        let entry = entry.map_err(pin_dir_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // The program and link pins, and a program pin mid-replace.
        let program_or_link = entry.path() == pins.program()
            || entry.path() == pins.link()
            || name.ends_with("_next");
        if !program_or_link && MapInfo::from_pin(entry.path()).is_ok() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// The maps pinned that this build (`built`) does not declare, and those
/// it declares that are not pinned: a layout change when the first is not
/// empty (the second alone is maps a build added, which upgrade creates).
fn layout_change(pinned: &[String], built: &[&str]) -> (Vec<String>, Vec<String>) {
    let gone = pinned
        .iter()
        .filter(|p| !built.contains(&p.as_str()))
        .cloned()
        .collect();
    let missing = built
        .iter()
        .filter(|b| !pinned.iter().any(|p| p == *b))
        .map(|b| b.to_string())
        .collect();
    (gone, missing)
}

/// Whether the running program `old_prog_id` is this build (`new`, same
/// tag) and the program pin at `program_pin` names it. A pin that lags
/// behind what runs (an upgrade killed between swap and re-pin) is
/// repaired by swapping again.
fn is_current(old_prog_id: u32, program_pin: &Path, new: &ProgramInfo) -> bool {
    let old_tag = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == old_prog_id)
        .map(|p| p.tag());
    let pinned = ProgramInfo::from_pin(program_pin).map(|p| p.id()).ok();
    pinned == Some(old_prog_id) && old_tag == Some(new.tag())
}

#[cfg(test)]
mod tests {
    use super::layout_change;
    use netvlan_common::maps::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn pins_of_the_per_mac_layout_are_another_layout_for_the_destination_slot_build() {
        // The wire's maps before issue #12 (their names are gone from the
        // code) and after it.
        let before = [
            "VLAN_STATS",
            "MAC_STATS",
            COUNTERS,
            "WIRE_POLICY",
            VLAN_POLICY,
            "ENDPOINT_MACS",
            DENY_MACS,
            DROPS,
            VLAN_DROPS,
            MAC_LEARN,
            MAC_GUARD,
            ENDPOINT_IPS,
            "MAC_DROPS",
        ];
        let after = WIRE_MAPS;
        let (gone, missing) = layout_change(&names(&before), after);
        assert_eq!(
            gone,
            names(&[
                "VLAN_STATS",
                "MAC_STATS",
                "WIRE_POLICY",
                "ENDPOINT_MACS",
                "MAC_DROPS"
            ])
        );
        use netvlan_common::trace::{TRACE_CONFIG, TRACE_LOST, TRACE_RING};
        assert_eq!(
            missing,
            names(&[
                VLAN_COUNTERS,
                DST_DIRECT,
                DST_SPILL,
                DST_SLOTS,
                DST_STATS,
                DST_DROPS,
                TRACE_RING,
                TRACE_CONFIG,
                TRACE_LOST
            ])
        );
        // The same layout is no change; a build that only adds maps is none
        // either (upgrade creates them).
        assert_eq!(layout_change(&names(after), after), (vec![], vec![]));
        let (gone, missing) = layout_change(&names(&after[1..]), after);
        assert!(gone.is_empty());
        assert_eq!(missing, names(&[COUNTERS]));
    }
}
