//! Addresses netvlan's IPAM holds for Docker (`--ipam-driver netvlan`):
//! Docker asks for an address (RequestAddress), then creates the endpoint
//! that takes it (CreateEndpoint), or gives it back (ReleaseAddress). A
//! dockerd that dies in between never does either, and the address would
//! stay allocated for good: `check` reports such a hold and `restore`
//! frees it.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{endpoint::with_prefix, Manager, NetworkError, NetworkRecord};
use crate::ipam::Request;

/// How long a hold waits for its endpoint before it counts as left behind.
/// Docker creates the endpoint right after it got the address
/// (milliseconds; seconds on a loaded host). Freeing a hold too early does
/// little harm: the endpoint then claims the address as an `--ip` would,
/// and only if the CLI took it meanwhile does Docker's create fail.
pub const HOLD_GRACE_SECS: u64 = 10;

/// Seconds since the epoch, as holds record their time.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A hold no endpoint took within [`HOLD_GRACE_SECS`].
pub struct StaleHold {
    pub address: IpAddr,
    /// How long ago it was made; `None`: by an older build, which kept no
    /// time.
    pub age_secs: Option<u64>,
}

impl StaleHold {
    /// "held for 42 s" or, without a time, "held since before this build".
    pub fn held_for(&self) -> String {
        match self.age_secs {
            Some(age) => format!("held for {age} s"),
            None => "held since before this build".into(),
        }
    }
}

/// `record`'s holds no endpoint took in time, now.
pub fn stale_holds(record: &NetworkRecord) -> Vec<StaleHold> {
    let now = unix_now();
    record
        .ipam
        .stale_holds(now, HOLD_GRACE_SECS)
        .map(|(address, since)| StaleHold {
            address,
            age_secs: since.map(|made| now.saturating_sub(made)),
        })
        .collect()
}

/// Frees `record`'s stale holds (the caller writes the record): what was
/// freed.
pub fn free_stale_holds(record: &mut NetworkRecord) -> Vec<StaleHold> {
    let stale = stale_holds(record);
    for hold in &stale {
        record.ipam.release_held(&hold.address);
    }
    stale
}

impl Manager {
    /// Docker's IPAM asks for an address of `network`: allocated and held
    /// (one durable write) until the endpoint Docker then creates takes
    /// it, or Docker gives it back. So the CLI and Docker share one
    /// allocator on a network.
    pub fn hold_address(
        &self,
        network: &str,
        request: Request,
        range: Option<IpNet>,
    ) -> Result<IpNet, NetworkError> {
        let mut record = self.network(network)?;
        let addr = record.ipam.hold(request, range, unix_now())?;
        self.store().put_network(&record.name, &record)?;
        Ok(with_prefix(&record, addr))
    }

    /// Docker's IPAM gives `addr` back: freed if no endpoint took it.
    pub fn release_held(&self, network: &str, addr: IpAddr) -> Result<(), NetworkError> {
        let mut record = self.network(network)?;
        if record.ipam.release_held(&addr) {
            self.store().put_network(&record.name, &record)?;
        }
        Ok(())
    }
}
