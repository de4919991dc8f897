//! Records for unit tests: networks as the store would hold them, built
//! from the same flags and `-o` options a user gives.

use std::collections::BTreeMap;

use super::{Driver, Endpoint, NetworkOptions, NetworkRecord, Parent, ParentKind};
use crate::ipam::{GatewayPolicy, IpamConfig, IpamState};

/// Network `name` of `driver` on parent `eth0` (the wire), with one
/// subnet and the given `-o` options.
pub(crate) fn network(name: &str, driver: Driver, subnet: &str, options: &[&str]) -> NetworkRecord {
    let ipam = IpamConfig::from_flags(
        &[subnet.parse().unwrap()],
        &[],
        &[],
        &[],
        GatewayPolicy::FirstUsable,
    )
    .unwrap();
    let mut options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
    options.push("parent=eth0".into());
    NetworkRecord {
        id: "ab".repeat(32),
        name: name.into(),
        options: NetworkOptions::parse(driver, &options).unwrap(),
        parent: Parent {
            link: "eth0".into(),
            wire: "eth0".into(),
            kind: ParentKind::Existing,
            created: false,
        },
        internal: false,
        enable_ipv6: false,
        ipv6_inferred: false,
        ipam: IpamState::new(ipam),
        endpoints: BTreeMap::new(),
        datapath_owned: true,
        created: Some("2026-12-01T06:00:00.5Z".into()),
        labels: BTreeMap::from([("team".into(), "web".into())]),
        host_access: Default::default(),
    }
}

/// An endpoint of sandbox `sandbox` with `mac` (`""` for ipvlan) and
/// IPv4 address `ipv4`, as stored.
pub(crate) fn endpoint(sandbox: &str, mac: &str, ipv4: &str) -> Endpoint {
    serde_json::from_value(serde_json::json!({
        "id": "cd",
        "sandbox": sandbox,
        "netns_path": format!("/var/run/netns/{sandbox}"),
        "ifname": "eth0",
        "mac": mac,
        "ipv4": ipv4,
        "ipv6": null,
    }))
    .unwrap()
}
