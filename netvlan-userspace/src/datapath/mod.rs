//! The datapath loader: attaches netvlan's XDP program to a link, pins it so
//! it outlives the command, and finds it again later.
//!
//! Each attachment is a separate instance of the program with its own maps,
//! pinned under the namespace's directory (see [`pins`]). The kernel's view
//! (the XDP program id netlink reports on the link) is the truth: pins whose
//! program is no longer on their link are reported as stale.

pub mod counters;
pub mod endpoint_hooks;
pub mod object;
pub mod pins;
pub mod policy_maps;
pub mod upgrade;

use std::path::{Path, PathBuf};

use aya::{
    maps::MapError,
    programs::{
        links::{FdLink, LinkError},
        ProgramError, Xdp, XdpMode,
    },
    Ebpf, EbpfError,
};
use netvlan_common::maps;
use serde::Serialize;

use crate::{
    keyword::{keyword_text, Keyword},
    sys::netlink::{LinkInfo, Netlink, NetlinkError, XdpAttachMode},
    sys::netns::NetnsId,
};
pub use pins::{BpfFsError, InterfacePins, NamespacePins, DEFAULT_BPF_DIR};

/// The embedded eBPF object (the XDP program, its maps, and the
/// benchmarks' pass-only floor program), for tools that load it themselves.
pub fn embedded_object() -> &'static [u8] {
    object::WIRE.bytes
}

/// Errors of the datapath loader.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    BpfFs(#[from] BpfFsError),
    #[error("cannot identify the current network namespace")]
    Netns(#[source] std::io::Error),
    #[error(transparent)]
    EnterNetns(#[from] crate::sys::netns::NetnsError),
    #[error("cannot load the XDP program into the kernel")]
    Load(#[source] EbpfError),
    #[error("the embedded eBPF object has no {what} '{name}' (build mismatch)")]
    MissingObject {
        what: &'static str,
        name: &'static str,
    },
    #[error("cannot load the XDP program into the kernel")]
    Program(#[source] ProgramError),
    #[error("cannot attach XDP to {ifname} in {mode} mode")]
    Attach {
        ifname: String,
        mode: AttachMode,
        #[source]
        source: ProgramError,
    },
    #[error("{ifname} already runs netvlan's XDP program in {current} mode; detach it first to switch to {requested} mode")]
    ModeMismatch {
        ifname: String,
        current: XdpAttachMode,
        requested: AttachMode,
    },
    #[error("{ifname} already has another XDP program (id {prog_id}, {mode} mode) that netvlan did not attach; remove it first")]
    ForeignProgram {
        ifname: String,
        prog_id: u32,
        mode: XdpAttachMode,
    },
    #[error("netvlan's datapath is not attached to {ifname}")]
    NotAttached { ifname: String },
    #[error(
        "program {prog_id} is still on {ifname} {waited:?} after its pins were removed \
         (the kernel has not released the link yet)"
    )]
    DetachPending {
        ifname: String,
        prog_id: u32,
        waited: std::time::Duration,
    },
    #[error("cannot pin {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("cannot open pinned {path}")]
    OpenPin {
        path: PathBuf,
        #[source]
        source: LinkError,
    },
    #[error("cannot open pinned {path}")]
    OpenMap {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: Box<MapError>,
    },
    /// A link netvlan holds or pinned is not of the kind it needs, or the
    /// kernel would not describe it.
    #[error("cannot use the BPF link {path}")]
    Link {
        path: PathBuf,
        #[source]
        source: LinkError,
    },
    #[error("cannot read the datapath map {path}")]
    MapRead {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: Box<MapError>,
    },
    #[error("cannot delete from the datapath map {path}")]
    MapDelete {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: Box<MapError>,
    },
    #[error("cannot upgrade in place: the pinned map {path} has {pinned}, this build wants {built}; `netvlan datapath detach` and `attach` load it afresh (counters start from zero)")]
    IncompatibleMap {
        path: PathBuf,
        pinned: String,
        built: String,
    },
    #[error("cannot swap the XDP program on {ifname} (BPF_LINK_UPDATE)")]
    Replace {
        ifname: String,
        #[source]
        source: ProgramError,
    },
    #[error("cannot swap the {hook} program on endpoint link {ifname}")]
    ReplaceEndpoint {
        ifname: String,
        hook: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("the endpoint's {hook} program pinned in {pin_dir} does not run on {ifname}; `netvlan restore` attaches it afresh")]
    EndpointProgramMissing {
        ifname: String,
        hook: &'static str,
        pin_dir: PathBuf,
    },
    #[error("cannot update the datapath map {path}")]
    MapUpdate {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: Box<MapError>,
    },
    #[error("batch operation on the datapath map {path} failed")]
    MapBatch {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: Box<crate::sys::bpf_batch::BatchError>,
    },
    /// The kernel refused an insert with E2BIG: every entry is taken.
    #[error("the datapath map {path} is full: it holds at most {capacity} entries")]
    MapFull { path: PathBuf, capacity: u32 },
    #[error("cannot size per-CPU values to this machine's possible CPUs")]
    PossibleCpus(#[source] std::io::Error),
    /// A teardown kept going past failed steps; each failure, in order.
    #[error("{}", failure_list(.failures))]
    Teardown { failures: Vec<DatapathError> },
    #[error("cannot update bpffs directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The mode asked for on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic with a warning.
    #[default]
    Auto,
    /// Driver mode only: fail if the driver has no XDP support.
    Native,
    /// Generic (skb) mode: works on every link, slower.
    Generic,
}

impl Keyword for AttachMode {
    const WHAT: &'static str = "attach mode";
    const ALL: &'static [Self] = &[Self::Auto, Self::Native, Self::Generic];
    fn name(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
    fn help(self) -> Option<&'static str> {
        Some(match self {
            AttachMode::Auto => "Native (driver) mode, falling back to generic with a warning",
            AttachMode::Native => "Driver mode only: fail if the driver has no XDP support",
            AttachMode::Generic => "Generic (skb) mode: works on every link, slower",
        })
    }
}
keyword_text!(AttachMode);

impl AttachMode {
    fn accepts(self, current: XdpAttachMode) -> bool {
        match self {
            AttachMode::Auto => true,
            AttachMode::Native => current == XdpAttachMode::Native,
            AttachMode::Generic => current == XdpAttachMode::Generic,
        }
    }
}

/// A live attachment of netvlan's program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub ifname: String,
    pub ifindex: u32,
    pub mode: XdpAttachMode,
    pub prog_id: u32,
    pub pin_dir: PathBuf,
}

/// What `attach` did.
#[derive(Debug)]
pub enum AttachOutcome {
    Attached {
        attachment: Attachment,
        /// Why native mode was refused when `auto` fell back to generic.
        native_refused: Option<String>,
    },
    /// Our program was already there; nothing changed.
    AlreadyAttached(Attachment),
}

/// The state of one pinned attachment, checked against the kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum AttachmentStatus {
    Attached(Attachment),
    /// Pins exist but the program is no longer on the link (the interface
    /// was deleted, or something replaced the program).
    Stale {
        ifindex: u32,
        ifname: Option<String>,
        reason: String,
        pin_dir: PathBuf,
    },
}

