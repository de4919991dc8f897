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
