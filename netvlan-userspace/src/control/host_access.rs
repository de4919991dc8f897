//! Host access (`-o host_access=off|on|shim|ebpf`): the namespace holding
//! a network's parent reaching its endpoints, and they it.
//!
//! The kernel keeps a parent and its macvlan children apart. `shim` is
//! the classic recipe done by netvlan: a bridge-mode macvlan link on the
//! parent ("the shim", named `nvh-` and the network id's first 8 digits,
//! tagged with the network's owner alias), an address per family of the
//! network on it (a /32 or /128, reserved from the network's IPAM or given
//! with `--host-ip`, so no endpoint ever gets it), a host route (/32,
//! /128) to every endpoint address through it, kept in sync by connect
//! and disconnect, and `arp_ignore=1`/`arp_announce=2` on the parent and
//! the shim so neither answers ARP for the other's addresses. IPv6 on the
//! shim skips duplicate address detection (`accept_dad=0` on the link,
//! `IFA_F_NODAD` on the address): the address is netvlan's own, reserved
//! in IPAM, and usable at once instead of tentative for a second or more.
//!
//! `ebpf` needs no extra link: the hairpin program at TC egress of the
//! parent (`datapath::host_access`) hands frames between the host and the
//! endpoints. The host uses its own address on the parent in the subnet
//! when it has one (source `parent`, never removed), else one netvlan
//! reserves from IPAM (or `--host-ip`) and adds to the parent, with the
//! subnet's prefix, and removes again with `off` or `rm`.
//!
//! `on` is the mode users get when they only ask for host access: the
//! `ebpf` hairpin where it can work (macvlan except passthru, ipvlan l2),
//! else `shim` (no extra link, no second address on the segment, so no
//! ARP flux; `cargo xtask bench` measures the two side by side).
//!
//! Every kernel change goes through the journal ([`Operation`]), so a
//! failing command undoes it and a killed one is recovered; [`Manager::
//! ensure_host_access`] is idempotent, so `restore` recreates only what is
//! missing.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{
    check::Drift,
    driver::Driver,
    error::UndoFailure,
    operation::{Operation, OperationLog},
    owner::owner_alias,
    Manager, NetworkError, NetworkRecord,
};
use crate::{
    ipam::{self, Family, Request},
    keyword::{keyword_text, Keyword},
    sys::{
        netlink::{IpvlanMode, MacvlanMode, NetlinkError, NewLink},
        sysctl,
    },
};

/// `-o host_access=`: as asked for, and (never `on`) as in effect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostAccessMode {
    /// The kernel's isolation, as in Docker.
    #[default]
    Off,
    /// The better of the two modes that works for the network.
    On,
    /// A macvlan link of the host's on the parent.
    Shim,
    /// A TC hairpin on the parent, no extra link.
    Ebpf,
}

impl Keyword for HostAccessMode {
    const WHAT: &'static str = "host access mode";
    const ALL: &'static [Self] = &[Self::Off, Self::On, Self::Shim, Self::Ebpf];
    fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On => "on",
            Self::Shim => "shim",
            Self::Ebpf => "ebpf",
        }
    }
}
keyword_text!(HostAccessMode);

/// Who a host address belongs to, and so what turning host access off undoes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressSource {
    /// Picked by netvlan from the network's IPAM (released with it).
    Reserved,
    /// Given with `--host-ip` (held in IPAM, released with it).
    Given,
    /// Already on the parent: never added nor removed by netvlan.
    Parent,
}

/// An address the endpoints reach the host at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAddress {
    /// With the prefix length it has on its link (/32, /128 on the shim,
    /// the subnet's on the parent).
    pub address: IpNet,
    pub source: AddressSource,
    /// Held in the network's IPAM by host access (released with it).
    #[serde(default)]
    pub held: bool,
}

/// A network's host access as stored (`NetworkRecord::host_access`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostAccess {
    /// The mode in effect: `off`, `shim` or `ebpf` (`on` resolved); the
    /// one asked for is `options.host_access`.
    pub mode: HostAccessMode,
    pub addresses: Vec<HostAddress>,
    /// The shim link (shim mode).
    pub link: Option<String>,
    /// `arp_ignore` and `arp_announce` of the parent before netvlan set
    /// them, put back when the last network of the parent turns host
    /// access off.
    #[serde(default)]
    pub parent_arp: Option<(String, String)>,
}

