//! Per-link IP settings under `/proc/sys/net/{ipv4,ipv6}/conf/IFACE/`,
//! written as files (never through `sysctl`). `/proc/sys/net` shows the
//! network namespace of the thread that opens it, so a setting lands in
//! the namespace netvlan runs in.

use std::path::PathBuf;

/// A setting that cannot be read or written; names the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}", .path.display())]
pub struct SysctlError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// `/proc/sys/net/{family}/conf/{ifname}/{key}`.
fn path(family: &str, ifname: &str, key: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/{family}/conf/{ifname}/{key}"))
}

/// The value of `family`'s `key` on `ifname` (`ipv4`, `arp_ignore`).
pub fn link_setting(family: &str, ifname: &str, key: &str) -> Result<String, SysctlError> {
    let path = path(family, ifname, key);
    std::fs::read_to_string(&path)
        .map(|v| v.trim().to_string())
        .map_err(|source| SysctlError {
            action: "read",
            path,
            source,
        })
}

/// Sets `family`'s `key` on `ifname` to `value`.
pub fn set_link_setting(
    family: &str,
    ifname: &str,
    key: &str,
    value: &str,
) -> Result<(), SysctlError> {
    let path = path(family, ifname, key);
    std::fs::write(&path, value).map_err(|source| SysctlError {
        action: "write",
        path,
        source,
    })
}
