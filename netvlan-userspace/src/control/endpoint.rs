//! Endpoints: a sandbox's link on a network.
//!
//! The link is born inside the sandbox under a temporary name (so it never
//! appears in the host's namespace and never collides with the sandbox's
//! own `eth0`), then renamed, addressed and brought up there.

use std::{net::IpAddr, os::fd::AsRawFd, path::PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{
    options::valid_ifname, rollback::Rollback, wire_policy::wire_after, Driver, Manager,
    NetworkError, NetworkRecord,
};
use netvlan_common::{
    antispoof::{EgressConfig, EGRESS_ENFORCE, EGRESS_HAS_IPV4, EGRESS_HAS_IPV6},
    Mac,
};

use crate::{
    ipam::{self, Family, Request},
    sys::netlink::{LinkOptions, MacvlanMode, Netlink, NewLink},
    sys::netns::{self, NetnsId},
    sys::sandbox::Sandbox,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    /// The sandbox as the user named it.
    pub sandbox: String,
    pub netns_path: PathBuf,
    pub ifname: String,
    /// The endpoint's own MAC (macvlan); `None` for ipvlan endpoints,
    /// which use the parent's. Stored as `"02:42:ac:10:56:02"`, or `""`
    /// for none, as records have always been written.
    #[serde(default, with = "mac_or_empty")]
    pub mac: Option<Mac>,
    pub ipv4: Option<IpNet>,
    pub ipv6: Option<IpNet>,
    /// The link's index inside the sandbox and the sandbox's namespace
    /// identity: where its anti-spoofing pins live.
    #[serde(default)]
    pub ifindex: u32,
    #[serde(default)]
    pub netns: Option<crate::sys::netns::NetnsId>,
    /// Connect order across every network (1, 2, ...): of a sandbox's
    /// endpoints, the earliest whose network routes a family holds that
    /// family's default route. 0 in records written before it was kept
    /// (those sort first, by network name).
    #[serde(default)]
    pub connected: u64,
}

/// A default route: via a gateway (or straight out of the device), IPv6?
pub(super) type DefaultRoute = (Option<IpAddr>, bool);

impl Endpoint {
    /// The endpoint's own MAC (macvlan), as stored, if one an interface
    /// can have.
    pub fn stored_mac(&self) -> Option<Mac> {
        self.mac.filter(|m| m.is_unicast())
    }

    /// The MAC as text, empty for none (ipvlan): what `inspect` and the
    /// CLI show.
    pub fn mac_text(&self) -> String {
        self.mac.map(|m| m.to_string()).unwrap_or_default()
    }

    /// The namespace identity of the endpoint's sandbox: as recorded, or
    /// (records from before it was kept) that of its namespace file.
    pub(super) fn sandbox_id(&self) -> Option<NetnsId> {
        self.netns.or_else(|| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&self.netns_path).ok().map(|m| NetnsId {
                dev: m.dev(),
                ino: m.ino(),
            })
        })
    }

    /// Whether the namespace this endpoint was made in still exists at its
    /// path (a path reused by a newer namespace does not count).
    pub(super) fn sandbox_alive(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(&self.netns_path) {
            Ok(m) => self
                .netns
                .is_none_or(|id| id.dev == m.dev() && id.ino == m.ino()),
            Err(_) => false,
        }
    }
}

/// What `netvlan connect` asks for.
#[derive(Clone, Debug, Default)]
pub struct ConnectRequest {
    pub network: String,
    pub sandbox: String,
    pub ip: Option<String>,
    pub ip6: Option<String>,
    pub mac: Option<String>,
    pub ifname: Option<String>,
}

/// Docker's stable MAC: `02:42` and the four IPv4 bytes.
pub fn mac_from_ipv4(ip: std::net::Ipv4Addr) -> [u8; 6] {
    Mac::from_ipv4(ip.octets()).octets()
}

