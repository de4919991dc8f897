//! Where the datapath's objects live in bpffs, and making sure bpffs is there.
//!
//! ```text
//! $NETVLAN_BPF_DIR/                 default /sys/fs/bpf/netvlan
//!   net-<netns inode>/              one per network namespace
//!     if-<ifindex>/                 one per attached interface (wire XDP)
//!       prog  link  COUNTERS  VLAN_COUNTERS  DST_STATS  ...
//!     egress-<ifindex>/             one per endpoint link (TC, in its sandbox)
//!       prog  link  prog_in  link_in  EGRESS_CONFIG  EGRESS_STATS
//!     hairpin-<ifindex>/            one per parent with host_access=ebpf
//!       prog  link                  (TC egress; maps are the wire's)
//! ```
//!
//! `link`/`link_in` exist for TCX only; a clsact filter is held by the
//! kernel without a pin.
//!
//! bpffs refuses names containing a dot (EPERM), hence the plain names.
//!
//! A new attachment is pinned under a temporary name and renamed into place
//! once complete, so a crash never leaves a half-made `if-N` directory.

use std::{
    io,
    path::{Path, PathBuf},
};

use crate::sys::netns::NetnsId;

/// Where distributions mount bpffs.
pub const SYSTEM_BPFFS: &str = "/sys/fs/bpf";
/// Default `NETVLAN_BPF_DIR`.
pub const DEFAULT_BPF_DIR: &str = "/sys/fs/bpf/netvlan";

