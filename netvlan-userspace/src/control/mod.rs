//! Networks: Docker-compatible macvlan and ipvlan networks on a parent link.
//!
//! Every command follows validate → act → persist: all input is checked
//! against the stored state before the kernel is touched, every kernel
//! change is recorded first as an [`operation::Operation`] (journalled, and
//! undone on failure), and the record is written last, in one transaction,
//! under the store's lock. A failure at any step undoes what was done, so
//! a command is all or nothing.
//!
//! [`Manager`] is the one entry point of every front; it keeps no state of
//! its own between commands (that is the store's).

mod check;
mod driver;
mod endpoint;
mod error;
mod failpoint;
#[cfg(test)]
pub(crate) mod fixture;
mod holds;
mod host_access;
mod inspect;
mod operation;
mod options;
mod owner;
mod recover;
pub mod report;
mod restore;
mod routes;
mod sandbox_link;
mod staged;
pub mod trace;
mod wire_policy;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    datapath::{AttachMode, AttachOutcome, Attachment, Datapath, DatapathError, Hook},
    ipam::{self, Family, GatewayPolicy, IpamConfig, IpamState},
    store::Store,
    sys::netlink::{IpvlanMode, MacvlanMode, Netlink, NetlinkError, NewLink},
};
pub use check::Drift;
pub use driver::Driver;
pub use endpoint::{endpoint_key, new_endpoint_id, ConnectRequest, Endpoint};
pub use error::{
    ErrorReport, InvalidRequest, NetworkError, UndoError, UndoFailure, CODE_CONFLICT, CODE_DECODE,
    CODE_INVALID_CONFIG, CODE_IO, CODE_NOT_FOUND, CODE_UNKNOWN_CONTAINER,
};
use failpoint::failpoint;
pub use holds::HOLD_GRACE_SECS;
pub use host_access::{AddressSource, HostAccess, HostAccessMode, HostAddress};
pub use inspect::{inspect, list_rows, ListFilter};
use operation::{Operation, OperationLog};
pub use options::{NetworkOptions, OptionError, OptionKey, PolicyOptions, OPTION_KEYS};
use owner::{new_id, owner_alias, OWNER_PREFIX};
pub use restore::RestoreAction;
pub(crate) use routes::{offered_routes, DefaultRoute};
pub use staged::{is_staged, link_alias, StageRequest};

/// How the network's parent link came to be, and so what removal undoes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ParentKind {
    /// A link that existed before; never deleted by netvlan.
    Existing,
    /// An 802.1Q sub-interface `base.vid`.
    Vlan { base: String, vid: u16 },
    /// netvlan's placeholder for an internal network without a parent.
    Placeholder,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    /// The link endpoints are created on (e.g. `eth0.10`).
    pub link: String,
    /// The link whose wire the datapath watches: the VLAN's base for a
    /// sub-interface (so it sees the tags), else the parent itself.
    pub wire: String,
    pub kind: ParentKind,
    /// netvlan created the link and deletes it with the last network on it.
    pub created: bool,
}

/// A network as persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub options: NetworkOptions,
    pub parent: Parent,
    pub internal: bool,
    pub enable_ipv6: bool,
    /// IPv6 was switched on because an IPv6 subnet was given.
    pub ipv6_inferred: bool,
    pub ipam: IpamState,
    /// Keyed by sandbox (as the user named it).
    pub endpoints: BTreeMap<String, Endpoint>,
    /// netvlan attached the datapath on `parent.wire` and detaches it with
    /// the last network on that wire.
    pub datapath_owned: bool,
    /// When the network was created (RFC 3339, UTC); `None` for networks
    /// stored before netvlan recorded it.
    #[serde(default)]
    pub created: Option<String>,
    /// `--label KEY=VALUE`, shown in `inspect` and matched by `ls --filter`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Host access in effect (`off` for records stored before it existed).
    #[serde(default)]
    pub host_access: HostAccess,
}

/// What `netvlan network create` asks for.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    pub name: String,
    pub driver: Driver,
    pub subnets: Vec<String>,
    pub gateways: Vec<String>,
    pub ip_ranges: Vec<String>,
    pub aux_addresses: Vec<String>,
    pub ipv6: bool,
    pub internal: bool,
    /// `-o KEY=VALUE`.
    pub options: Vec<String>,
    /// `--label KEY=VALUE` (or `KEY`, an empty value, as Docker allows).
    pub labels: Vec<String>,
    /// `--host-ip IP`: the host's address for host access, one per family.
    pub host_ips: Vec<String>,
}

