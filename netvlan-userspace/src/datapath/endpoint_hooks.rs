//! The endpoint programs: on each endpoint link a TC egress program
//! (anti-spoofing when `spoofcheck=on`, and the endpoint's tx counters) and
//! a TC ingress program (its rx counters, whichever path frames come by).
//!
//! Attached inside the sandbox (aya resolves the interface name in the
//! calling thread's namespace, so attaching runs on a thread in there, see
//! [`crate::sys::netns::run_blocking_in`]) before the link comes up, so no frame ever leaves
//! unchecked. TCX where the kernel has it (6.6+): the link is pinned and
//! outlives the command. Older kernels: a clsact qdisc and a netlink
//! filter, which the kernel keeps on its own. Either way the attachment
//! goes away with the link when the endpoint is deleted.
//!
//! Pins: `$NETVLAN_BPF_DIR/net-<sandbox netns>/egress-<ifindex>/`.

use std::path::{Path, PathBuf};

use aya::{
    maps::{Array, MapData},
    programs::{links::FdLink, tc, SchedClassifier, TcAttachType},
    util::KernelVersion,
    Ebpf,
};
use netvlan_common::{
    antispoof::{
        EgressConfig, EGRESS_CONFIG, EGRESS_PROGRAM, EGRESS_SENT, EGRESS_SPOOFED, EGRESS_STATS,
        ENDPOINT_RECEIVED, INGRESS_PROGRAM,
    },
    maps::Counters,
};
use serde::Serialize;

use super::{
    object::{self, ENDPOINT},
    pins, DatapathError, InterfacePins, NamespacePins,
};
use crate::sys::{
    bpf_batch::BatchMap,
    netns::{run_blocking_in, Netns, NetnsId},
};

/// How the egress program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    Tcx,
    Clsact,
}

impl EgressMode {
    pub fn name(self) -> &'static str {
        match self {
            EgressMode::Tcx => "tcx",
            EgressMode::Clsact => "clsact",
        }
    }
}

fn tcx_available() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// Whether programs [`attach`] puts on a link stay on it when the link
/// moves to another namespace: TCX links do, clsact filters do not (the
/// kernel flushes the qdisc on the move).
pub fn attached_across_moves() -> bool {
    tcx_available()
}

/// Moves an endpoint's pins after its link moved (with its TCX programs)
/// from namespace `from` (index `from_index`) to `to` (index `to_index`):
/// one bpffs rename, so the pins are never missing. Leftovers of an
/// earlier link at the new place are removed first.
pub fn move_pins(
    bpf_dir: &Path,
    from: NetnsId,
    from_index: u32,
    to: NetnsId,
    to_index: u32,
) -> Result<(), DatapathError> {
    let old = NamespacePins::new(bpf_dir, from);
    let source = old.egress(from_index);
    let namespace = NamespacePins::new(bpf_dir, to);
    let target = namespace.egress(to_index);
    let pin_dir = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DatapathError::PinDir { path, source }
    };
    if source.dir() == target.dir() {
        return Ok(());
    }
    std::fs::create_dir_all(namespace.dir()).map_err(pin_dir(namespace.dir()))?;
    target.remove().map_err(pin_dir(target.dir()))?;
    std::fs::rename(source.dir(), target.dir()).map_err(pin_dir(source.dir()))?;
    old.remove_if_empty();
    Ok(())
}

/// The endpoint object being loaded (parsed, the endpoint's own maps
/// created) on a thread of its own, none of which depends on a
/// namespace: a connect starts it first and makes the link meanwhile.
pub struct Loading(Option<std::thread::JoinHandle<Result<Ebpf, DatapathError>>>);

impl Loading {
    /// Starts loading (or, if no thread can be started, loads when
    /// [`attach`] needs the object).
    pub fn start() -> Self {
        let thread = std::thread::Builder::new()
            .name("endpoint-load".into())
            .spawn(|| ENDPOINT.load());
        if let Err(e) = &thread {
            tracing::debug!("loading the endpoint programs inline: no thread ({e})");
        }
        Loading(thread.ok())
    }

    fn finish(self) -> Result<Ebpf, DatapathError> {
        match self.0 {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => ENDPOINT.load(),
        }
    }
}

/// Attaches the endpoint programs (`loading`) to `ifname` (index
/// `ifindex`) in `netns`; `config` says whether egress enforces
/// ([`netvlan_common::antispoof::EGRESS_ENFORCE`]). On failure nothing stays
/// attached or pinned.
pub fn attach(
    bpf_dir: &Path,
    netns: &Netns,
    ifindex: u32,
    ifname: &str,
    config: &EgressConfig,
    loading: Loading,
) -> Result<EgressMode, DatapathError> {
    run_blocking_in(netns, || {
        attach_here(bpf_dir, netns, ifindex, ifname, config, loading)
    })?
}