/// The datapath of the current network namespace. Clones share one
/// netlink connection.
#[derive(Clone)]
pub struct Datapath {
    bpf_dir: PathBuf,
    pins: NamespacePins,
    netlink: Netlink,
}

impl Datapath {
    /// Opens the datapath for the calling thread's network namespace.
    pub fn open(bpf_dir: &Path) -> Result<Self, DatapathError> {
        let netns = NetnsId::current().map_err(DatapathError::Netns)?;
        Ok(Datapath {
            bpf_dir: bpf_dir.into(),
            pins: NamespacePins::new(bpf_dir, netns),
            netlink: Netlink::connect()?,
        })
    }

    pub fn netlink(&self) -> &Netlink {
        &self.netlink
    }

    pub fn bpf_dir(&self) -> &Path {
        &self.bpf_dir
    }

    /// Attaches the program to `ifname`, or reports that it already is.
    pub async fn attach(
        &self,
        ifname: &str,
        mode: AttachMode,
    ) -> Result<AttachOutcome, DatapathError> {
        let link = self.netlink.link_by_name(ifname).await?;
        let pins = self.pins.interface(link.ifindex);
        if let Some(existing) = self.check_existing(&link, &pins)? {
            if !mode.accepts(existing.mode) {
                return Err(DatapathError::ModeMismatch {
                    ifname: link.name,
                    current: existing.mode,
                    requested: mode,
                });
            }
            return Ok(AttachOutcome::AlreadyAttached(existing));
        }

        pins::ensure_bpffs(&self.bpf_dir)?;
        let mut ebpf = object::WIRE.load()?;
        let program = xdp_program(&mut ebpf)?;
        program.load().map_err(DatapathError::Program)?;

        let (link_id, native_refused) = match mode {
            AttachMode::Native | AttachMode::Generic => {
                let xdp_mode = if mode == AttachMode::Native {
                    XdpMode::Driver
                } else {
                    XdpMode::Skb
                };
                let id = program
                    .attach_to_if_index(link.ifindex, xdp_mode)
                    .map_err(|source| DatapathError::Attach {
                        ifname: link.name.clone(),
                        mode,
                        source,
                    })?;
                (id, None)
            }
            AttachMode::Auto => match program.attach_to_if_index(link.ifindex, XdpMode::Driver) {
                Ok(id) => (id, None),
                Err(native) => {
                    let reason = error_chain(&native);
                    tracing::warn!(
                        "{}: native XDP refused ({reason}); using generic mode",
                        link.name
                    );
                    let id = program
                        .attach_to_if_index(link.ifindex, XdpMode::Skb)
                        .map_err(|source| DatapathError::Attach {
                            ifname: link.name.clone(),
                            mode: AttachMode::Generic,
                            source,
                        })?;
                    (id, Some(reason))
                }
            },
        };
        let xdp_link = program.take_link(link_id).map_err(DatapathError::Program)?;
        let fd_link = FdLink::try_from(xdp_link).map_err(|source| DatapathError::Link {
            path: pins.link(),
            source,
        })?;
        // On failure nothing stays pinned, and the link fd is dropped
        // unpinned, which detaches the program.
        object::WIRE.pin_new(
            &mut ebpf,
            &self.pins.staging(link.ifindex),
            &pins,
            |ebpf, to| {
                let program = xdp_program(ebpf)?;
                object::pin_at(to.program(), |path| program.pin(path))?;
                object::pin_at(to.link(), |path| fd_link.pin(path).map(drop))
            },
        )?;

        // Only a real parent carries tags from a wire; netvlan's own links
        // (an internal network's placeholder) never see a tagged frame.
        let netvlan_owned = link
            .alias
            .as_deref()
            .is_some_and(|alias| alias.starts_with(crate::sys::netlink::OWNER_ALIAS_PREFIX));
        if !netvlan_owned && crate::sys::ethtool::rx_vlan_offload(&link.name).unwrap_or(false) {
            tracing::warn!(
                "{}: VLAN offload is on, so tagged frames reach XDP untagged and count under VLAN 0; \
                 `ethtool -K {} rxvlan off` makes per-VLAN counters exact",
                link.name,
                link.name
            );
        }
        let attached = self.netlink.link_by_index(link.ifindex).await?;
        let xdp = attached.xdp.ok_or_else(|| DatapathError::NotAttached {
            ifname: link.name.clone(),
        })?;
        Ok(AttachOutcome::Attached {
            attachment: Attachment {
                ifname: link.name,
                ifindex: link.ifindex,
                mode: xdp.mode,
                prog_id: xdp.prog_id,
                pin_dir: pins.dir().into(),
            },
            native_refused,
        })
    }