impl HostAccess {
    pub fn is_on(&self) -> bool {
        self.mode != HostAccessMode::Off
    }

    /// The host's address of `family`, as endpoints reach it.
    pub fn address_of(&self, family: Family) -> Option<IpAddr> {
        self.addresses
            .iter()
            .map(|a| a.address.addr())
            .find(|a| Family::of(a) == family)
    }
}

/// The shim link of network `id`: unique per network, 12 characters.
pub(crate) fn shim_name(id: &str) -> String {
    format!("nvh-{}", &id[..8])
}

const ARP_IGNORE: &str = "arp_ignore";
const ARP_ANNOUNCE: &str = "arp_announce";

/// A refusal that names the network and why.
fn refused(record: &NetworkRecord, reason: impl Into<String>) -> NetworkError {
    NetworkError::HostAccessRefused {
        network: record.name.clone(),
        reason: reason.into(),
    }
}

/// Every family the network has a subnet of, IPv4 first.
fn families(record: &NetworkRecord) -> Vec<Family> {
    [Family::V4, Family::V6]
        .into_iter()
        .filter(|f| record.ipam.config().has_family(*f))
        .collect()
}

/// `requested` resolved to the mode that will run on `record`, or a
/// clear refusal naming why it cannot.
pub(crate) fn resolve_mode(
    record: &NetworkRecord,
    requested: HostAccessMode,
) -> Result<HostAccessMode, NetworkError> {
    if requested == HostAccessMode::Off {
        return Ok(HostAccessMode::Off);
    }
    if record.options.parent.is_none() {
        return Err(refused(
            record,
            "an internal network has no parent on a LAN, so there is no host side to reach",
        ));
    }
    if record.internal {
        return Err(refused(
            record,
            "the network is internal (--internal): its endpoints are kept off the host",
        ));
    }
    let macvlan_mode = record.options.macvlan_mode.unwrap_or_default();
    let ipvlan_mode = record.options.ipvlan_mode.unwrap_or_default();
    let ebpf = match record.options.driver {
        Driver::Macvlan if macvlan_mode == MacvlanMode::Passthru => Err(format!(
            "macvlan_mode=passthru gives the parent to its one endpoint; there is no host side left on {}",
            record.parent.link
        )),
        Driver::Macvlan => Ok(()),
        Driver::Ipvlan if ipvlan_mode == IpvlanMode::L2 => Ok(()),
        Driver::Ipvlan => Err(format!(
            "ipvlan_mode={ipvlan_mode} routes without neighbour resolution on the parent, so the hairpin has nothing to hand over; use ipvlan_mode=l2"
        )),
    };
    let shim = match record.options.driver {
        Driver::Macvlan if macvlan_mode == MacvlanMode::Bridge => Ok(()),
        Driver::Macvlan => Err(format!(
            "macvlan_mode={macvlan_mode} keeps endpoints from reaching a sibling link on the parent; the shim needs macvlan_mode=bridge (or use host_access=ebpf)"
        )),
        Driver::Ipvlan => Err(
            "a shim for ipvlan networks is not available in this build; use host_access=ebpf (ipvlan_mode=l2)"
                .to_string(),
        ),
    };
    match requested {
        HostAccessMode::Ebpf => ebpf.map(|()| HostAccessMode::Ebpf),
        HostAccessMode::Shim => shim.map(|()| HostAccessMode::Shim),
        HostAccessMode::On => match (ebpf, shim) {
            (Ok(()), _) => Ok(HostAccessMode::Ebpf),
            (Err(_), Ok(())) => Ok(HostAccessMode::Shim),
            (Err(e), Err(_)) => Err(e),
        },
        HostAccessMode::Off => Ok(HostAccessMode::Off),
    }
    .map_err(|reason| refused(record, format!("host_access={requested}: {reason}")))
}

/// `--host-ip IP` flags: one per family at most.
pub(crate) fn parse_host_ips(flags: &[String]) -> Result<Vec<IpAddr>, NetworkError> {
    let mut out: Vec<IpAddr> = Vec::new();
    for flag in flags {
        let ip = ipam::parse_ip(flag)?;
        if out.iter().any(|o| Family::of(o) == Family::of(&ip)) {
            return Err(NetworkError::Invalid(super::InvalidRequest::HostIpTwice(
                flag.clone(),
            )));
        }
        out.push(ip);
    }
    Ok(out)
}