/// The store's form of an optional MAC: its text, or `""` for none.
mod mac_or_empty {
    use netvlan_common::Mac;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(mac: &Option<Mac>, serializer: S) -> Result<S::Ok, S::Error> {
        match mac {
            Some(mac) => mac.serialize(serializer),
            None => serializer.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Mac>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(serde::de::Error::custom)
    }
}

/// The MAC the user gave with `--mac`: one an interface can have.
fn requested_mac(text: &str) -> Result<Mac, NetworkError> {
    let mac: Mac = text.parse().map_err(|_| {
        NetworkError::BadEndpoint(format!(
            "--mac {text}: expected six hex bytes like 02:42:ac:10:56:02"
        ))
    })?;
    if mac.is_zero() {
        return Err(NetworkError::BadEndpoint(format!(
            "--mac {text} is the all-zero address, which no interface can have"
        )));
    }
    if mac.is_multicast() {
        return Err(NetworkError::BadEndpoint(format!(
            "--mac {text} is a multicast address"
        )));
    }
    Ok(mac)
}

/// The endpoint link a network's driver and modes call for.
pub(super) fn endpoint_link(record: &NetworkRecord, parent: u32) -> NewLink {
    match record.options.driver {
        Driver::Macvlan => NewLink::Macvlan {
            parent,
            mode: record.options.macvlan_mode.unwrap_or_default(),
        },
        Driver::Ipvlan => NewLink::Ipvlan {
            parent,
            mode: record.options.ipvlan_mode.unwrap_or_default(),
            flag: record.options.ipvlan_flag.unwrap_or_default(),
        },
    }
}

/// A temporary link name no one else uses (`nvt` + 10 hex digits).
pub(super) fn temp_link_name() -> String {
    format!("nvt{:010x}", rand::random::<u64>() & 0xff_ffff_ffff)
}

/// Addresses with the prefix length of their subnet.
fn with_prefix(record: &NetworkRecord, ip: IpAddr) -> IpNet {
    let prefix = record
        .ipam
        .config()
        .subnet_of(&ip)
        .map(|s| s.subnet.prefix_len())
        .unwrap_or(match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        });
    IpNet::new(ip, prefix).expect("prefix length comes from a valid subnet")
}