/// Errors preparing the bpffs directory.
#[derive(Debug, thiserror::Error)]
pub enum BpfFsError {
    #[error("cannot mount bpffs at {path}")]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{path} is not on a bpf filesystem; mount one there (mount -t bpf bpf DIR) or set NETVLAN_BPF_DIR to a directory under {SYSTEM_BPFFS}")]
    NotBpfFs { path: PathBuf },
    #[error("{path} is not the system's bpffs: this command runs in a mount namespace of its own (as under `ip netns exec`), where pins vanish when it exits; run it as `nsenter --net=/var/run/netns/NAME netvlan ...` instead")]
    PrivateMounts { path: PathBuf },
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Refuses a bpffs that would vanish with this process. `ip netns exec`
/// runs its command in a mount namespace of its own with a fresh `/sys`:
/// a bpffs mounted there (or found there, not the system's) takes every pin
/// with it when the command exits, while links and XDP programs stay.
/// Outside the system's mount namespace the pins persist only on the bpffs
/// the system's first process sees at the same path.
pub fn check_pins_persist(bpf_dir: &Path) -> Result<(), BpfFsError> {
    use std::os::unix::fs::MetadataExt;
    let ours = std::fs::metadata("/proc/self/ns/mnt");
    let system = crate::sys::netns::initial_process_ns("mnt");
    let (Ok(ours), Ok(system)) = (ours, system) else {
        // Nothing to compare with: behave as before.
        return Ok(());
    };
    if (ours.dev(), ours.ino()) == (system.dev(), system.ino()) {
        return Ok(());
    }
    let refused = || BpfFsError::PrivateMounts {
        path: bpf_dir.into(),
    };
    // The deepest part of the path that exists is where the pins would go.
    let existing = bpf_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if !is_bpffs(existing) {
        // netvlan would mount bpffs here itself, privately.
        return Err(refused());
    }
    let system_root = crate::sys::netns::initial_process_path("root").map_err(|_| refused())?;
    let relative = existing.strip_prefix("/").unwrap_or(existing);
    let theirs = std::fs::metadata(system_root.join(relative));
    let mine = std::fs::metadata(existing);
    match (mine, theirs) {
        (Ok(mine), Ok(theirs)) if mine.dev() == theirs.dev() => Ok(()),
        _ => Err(refused()),
    }
}

/// Makes sure `bpf_dir` exists on a bpffs, mounting bpffs at
/// `/sys/fs/bpf` when the directory lives there and nothing is mounted yet
/// (minimal systems and VMs boot without it).
pub fn ensure_bpffs(bpf_dir: &Path) -> Result<(), BpfFsError> {
    check_pins_persist(bpf_dir)?;
    let system = Path::new(SYSTEM_BPFFS);
    if bpf_dir.starts_with(system) && !is_bpffs(system) {
        tracing::info!("mounting bpffs at {SYSTEM_BPFFS}");
        nix::mount::mount(
            Some("bpf"),
            system,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|source| BpfFsError::Mount {
            path: system.into(),
            source,
        })?;
    }
    std::fs::create_dir_all(bpf_dir).map_err(|source| BpfFsError::Create {
        path: bpf_dir.into(),
        source,
    })?;
    if !is_bpffs(bpf_dir) {
        return Err(BpfFsError::NotBpfFs {
            path: bpf_dir.into(),
        });
    }
    Ok(())
}

/// The pin directories of one network namespace.
#[derive(Clone, Debug)]
pub struct NamespacePins {
    dir: PathBuf,
}

impl NamespacePins {
    pub fn new(bpf_dir: &Path, netns: NetnsId) -> Self {
        NamespacePins {
            dir: bpf_dir.join(netns.label()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn interface(&self, ifindex: u32) -> InterfacePins {
        InterfacePins {
            dir: self.dir.join(format!("if-{ifindex}")),
            ifindex,
        }
    }

    /// The pins of an endpoint's egress (anti-spoofing) program.
    pub fn egress(&self, ifindex: u32) -> InterfacePins {
        InterfacePins {
            dir: self.dir.join(format!("egress-{ifindex}")),
            ifindex,
        }
    }

    /// The pins of a link's host-access hairpin (TC egress).
    pub fn hairpin(&self, ifindex: u32) -> InterfacePins {
        InterfacePins {
            dir: self.dir.join(format!("hairpin-{ifindex}")),
            ifindex,
        }
    }

    /// Every link with hairpin pins in this namespace, by ifindex.
    pub fn hairpins(&self) -> io::Result<Vec<InterfacePins>> {
        Ok(self
            .ifindexes("hairpin-")?
            .into_iter()
            .map(|ifindex| self.hairpin(ifindex))
            .collect())
    }

    /// A fresh, unique directory to pin a new hairpin into before it is
    /// renamed into place.
    pub fn hairpin_staging(&self, ifindex: u32) -> InterfacePins {
        self.staging_as("staging-hairpin", ifindex)
    }

    /// A fresh, unique directory to pin a new attachment into before it is
    /// renamed into place.
    pub fn staging(&self, ifindex: u32) -> InterfacePins {
        self.staging_as("staging-if", ifindex)
    }

    /// `{kind}-{ifindex}-{pid}`: unique to this process, so a dead one's is
    /// told apart ([`Self::remove_dead_staging`]).
    fn staging_as(&self, kind: &str, ifindex: u32) -> InterfacePins {
        InterfacePins {
            dir: self
                .dir
                .join(format!("{kind}-{ifindex}-{}", std::process::id())),
            ifindex,
        }
    }

    /// Every attached interface recorded for this namespace, by ifindex.
    pub fn list(&self) -> io::Result<Vec<InterfacePins>> {
        Ok(self
            .ifindexes("if-")?
            .into_iter()
            .map(|ifindex| self.interface(ifindex))
            .collect())
    }

    /// The ifindexes of this namespace's directories named `{prefix}N`,
    /// in order.
    fn ifindexes(&self, prefix: &str) -> io::Result<Vec<u32>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            if let Some(ifindex) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|n| n.parse().ok())
            {
                out.push(ifindex);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Removes staging directories of processes that died before renaming
    /// them into place (their pins would otherwise keep programs attached).
    pub fn remove_dead_staging(&self) -> io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let Some(pid) = name
                .strip_prefix("staging-")
                .and_then(|rest| rest.rsplit('-').next())
            else {
                continue;
            };
            let alive = Path::new("/proc").join(pid).exists();
            if !alive && pid.parse::<u32>().is_ok() {
                std::fs::remove_dir_all(&path)?;
                removed.push(path);
            }
        }
        Ok(removed)
    }

    /// Removes the namespace directory if nothing is pinned in it any more.
    pub fn remove_if_empty(&self) {
        // ENOTEMPTY is the expected answer while attachments remain.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The pins of one attached interface.
#[derive(Clone, Debug)]
pub struct InterfacePins {
    dir: PathBuf,
    pub ifindex: u32,
}

impl InterfacePins {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn exists(&self) -> bool {
        self.dir.exists()
    }

    pub fn program(&self) -> PathBuf {
        self.dir.join("prog")
    }

    pub fn link(&self) -> PathBuf {
        self.dir.join("link")
    }

    /// An endpoint's ingress program (its egress one is [`Self::program`]).
    pub fn ingress_program(&self) -> PathBuf {
        self.dir.join("prog_in")
    }

    /// An endpoint's ingress TCX link (its egress one is [`Self::link`]).
    pub fn ingress_link(&self) -> PathBuf {
        self.dir.join("link_in")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Unpins everything (removing a pin drops the kernel's reference; the
    /// object goes away with its last user).
    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}