/// The control plane of the current network namespace.
pub struct Manager {
    store: Store,
    netlink: Netlink,
    datapath: Datapath,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The current time as Docker prints `Created`.
fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("the current UTC time always formats as RFC 3339")
}

/// `--label KEY=VALUE` flags; a key given twice is refused.
fn parse_labels(flags: &[String]) -> Result<BTreeMap<String, String>, NetworkError> {
    let mut labels = BTreeMap::new();
    for flag in flags {
        let (key, value) = flag.split_once('=').unwrap_or((flag, ""));
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(InvalidRequest::BadLabel(flag.clone()).into());
        }
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            return Err(InvalidRequest::DuplicateLabel(key.to_string()).into());
        }
    }
    Ok(labels)
}

impl Manager {
    /// The link a network's parent (or its VLAN's base) names; a missing
    /// one is the user's unknown parent, not a netlink failure.
    pub(crate) async fn parent_link(
        &self,
        name: &str,
    ) -> Result<crate::sys::netlink::LinkInfo, NetworkError> {
        self.netlink()
            .link_by_name(name)
            .await
            .map_err(|e| match e {
                NetlinkError::NoSuchInterface { name } => NetworkError::UnknownParent(name),
                other => other.into(),
            })
    }

    pub fn new(store: Store, datapath: Datapath) -> Result<Self, NetworkError> {
        Ok(Manager {
            store,
            // One connection for the host namespace, shared with the datapath.
            netlink: datapath.netlink().clone(),
            datapath,
        })
    }

    /// Opens the manager and first cleans up after a command that died
    /// half-way (see [`recover`]). Returns what the cleanup did.
    pub async fn open(
        store: Store,
        datapath: Datapath,
    ) -> Result<(Self, Vec<String>), NetworkError> {
        let manager = Self::new(store, datapath)?;
        let recovered = manager.recover().await?;
        Ok((manager, recovered))
    }

    pub fn networks(&self) -> Result<Vec<NetworkRecord>, NetworkError> {
        Ok(self.store.networks()?)
    }

    pub fn network(&self, name: &str) -> Result<NetworkRecord, NetworkError> {
        self.store
            .network(name)?
            .ok_or_else(|| NetworkError::UnknownNetwork(name.into()))
    }

    /// Network `name` and every other network of this namespace, decoded
    /// once ([`Store::network_among`]).
    pub fn network_among(
        &self,
        name: &str,
    ) -> Result<(NetworkRecord, Vec<NetworkRecord>), NetworkError> {
        self.store
            .network_among(name)?
            .ok_or_else(|| NetworkError::UnknownNetwork(name.into()))
    }

    /// Sets (`Some`) or removes (`None`) labels of network `name`: one
    /// durable write, nothing in the kernel. The Docker plugin binds a
    /// Docker network to a network the CLI made this way.
    pub fn relabel(
        &self,
        name: &str,
        changes: &[(&str, Option<&str>)],
    ) -> Result<NetworkRecord, NetworkError> {
        let mut record = self.network(name)?;
        for (key, value) in changes {
            match value {
                Some(value) => record.labels.insert(key.to_string(), value.to_string()),
                None => record.labels.remove(*key),
            };
        }
        self.store.put_network(&record.name, &record)?;
        Ok(record)
    }