impl Manager {
    pub async fn connect(
        &self,
        request: ConnectRequest,
    ) -> Result<(NetworkRecord, Endpoint), NetworkError> {
        let mut record = self.network(&request.network)?;
        let sandbox = Sandbox::resolve(&request.sandbox)?;
        let here = NetnsId::current().map_err(|source| crate::sys::netns::NetnsError::Open {
            path: "/proc/thread-self/ns/net".into(),
            source,
        })?;
        if sandbox.id == here {
            return Err(NetworkError::SandboxIsHost {
                sandbox: sandbox.key,
                parent: record.parent.link,
            });
        }
        // One endpoint per sandbox: the namespace, however it is named.
        if let Some((key, _)) = record
            .endpoints
            .iter()
            .find(|(_, e)| e.sandbox_id() == Some(sandbox.id))
        {
            return Err(NetworkError::AlreadyConnected {
                network: record.name.clone(),
                sandbox: if *key == sandbox.key {
                    sandbox.key
                } else {
                    format!("{} (connected as '{key}')", sandbox.key)
                },
            });
        }
        if record.endpoints.contains_key(&sandbox.key) {
            // The name now leads to another namespace: the one the endpoint
            // was made in is gone.
            return Err(NetworkError::SandboxGone {
                network: record.name,
                sandbox: sandbox.key,
            });
        }
        let passthru = record.options.macvlan_mode == Some(MacvlanMode::Passthru);
        if passthru && !record.endpoints.is_empty() {
            return Err(NetworkError::PassthruTaken(record.name));
        }
        let ifname = request.ifname.clone().unwrap_or_else(|| "eth0".into());
        if !valid_ifname(&ifname) {
            return Err(NetworkError::BadEndpoint(format!(
                "--ifname {ifname}: not a valid interface name (1-15 characters)"
            )));
        }

        // Addresses: held in `record.ipam` and only persisted on success.
        let ipv4 = match (&request.ip, record.ipam.config().has_family(Family::V4)) {
            (Some(ip), _) => Some(record.ipam.allocate(Request::Exact(ipam::parse_ip(ip)?))?),
            (None, true) => Some(record.ipam.allocate(Request::Any(Family::V4))?),
            (None, false) => None,
        };
        let ipv6 = match (&request.ip6, record.enable_ipv6) {
            (Some(ip), _) => Some(record.ipam.allocate(Request::Exact(ipam::parse_ip(ip)?))?),
            (None, true) => Some(record.ipam.allocate(Request::Any(Family::V6))?),
            (None, false) => None,
        };
        for (flag, addr, want) in [("--ip", ipv4, Family::V4), ("--ip6", ipv6, Family::V6)] {
            if let Some(addr) = addr.filter(|a| Family::of(a) != want) {
                return Err(NetworkError::BadEndpoint(format!(
                    "{flag} {addr} is not an {want} address"
                )));
            }
        }

        let parent = self
            .netlink()
            .link_by_name(&record.parent.link)
            .await
            .map_err(|e| match e {
                crate::sys::netlink::NetlinkError::NoSuchInterface { .. } => {
                    NetworkError::ParentMissing {
                        network: record.name.clone(),
                        parent: record.parent.link.clone(),
                    }
                }
                other => other.into(),
            })?;
        let mac = match (record.options.driver, &request.mac) {
            (Driver::Ipvlan, Some(_)) => {
                return Err(NetworkError::BadEndpoint(
                    "--mac: ipvlan endpoints always use the parent's MAC".into(),
                ));
            }
            (Driver::Ipvlan, None) => None,
            (Driver::Macvlan, Some(text)) => Some(requested_mac(text)?.octets()),
            (Driver::Macvlan, None) => Some(match ipv4 {
                Some(IpAddr::V4(v4)) => mac_from_ipv4(v4),
                _ => {
                    let mut random: [u8; 6] = rand::random();
                    random[0] = (random[0] & 0xfe) | 0x02; // unicast, locally administered
                    random
                }
            }),
        };
        let link = endpoint_link(&record, parent.ifindex);

        let endpoint_id = super::new_id();
        let ipv4 = ipv4.map(|ip| with_prefix(&record, ip));
        let ipv6 = ipv6.map(|ip| with_prefix(&record, ip));
        let all = self.networks()?;
        let mut endpoint = Endpoint {
            id: endpoint_id.clone(),
            sandbox: sandbox.key.clone(),
            netns_path: sandbox.path.clone(),
            ifname: ifname.clone(),
            mac: None,
            ipv4,
            ipv6,
            ifindex: 0,
            netns: Some(sandbox.id),
            connected: 1 + all
                .iter()
                .flat_map(|n| n.endpoints.values())
                .map(|e| e.connected)
                .max()
                .unwrap_or(0),
        };
        // A family whose default route another network of the sandbox
        // already holds gets none here.
        let routes = held_routes(&all, &record, &endpoint);
        let alias = super::journal::owner_alias(&endpoint_id);
        let temp_name = temp_link_name();
        self.intend(super::journal::Intent::SandboxLink {
            netns_path: sandbox.path.clone(),
            temp_name: temp_name.clone(),
            alias: alias.clone(),
        })?;
        let made = match self
            .materialize(
                &record,
                link,
                &sandbox.path,
                &ifname,
                mac,
                ipv4,
                ipv6,
                routes,
                &alias,
                &temp_name,
            )
            .await
        {
            Ok(made) => made,
            Err(e) => {
                self.forget_intents();
                return Err(e);
            }
        };

        endpoint.mac = made.mac.map(Mac);
        endpoint.ifindex = made.ifindex;
        record
            .endpoints
            .insert(sandbox.key.clone(), endpoint.clone());
        // Register the endpoint with the datapath before committing.
        let persisted = match self
            .sync_wire(&record.parent.wire, &wire_after(&all, &record, false))
            .await
        {
            Ok(()) => super::failpoint("connect-before-persist")
                .and_then(|()| Ok(self.store().commit_network(&record.name, &record)?)),
            Err(e) => Err(e),
        };
        if let Err(e) = persisted {
            let _ = self
                .sync_wire(
                    &record.parent.wire,
                    &wire_after(&all, &self.network(&record.name)?, false),
                )
                .await;
            let mut rollback = Rollback::default();
            rollback.delete_link_in(sandbox.path.clone(), &ifname);
            rollback.remove_endpoint_pins(sandbox.id, made.ifindex);
            let e = rollback.undo(self.netlink(), self.datapath(), e).await;
            self.forget_intents();
            return Err(e);
        }
        self.intents_committed();
        Ok((record, endpoint))
    }

