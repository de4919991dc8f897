//! Endpoints: a sandbox's link on a network, as stored, and the connect
//! and disconnect commands (the link itself is [`sandbox_link`]'s).

use std::{net::IpAddr, path::PathBuf};

use ipnet::IpNet;
use netvlan_common::Mac;
use serde::{Deserialize, Serialize};

use super::{
    driver::Driver,
    failpoint::failpoint,
    operation::{Operation, OperationLog},
    options::valid_ifname,
    owner::{new_id, owner_alias},
    routes::{held_routes, DefaultRoute},
    sandbox_link::{self, add_routes_in, endpoint_link, temp_link_name},
    wire_policy::wire_after,
    InvalidRequest, Manager, NetworkError, NetworkRecord,
};
use crate::{
    ipam::{self, Family, Request},
    sys::netlink::MacvlanMode,
    sys::netns::NetnsId,
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
    /// A runtime moves this endpoint's link itself (Docker) and netvlan
    /// has not adopted it in its sandbox yet (see `control::staged`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub staged: bool,
    /// The runtime's attachment it belongs to (CNI: `CNI_CONTAINERID`),
    /// empty for the CLI's; records before it have none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    /// The name reports give it (CNI: the pod's `namespace/name`); empty
    /// for the sandbox's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl Endpoint {
    /// Its addresses with their prefixes, IPv4 first.
    pub fn addresses(&self) -> Vec<IpNet> {
        self.ipv4.iter().chain(self.ipv6.iter()).copied().collect()
    }

    /// The name `stats` and `/metrics` show: its own, else the sandbox.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.sandbox
        } else {
            &self.name
        }
    }

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
    pub(crate) fn sandbox_id(&self) -> Option<NetnsId> {
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
    pub(crate) fn sandbox_alive(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(&self.netns_path) {
            Ok(m) => self
                .netns
                .is_none_or(|id| id.dev == m.dev() && id.ino == m.ino()),
            Err(_) => false,
        }
    }
}

/// What `netvlan connect` asks for (also as the daemon is asked it).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConnectRequest {
    pub network: String,
    pub sandbox: String,
    pub ip: Option<String>,
    pub ip6: Option<String>,
    pub mac: Option<String>,
    pub ifname: Option<String>,
    /// Stored as [`Endpoint::container_id`].
    pub container_id: Option<String>,
    /// Stored as [`Endpoint::name`].
    pub name: Option<String>,
}