    pub async fn create(&self, request: CreateRequest) -> Result<NetworkRecord, NetworkError> {
        if !valid_name(&request.name) {
            return Err(InvalidRequest::BadName(request.name).into());
        }
        let existing = self.networks()?;
        if existing.iter().any(|n| n.name == request.name) {
            return Err(NetworkError::NameInUse(request.name));
        }
        let options = NetworkOptions::parse(request.driver, &request.options)?;
        let labels = parse_labels(&request.labels)?;
        let host_ips = host_access::parse_host_ips(&request.host_ips)?;
        let ipam = build_ipam(&request, &options)?;
        let has_v6 = ipam.has_family(Family::V6);
        if request.ipv6 && !has_v6 {
            return Err(InvalidRequest::Ipv6WithoutSubnet.into());
        }
        let id = new_id();
        let mut parent = options::plan_parent(options.parent.as_deref(), &id)?;
        check_parent_conflicts(&existing, &parent, &options)?;
        options::check_hook_agreement(on_wires(&existing), &parent.wire, &options)?;
        check_subnet_overlaps(&existing, &ipam)?;
        wire_policy::check_policy_scope(
            &existing,
            &request.name,
            &parent,
            &options::policy_keys(),
            &options.policy,
            true,
        )?;

        let mut record = NetworkRecord {
            id: id.clone(),
            name: request.name.clone(),
            internal: request.internal || options.parent.is_none(),
            enable_ipv6: has_v6,
            ipv6_inferred: has_v6 && !request.ipv6,
            options: options.clone(),
            parent: parent.clone(),
            ipam: IpamState::new(ipam),
            endpoints: BTreeMap::new(),
            datapath_owned: false,
            created: Some(now_rfc3339()),
            labels,
            host_access: HostAccess::default(),
        };
        // Host access is planned (addresses reserved, input checked)
        // before the kernel is touched.
        let mode = host_access::resolve_mode(&record, options.host_access)?;
        let on_parent = self.parent_addresses(&record.parent.link).await?;
        record.host_access = host_access::plan(&mut record, mode, &host_ips, &on_parent)?;
        if record.host_access.mode == HostAccessMode::Shim {
            record.host_access.parent_arp = self.parent_arp_before(&record, &existing)?;
        }

        let mut log = OperationLog::new(&self.store);
        let result = self
            .create_in_kernel(&id, &mut parent, &options, &existing, &mut log)
            .await;
        let datapath_owned = match result {
            Ok(owned) => owned,
            Err(e) => return Err(log.undo(&self.netlink, &self.datapath, e).await),
        };
        record.parent = parent;
        record.datapath_owned = datapath_owned;
        if let Err(e) = self.ensure_host_access(&record, Some(&mut log)).await {
            let mut e = e;
            let left = self.teardown_host_access(&record, &existing).await;
            if !left.is_empty() {
                e = NetworkError::RollbackFailed {
                    failed: Box::new(e),
                    undo: left,
                };
            }
            return Err(log.undo(&self.netlink, &self.datapath, e).await);
        }
        let on_wire = wire_policy::wire_after(&existing, &record, false);
        let persisted = match self.sync_wire(&record.parent.wire, &on_wire).await {
            Ok(()) => failpoint("create-before-persist")
                .and_then(|()| Ok(self.store.commit_network(&record.name, &record)?)),
            Err(e) => Err(e),
        };
        if let Err(e) = persisted {
            // Put the wire's previous policy back (other networks on it).
            let before = wire_policy::wire_after(&existing, &record, true);
            if !before.is_empty() {
                let _ = self.sync_wire(&record.parent.wire, &before).await;
            }
            let _ = self.teardown_host_access(&record, &existing).await;
            return Err(log.undo(&self.netlink, &self.datapath, e).await);
        }
        log.committed();
        Ok(record)
    }