    /// Creates an endpoint's link on the parent directly inside the sandbox
    /// (under a temporary name, so nothing ever appears in the host's
    /// namespace or clashes with the sandbox's own interfaces), then names,
    /// addresses and raises it there. On failure nothing is left behind.
    /// Returns the link's MAC as the kernel reports it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn materialize(
        &self,
        record: &NetworkRecord,
        link: NewLink,
        sandbox: &std::path::Path,
        ifname: &str,
        mac: Option<[u8; 6]>,
        ipv4: Option<IpNet>,
        ipv6: Option<IpNet>,
        routes: Vec<DefaultRoute>,
        alias: &str,
        temp_name: &str,
    ) -> Result<Materialized, NetworkError> {
        let temp_name = temp_name.to_string();
        let ns_file =
            std::fs::File::open(sandbox).map_err(|source| crate::sys::netns::NetnsError::Open {
                path: sandbox.into(),
                source,
            })?;
        let options = LinkOptions {
            mac,
            mtu: record.options.mtu,
            netns_fd: Some(ns_file.as_raw_fd()),
            // Set inside the sandbox, before the rename (see `configure`).
            alias: None,
        };
        // The temporary name is netvlan's own: an error says what it was for.
        self.netlink()
            .create_link_with(&temp_name, link, &options)
            .await
            .map_err(|e| {
                e.described_as(format!(
                    "create the {} endpoint link of network '{}' on '{}' in {}",
                    record.options.driver,
                    record.name,
                    record.parent.link,
                    sandbox.display()
                ))
            })?;
        if let Err(e) = super::failpoint("connect-after-link") {
            let undo = super::rollback::delete_link_in(sandbox.to_path_buf(), temp_name).await;
            return Err(match undo {
                Ok(()) => e,
                Err(undo) => NetworkError::RollbackFailed {
                    failed: Box::new(e),
                    undo,
                },
            });
        }

        let plan = SandboxPlan {
            alias: alias.to_string(),
            temp_name,
            ifname: ifname.to_string(),
            addresses: ipv4.iter().chain(ipv6.iter()).copied().collect(),
            routes,
            bpf_dir: self.datapath().bpf_dir().to_path_buf(),
            spoofcheck: record.options.spoofcheck,
        };
        let path = sandbox.to_path_buf();
        tokio::task::spawn_blocking(move || netns::run_in(&path, move || plan.apply()))
            .await
            .expect("the sandbox thread is joined, never cancelled")?
    }

    /// Deletes the endpoint's link and returns its addresses to the pool.
    /// When the link held the sandbox's default route of a family, the
    /// route moves to the next network of the sandbox that offers one.
    /// An endpoint whose sandbox is gone is only removed with `force`.
    pub async fn disconnect(
        &self,
        network: &str,
        sandbox: &str,
        force: bool,
    ) -> Result<Endpoint, NetworkError> {
        let mut record = self.network(network)?;
        // The namespace, however it is named now; else the name as stored
        // (its namespace may be gone).
        let key = match Sandbox::resolve(sandbox) {
            Ok(s) => record
                .endpoints
                .iter()
                .find(|(_, e)| e.sandbox_alive() && e.sandbox_id() == Some(s.id))
                .map(|(key, _)| key.clone())
                .unwrap_or(s.key),
            Err(_) => sandbox.to_string(),
        };
        let Some(endpoint) = record.endpoints.get(&key).cloned() else {
            return Err(NetworkError::NotConnected {
                network: record.name,
                sandbox: key,
            });
        };
        let alive = endpoint.sandbox_alive();
        if !alive && !force {
            return Err(NetworkError::SandboxGone {
                network: record.name,
                sandbox: key,
            });
        }
        let all = self.networks()?;
        let held = if alive {
            held_routes(&all, &record, &endpoint)
        } else {
            Vec::new()
        };
        record.endpoints.remove(&key);
        if alive {
            // Its default routes go with the link.
            let deleted = super::rollback::delete_link_in(
                endpoint.netns_path.clone(),
                endpoint.ifname.clone(),
            )
            .await;
            match deleted {
                Ok(()) => {}
                Err(e) if force => tracing::warn!(
                    "disconnect -f: cannot delete {} in {} ({e}); removing the endpoint anyway",
                    endpoint.ifname,
                    endpoint.sandbox
                ),
                Err(e) => {
                    return Err(NetworkError::BadEndpoint(format!(
                        "deleting {} in {}: {e}",
                        endpoint.ifname, endpoint.sandbox
                    )))
                }
            }
        }
        if let Some(netns) = endpoint.netns {
            // The program went with the link; its pins are ours to remove.
            crate::datapath::endpoint_hooks::remove_pins(
                self.datapath().bpf_dir(),
                netns,
                endpoint.ifindex,
            )?;
        }
        for net in endpoint.ipv4.iter().chain(endpoint.ipv6.iter()) {
            // Already free (e.g. a state written by hand) is fine here.
            let _ = record.ipam.release(net.addr());
        }
        let after: Vec<NetworkRecord> = all
            .into_iter()
            .map(|n| {
                if n.name == record.name {
                    record.clone()
                } else {
                    n
                }
            })
            .collect();
        self.sync_wire(&record.parent.wire, &wire_after(&after, &record, false))
            .await?;
        self.store().put_network(&record.name, &record)?;
        if !held.is_empty() {
            self.move_default_routes(&after, &endpoint, &held).await?;
        }
        Ok(endpoint)
    }

    /// After `gone` left its sandbox: gives the families it routed to the
    /// sandbox's next endpoint (connect order) that `after` says holds them.
    async fn move_default_routes(
        &self,
        after: &[NetworkRecord],
        gone: &Endpoint,
        held: &[DefaultRoute],
    ) -> Result<(), NetworkError> {
        let sandbox = gone.sandbox_id();
        for record in after {
            for endpoint in record.endpoints.values() {
                if endpoint.sandbox_id() != sandbox {
                    continue;
                }
                let routes: Vec<DefaultRoute> = held_routes(after, record, endpoint)
                    .into_iter()
                    .filter(|(_, v6)| held.iter().any(|(_, h)| h == v6))
                    .collect();
                if routes.is_empty() {
                    continue;
                }
                add_routes_in(endpoint, routes).await.map_err(|e| {
                    NetworkError::BadEndpoint(format!(
                        "disconnected {} from {}, but moving its default route to {} of network '{}' failed: {e} (run `netvlan restore`)",
                        gone.sandbox, record.name, endpoint.ifname, record.name
                    ))
                })?;
            }
        }
        Ok(())
    }
}

