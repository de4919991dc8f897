//! The kernel memory a wire's maps hold: the `memlock:` the kernel reports
//! in `/proc/self/fdinfo` for each map (what it charges the map's creator,
//! all its entries' room and per-CPU copies included), summed over every
//! map the wire object declares (`WIRE_MAPS`), opened from its pin.

use std::{
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::maps::MapData;
use netvlan_common::maps::WIRE_MAPS;

/// One MiB.
pub const MIB: f64 = 1024.0 * 1024.0;

/// The pin directory of the one wire attached under `bpf_dir`
/// (`net-<inode>/if-<ifindex>/`, see the datapath's pin layout).
pub fn wire_pin_dir(bpf_dir: &Path) -> Result<PathBuf> {
    let mut found = Vec::new();
    for ns in std::fs::read_dir(bpf_dir)
        .with_context(|| format!("reading {}", bpf_dir.display()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("net-"))
    {
        for entry in std::fs::read_dir(ns.path())
            .with_context(|| format!("reading {}", ns.path().display()))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with("if-") {
                found.push(entry.path());
            }
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one attached wire (if-N) under {}, found {}",
            bpf_dir.display(),
            found.len()
        ),
    }
}

/// Each map of the wire pinned in `pins` with its `memlock` in bytes, in
/// `WIRE_MAPS` order. A map the object declares but that is not pinned is
/// an error: the sum would be short.
pub fn wire_maps_memlock(pins: &Path) -> Result<Vec<(&'static str, u64)>> {
    WIRE_MAPS
        .iter()
        .map(|&name| {
            let path = pins.join(name);
            let map = MapData::from_pin(&path)
                .with_context(|| format!("opening the wire's map {}", path.display()))?;
            Ok((name, memlock(map.fd().as_fd().as_raw_fd(), name)?))
        })
        .collect()
}

/// The `memlock:` line of this process's fdinfo for `fd` (a map).
fn memlock(fd: i32, name: &str) -> Result<u64> {
    let path = format!("/proc/self/fdinfo/{fd}");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{path} (map {name}) has no memlock: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_comes_from_the_kernels_fdinfo_of_a_map() {
        // A plain file's fdinfo has no memlock line: an error naming it,
        // never a zero.
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let err = memlock(file.as_raw_fd(), "status").unwrap_err();
        assert!(format!("{err:#}").contains("has no memlock"), "{err:#}");
    }
}
