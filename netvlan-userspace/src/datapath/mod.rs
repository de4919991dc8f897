//! The datapath loader: attaches netvlan's wire program to a link, pins it
//! so it outlives the command, and finds it again later.
//!
//! The wire program runs at one of two hooks ([`Hook`]): XDP, or TC ingress
//! where native XDP would cost the link its receive offloads (veth,
//! virtio-net turn GRO/TSO off under it). At TC it is a TCX link (6.6+,
//! pinned like the XDP link) or, on older kernels, a cls_bpf filter in the
//! clsact ingress hook at netvlan's own priority and handle, which the
//! kernel holds without a pin.
//!
//! Each attachment is a separate instance of the program with its own maps,
//! pinned under the namespace's directory (see [`pins`]). The kernel's view
//! (the XDP program netlink reports on the link, the TCX programs the
//! kernel lists, the clsact filters) is the truth: pins whose program is no
//! longer on their link are reported as stale.

pub mod counters;
pub mod debug;
pub mod endpoint_hooks;
pub mod host_access;
pub mod object;
pub mod pins;
pub mod policy_maps;
pub mod trace;
pub mod upgrade;

use std::path::{Path, PathBuf};

use aya::{
    maps::MapError,
    programs::{
        links::{FdLink, LinkError},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    util::KernelVersion,
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
    #[error("{ifname} already has another program at TC ingress (id {prog_id}, {mode}) that netvlan did not attach; remove it first")]
    ForeignTcProgram {
        ifname: String,
        prog_id: u32,
        mode: WireMode,
    },
    #[error("{ifname} already runs netvlan's wire program at the {current} hook ({mode}); hook={requested} needs it detached first (`netvlan datapath detach {ifname}`)")]
    HookMismatch {
        ifname: String,
        current: Hook,
        mode: WireMode,
        requested: Hook,
    },
    #[error("{ifname}: --mode {mode} is an XDP attach mode; the tc hook has none (drop --mode, or use --hook xdp)")]
    ModeAtTc { ifname: String, mode: AttachMode },
    #[error("cannot attach at TC ingress of {ifname} ({mode})")]
    AttachTc {
        ifname: String,
        mode: WireMode,
        #[source]
        source: ProgramError,
    },
    #[error("cannot remove netvlan's TC filter from {ifname}: it is still in the clsact ingress hook (program {prog_id})")]
    FilterRemains { ifname: String, prog_id: u32 },
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
    #[error("cannot upgrade in place: the pinned map {path} has {pinned}, this build wants {built} (another map layout: what it holds cannot carry over). Nothing was changed. To move to this build, attach it afresh: for a parent wire `netvlan datapath detach PARENT --force`, then `netvlan restore` (a network's wire: attaches this build and writes its policy again) or `netvlan datapath attach PARENT`; counters start from zero")]
    IncompatibleMap {
        path: PathBuf,
        pinned: String,
        built: String,
    },
    #[error("cannot upgrade {ifname} in place: it was attached with another map layout; its pins in {pin_dir} hold {gone}, which this build no longer has (and lack {missing}), so what they count would be lost. Nothing was changed. To move to this build: `netvlan datapath detach {ifname} --force`, then `netvlan restore` (a network's wire: attaches this build and writes the networks' policy again) or `netvlan datapath attach {ifname}`; counters start from zero")]
    OtherMapLayout {
        ifname: String,
        pin_dir: PathBuf,
        gone: String,
        missing: String,
    },
    #[error("cannot swap the wire program on {ifname} (BPF_LINK_UPDATE, or the clsact filter's replace)")]
    Replace {
        ifname: String,
        #[source]
        source: ProgramError,
    },
    #[error("injected fault at {0}")]
    Injected(String),
    #[error("{error}; and the maps the failed upgrade pinned could not all be removed again ({left}): remove them by hand before the next upgrade")]
    UpgradeLeftMaps {
        #[source]
        error: Box<DatapathError>,
        left: String,
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
    #[error("cannot wait for events on the trace ring {path}")]
    TraceRing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Host access (`host_access=ebpf`) cannot work on this link.
    #[error("host_access=ebpf cannot work on {link}: {what}")]
    HairpinUnsupported { link: String, what: String },
    #[error("cannot attach the host-access hairpin at TC egress of {link} ({mode})")]
    AttachHairpin {
        link: String,
        mode: WireMode,
        #[source]
        source: ProgramError,
    },
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

/// Where the wire program runs on a parent (`-o hook=`, `--hook`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// TC where the driver's native XDP costs the receive offloads (veth,
    /// virtio_net), XDP elsewhere.
    #[default]
    Auto,
    /// XDP (native, or generic where the driver has none).
    Xdp,
    /// TC ingress: TCX on 6.6+, a clsact filter before.
    Tc,
}

impl Keyword for Hook {
    const WHAT: &'static str = "hook";
    const ALL: &'static [Self] = &[Self::Auto, Self::Xdp, Self::Tc];
    fn name(self) -> &'static str {
        match self {
            Hook::Auto => "auto",
            Hook::Xdp => "xdp",
            Hook::Tc => "tc",
        }
    }
    fn help(self) -> Option<&'static str> {
        Some(match self {
            Hook::Auto => "TC on veth and virtio_net (where native XDP turns receive offloads off), XDP elsewhere",
            Hook::Xdp => "XDP: native, or generic where the driver has none",
            Hook::Tc => "TC ingress: TCX on 6.6+, a clsact filter before",
        })
    }
}
keyword_text!(Hook);