/// [`attach`], on a thread already in `netns`.
fn attach_here(
    bpf_dir: &Path,
    netns: &Netns,
    ifindex: u32,
    ifname: &str,
    config: &EgressConfig,
    loading: Loading,
) -> Result<EgressMode, DatapathError> {
    pins::ensure_bpffs(bpf_dir)?;
    let namespace = NamespacePins::new(bpf_dir, netns.id());
    let target = namespace.egress(ifindex);
    // A leftover of an earlier link with the same index: its program is
    // gone with that link.
    target.remove().map_err(|source| DatapathError::PinDir {
        path: target.dir().into(),
        source,
    })?;

    let mut ebpf = loading.finish()?;
    {
        let map = ebpf
            .map_mut(EGRESS_CONFIG)
            .ok_or(DatapathError::MissingObject {
                what: "map",
                name: EGRESS_CONFIG,
            })?;
        let mut cfg: Array<&mut MapData, EgressConfig> =
            map.try_into().map_err(|source| DatapathError::OpenMap {
                name: EGRESS_CONFIG,
                path: target.map(EGRESS_CONFIG),
                source: Box::new(source),
            })?;
        cfg.set(0, *config, 0)
            .map_err(object::write_err(&target, EGRESS_CONFIG, None))?;
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
    // unpinned links go with `ebpf` (or the returned link) and detach.
    for name in [EGRESS_PROGRAM, INGRESS_PROGRAM] {
        classifier(&mut ebpf, name)?
            .load()
            .map_err(DatapathError::Program)?;
    }
    let (egress, ingress) = classifiers(&mut ebpf)?;
    // At the same time: a TCX attach waits for an RCU grace period (about
    // 8-16 ms here), and two waits in parallel end together.
    let (egress, ingress) = std::thread::scope(|scope| {
        let ingress = scope.spawn(|| {
            run_blocking_in(netns, || attach_one(ingress, ifname, TcAttachType::Ingress))
        });
        let egress = attach_one(egress, ifname, TcAttachType::Egress);
        let ingress = ingress.join().unwrap_or_else(|_| {
            Err(crate::sys::netns::NetnsError::Panicked {
                path: netns.path().into(),
            })
        });
        (egress, ingress)
    });
    let ingress = ingress??;
    let links = vec![(EGRESS_PROGRAM, egress?), (INGRESS_PROGRAM, ingress)];

    ENDPOINT.pin_new(
        &mut ebpf,
        &namespace.staging(ifindex),
        &target,
        |ebpf, to| {
            for (name, link) in links {
                let (program_pin, link_pin) = if name == EGRESS_PROGRAM {
                    (to.program(), to.link())
                } else {
                    (to.ingress_program(), to.ingress_link())
                };
                let program = classifier(ebpf, name)?;
                object::pin_at(program_pin, |path| program.pin(path))?;
                // TCX links need their pin to outlive us; a netlink filter is
                // held by the kernel already (converting it releases it
                // untouched).
                if let Ok(fd_link) = FdLink::try_from(link) {
                    object::pin_at(link_pin, |path| fd_link.pin(path).map(drop))?;
                }
            }
            Ok(())
        },
    )?;
    Ok(mode)
}

/// Attaches `program` (loaded) to `ifname` in the calling thread's
/// namespace and takes the link, which detaches when dropped.
fn attach_one(
    program: &mut SchedClassifier,
    ifname: &str,
    direction: TcAttachType,
) -> Result<aya::programs::tc::SchedClassifierLink, DatapathError> {
    let id = program
        .attach(ifname, direction)
        .map_err(|source| DatapathError::Attach {
            ifname: ifname.into(),
            mode: super::AttachMode::Auto,
            source,
        })?;
    program.take_link(id).map_err(DatapathError::Program)
}

/// The egress and the ingress program of the endpoint object, both at once.
fn classifiers(
    ebpf: &mut Ebpf,
) -> Result<(&mut SchedClassifier, &mut SchedClassifier), DatapathError> {
    let (mut egress, mut ingress) = (None, None);
    for (name, program) in ebpf.programs_mut() {
        let slot = match name {
            EGRESS_PROGRAM => &mut egress,
            INGRESS_PROGRAM => &mut ingress,
            _ => continue,
        };
        *slot = program.try_into().ok();
    }
    let missing = |name| DatapathError::MissingObject {
        what: "TC program",
        name,
    };
    Ok((
        egress.ok_or(missing(EGRESS_PROGRAM))?,
        ingress.ok_or(missing(INGRESS_PROGRAM))?,
    ))
}

pub(super) fn classifier<'a>(
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    let data = object::open_data(&pins, EGRESS_STATS)?;
    let map =
        BatchMap::new(&data, EGRESS_STATS).map_err(object::batch_err(&pins, EGRESS_STATS, None))?;
    stats_of(&pins, &map).map(Some)
}

