//! `netvlan restore`: bring the kernel back in line with the stored state
//! after a reboot (or anything else that deleted links or pins).
//!
//! Idempotent: whatever already exists is left alone, so a second run
//! reports nothing to do. Recreated endpoints keep their addresses and MAC.
//! Endpoints whose sandbox no longer exists are dropped and their addresses
//! freed, as Docker does for containers that are gone.

use serde::Serialize;

use super::{Driver, Manager, NetworkError, NetworkRecord, NewLink, ParentKind};
use crate::{
    datapath::{AttachMode, AttachOutcome},
    netlink::NetlinkError,
    netns,
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
        let mut wires = std::collections::BTreeSet::new();
        for mut record in self.networks()? {
            wires.insert(record.parent.wire.clone());
            let before = actions.len();
            let parent_ok = self.restore_parent(&record, &mut actions).await;
            if parent_ok {
                self.restore_datapath(&record, &mut actions).await;
                let changed = self.restore_endpoints(&mut record, &mut actions).await;
                if changed {
                    self.store().put_network(&record.name, &record)?;
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
            let on_wire: Vec<NetworkRecord> = all
                .iter()
                .filter(|n| n.parent.wire == wire)
                .cloned()
                .collect();
            if let Err(e) = self.sync_wire(&wire, &on_wire).await {
                actions.push(RestoreAction {
                    network: on_wire.first().map(|n| n.name.clone()).unwrap_or_default(),
                    action: format!("enforce the policy on {wire}"),
                    error: Some(e.to_string()),
                });
            }
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
                    let base = self
                        .netlink()
                        .link_by_name(base)
                        .await
                        .map_err(|e| match e {
                            NetlinkError::NoSuchInterface { name } => {
                                NetworkError::UnknownParent(name)
                            }
                            other => other.into(),
                        })?;
                    // Owner-tagged like at create, so crash recovery and a
                    // later `network rm` know it is netvlan's.
                    let options = crate::netlink::LinkOptions {
                        alias: Some(super::journal::owner_alias(&record.id)),
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
                    let alias = super::journal::owner_alias(&record.id);
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
            .attach(&record.parent.wire, AttachMode::Auto)
            .await
        {
            Ok(AttachOutcome::AlreadyAttached(_)) => return,
            Ok(AttachOutcome::Attached { attachment, .. }) => (
                format!(
                    "attach datapath to {} ({} mode)",
                    attachment.ifname, attachment.mode
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

    /// Returns whether the record changed (endpoints dropped).
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
            let mut report = |action: String, error: Option<String>| {
                actions.push(RestoreAction {
                    network: record.name.clone(),
                    action,
                    error,
                })
            };
            if !endpoint.sandbox_alive() {
                record.endpoints.remove(&key);
                for net in endpoint.ipv4.iter().chain(endpoint.ipv6.iter()) {
                    let _ = record.ipam.release(net.addr());
                }
                changed = true;
                report(
                    format!("drop endpoint of vanished sandbox {}", endpoint.sandbox),
                    None,
                );
                continue;
            }
            let ifname = endpoint.ifname.clone();
            let exists = tokio::task::spawn_blocking({
                let path = endpoint.netns_path.clone();
                move || {
                    netns::run_in(&path, move || async move {
                        let netlink = crate::netlink::Netlink::connect()?;
                        Ok::<bool, NetlinkError>(netlink.link_by_name(&ifname).await.is_ok())
                    })
                }
            })
            .await
            .expect("the sandbox thread is joined");
            // The default routes the store says this endpoint holds.
            let routes = super::endpoint::held_routes(&all, record, &endpoint);
            match exists {
                Ok(Ok(true)) => {
                    if routes.is_empty() {
                        continue;
                    }
                    let gateways = describe(&routes);
                    match super::endpoint::add_routes_in(&endpoint, routes).await {
                        Ok(0) => {}
                        Ok(_) => report(
                            format!(
                                "add default route {gateways} on {} in {}",
                                endpoint.ifname, endpoint.sandbox
                            ),
                            None,
                        ),
                        Err(e) => report(
                            format!(
                                "add default route {gateways} on {} in {}",
                                endpoint.ifname, endpoint.sandbox
                            ),
                            Some(e.to_string()),
                        ),
                    }
                    continue;
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    report(
                        format!("check {} in {}", endpoint.ifname, endpoint.sandbox),
                        Some(e.to_string()),
                    );
                    continue;
                }
                Err(e) => {
                    report(format!("enter {}", endpoint.sandbox), Some(e.to_string()));
                    continue;
                }
            }
            let link = super::endpoint::endpoint_link(record, parent.ifindex);
            let mac = match record.options.driver {
                Driver::Macvlan => super::endpoint::parse_stored_mac(&endpoint.mac),
                Driver::Ipvlan => None,
            };
            let result = self
                .materialize(
                    record,
                    link,
                    &endpoint.netns_path,
                    &endpoint.ifname,
                    mac,
                    endpoint.ipv4,
                    endpoint.ipv6,
                    routes,
                    &super::journal::owner_alias(&endpoint.id),
                    &super::endpoint::temp_link_name(),
                )
                .await;
            report(
                format!("recreate {} in {}", endpoint.ifname, endpoint.sandbox),
                result.err().map(|e| e.to_string()),
            );
        }
        changed
    }
}

/// `via 192.168.216.1, via 2001:db8::1` (`via the device` for ipvlan l3).
fn describe(routes: &[super::endpoint::DefaultRoute]) -> String {
    routes
        .iter()
        .map(|(gateway, _)| match gateway {
            Some(gw) => format!("via {gw}"),
            None => "via the device".to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
