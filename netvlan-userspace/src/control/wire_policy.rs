//! From networks to the datapath's per-wire policy.
//!
//! Several networks can share one wire (macvlan networks on one parent,
//! VLAN networks on one trunk). The wire's policy is recomputed from all of
//! them, as they will be after the command, and written before the command
//! commits, so a failure rolls back with it.

use super::{
    error::UndoFailure,
    options::{parse_policy_settings, OptionError},
    Driver, Manager, NetworkError, NetworkRecord, Parent, ParentKind, PolicyOptions,
};
use crate::datapath::{
    policy_maps::{MacGuard, WirePolicy},
    DatapathError,
};
use netvlan_common::maps::{DstKey, MAC_LEARN_BUDGET};

/// The networks on `wire` once `changed` is written (or removed, when
/// `removed` is true).
pub(super) fn wire_after<'a>(
    all: &'a [NetworkRecord],
    changed: &'a NetworkRecord,
    removed: bool,
) -> Vec<&'a NetworkRecord> {
    let mut out: Vec<&NetworkRecord> = all
        .iter()
        .filter(|n| n.name != changed.name && n.parent.wire == changed.parent.wire)
        .collect();
    if !removed {
        out.push(changed);
    }
    out
}

/// Only ipvlan's unknown-destination drop looks at addresses; the host's
/// own on the wire and parents stay reachable under it.
fn matches_by_ip(records: &[&NetworkRecord]) -> bool {
    records
        .iter()
        .any(|r| r.options.driver == Driver::Ipvlan && r.options.policy.unknown_dst_drop)
}

/// The host's own links on a wire, as the kernel reports them.
#[derive(Clone, Debug, Default)]
pub(super) struct HostLinks {
    /// The wire's and the parents' MACs.
    pub macs: Vec<[u8; 6]>,
    /// Their addresses (looked up only when a network matches by IP).
    pub addresses: Vec<std::net::IpAddr>,
}

/// The policy of `wire` from all the networks on it and the host's links
/// there: pure, so every rule of combining networks is unit-tested.
pub(super) fn wire_policy(
    wire: &str,
    records: &[&NetworkRecord],
    host: &HostLinks,
) -> Result<WirePolicy, OptionError> {
    let mut policy = WirePolicy::default();
    // The host's own MACs are destinations untagged and on every VLAN a
    // network of the wire uses (its VLAN links share the wire's MAC).
    let vlans: std::collections::BTreeSet<u16> = std::iter::once(0)
        .chain(records.iter().map(|r| vlan_of(r)))
        .collect();
    for vid in vlans {
        policy
            .registered
            .extend(host.macs.iter().map(|mac| DstKey { vid, mac: *mac }));
    }
    if matches_by_ip(records) {
        policy.registered_ips.extend(host.addresses.iter().copied());
    }
    for record in records {
        let vid = vlan_of(record);
        policy.gateway_ips.extend(
            record
                .ipam
                .config()
                .subnets()
                .iter()
                .filter_map(|s| s.gateway),
        );
        policy.allowed_vlans.insert(vid);
        if let Some(extra) = &record.options.policy.vlans {
            policy.vlan_filter = true;
            policy.allowed_vlans.extend(extra.iter().copied());
        }
        if record.options.policy.unknown_dst_drop {
            policy.unknown_dst_drop_vlans.insert(vid);
        }
        policy
            .denied
            .extend(record.options.policy.mac_deny.iter().copied());
        if let Some(limit) = record.options.policy.max_macs {
            // Networks sharing a VLAN of the wire share its guard: the
            // strictest limit wins, and it only counts if all say so.
            let count_only = record.options.policy.max_macs_count_only;
            policy
                .mac_guards
                .entry(vid)
                .and_modify(|g| {
                    g.limit = g.limit.min(limit);
                    g.count_only &= count_only;
                })
                .or_insert(MacGuard { limit, count_only });
        }
        match record.options.driver {
            Driver::Macvlan => {
                for endpoint in record.endpoints.values() {
                    if let Some(mac) = endpoint.stored_mac().map(netvlan_common::Mac::octets) {
                        policy.registered.insert(DstKey { vid, mac });
                    }
                }
            }
            // Endpoints share the parent's MAC: their addresses are what
            // tells them apart.
            Driver::Ipvlan => {
                if record.options.policy.unknown_dst_drop {
                    policy.unknown_ip_drop_vlans.insert(vid);
                }
                for endpoint in record.endpoints.values() {
                    let addresses = endpoint.ipv4.iter().chain(endpoint.ipv6.iter());
                    policy
                        .registered_ips
                        .extend(addresses.map(|net| net.addr()));
                }
            }
        }
    }
    let budget: u32 = policy.mac_guards.values().map(|g| g.limit).sum();
    if budget > MAC_LEARN_BUDGET {
        return Err(OptionError::LearnBudget {
            wire: wire.to_string(),
            budget,
        });
    }
    Ok(policy)
}

