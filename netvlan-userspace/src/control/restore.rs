//! `netvlan restore`: bring the kernel back in line with the stored state
//! after a reboot (or anything else that deleted links or pins).
//!
//! Idempotent: whatever already exists is left alone, so a second run
//! reports nothing to do. Recreated endpoints keep their addresses and MAC.
//! Endpoints whose sandbox no longer exists are dropped and their addresses
//! freed, as Docker does for containers that are gone.

use serde::Serialize;

use super::{
    holds,
    owner::owner_alias,
    routes::held_routes,
    sandbox_link::{self, endpoint_link, temp_link_name},
    Driver, Manager, NetworkError, NetworkRecord, NewLink, ParentKind,
};
use crate::{
    datapath::{AttachMode, AttachOutcome},
    sys::netlink::NetlinkError,
    sys::sandbox::Sandbox,
};

/// One thing restore did, or could not do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestoreAction {
    pub network: String,
    pub action: String,
    /// `None` when it worked.
    pub error: Option<String>,
}

impl Manager {
    /// Restores every network; keeps going past failures and reports them.
    pub async fn restore(&self) -> Result<Vec<RestoreAction>, NetworkError> {
        let mut actions = Vec::new();
        match self.remove_orphans().await {
            Ok(removed) => actions.extend(removed.into_iter().map(|action| RestoreAction {
                network: "-".into(),
                action,
                error: None,
            })),
            Err(e) => actions.push(RestoreAction {
                network: "-".into(),
                action: "remove orphan links netvlan tagged".into(),
                error: Some(e.to_string()),
            }),
        }
        let mut wires = std::collections::BTreeSet::new();
        for mut record in self.networks()? {
            wires.insert(record.parent.wire.clone());
            let before = actions.len();
            let freed = holds::free_stale_holds(&mut record);
            for hold in &freed {
                actions.push(RestoreAction {
                    network: record.name.clone(),
                    action: format!(
                        "free {} ({} for Docker's IPAM, no endpoint took it)",
                        hold.address,
                        hold.held_for()
                    ),
                    error: None,
                });
            }
            let mut changed = !freed.is_empty();
            let parent_ok = self.restore_parent(&record, &mut actions).await;
            if parent_ok {
                self.restore_datapath(&record, &mut actions).await;
                changed |= self.restore_endpoints(&mut record, &mut actions).await;
            }
            if changed {
                self.store().put_network(&record.name, &record)?;
            }
            if parent_ok {
                match self.restore_host_access(&record).await {
                    Ok(done) => actions.extend(done.into_iter().map(|action| RestoreAction {
                        network: record.name.clone(),
                        action,
                        error: None,
                    })),
                    Err(e) => actions.push(RestoreAction {
                        network: record.name.clone(),
                        action: format!("restore host access ({})", record.host_access.mode),
                        error: Some(e.to_string()),
                    }),
                }
            }
            if actions.len() == before {
                tracing::debug!("{}: nothing to restore", record.name);
            }
        }
        // Policy maps come back with a fresh attachment; rewrite them all
        // (a no-op where they are already right).
        let all = self.networks()?;
        for wire in wires {
            let on_wire: Vec<&NetworkRecord> =
                all.iter().filter(|n| n.parent.wire == wire).collect();
            if let Err(e) = self.sync_wire(&wire, &on_wire).await {
                actions.push(RestoreAction {
                    network: on_wire.first().map(|n| n.name.clone()).unwrap_or_default(),
                    action: format!("enforce the policy on {wire}"),
                    error: Some(e.to_string()),
                });
            }
        }
        // Pins whose programs no longer run (an endpoint's dropped sandbox,
        // an interface deleted by hand).
        match self.datapath().prune().await {
            Ok(removed) => {
                for status in removed {
                    if let crate::datapath::AttachmentStatus::Stale {
                        pin_dir, reason, ..
                    } = status
                    {
                        actions.push(RestoreAction {
                            network: "-".into(),
                            action: format!("remove stale pins {} ({reason})", pin_dir.display()),
                            error: None,
                        });
                    }
                }
            }
            Err(e) => actions.push(RestoreAction {
                network: "-".into(),
                action: "remove stale pins".into(),
                error: Some(e.to_string()),
            }),
        }
        Ok(actions)
    }

