//! Default routes: Docker keeps one per family in a sandbox, held by the
//! earliest connected endpoint whose network offers one. Derived from the
//! store alone, so connect, disconnect, check and restore agree.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{driver::Driver, Endpoint, NetworkRecord};

/// A default route: via a gateway (or straight out of the device), IPv6?
pub(crate) type DefaultRoute = (Option<IpAddr>, bool);

/// The default routes a network offers an endpoint with these addresses:
/// per family, via the gateway of the subnet the address belongs to (a
/// network may have several subnets of a family); ipvlan l3/l3s straight
/// out of the device (the host routes); none on an internal network.
pub(crate) fn offered_routes(
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
pub(crate) fn held_routes(
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
