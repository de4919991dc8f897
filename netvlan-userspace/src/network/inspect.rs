//! Docker-shaped views of networks: `inspect` JSON and `ls` rows.

use serde_json::{json, Map, Value};

use super::{NetworkRecord, ParentKind};

/// `docker network inspect`-shaped JSON for one network.
pub fn inspect(record: &NetworkRecord) -> Value {
    let config: Vec<Value> = record
        .ipam
        .config()
        .subnets()
        .iter()
        .map(|s| {
            let mut entry = Map::new();
            entry.insert("Subnet".into(), json!(s.subnet.to_string()));
            if let Some(gw) = s.gateway {
                entry.insert("Gateway".into(), json!(gw.to_string()));
            }
            if let Some(range) = s.ip_range {
                entry.insert("IPRange".into(), json!(range.to_string()));
            }
            if !s.aux.is_empty() {
                let aux: Map<String, Value> = s
                    .aux
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v.to_string())))
                    .collect();
                entry.insert("AuxiliaryAddresses".into(), Value::Object(aux));
            }
            Value::Object(entry)
        })
        .collect();
    let containers: Map<String, Value> = record
        .endpoints
        .iter()
        .map(|(key, e)| {
            (
                key.clone(),
                json!({
                    "Name": e.sandbox,
                    "EndpointID": e.id,
                    "MacAddress": e.mac,
                    "IPv4Address": e.ipv4.map(|n| n.to_string()).unwrap_or_default(),
                    "IPv6Address": e.ipv6.map(|n| n.to_string()).unwrap_or_default(),
                    "InterfaceName": e.ifname,
                    "Sandbox": e.netns_path,
                }),
            )
        })
        .collect();
    let mut options: Map<String, Value> = record
        .options
        .raw
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if record.ipv6_inferred {
        options.insert(
            "netvlan.ipv6_inferred".into(),
            json!("true: an IPv6 subnet was given"),
        );
    }
    json!({
        "Name": record.name,
        "Id": record.id,
        "Driver": record.options.driver.to_string(),
        "Scope": "local",
        "Internal": record.internal,
        "EnableIPv6": record.enable_ipv6,
        "IPAM": { "Driver": "default", "Config": config },
        "Options": options,
        "Containers": containers,
        "Netvlan": {
            "Parent": record.parent.link,
            "ParentKind": match &record.parent.kind {
                ParentKind::Existing => "existing",
                ParentKind::Vlan { .. } => "vlan",
                ParentKind::Placeholder => "placeholder",
            },
            "ParentCreatedByNetvlan": record.parent.created,
            "DatapathOn": record.parent.wire,
            "DatapathOwned": record.datapath_owned,
            "Policy": {
                "UnknownDst": if record.options.policy.unknown_dst_drop { "drop" } else { "pass" },
                "Vlans": record.options.policy.vlans,
                "MacDeny": record.options.policy.mac_deny.iter().map(crate::datapath::stats::format_mac).collect::<Vec<_>>(),
                "MaxMacs": record.options.policy.max_macs,
                "MaxMacsAction": if record.options.policy.max_macs_count_only { "count" } else { "drop" },
            },
        },
    })
}

/// `docker network ls` rows: id (12 chars), name, driver, scope.
pub fn list_rows(records: &[NetworkRecord]) -> Vec<[String; 4]> {
    records
        .iter()
        .map(|r| {
            [
                r.id[..12].to_string(),
                r.name.clone(),
                r.options.driver.to_string(),
                "local".to_string(),
            ]
        })
        .collect()
}
