//! Undo logs: every kernel change a command makes registers how to undo it,
//! and a failure undoes them all, newest first, reporting every undo that
//! failed (never stopping at the first).

use std::path::PathBuf;

use super::NetworkError;
use crate::{
    datapath::Datapath,
    sys::{
        netlink::{Netlink, NetlinkError},
        netns,
    },
};

enum Undo {
    DeleteLink(u32),
    Detach(String),
    /// Delete link `name` inside the namespace at the path.
    DeleteLinkIn(PathBuf, String),
    /// Remove an endpoint's program pins (namespace, ifindex): the
    /// programs go with the link, their pins would stay.
    RemoveEndpointPins(crate::sys::netns::NetnsId, u32),
}

#[derive(Default)]
pub(super) struct Rollback {
    steps: Vec<Undo>,
}

impl Rollback {
    pub fn delete_link(&mut self, ifindex: u32) {
        self.steps.push(Undo::DeleteLink(ifindex));
    }

    pub fn detach(&mut self, ifname: &str) {
        self.steps.push(Undo::Detach(ifname.into()));
    }

    pub fn delete_link_in(&mut self, netns: PathBuf, name: &str) {
        self.steps.push(Undo::DeleteLinkIn(netns, name.into()));
    }

    pub fn remove_endpoint_pins(&mut self, netns: crate::sys::netns::NetnsId, ifindex: u32) {
        self.steps.push(Undo::RemoveEndpointPins(netns, ifindex));
    }

    /// Undoes everything and returns `failed`, wrapped if undoing failed too.
    pub async fn undo(
        self,
        netlink: &Netlink,
        datapath: &Datapath,
        failed: NetworkError,
    ) -> NetworkError {
        let mut errors = Vec::new();
        for step in self.steps.into_iter().rev() {
            let result = match step {
                Undo::DeleteLink(ifindex) => netlink
                    .delete_link(ifindex)
                    .await
                    .map_err(|e| e.to_string()),
                Undo::Detach(ifname) => datapath
                    .detach(&ifname)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Undo::DeleteLinkIn(path, name) => delete_link_in(path, name).await,
                Undo::RemoveEndpointPins(netns, ifindex) => {
                    crate::datapath::endpoint_hooks::remove_pins(datapath.bpf_dir(), netns, ifindex)
                        .map_err(|e| e.to_string())
                }
            };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            failed
        } else {
            NetworkError::RollbackFailed {
                failed: Box::new(failed),
                undo: errors.join("; "),
            }
        }
    }
}

pub(super) async fn delete_link_in(path: PathBuf, name: String) -> Result<(), String> {
    let deleted = async {
        let netlink = Netlink::connect_in(&netns::Netns::open(&path)?)?;
        match netlink.link_by_name(&name).await {
            Ok(link) => netlink.delete_link(link.ifindex).await,
            Err(NetlinkError::NoSuchInterface { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    };
    deleted
        .await
        .map_err(|e| format!("{}: {e}", path.display()))
}