/// Plans the host access of `record` for `mode` (resolved): its addresses,
/// reserved in `record.ipam` (the previous ones released first; a family
/// keeps its previous address unless `given` names another; in ebpf mode
/// an address of the parent's in the subnet, `on_parent`, comes first),
/// and the shim's name. Touches no kernel object.
pub(crate) fn plan(
    record: &mut NetworkRecord,
    mode: HostAccessMode,
    given: &[IpAddr],
    on_parent: &[IpNet],
) -> Result<HostAccess, NetworkError> {
    let previous = std::mem::take(&mut record.host_access.addresses);
    for address in &previous {
        if address.held {
            let _ = record.ipam.release(address.address.addr());
        }
    }
    let ebpf = mode == HostAccessMode::Ebpf;
    let parent_address = |ip: &IpAddr| on_parent.iter().any(|n| n.addr() == *ip);
    let mut planned = HostAccess {
        mode,
        addresses: Vec::new(),
        link: None,
        parent_arp: record.host_access.parent_arp.clone(),
    };
    if mode == HostAccessMode::Off {
        if let Some(ip) = given.first() {
            return Err(refused(
                record,
                format!("--host-ip {ip} needs host access on (-o host_access=on|shim|ebpf)"),
            ));
        }
        planned.parent_arp = None;
        return Ok(planned);
    }
    for ip in given {
        if record.ipam.config().subnet_of(ip).is_none() {
            let subnets = record
                .ipam
                .config()
                .subnets()
                .iter()
                .map(|s| s.subnet.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(refused(
                record,
                format!("--host-ip {ip} is outside the network's subnets ({subnets})"),
            ));
        }
    }
    for family in families(record) {
        let own = on_parent
            .iter()
            .map(|n| n.addr())
            .filter(|a| Family::of(a) == family && record.ipam.config().subnet_of(a).is_some())
            .find(|a| !record.ipam.is_allocated(a));
        let (ip, source) = match given.iter().find(|ip| Family::of(ip) == family) {
            Some(ip) if ebpf && parent_address(ip) => (*ip, AddressSource::Parent),
            Some(ip) => {
                let ip = record
                    .ipam
                    .allocate(Request::Exact(*ip))
                    .map_err(|e| refused(record, format!("--host-ip {ip}: {e}")))?;
                (ip, AddressSource::Given)
            }
            None if ebpf && own.is_some() => (own.expect("checked"), AddressSource::Parent),
            None => match previous.iter().find(|a| {
                Family::of(&a.address.addr()) == family && a.source != AddressSource::Parent
            }) {
                Some(kept) => {
                    let ip = record
                        .ipam
                        .allocate(Request::Exact(kept.address.addr()))
                        .map_err(|e| refused(record, format!("host address: {e}")))?;
                    (ip, kept.source)
                }
                None => {
                    let ip = record
                        .ipam
                        .allocate(Request::Any(family))
                        .map_err(|e| refused(record, format!("no address for the host: {e}")))?;
                    (ip, AddressSource::Reserved)
                }
            },
        };
        // On the shim a host address; on the parent the subnet's prefix.
        let prefix = match (ebpf, ip) {
            (false, IpAddr::V4(_)) => 32,
            (false, IpAddr::V6(_)) => 128,
            (true, _) => record
                .ipam
                .config()
                .subnet_of(&ip)
                .map_or(32, |s| s.subnet.prefix_len()),
        };
        let prefix = match source {
            AddressSource::Parent => on_parent
                .iter()
                .find(|n| n.addr() == ip)
                .map_or(prefix, |n| n.prefix_len()),
            _ => prefix,
        };
        // The parent's own address, unless reserved already (an
        // aux-address), is held too, so no endpoint is given it.
        let held = match source {
            AddressSource::Parent => {
                let free = record
                    .ipam
                    .config()
                    .subnet_of(&ip)
                    .is_some_and(|s| s.reserved_reason(&ip).is_none())
                    && !record.ipam.is_allocated(&ip);
                free && record.ipam.allocate(Request::Exact(ip)).is_ok()
            }
            _ => true,
        };
        planned.addresses.push(HostAddress {
            address: IpNet::new(ip, prefix).expect("a valid prefix"),
            source,
            held,
        });
    }
    planned.link = (mode == HostAccessMode::Shim).then(|| shim_name(&record.id));
    if mode != HostAccessMode::Shim {
        planned.parent_arp = None;
    }
    Ok(planned)
}

/// What `network inspect` shows under `HostAccess`.
pub(crate) fn inspect(record: &NetworkRecord) -> serde_json::Value {
    let access = &record.host_access;
    let mut out = serde_json::json!({
        "Mode": access.mode.to_string(),
        "Requested": record.options.host_access.to_string(),
        "Addresses": access
            .addresses
            .iter()
            .map(|a| a.address.addr().to_string())
            .collect::<Vec<_>>(),
    });
    if let Some(link) = &access.link {
        out["Link"] = serde_json::json!(link);
    }
    out
}

impl Manager {
    /// `netvlan network update NETWORK -o host_access=MODE [--host-ip IP]`:
    /// all or nothing. The old mode's objects are removed, the new mode's
    /// made (journalled), and the record committed; a failure undoes the
    /// new mode and puts the old one back.
    pub async fn update(
        &self,
        name: &str,
        settings: &[String],
        host_ips: &[String],
    ) -> Result<NetworkRecord, NetworkError> {
        let old = self.network(name)?;
        let requested = match super::options::parse_update_settings(settings)? {
            Ok(Some(mode)) => mode,
            Ok(None) if !host_ips.is_empty() => old.options.host_access,
            Ok(None) => {
                return Err(NetworkError::CannotUpdate {
                    network: old.name,
                    reason: "nothing to change: give -o host_access=MODE and/or --host-ip IP"
                        .into(),
                })
            }
            Err(fixed) => {
                return Err(NetworkError::CannotUpdate {
                    network: old.name,
                    reason: format!(
                        "-o {fixed} cannot change after create (`network update` changes host_access; policy settings change with `netvlan policy set`)"
                    ),
                })
            }
        };
        let given = parse_host_ips(host_ips)?;
        let others: Vec<NetworkRecord> = self
            .networks()?
            .into_iter()
            .filter(|n| n.name != old.name)
            .collect();
        let mut new = old.clone();
        let mode = resolve_mode(&new, requested)?;
        // What the parent holds of its own: not what the old mode gave it.
        let mut on_parent = self.parent_addresses(&new.parent.link).await?;
        if old.host_access.mode == HostAccessMode::Ebpf {
            on_parent.retain(|n| {
                !old.host_access
                    .addresses
                    .iter()
                    .any(|a| a.address == *n && a.source != AddressSource::Parent)
            });
        }
        new.host_access = plan(&mut new, mode, &given, &on_parent)?;
        if new.host_access.mode == HostAccessMode::Shim {
            new.host_access.parent_arp = self.parent_arp_before(&old, &others)?;
        }
        new.options.host_access = requested;
        new.options
            .raw
            .insert("host_access".into(), requested.to_string());

        let failures = self.teardown_host_access(&old, &others).await;
        if let Some(first) = failures.into_iter().next() {
            let _ = self.ensure_host_access(&old, None).await;
            return Err(NetworkError::CannotUpdate {
                network: old.name,
                reason: format!("removing the current host access failed: {first}"),
            });
        }
        let mut log = OperationLog::new(self.store());
        let mut all: Vec<NetworkRecord> = others.clone();
        all.push(new.clone());
        let made = match self.ensure_host_access(&new, Some(&mut log)).await {
            Ok(_) => {
                let on_wire: Vec<&NetworkRecord> = all
                    .iter()
                    .filter(|n| n.parent.wire == new.parent.wire)
                    .collect();
                match self.sync_wire(&new.parent.wire, &on_wire).await {
                    Ok(()) => super::failpoint::failpoint("update-before-persist")
                        .and_then(|()| Ok(self.store().commit_network(&new.name, &new)?)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            let _ = self.teardown_host_access(&new, &others).await;
            let e = log.undo(self.netlink(), self.datapath(), e).await;
            // The old mode back, as it was.
            if let Err(back) = self.ensure_host_access(&old, None).await {
                tracing::error!("putting the host access of {} back: {back}", old.name);
            }
            return Err(e);
        }
        log.committed();
        Ok(new)
    }

    /// Makes the kernel hold `record`'s host access, creating only what
    /// is missing (so `restore` can call it too). With `log`, every change
    /// is journalled first. Returns what it did.
    pub(crate) async fn ensure_host_access(
        &self,
        record: &NetworkRecord,
        mut log: Option<&mut OperationLog<'_>>,
    ) -> Result<Vec<String>, NetworkError> {
        let access = &record.host_access;
        let mut done = Vec::new();
        if access.mode == HostAccessMode::Ebpf {
            return self.ensure_hairpin(record, log).await;
        }
        if access.mode != HostAccessMode::Shim {
            return Ok(done);
        }
        let Some(name) = access.link.clone() else {
            return Ok(done);
        };
        let parent = self.parent_link(&record.parent.link).await?;
        let alias = owner_alias(&record.id);
        let link = match self.netlink().link_by_name(&name).await {
            Ok(link) => link,
            Err(NetlinkError::NoSuchInterface { .. }) => {
                if let Some(log) = log.as_deref_mut() {
                    log.record(Operation::HostLink {
                        name: name.clone(),
                        alias: alias.clone(),
                    })?;
                }
                let options = crate::sys::netlink::LinkOptions {
                    alias: Some(alias.clone()),
                    ..Default::default()
                };
                let shim = NewLink::Macvlan {
                    parent: parent.ifindex,
                    mode: MacvlanMode::Bridge,
                };
                self.netlink()
                    .create_link_with(&name, shim, &options)
                    .await?;
                done.push(format!("created the shim link {name}"));
                self.netlink().link_by_name(&name).await?
            }
            Err(e) => return Err(e.into()),
        };
        if link.alias.as_deref() != Some(alias.as_str()) {
            return Err(refused(
                record,
                format!(
                    "an interface named {name} exists that netvlan did not make for this network"
                ),
            ));
        }
        // Neither link answers ARP for the other's addresses.
        if let (Some(log), Some(previous)) = (log.as_deref_mut(), &access.parent_arp) {
            log.record(Operation::ParentArp {
                link: record.parent.link.clone(),
                previous: previous.clone(),
            })?;
        }
        for ifname in [record.parent.link.as_str(), name.as_str()] {
            sysctl::set_link_setting("ipv4", ifname, ARP_IGNORE, "1")?;
            sysctl::set_link_setting("ipv4", ifname, ARP_ANNOUNCE, "2")?;
        }
        let v6 = access.address_of(Family::V6).is_some();
        if v6 {
            // Before the link is up, so its link-local is never tentative.
            sysctl::set_link_setting("ipv6", &name, "accept_dad", "0")?;
            sysctl::set_link_setting("ipv6", &name, "disable_ipv6", "0")?;
        }
        self.netlink().set_up(link.ifindex).await?;
        let present = self.netlink().address_nets(link.ifindex).await?;
        for address in &access.addresses {
            if !present.contains(&address.address) {
                self.netlink()
                    .add_address_nodad(link.ifindex, address.address)
                    .await?;
                done.push(format!("added {} to {name}", address.address));
            }
        }
        let routed = self.netlink().host_routes(link.ifindex).await?;
        for destination in endpoint_addresses(record) {
            if routed.contains(&destination) {
                continue;
            }
            if let Some(log) = log.as_deref_mut() {
                log.record(Operation::HostRoute {
                    link: name.clone(),
                    destination,
                })?;
            }
            let source = access.address_of(Family::of(&destination));
            self.netlink()
                .add_host_route(link.ifindex, destination, source)
                .await?;
            done.push(format!("added the route to {destination} via {name}"));
        }
        Ok(done)
    }

    /// The ebpf mode's part of [`Manager::ensure_host_access`]: the
    /// addresses netvlan gives the parent, and the hairpin on it.
    async fn ensure_hairpin(
        &self,
        record: &NetworkRecord,
        mut log: Option<&mut OperationLog<'_>>,
    ) -> Result<Vec<String>, NetworkError> {
        let mut done = Vec::new();
        let link = &record.parent.link;
        let parent = self.parent_link(link).await?;
        let present = self.netlink().address_nets(parent.ifindex).await?;
        for address in &record.host_access.addresses {
            if address.source == AddressSource::Parent || present.contains(&address.address) {
                continue;
            }
            if let Some(log) = log.as_deref_mut() {
                log.record(Operation::HostAddress {
                    link: link.clone(),
                    address: address.address,
                })?;
            }
            self.netlink()
                .add_address_nodad(parent.ifindex, address.address)
                .await?;
            done.push(format!("added {} to {link}", address.address));
        }
        let running = self.datapath().hairpin_status(link).await?;
        if running.is_none_or(|s| !s.current) {
            if let Some(log) = log {
                log.record(Operation::Hairpin { link: link.clone() })?;
            }
            let spec = crate::datapath::host_access::HairpinSpec {
                wire: &record.parent.wire,
                link,
                vlan: match record.parent.kind {
                    super::ParentKind::Vlan { vid, .. } => vid,
                    _ => 0,
                },
                lower: match record.options.driver {
                    Driver::Macvlan => crate::datapath::host_access::HairpinLower::Macvlan,
                    Driver::Ipvlan => crate::datapath::host_access::HairpinLower::Ipvlan {
                        mode: record.options.ipvlan_mode.unwrap_or_default(),
                    },
                },
            };
            let status = self.datapath().attach_hairpin(&spec).await?;
            done.push(format!(
                "attached the host-access hairpin to {link} ({} egress)",
                status.mode
            ));
        }
        Ok(done)
    }

    /// Removes what `record`'s host access put in the kernel (the shim
    /// link, its routes and addresses go with it) and puts the parent's
    /// ARP settings back when no network of `others` on the parent still
    /// has host access. Keeps going past failures and returns them.
    pub(crate) async fn teardown_host_access(
        &self,
        record: &NetworkRecord,
        others: &[NetworkRecord],
    ) -> Vec<UndoFailure> {
        let mut errors = Vec::new();
        let access = &record.host_access;
        if let Some(name) = &access.link {
            match self.netlink().link_by_name(name).await {
                Ok(link) if link.alias.as_deref() == Some(owner_alias(&record.id).as_str()) => {
                    if let Err(e) = self.netlink().delete_link(link.ifindex).await {
                        errors.push(UndoFailure::new(format!("deleting {name}"), e));
                    }
                }
                Ok(_) | Err(NetlinkError::NoSuchInterface { .. }) => {}
                Err(e) => errors.push(UndoFailure::new(format!("looking up {name}"), e)),
            }
        }
        if access.mode == HostAccessMode::Ebpf {
            let link = &record.parent.link;
            let shared = others
                .iter()
                .any(|n| n.parent.link == *link && n.host_access.mode == HostAccessMode::Ebpf);
            if !shared {
                if let Err(e) = self.datapath().detach_hairpin(link).await {
                    errors.push(UndoFailure::new(
                        format!("detaching the host-access hairpin from {link}"),
                        e,
                    ));
                }
            }
            let added = access
                .addresses
                .iter()
                .filter(|a| a.source != AddressSource::Parent);
            for address in added {
                match self.netlink().link_by_name(link).await {
                    Ok(parent) => {
                        if let Err(e) = self
                            .netlink()
                            .delete_address(parent.ifindex, address.address)
                            .await
                        {
                            errors.push(UndoFailure::new(
                                format!("deleting {} from {link}", address.address),
                                e,
                            ));
                        }
                    }
                    Err(NetlinkError::NoSuchInterface { .. }) => {}
                    Err(e) => errors.push(UndoFailure::new(format!("looking up {link}"), e)),
                }
            }
        }
        let parent_shared = others
            .iter()
            .any(|n| n.parent.link == record.parent.link && n.host_access.is_on());
        if let (Some((ignore, announce)), false) = (&access.parent_arp, parent_shared) {
            for (key, value) in [(ARP_IGNORE, ignore), (ARP_ANNOUNCE, announce)] {
                match sysctl::set_link_setting("ipv4", &record.parent.link, key, value) {
                    Ok(()) => {}
                    // The parent is gone: nothing to put back.
                    Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => errors.push(UndoFailure::new(
                        format!("putting {key} of {} back", record.parent.link),
                        Box::new(NetworkError::from(e)),
                    )),
                }
            }
        }
        errors
    }

    /// The addresses on `link` now; none while it does not exist (an
    /// 802.1Q parent `create` makes).
    pub(crate) async fn parent_addresses(&self, link: &str) -> Result<Vec<IpNet>, NetworkError> {
        match self.netlink().link_by_name(link).await {
            Ok(parent) => Ok(self.netlink().address_nets(parent.ifindex).await?),
            Err(NetlinkError::NoSuchInterface { .. }) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// The parent's ARP settings as they are before netvlan changes them
    /// (or as another network of the parent recorded them).
    pub(crate) fn parent_arp_before(
        &self,
        record: &NetworkRecord,
        others: &[NetworkRecord],
    ) -> Result<Option<(String, String)>, NetworkError> {
        if let Some(saved) = others
            .iter()
            .filter(|n| n.parent.link == record.parent.link)
            .find_map(|n| n.host_access.parent_arp.clone())
        {
            return Ok(Some(saved));
        }
        if record.host_access.parent_arp.is_some() {
            return Ok(record.host_access.parent_arp.clone());
        }
        let read = |key| sysctl::link_setting("ipv4", &record.parent.link, key);
        match (read(ARP_IGNORE), read(ARP_ANNOUNCE)) {
            (Ok(ignore), Ok(announce)) => Ok(Some((ignore, announce))),
            // A VLAN parent netvlan has not made yet: the kernel's defaults.
            (Err(e), _) | (_, Err(e)) if e.source.kind() == std::io::ErrorKind::NotFound => {
                Ok(Some(("0".into(), "0".into())))
            }
            (Err(e), _) | (_, Err(e)) => Err(e.into()),
        }
    }

    /// Adds the host routes of a newly connected endpoint (journalled).
    pub(crate) async fn route_endpoint(
        &self,
        record: &NetworkRecord,
        addresses: &[IpAddr],
        log: &mut OperationLog<'_>,
    ) -> Result<(), NetworkError> {
        let (HostAccessMode::Shim, Some(name)) =
            (record.host_access.mode, &record.host_access.link)
        else {
            return Ok(());
        };
        let link = self
            .netlink()
            .link_by_name(name)
            .await
            .map_err(|e| match e {
                NetlinkError::NoSuchInterface { .. } => refused(
                    record,
                    format!("the shim link {name} is missing (run `netvlan restore`)"),
                ),
                other => other.into(),
            })?;
        for destination in addresses {
            log.record(Operation::HostRoute {
                link: name.clone(),
                destination: *destination,
            })?;
            let source = record.host_access.address_of(Family::of(destination));
            self.netlink()
                .add_host_route(link.ifindex, *destination, source)
                .await?;
        }
        Ok(())
    }

    /// Deletes the host routes of a disconnected endpoint.
    pub(crate) async fn unroute_endpoint(
        &self,
        record: &NetworkRecord,
        addresses: &[IpAddr],
    ) -> Result<(), NetworkError> {
        let (HostAccessMode::Shim, Some(name)) =
            (record.host_access.mode, &record.host_access.link)
        else {
            return Ok(());
        };
        let link = match self.netlink().link_by_name(name).await {
            Ok(link) => link,
            Err(NetlinkError::NoSuchInterface { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for destination in addresses {
            self.netlink()
                .delete_host_route(link.ifindex, *destination)
                .await?;
        }
        Ok(())
    }

    /// Host-access drifts of `record`: a missing shim, address or route,
    /// a shim left behind by a network whose host access is off.
    pub(crate) async fn check_host_access(
        &self,
        record: &NetworkRecord,
        drifts: &mut Vec<Drift>,
    ) -> Result<(), NetworkError> {
        let access = &record.host_access;
        let drift = |kind: &'static str, object: String, problem: String, repair: &str| Drift {
            network: record.name.clone(),
            kind,
            object,
            problem,
            repair: repair.to_string(),
        };
        let restore = "`netvlan restore` recreates it";
        if access.mode == HostAccessMode::Ebpf {
            let link = &record.parent.link;
            match self.datapath().hairpin_status(link).await? {
                None => drifts.push(drift(
                    "host_access_hairpin_missing",
                    link.clone(),
                    format!("the host-access hairpin is not running at the egress of {link}"),
                    "`netvlan restore` attaches it",
                )),
                Some(s) if !s.current => drifts.push(drift(
                    "host_access_hairpin_stale",
                    link.clone(),
                    format!("the host-access hairpin on {link} reads maps of a wire attachment that is gone"),
                    "`netvlan restore` attaches it afresh",
                )),
                Some(_) => {}
            }
            let parent = self.parent_link(link).await?;
            let present = self.netlink().address_nets(parent.ifindex).await?;
            for address in &access.addresses {
                if address.source != AddressSource::Parent && !present.contains(&address.address) {
                    drifts.push(drift(
                        "host_access_address_missing",
                        link.clone(),
                        format!("host address {} is missing on {link}", address.address),
                        restore,
                    ));
                }
            }
        }
        let name = access.link.clone().unwrap_or_else(|| shim_name(&record.id));
        let link = match self.netlink().link_by_name(&name).await {
            Ok(link) if link.alias.as_deref() == Some(owner_alias(&record.id).as_str()) => {
                Some(link)
            }
            Ok(_) | Err(NetlinkError::NoSuchInterface { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        if access.mode != HostAccessMode::Shim {
            if link.is_some() {
                drifts.push(drift(
                    "host_access_link_extra",
                    name.clone(),
                    format!("shim link {name} exists but host access is {}", access.mode),
                    "`netvlan restore` deletes it",
                ));
            }
            return Ok(());
        }
        let Some(link) = link else {
            drifts.push(drift(
                "host_access_link_missing",
                name.clone(),
                format!("shim link {name} is missing"),
                restore,
            ));
            return Ok(());
        };
        let present = self.netlink().address_nets(link.ifindex).await?;
        for address in &access.addresses {
            if !present.contains(&address.address) {
                drifts.push(drift(
                    "host_access_address_missing",
                    name.clone(),
                    format!("host address {} is missing on {name}", address.address),
                    restore,
                ));
            }
        }
        let routed = self.netlink().host_routes(link.ifindex).await?;
        let wanted = endpoint_addresses(record);
        for destination in &wanted {
            if !routed.contains(destination) {
                drifts.push(drift(
                    "host_access_route_missing",
                    destination.to_string(),
                    format!("the route to endpoint address {destination} via {name} is missing"),
                    restore,
                ));
            }
        }
        for destination in routed
            .iter()
            .filter(|d| !wanted.contains(d) && !is_host_address(record, d))
        {
            drifts.push(drift(
                "host_access_route_extra",
                destination.to_string(),
                format!("a route to {destination} via {name} leads to no endpoint"),
                "`netvlan restore` deletes it",
            ));
        }
        Ok(())
    }

    /// `restore`'s part: recreate what is missing, delete a shim left over
    /// from a mode that is off and routes that lead to no endpoint.
    pub(crate) async fn restore_host_access(
        &self,
        record: &NetworkRecord,
    ) -> Result<Vec<String>, NetworkError> {
        if record.host_access.mode != HostAccessMode::Shim {
            let name = shim_name(&record.id);
            let mut done = match self.netlink().link_by_name(&name).await {
                Ok(link) if link.alias.as_deref() == Some(owner_alias(&record.id).as_str()) => {
                    self.netlink().delete_link(link.ifindex).await?;
                    vec![format!("deleted the leftover shim link {name}")]
                }
                _ => Vec::new(),
            };
            done.extend(self.ensure_host_access(record, None).await?);
            return Ok(done);
        }
        let mut done = self.ensure_host_access(record, None).await?;
        if let Some(name) = &record.host_access.link {
            let link = self.netlink().link_by_name(name).await?;
            let wanted = endpoint_addresses(record);
            for destination in self.netlink().host_routes(link.ifindex).await? {
                if !wanted.contains(&destination) && !is_host_address(record, &destination) {
                    self.netlink()
                        .delete_host_route(link.ifindex, destination)
                        .await?;
                    done.push(format!(
                        "deleted the stray route to {destination} via {name}"
                    ));
                }
            }
        }
        Ok(done)
    }
}

/// One of the host's own addresses (IPv6 gives a /128 on a link its
/// own prefix route).
fn is_host_address(record: &NetworkRecord, ip: &IpAddr) -> bool {
    record
        .host_access
        .addresses
        .iter()
        .any(|a| a.address.addr() == *ip)
}

/// Every endpoint address of `record` (what the shim routes).
fn endpoint_addresses(record: &NetworkRecord) -> Vec<IpAddr> {
    record
        .endpoints
        .values()
        .flat_map(|e| e.ipv4.iter().chain(e.ipv6.iter()).map(|n| n.addr()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_spelled_as_the_option_takes_them() {
        for (text, mode) in [
            ("off", HostAccessMode::Off),
            ("on", HostAccessMode::On),
            ("shim", HostAccessMode::Shim),
            ("ebpf", HostAccessMode::Ebpf),
        ] {
            assert_eq!(text.parse::<HostAccessMode>().unwrap(), mode);
            assert_eq!(mode.to_string(), text);
        }
        assert!("yes".parse::<HostAccessMode>().is_err());
    }

    #[test]
    fn shim_names_fit_an_interface_name() {
        let name = shim_name("0123456789abcdef0123");
        assert_eq!(name, "nvh-01234567");
        assert!(name.len() <= 15);
    }

    #[test]
    fn records_stored_before_host_access_load_as_off() {
        let access: HostAccess = serde_json::from_str("{}").unwrap();
        assert_eq!(access.mode, HostAccessMode::Off);
        assert!(!access.is_on());
    }
}
