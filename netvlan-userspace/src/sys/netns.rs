//! Network namespace identity.
//!
//! Interfaces are only unique inside a namespace (two namespaces may both
//! have an `eth0` with ifindex 2), so anything netvlan keeps about an
//! interface, such as its pins, is filed under the namespace's identity.

use std::os::unix::fs::MetadataExt;

/// Identity of a network namespace: the device and inode of its nsfs file,
/// the same pair `ip netns identify` and `lsns` compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl NetnsId {
    /// The namespace of the calling thread (not the process: a thread that
    /// entered another namespace with `setns` sees its own).
    pub fn current() -> std::io::Result<Self> {
        let meta = std::fs::metadata("/proc/thread-self/ns/net")?;
        Ok(NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// A file-name-safe label, stable for the namespace's lifetime.
    pub fn label(&self) -> String {
        format!("net-{}", self.ino)
    }
}

/// What a network namespace answers to in the store, so that state made in
/// one namespace is never seen or acted on from another, and still found
/// after a reboot gives the namespace a new inode.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NetnsScope {
    /// The host's initial namespace (pid 1's): the same after every boot.
    Initial,
    /// A named namespace (`/var/run/netns/NAME`): recreated under the same
    /// name after a reboot.
    Named(String),
    /// Any other namespace: only this namespace, in this boot (inodes are
    /// reused after a reboot, hence the boot id).
    Anonymous { id: NetnsId, boot: String },
}

impl NetnsScope {
    /// Every scope the calling thread's namespace answers to, the one new
    /// records are filed under first: `[Initial]` in the host's namespace,
    /// else its names (sorted) followed by its anonymous identity.
    pub fn current() -> std::io::Result<Vec<NetnsScope>> {
        let id = NetnsId::current()?;
        let initial = match initial_process_ns("net") {
            Ok(init) => (init.dev(), init.ino()) == (id.dev, id.ino),
            // No first process to compare with: recent kernels (6.18 here) give
            // the initial namespace a fixed inode.
            Err(_) => id.ino == PROC_NET_INIT_INO,
        };
        if initial {
            return Ok(vec![NetnsScope::Initial]);
        }
        let mut names = Vec::new();
        if let Ok(entries) = std::fs::read_dir(NETNS_RUN_DIR) {
            for entry in entries.flatten() {
                // A file being set up or torn down is not a mount yet: skip.
                let Ok(meta) = std::fs::metadata(entry.path()) else {
                    continue;
                };
                if (meta.dev(), meta.ino()) == (id.dev, id.ino) {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        names.sort();
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Ok(names
            .into_iter()
            .map(NetnsScope::Named)
            .chain(std::iter::once(NetnsScope::Anonymous { id, boot }))
            .collect())
    }

    /// The prefix of this scope's keys in the store; none for the initial
    /// namespace, whose keys are the plain names records always had.
    pub fn key_prefix(&self) -> Option<String> {
        match self {
            NetnsScope::Initial => None,
            NetnsScope::Named(name) => Some(format!("netns:{name}")),
            NetnsScope::Anonymous { id, boot } => {
                Some(format!("netns-id:{}:{}:{boot}", id.dev, id.ino))
            }
        }
    }
}

/// The initial network namespace's inode on kernels that fix it
/// (`PROC_NET_INIT_INO`).
const PROC_NET_INIT_INO: u64 = 0xEFFF_FFF9;

/// The nsfs file of namespace `kind` (`net`, `mnt`) of the system's first
/// process: pid 1, or where pid 1 cannot be inspected (a supervisor that is
/// not dumpable), kthreadd (pid 2), which lives in the initial namespaces.
pub fn initial_process_ns(kind: &str) -> std::io::Result<std::fs::Metadata> {
    initial_process_path(&format!("ns/{kind}")).and_then(std::fs::metadata)
}

/// `/proc/PID/REL` of the system's first process (see [`initial_process_ns`]).
pub fn initial_process_path(rel: &str) -> std::io::Result<std::path::PathBuf> {
    let pid1 = std::path::Path::new("/proc/1").join(rel);
    match std::fs::metadata(&pid1) {
        Ok(_) => Ok(pid1),
        Err(e) => {
            let kthreadd =
                std::fs::read_to_string("/proc/2/comm").is_ok_and(|comm| comm.trim() == "kthreadd");
            let pid2 = std::path::Path::new("/proc/2").join(rel);
            if kthreadd && std::fs::metadata(&pid2).is_ok() {
                Ok(pid2)
            } else {
                Err(e)
            }
        }
    }
}

/// A path that opens the network namespace with inode `ino`, if it still
/// exists: a bind mount of it (`ip netns`, container runtimes) or a process
/// living in it. `None` means no one holds it any more.
pub fn find_by_inode(ino: u64) -> Option<std::path::PathBuf> {
    let matches = |path: &std::path::Path| std::fs::metadata(path).is_ok_and(|m| m.ino() == ino);
    // nsfs bind mounts: mountinfo's root field reads `net:[INO]`.
    let wanted = format!("net:[{ino}]");
    if let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) {
                let path = std::path::Path::new(mount_point);
                if *root == wanted && matches(path) {
                    return Some(path.into());
                }
            }
        }
    }
    let processes = std::fs::read_dir("/proc").ok()?;
    for entry in processes.flatten() {
        let path = entry.path().join("ns/net");
        if entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
            && matches(&path)
        {
            return Some(path);
        }
    }
    None
}

