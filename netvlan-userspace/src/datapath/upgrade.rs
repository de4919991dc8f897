//! Replacing a running XDP program with this binary's build, in place.
//!
//! The new program is loaded against the attachment's pinned maps (so
//! counters, policy and learned MACs carry over; maps the old build did not
//! have are created and pinned next to them), then swapped in with one
//! `BPF_LINK_UPDATE` on the pinned link: every frame sees either the old
//! program or the new one, never no program. Policy is never unenforced.
//!
//! A map whose shape (type, key, value, size) changed between builds cannot
//! be carried over: the upgrade refuses before touching anything, and a
//! detach + attach (which resets counters) is the way forward.

use std::path::{Path, PathBuf};

use aya::programs::{
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
    ProgramInfo,
};
use serde::Serialize;

use super::{
    object::{self, WIRE},
    Attachment, Datapath, DatapathError, InterfacePins,
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

/// A named step where tests stop the command (`FAILPOINTS=NAME=sleep(MS)`
/// with the `failpoints` feature) to kill it there; a no-op otherwise.
fn failpoint(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

fn upgrade_one(
    attachment: &Attachment,
    pins: &InterfacePins,
    force: bool,
) -> Result<UpgradeOutcome, DatapathError> {
    let (mut ebpf, new_maps) = WIRE.load_reusing(pins)?;
    let program = super::xdp_program(&mut ebpf)?;
    program.load().map_err(DatapathError::Program)?;
    let new_info = program.info().map_err(DatapathError::Program)?;

    let link = open_link(&pins.link())?;
    // What the link runs now (the program pin may lag behind it after a
    // crashed upgrade; the link is the truth).
    let old_prog_id = link_program(&link, &pins.link())?;
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
    // The link stays pinned; our fd to it can go.
    drop(program.take_link(id).map_err(DatapathError::Program)?);
    failpoint("upgrade-after-swap");

    // Re-point the program pin (for bpftool and friends; netvlan itself
    // goes by the link).
    object::replace_pin(pins.program(), |path| program.pin(path))?;
    Ok(UpgradeOutcome::Replaced {
        ifname: attachment.ifname.clone(),
        old_prog_id,
        new_prog_id: new_info.id(),
        new_maps,
    })
}

/// The pinned link at `path`.
fn open_link(path: &Path) -> Result<FdLink, DatapathError> {
    let pinned = PinnedLink::from_pin(path).map_err(|source| DatapathError::OpenPin {
        path: path.into(),
        source,
    })?;
    Ok(FdLink::from(pinned))
}

/// The id of the program `link` (pinned at `path`) runs.
fn link_program(link: &FdLink, path: &Path) -> Result<u32, DatapathError> {
    let info = link.info().map_err(|source| DatapathError::Link {
        path: path.into(),
        source,
    })?;
    Ok(info.program_id())
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