    /// Returns our live attachment on `link`, clears stale pins, and refuses
    /// to touch a link that carries someone else's program.
    fn check_existing(
        &self,
        link: &LinkInfo,
        pins: &InterfacePins,
    ) -> Result<Option<Attachment>, DatapathError> {
        let ours = pinned_program_id(pins);
        match (link.xdp, ours) {
            (Some(xdp), Some(id)) if xdp.prog_id == id => Ok(Some(Attachment {
                ifname: link.name.clone(),
                ifindex: link.ifindex,
                mode: xdp.mode,
                prog_id: xdp.prog_id,
                pin_dir: pins.dir().into(),
            })),
            (Some(xdp), _) => Err(DatapathError::ForeignProgram {
                ifname: link.name.clone(),
                prog_id: xdp.prog_id,
                mode: xdp.mode,
            }),
            (None, _) => {
                if pins.exists() {
                    tracing::info!(
                        "{}: removing stale pins {}",
                        link.name,
                        pins.dir().display()
                    );
                    pins.remove().map_err(|source| DatapathError::PinDir {
                        path: pins.dir().into(),
                        source,
                    })?;
                }
                Ok(None)
            }
        }
    }

    /// Detaches the program from `ifname` and removes its pins.
    pub async fn detach(&self, ifname: &str) -> Result<Attachment, DatapathError> {
        let link = self.netlink.link_by_name(ifname).await?;
        let pins = self.pins.interface(link.ifindex);
        if !pins.exists() {
            return Err(DatapathError::NotAttached { ifname: link.name });
        }
        let attachment = self.check_existing(&link, &pins)?;
        // Removing the link pin drops the last reference to the bpf_link,
        // which detaches the program; the maps go with their pins.
        pins.remove().map_err(|source| DatapathError::PinDir {
            path: pins.dir().into(),
            source,
        })?;
        self.pins.remove_if_empty();
        let attachment = attachment.ok_or(DatapathError::NotAttached { ifname: link.name })?;
        self.wait_until_detached(&attachment).await?;
        Ok(attachment)
    }

