//! libnetwork's remote network-driver protocol: the JSON bodies of its
//! calls, field names as in `libnetwork/drivers/remote/api/api.go`.
//! Fields libnetwork may leave out default to empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The media type every plugin answer carries.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// The `-o KEY=VALUE` options of `docker network create`, inside
/// CreateNetwork's `Options`.
pub const GENERIC_OPTIONS: &str = "com.docker.network.generic";
/// `--ipv6`, inside CreateNetwork's `Options`.
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// `--internal`, inside CreateNetwork's `Options`.
pub const INTERNAL: &str = "com.docker.network.internal";

/// One address pool of a network, from Docker's IPAM.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    /// `172.16.86.0/24`.
    pub pool: String,
    /// `172.16.86.1/24` (the gateway with the pool's prefix length).
    pub gateway: String,
    /// Name to `ip/len`.
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Vec<IpamData>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct NetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// An endpoint's addresses and MAC (`ip/len`, `aa:bb:...`; empty: none).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(rename = "AddressIPv6", skip_serializing_if = "String::is_empty")]
    pub address_ipv6: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface")]
    pub interface: Option<EndpointInterface>,
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, Value>,
}

/// DeleteEndpoint, EndpointOperInfo, Leave,
/// Program/RevokeExternalConnectivity.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct JoinRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "SandboxKey")]
    pub sandbox_key: String,
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, Value>,
}

/// The link Docker moves into the sandbox and names `DstPrefix` + a number.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

/// A static route's `RouteType`: via its `NextHop`.
pub const ROUTE_NEXT_HOP: u8 = 0;
/// A static route's `RouteType`: connected (straight out of the link).
pub const ROUTE_CONNECTED: u8 = 1;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StaticRoute {
    pub destination: String,
    /// [`ROUTE_NEXT_HOP`] or [`ROUTE_CONNECTED`].
    pub route_type: u8,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_hop: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    pub interface_name: InterfaceName,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub static_routes: Vec<StaticRoute>,
}

/// IpamDriver.RequestAddress's `Options` key saying what the address is
/// for, and its value for a network's gateway.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
pub const GATEWAY_ADDRESS: &str = "com.docker.network.gateway";

/// libnetwork's remote IPAM protocol (`ipams/remote/api/api.go`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPoolRequest {
    pub address_space: String,
    /// `--subnet` (empty: the driver would pick one).
    pub pool: String,
    /// `--ip-range`.
    pub sub_pool: String,
    /// `--ipam-opt`; libnetwork sends `null` for none.
    pub options: Option<BTreeMap<String, String>>,
    #[serde(rename = "V6")]
    pub v6: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleasePoolRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The address asked for (`--ip`, `--gateway`, an aux address), bare.
    pub address: String,
    /// libnetwork sends `null` for none.
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleaseAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
}
