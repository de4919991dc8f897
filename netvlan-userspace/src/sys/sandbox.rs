//! Sandboxes: the network namespaces containers live in.
//!
//! A sandbox is named the way users already name namespaces: a name from
//! `ip netns` (`/var/run/netns/NAME`), a path to a namespace file
//! (`/proc/PID/ns/net`, a bind mount), or `pid:PID`.

use std::path::{Path, PathBuf};

use crate::sys::netns::NetnsId;

/// `NSFS_MAGIC` from `linux/magic.h`: namespace files live on nsfs.
const NSFS_MAGIC: i64 = 0x6e73_6673;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("unknown sandbox '{given}': {path} does not exist (give a name from `ip netns`, a path to a namespace file, or pid:PID)")]
    NotFound { given: String, path: PathBuf },
    #[error("sandbox '{given}': {path} is not a network namespace file")]
    NotANamespace { given: String, path: PathBuf },
    #[error("sandbox '{given}': {path} is a {kind} namespace, not a network namespace (give a network namespace such as /proc/PID/ns/net)")]
    WrongNamespaceType {
        given: String,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("sandbox '{given}': bad pid")]
    BadPid { given: String },
}

/// A resolved sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    /// How the user named it; the key of its endpoints in the state.
    pub key: String,
    pub path: PathBuf,
    pub id: NetnsId,
}

impl Sandbox {
    pub fn resolve(given: &str) -> Result<Self, SandboxError> {
        let path = if let Some(pid) = given.strip_prefix("pid:") {
            let pid: u32 = pid.parse().map_err(|_| SandboxError::BadPid {
                given: given.into(),
            })?;
            PathBuf::from(format!("/proc/{pid}/ns/net"))
        } else if given.contains('/') {
            PathBuf::from(given)
        } else {
            Path::new("/var/run/netns").join(given)
        };
        let meta = std::fs::metadata(&path).map_err(|_| SandboxError::NotFound {
            given: given.into(),
            path: path.clone(),
        })?;
        let is_nsfs = nix::sys::statfs::statfs(&path)
            .map(|s| s.filesystem_type() == nix::sys::statfs::FsType(NSFS_MAGIC as _))
            .unwrap_or(false);
        // A bind-mounted namespace file shows nsfs; a plain file does not.
        if !is_nsfs {
            return Err(SandboxError::NotANamespace {
                given: given.into(),
                path,
            });
        }
        if let Some(kind) = other_namespace_type(&path) {
            return Err(SandboxError::WrongNamespaceType {
                given: given.into(),
                path,
                kind,
            });
        }
        use std::os::unix::fs::MetadataExt;
        Ok(Sandbox {
            key: given.to_string(),
            path,
            id: NetnsId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
        })
    }
}

/// The kind of namespace behind an nsfs file when it is not a network
/// namespace (`/proc/self/ns/uts` passes the nsfs check too).
fn other_namespace_type(path: &Path) -> Option<&'static str> {
    use std::os::fd::AsRawFd;
    /// `NS_GET_NSTYPE` from linux/nsfs.h: `_IO(0xb7, 0x3)`.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: an ioctl without arguments on a file we own.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    Some(match kind {
        libc::CLONE_NEWNET => return None,
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWTIME => "time",
        // An older kernel without the ioctl: setns will tell later.
        _ => return None,
    })
}