/// Adds default routes on an endpoint's link inside its sandbox; a route
/// that is already there is fine. Returns how many were added.
pub(super) async fn add_routes_in(
    endpoint: &Endpoint,
    routes: Vec<DefaultRoute>,
) -> Result<usize, NetworkError> {
    let ifname = endpoint.ifname.clone();
    let path = endpoint.netns_path.clone();
    let added = tokio::task::spawn_blocking(move || {
        netns::run_in(&path, move || async move {
            let netlink = Netlink::connect()?;
            let link = netlink.link_by_name(&ifname).await?;
            let mut added = 0;
            for (gateway, ipv6) in routes {
                match netlink.add_default_route(link.ifindex, gateway, ipv6).await {
                    Err(e) if e.errno() == Some(libc::EEXIST) => {}
                    other => {
                        other?;
                        added += 1;
                    }
                }
            }
            Ok::<usize, crate::sys::netlink::NetlinkError>(added)
        })
    })
    .await
    .expect("the sandbox thread is joined, never cancelled")?;
    Ok(added?)
}

/// An endpoint inside its sandbox, compared with its record.
#[derive(Clone, Debug, Default)]
pub(super) struct EndpointFacts {
    /// The index of the sandbox's link named as the endpoint, if any.
    pub ifindex: Option<u32>,
    pub missing_addresses: Vec<IpNet>,
    pub missing_routes: Vec<(Option<IpAddr>, bool)>,
    pub programs: crate::datapath::endpoint_hooks::EndpointPrograms,
    /// What [`Manager::probe_endpoint`] repaired, when asked to.
    pub repaired: Vec<String>,
}

