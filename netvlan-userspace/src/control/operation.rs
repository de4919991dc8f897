//! The kernel changes a command makes, each recorded once: journalled
//! before the change (the journal survives the process, not a power cut,
//! which takes the kernel objects with it; see `store`) (so the next command can clean up after one
//! that died half-way, see [`Manager::recover`](super::Manager)) and undone,
//! newest first, when the command fails.
//!
//! Committing the network record spends the journal in the same store
//! transaction, the command's one durable commit; a failure clears it
//! after the undo.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{error::UndoFailure, sandbox_link, NetworkError, NetworkRecord};
use crate::{
    datapath::{Datapath, DatapathError},
    store::Store,
    sys::netlink::{Netlink, NetlinkError},
};

/// Something a command creates in the kernel. Stored in the journal as
/// `{"kind": "host_link", ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Operation {
    /// A link in the host's namespace (802.1Q parent, placeholder, probe),
    /// tagged with `alias`.
    HostLink { name: String, alias: String },
    /// An endpoint link inside a sandbox: under its temporary name until
    /// it is tagged with the alias, by the alias after.
    SandboxLink {
        netns_path: PathBuf,
        temp_name: String,
        alias: String,
    },
    /// The datapath attached to a wire that had none.
    Datapath { wire: String },
    /// An address netvlan gives a parent for host access (ebpf mode).
    HostAddress { link: String, address: ipnet::IpNet },
    /// `arp_ignore`/`arp_announce` of a parent set for a shim; `previous`
    /// are the values put back.
    ParentArp {
        link: String,
        previous: (String, String),
    },
    /// The host-access hairpin attached to a parent link.
    Hairpin { link: String },
    /// A host route to an endpoint address through a network's shim link.
    HostRoute {
        link: String,
        destination: std::net::IpAddr,
    },
}

impl Operation {
    /// The command that leaves this behind when it dies, for recovery's
    /// report ("left by an interrupted connect").
    pub(crate) fn left_by(&self) -> &'static str {
        match self {
            Operation::HostLink { .. } => "command",
            Operation::SandboxLink { .. } => "connect",
            Operation::Datapath { .. } => "create",
            Operation::HostRoute { .. }
            | Operation::HostAddress { .. }
            | Operation::ParentArp { .. }
            | Operation::Hairpin { .. } => "command",
        }
    }

    /// Undoes the change where it is still in the kernel and no network of
    /// `networks` (the stored ones) owns it. Returns what it removed.
    pub(crate) async fn undo(
        &self,
        netlink: &Netlink,
        datapath: &Datapath,
        networks: &[NetworkRecord],
    ) -> Result<Vec<String>, UndoFailure> {
        match self {
            Operation::HostLink { name, alias } => {
                // A parent, or a stored network's shim link.
                if networks.iter().any(|n| {
                    n.parent.link == *name || n.host_access.link.as_deref() == Some(name.as_str())
                }) {
                    return Ok(Vec::new());
                }
                let failed = |e: NetlinkError| UndoFailure::new(format!("deleting {name}"), e);
                match netlink.link_by_name(name).await {
                    Ok(link) if link.alias.as_deref() == Some(alias.as_str()) => {
                        netlink.delete_link(link.ifindex).await.map_err(failed)?;
                        Ok(vec![format!("deleted {name}")])
                    }
                    Ok(_) | Err(NetlinkError::NoSuchInterface { .. }) => Ok(Vec::new()),
                    Err(e) => Err(failed(e)),
                }
            }
            Operation::SandboxLink {
                netns_path,
                temp_name,
                alias,
            } => {
                if !netns_path.exists() {
                    return Ok(Vec::new());
                }
                let deleted =
                    sandbox_link::delete_tagged(netns_path, alias, temp_name, datapath.bpf_dir())
                        .await
                        .map_err(|e| {
                            UndoFailure::new(
                                format!(
                                    "deleting the link tagged {alias} in {}",
                                    netns_path.display()
                                ),
                                e,
                            )
                        })?;
                Ok(deleted
                    .into_iter()
                    .map(|name| format!("deleted {name} in {}", netns_path.display()))
                    .collect())
            }
            Operation::HostRoute { link, destination } => {
                // An endpoint of a stored network still uses it.
                let owned = networks.iter().any(|n| {
                    n.host_access.link.as_deref() == Some(link.as_str())
                        && n.endpoints.values().any(|e| {
                            e.ipv4
                                .iter()
                                .chain(e.ipv6.iter())
                                .any(|a| a.addr() == *destination)
                        })
                });
                if owned {
                    return Ok(Vec::new());
                }
                let failed = |e: NetlinkError| {
                    UndoFailure::new(format!("deleting the route to {destination}"), e)
                };
                match netlink.link_by_name(link).await {
                    Ok(shim) => {
                        netlink
                            .delete_host_route(shim.ifindex, *destination)
                            .await
                            .map_err(failed)?;
                        Ok(vec![format!(
                            "deleted the route to {destination} via {link}"
                        )])
                    }
                    Err(NetlinkError::NoSuchInterface { .. }) => Ok(Vec::new()),
                    Err(e) => Err(failed(e)),
                }
            }
            Operation::HostAddress { link, address } => {
                let owned = networks.iter().any(|n| {
                    n.parent.link == *link
                        && n.host_access.mode == super::HostAccessMode::Ebpf
                        && n.host_access.addresses.iter().any(|a| {
                            a.address == *address && a.source != super::AddressSource::Parent
                        })
                });
                if owned {
                    return Ok(Vec::new());
                }
                let failed = |e: NetlinkError| {
                    UndoFailure::new(format!("deleting {address} from {link}"), e)
                };
                match netlink.link_by_name(link).await {
                    Ok(parent) => {
                        netlink
                            .delete_address(parent.ifindex, *address)
                            .await
                            .map_err(failed)?;
                        Ok(vec![format!("deleted {address} from {link}")])
                    }
                    Err(NetlinkError::NoSuchInterface { .. }) => Ok(Vec::new()),
                    Err(e) => Err(failed(e)),
                }
            }
            Operation::ParentArp { link, previous } => {
                if networks.iter().any(|n| {
                    n.parent.link == *link && n.host_access.mode == super::HostAccessMode::Shim
                }) {
                    return Ok(Vec::new());
                }
                for (key, value) in [("arp_ignore", &previous.0), ("arp_announce", &previous.1)] {
                    match crate::sys::sysctl::set_link_setting("ipv4", link, key, value) {
                        Ok(()) => {}
                        Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => {
                            return Ok(Vec::new())
                        }
                        Err(e) => {
                            return Err(UndoFailure::new(
                                format!("putting {key} of {link} back"),
                                Box::new(NetworkError::from(e)),
                            ))
                        }
                    }
                }
                Ok(vec![format!(
                    "put arp_ignore and arp_announce of {link} back"
                )])
            }
            Operation::Hairpin { link } => {
                if networks.iter().any(|n| {
                    n.parent.link == *link && n.host_access.mode == super::HostAccessMode::Ebpf
                }) {
                    return Ok(Vec::new());
                }
                match datapath.detach_hairpin(link).await {
                    Ok(true) => Ok(vec![format!(
                        "detached the host-access hairpin from {link}"
                    )]),
                    Ok(false) => Ok(Vec::new()),
                    Err(e) => Err(UndoFailure::new(
                        format!("detaching the host-access hairpin from {link}"),
                        e,
                    )),
                }
            }
            Operation::Datapath { wire } => {
                let failed = |action: &str, e: DatapathError| UndoFailure::new(action, e);
                let mut done: Vec<String> = datapath
                    .remove_dead_staging()
                    .await
                    .map_err(|e| failed("removing dead staging pins", e))?
                    .into_iter()
                    .map(|path| format!("removed {}", path.display()))
                    .collect();
                if networks
                    .iter()
                    .any(|n| n.parent.wire == *wire && n.datapath_owned)
                {
                    return Ok(done);
                }
                match datapath.detach(wire).await {
                    Ok(_) => done.push(format!("detached the datapath from {wire}")),
                    Err(DatapathError::NotAttached { .. })
                    | Err(DatapathError::Netlink(NetlinkError::NoSuchInterface { .. })) => {}
                    Err(e) => {
                        return Err(failed(&format!("detaching the datapath from {wire}"), e))
                    }
                }
                Ok(done)
            }
        }
    }
}

