//! Docker-shaped views of networks: `inspect` JSON, `ls` rows and filters.

use serde_json::{json, Map, Value};

use super::{InvalidRequest, NetworkError, NetworkRecord, ParentKind};

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
    // Docker keys containers by id; an endpoint's id is netvlan's. What
    // Docker has no field for (the link's name, the sandbox's path) is
    // under `Netvlan.Endpoints`, keyed the same way.
    let containers: Map<String, Value> = record
        .endpoints
        .values()
        .map(|e| {
            (
                e.id.clone(),
                json!({
                    "Name": e.sandbox,
                    "EndpointID": e.id,
                    "MacAddress": e.mac_text(),
                    "IPv4Address": e.ipv4.map(|n| n.to_string()).unwrap_or_default(),
                    "IPv6Address": e.ipv6.map(|n| n.to_string()).unwrap_or_default(),
                }),
            )
        })
        .collect();
    let endpoints: Map<String, Value> = record
        .endpoints
        .values()
        .map(|e| {
            (
                e.id.clone(),
                json!({
                    "Sandbox": e.sandbox,
                    "InterfaceName": e.ifname,
                    "SandboxPath": e.netns_path,
                }),
            )
        })
        .collect();
    let options: Map<String, Value> = record
        .options
        .raw
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "Name": record.name,
        "Id": record.id,
        // Docker's zero time for networks stored before netvlan kept it.
        "Created": record.created.as_deref().unwrap_or("0001-01-01T00:00:00Z"),
        "Scope": "local",
        "Driver": record.options.driver.to_string(),
        "EnableIPv4": record.ipam.config().has_family(crate::ipam::Family::V4),
        "EnableIPv6": record.enable_ipv6,
        "IPAM": { "Driver": "default", "Options": {}, "Config": config },
        "Internal": record.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": record.labels,
        "HostAccess": super::host_access::inspect(record),
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
            // The hook asked for (`auto` picks per driver; `datapath status`
            // shows the one it runs at).
            "Hook": record.options.hook.to_string(),
            // IPv6 was switched on because an IPv6 subnet was given.
            "IPv6Inferred": record.ipv6_inferred,
            "Endpoints": endpoints,
            "Policy": {
                "UnknownDst": if record.options.policy.unknown_dst_drop { "drop" } else { "pass" },
                "Vlans": record.options.policy.vlans,
                "MacDeny": record.options.policy.mac_deny.iter().map(|m| netvlan_common::Mac(*m).to_string()).collect::<Vec<_>>(),
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

/// `network ls --filter KEY=VALUE`, as Docker reads them: several
/// driver, name or id values are alternatives, every label must match, and
/// so must every kind of filter given.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    drivers: Vec<String>,
    /// Substrings of the name.
    names: Vec<String>,
    /// `KEY` (the label is set) or `KEY=VALUE`.
    labels: Vec<(String, Option<String>)>,
    /// Prefixes of the id.
    ids: Vec<String>,
}

impl ListFilter {
    pub fn parse(filters: &[String]) -> Result<Self, NetworkError> {
        let mut filter = ListFilter::default();
        for text in filters {
            let bad = |why: &str| {
                NetworkError::from(InvalidRequest::BadFilter {
                    filter: text.clone(),
                    reason: why.to_string(),
                })
            };
            let (key, value) = text
                .split_once('=')
                .ok_or_else(|| bad("expected KEY=VALUE"))?;
            if value.is_empty() {
                return Err(bad("the value is empty"));
            }
            match key {
                "driver" => filter.drivers.push(value.to_string()),
                "name" => filter.names.push(value.to_string()),
                "id" => filter.ids.push(value.to_string()),
                "label" => filter.labels.push(match value.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (value.to_string(), None),
                }),
                _ => return Err(bad("the keys are driver, name, label and id")),
            }
        }
        Ok(filter)
    }

    pub fn matches(&self, record: &NetworkRecord) -> bool {
        let driver = record.options.driver.to_string();
        (self.drivers.is_empty() || self.drivers.contains(&driver))
            && (self.names.is_empty() || self.names.iter().any(|n| record.name.contains(n)))
            && (self.ids.is_empty() || self.ids.iter().any(|i| record.id.starts_with(i)))
            && self.labels.iter().all(|(key, value)| {
                record
                    .labels
                    .get(key)
                    .is_some_and(|v| value.as_ref().is_none_or(|want| want == v))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{fixture, Driver};

    fn record() -> NetworkRecord {
        fixture::network("lan", Driver::Macvlan, "10.1.0.0/24", &[])
    }

    #[test]
    fn a_record_stored_before_created_and_labels_reads_as_docker_zero_values() {
        let mut stored = serde_json::to_value(record()).unwrap();
        let fields = stored.as_object_mut().unwrap();
        fields.remove("created");
        fields.remove("labels");
        fields.remove("host_access");
        fields["options"]
            .as_object_mut()
            .unwrap()
            .remove("host_access");
        let old: NetworkRecord = serde_json::from_value(stored).unwrap();
        let shown = inspect(&old);
        assert_eq!(shown["Created"], "0001-01-01T00:00:00Z");
        assert_eq!(shown["Labels"], json!({}));
        // Host access did not exist: off, as in Docker, and no link.
        assert_eq!(
            shown["HostAccess"],
            json!({"Mode": "off", "Requested": "off", "Addresses": []})
        );
    }

    #[test]
    fn filters_match_as_dockers_do() {
        let r = record();
        let matches = |filters: &[&str]| {
            let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
            ListFilter::parse(&filters).unwrap().matches(&r)
        };
        assert!(matches(&[]));
        assert!(matches(&["driver=macvlan", "name=la", "label=team"]));
        assert!(
            matches(&["name=nope", "name=an"]),
            "one key's values are alternatives"
        );
        assert!(!matches(&["label=team=db"]));
        assert!(!matches(&["driver=ipvlan"]));
        assert!(matches(&[&format!("id={}", &r.id[..6])]));
        let err = ListFilter::parse(&["size=3".into()]).unwrap_err();
        assert!(err.to_string().contains("'size=3'"), "{err}");
        assert!(ListFilter::parse(&["name=".into()]).is_err());
    }
}