impl Manager {
    /// Looks at an endpoint's link inside its (existing) sandbox: its
    /// addresses, the default `routes` it holds (see [`held_routes`]) and
    /// its TC programs. With `repair`, adds what
    /// is missing and re-attaches the programs (a missing link is the
    /// caller's to recreate).
    pub(super) async fn probe_endpoint(
        &self,
        record: &NetworkRecord,
        endpoint: &Endpoint,
        routes: Vec<DefaultRoute>,
        repair: bool,
    ) -> Result<EndpointFacts, NetworkError> {
        let ifname = endpoint.ifname.clone();
        let sandbox = endpoint.sandbox.clone();
        let addresses: Vec<IpNet> = endpoint
            .ipv4
            .iter()
            .chain(endpoint.ipv6.iter())
            .copied()
            .collect();
        let bpf_dir = self.datapath().bpf_dir().to_path_buf();
        let spoofcheck = record.options.spoofcheck;
        let job = move || async move {
            let netlink = Netlink::connect()?;
            let mut facts = EndpointFacts::default();
            let link = match netlink.link_by_name(&ifname).await {
                Ok(link) => link,
                Err(crate::sys::netlink::NetlinkError::NoSuchInterface { .. }) => return Ok(facts),
                Err(e) => return Err(NetworkError::from(e)),
            };
            facts.ifindex = Some(link.ifindex);
            let present = netlink.addresses(link.ifindex).await?;
            facts.missing_addresses = addresses
                .iter()
                .filter(|a| !present.contains(&a.addr()))
                .copied()
                .collect();
            // A sandbox keeps one default route per family: one via
            // another network's endpoint counts.
            for (gateway, ipv6) in &routes {
                if netlink.default_routes(*ipv6).await?.is_empty() {
                    facts.missing_routes.push((*gateway, *ipv6));
                }
            }
            facts.programs = crate::datapath::endpoint_hooks::programs(
                &bpf_dir,
                &netlink,
                link.ifindex,
                &ifname,
            )
            .await?;
            if !repair {
                return Ok(facts);
            }
            for address in &facts.missing_addresses {
                netlink.add_address(link.ifindex, *address).await?;
                facts
                    .repaired
                    .push(format!("add address {address} to {ifname} in {sandbox}"));
            }
            if !facts.programs.complete() {
                let mut config = egress_config(link.mac, &addresses);
                if spoofcheck {
                    config.flags |= EGRESS_ENFORCE;
                }
                crate::datapath::endpoint_hooks::reattach(
                    &bpf_dir,
                    &netlink,
                    link.ifindex,
                    &ifname,
                    &config,
                )
                .await?;
                facts.repaired.push(format!(
                    "attach the endpoint programs to {ifname} in {sandbox}"
                ));
            }
            for (gateway, ipv6) in &facts.missing_routes {
                netlink
                    .add_default_route(link.ifindex, *gateway, *ipv6)
                    .await?;
                let via = gateway.map_or("the link".to_string(), |g| g.to_string());
                facts.repaired.push(format!(
                    "add the default route via {via} to {ifname} in {sandbox}"
                ));
            }
            Ok(facts)
        };
        let path = endpoint.netns_path.clone();
        tokio::task::spawn_blocking(move || netns::run_in(&path, job))
            .await
            .expect("the sandbox thread is joined, never cancelled")?
    }
}

/// The default routes a network offers an endpoint with these addresses:
/// per family, via the gateway of the subnet the address belongs to (a
/// network may have several subnets of a family); ipvlan l3/l3s straight
/// out of the device (the host routes); none on an internal network.
pub(super) fn offered_routes(
    record: &NetworkRecord,
    ipv4: Option<IpNet>,
    ipv6: Option<IpNet>,
) -> Vec<DefaultRoute> {
    if record.internal {
        return Vec::new();
    }
    let l3 = matches!(
        (record.options.driver, record.options.ipvlan_mode),
        (
            Driver::Ipvlan,
            Some(crate::sys::netlink::IpvlanMode::L3 | crate::sys::netlink::IpvlanMode::L3s)
        )
    );
    let mut routes = Vec::new();
    for (address, ipv6) in [(ipv4, false), (ipv6, true)] {
        let Some(address) = address else { continue };
        if l3 {
            routes.push((None, ipv6));
        } else if let Some(gateway) = record
            .ipam
            .config()
            .subnet_of(&address.addr())
            .and_then(|s| s.gateway)
        {
            routes.push((Some(gateway), ipv6));
        }
    }
    routes
}