/// The counters in an endpoint's open `EGRESS_STATS` (pinned in `pins`):
/// every slot in one batch lookup.
pub fn stats_of(pins: &InterfacePins, map: &BatchMap) -> Result<EgressStats, DatapathError> {
    let slots = map
        .lookup_range::<Counters>(0, map.max_entries())
        .map_err(object::batch_err(pins, EGRESS_STATS, None))?;
    let total = |slot: u32| {
        let values = slots.iter().find(|(key, _)| *key == slot);
        values.map_or(Counters::default(), |(_, values)| {
            values.iter().fold(Counters::default(), |mut acc, c| {
                acc.merge(c);
                acc
            })
        })
    };
    // Endpoints connected by a build without the ingress counter have a
    // two-slot map: nothing received is known for them.
    let (sent, spoofed, received) = (
        total(EGRESS_SENT),
        total(EGRESS_SPOOFED),
        total(ENDPOINT_RECEIVED),
    );
    Ok(EgressStats {
        rx_packets: received.packets,
        rx_bytes: received.bytes,
        tx_packets: sent.packets,
        tx_bytes: sent.bytes,
        spoofed_packets: spoofed.packets,
        spoofed_bytes: spoofed.bytes,
    })
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

/// Whether an endpoint's pinned programs run on its link, per direction,
/// as the kernel sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EndpointPrograms {
    /// The pin directory exists.
    pub pinned: bool,
    pub egress: bool,
    pub ingress: bool,
}

impl EndpointPrograms {
    pub fn complete(&self) -> bool {
        self.pinned && self.egress && self.ingress
    }
}

/// The programs running in one TC hook of `ifname`: TCX links and
/// clsact filters alike.
async fn programs_in_hook(
    netlink: &crate::sys::netlink::Netlink,
    netns: &Netns,
    ifindex: u32,
    ifname: &str,
    direction: TcAttachType,
) -> Result<Vec<u32>, DatapathError> {
    let mut ids = Vec::new();
    // Kernels without TCX answer EINVAL: nothing attached that way. The
    // query resolves `ifname` in the calling thread's namespace.
    let tcx = run_blocking_in(netns, || {
        SchedClassifier::query_tcx(ifname, direction)
            .map(|(_, programs)| programs.iter().map(|p| p.id()).collect::<Vec<u32>>())
    })?;
    if let Ok(programs) = tcx {
        ids.extend(programs);
    }
    ids.extend(
        netlink
            .tc_bpf_programs(ifindex, direction == TcAttachType::Egress)
            .await?,
    );
    Ok(ids)
}

fn pinned_program_id(path: &Path) -> Option<u32> {
    SchedClassifier::from_pin(path)
        .ok()
        .and_then(|p| p.info().ok())
        .map(|info| info.id())
}

/// Checks the endpoint programs pinned for link `ifindex` (named
/// `ifname`) in `netns`, which `netlink` is connected to.
pub async fn programs(
    bpf_dir: &Path,
    netlink: &crate::sys::netlink::Netlink,
    netns: &Netns,
    ifindex: u32,
    ifname: &str,
) -> Result<EndpointPrograms, DatapathError> {
    let pins = NamespacePins::new(bpf_dir, netns.id()).egress(ifindex);
    if !pins.exists() {
        return Ok(EndpointPrograms::default());
    }
    let egress = pinned_program_id(&pins.program());
    let ingress = pinned_program_id(&pins.ingress_program());
    let on = |id: Option<u32>, running: &[u32]| id.is_some_and(|id| running.contains(&id));
    Ok(EndpointPrograms {
        pinned: true,
        egress: on(
            egress,
            &programs_in_hook(netlink, netns, ifindex, ifname, TcAttachType::Egress).await?,
        ),
        ingress: on(
            ingress,
            &programs_in_hook(netlink, netns, ifindex, ifname, TcAttachType::Ingress).await?,
        ),
    })
}