    /// The kernel frees a bpf_link whose last pin is gone from a workqueue
    /// (`bpf_link_put` defers the release), so the program may still be on
    /// the link a moment after the unpin; detach returns once it is off.
    async fn wait_until_detached(&self, attachment: &Attachment) -> Result<(), DatapathError> {
        const BOUND: std::time::Duration = std::time::Duration::from_secs(10);
        let start = std::time::Instant::now();
        loop {
            let link = self.netlink.link_by_index(attachment.ifindex).await?;
            if link.xdp.map(|xdp| xdp.prog_id) != Some(attachment.prog_id) {
                return Ok(());
            }
            if start.elapsed() > BOUND {
                return Err(DatapathError::DetachPending {
                    ifname: attachment.ifname.clone(),
                    prog_id: attachment.prog_id,
                    waited: BOUND,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Every pinned attachment of this namespace, checked against the kernel.
    pub async fn status(&self) -> Result<Vec<AttachmentStatus>, DatapathError> {
        let list = self.pins.list().map_err(|source| DatapathError::PinDir {
            path: self.pins.dir().into(),
            source,
        })?;
        let mut out = Vec::with_capacity(list.len());
        for pins in list {
            out.push(self.status_of(&pins).await?);
        }
        Ok(out)
    }

    async fn status_of(&self, pins: &InterfacePins) -> Result<AttachmentStatus, DatapathError> {
        let stale = |ifname: Option<String>, reason: String| AttachmentStatus::Stale {
            ifindex: pins.ifindex,
            ifname,
            reason,
            pin_dir: pins.dir().into(),
        };
        let link = match self.netlink.link_by_index(pins.ifindex).await {
            Ok(link) => link,
            Err(NetlinkError::NoSuchIfindex { .. }) => {
                return Ok(stale(None, "the interface no longer exists".into()));
            }
            Err(e) => return Err(e.into()),
        };
        let ours = pinned_program_id(pins);
        Ok(match (link.xdp, ours) {
            (Some(xdp), Some(id)) if xdp.prog_id == id => AttachmentStatus::Attached(Attachment {
                ifname: link.name,
                ifindex: link.ifindex,
                mode: xdp.mode,
                prog_id: xdp.prog_id,
                pin_dir: pins.dir().into(),
            }),
            (Some(xdp), _) => stale(
                Some(link.name),
                format!(
                    "another XDP program (id {}) replaced netvlan's",
                    xdp.prog_id
                ),
            ),
            (None, _) => stale(Some(link.name), "no XDP program on the interface".into()),
        })
    }

    /// Removes what dead netvlan processes left half-pinned.
    pub fn remove_dead_staging(&self) -> Result<Vec<PathBuf>, DatapathError> {
        self.pins
            .remove_dead_staging()
            .map_err(|source| DatapathError::PinDir {
                path: self.pins.dir().into(),
                source,
            })
    }

    /// Removes the pins of every stale attachment; returns what was removed.
    /// Keeps going past a directory it cannot remove and then reports every
    /// such failure ([`DatapathError::Teardown`]).
    pub async fn prune(&self) -> Result<Vec<AttachmentStatus>, DatapathError> {
        self.remove_dead_staging()?;
        let mut removed = Vec::new();
        let mut failures = Vec::new();
        for status in self.status().await? {
            if let AttachmentStatus::Stale { pin_dir, .. } = &status {
                match std::fs::remove_dir_all(pin_dir) {
                    Ok(()) => removed.push(status),
                    Err(source) => failures.push(DatapathError::PinDir {
                        path: pin_dir.clone(),
                        source,
                    }),
                }
            }
        }
        self.pins.remove_if_empty();
        // Endpoint programs' pins live under their sandboxes' namespaces.
        for (pin_dir, ifindex, reason) in
            endpoint_hooks::prune_stale(&self.bpf_dir, &mut failures).await?
        {
            removed.push(AttachmentStatus::Stale {
                ifindex,
                ifname: None,
                reason,
                pin_dir,
            });
        }
        if !failures.is_empty() {
            return Err(DatapathError::Teardown { failures });
        }
        Ok(removed)
    }

    /// Writes a wire's policy into the maps of the attachment on `ifname`.
    pub async fn apply_policy(
        &self,
        ifname: &str,
        policy: &policy_maps::WirePolicy,
    ) -> Result<(), DatapathError> {
        let (_, pins) = self
            .attachments(Some(ifname))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| DatapathError::NotAttached {
                ifname: ifname.into(),
            })?;
        policy_maps::apply(&pins, policy)
    }

    /// Live attachments only, optionally just the one on `ifname`.
    pub async fn attachments(
        &self,
        ifname: Option<&str>,
    ) -> Result<Vec<(Attachment, InterfacePins)>, DatapathError> {
        let wanted = match ifname {
            Some(name) => Some(self.netlink.link_by_name(name).await?.ifindex),
            None => None,
        };
        let mut out = Vec::new();
        for status in self.status().await? {
            if let AttachmentStatus::Attached(a) = status {
                if wanted.is_none_or(|w| w == a.ifindex) {
                    let pins = self.pins.interface(a.ifindex);
                    out.push((a, pins));
                }
            }
        }
        if let (Some(name), true) = (ifname, out.is_empty()) {
            return Err(DatapathError::NotAttached {
                ifname: name.into(),
            });
        }
        Ok(out)
    }
}

/// netvlan's XDP program in a loaded object.
fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DatapathError> {
    ebpf.program_mut(maps::XDP_PROGRAM)
        .and_then(|p| p.try_into().ok())
        .ok_or(DatapathError::MissingObject {
            what: "XDP program",
            name: maps::XDP_PROGRAM,
        })
}

/// The id of the program our pinned link runs, if there is such a link.
///
/// The link, not the program pin, is the identity: `upgrade` swaps the
/// link's program first and re-pins the program after, so a crash in
/// between must not make netvlan take its own program for a foreign one.
fn pinned_program_id(pins: &InterfacePins) -> Option<u32> {
    let link = object::open_link(&pins.link()).ok()?;
    object::link_program(&link, &pins.link()).ok()
}

/// A teardown's failures, each with its causes, for the one-line message.
fn failure_list(failures: &[DatapathError]) -> String {
    let each: Vec<String> = failures.iter().map(|e| error_chain(e)).collect();
    format!(
        "{} teardown steps failed: {}",
        failures.len(),
        each.join("; ")
    )
}

/// `error: cause: cause` on one line, for warnings.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The maps an object declares (not its `.rodata`/`.bss` sections).
    fn declared_maps(object: &[u8]) -> BTreeSet<String> {
        let object = aya_obj::Object::parse(object).expect("the embedded object parses");
        object
            .maps
            .keys()
            .filter(|name| !name.starts_with('.'))
            .cloned()
            .collect()
    }

    fn listed(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// The programs an object declares, by name.
    fn declared_programs(object: &[u8]) -> BTreeSet<String> {
        let object = aya_obj::Object::parse(object).expect("the embedded object parses");
        object.programs.keys().cloned().collect()
    }

    #[test]
    fn the_objects_have_the_programs_the_loader_looks_up() {
        use netvlan_common::{antispoof, maps};
        assert_eq!(
            declared_programs(super::object::WIRE.bytes),
            listed(&[
                maps::XDP_PROGRAM,
                maps::TC_PROGRAM,
                maps::BENCH_FLOOR_PROGRAM
            ])
        );
        assert_eq!(
            declared_programs(super::object::ENDPOINT.bytes),
            listed(&[antispoof::EGRESS_PROGRAM, antispoof::INGRESS_PROGRAM])
        );
    }

    #[test]
    fn every_map_of_the_wire_object_is_listed_and_pinned() {
        let wire = &super::object::WIRE;
        assert_eq!(declared_maps(wire.bytes), listed(wire.maps));
        assert_eq!(wire.maps, netvlan_common::maps::WIRE_MAPS);
    }

    #[test]
    fn every_map_of_the_endpoint_object_is_listed_and_pinned() {
        let endpoint = &super::object::ENDPOINT;
        assert_eq!(declared_maps(endpoint.bytes), listed(endpoint.maps));
        assert_eq!(endpoint.maps, netvlan_common::antispoof::ENDPOINT_MAPS);
    }
}