/// Where an endpoint stands in its sandbox's connect order.
fn connect_order<'a>(record: &'a NetworkRecord, endpoint: &Endpoint) -> (u64, &'a str) {
    (endpoint.connected, &record.name)
}

/// The default routes `endpoint` (on `record`) holds in its sandbox.
/// Docker keeps one default route per family: of the sandbox's endpoints
/// across `all` networks, the earliest connected whose network offers a
/// route of a family holds it. Derived from the store alone, so connect,
/// disconnect and restore agree.
pub(super) fn held_routes(
    all: &[NetworkRecord],
    record: &NetworkRecord,
    endpoint: &Endpoint,
) -> Vec<DefaultRoute> {
    let mut routes = offered_routes(record, endpoint.ipv4, endpoint.ipv6);
    let Some(sandbox) = endpoint.sandbox_id() else {
        return routes;
    };
    let me = connect_order(record, endpoint);
    for other in all.iter().filter(|n| n.name != record.name) {
        for theirs in other.endpoints.values() {
            if theirs.sandbox_id() != Some(sandbox) || connect_order(other, theirs) > me {
                continue;
            }
            let taken = offered_routes(other, theirs.ipv4, theirs.ipv6);
            routes.retain(|(_, v6)| !taken.iter().any(|(_, t)| t == v6));
        }
    }
    routes
}

/// What to do inside the sandbox, run on a thread that entered it.
struct SandboxPlan {
    temp_name: String,
    /// Owner tag, set first so crash recovery can always find the link.
    alias: String,
    ifname: String,
    addresses: Vec<IpNet>,
    routes: Vec<(Option<IpAddr>, bool)>,
    /// Where the endpoint programs are pinned.
    bpf_dir: PathBuf,
    /// Anti-spoofing: the egress program drops what the endpoint may not
    /// send (it counts either way).
    spoofcheck: bool,
}

/// The endpoint's link as configured in its sandbox.
pub(super) struct Materialized {
    pub mac: Option<[u8; 6]>,
    pub ifindex: u32,
}

impl SandboxPlan {
    /// Returns the link's MAC as the kernel reports it. Deletes the link
    /// (by index: never a same-named interface of the sandbox) on failure.
    async fn apply(self) -> Result<Materialized, NetworkError> {
        let netlink = Netlink::connect()?;
        let link = netlink.link_by_name(&self.temp_name).await?;
        let result = self.configure(&netlink, link.ifindex).await;
        let Err(failed) = result else {
            return result;
        };
        let mut undo = Vec::new();
        if let Err(e) = netlink.delete_link(link.ifindex).await {
            undo.push(format!("deleting {}: {e}", self.ifname));
        }
        // The programs went with the link; their pins would stay.
        let pins = crate::sys::netns::NetnsId::current()
            .map_err(crate::datapath::DatapathError::Netns)
            .and_then(|netns| {
                crate::datapath::endpoint_hooks::remove_pins(&self.bpf_dir, netns, link.ifindex)
            });
        if let Err(e) = pins {
            undo.push(format!("removing its program pins: {e}"));
        }
        Err(if undo.is_empty() {
            failed
        } else {
            NetworkError::RollbackFailed {
                failed: Box::new(failed),
                undo: undo.join("; "),
            }
        })
    }

    async fn configure(
        &self,
        netlink: &Netlink,
        ifindex: u32,
    ) -> Result<Materialized, NetworkError> {
        netlink.set_alias(ifindex, &self.alias).await?;
        if netlink.link_by_name(&self.ifname).await.is_ok() {
            return Err(NetworkError::BadEndpoint(format!(
                "the sandbox already has an interface named {}",
                self.ifname
            )));
        }
        netlink.rename(ifindex, &self.ifname).await?;
        for address in &self.addresses {
            netlink.add_address(ifindex, *address).await?;
        }
        super::failpoint("connect-after-addresses")?;
        let mac = netlink.link_by_index(ifindex).await?.mac;
        // Before the link is up: no frame ever leaves unchecked or
        // uncounted.
        let mut config = egress_config(mac, &self.addresses);
        if self.spoofcheck {
            config.flags |= EGRESS_ENFORCE;
        }
        crate::datapath::endpoint_hooks::attach(&self.bpf_dir, ifindex, &self.ifname, &config)?;
        super::failpoint("connect-after-programs")?;
        announce_on_up(&self.ifname);
        netlink.set_up(ifindex).await?;
        super::failpoint("connect-after-up")?;
        for (gateway, ipv6) in &self.routes {
            netlink.add_default_route(ifindex, *gateway, *ipv6).await?;
        }
        super::failpoint("connect-after-routes")?;
        Ok(Materialized { mac, ifindex })
    }
}