/// Removes the endpoint pin directories [`stale_pins`] finds (and
/// namespace directories left empty); returns those removed with the
/// reason. A directory that cannot be removed goes to `failures` and the
/// others are still removed.
pub async fn prune_stale(
    bpf_dir: &Path,
    failures: &mut Vec<DatapathError>,
) -> Result<Vec<(PathBuf, u32, String)>, DatapathError> {
    let mut removed = Vec::new();
    for (path, ifindex, reason) in stale_pins(bpf_dir).await? {
        if let Err(source) = std::fs::remove_dir_all(&path) {
            failures.push(DatapathError::PinDir { path, source });
            continue;
        }
        if let Some(namespace) = path.parent() {
            // ENOTEMPTY while other pins remain.
            let _ = std::fs::remove_dir(namespace);
        }
        removed.push((path, ifindex, reason));
    }
    Ok(removed)
}

/// The endpoint pin directories of one network namespace.
pub(super) struct NamespaceEndpoints {
    /// The namespace's inode (its `net-<inode>` directory).
    pub ino: u64,
    /// Each `egress-N` directory, with N (the endpoint link's ifindex).
    pub endpoints: Vec<(PathBuf, u32)>,
}

/// The endpoint pin directories of every namespace that has some.
pub(super) fn pinned_endpoints(bpf_dir: &Path) -> Result<Vec<NamespaceEndpoints>, DatapathError> {
    let pin_dir_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DatapathError::PinDir { path, source }
    };
    let entries = match std::fs::read_dir(bpf_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(pin_dir_err(bpf_dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let Some(ino) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("net-"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let mut endpoints = Vec::new();
        for pin in std::fs::read_dir(&dir)
            .map_err(pin_dir_err(&dir))?
            .flatten()
        {
            let name = pin.file_name().to_string_lossy().into_owned();
            if let Some(ifindex) = name
                .strip_prefix("egress-")
                .and_then(|n| n.parse::<u32>().ok())
            {
                endpoints.push((pin.path(), ifindex));
            }
        }
        if !endpoints.is_empty() {
            out.push(NamespaceEndpoints { ino, endpoints });
        }
    }
    Ok(out)
}

/// Endpoint pin directories (`egress-N`) of every namespace whose programs
/// no longer run: the namespace or the link is gone, or the programs are
/// off the link. With the ifindex and the reason.
pub async fn stale_pins(bpf_dir: &Path) -> Result<Vec<(PathBuf, u32, String)>, DatapathError> {
    let mut removed = Vec::new();
    for NamespaceEndpoints { ino, endpoints } in pinned_endpoints(bpf_dir)? {
        let stale: Vec<(PathBuf, u32, String)> = match crate::sys::netns::find_by_inode(ino) {
            None => endpoints
                .into_iter()
                .map(|(path, ifindex)| (path, ifindex, "its network namespace is gone".into()))
                .collect(),
            Some(ns) => {
                let netns = Netns::open(&ns)?;
                let netlink = crate::sys::netlink::Netlink::connect_in(&netns)?;
                let mut stale = Vec::new();
                for (path, ifindex) in endpoints {
                    let link = match netlink.link_by_index(ifindex).await {
                        Ok(link) => link,
                        Err(crate::sys::netlink::NetlinkError::NoSuchIfindex { .. }) => {
                            stale.push((path, ifindex, "its link is gone".into()));
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let running = programs(bpf_dir, &netlink, &netns, ifindex, &link.name).await?;
                    if !running.egress && !running.ingress {
                        stale.push((
                            path,
                            ifindex,
                            format!("its programs are no longer on {}", link.name),
                        ));
                    }
                }
                stale
            }
        };
        removed.extend(stale);
    }
    Ok(removed)
}

/// Attaches the endpoint programs afresh to a link that lost them (its
/// old pins are dropped first, which detaches whatever half remained).
/// `netlink` is connected to `netns`, the endpoint's namespace.
pub async fn reattach(
    bpf_dir: &Path,
    netlink: &crate::sys::netlink::Netlink,
    netns: &Netns,
    ifindex: u32,
    ifname: &str,
    config: &EgressConfig,
) -> Result<EgressMode, DatapathError> {
    remove_pins(bpf_dir, netns.id(), ifindex)?;
    if !tcx_available() {
        // The kernel holds clsact filters without pins: drop what is left
        // of the old attachment (the link is netvlan's alone).
        for egress in [true, false] {
            netlink.flush_tc_hook(ifindex, egress).await?;
        }
    }
    attach(bpf_dir, netns, ifindex, ifname, config, Loading::start())
}