    /// Makes the parent exist, checks the kernel has the driver, and
    /// attaches the datapath. Returns whether netvlan owns the attachment.
    async fn create_in_kernel(
        &self,
        id: &str,
        parent: &mut Parent,
        options: &NetworkOptions,
        existing: &[NetworkRecord],
        log: &mut OperationLog<'_>,
    ) -> Result<bool, NetworkError> {
        match parent.kind.clone() {
            ParentKind::Existing => {
                let link = self.parent_link(&parent.link).await?;
                // Another network's placeholder (or any link netvlan made):
                // it would go away with its owner.
                if let Some(alias) = link.alias.filter(|a| a.starts_with(OWNER_PREFIX)) {
                    return Err(NetworkError::ParentIsNetvlans {
                        parent: parent.link.clone(),
                        owner: format!("tagged {alias}"),
                    });
                }
            }
            ParentKind::Vlan { base, vid } => match self.netlink.link_by_name(&parent.link).await {
                Ok(_) => parent.created = false,
                Err(NetlinkError::NoSuchInterface { .. }) => {
                    let base_link = self.parent_link(&base).await?;
                    let alias = owner_alias(id);
                    log.record(Operation::HostLink {
                        name: parent.link.clone(),
                        alias: alias.clone(),
                    })?;
                    let vlan = NewLink::Vlan {
                        parent: base_link.ifindex,
                        vid,
                    };
                    let options = crate::sys::netlink::LinkOptions {
                        alias: Some(alias),
                        ..Default::default()
                    };
                    self.netlink
                        .create_link_with(&parent.link, vlan, &options)
                        .await?;
                    let link = self.netlink.link_by_name(&parent.link).await?;
                    self.netlink.set_up(link.ifindex).await?;
                    parent.created = true;
                }
                Err(e) => return Err(e.into()),
            },
            ParentKind::Placeholder => {
                let alias = owner_alias(id);
                log.record(Operation::HostLink {
                    name: parent.link.clone(),
                    alias: alias.clone(),
                })?;
                let link = self.create_placeholder(&parent.link, &alias).await?;
                self.netlink.set_up(link).await?;
                parent.created = true;
            }
        }
        failpoint("create-after-parent")?;
        self.probe_driver(&parent.link, options, id, log).await?;

        // Only an attachment this command makes is the journal's business.
        let attached_before = self.datapath.attachments(Some(&parent.wire)).await.is_ok();
        if !attached_before {
            log.record(Operation::Datapath {
                wire: parent.wire.clone(),
            })?;
        }
        // An explicit hook, this network's or one its wire's networks share.
        let hook = match options.hook {
            Hook::Auto => options::wire_hook(on_wires(existing), &parent.wire)
                .map_or(Hook::Auto, |(hook, _)| hook),
            explicit => explicit,
        };
        let attached = self
            .datapath
            .attach_at(&parent.wire, AttachMode::Auto, hook)
            .await;
        let owned = match attached {
            Ok(AttachOutcome::Attached { .. }) => true,
            Ok(AttachOutcome::AlreadyAttached(_)) => existing
                .iter()
                .any(|n| n.parent.wire == parent.wire && n.datapath_owned),
            Err(DatapathError::ForeignProgram {
                ifname, prog_id, ..
            }) => {
                tracing::warn!("{ifname} runs another XDP program (id {prog_id}); the network works, without netvlan's counters");
                false
            }
            Err(DatapathError::ForeignTcProgram {
                ifname, prog_id, ..
            }) => {
                tracing::warn!("{ifname} runs another program at TC ingress (id {prog_id}); the network works, without netvlan's counters");
                false
            }
            Err(e) => return Err(e.into()),
        };
        failpoint("create-after-datapath")?;
        Ok(owned)
    }

