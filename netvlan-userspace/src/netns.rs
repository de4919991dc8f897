//! Network namespace identity.
//!
//! Interfaces are only unique inside a namespace (two namespaces may both
//! have an `eth0` with ifindex 2), so anything netvlan keeps about an
//! interface, such as its pins, is filed under the namespace's identity.

use std::os::unix::fs::MetadataExt;

/// Identity of a network namespace: the device and inode of its nsfs file,
/// the same pair `ip netns identify` and `lsns` compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// Errors entering a network namespace.
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
    #[error("the thread working in network namespace {path} panicked")]
    Panicked { path: std::path::PathBuf },
}

/// Moves the calling thread into a network namespace and moves it back on
/// drop. A thread, not the process: `setns(CLONE_NEWNET)` is per thread,
/// which is why [`run_in`] uses a dedicated thread rather than a runtime
/// worker that other tasks share.
pub struct NetnsGuard {
    original: std::fs::File,
}

impl NetnsGuard {
    pub fn enter(path: &std::path::Path) -> Result<Self, NetnsError> {
        let open = |p: &std::path::Path| {
            std::fs::File::open(p).map_err(|source| NetnsError::Open {
                path: p.into(),
                source,
            })
        };
        let original = open(std::path::Path::new("/proc/thread-self/ns/net"))?;
        let target = open(path)?;
        nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
            NetnsError::Enter {
                path: path.into(),
                source,
            }
        })?;
        Ok(NetnsGuard { original })
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

/// Runs an async job inside the network namespace at `path`, on a fresh
/// thread with its own single-threaded runtime (netlink sockets opened by
/// the job belong to that namespace).
pub fn run_in<F, Fut, T>(path: &std::path::Path, job: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let path = path.to_path_buf();
    let thread_path = path.clone();
    std::thread::spawn(move || -> Result<T, NetnsError> {
        let _guard = NetnsGuard::enter(&thread_path)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime can always be built");
        Ok(runtime.block_on(job()))
    })
    .join()
    .map_err(|_| NetnsError::Panicked { path })?
}
