//! The endpoint programs: on each endpoint link a TC egress program
//! (anti-spoofing when `spoofcheck=on`, and the endpoint's tx counters) and
//! a TC ingress program (its rx counters, whichever path frames come by).
//!
//! Attached inside the sandbox (the calling thread must be in its network
//! namespace) before the link comes up, so no frame ever leaves
//! unchecked. TCX where the kernel has it (6.6+): the link is pinned and
//! outlives the command. Older kernels: a clsact qdisc and a netlink
//! filter, which the kernel keeps on its own. Either way the attachment
//! goes away with the link when the endpoint is deleted.
//!
//! Pins: `$NETVLAN_BPF_DIR/net-<sandbox netns>/egress-<ifindex>/`.

use std::path::Path;

use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{links::FdLink, tc, SchedClassifier, TcAttachType},
    util::KernelVersion,
    Ebpf,
};
use netvlan_common::{
    egress::{
        EgressConfig, EGRESS_CONFIG, EGRESS_PROGRAM, EGRESS_SENT, EGRESS_SPOOFED, EGRESS_STATS,
        ENDPOINT_RECEIVED, INGRESS_PROGRAM,
    },
    maps::Counters,
};
use serde::Serialize;

use super::{pins, DatapathError, InterfacePins, NamespacePins};
use crate::netns::NetnsId;

static EGRESS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netvlan-egress.bpf.o"));

/// How the egress program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    Tcx,
    Clsact,
}

fn tcx_available() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// Attaches the endpoint programs to `ifname` (index `ifindex`) in the
/// calling thread's namespace; `config` says whether egress enforces
/// ([`netvlan_common::egress::EGRESS_ENFORCE`]). On failure nothing stays
/// attached or pinned.
pub fn attach(
    bpf_dir: &Path,
    ifindex: u32,
    ifname: &str,
    config: &EgressConfig,
) -> Result<EgressMode, DatapathError> {
    pins::ensure_bpffs(bpf_dir)?;
    let netns = NetnsId::current().map_err(DatapathError::Netns)?;
    let namespace = NamespacePins::new(bpf_dir, netns);
    let target = namespace.egress(ifindex);
    // A leftover of an earlier link with the same index: its program is
    // gone with that link.
    target.remove().map_err(|source| DatapathError::PinDir {
        path: target.dir().into(),
        source,
    })?;

    let mut ebpf = Ebpf::load(EGRESS_OBJECT).map_err(DatapathError::Load)?;
    {
        let map = ebpf
            .map_mut(EGRESS_CONFIG)
            .ok_or(DatapathError::MissingObject {
                what: "map",
                name: EGRESS_CONFIG,
            })?;
        let mut cfg: Array<&mut MapData, EgressConfig> =
            map.try_into().map_err(|e| DatapathError::OpenPin {
                path: target.map(EGRESS_CONFIG),
                source: Box::new(e),
            })?;
        cfg.set(0, *config, 0).map_err(|e| DatapathError::OpenPin {
            path: target.map(EGRESS_CONFIG),
            source: Box::new(e),
        })?;
    }
    let mode = if tcx_available() {
        EgressMode::Tcx
    } else {
        EgressMode::Clsact
    };
    if mode == EgressMode::Clsact {
        // EEXIST: the qdisc is already there, which is what we want.
        if let Err(e) = tc::qdisc_add_clsact(ifname) {
            let exists = matches!(&e, tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST));
            if !exists {
                return Err(DatapathError::Program(e.into()));
            }
        }
    }
    // Both directions attached before any pin is written; on failure the
    // unpinned links go with `ebpf` and detach.
    let mut links = Vec::new();
    for (name, direction) in [
        (EGRESS_PROGRAM, TcAttachType::Egress),
        (INGRESS_PROGRAM, TcAttachType::Ingress),
    ] {
        let program = classifier(&mut ebpf, name)?;
        program.load().map_err(DatapathError::Program)?;
        let id = program
            .attach(ifname, direction)
            .map_err(|source| DatapathError::Attach {
                ifname: ifname.into(),
                mode: super::AttachMode::Auto,
                source,
            })?;
        links.push((name, program.take_link(id).map_err(DatapathError::Program)?));
    }

    let staging = namespace.staging(ifindex);
    let pinned = (|| {
        std::fs::create_dir_all(staging.dir()).map_err(|source| DatapathError::PinDir {
            path: staging.dir().into(),
            source,
        })?;
        let pin_err = |path: std::path::PathBuf| move |source| DatapathError::Pin { path, source };
        for name in [EGRESS_CONFIG, EGRESS_STATS] {
            let map = ebpf
                .map(name)
                .ok_or(DatapathError::MissingObject { what: "map", name })?;
            map.pin(staging.map(name))
                .map_err(pin_err(staging.map(name)))?;
        }
        for (name, link) in links {
            let (program_pin, link_pin) = if name == EGRESS_PROGRAM {
                (staging.program(), staging.link())
            } else {
                (staging.dir().join("prog_in"), staging.dir().join("link_in"))
            };
            classifier(&mut ebpf, name)?
                .pin(&program_pin)
                .map_err(pin_err(program_pin.clone()))?;
            // TCX links need their pin to outlive us; a netlink filter is
            // held by the kernel already (converting it releases it
            // untouched).
            if let Ok(fd_link) = FdLink::try_from(link) {
                fd_link.pin(&link_pin).map_err(pin_err(link_pin.clone()))?;
            }
        }
        std::fs::rename(staging.dir(), target.dir()).map_err(|source| DatapathError::PinDir {
            path: target.dir().into(),
            source,
        })
    })();
    if let Err(e) = pinned {
        let _ = staging.remove();
        return Err(e);
    }
    Ok(mode)
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(DatapathError::MissingObject {
            what: "TC program",
            name,
        })
}