/// What the endpoint may send as: its MAC and its addresses.
fn egress_config(mac: Option<[u8; 6]>, addresses: &[IpNet]) -> EgressConfig {
    let mut config = EgressConfig {
        mac: mac.unwrap_or_default(),
        ..EgressConfig::default()
    };
    for address in addresses {
        match address.addr() {
            IpAddr::V4(v4) => {
                config.ipv4 = v4.octets();
                config.flags |= EGRESS_HAS_IPV4;
            }
            IpAddr::V6(v6) => {
                config.ipv6 = v6.octets();
                config.flags |= EGRESS_HAS_IPV6;
            }
        }
    }
    config
}

/// Asks the kernel to announce the endpoint when it comes up: a gratuitous
/// ARP (`arp_notify`) and an unsolicited neighbour advertisement
/// (`ndisc_notify`), so switches and peers learn the new MAC at once.
/// `/proc/sys/net` resolves to the calling thread's namespace. Best effort:
/// an announcement that cannot be arranged is logged, never fatal.
fn announce_on_up(ifname: &str) {
    for (family, knob) in [("ipv4", "arp_notify"), ("ipv6", "ndisc_notify")] {
        let path = format!("/proc/sys/net/{family}/conf/{ifname}/{knob}");
        if let Err(e) = std::fs::write(&path, "1") {
            // No IPv6 in the sandbox is normal.
            tracing::debug!("cannot set {path}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_derived_from_the_ipv4_address_like_docker() {
        assert_eq!(
            Mac(mac_from_ipv4("172.16.86.2".parse().unwrap())).to_string(),
            "02:42:ac:10:56:02"
        );
    }

    #[test]
    fn endpoints_stored_before_connect_order_was_kept_still_load() {
        let stored = r#"{"id":"ab","sandbox":"web1","netns_path":"/var/run/netns/web1",
            "ifname":"eth0","mac":"02:42:ac:10:56:02","ipv4":"172.16.86.2/24","ipv6":null}"#;
        let endpoint: Endpoint = serde_json::from_str(stored).expect("an old record loads");
        assert_eq!(endpoint.connected, 0, "sorts before every newer endpoint");
        assert_eq!(endpoint.netns, None);
        assert_eq!(endpoint.ipv4, Some("172.16.86.2/24".parse().unwrap()));
    }

    #[test]
    fn mac_flags_are_validated() {
        assert_eq!(
            requested_mac("02:42:AC:10:56:09").unwrap(),
            Mac([2, 0x42, 0xac, 0x10, 0x56, 9])
        );
        assert!(requested_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .to_string()
            .contains("multicast"));
        assert!(requested_mac("02:42:ac:10:56").is_err());
        assert!(requested_mac("zz:42:ac:10:56:02").is_err());
    }

    #[test]
    fn stored_macs_load_as_they_have_always_been_written() {
        let record = |mac: &str| {
            format!(
                r#"{{"id":"ab","sandbox":"web1","netns_path":"/var/run/netns/web1",
                "ifname":"eth0"{mac},"ipv4":"172.16.86.2/24","ipv6":null}}"#
            )
        };
        let load =
            |text: String| serde_json::from_str::<Endpoint>(&text).expect("a stored record loads");
        let macvlan = load(record(r#","mac":"02:42:ac:10:56:02""#));
        assert_eq!(macvlan.mac, Some(Mac([2, 0x42, 0xac, 0x10, 0x56, 2])));
        let ipvlan = load(record(r#","mac":"""#));
        assert_eq!(ipvlan.mac, None);
        assert_eq!(load(record("")).mac, None, "a record without the field");
        // And written back the same way.
        let written = serde_json::to_value(&ipvlan).unwrap();
        assert_eq!(written["mac"], "");
        assert_eq!(
            serde_json::to_value(&macvlan).unwrap()["mac"],
            "02:42:ac:10:56:02"
        );
    }
}
