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

use std::path::PathBuf;

use aya::{
    maps::MapInfo,
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
    EbpfLoader,
};
use serde::Serialize;

use super::{Attachment, Datapath, DatapathError, InterfacePins, XDP_OBJECT};

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

/// One map's shape, as the kernel reports it and as the object declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {}, key {} B, value {} B, {} entries",
            self.map_type, self.key_size, self.value_size, self.max_entries
        )
    }
}

/// The shapes of the embedded object's maps.
fn object_shapes() -> Result<std::collections::HashMap<String, Shape>, DatapathError> {
    let object = aya_obj::Object::parse(XDP_OBJECT).map_err(|e| DatapathError::Load(e.into()))?;
    Ok(object
        .maps
        .iter()
        .map(|(name, m)| {
            let shape = Shape {
                map_type: m.map_type(),
                key_size: m.key_size(),
                value_size: m.value_size(),
                max_entries: m.max_entries(),
            };
            (name.clone(), shape)
        })
        .collect())
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
        let shapes = object_shapes()?;
        let mut out = Vec::new();
        for (attachment, pins) in self.attachments(ifname).await? {
            out.push(upgrade_one(&attachment, &pins, &shapes, force)?);
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
    shapes: &std::collections::HashMap<String, Shape>,
    force: bool,
) -> Result<UpgradeOutcome, DatapathError> {
    // Refuse before loading anything if a pinned map cannot be reused.
    let mut new_maps = Vec::new();
    for &name in InterfacePins::MAPS {
        let want = shapes
            .get(name)
            .ok_or(DatapathError::MissingObject { what: "map", name })?;
        let path = pins.map(name);
        if !path.exists() {
            new_maps.push(name.to_string());
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(|e| DatapathError::OpenPin {
            path: path.clone(),
            source: Box::new(e),
        })?;
        let have = Shape {
            map_type: info.map_type().map_or(u32::MAX, |t| t as u32),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        };
        if have != *want {
            return Err(DatapathError::IncompatibleMap {
                path,
                pinned: have.to_string(),
                built: want.to_string(),
            });
        }
    }

    let mut loader = EbpfLoader::new();
    for &name in InterfacePins::MAPS {
        loader.map_pin_path(name, pins.map(name));
    }
    let mut ebpf = loader.load(XDP_OBJECT).map_err(DatapathError::Load)?;
    let program = super::xdp_program(&mut ebpf)?;
    program.load().map_err(DatapathError::Program)?;
    let new_info = program.info().map_err(DatapathError::Program)?;

    let link_err = |e: Box<dyn std::error::Error + Send + Sync>| DatapathError::OpenPin {
        path: pins.link(),
        source: e,
    };
    let pinned = PinnedLink::from_pin(pins.link()).map_err(|e| link_err(Box::new(e)))?;
    let link = FdLink::from(pinned);
    // What the link runs now (the program pin may lag behind it after a
    // crashed upgrade; the link is the truth).
    let old_prog_id = link.info().map_err(|e| link_err(Box::new(e)))?.program_id();
    let old_tag = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == old_prog_id)
        .map(|p| p.tag());
    // A program pin that lags behind the link (an upgrade killed between
    // swap and re-pin) is repaired by swapping again.
    let pin_lags = aya::programs::ProgramInfo::from_pin(pins.program())
        .map(|p| p.id())
        .ok()
        != Some(old_prog_id);
    if !force && !pin_lags && old_tag == Some(new_info.tag()) && new_maps.is_empty() {
        return Ok(UpgradeOutcome::Current {
            ifname: attachment.ifname.clone(),
            prog_id: old_prog_id,
        });
    }
    let link = XdpLink::try_from(link).map_err(|e| link_err(Box::new(e)))?;
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
    // goes by the link): pin under a temporary name, rename over the old.
    let staged: PathBuf = pins.dir().join("prog_next");
    let _ = std::fs::remove_file(&staged);
    program.pin(&staged).map_err(|source| DatapathError::Pin {
        path: staged.clone(),
        source,
    })?;
    std::fs::rename(&staged, pins.program()).map_err(|source| DatapathError::PinDir {
        path: pins.program(),
        source,
    })?;
    Ok(UpgradeOutcome::Replaced {
        ifname: attachment.ifname.clone(),
        old_prog_id,
        new_prog_id: new_info.id(),
        new_maps,
    })
}