/// The `connected` order of an endpoint joining now: after every endpoint
/// of `all` networks (a sandbox's default route follows the first one).
pub(super) fn next_connected<'a>(all: impl IntoIterator<Item = &'a NetworkRecord>) -> u64 {
    1 + all
        .into_iter()
        .flat_map(|n| n.endpoints.values())
        .map(|e| e.connected)
        .max()
        .unwrap_or(0)
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
pub(super) fn requested_mac(text: &str) -> Result<Mac, InvalidRequest> {
    let mac: Mac = text
        .parse()
        .map_err(|_| InvalidRequest::BadMac(text.to_string()))?;
    if mac.is_zero() {
        return Err(InvalidRequest::ZeroMac(text.to_string()));
    }
    if mac.is_multicast() {
        return Err(InvalidRequest::MulticastMac(text.to_string()));
    }
    Ok(mac)
}

/// Addresses with the prefix length of their subnet.
pub(super) fn with_prefix(record: &NetworkRecord, ip: IpAddr) -> IpNet {
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

/// A fresh endpoint id, for a caller that must know it before the connect
/// runs: the CLI hands it to the daemon, and finds the endpoint by it if
/// the daemon dies before it answers.
pub fn new_endpoint_id() -> String {
    new_id()
}

/// Under which key `record` holds the endpoint of `sandbox`: its
/// namespace's, however it is named now; else the name as given (its
/// namespace may be gone).
pub fn endpoint_key(record: &NetworkRecord, sandbox: &str) -> String {
    match Sandbox::resolve(sandbox) {
        Ok(s) => record
            .endpoints
            .iter()
            .find(|(_, e)| e.sandbox_alive() && e.sandbox_id() == Some(s.id))
            .map(|(key, _)| key.clone())
            .unwrap_or(s.key),
        Err(_) => sandbox.to_string(),
    }
}

impl Manager {
    pub async fn connect(
        &self,
        request: ConnectRequest,
    ) -> Result<(NetworkRecord, Endpoint), NetworkError> {
        self.connect_as(request, new_id()).await
    }

    /// [`Manager::connect`] with the endpoint id chosen by the caller
    /// (from [`new_endpoint_id`]).
    pub async fn connect_as(
        &self,
        request: ConnectRequest,
        endpoint_id: String,
    ) -> Result<(NetworkRecord, Endpoint), NetworkError> {
        if endpoint_id.len() != 64
            || !endpoint_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(InvalidRequest::BadEndpointId(endpoint_id).into());
        }
        let (mut record, others) = self.network_among(&request.network)?;
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
        // The endpoint object loads (its maps created) while the rest of
        // the connect runs; dropped unused if it fails.
        let programs = crate::datapath::endpoint_hooks::Loading::start();
        let passthru = record.options.macvlan_mode == Some(MacvlanMode::Passthru);
        if passthru && !record.endpoints.is_empty() {
            return Err(NetworkError::PassthruTaken(record.name));
        }
        let ifname = request.ifname.clone().unwrap_or_else(|| "eth0".into());
        if !valid_ifname(&ifname) {
            return Err(InvalidRequest::BadIfname(ifname).into());
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
                return Err(InvalidRequest::WrongFamily { flag, addr, want }.into());
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
                return Err(InvalidRequest::MacOnIpvlan.into());
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

        let ipv4 = ipv4.map(|ip| with_prefix(&record, ip));
        let ipv6 = ipv6.map(|ip| with_prefix(&record, ip));
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
            connected: next_connected(others.iter().chain([&record])),
            staged: false,
            container_id: request.container_id.clone().unwrap_or_default(),
            name: request.name.clone().unwrap_or_default(),
        };
        // A family whose default route another network of the sandbox
        // already holds gets none here.
        let routes = held_routes(&others, &record, &endpoint);
        let alias = owner_alias(&endpoint_id);
        let temp_name = temp_link_name();
        let mut log = OperationLog::new(self.store());
        log.record(Operation::SandboxLink {
            netns_path: sandbox.path.clone(),
            temp_name: temp_name.clone(),
            alias: alias.clone(),
        })?;
        let made = match sandbox_link::materialize(
            self.netlink(),
            self.datapath().bpf_dir(),
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
            programs,
        )
        .await
        {
            Ok(made) => made,
            // The link cleaned up after itself.
            Err(e) => {
                log.forget();
                return Err(e);
            }
        };

        endpoint.mac = made.mac.map(Mac);
        endpoint.ifindex = made.ifindex;
        record
            .endpoints
            .insert(sandbox.key.clone(), endpoint.clone());
        // Host routes through the shim, then register the endpoint with
        // the datapath before committing.
        let addresses: Vec<IpAddr> = ipv4.iter().chain(ipv6.iter()).map(|n| n.addr()).collect();
        let routed = self.route_endpoint(&record, &addresses, &mut log).await;
        let synced = match routed {
            Ok(()) => {
                self.sync_wire(&record.parent.wire, &wire_after(&others, &record, false))
                    .await
            }
            Err(e) => Err(e),
        };
        let persisted = match synced {
            Ok(()) => failpoint("connect-before-persist")
                .and_then(|()| Ok(self.store().commit_network(&record.name, &record)?)),
            Err(e) => Err(e),
        };
        if let Err(e) = persisted {
            let _ = self
                .sync_wire(
                    &record.parent.wire,
                    &wire_after(&others, &self.network(&record.name)?, false),
                )
                .await;
            return Err(log.undo(self.netlink(), self.datapath(), e).await);
        }
        log.committed();
        Ok((record, endpoint))
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
        let (mut record, others) = self.network_among(network)?;
        let key = endpoint_key(&record, sandbox);
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
        let held = if alive {
            held_routes(&others, &record, &endpoint)
        } else {
            Vec::new()
        };
        record.endpoints.remove(&key);
        if alive {
            // Its default routes go with the link.
            let deleted =
                sandbox_link::delete_link_in(&endpoint.netns_path, &endpoint.ifname).await;
            match deleted {
                Ok(()) => {}
                Err(e) if force => tracing::warn!(
                    "disconnect -f: cannot delete {} in {} ({e}); removing the endpoint anyway",
                    endpoint.ifname,
                    endpoint.sandbox
                ),
                Err(cause) => {
                    return Err(NetworkError::DisconnectFailed {
                        ifname: endpoint.ifname.clone(),
                        sandbox: endpoint.sandbox.clone(),
                        cause: Box::new(cause),
                    })
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
        self.sync_wire(&record.parent.wire, &wire_after(&others, &record, false))
            .await?;
        self.store().put_network(&record.name, &record)?;
        let addresses: Vec<IpAddr> = endpoint
            .ipv4
            .iter()
            .chain(endpoint.ipv6.iter())
            .map(|n| n.addr())
            .collect();
        if let Err(e) = self.unroute_endpoint(&record, &addresses).await {
            // `check` reports the stray route, `restore` deletes it.
            tracing::warn!("disconnect: {e}");
        }
        if !held.is_empty() {
            let after: Vec<NetworkRecord> = others.into_iter().chain([record]).collect();
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
                add_routes_in(endpoint, routes).await.map_err(|cause| {
                    NetworkError::RouteNotMoved {
                        sandbox: gone.sandbox.clone(),
                        network: record.name.clone(),
                        ifname: endpoint.ifname.clone(),
                        cause: Box::new(cause),
                    }
                })?;
            }
        }
        Ok(())
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
        assert_eq!(
            endpoint.container_id, "",
            "no runtime attachment: GC leaves it"
        );
        assert_eq!(endpoint.display_name(), "web1");
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