    /// A dummy link, or where the kernel has no dummy driver, one end of a
    /// veth pair (deleting either end deletes both).
    async fn create_placeholder(&self, name: &str, alias: &str) -> Result<u32, NetworkError> {
        let options = crate::sys::netlink::LinkOptions {
            alias: Some(alias.to_string()),
            ..Default::default()
        };
        match self
            .netlink
            .create_link_with(name, NewLink::Dummy, &options)
            .await
        {
            Ok(()) => Ok(self.netlink.link_by_name(name).await?.ifindex),
            Err(NetlinkError::UnsupportedLinkType { .. }) => {
                let peer = placeholder_peer(name);
                self.netlink.create_veth(name, &peer, Some(alias)).await?;
                // Up on both ends, or the placeholder has no carrier and
                // neither have the endpoints on it.
                let peer_link = self.netlink.link_by_name(&peer).await?;
                self.netlink.set_up(peer_link.ifindex).await?;
                Ok(self.netlink.link_by_name(name).await?.ifindex)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates and deletes a throwaway link of the network's kind, so a
    /// kernel without macvlan/ipvlan is reported at `create`, not later.
    async fn probe_driver(
        &self,
        parent: &str,
        options: &NetworkOptions,
        id: &str,
        log: &mut OperationLog<'_>,
    ) -> Result<(), NetworkError> {
        let parent = self.netlink.link_by_name(parent).await?;
        check_parent_fits(&parent, options)?;
        let probe = format!("nvprobe{:06x}", rand::random::<u32>() & 0xff_ffff);
        let alias = owner_alias(id);
        log.record(Operation::HostLink {
            name: probe.clone(),
            alias: alias.clone(),
        })?;
        let link = match options.driver {
            // bridge mode: a passthru probe would grab the parent.
            Driver::Macvlan => NewLink::Macvlan {
                parent: parent.ifindex,
                mode: MacvlanMode::Bridge,
            },
            Driver::Ipvlan => NewLink::Ipvlan {
                parent: parent.ifindex,
                mode: options.ipvlan_mode.unwrap_or_default(),
                flag: options.ipvlan_flag.unwrap_or_default(),
            },
        };
        let probe_options = crate::sys::netlink::LinkOptions {
            alias: Some(alias),
            ..Default::default()
        };
        // The probe's name is netvlan's own business: a refusal names the parent.
        let refused = |source: NetlinkError| match source {
            unsupported @ NetlinkError::UnsupportedLinkType { .. } => unsupported.into(),
            source => NetworkError::ParentRefused {
                parent: parent.name.clone(),
                driver: options.driver,
                source: source.described_as(format!(
                    "create a {} link on '{}'",
                    options.driver, parent.name
                )),
            },
        };
        self.netlink
            .create_link_with(&probe, link, &probe_options)
            .await
            .map_err(refused)?;
        let created = self.netlink.link_by_name(&probe).await?;
        self.netlink.delete_link(created.ifindex).await?;
        Ok(())
    }

    /// Removes a network without endpoints, and whatever netvlan created
    /// for it that no other network uses. Keeps going on errors.
    pub async fn remove(&self, name: &str) -> Result<NetworkRecord, NetworkError> {
        let record = self.network(name)?;
        if !record.endpoints.is_empty() {
            return Err(NetworkError::HasEndpoints {
                network: record.name,
                count: record.endpoints.len(),
            });
        }
        let others: Vec<NetworkRecord> = self
            .networks()?
            .into_iter()
            .filter(|n| n.name != record.name)
            .collect();
        let mut errors = self.teardown_host_access(&record, &others).await;
        let wire_shared = others.iter().any(|n| n.parent.wire == record.parent.wire);
        if record.datapath_owned && !wire_shared {
            match self.datapath.detach(&record.parent.wire).await {
                Ok(_) | Err(DatapathError::NotAttached { .. }) => {}
                Err(DatapathError::Netlink(NetlinkError::NoSuchInterface { .. })) => {}
                Err(e) => errors.push(UndoFailure::new(
                    format!("detaching the datapath from {}", record.parent.wire),
                    e,
                )),
            }
        }
        let parent_shared = others.iter().any(|n| n.parent.link == record.parent.link);
        if record.parent.created && !parent_shared {
            match self.netlink.link_by_name(&record.parent.link).await {
                Ok(link) => {
                    if let Err(e) = self.netlink.delete_link(link.ifindex).await {
                        errors.push(UndoFailure::new(
                            format!("deleting {}", record.parent.link),
                            e,
                        ));
                    }
                }
                Err(NetlinkError::NoSuchInterface { .. }) => {}
                Err(e) => errors.push(UndoFailure::new(
                    format!("looking up {}", record.parent.link),
                    e,
                )),
            }
            // Pins of a deleted placeholder are stale now.
            if let Err(e) = self.datapath.prune().await {
                errors.push(UndoFailure::new("pruning stale pins", e));
            }
        }
        if wire_shared {
            let remaining = wire_policy::wire_after(&others, &record, true);
            if let Err(e) = self.sync_wire(&record.parent.wire, &remaining).await {
                errors.push(UndoFailure::new(
                    format!("updating the policy of {}", record.parent.wire),
                    Box::new(e),
                ));
            }
        }
        self.store.delete_network(&record.name)?;
        if errors.is_empty() {
            Ok(record)
        } else {
            Err(NetworkError::TeardownIncomplete {
                network: record.name,
                errors,
            })
        }
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

    /// `netvlan datapath detach IFACE`: refused while networks use IFACE
    /// (nothing would enforce their policy) unless `force`.
    pub async fn detach(&self, iface: &str, force: bool) -> Result<Attachment, NetworkError> {
        if !force {
            let networks = self.networks_on(iface)?;
            if !networks.is_empty() {
                return Err(NetworkError::DatapathInUse {
                    iface: iface.to_string(),
                    networks,
                });
            }
        }
        Ok(self.datapath.detach(iface).await?)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn netlink(&self) -> &Netlink {
        &self.netlink
    }

    pub(crate) fn datapath(&self) -> &Datapath {
        &self.datapath
    }
}

/// Each network's name, wire and options, for the checks that span a wire.
fn on_wires<'a>(
    records: impl IntoIterator<Item = &'a NetworkRecord>,
) -> impl Iterator<Item = (&'a str, &'a str, &'a NetworkOptions)> {
    records
        .into_iter()
        .map(|n| (n.name.as_str(), n.parent.wire.as_str(), &n.options))
}

/// The other end of a placeholder made of a veth pair.
fn placeholder_peer(name: &str) -> String {
    format!("{}p", &name[..name.len().min(14)])
}

fn build_ipam(
    request: &CreateRequest,
    options: &NetworkOptions,
) -> Result<IpamConfig, NetworkError> {
    if request.subnets.is_empty() {
        return Err(InvalidRequest::NoSubnet.into());
    }
    let subnets = request
        .subnets
        .iter()
        .map(|s| ipam::parse_cidr(s))
        .collect::<Result<Vec<_>, _>>()?;
    let gateways = request
        .gateways
        .iter()
        .map(|s| ipam::parse_ip(s))
        .collect::<Result<Vec<_>, _>>()?;
    let ranges = request
        .ip_ranges
        .iter()
        .map(|s| ipam::parse_cidr(s))
        .collect::<Result<Vec<_>, _>>()?;
    let aux = request
        .aux_addresses
        .iter()
        .map(|s| ipam::parse_aux_address(s))
        .collect::<Result<Vec<_>, _>>()?;
    // ipvlan l3/l3s route through the device: there is no gateway to honour.
    let policy = match (options.driver, options.ipvlan_mode) {
        (Driver::Ipvlan, Some(IpvlanMode::L3 | IpvlanMode::L3s)) => GatewayPolicy::None,
        _ => GatewayPolicy::FirstUsable,
    };
    Ok(IpamConfig::from_flags(
        &subnets, &gateways, &ranges, &aux, policy,
    )?)
}

/// What the kernel would refuse later, at every connect: a parent that is
/// not Ethernet (`lo`), or endpoints with a larger MTU than their parent.
fn check_parent_fits(
    parent: &crate::sys::netlink::LinkInfo,
    options: &NetworkOptions,
) -> Result<(), NetworkError> {
    use netlink_packet_route::link::LinkLayerType;
    if parent.link_layer != LinkLayerType::Ether {
        return Err(NetworkError::ParentNotEthernet {
            parent: parent.name.clone(),
            kind: match parent.link_layer {
                LinkLayerType::Loopback => "loopback".to_string(),
                other => other.to_string().to_lowercase(),
            },
        });
    }
    if let (Some(mtu), Some(parent_mtu)) = (options.mtu, parent.mtu) {
        if mtu > parent_mtu {
            return Err(NetworkError::MtuAboveParent {
                mtu,
                parent: parent.name.clone(),
                parent_mtu,
            });
        }
    }
    Ok(())
}

/// The sharing rules between networks on one parent (Docker's).
fn check_parent_conflicts(
    existing: &[NetworkRecord],
    parent: &Parent,
    options: &NetworkOptions,
) -> Result<(), NetworkError> {
    if parent.kind == ParentKind::Existing {
        for other in existing
            .iter()
            .filter(|n| n.parent.kind == ParentKind::Placeholder)
        {
            if parent.link == other.parent.link
                || parent.link == placeholder_peer(&other.parent.link)
            {
                return Err(NetworkError::ParentIsNetvlans {
                    parent: parent.link.clone(),
                    owner: format!("the placeholder of network '{}'", other.name),
                });
            }
        }
    }
    for other in existing.iter().filter(|n| n.parent.link == parent.link) {
        let exclusive = options.driver == Driver::Ipvlan
            || other.options.driver == Driver::Ipvlan
            || options.macvlan_mode == Some(MacvlanMode::Passthru)
            || other.options.macvlan_mode == Some(MacvlanMode::Passthru);
        if exclusive {
            return Err(NetworkError::ParentInUse {
                network: other.name.clone(),
                parent: parent.link.clone(),
            });
        }
    }
    Ok(())
}

/// No two networks share addresses, whatever their parents (internal
/// ones too): Docker refuses overlapping pools the same way, and a
/// sandbox on both would not know which link an address is behind.
fn check_subnet_overlaps(
    existing: &[NetworkRecord],
    ipam: &IpamConfig,
) -> Result<(), NetworkError> {
    for other in existing {
        for mine in ipam.subnets() {
            for theirs in other.ipam.config().subnets() {
                if ipam::subnets_overlap(&mine.subnet, &theirs.subnet) {
                    return Err(NetworkError::SubnetOverlap {
                        subnet: mine.subnet,
                        other: theirs.subnet,
                        network: other.name.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}
