//! `netvlan check`: the stored networks compared with the kernel.
//!
//! Read-only. Every difference is one [`Drift`] naming the object, what is
//! wrong and what repairs it; `netvlan restore` repairs every drift whose
//! repair says so (the others need the operator: an interface netvlan did
//! not create, another program on the wire).

use std::collections::BTreeSet;

use netvlan_common::maps::DstKey;
use serde::Serialize;

use super::{
    holds, routes::held_routes, sandbox_link, Driver, Endpoint, Manager, NetworkError,
    NetworkRecord,
};
use crate::{
    datapath::DatapathError,
    sys::{netlink::NetlinkError, sandbox::Sandbox},
};

/// One difference between the store and the kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// The network concerned (`-` for objects no network owns).
    pub network: String,
    /// What kind of drift, stable for scripts (`endpoint_link_missing`...).
    pub kind: &'static str,
    /// The object: an interface, an endpoint, a pin directory.
    pub object: String,
    pub problem: String,
    pub repair: String,
}

const RESTORE: &str = "`netvlan restore`";

impl Manager {
    /// Every drift between the stored networks and the kernel.
    pub async fn check(&self) -> Result<Vec<Drift>, NetworkError> {
        let mut drifts = Vec::new();
        for link in self.orphan_links().await? {
            drifts.push(Drift {
                network: "-".into(),
                kind: "orphan_link",
                object: link.name.clone(),
                problem: format!(
                    "{} carries netvlan's tag {} but no network owns it",
                    link.name,
                    link.alias.unwrap_or_default()
                ),
                repair: format!("{RESTORE} (or `netvlan network prune`) deletes it"),
            });
        }
        let networks = self.networks()?;
        let mut wires = BTreeSet::new();
        for record in &networks {
            let parent_ok = self.check_parent(record, &mut drifts).await?;
            if !parent_ok {
                continue;
            }
            if wires.insert(record.parent.wire.clone()) {
                self.check_wire(&networks, record, &mut drifts).await?;
            }
            for endpoint in record.endpoints.values() {
                self.check_endpoint(&networks, record, endpoint, &mut drifts)
                    .await?;
            }
            self.check_host_access(record, &mut drifts).await?;
        }
        for record in &networks {
            for hold in holds::stale_holds(record) {
                drifts.push(Drift {
                    network: record.name.clone(),
                    kind: "ipam_hold_stale",
                    object: hold.address.to_string(),
                    problem: format!(
                        "{} is {} for Docker's IPAM and no endpoint took it (a dockerd that died between RequestAddress and CreateEndpoint leaves one)",
                        hold.address,
                        hold.held_for()
                    ),
                    repair: format!("{RESTORE} frees it"),
                });
            }
        }
        for status in self.datapath().status().await? {
            if let crate::datapath::AttachmentStatus::Stale {
                pin_dir, reason, ..
            } = status
            {
                drifts.push(stale_pins(pin_dir, reason));
            }
        }
        for (pin_dir, _, reason) in
            crate::datapath::endpoint_hooks::stale_pins(self.datapath().bpf_dir()).await?
        {
            drifts.push(stale_pins(pin_dir, reason));
        }
        Ok(drifts)
    }