/// The operations of the command in flight, in the order they were made.
pub(crate) struct OperationLog<'a> {
    store: &'a Store,
    operations: Vec<Operation>,
}

impl<'a> OperationLog<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        OperationLog {
            store,
            operations: Vec::new(),
        }
    }

    /// Records `operation` (surviving this process, without an fsync);
    /// call it before making the change.
    pub(crate) fn record(&mut self, operation: Operation) -> Result<(), NetworkError> {
        self.operations.push(operation);
        Ok(self.store.set_journal(&self.operations)?)
    }

    /// The command committed: the store emptied the journal in the same
    /// transaction as the record.
    pub(crate) fn committed(self) {}

    /// The changes undid themselves (a link that cleaned up after its own
    /// failure): only the journal is left to clear.
    pub(crate) fn forget(self) {
        if let Err(e) = self.store.clear_journal() {
            tracing::error!("cannot clear the journal: {e}");
        }
    }

    /// Undoes every operation, newest first, past failures, and returns
    /// `failed`, wrapped with every undo that failed.
    pub(crate) async fn undo(
        self,
        netlink: &Netlink,
        datapath: &Datapath,
        failed: NetworkError,
    ) -> NetworkError {
        // The command's own changes belong to no stored network (its
        // record was never committed): the ownership check only guards
        // recovery. Without the list, nothing is spared.
        let networks: Vec<NetworkRecord> = self.store.networks().unwrap_or_else(|e| {
            tracing::warn!("undo: cannot read the stored networks: {e}");
            Vec::new()
        });
        let mut failures = Vec::new();
        for operation in self.operations.iter().rev() {
            if let Err(e) = operation.undo(netlink, datapath, &networks).await {
                failures.push(e);
            }
        }
        let error = if failures.is_empty() {
            failed
        } else {
            NetworkError::RollbackFailed {
                failed: Box::new(failed),
                undo: failures,
            }
        };
        self.forget();
        error
    }
}
