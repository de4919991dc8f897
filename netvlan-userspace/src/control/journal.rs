//! Crash safety for commands killed half-way (SIGKILL, power loss).
//!
//! Before a command creates anything in the kernel it records the intent
//! in the store's journal, durably; every link it creates carries an
//! `IFLA_IFALIAS` tag naming its owner. Committing the network record
//! clears the journal in the same transaction; a failure clears it after
//! the rollback. So a journal found by the next command means the last one
//! died in between: [`Manager::recover`] removes exactly what it may have
//! left (links that carry the recorded tag and that no stored network
//! owns, an attachment no stored network owns) before doing anything else.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Manager, NetworkError};
use crate::{
    datapath::DatapathError,
    sys::netlink::{Netlink, NetlinkError},
    sys::netns,
};

/// Something a command may have created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Intent {
    /// A link in the host's namespace (802.1Q parent, placeholder, probe).
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
}

/// The alias netvlan gives the links it creates.
pub(crate) fn owner_alias(id: &str) -> String {
    format!("{OWNER_PREFIX}{id}")
}

/// How every owner tag starts.
pub(crate) const OWNER_PREFIX: &str = crate::sys::netlink::OWNER_ALIAS_PREFIX;

impl Manager {
    /// Records an intent durably before the kernel change it announces.
    pub(super) fn intend(&self, intent: Intent) -> Result<(), NetworkError> {
        let mut intents = self.intents.lock().expect("intents lock");
        intents.push(intent);
        Ok(self.store().set_journal(&intents)?)
    }

    /// After a rollback: nothing is pending any more.
    pub(super) fn forget_intents(&self) {
        self.intents.lock().expect("intents lock").clear();
        if let Err(e) = self.store().clear_journal() {
            tracing::error!("cannot clear the journal: {e}");
        }
    }

    /// Called when the store shows its journal was already emptied in the
    /// same transaction as the record.
    pub(super) fn intents_committed(&self) {
        self.intents.lock().expect("intents lock").clear();
    }

    /// Deletes the links of this namespace that carry netvlan's owner tag
    /// but belong to no stored network or endpoint (a placeholder whose
    /// network is gone, a probe left by a crash older than the journal).
    /// Returns what it deleted. The store's lock keeps every other command
    /// out meanwhile, so no link of a command in flight is mistaken.
    pub async fn remove_orphans(&self) -> Result<Vec<String>, NetworkError> {
        let mut deleted = Vec::new();
        for link in self.orphan_links().await? {
            self.netlink().delete_link(link.ifindex).await?;
            deleted.push(format!(
                "deleted orphan link {} ({})",
                link.name,
                link.alias.unwrap_or_default()
            ));
        }
        Ok(deleted)
    }

    /// Names of the networks whose parent or wire is `iface`.
    pub fn networks_on(&self, iface: &str) -> Result<Vec<String>, NetworkError> {
        Ok(self
            .networks()?
            .into_iter()
            .filter(|n| n.parent.wire == iface || n.parent.link == iface)
            .map(|n| n.name)
            .collect())
    }

    /// Links of this namespace tagged as netvlan's that no stored network
    /// or endpoint owns.
    pub(super) async fn orphan_links(
        &self,
    ) -> Result<Vec<crate::sys::netlink::LinkInfo>, NetworkError> {
        let networks = self.networks()?;
        let owned: std::collections::BTreeSet<String> = networks
            .iter()
            .flat_map(|n| {
                std::iter::once(owner_alias(&n.id))
                    .chain(n.endpoints.values().map(|e| owner_alias(&e.id)))
            })
            .collect();
        Ok(self
            .netlink()
            .links()
            .await?
            .into_iter()
            .filter(|l| {
                l.alias
                    .as_deref()
                    .is_some_and(|a| a.starts_with(OWNER_PREFIX) && !owned.contains(a))
            })
            .collect())
    }

    /// Cleans up after a command that died half-way; returns what it did.
    pub(super) async fn recover(&self) -> Result<Vec<String>, NetworkError> {
        let intents: Vec<Intent> = self.store().journal()?;
        if intents.is_empty() {
            return Ok(Vec::new());
        }
        let networks = self.networks()?;
        let mut done = Vec::new();
        for intent in intents.into_iter().rev() {
            match intent {
                Intent::HostLink { name, alias } => {
                    if networks.iter().any(|n| n.parent.link == name) {
                        continue;
                    }
                    match self.netlink().link_by_name(&name).await {
                        Ok(link) if link.alias.as_deref() == Some(alias.as_str()) => {
                            self.netlink().delete_link(link.ifindex).await?;
                            done.push(format!("deleted {name}, left by an interrupted command"));
                        }
                        Ok(_) | Err(NetlinkError::NoSuchInterface { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Intent::SandboxLink {
                    netns_path,
                    temp_name,
                    alias,
                } => {
                    if !netns_path.exists() {
                        continue;
                    }
                    let netlink = Netlink::connect_in(&netns::Netns::open(&netns_path)?)?;
                    let mut deleted = Vec::new();
                    for link in netlink.links().await? {
                        if link.alias.as_deref() == Some(alias.as_str()) || link.name == temp_name {
                            netlink.delete_link(link.ifindex).await?;
                            deleted.push(link.name);
                        }
                    }
                    for name in deleted {
                        done.push(format!(
                            "deleted {name} in {}, left by an interrupted connect",
                            netns_path.display()
                        ));
                    }
                }
                Intent::Datapath { wire } => {
                    for path in self.datapath().remove_dead_staging()? {
                        done.push(format!(
                            "removed {}, left by an interrupted create",
                            path.display()
                        ));
                    }
                    if networks
                        .iter()
                        .any(|n| n.parent.wire == wire && n.datapath_owned)
                    {
                        continue;
                    }
                    match self.datapath().detach(&wire).await {
                        Ok(_) => done.push(format!(
                            "detached the datapath from {wire}, left by an interrupted create"
                        )),
                        Err(DatapathError::NotAttached { .. })
                        | Err(DatapathError::Netlink(NetlinkError::NoSuchInterface { .. })) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        self.store().clear_journal()?;
        for line in &done {
            tracing::warn!("recovery: {line}");
        }
        Ok(done)
    }
}