    async fn restore_parent(
        &self,
        record: &NetworkRecord,
        actions: &mut Vec<RestoreAction>,
    ) -> bool {
        let mut report = |action: String, error: Option<String>| {
            actions.push(RestoreAction {
                network: record.name.clone(),
                action,
                error,
            })
        };
        match self.netlink().link_by_name(&record.parent.link).await {
            Ok(_) => return true,
            Err(NetlinkError::NoSuchInterface { .. }) => {}
            Err(e) => {
                report(
                    format!("check parent {}", record.parent.link),
                    Some(e.to_string()),
                );
                return false;
            }
        }
        let result: Result<(), NetworkError> = async {
            match &record.parent.kind {
                ParentKind::Existing => {
                    Err(NetworkError::UnknownParent(record.parent.link.clone()))
                }
                ParentKind::Vlan { base, vid } => {
                    let base = self.parent_link(base).await?;
                    // Owner-tagged like at create, so crash recovery and a
                    // later `network rm` know it is netvlan's.
                    let options = crate::sys::netlink::LinkOptions {
                        alias: Some(owner_alias(&record.id)),
                        ..Default::default()
                    };
                    let vlan = NewLink::Vlan {
                        parent: base.ifindex,
                        vid: *vid,
                    };
                    self.netlink()
                        .create_link_with(&record.parent.link, vlan, &options)
                        .await?;
                    let link = self.netlink().link_by_name(&record.parent.link).await?;
                    Ok(self.netlink().set_up(link.ifindex).await?)
                }
                ParentKind::Placeholder => {
                    let alias = owner_alias(&record.id);
                    let ifindex = self.create_placeholder(&record.parent.link, &alias).await?;
                    Ok(self.netlink().set_up(ifindex).await?)
                }
            }
        }
        .await;
        let ok = result.is_ok();
        report(
            format!("recreate parent {}", record.parent.link),
            result.err().map(|e| e.to_string()),
        );
        ok
    }

    async fn restore_datapath(&self, record: &NetworkRecord, actions: &mut Vec<RestoreAction>) {
        if !record.datapath_owned {
            return;
        }
        let (action, error) = match self
            .datapath()
            .attach_at(&record.parent.wire, AttachMode::Auto, record.options.hook)
            .await
        {
            Ok(AttachOutcome::AlreadyAttached(_)) => return,
            Ok(AttachOutcome::Attached { attachment, .. }) => (
                format!(
                    "attach datapath to {} ({} hook, {} mode)",
                    attachment.ifname, attachment.hook, attachment.mode
                ),
                None,
            ),
            Err(e) => (
                format!("attach datapath to {}", record.parent.wire),
                Some(e.to_string()),
            ),
        };
        actions.push(RestoreAction {
            network: record.name.clone(),
            action,
            error,
        });
    }

