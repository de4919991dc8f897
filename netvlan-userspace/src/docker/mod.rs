//! `netvlan docker-plugin`: Docker's remote network driver (libnetwork's
//! CNM "remote driver"), served on a unix socket (see [`server`]). The
//! networks, IPAM, datapath and state are the CLI's, through
//! [`control::Manager`]:
//!
//! - CreateNetwork makes network `docker-<first 12 of the NetworkID>`
//!   from the `-o` options (`parent`, `macvlan_mode`, `ipvlan_mode`, and
//!   netvlan's own keys; `-o driver=ipvlan` picks ipvlan) and Docker's
//!   pools, gateways and aux addresses (or, `-o name=NAME`, network
//!   NAME: made so, or shared when the CLI made it already; see
//!   `shareable`); DeleteNetwork removes it (a shared one keeps all but
//!   Docker's labels).
//! - CreateEndpoint reserves exactly the addresses Docker's IPAM chose and
//!   makes the endpoint's link here, in the plugin's namespace
//!   ([`Manager::stage_endpoint`]; on TCX kernels with its endpoint
//!   programs, which stay on it through the move), answering its MAC when
//!   Docker gave none.
//! - Join answers that link for Docker to move into the sandbox, with the
//!   gateways; once it is there the plugin adopts it (endpoint programs,
//!   namespace, index; see [`adopt`]). Leave and DeleteEndpoint undo.
//!
//! Every call opens the state for itself (as a CLI command does), so
//! `netvlan` commands run beside the plugin, and a restarted plugin picks
//! up where the last one stopped.

mod adopt;
pub mod ipam;
pub mod protocol;
pub mod server;

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::{
    control::{
        offered_routes, CreateRequest, DefaultRoute, Driver, Manager, NetworkError, NetworkRecord,
        StageRequest,
    },
    datapath::{pins, Datapath, DatapathError},
    keyword::Keyword,
    store::{Store, StoreError},
};
use protocol::{
    CreateEndpointRequest, CreateNetworkRequest, EndpointInterface, EndpointRequest, InterfaceName,
    JoinRequest, JoinResponse, NetworkRequest, StaticRoute, ENABLE_IPV6, GENERIC_OPTIONS, INTERNAL,
    ROUTE_CONNECTED,
};

/// Where Docker looks for a plugin named `netvlan`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/netvlan.sock";

/// The label on the networks Docker uses, holding Docker's NetworkID:
/// how every later call (which names only the id) finds its network.
pub const NETWORK_LABEL: &str = "netvlan.docker.network";

/// On a network the CLI made and Docker shares (`-o name=` of a network
/// that exists): Docker only uses it, so DeleteNetwork keeps it.
pub const SHARED_LABEL: &str = "netvlan.docker.shared";