/// The outer VLAN of a network's traffic on its wire (0 = untagged).
pub(super) fn vlan_of(record: &NetworkRecord) -> u16 {
    vlan_of_parent(&record.parent)
}

fn vlan_of_parent(parent: &Parent) -> u16 {
    match parent.kind {
        ParentKind::Vlan { vid, .. } => vid,
        _ => 0,
    }
}

/// How far a policy setting reaches in the datapath.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// One deny list per wire.
    Wire,
    /// One flag word and one MAC-sprawl guard per VLAN of the wire.
    Vlan,
}

/// The settings of `policy` that are in force (not off), with their reach.
/// `vlans=` is not among them: it only adds VLANs to the allow-list, and
/// every network's own VLAN stays allowed.
fn active(policy: &PolicyOptions) -> Vec<(&'static str, Reach)> {
    let mut out = Vec::new();
    if policy.unknown_dst_drop {
        out.push(("unknown_dst", Reach::Vlan));
    }
    if !policy.mac_deny.is_empty() {
        out.push(("mac_deny", Reach::Wire));
    }
    if policy.max_macs.is_some() {
        out.push(("max_macs", Reach::Vlan));
    }
    out
}

/// The other networks a setting of `reach` on `parent` would apply to.
fn reached<'a>(
    others: &'a [NetworkRecord],
    name: &str,
    parent: &Parent,
    reach: Reach,
) -> Vec<&'a NetworkRecord> {
    others
        .iter()
        .filter(|n| n.name != name && n.parent.wire == parent.wire)
        .filter(|n| reach == Reach::Wire || vlan_of(n) == vlan_of_parent(parent))
        .collect()
}

fn scope_text(parent: &Parent, reach: Reach) -> String {
    match (reach, vlan_of_parent(parent)) {
        (Reach::Wire, _) => format!("parent {} (one deny list per parent)", parent.wire),
        (Reach::Vlan, 0) => format!("the untagged traffic of parent {}", parent.wire),
        (Reach::Vlan, vid) => format!("VLAN {vid} of parent {}", parent.wire),
    }
}

/// Refuses a policy that the datapath would also enforce on other
/// networks: `keys` (settings of `network`, on `parent`) must stay inside it.
/// `existing` are all other networks; with `creating`, their settings that
/// would reach the new network are refused too.
pub(super) fn check_policy_scope(
    existing: &[NetworkRecord],
    network: &str,
    parent: &Parent,
    keys: &[&str],
    policy: &PolicyOptions,
    creating: bool,
) -> Result<(), NetworkError> {
    for (key, reach) in active(policy) {
        if !keys.contains(&key) {
            continue;
        }
        let others = reached(existing, network, parent, reach);
        if !others.is_empty() {
            return Err(NetworkError::PolicyReachesOthers {
                network: network.into(),
                setting: key.into(),
                others: others
                    .iter()
                    .map(|n| format!("'{}'", n.name))
                    .collect::<Vec<_>>()
                    .join(", "),
                scope: scope_text(parent, reach),
            });
        }
    }
    if creating {
        for other in existing.iter().filter(|n| n.parent.wire == parent.wire) {
            for (key, reach) in active(&other.options.policy) {
                let shares = reach == Reach::Wire || vlan_of(other) == vlan_of_parent(parent);
                if shares {
                    return Err(NetworkError::PolicyWouldReach {
                        network: network.into(),
                        other: other.name.clone(),
                        setting: key.into(),
                        scope: scope_text(parent, reach),
                    });
                }
            }
        }
    }
    Ok(())
}

