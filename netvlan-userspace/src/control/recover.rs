//! Crash safety for commands killed half-way (SIGKILL, power loss).
//!
//! Before a command creates anything in the kernel it journals the
//! [`Operation`] (in a journal that survives the process; a power cut
//! takes the kernel objects along, and a journal its commit outlived is
//! spent by generation, see `store`); every link it creates carries an `IFLA_IFALIAS`
//! tag naming its owner. Committing the network record spends the journal
//! in the same transaction; a failure clears it after the undo. So a
//! journal found by the next command means the last one died in between:
//! [`Manager::recover`] undoes exactly what it may have left (links that
//! carry the recorded tag and that no stored network owns, an attachment
//! no stored network owns) before doing anything else. Links tagged as
//! netvlan's that nothing owns are orphans, which `restore` removes.

use super::{operation::Operation, owner::owner_alias, owner::OWNER_PREFIX, Manager, NetworkError};

impl Manager {
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

    /// Cleans up after a command that died half-way: undoes what its
    /// journal says it may have made. Returns what it did.
    pub(super) async fn recover(&self) -> Result<Vec<String>, NetworkError> {
        let operations: Vec<Operation> = self.store().journal()?;
        if operations.is_empty() {
            return Ok(Vec::new());
        }
        let networks = self.networks()?;
        let mut done = Vec::new();
        for operation in operations.iter().rev() {
            let undone = operation
                .undo(self.netlink(), self.datapath(), &networks)
                .await
                .map_err(|e| NetworkError::RecoveryFailed(Box::new(e)))?;
            done.extend(
                undone
                    .into_iter()
                    .map(|line| format!("{line}, left by an interrupted {}", operation.left_by())),
            );
        }
        // A command killed after its policy write leaves the MACs of the
        // links just undone (an endpoint's, a shim's) registered: they
        // would pass `unknown_dst=drop` and show in `check`. The stored
        // policy goes back on every wire before the journal is spent.
        for wire in self.rewrite_attached_policies(&networks).await? {
            done.push(format!("rewrote the policy maps of {wire}"));
        }
        self.store().clear_journal()?;
        for line in &done {
            tracing::warn!("recovery: {line}");
        }
        Ok(done)
    }
}