/// What one endpoint received and sent, and what anti-spoofing dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EgressStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub spoofed_packets: u64,
    pub spoofed_bytes: u64,
}

/// Reads an endpoint's egress counters from its pins (no need to enter
/// the sandbox: pins are files).
pub fn read_stats(
    bpf_dir: &Path,
    netns: NetnsId,
    ifindex: u32,
) -> Result<Option<EgressStats>, DatapathError> {
    let pins = NamespacePins::new(bpf_dir, netns).egress(ifindex);
    if !pins.exists() {
        return Ok(None);
    }
    let path = pins.map(EGRESS_STATS);
    let err = |e: aya::maps::MapError| DatapathError::OpenPin {
        path: path.clone(),
        source: Box::new(e),
    };
    let data = MapData::from_pin(&path).map_err(err)?;
    let map: PerCpuArray<MapData, Counters> = aya::maps::Map::from_map_data(data)
        .map_err(err)?
        .try_into()
        .map_err(err)?;
    let total = |slot: u32| -> Result<Counters, DatapathError> {
        let values = map.get(&slot, 0).map_err(err)?;
        Ok(values.iter().fold(Counters::default(), |mut acc, c| {
            acc.merge(c);
            acc
        }))
    };
    let (sent, spoofed) = (total(EGRESS_SENT)?, total(EGRESS_SPOOFED)?);
    // Endpoints connected by a build without the ingress counter have a
    // two-slot map: nothing received is known for them.
    let received = if map.len() > ENDPOINT_RECEIVED {
        total(ENDPOINT_RECEIVED)?
    } else {
        Counters::default()
    };
    Ok(Some(EgressStats {
        rx_packets: received.packets,
        rx_bytes: received.bytes,
        tx_packets: sent.packets,
        tx_bytes: sent.bytes,
        spoofed_packets: spoofed.packets,
        spoofed_bytes: spoofed.bytes,
    }))
}

/// Removes an endpoint's egress pins (its link is gone or going).
pub fn remove_pins(bpf_dir: &Path, netns: NetnsId, ifindex: u32) -> Result<(), DatapathError> {
    let namespace = NamespacePins::new(bpf_dir, netns);
    let pins: InterfacePins = namespace.egress(ifindex);
    pins.remove().map_err(|source| DatapathError::PinDir {
        path: pins.dir().into(),
        source,
    })?;
    namespace.remove_if_empty();
    Ok(())
}