/// Drivers whose native XDP turns the receive offloads (GRO, the peer's
/// TSO) off, so TCP through them loses most of its throughput; `auto`
/// runs the wire at TC ingress there (by the ethtool driver name).
pub const XDP_COSTS_OFFLOADS: &[&str] = &["veth", "virtio_net"];

impl Hook {
    /// The hook `auto` picks for a link of driver `driver`.
    pub fn for_driver(driver: &str) -> Hook {
        if XDP_COSTS_OFFLOADS.contains(&driver) {
            Hook::Tc
        } else {
            Hook::Xdp
        }
    }

    /// The hook this request resolves to on the link named `ifname`; a
    /// link whose driver cannot be read gets XDP, as before hooks existed.
    fn resolve(self, ifname: &str) -> Hook {
        match self {
            Hook::Auto => crate::sys::ethtool::driver_name(ifname)
                .map(|driver| Hook::for_driver(&driver))
                .unwrap_or(Hook::Xdp),
            explicit => explicit,
        }
    }
}

/// How the wire program is attached, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireMode {
    /// XDP in the driver.
    Native,
    /// XDP in the generic skb path.
    Generic,
    /// XDP offloaded to the NIC.
    Hardware,
    /// A TCX link at TC ingress (6.6+).
    Tcx,
    /// A cls_bpf filter in the clsact qdisc's ingress hook.
    Clsact,
}

impl WireMode {
    pub fn hook(self) -> Hook {
        match self {
            WireMode::Native | WireMode::Generic | WireMode::Hardware => Hook::Xdp,
            WireMode::Tcx | WireMode::Clsact => Hook::Tc,
        }
    }
}

impl From<XdpAttachMode> for WireMode {
    fn from(mode: XdpAttachMode) -> Self {
        match mode {
            XdpAttachMode::Native => WireMode::Native,
            XdpAttachMode::Generic => WireMode::Generic,
            XdpAttachMode::Hardware => WireMode::Hardware,
        }
    }
}

impl std::fmt::Display for WireMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WireMode::Native => "native",
            WireMode::Generic => "generic",
            WireMode::Hardware => "hardware",
            WireMode::Tcx => "tcx",
            WireMode::Clsact => "clsact",
        })
    }
}

/// The clsact filter netvlan's wire program is, on kernels without TCX:
/// a fixed priority and handle in the ingress hook, so it is found again
/// (and replaced in place by `upgrade`) without a pin.
pub const WIRE_FILTER_PRIORITY: u16 = 1;
pub const WIRE_FILTER_HANDLE: u32 = 0x4e56;

