//! What every scenario gets from the run: its own module, so the
//! scenarios and the run that calls them import it and not each other.

use std::path::PathBuf;

/// What every scenario needs.
pub struct Ctx {
    /// Names this run's namespaces and directories (`nvb-<token>-…`).
    pub token: String,
    pub quick: bool,
    /// A private copy of the release `netvlan` binary.
    pub netvlan: PathBuf,
    /// A private copy of the release `netvlan-cni` plugin.
    pub netvlan_cni: PathBuf,
    /// A private copy of the eBPF object embedded in that binary.
    pub object: PathBuf,
}

impl Ctx {
    /// The quick or the full run's value of a knob.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}