    async fn check_parent(
        &self,
        record: &NetworkRecord,
        drifts: &mut Vec<Drift>,
    ) -> Result<bool, NetworkError> {
        match self.netlink().link_by_name(&record.parent.link).await {
            Ok(_) => Ok(true),
            Err(NetlinkError::NoSuchInterface { .. }) => {
                let repair = if record.parent.created {
                    format!("{RESTORE} recreates it")
                } else {
                    format!(
                        "bring {} back (netvlan did not create it), then {RESTORE}",
                        record.parent.link
                    )
                };
                drifts.push(Drift {
                    network: record.name.clone(),
                    kind: "parent_missing",
                    object: record.parent.link.clone(),
                    problem: format!("parent interface {} is missing", record.parent.link),
                    repair,
                });
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The wire's XDP attachment and the endpoints registered in its maps.
    async fn check_wire(
        &self,
        networks: &[NetworkRecord],
        record: &NetworkRecord,
        drifts: &mut Vec<Drift>,
    ) -> Result<(), NetworkError> {
        let wire = &record.parent.wire;
        let on_wire: Vec<&NetworkRecord> =
            networks.iter().filter(|n| &n.parent.wire == wire).collect();
        let names = on_wire
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let link = match self.netlink().link_by_name(wire).await {
            Ok(link) => link,
            Err(NetlinkError::NoSuchInterface { .. }) => {
                drifts.push(Drift {
                    network: record.name.clone(),
                    kind: "wire_missing",
                    object: wire.clone(),
                    problem: format!("interface {wire} (the wire of {names}) is missing"),
                    repair: format!("bring {wire} back, then {RESTORE}"),
                });
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let pins = match self.datapath().attachments(Some(wire)).await {
            Ok(mut list) => list.remove(0).1,
            Err(DatapathError::NotAttached { .. }) => {
                let owned = on_wire.iter().any(|n| n.datapath_owned);
                match link.xdp {
                    // Left alone at create, with a warning: not a drift.
                    Some(_) if !owned => {}
                    Some(xdp) => drifts.push(Drift {
                        network: record.name.clone(),
                        kind: "datapath_replaced",
                        object: wire.clone(),
                        problem: format!(
                            "another XDP program (id {}) runs on {wire} instead of netvlan's",
                            xdp.prog_id
                        ),
                        repair: format!(
                            "remove it (ip link set {wire} xdp off), then {RESTORE}"
                        ),
                    }),
                    None => drifts.push(Drift {
                        network: record.name.clone(),
                        kind: "datapath_missing",
                        object: wire.clone(),
                        problem: format!(
                            "netvlan's XDP program is not attached to {wire}: nothing enforces the policy of {names}"
                        ),
                        repair: format!("{RESTORE} attaches it and writes the policy"),
                    }),
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let registered = crate::datapath::policy_maps::registered(&pins)?;
        for network in &on_wire {
            let vid = super::wire_policy::vlan_of(network);
            for endpoint in network.endpoints.values() {
                let missing: Vec<String> = match network.options.driver {
                    Driver::Macvlan => endpoint
                        .stored_mac()
                        .map(|mac| {
                            (
                                mac,
                                DstKey {
                                    vid,
                                    mac: mac.octets(),
                                },
                            )
                        })
                        .filter(|(_, key)| !registered.found.contains(key))
                        .map(|(mac, key)| {
                            let hidden = if registered.stored.contains(&key) {
                                " (in DST_SLOTS, but its DST_SPILL bit is clear: no frame finds it)"
                            } else {
                                ""
                            };
                            format!("MAC {mac} (VLAN {vid}){hidden}")
                        })
                        .into_iter()
                        .collect(),
                    Driver::Ipvlan => endpoint
                        .ipv4
                        .iter()
                        .chain(endpoint.ipv6.iter())
                        .filter(|net| !registered.ips.contains(&net.addr()))
                        .map(|net| format!("address {}", net.addr()))
                        .collect(),
                };
                for what in missing {
                    drifts.push(Drift {
                        network: network.name.clone(),
                        kind: "map_entry_missing",
                        object: format!("endpoint {}", endpoint.sandbox),
                        problem: format!(
                            "{what} of endpoint {} is not registered in the datapath of {wire}",
                            endpoint.sandbox
                        ),
                        repair: format!("{RESTORE} rewrites the policy maps"),
                    });
                }
            }
        }
        // Registrations neither an endpoint nor the host accounts for.
        let host = self.host_links(&link, &on_wire).await?;
        if let Ok(expected) = super::wire_policy::wire_policy(wire, &on_wire, &host) {
            for stale in registered.stored.difference(&expected.registered) {
                drifts.push(Drift {
                    network: record.name.clone(),
                    kind: "map_entry_stale",
                    object: wire.clone(),
                    problem: format!(
                        "MAC {} (VLAN {}) is registered in the datapath of {wire} but no endpoint or host link has it",
                        netvlan_common::Mac(stale.mac),
                        stale.vid
                    ),
                    repair: format!("{RESTORE} rewrites the policy maps"),
                });
            }
        }
        Ok(())
    }

    async fn check_endpoint(
        &self,
        all: &[NetworkRecord],
        record: &NetworkRecord,
        endpoint: &Endpoint,
        drifts: &mut Vec<Drift>,
    ) -> Result<(), NetworkError> {
        let object = format!("endpoint {}", endpoint.sandbox);
        let mut drift = |kind: &'static str, problem: String, repair: String| {
            drifts.push(Drift {
                network: record.name.clone(),
                kind,
                object: object.clone(),
                problem,
                repair,
            })
        };
        if super::is_staged(endpoint) {
            // A runtime's endpoint not adopted yet (see `staged`): its
            // link is here, or on its way into the sandbox it joined.
            if !self.staged_in_flight(endpoint).await? {
                drift(
                    "staged_link_missing",
                    format!(
                        "the link {} tagged {} is missing",
                        endpoint.ifname,
                        super::owner::owner_alias(&endpoint.id)
                    ),
                    format!("{RESTORE} drops the endpoint and frees its addresses"),
                );
            }
            return Ok(());
        }
        let alive =
            Sandbox::resolve(&endpoint.sandbox).is_ok_and(|s| s.path == endpoint.netns_path);
        if !alive {
            drift(
                "sandbox_gone",
                format!("sandbox {} no longer exists", endpoint.netns_path.display()),
                format!("{RESTORE} drops the endpoint and frees its addresses"),
            );
            return Ok(());
        }
        let routes = held_routes(all, record, endpoint);
        let facts =
            sandbox_link::probe(self.datapath().bpf_dir(), record, endpoint, routes, false).await?;
        let ifname = &endpoint.ifname;
        let Some(ifindex) = facts.ifindex else {
            drift(
                "endpoint_link_missing",
                format!("{ifname} is missing in the sandbox"),
                format!("{RESTORE} recreates it with its addresses and MAC"),
            );
            return Ok(());
        };
        if ifindex != endpoint.ifindex {
            drift(
                "endpoint_record_stale",
                format!(
                    "{ifname} has ifindex {ifindex}, the record says {}",
                    endpoint.ifindex
                ),
                format!("{RESTORE} updates the record"),
            );
        }
        for address in &facts.missing_addresses {
            drift(
                "address_missing",
                format!("address {address} is missing on {ifname}"),
                format!("{RESTORE} adds it"),
            );
        }
        for (gateway, _) in &facts.missing_routes {
            let via = gateway.map_or("the link".to_string(), |g| g.to_string());
            drift(
                "route_missing",
                format!("the default route via {via} on {ifname} is missing"),
                format!("{RESTORE} adds it"),
            );
        }
        let programs = facts.programs;
        if !programs.pinned {
            drift(
                "endpoint_pins_missing",
                format!("the pins of {ifname}'s TC programs are missing"),
                format!("{RESTORE} attaches the programs again"),
            );
        } else if !programs.egress || !programs.ingress {
            let missing: Vec<&str> = [("egress", programs.egress), ("ingress", programs.ingress)]
                .into_iter()
                .filter(|(_, on)| !on)
                .map(|(hook, _)| hook)
                .collect();
            drift(
                "endpoint_programs_missing",
                format!(
                    "netvlan's TC program is not on {ifname} ({})",
                    missing.join(", ")
                ),
                format!("{RESTORE} attaches the programs again"),
            );
        }
        Ok(())
    }
}

fn stale_pins(pin_dir: std::path::PathBuf, reason: String) -> Drift {
    Drift {
        network: "-".into(),
        kind: "stale_pins",
        object: pin_dir.display().to_string(),
        problem: format!("pins whose programs no longer run ({reason})"),
        repair: format!("{RESTORE} (or `netvlan datapath prune`) removes them"),
    }
}