/// Errors opening or entering a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {path}")]
    Enter {
        path: std::path::PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot start a thread to work in network namespace {path}")]
    Thread {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the thread working in network namespace {path} panicked")]
    Panicked { path: std::path::PathBuf },
}

// Why namespaces are handled this way:
// - `setns(CLONE_NEWNET)` moves only the calling thread, so entering is
//   done on a dedicated short thread ([`run_blocking_in`]), never on a
//   runtime worker other tasks share, by a guard that cannot leave its
//   thread ([`NetnsGuard`] is `!Send`).
// - A netlink socket stays in the namespace it was created in, whichever
//   thread uses it later: [`crate::sys::netlink::Netlink::connect_in`]
//   creates it on such a thread and the caller's runtime drives it, so link
//   work in a sandbox needs no thread of its own.
// - What resolves names in the calling thread's namespace (aya's TC attach
//   and TCX query by ifname, `/proc/sys/net`, ethtool ioctls) runs inside
//   [`run_blocking_in`].

/// An open network namespace: opened once per operation and passed down,
/// so every step acts on the same namespace even if its path is re-bound
/// meanwhile.
#[derive(Debug)]
pub struct Netns {
    file: std::fs::File,
    id: NetnsId,
    path: std::path::PathBuf,
}

impl Netns {
    /// Opens the namespace file at `path` (`/var/run/netns/NAME`,
    /// `/proc/PID/ns/net`, a bind mount).
    pub fn open(path: &std::path::Path) -> Result<Self, NetnsError> {
        let open_err = |source| NetnsError::Open {
            path: path.into(),
            source,
        };
        let file = std::fs::File::open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        Ok(Netns {
            file,
            id: NetnsId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            path: path.into(),
        })
    }

    /// The calling thread's namespace.
    pub fn current() -> Result<Self, NetnsError> {
        Self::open(std::path::Path::new("/proc/thread-self/ns/net"))
    }

    pub fn id(&self) -> NetnsId {
        self.id
    }

    /// The path it was opened at (for messages).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl std::os::fd::AsFd for Netns {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Moves the calling thread into a network namespace and moves it back on
/// drop. A thread, not the process: `setns(CLONE_NEWNET)` is per thread.
/// Neither `Send` nor `Sync`: held across an `.await` on a multi-threaded
/// runtime, the task could resume on another thread and the drop would
/// switch that thread's namespace instead.
///
/// ```compile_fail
/// let netns = netvlan::sys::netns::Netns::current().unwrap();
/// let guard = netvlan::sys::netns::NetnsGuard::enter(&netns).unwrap();
/// std::thread::spawn(move || drop(guard));
/// ```
pub struct NetnsGuard {
    original: Netns,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl NetnsGuard {
    pub fn enter(target: &Netns) -> Result<Self, NetnsError> {
        let original = Netns::current()?;
        nix::sched::setns(target, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
            NetnsError::Enter {
                path: target.path.clone(),
                source,
            }
        })?;
        Ok(NetnsGuard {
            original,
            _not_send: std::marker::PhantomData,
        })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = nix::sched::setns(&self.original, nix::sched::CloneFlags::CLONE_NEWNET) {
            // A thread stuck in the wrong namespace would silently act on
            // the wrong interfaces: that must never continue.
            panic!("cannot return to the original network namespace: {e}");
        }
    }
}

/// Runs `job` on a short dedicated thread inside `netns` and returns its
/// result: for work that resolves names in the calling thread's namespace.
/// No runtime in there; from async code it blocks the caller for the
/// job's duration, so keep jobs short (an attach, a sysctl write).
pub fn run_blocking_in<T, F>(netns: &Netns, job: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(scope, || -> Result<T, NetnsError> {
                let _guard = NetnsGuard::enter(netns)?;
                Ok(job())
            })
            .map_err(|source| NetnsError::Thread {
                path: netns.path.clone(),
                source,
            })?;
        worker.join().map_err(|_| NetnsError::Panicked {
            path: netns.path.clone(),
        })?
    })
}