/// Attaches `program` (loaded) at `direction` of `ifname`: a TCX link on
/// 6.6+, else a clsact filter at netvlan's `place` (priority, handle),
/// adding the clsact qdisc when the link has none. Returns the mode and
/// the link, which detaches (closes the TCX link, deletes the filter)
/// when dropped; on failure, the mode that was tried.
pub(crate) fn attach_classifier(
    program: &mut SchedClassifier,
    ifname: &str,
    direction: TcAttachType,
    place: (u16, u32),
) -> Result<(WireMode, SchedClassifierLink), (WireMode, ProgramError)> {
    let mode = if tcx_available() {
        WireMode::Tcx
    } else {
        WireMode::Clsact
    };
    let options = match mode {
        WireMode::Tcx => TcAttachOptions::TcxOrder(LinkOrder::default()),
        _ => {
            // EEXIST: the qdisc is already there, which is what we want.
            if let Err(e) = tc::qdisc_add_clsact(ifname) {
                let exists = matches!(&e, tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST));
                if !exists {
                    return Err((mode, e.into()));
                }
            }
            TcAttachOptions::Netlink(NlOptions {
                priority: place.0,
                handle: TcHandle::from(place.1),
                classid: None,
            })
        }
    };
    let id = program
        .attach_with_options(ifname, direction, options)
        .map_err(|e| (mode, e))?;
    let held = program.take_link(id).map_err(|e| (mode, e))?;
    Ok((mode, held))
}