/// The prefix Docker gives the link's name in the sandbox (`eth0`, ...).
const DST_PREFIX: &str = "eth";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("the request body is not valid JSON for {call}")]
    Json {
        call: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{call}: {what} is missing")]
    Missing {
        call: &'static str,
        what: &'static str,
    },
    #[error("network option {0}")]
    BadOption(String),
    #[error("no netvlan network for Docker network {0}")]
    UnknownNetwork(String),
    #[error("netvlan IPAM: {0}")]
    Ipam(String),
    #[error("network {network} cannot be shared with Docker: {why}")]
    NotShareable { network: String, why: String },
    #[error("no endpoint {endpoint} on Docker network {network}")]
    UnknownEndpoint { network: String, endpoint: String },
    #[error("the plugin's socket {socket}")]
    Socket {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    PinsWouldVanish(String),
    #[error(transparent)]
    Network(Box<NetworkError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Datapath(Box<DatapathError>),
    #[error("the plugin is stopping: the call was not run")]
    Stopping,
}

impl From<NetworkError> for DockerError {
    fn from(e: NetworkError) -> Self {
        DockerError::Network(Box::new(e))
    }
}

impl From<DatapathError> for DockerError {
    fn from(e: DatapathError) -> Self {
        DockerError::Datapath(Box::new(e))
    }
}

impl DockerError {
    /// The message Docker shows the user (`Err`): the control plane's own
    /// report line for its errors, with their details.
    pub fn message(&self) -> String {
        match self {
            DockerError::Network(e) => e.report().line(),
            other => {
                let mut text = other.to_string();
                let mut source = std::error::Error::source(other);
                while let Some(s) = source {
                    text.push_str(": ");
                    text.push_str(&s.to_string());
                    source = s.source();
                }
                text
            }
        }
    }
}

/// The plugin: where its state and pins are, and the datapath handle it
/// uses when it runs inside `netvlan daemon` (the daemon's, kept between
/// calls); a plugin of its own opens the datapath per call, as a CLI
/// command does.
#[derive(Clone)]
pub struct Plugin {
    pub bpf_dir: PathBuf,
    pub state_dir: PathBuf,
    pub datapath: Option<Datapath>,
}

impl Plugin {
    /// A plugin of its own (`netvlan docker-plugin`).
    pub fn standalone(bpf_dir: PathBuf, state_dir: PathBuf) -> Plugin {
        Plugin {
            bpf_dir,
            state_dir,
            datapath: None,
        }
    }
}

/// The netvlan network of a Docker network not named with `-o name=`.
pub fn network_name(network_id: &str) -> String {
    format!("docker-{}", short(network_id))
}

/// The endpoint's key among its network's endpoints until it joins.
pub fn endpoint_key(endpoint_id: &str) -> String {
    format!("docker-{}", short(endpoint_id))
}

/// The endpoint's link in the plugin's namespace (`nvd` + 10 hex digits:
/// 13 characters, within the kernel's 15).
pub fn link_name(endpoint_id: &str) -> String {
    format!(
        "nvd{}",
        &short(endpoint_id)[..10.min(short(endpoint_id).len())]
    )
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

fn require(call: &'static str, what: &'static str, value: &str) -> Result<(), DockerError> {
    if value.is_empty() {
        return Err(DockerError::Missing { call, what });
    }
    Ok(())
}

/// An address without its prefix length (`172.16.86.1/24` → `172.16.86.1`).
fn bare(cidr: &str) -> &str {
    cidr.split_once('/').map_or(cidr, |(ip, _)| ip)
}

fn flag(options: &std::collections::BTreeMap<String, Value>, key: &str) -> bool {
    match options.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

impl Plugin {
    async fn manager(&self) -> Result<Manager, DockerError> {
        pins::check_pins_persist(&self.bpf_dir)
            .map_err(|e| DockerError::PinsWouldVanish(e.to_string()))?;
        let datapath = match &self.datapath {
            Some(kept) => kept.clone(),
            None => Datapath::open(&self.bpf_dir)?,
        };
        let (manager, recovered) = Manager::open(Store::open(&self.state_dir)?, datapath).await?;
        for line in recovered {
            tracing::info!("recovered: {line}");
        }
        Ok(manager)
    }

    /// The netvlan network of a Docker network: the one whose label holds
    /// its id (its name is the plugin's `docker-...` or the one `-o name=`
    /// gave).
    /// The plugin's own name is tried first: one record read on every
    /// endpoint call, the scan of all networks only for a named one.
    fn network_of(manager: &Manager, network_id: &str) -> Result<String, DockerError> {
        let ours =
            |r: &NetworkRecord| r.labels.get(NETWORK_LABEL).map(String::as_str) == Some(network_id);
        match manager.network(&network_name(network_id)) {
            Ok(record) if ours(&record) => return Ok(record.name),
            Ok(_) | Err(NetworkError::UnknownNetwork(_)) => {}
            Err(e) => return Err(e.into()),
        }
        manager
            .networks()?
            .into_iter()
            .find(ours)
            .map(|r| r.name)
            .ok_or_else(|| DockerError::UnknownNetwork(network_id.into()))
    }

    /// The network of `-o name=NAME` is shared when the CLI made it
    /// already (its options, parent and subnets must agree with Docker's
    /// request), else made under that name; without `name`, it is
    /// `docker-<id>`.
    pub async fn create_network(
        &self,
        request: CreateNetworkRequest,
    ) -> Result<Value, DockerError> {
        let wanted = create_request(&request)?;
        let manager = self.manager().await?;
        if wanted.named {
            match manager.network(&wanted.create.name) {
                Ok(existing) => {
                    shareable(&wanted, &existing)?;
                    manager.relabel(
                        &existing.name,
                        &[
                            (NETWORK_LABEL, Some(&request.network_id)),
                            (SHARED_LABEL, Some("1")),
                        ],
                    )?;
                    return Ok(json!({}));
                }
                Err(NetworkError::UnknownNetwork(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        wanted.require_parent()?;
        manager.create(wanted.create).await?;
        Ok(json!({}))
    }

    /// Removes the network, or, one shared with the CLI, only Docker's
    /// labels from it (its CLI endpoints stay).
    pub async fn delete_network(&self, request: NetworkRequest) -> Result<Value, DockerError> {
        require("DeleteNetwork", "NetworkID", &request.network_id)?;
        let manager = self.manager().await?;
        let name = Self::network_of(&manager, &request.network_id)?;
        if manager.network(&name)?.labels.contains_key(SHARED_LABEL) {
            manager.relabel(&name, &[(NETWORK_LABEL, None), (SHARED_LABEL, None)])?;
        } else {
            manager.remove(&name).await?;
        }
        Ok(json!({}))
    }

    pub async fn create_endpoint(
        &self,
        request: CreateEndpointRequest,
    ) -> Result<Value, DockerError> {
        const CALL: &str = "CreateEndpoint";
        require(CALL, "NetworkID", &request.network_id)?;
        require(CALL, "EndpointID", &request.endpoint_id)?;
        let given = request.interface.unwrap_or_default();
        let some = |s: &str| (!s.is_empty()).then(|| bare(s).to_string());
        let manager = self.manager().await?;
        let network = Self::network_of(&manager, &request.network_id)?;
        let (_, endpoint) = manager
            .stage_endpoint(StageRequest {
                network,
                key: endpoint_key(&request.endpoint_id),
                id: request.endpoint_id.clone(),
                ip: some(&given.address),
                ip6: some(&given.address_ipv6),
                mac: some(&given.mac_address),
                link_name: link_name(&request.endpoint_id),
            })
            .await?;
        // Docker refuses an answer that changes what it gave: only the MAC
        // it left to the driver.
        let mut answer = EndpointInterface::default();
        if given.mac_address.is_empty() {
            answer.mac_address = endpoint.mac_text();
        }
        if answer.mac_address.is_empty() {
            return Ok(json!({}));
        }
        Ok(json!({ "Interface": answer }))
    }

    pub async fn endpoint_info(&self, request: EndpointRequest) -> Result<Value, DockerError> {
        let manager = self.manager().await?;
        let network = Self::network_of(&manager, &request.network_id)?;
        let endpoint = find_endpoint(&manager, &network, &request)?;
        Ok(json!({ "Value": {
            "netvlan.network": network,
            "netvlan.ifname": endpoint.ifname,
            "netvlan.mac": endpoint.mac_text(),
            "netvlan.sandbox": endpoint.netns_path.display().to_string(),
            "netvlan.adopted": !endpoint.staged,
        }}))
    }

    pub async fn delete_endpoint(&self, request: EndpointRequest) -> Result<Value, DockerError> {
        let manager = self.manager().await?;
        let network = Self::network_of(&manager, &request.network_id)?;
        find_endpoint(&manager, &network, &request)?;
        manager
            .unstage_endpoint(&network, &endpoint_key(&request.endpoint_id))
            .await?;
        Ok(json!({}))
    }

    /// Join: the answer for Docker, and the netvlan network the endpoint
    /// is on (where its adoption looks).
    pub async fn join(&self, request: JoinRequest) -> Result<(String, JoinResponse), DockerError> {
        const CALL: &str = "Join";
        require(CALL, "SandboxKey", &request.sandbox_key)?;
        let manager = self.manager().await?;
        let network = Self::network_of(&manager, &request.network_id)?;
        let endpoint = find_endpoint(
            &manager,
            &network,
            &EndpointRequest {
                network_id: request.network_id.clone(),
                endpoint_id: request.endpoint_id.clone(),
            },
        )?;
        let record = manager.network(&network)?;
        let key = endpoint_key(&request.endpoint_id);
        manager.expect_move(&network, &key, request.sandbox_key.clone().into())?;
        let mut response = JoinResponse {
            interface_name: InterfaceName {
                src_name: link_name(&request.endpoint_id),
                dst_prefix: DST_PREFIX.into(),
            },
            gateway: String::new(),
            gateway_ipv6: String::new(),
            static_routes: Vec::new(),
        };
        join_routes(
            &mut response,
            &offered_routes(&record, endpoint.ipv4, endpoint.ipv6),
        );
        Ok((network, response))
    }

    pub async fn leave(&self, request: EndpointRequest) -> Result<Value, DockerError> {
        let manager = self.manager().await?;
        let network = Self::network_of(&manager, &request.network_id)?;
        find_endpoint(&manager, &network, &request)?;
        manager
            .unadopt(
                &network,
                &endpoint_key(&request.endpoint_id),
                &link_name(&request.endpoint_id),
            )
            .await?;
        Ok(json!({}))
    }

    /// Program/RevokeExternalConnectivity: the endpoint is on the LAN
    /// itself; there is nothing to publish or NAT. The call is checked.
    pub async fn external(&self, request: EndpointRequest) -> Result<Value, DockerError> {
        let manager = self.manager().await?;
        let network = Self::network_of(&manager, &request.network_id)?;
        find_endpoint(&manager, &network, &request)?;
        Ok(json!({}))
    }
}

/// What CreateNetwork asks for.
#[derive(Debug)]
struct DockerNetwork {
    /// The network to make, labelled with Docker's id.
    create: CreateRequest,
    /// `-o name=` gave its name (else it is `docker-<id>`).
    named: bool,
    /// `-o driver=` or an `ipvlan_*` option chose the driver.
    driver_given: bool,
    /// `-o parent=`, if given.
    parent: Option<String>,
    /// Docker's pools, each with its gateway.
    pools: Vec<(String, Option<String>)>,
}

impl DockerNetwork {
    /// A network to make needs its parent, unless it is `--internal`.
    fn require_parent(&self) -> Result<(), DockerError> {
        if self.parent.is_none() && !self.create.internal {
            return Err(DockerError::BadOption(
                "parent is missing: give the parent link with -o parent=IFACE (or --internal for a network without one)".into(),
            ));
        }
        Ok(())
    }
}

/// Whether Docker's request fits the CLI's network `existing`, to share it:
/// not already Docker's, no options of its own (the network keeps the
/// CLI's), the same parent, driver and internal flag if given, and every
/// pool one of its subnets with the same gateway. Aux addresses are
/// refused: the CLI's IPAM would not know them (reserve them with
/// `netvlan network create --aux-address`).
fn shareable(wanted: &DockerNetwork, existing: &NetworkRecord) -> Result<(), DockerError> {
    let refuse = |why: String| {
        Err(DockerError::NotShareable {
            network: existing.name.clone(),
            why,
        })
    };
    if let Some(id) = existing.labels.get(NETWORK_LABEL) {
        return refuse(format!("it is Docker network {id} already"));
    }
    if let Some(option) = wanted
        .create
        .options
        .iter()
        .find(|o| !o.starts_with("parent="))
    {
        return refuse(format!(
            "-o {option}: a shared network keeps the options it was created with"
        ));
    }
    if let Some(parent) = wanted
        .parent
        .as_ref()
        .filter(|p| **p != existing.parent.link)
    {
        return refuse(format!(
            "its parent is {}, not {parent}",
            existing.parent.link
        ));
    }
    if wanted.driver_given && wanted.create.driver != existing.options.driver {
        return refuse(format!(
            "its driver is {}, not {}",
            existing.options.driver.name(),
            wanted.create.driver.name()
        ));
    }
    if wanted.create.internal != existing.internal {
        return refuse(if existing.internal {
            "it is internal: give --internal".into()
        } else {
            "it is not internal: leave out --internal".into()
        });
    }
    if !wanted.create.aux_addresses.is_empty() {
        return refuse(
            "aux addresses: reserve them on the network itself (netvlan network create --aux-address)"
                .into(),
        );
    }
    let config = existing.ipam.config();
    let subnets = config.subnets();
    let listed = || {
        subnets
            .iter()
            .map(|s| s.subnet.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (pool, gateway) in &wanted.pools {
        let Some(subnet) = subnets.iter().find(|s| s.subnet.to_string() == *pool) else {
            return refuse(format!(
                "its subnets are {}, Docker's pool is {pool} (give --subnet)",
                listed()
            ));
        };
        let stored = subnet.gateway.map(|g| g.to_string());
        if gateway.is_some() && *gateway != stored {
            return refuse(format!(
                "the gateway of {pool} is {}, not {}",
                stored.as_deref().unwrap_or("none"),
                gateway.as_deref().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// CreateNetwork's request as the control plane's: Docker's `-o` options
/// (`driver` and `name` are the plugin's own), pools, gateways and aux
/// addresses.
fn create_request(request: &CreateNetworkRequest) -> Result<DockerNetwork, DockerError> {
    const CALL: &str = "CreateNetwork";
    require(CALL, "NetworkID", &request.network_id)?;
    let mut options = Vec::new();
    let mut driver = None;
    let mut parent = None;
    let mut name = None;
    if let Some(generic) = request.options.get(GENERIC_OPTIONS) {
        let Value::Object(generic) = generic else {
            return Err(DockerError::BadOption(format!(
                "{GENERIC_OPTIONS} is not an object of -o options"
            )));
        };
        for (key, value) in generic {
            let Value::String(value) = value else {
                return Err(DockerError::BadOption(format!(
                    "{key}: {value} is not a string"
                )));
            };
            match key.as_str() {
                "driver" => {
                    driver = Some(value.parse::<Driver>().map_err(|_| {
                        DockerError::BadOption(format!(
                            "driver={value}: expected macvlan or ipvlan"
                        ))
                    })?)
                }
                "name" if value.is_empty() => {
                    return Err(DockerError::BadOption(
                        "name is empty: -o name=NETWORK names the netvlan network".into(),
                    ))
                }
                "name" => name = Some(value.clone()),
                _ => {
                    if key == "parent" && !value.is_empty() {
                        parent = Some(value.clone());
                    }
                    if key.starts_with("ipvlan_") && driver.is_none() {
                        driver = Some(Driver::Ipvlan);
                    }
                    options.push(format!("{key}={value}"));
                }
            }
        }
    }
    let internal = flag(&request.options, INTERNAL);
    let pools = request.ipv4_data.iter().chain(request.ipv6_data.iter());
    let mut wanted = DockerNetwork {
        named: name.is_some(),
        driver_given: driver.is_some(),
        parent,
        pools: Vec::new(),
        create: CreateRequest::default(),
    };
    let mut create = CreateRequest {
        name: name.unwrap_or_else(|| network_name(&request.network_id)),
        driver: driver.unwrap_or_default(),
        ipv6: flag(&request.options, ENABLE_IPV6) || !request.ipv6_data.is_empty(),
        internal,
        options,
        labels: vec![format!("{NETWORK_LABEL}={}", request.network_id)],
        ..Default::default()
    };
    for pool in pools {
        if pool.pool.is_empty() {
            return Err(DockerError::Missing {
                call: CALL,
                what: "the Pool of an IPv4Data/IPv6Data entry",
            });
        }
        create.subnets.push(pool.pool.clone());
        let gateway = (!pool.gateway.is_empty()).then(|| bare(&pool.gateway).to_string());
        if let Some(gateway) = &gateway {
            create.gateways.push(gateway.clone());
        }
        wanted.pools.push((pool.pool.clone(), gateway));
        for (name, address) in &pool.aux_addresses {
            create
                .aux_addresses
                .push(format!("{name}={}", bare(address)));
        }
    }
    wanted.create = create;
    Ok(wanted)
}

/// Join's routes: the default routes the CLI's connect installs for the
/// same network and addresses ([`offered_routes`]). Via a gateway: the
/// `Gateway`/`GatewayIPv6` Docker routes through; straight out of the
/// link (ipvlan l3/l3s, where the host routes): a connected (RouteType 1)
/// default in `StaticRoutes`, as Docker's own ipvlan driver answers in
/// l3 mode (and so Docker needs no gateway network of its own for it).
fn join_routes(response: &mut JoinResponse, routes: &[DefaultRoute]) {
    for (via, ipv6) in routes {
        match (via, ipv6) {
            (Some(gateway), false) => response.gateway = gateway.to_string(),
            (Some(gateway), true) => response.gateway_ipv6 = gateway.to_string(),
            (None, v6) => response.static_routes.push(StaticRoute {
                destination: if *v6 { "::/0" } else { "0.0.0.0/0" }.into(),
                route_type: ROUTE_CONNECTED,
                next_hop: String::new(),
            }),
        }
    }
}

fn find_endpoint(
    manager: &Manager,
    network: &str,
    request: &EndpointRequest,
) -> Result<crate::control::Endpoint, DockerError> {
    require("an endpoint call", "EndpointID", &request.endpoint_id)?;
    manager
        .network(network)?
        .endpoints
        .get(&endpoint_key(&request.endpoint_id))
        .filter(|e| e.id == request.endpoint_id)
        .cloned()
        .ok_or_else(|| DockerError::UnknownEndpoint {
            network: request.network_id.clone(),
            endpoint: request.endpoint_id.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> CreateNetworkRequest {
        serde_json::from_value(body).expect("a CreateNetwork body")
    }

    #[test]
    fn docker_options_and_ipam_data_become_a_create_request() {
        let id = "0123456789abcdef0123456789abcdef";
        let create = create_request(&request(json!({
            "NetworkID": id,
            "Options": {
                "com.docker.network.generic": {"parent": "eth0.50", "ipvlan_mode": "l3"},
                "com.docker.network.enable_ipv6": false,
            },
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.1.0.0/24",
                          "Gateway": "10.1.0.1/24", "AuxAddresses": {"r": "10.1.0.9/24"}}],
            "IPv6Data": [{"Pool": "fd00:1::/64", "Gateway": "fd00:1::1/64"}],
        })))
        .unwrap()
        .create;
        assert_eq!(create.name, "docker-0123456789ab");
        assert_eq!(
            create.driver,
            Driver::Ipvlan,
            "an ipvlan_* option implies ipvlan"
        );
        assert_eq!(create.options, ["ipvlan_mode=l3", "parent=eth0.50"]);
        assert_eq!(create.subnets, ["10.1.0.0/24", "fd00:1::/64"]);
        assert_eq!(create.gateways, ["10.1.0.1", "fd00:1::1"]);
        assert_eq!(create.aux_addresses, ["r=10.1.0.9"]);
        assert!(create.ipv6, "an IPv6 pool switches IPv6 on");
        assert_eq!(create.labels, [format!("{NETWORK_LABEL}={id}")]);
    }

    #[test]
    fn bad_options_are_refused_naming_them() {
        let refused = |options: Value| {
            create_request(&request(json!({
                "NetworkID": "ab",
                "Options": options,
                "IPv4Data": [{"Pool": "10.1.0.0/24"}],
            })))
            .and_then(|wanted| wanted.require_parent())
            .unwrap_err()
            .message()
        };
        assert!(refused(json!({})).contains("parent is missing"));
        assert!(refused(
            json!({"com.docker.network.generic": {"parent": "eth0", "driver": "bridge"}})
        )
        .contains("driver=bridge"));
        assert!(refused(json!({"com.docker.network.generic": {"parent": 7}})).contains("parent"));
        assert!(refused(json!({"com.docker.network.generic": {"name": ""}})).contains("name"));
        // --internal needs no parent.
        let internal = create_request(&request(json!({
            "NetworkID": "ab",
            "Options": {"com.docker.network.internal": true},
        })))
        .unwrap();
        internal.require_parent().unwrap();
        assert!(internal.create.internal);
        let missing = create_request(&request(json!({"Options": {}}))).unwrap_err();
        assert!(
            missing.message().contains("NetworkID"),
            "{}",
            missing.message()
        );
    }

    /// `-o name=` of a network the CLI made shares it when Docker's
    /// request agrees with it, and is refused naming what differs.
    #[test]
    fn a_cli_network_is_shared_only_when_docker_asks_for_what_it_is() {
        use crate::control::fixture::network;
        let lan = network("lan", Driver::Macvlan, "10.1.0.0/24", &[]);
        let wanted = |generic: Value, pool: &str, gateway: &str| {
            create_request(&request(json!({
                "NetworkID": "ab",
                "Options": {"com.docker.network.generic": generic},
                "IPv4Data": [{"Pool": pool, "Gateway": gateway}],
            })))
            .unwrap()
        };
        let named = wanted(json!({"name": "lan"}), "10.1.0.0/24", "10.1.0.1/24");
        assert!(named.named);
        assert_eq!(named.create.name, "lan");
        shareable(&named, &lan).unwrap();
        shareable(
            &wanted(
                json!({"name": "lan", "parent": "eth0", "driver": "macvlan"}),
                "10.1.0.0/24",
                "",
            ),
            &lan,
        )
        .unwrap();
        let why = |generic: Value, pool: &str, gateway: &str| {
            shareable(&wanted(generic, pool, gateway), &lan)
                .unwrap_err()
                .message()
        };
        assert!(
            why(json!({"name": "lan"}), "10.2.0.0/24", "").contains("10.1.0.0/24"),
            "names the network's subnets"
        );
        assert!(why(json!({"name": "lan"}), "10.1.0.0/24", "10.1.0.9/24").contains("10.1.0.9"));
        assert!(
            why(json!({"name": "lan", "parent": "eth1"}), "10.1.0.0/24", "")
                .contains("its parent is eth0, not eth1")
        );
        assert!(why(
            json!({"name": "lan", "driver": "ipvlan"}),
            "10.1.0.0/24",
            ""
        )
        .contains("driver"));
        assert!(why(
            json!({"name": "lan", "macvlan_mode": "vepa"}),
            "10.1.0.0/24",
            ""
        )
        .contains("-o macvlan_mode=vepa"));
        let mut taken = lan.clone();
        taken.labels.insert(NETWORK_LABEL.into(), "cd".into());
        assert!(shareable(&named, &taken)
            .unwrap_err()
            .message()
            .contains("Docker network cd"));
    }

    /// Join's answer for `record` and an endpoint at 10.1.0.5.
    fn joined(record: &crate::control::NetworkRecord) -> Value {
        let mut response = JoinResponse {
            interface_name: InterfaceName {
                src_name: "nvd0".into(),
                dst_prefix: DST_PREFIX.into(),
            },
            gateway: String::new(),
            gateway_ipv6: String::new(),
            static_routes: Vec::new(),
        };
        let address = Some("10.1.0.5/24".parse().unwrap());
        join_routes(&mut response, &offered_routes(record, address, None));
        serde_json::to_value(response).unwrap()
    }

    #[test]
    fn join_answers_the_routes_the_cli_installs() {
        use crate::control::fixture::network;
        // Via the subnet's gateway: Docker's Gateway, no static route.
        let macvlan = joined(&network("m", Driver::Macvlan, "10.1.0.0/24", &[]));
        assert_eq!(macvlan["Gateway"], "10.1.0.1", "{macvlan:#}");
        assert!(macvlan.get("StaticRoutes").is_none(), "{macvlan:#}");
        // ipvlan l3: the host routes; a connected default out of the link.
        for mode in ["l3", "l3s"] {
            let option = format!("ipvlan_mode={mode}");
            let l3 = joined(&network(
                "i",
                Driver::Ipvlan,
                "10.1.0.0/24",
                &[option.as_str()],
            ));
            assert!(l3.get("Gateway").is_none(), "{l3:#}");
            assert_eq!(
                l3["StaticRoutes"],
                json!([{"Destination": "0.0.0.0/0", "RouteType": ROUTE_CONNECTED}]),
                "{l3:#}"
            );
        }
        // Internal: no route at all.
        let mut internal = network("n", Driver::Macvlan, "10.1.0.0/24", &[]);
        internal.internal = true;
        let internal = joined(&internal);
        assert!(internal.get("Gateway").is_none(), "{internal:#}");
        assert!(internal.get("StaticRoutes").is_none(), "{internal:#}");
    }

    #[test]
    fn link_names_fit_the_kernel_limit() {
        let id = "f".repeat(64);
        assert_eq!(link_name(&id), "nvdffffffffff");
        assert!(link_name(&id).len() <= 15);
        assert_eq!(endpoint_key(&id), "docker-ffffffffffff");
        assert_eq!(link_name("abc"), "nvdabc");
    }
}