    /// Returns whether the record must be written again: it changed
    /// (endpoints dropped, links recreated under a new index), or a repair
    /// made new pins, which readers that keep endpoint maps open look for
    /// only after a commit (`datapath::counters::EndpointMaps`).
    async fn restore_endpoints(
        &self,
        record: &mut NetworkRecord,
        actions: &mut Vec<RestoreAction>,
    ) -> bool {
        let mut changed = false;
        let parent = match self.netlink().link_by_name(&record.parent.link).await {
            Ok(link) => link,
            Err(_) => return false,
        };
        // Who holds a sandbox's default routes is read from the store.
        let all = match self.networks() {
            Ok(all) => all,
            Err(e) => {
                actions.push(RestoreAction {
                    network: record.name.clone(),
                    action: "read the other networks' endpoints".into(),
                    error: Some(e.to_string()),
                });
                return false;
            }
        };
        for (key, endpoint) in record.endpoints.clone() {
            // A runtime's endpoint on its way into its sandbox is the
            // runtime's (and its plugin's) to finish; one whose link and
            // sandbox are gone is dropped below like any other.
            if endpoint.staged && self.staged_in_flight(&endpoint).await.unwrap_or(true) {
                continue;
            }
            let mut report = |action: String, error: Option<String>| {
                actions.push(RestoreAction {
                    network: record.name.clone(),
                    action,
                    error,
                })
            };
            let sandbox = match Sandbox::resolve(&endpoint.sandbox) {
                Ok(s) if s.path == endpoint.netns_path => Some(s),
                _ => None,
            };
            let Some(sandbox) = sandbox else {
                record.endpoints.remove(&key);
                for net in endpoint.ipv4.iter().chain(endpoint.ipv6.iter()) {
                    let _ = record.ipam.release(net.addr());
                }
                changed = true;
                // Its programs went with the namespace; their pins stay
                // unless removed.
                let pins = match endpoint.netns {
                    Some(netns) => crate::datapath::endpoint_hooks::remove_pins(
                        self.datapath().bpf_dir(),
                        netns,
                        endpoint.ifindex,
                    )
                    .map_err(|e| e.to_string()),
                    None => Ok(()),
                };
                report(
                    format!("drop endpoint of vanished sandbox {}", endpoint.sandbox),
                    pins.err(),
                );
                continue;
            };
            // The default routes the store says this endpoint holds.
            let routes = held_routes(&all, record, &endpoint);
            let bpf_dir = self.datapath().bpf_dir();
            let facts =
                match sandbox_link::probe(bpf_dir, record, &endpoint, routes.clone(), true).await {
                    Ok(facts) => facts,
                    Err(e) => {
                        report(
                            format!("repair {} in {}", endpoint.ifname, endpoint.sandbox),
                            Some(e.to_string()),
                        );
                        continue;
                    }
                };
            if let Some(ifindex) = facts.ifindex {
                changed |= !facts.repaired.is_empty();
                for action in facts.repaired {
                    report(action, None);
                }
                if ifindex != endpoint.ifindex || endpoint.netns != Some(sandbox.id) {
                    let mut updated = endpoint.clone();
                    updated.ifindex = ifindex;
                    updated.netns = Some(sandbox.id);
                    record.endpoints.insert(key.clone(), updated);
                    changed = true;
                }
                continue;
            }
            let link = endpoint_link(record, parent.ifindex);
            let mac = match record.options.driver {
                Driver::Macvlan => endpoint.stored_mac().map(netvlan_common::Mac::octets),
                Driver::Ipvlan => None,
            };
            let result = sandbox_link::materialize(
                self.netlink(),
                bpf_dir,
                record,
                link,
                &endpoint.netns_path,
                &endpoint.ifname,
                mac,
                endpoint.ipv4,
                endpoint.ipv6,
                routes,
                &owner_alias(&endpoint.id),
                &temp_link_name(),
                crate::datapath::endpoint_hooks::Loading::start(),
            )
            .await;
            let error = match result {
                Ok(made) => {
                    // The old link's programs went with it: its pins are
                    // stale, and the record must point at the new link.
                    if let (Some(netns), true) = (endpoint.netns, made.ifindex != endpoint.ifindex)
                    {
                        if let Err(e) = crate::datapath::endpoint_hooks::remove_pins(
                            self.datapath().bpf_dir(),
                            netns,
                            endpoint.ifindex,
                        ) {
                            tracing::warn!("{}: {e}", endpoint.sandbox);
                        }
                    }
                    let mut updated = endpoint.clone();
                    updated.ifindex = made.ifindex;
                    updated.netns = Some(sandbox.id);
                    record.endpoints.insert(key.clone(), updated);
                    changed = true;
                    None
                }
                Err(e) => Some(e.to_string()),
            };
            report(
                format!("recreate {} in {}", endpoint.ifname, endpoint.sandbox),
                error,
            );
        }
        changed
    }
}