/// Where named network namespaces live (`ip netns` compatible).
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NamedNetnsError {
    #[error("network namespace '{0}' already exists")]
    Exists(String),
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {what} {path}")]
    Sys {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Creates a named network namespace as `ip netns add` does: a new
/// namespace bind-mounted on `/var/run/netns/NAME`, the directory being a
/// shared mount so the binding shows in every mount namespace.
pub fn create_named(name: &str) -> Result<std::path::PathBuf, NamedNetnsError> {
    use nix::mount::{mount, MsFlags};
    let dir = std::path::Path::new(NETNS_RUN_DIR);
    fn sys(
        what: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(nix::Error) -> NamedNetnsError {
        let path = path.to_path_buf();
        move |source| NamedNetnsError::Sys { what, path, source }
    }
    std::fs::create_dir_all(dir).map_err(|source| NamedNetnsError::Io {
        what: "create",
        path: dir.into(),
        source,
    })?;
    // Make the directory a shared mount point (bind it on itself first if
    // it is not a mount point yet: then MS_SHARED answers EINVAL).
    let none: Option<&str> = None;
    if let Err(nix::Error::EINVAL) =
        mount(none, dir, none, MsFlags::MS_SHARED | MsFlags::MS_REC, none)
    {
        mount(
            Some(dir),
            dir,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )
        .map_err(sys("bind-mount", dir))?;
        mount(none, dir, none, MsFlags::MS_SHARED | MsFlags::MS_REC, none)
            .map_err(sys("share", dir))?;
    }
    let path = dir.join(name);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(NamedNetnsError::Exists(name.into()))
        }
        Err(source) => {
            return Err(NamedNetnsError::Io {
                what: "create",
                path,
                source,
            })
        }
    }
    let target = path.clone();
    let made = std::thread::spawn(move || -> Result<(), NamedNetnsError> {
        // This thread gets the new namespace and ends: nothing to restore.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(sys("unshare a network namespace for", &target))?;
        let own = std::path::Path::new("/proc/thread-self/ns/net");
        mount(Some(own), &target, none, MsFlags::MS_BIND, none)
            .map_err(sys("bind-mount the namespace on", &target))
    })
    .join()
    .expect("the namespace thread does not panic");
    if let Err(e) = made {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Deletes a named network namespace (`ip netns del`). The namespace
/// itself lives on while a process is still inside it.
pub fn delete_named(name: &str) -> Result<(), NamedNetnsError> {
    let path = std::path::Path::new(NETNS_RUN_DIR).join(name);
    match nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(source) => {
            return Err(NamedNetnsError::Sys {
                what: "unmount",
                path,
                source,
            })
        }
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NamedNetnsError::Io {
            what: "remove",
            path,
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_this_process_lives_in_is_found_by_its_inode() {
        let own = NetnsId::current().expect("/proc is mounted");
        let path = find_by_inode(own.ino).expect("this process holds it");
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), own.ino);
        // No namespace has inode 1 (that is a filesystem root's).
        assert_eq!(find_by_inode(1), None);
    }
}