impl Manager {
    /// The host's own links on the wire: the wire and each parent, once
    /// (a parent that is gone has nothing to register), with their
    /// addresses when a network matches by IP.
    pub(super) async fn host_links(
        &self,
        wire_link: &crate::sys::netlink::LinkInfo,
        records: &[&NetworkRecord],
    ) -> Result<HostLinks, NetworkError> {
        let by_ip = matches_by_ip(records);
        let mut links = vec![wire_link.clone()];
        let mut looked_up = std::collections::BTreeSet::from([wire_link.name.as_str()]);
        for record in records {
            if looked_up.insert(record.parent.link.as_str()) {
                if let Ok(parent) = self.netlink().link_by_name(&record.parent.link).await {
                    links.push(parent);
                }
            }
            // A host-access shim is the host's too.
            if let Some(shim) = &record.host_access.link {
                if let Ok(shim) = self.netlink().link_by_name(shim).await {
                    links.push(shim);
                }
            }
        }
        let mut host = HostLinks::default();
        for link in links {
            host.macs.extend(link.mac);
            if by_ip {
                host.addresses
                    .extend(self.netlink().addresses(link.ifindex).await?);
            }
        }
        Ok(host)
    }

    /// Writes the policy of `wire` computed from `records` (all networks on
    /// it). A wire without netvlan's datapath (another XDP program owns it)
    /// has nothing to write.
    pub(super) async fn sync_wire(
        &self,
        wire: &str,
        records: &[&NetworkRecord],
    ) -> Result<(), NetworkError> {
        let wire_link = match self.netlink().link_by_name(wire).await {
            Ok(link) => link,
            // The wire is gone (placeholder deleted): nothing to enforce.
            Err(crate::sys::netlink::NetlinkError::NoSuchInterface { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let host = self.host_links(&wire_link, records).await?;
        let policy = wire_policy(wire, records, &host)?;
        match self.datapath().apply_policy(wire, &policy).await {
            Ok(_) => Ok(()),
            // Another XDP program holds the wire (`create` warned of it):
            // nothing of netvlan's to write.
            Err(DatapathError::NotAttached { .. }) if wire_link.xdp.is_some() => Ok(()),
            Err(DatapathError::NotAttached { .. }) if records.is_empty() => Ok(()),
            // Networks use the wire and nothing enforces their policy
            // (detached by hand, pins removed): attach again, or fail.
            Err(DatapathError::NotAttached { .. }) => {
                tracing::warn!("netvlan's datapath was missing on {wire}; attaching it again");
                // At the hook the wire's networks asked for, if any did.
                let hook =
                    super::options::wire_hook(super::on_wires(records.iter().copied()), wire)
                        .map_or(crate::datapath::Hook::Auto, |(hook, _)| hook);
                self.datapath()
                    .attach_at(wire, crate::datapath::AttachMode::Auto, hook)
                    .await?;
                self.datapath().apply_policy(wire, &policy).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the stored policy again on every wire of `networks` that runs
    /// netvlan's datapath, attaching nothing (recovery: a wire without it is
    /// `restore`'s business). Returns the wires whose maps held something
    /// else.
    pub(super) async fn rewrite_attached_policies(
        &self,
        networks: &[NetworkRecord],
    ) -> Result<Vec<String>, NetworkError> {
        let failed = |wire: &str, e: NetworkError| {
            NetworkError::RecoveryFailed(Box::new(UndoFailure::new(
                format!("rewriting the policy maps of {wire}"),
                Box::new(e),
            )))
        };
        let wires: std::collections::BTreeSet<&str> =
            networks.iter().map(|n| n.parent.wire.as_str()).collect();
        let mut rewritten = Vec::new();
        for wire in wires {
            let on_wire: Vec<&NetworkRecord> =
                networks.iter().filter(|n| n.parent.wire == wire).collect();
            match self.rewrite_if_attached(wire, &on_wire).await {
                Ok(true) => rewritten.push(wire.to_string()),
                Ok(false) => {}
                Err(e) => return Err(failed(wire, e)),
            }
        }
        Ok(rewritten)
    }

    /// [`Self::rewrite_attached_policies`] for one wire: whether its maps
    /// changed.
    async fn rewrite_if_attached(
        &self,
        wire: &str,
        records: &[&NetworkRecord],
    ) -> Result<bool, NetworkError> {
        let wire_link = match self.netlink().link_by_name(wire).await {
            Ok(link) => link,
            Err(crate::sys::netlink::NetlinkError::NoSuchInterface { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        match self.datapath().attachments(Some(wire)).await {
            Ok(_) => {}
            // Detached, stale or another program's: `restore`'s business.
            Err(DatapathError::NotAttached { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let host = self.host_links(&wire_link, records).await?;
        let policy = wire_policy(wire, records, &host)?;
        Ok(self.datapath().apply_policy(wire, &policy).await?)
    }

    /// Fails unless netvlan's datapath runs on `wire`: a policy that
    /// nothing enforces must never be reported as enforced.
    pub(super) async fn require_datapath(
        &self,
        network: &str,
        wire: &str,
    ) -> Result<(), NetworkError> {
        match self.datapath().attachments(Some(wire)).await {
            Ok(_) => Ok(()),
            Err(DatapathError::NotAttached { .. }) => {
                let other = self
                    .netlink()
                    .link_by_name(wire)
                    .await
                    .ok()
                    .and_then(|l| l.xdp)
                    .map(|x| format!(", it runs another XDP program (id {})", x.prog_id))
                    .unwrap_or_default();
                Err(NetworkError::NotEnforced {
                    network: network.into(),
                    reason: format!("netvlan's datapath is not attached to {wire}{other}"),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `netvlan policy set NETWORK KEY=VALUE...`: changes a network's
    /// policy and enforces it at once.
    pub async fn set_policy(
        &self,
        network: &str,
        settings: &[String],
    ) -> Result<NetworkRecord, NetworkError> {
        let (mut record, others) = self.network_among(network)?;
        let raw = parse_policy_settings(settings)?;
        let previous = record.clone();
        record.options.policy.update(&raw)?;
        let keys: Vec<&str> = raw.keys().map(String::as_str).collect();
        check_policy_scope(
            &others,
            &record.name,
            &record.parent,
            &keys,
            &record.options.policy,
            false,
        )?;
        record.options.raw.extend(raw);
        let synced = match self
            .sync_wire(&record.parent.wire, &wire_after(&others, &record, false))
            .await
        {
            Ok(()) => {
                self.require_datapath(&record.name, &record.parent.wire)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            let _ = self
                .sync_wire(
                    &previous.parent.wire,
                    &wire_after(&others, &previous, false),
                )
                .await;
            return Err(e);
        }
        if let Err(e) = self.store().put_network(&record.name, &record) {
            // Put the old policy back in force before reporting.
            let _ = self
                .sync_wire(
                    &previous.parent.wire,
                    &wire_after(&others, &previous, false),
                )
                .await;
            return Err(e.into());
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::fixture::{endpoint, network};

    const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

    fn on(vid: u16, mac: [u8; 6]) -> DstKey {
        DstKey { vid, mac }
    }

    fn on_vlan(mut record: NetworkRecord, vid: u16) -> NetworkRecord {
        record.parent.link = format!("eth0.{vid}");
        record.parent.kind = ParentKind::Vlan {
            base: "eth0".into(),
            vid,
        };
        record
    }

    #[test]
    fn an_endpoint_is_registered_on_its_networks_vlan_and_the_host_on_every_vlan_in_use() {
        let mut tagged = on_vlan(network("v20", Driver::Macvlan, "10.20.0.0/24", &[]), 20);
        tagged.endpoints.insert(
            "web".into(),
            endpoint("web", "02:42:0a:14:00:02", "10.20.0.2/24"),
        );
        let mut plain = network("lan", Driver::Macvlan, "10.1.0.0/24", &["vlans=30"]);
        plain.endpoints.insert(
            "db".into(),
            endpoint("db", "02:42:0a:01:00:03", "10.1.0.3/24"),
        );
        let other = on_vlan(network("v40", Driver::Ipvlan, "10.40.0.0/24", &[]), 40);
        let policy = wire_policy("eth0", &[&tagged, &plain, &other], &host()).unwrap();
        assert_eq!(
            policy.registered,
            [
                on(0, HOST_MAC),
                on(20, HOST_MAC),
                on(40, HOST_MAC),
                on(20, [0x02, 0x42, 10, 20, 0, 2]),
                on(0, [0x02, 0x42, 10, 1, 0, 3]),
            ]
            .into(),
            "a VLAN only allowed (vlans=30) has no network, so no host registration"
        );
    }

    fn host() -> HostLinks {
        HostLinks {
            macs: vec![HOST_MAC],
            addresses: vec!["10.1.0.254".parse().unwrap()],
        }
    }

    #[test]
    fn macvlan_endpoints_and_the_host_are_registered_by_mac() {
        let mut lan = network("lan", Driver::Macvlan, "10.1.0.0/24", &["unknown_dst=drop"]);
        lan.endpoints.insert(
            "web".into(),
            endpoint("web", "02:42:0a:01:00:02", "10.1.0.2/24"),
        );
        let policy = wire_policy("eth0", &[&lan], &host()).unwrap();
        assert_eq!(
            policy.registered,
            [on(0, HOST_MAC), on(0, [0x02, 0x42, 10, 1, 0, 2])].into()
        );
        assert_eq!(policy.unknown_dst_drop_vlans, [0].into());
        assert!(
            policy.registered_ips.is_empty(),
            "macvlan never matches by IP"
        );
        assert_eq!(policy.gateway_ips, ["10.1.0.1".parse().unwrap()].into());
    }

    #[test]
    fn ipvlan_with_unknown_dst_drop_registers_addresses_and_the_hosts() {
        let mut lan = network("lan", Driver::Ipvlan, "10.1.0.0/24", &["unknown_dst=drop"]);
        lan.endpoints
            .insert("web".into(), endpoint("web", "", "10.1.0.2/24"));
        let policy = wire_policy("eth0", &[&lan], &host()).unwrap();
        assert_eq!(
            policy.registered_ips,
            ["10.1.0.2".parse().unwrap(), "10.1.0.254".parse().unwrap()].into()
        );
        assert_eq!(policy.unknown_ip_drop_vlans, [0].into());
        assert_eq!(
            policy.registered,
            [on(0, HOST_MAC)].into(),
            "ipvlan endpoints share the host's MAC"
        );
    }

    #[test]
    fn networks_sharing_a_vlan_share_its_guard_and_the_strictest_limit_wins() {
        let a = network(
            "a",
            Driver::Macvlan,
            "10.1.0.0/24",
            &["max_macs=10", "max_macs_action=count"],
        );
        let b = network("b", Driver::Macvlan, "10.2.0.0/24", &["max_macs=4"]);
        let policy = wire_policy("eth0", &[&a, &b], &host()).unwrap();
        assert_eq!(
            policy.mac_guards[&0],
            MacGuard {
                limit: 4,
                count_only: false
            },
            "counting only if every network says so"
        );
    }

    #[test]
    fn a_vlan_list_turns_the_filter_on_for_the_wire() {
        let a = network("a", Driver::Macvlan, "10.1.0.0/24", &["vlans=20,30"]);
        let b = network("b", Driver::Macvlan, "10.2.0.0/24", &[]);
        let policy = wire_policy("eth0", &[&a, &b], &host()).unwrap();
        assert!(policy.vlan_filter);
        assert_eq!(policy.allowed_vlans, [0, 20, 30].into());
    }

    #[test]
    fn guards_over_the_learning_budget_are_refused_naming_the_wire() {
        let half = (MAC_LEARN_BUDGET / 2 + 1).to_string();
        let a = network(
            "a",
            Driver::Macvlan,
            "10.1.0.0/24",
            &[&format!("max_macs={half}")],
        );
        let mut b = network(
            "b",
            Driver::Macvlan,
            "10.2.0.0/24",
            &[&format!("max_macs={half}")],
        );
        b.parent.link = "eth0.20".into();
        b.parent.kind = ParentKind::Vlan {
            base: "eth0".into(),
            vid: 20,
        };
        let err = wire_policy("eth0", &[&a, &b], &host()).unwrap_err();
        assert!(err.to_string().contains("eth0"), "{err}");
    }
}