/// Whether the kernel has TCX (6.6+); older ones get a clsact filter.
pub(crate) fn tcx_available() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// A live attachment of netvlan's program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub ifname: String,
    pub ifindex: u32,
    /// The hook it runs at (`xdp` or `tc`).
    pub hook: Hook,
    /// How: native/generic XDP, or a TCX link / clsact filter at TC.
    pub mode: WireMode,
    pub prog_id: u32,
    pub pin_dir: PathBuf,
    /// The host-access hairpin at the same link's TC egress, when one
    /// runs there (filled in by [`Datapath::status`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hairpin: Option<host_access::HairpinStatus>,
    /// Whether the wire writes debug records ([`debug`]), filled in by
    /// [`Datapath::status`] and [`Datapath::set_debug`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
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

    /// Attaches the program to `ifname` at the hook `auto` picks for it, or
    /// reports that it already is.
    pub async fn attach(
        &self,
        ifname: &str,
        mode: AttachMode,
    ) -> Result<AttachOutcome, DatapathError> {
        self.attach_at(ifname, mode, Hook::Auto).await
    }

    /// Attaches the program to `ifname` at `hook` (`mode` is XDP's), or
    /// reports that it already is. An attachment at another hook than an
    /// explicit `hook` is refused, naming both.
    pub async fn attach_at(
        &self,
        ifname: &str,
        mode: AttachMode,
        hook: Hook,
    ) -> Result<AttachOutcome, DatapathError> {
        // An XDP mode asked for is a request for XDP.
        let hook = match (hook, mode) {
            (Hook::Auto, AttachMode::Native | AttachMode::Generic) => Hook::Xdp,
            (Hook::Tc, AttachMode::Native | AttachMode::Generic) => {
                return Err(DatapathError::ModeAtTc {
                    ifname: ifname.into(),
                    mode,
                })
            }
            (hook, _) => hook,
        };
        let link = self.netlink.link_by_name(ifname).await?;
        // What a killed attach left must not block this one.
        self.remove_dead_staging().await?;
        let pins = self.pins.interface(link.ifindex);
        let wanted = hook.resolve(&link.name);
        if let Some(existing) = self.check_existing(&link, &pins, wanted).await? {
            if hook != Hook::Auto && existing.hook != hook {
                return Err(DatapathError::HookMismatch {
                    ifname: link.name,
                    current: existing.hook,
                    mode: existing.mode,
                    requested: hook,
                });
            }
            if existing.hook == Hook::Xdp {
                if let Some(current) = xdp_mode(existing.mode) {
                    if !mode.accepts(current) {
                        return Err(DatapathError::ModeMismatch {
                            ifname: link.name,
                            current,
                            requested: mode,
                        });
                    }
                }
            }
            return Ok(AttachOutcome::AlreadyAttached(existing));
        }

        pins::ensure_bpffs(&self.bpf_dir)?;
        let native_refused = match wanted {
            Hook::Tc => {
                self.attach_tc(&link, &pins)?;
                None
            }
            _ => self.attach_xdp(&link, &pins, mode)?,
        };

        // Only a real parent carries tags from a wire; netvlan's own links
        // (an internal network's placeholder) never see a tagged frame.
        let netvlan_owned = link
            .alias
            .as_deref()
            .is_some_and(|alias| alias.starts_with(crate::sys::netlink::OWNER_ALIAS_PREFIX));
        if wanted == Hook::Xdp
            && !netvlan_owned
            && crate::sys::ethtool::rx_vlan_offload(&link.name).unwrap_or(false)
        {
            tracing::warn!(
                "{}: VLAN offload is on, so tagged frames reach XDP untagged and count under VLAN 0; \
                 `ethtool -K {} rxvlan off` makes per-VLAN counters exact",
                link.name,
                link.name
            );
        }
        let attached = self.netlink.link_by_index(link.ifindex).await?;
        let attachment =
            self.ours(&attached, &pins)
                .await?
                .ok_or_else(|| DatapathError::NotAttached {
                    ifname: link.name.clone(),
                })?;
        Ok(AttachOutcome::Attached {
            attachment,
            native_refused,
        })
    }

    /// Loads and attaches the XDP entry and pins it; returns why native
    /// mode was refused when `auto` fell back to generic.
    fn attach_xdp(
        &self,
        link: &LinkInfo,
        pins: &InterfacePins,
        mode: AttachMode,
    ) -> Result<Option<String>, DatapathError> {
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
            pins,
            |ebpf, to| {
                let program = xdp_program(ebpf)?;
                object::pin_at(to.program(), |path| program.pin(path))?;
                object::pin_at(to.link(), |path| fd_link.pin(path).map(drop))
            },
        )?;
        Ok(native_refused)
    }

    /// Loads and attaches the TC entry at ingress (a TCX link, pinned, or
    /// netvlan's clsact filter) and pins it.
    fn attach_tc(&self, link: &LinkInfo, pins: &InterfacePins) -> Result<(), DatapathError> {
        let mut ebpf = object::WIRE.load()?;
        let program = tc_program(&mut ebpf)?;
        program.load().map_err(DatapathError::Program)?;
        // Held until pinned: dropping it (on failure) closes the TCX link or
        // deletes the filter, so nothing stays attached.
        let (mode, held) = attach_classifier(
            program,
            &link.name,
            TcAttachType::Ingress,
            (WIRE_FILTER_PRIORITY, WIRE_FILTER_HANDLE),
        )
        .map_err(|(mode, source)| DatapathError::AttachTc {
            ifname: link.name.clone(),
            mode,
            source,
        })?;
        let (held, tcx) = match mode {
            WireMode::Tcx => {
                let fd_link = FdLink::try_from(held).map_err(|source| DatapathError::Link {
                    path: pins.link(),
                    source,
                })?;
                (None, Some(fd_link))
            }
            _ => (Some(held), None),
        };
        object::WIRE.pin_new(
            &mut ebpf,
            &self.pins.staging(link.ifindex),
            pins,
            |ebpf, to| {
                upgrade::failpoint("attach-tc-before-pin")?;
                let program = tc_program(ebpf)?;
                object::pin_at(to.program(), |path| program.pin(path))?;
                match tcx {
                    Some(fd_link) => object::pin_at(to.link(), |path| fd_link.pin(path).map(drop)),
                    None => Ok(()),
                }
            },
        )?;
        // The filter stays with the kernel: let go of it without deleting
        // it (converting releases it untouched).
        if let Some(filter) = held {
            let _ = FdLink::try_from(filter);
        }
        Ok(())
    }

    /// netvlan's live attachment on `link` per its pins, at either hook.
    async fn ours(
        &self,
        link: &LinkInfo,
        pins: &InterfacePins,
    ) -> Result<Option<Attachment>, DatapathError> {
        if !pins.exists() {
            return Ok(None);
        }
        let attachment = |mode: WireMode, prog_id: u32| Attachment {
            ifname: link.name.clone(),
            ifindex: link.ifindex,
            hook: mode.hook(),
            mode,
            prog_id,
            pin_dir: pins.dir().into(),
            hairpin: None,
            debug: None,
        };
        let linked = pinned_program_id(pins);
        if let (Some(xdp), Some(id)) = (link.xdp, linked) {
            if xdp.prog_id == id {
                return Ok(Some(attachment(xdp.mode.into(), id)));
            }
        }
        if let Some(id) = linked {
            if tcx_ingress_programs(&link.name).contains(&id) {
                return Ok(Some(attachment(WireMode::Tcx, id)));
            }
            return Ok(None);
        }
        // No link pin: a clsact filter, if the pinned program is TC's.
        if pinned_hook(pins) == Some(Hook::Tc) {
            if let Some(filter) = self.wire_filter(link.ifindex).await? {
                return Ok(Some(attachment(WireMode::Clsact, filter.prog_id)));
            }
        }
        Ok(None)
    }

    /// netvlan's clsact filter in `ifindex`'s ingress hook, by its place.
    async fn wire_filter(
        &self,
        ifindex: u32,
    ) -> Result<Option<crate::sys::netlink::TcBpfFilter>, DatapathError> {
        Ok(self
            .netlink
            .tc_bpf_filters(ifindex, false)
            .await?
            .into_iter()
            .find(|f| f.priority == WIRE_FILTER_PRIORITY && f.handle == WIRE_FILTER_HANDLE))
    }

    /// Returns our live attachment on `link`, clears stale pins, and refuses
    /// a link with someone else's XDP program, or (for `hook` tc) someone
    /// else's program at TC ingress.
    async fn check_existing(
        &self,
        link: &LinkInfo,
        pins: &InterfacePins,
        hook: Hook,
    ) -> Result<Option<Attachment>, DatapathError> {
        if let Some(ours) = self.ours(link, pins).await? {
            return Ok(Some(ours));
        }
        // Someone's XDP program sees every frame before either hook:
        // netvlan would count and enforce only what it lets through.
        if let Some(xdp) = link.xdp {
            return Err(DatapathError::ForeignProgram {
                ifname: link.name.clone(),
                prog_id: xdp.prog_id,
                mode: xdp.mode,
            });
        }
        if hook == Hook::Tc {
            let foreign = match tcx_ingress_programs(&link.name).first() {
                Some(&id) => Some((id, WireMode::Tcx)),
                None => self
                    .netlink
                    .tc_bpf_filters(link.ifindex, false)
                    .await?
                    .first()
                    .map(|f| (f.prog_id, WireMode::Clsact)),
            };
            if let Some((prog_id, mode)) = foreign {
                return Err(DatapathError::ForeignTcProgram {
                    ifname: link.name.clone(),
                    prog_id,
                    mode,
                });
            }
        }
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

    /// Detaches the program from `ifname` and removes its pins (and, at a
    /// clsact hook, netvlan's filter, which the kernel holds without one).
    /// Switches the debug records of the wire on `ifname` on or off
    /// ([`debug`]); returns the attachment with its new switch.
    pub async fn set_debug(&self, ifname: &str, on: bool) -> Result<Attachment, DatapathError> {
        let link = self.netlink.link_by_name(ifname).await?;
        let pins = self.pins.interface(link.ifindex);
        let mut attachment = self
            .ours(&link, &pins)
            .await?
            .ok_or(DatapathError::NotAttached {
                ifname: link.name.clone(),
            })?;
        debug::set(&pins, on)?;
        attachment.debug = Some(on);
        Ok(attachment)
    }

    pub async fn detach(&self, ifname: &str) -> Result<Attachment, DatapathError> {
        let link = self.netlink.link_by_name(ifname).await?;
        let pins = self.pins.interface(link.ifindex);
        if !pins.exists() {
            return Err(DatapathError::NotAttached { ifname: link.name });
        }
        let attachment = self.ours(&link, &pins).await?;
        if let Some(a) = attachment.as_ref().filter(|a| a.mode == WireMode::Clsact) {
            self.remove_wire_filter(a).await?;
        }
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

    /// The clsact filter a command killed between attaching and pinning
    /// left on link `ifindex` (the kernel holds filters without pins): at
    /// netvlan's place and running netvlan's TC program. Only called for a
    /// link with such a command's staging directory: at that place there
    /// can be no other instance's filter, since that attach would have been
    /// refused (or failed) on it.
    async fn remove_orphan_filter(&self, ifindex: u32) -> Result<(), DatapathError> {
        let link = match self.netlink.link_by_index(ifindex).await {
            Ok(link) => link,
            Err(NetlinkError::NoSuchIfindex { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let Some(filter) = self.wire_filter(link.ifindex).await? else {
            return Ok(());
        };
        let name = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == filter.prog_id)
            .and_then(|p| p.name_as_str().map(str::to_string));
        if name.as_deref() != Some(maps::TC_PROGRAM) {
            return Ok(());
        }
        tracing::info!(
            "{}: removing netvlan's TC filter (program {}) that a killed command left without pins",
            link.name,
            filter.prog_id
        );
        self.remove_wire_filter(&Attachment {
            ifname: link.name.clone(),
            ifindex: link.ifindex,
            hook: Hook::Tc,
            mode: WireMode::Clsact,
            prog_id: filter.prog_id,
            pin_dir: self.pins.interface(link.ifindex).dir().into(),
            hairpin: None,
            debug: None,
        })
        .await
    }

    /// Deletes netvlan's clsact filter (the qdisc stays: other filters may
    /// share it).
    async fn remove_wire_filter(&self, attachment: &Attachment) -> Result<(), DatapathError> {
        // Dropping a filter link deletes the filter by priority and handle.
        drop(
            SchedClassifierLink::attached(
                &attachment.ifname,
                TcAttachType::Ingress,
                WIRE_FILTER_PRIORITY,
                TcHandle::from(WIRE_FILTER_HANDLE),
                None,
            )
            .map_err(|e| DatapathError::AttachTc {
                ifname: attachment.ifname.clone(),
                mode: WireMode::Clsact,
                source: ProgramError::from(tc::TcError::IoError(e)),
            })?,
        );
        if self.wire_filter(attachment.ifindex).await?.is_some() {
            return Err(DatapathError::FilterRemains {
                ifname: attachment.ifname.clone(),
                prog_id: attachment.prog_id,
            });
        }
        Ok(())
    }

    /// Whether `attachment`'s program still runs on its link.
    async fn still_running(&self, attachment: &Attachment) -> Result<bool, DatapathError> {
        Ok(match attachment.hook {
            Hook::Tc if attachment.mode == WireMode::Tcx => {
                tcx_ingress_programs(&attachment.ifname).contains(&attachment.prog_id)
            }
            Hook::Tc => self
                .wire_filter(attachment.ifindex)
                .await?
                .is_some_and(|f| f.prog_id == attachment.prog_id),
            _ => {
                let link = self.netlink.link_by_index(attachment.ifindex).await?;
                link.xdp.map(|xdp| xdp.prog_id) == Some(attachment.prog_id)
            }
        })
    }

    /// The kernel frees a bpf_link whose last pin is gone from a workqueue
    /// (`bpf_link_put` defers the release), so the program may still be on
    /// the link a moment after the unpin; detach returns once it is off.
    async fn wait_until_detached(&self, attachment: &Attachment) -> Result<(), DatapathError> {
        const BOUND: std::time::Duration = std::time::Duration::from_secs(10);
        let start = std::time::Instant::now();
        loop {
            if !self.still_running(attachment).await? {
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
            let mut status = self.status_of(&pins).await?;
            if let AttachmentStatus::Attached(a) = &mut status {
                a.hairpin = self.hairpin_status(&a.ifname).await?;
                // Not shown (rather than failing the status) for a wire
                // whose flags cannot be read, e.g. another build's layout.
                a.debug = debug::is_on(&pins).ok();
            }
            out.push(status);
        }
        // A hairpin whose link is gone: the kernel removed its program
        // with the link, only the pins are left (prune removes them).
        let hairpins = self
            .pins
            .hairpins()
            .map_err(|source| DatapathError::PinDir {
                path: self.pins.dir().into(),
                source,
            })?;
        for pins in hairpins {
            match self.netlink.link_by_index(pins.ifindex).await {
                Err(NetlinkError::NoSuchIfindex { .. }) => out.push(AttachmentStatus::Stale {
                    ifindex: pins.ifindex,
                    ifname: None,
                    reason: "the host-access hairpin's interface no longer exists".into(),
                    pin_dir: pins.dir().into(),
                }),
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
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
        if let Some(attachment) = self.ours(&link, pins).await? {
            return Ok(AttachmentStatus::Attached(attachment));
        }
        let reason = match (pinned_hook(pins), link.xdp) {
            (Some(Hook::Tc), _) => {
                "netvlan's TC program is no longer at the interface's ingress".into()
            }
            (_, Some(xdp)) => format!(
                "another XDP program (id {}) replaced netvlan's",
                xdp.prog_id
            ),
            (_, None) => "no XDP program on the interface".into(),
        };
        Ok(stale(Some(link.name), reason))
    }

    /// Removes what dead netvlan processes left half-pinned, and the
    /// clsact filter such a process attached on the link before it died.
    pub async fn remove_dead_staging(&self) -> Result<Vec<PathBuf>, DatapathError> {
        let removed = self
            .pins
            .remove_dead_staging()
            .map_err(|source| DatapathError::PinDir {
                path: self.pins.dir().into(),
                source,
            })?;
        for path in &removed {
            // staging-if-<ifindex>-<pid>
            let ifindex = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("staging-if-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|i| i.parse().ok());
            if let Some(ifindex) = ifindex {
                self.remove_orphan_filter(ifindex).await?;
            }
        }
        Ok(removed)
    }

    /// Removes the pins of every stale attachment; returns what was removed.
    /// Keeps going past a directory it cannot remove and then reports every
    /// such failure ([`DatapathError::Teardown`]).
    pub async fn prune(&self) -> Result<Vec<AttachmentStatus>, DatapathError> {
        self.remove_dead_staging().await?;
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

    /// Writes a wire's policy into the maps of the attachment on `ifname`;
    /// whether they held anything else.
    pub async fn apply_policy(
        &self,
        ifname: &str,
        policy: &policy_maps::WirePolicy,
    ) -> Result<bool, DatapathError> {
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

/// netvlan's TC program in a loaded object.
fn tc_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, DatapathError> {
    endpoint_hooks::classifier(ebpf, maps::TC_PROGRAM)
}

/// The XDP mode of an XDP attachment.
fn xdp_mode(mode: WireMode) -> Option<XdpAttachMode> {
    match mode {
        WireMode::Native => Some(XdpAttachMode::Native),
        WireMode::Generic => Some(XdpAttachMode::Generic),
        WireMode::Hardware => Some(XdpAttachMode::Hardware),
        WireMode::Tcx | WireMode::Clsact => None,
    }
}

/// The ids of the programs on `ifname`'s TCX ingress; none on kernels
/// without TCX (the query answers EINVAL there).
fn tcx_ingress_programs(ifname: &str) -> Vec<u32> {
    SchedClassifier::query_tcx(ifname, TcAttachType::Ingress)
        .map(|(_, programs)| programs.iter().map(|p| p.id()).collect())
        .unwrap_or_default()
}

/// The hook of the program pinned in `pins`, by its type.
fn pinned_hook(pins: &InterfacePins) -> Option<Hook> {
    use aya_obj::generated::bpf_prog_type;
    let info = aya::programs::ProgramInfo::from_pin(pins.program()).ok()?;
    match info.program_type() {
        bpf_prog_type::BPF_PROG_TYPE_XDP => Some(Hook::Xdp),
        bpf_prog_type::BPF_PROG_TYPE_SCHED_CLS => Some(Hook::Tc),
        _ => None,
    }
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
                maps::BENCH_FLOOR_PROGRAM,
                netvlan_common::trace::BENCH_NOTRACE_PROGRAM,
                netvlan_common::hairpin::HAIRPIN_PROGRAM,
            ])
        );
        assert_eq!(
            declared_programs(super::object::ENDPOINT.bytes),
            listed(&[antispoof::EGRESS_PROGRAM, antispoof::INGRESS_PROGRAM])
        );
    }

    /// The loader has no kernel BTF ([`super::object::loader`]): an object
    /// with CO-RE relocations would load with them unapplied.
    #[test]
    fn no_object_needs_the_kernel_btf() {
        for (name, object) in [
            ("wire", &super::object::WIRE),
            ("endpoint", &super::object::ENDPOINT),
        ] {
            let parsed = aya_obj::Object::parse(object.bytes).expect("the embedded object parses");
            assert!(
                !parsed.has_btf_relocations(),
                "the {name} object has CO-RE relocations: give object::loader the kernel's BTF"
            );
        }
    }

    #[test]
    fn every_map_of_the_wire_object_is_listed_and_pinned() {
        let wire = &super::object::WIRE;
        let mut declared = declared_maps(wire.bytes);
        // The debug records' ring: one per loaded program, never pinned.
        assert!(declared.remove(super::debug::LOG_MAP), "{declared:?}");
        assert_eq!(declared, listed(wire.maps));
        assert_eq!(wire.maps, netvlan_common::maps::WIRE_MAPS);
    }

    #[test]
    fn every_map_of_the_endpoint_object_is_listed_and_pinned() {
        let endpoint = &super::object::ENDPOINT;
        assert_eq!(declared_maps(endpoint.bytes), listed(endpoint.maps));
        assert_eq!(endpoint.maps, netvlan_common::antispoof::ENDPOINT_MAPS);
    }
}
