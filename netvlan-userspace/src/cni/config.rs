//! The network configuration on stdin: the reference macvlan plugin's
//! keys, checked strictly (an unknown key is an error naming it).

use serde::Deserialize;
use serde_json::Value;

use super::CniError;

/// Config versions accepted: 0.4.0 (runtimes still send it) upward.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The reference macvlan plugin's modes.
const MACVLAN_MODES: [&str; 4] = ["bridge", "private", "vepa", "passthru"];
/// The reference ipvlan plugin's modes: a config with one of them makes
/// an ipvlan network (a macvlan or ipvlan config works by changing its
/// `type` to netvlan-cni).
const IPVLAN_MODES: [&str; 3] = ["l2", "l3", "l3s"];

/// Keys of a plugin configuration the runtime adds or the spec defines,
/// accepted whatever netvlan does with them.
const RUNTIME_KEYS: [&str; 7] = [
    "args",
    "cni.dev/valid-attachments",
    "capabilities",
    "dns",
    "disableCheck",
    "disableGC",
    "prevResult",
];

#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub master: String,
    pub mode: Option<String>,
    pub mac: Option<String>,
    pub vlan_id: Option<u16>,
    /// The endpoints' MTU (the network's `mtu` option); none or 0: the
    /// parent's, as the reference plugin.
    pub mtu: Option<u32>,
    pub ipam: Ipam,
    pub runtime_config: Value,
    pub prev_result: Option<Value>,
    /// GC: the attachments (`containerID`, `ifname`) to keep.
    pub valid_attachments: Option<Value>,
    /// netvlan's keys `stateDir`, `bpfDir`: where its state and pins are
    /// (default: NETVLAN_STATE_DIR/NETVLAN_BPF_DIR, else the CLI's
    /// defaults). Runtimes do not always pass their environment on
    /// (podman's cleanup after a container exits does not).
    pub state_dir: Option<std::path::PathBuf>,
    pub bpf_dir: Option<std::path::PathBuf>,
    /// The configuration as given: what a delegated IPAM plugin reads.
    pub text: String,
    /// The top-level `dns`, the result's `dns` (as the reference plugin).
    pub dns: Option<Value>,
}

/// The network's subnets (one IPv4 and/or one IPv6, as host-local's
/// dual-stack `ranges`) with their gateways: netvlan's own IPAM (`"type":
/// "netvlan"`, host-local's keys), or, for any other `ipam.type`, the
/// plugin it delegates to (subnets and gateways then come from its lease).
#[derive(Debug, Clone)]
pub struct Ipam {
    pub subnets: Vec<Subnet>,
    pub delegate: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub subnet: ipnet::IpNet,
    pub gateway: Option<std::net::IpAddr>,
}

impl Subnet {
    /// A subnet and gateway as the config gives them, checked: the
    /// gateway is an address of the subnet's family inside it.
    fn parse(subnet: &str, gateway: Option<&str>) -> Result<Subnet, CniError> {
        let subnet: ipnet::IpNet = subnet
            .parse()
            .map_err(|_| CniError::Config(format!("ipam: subnet {subnet:?} is not a CIDR")))?;
        let gateway = gateway
            .map(|g| {
                g.parse::<std::net::IpAddr>()
                    .ok()
                    .filter(|ip| subnet.contains(ip))
                    .ok_or_else(|| {
                        CniError::Config(format!(
                            "ipam: gateway {g:?} is not an address in {subnet}"
                        ))
                    })
            })
            .transpose()?;
        Ok(Subnet {
            subnet: subnet.trunc(),
            gateway,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeEntry {
    subnet: String,
    gateway: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IpamKeys {
    #[serde(rename = "type")]
    _kind: String,
    subnet: Option<String>,
    gateway: Option<String>,
    ranges: Option<Vec<Vec<RangeEntry>>>,
    /// host-local's store; netvlan keeps its own state.
    #[serde(rename = "dataDir")]
    _data_dir: Option<String>,
}

fn string(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CniError::Config(format!(
            "{key} must be a string, not {other}"
        ))),
    }
}

impl NetConf {
    pub fn parse(text: &str) -> Result<NetConf, CniError> {
        let value: Value = serde_json::from_str(text).map_err(CniError::Json)?;
        let obj = value
            .as_object()
            .ok_or_else(|| CniError::Config("it is not a JSON object".into()))?;
        let cni_version = string(obj, "cniVersion")?
            .ok_or_else(|| CniError::Config("cniVersion is missing".into()))?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::Version { given: cni_version });
        }
        const KNOWN: [&str; 12] = [
            "stateDir",
            "bpfDir",
            "cniVersion",
            "name",
            "type",
            "master",
            "mode",
            "mac",
            "vlanId",
            "ipam",
            "runtimeConfig",
            "mtu",
        ];
        for key in obj.keys() {
            if !KNOWN.contains(&key.as_str()) && !RUNTIME_KEYS.contains(&key.as_str()) {
                if key == "linkInContainer" {
                    return Err(CniError::Unsupported(
                        "linkInContainer (netvlan-cni does not support it yet)".into(),
                    ));
                }
                return Err(CniError::Config(format!("unknown key {key:?}")));
            }
        }
        let mtu = match obj.get("mtu") {
            None | Some(Value::Null) => None,
            Some(m) => match m.as_u64() {
                Some(0) => None,
                Some(n) if n <= u32::MAX as u64 => Some(n as u32),
                _ => return Err(CniError::Config(format!("mtu {m} is not a number"))),
            },
        };
        let name = string(obj, "name")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| CniError::Config("name is missing".into()))?;
        let master = string(obj, "master")?
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                CniError::Config("master is missing: name the parent link (e.g. \"eth0\")".into())
            })?;
        let mode = string(obj, "mode")?;
        if let Some(mode) = &mode {
            if !MACVLAN_MODES.contains(&mode.as_str()) && !IPVLAN_MODES.contains(&mode.as_str()) {
                return Err(CniError::Config(format!(
                    "mode {mode:?} is not one of {} (macvlan) or {} (ipvlan)",
                    MACVLAN_MODES.join(", "),
                    IPVLAN_MODES.join(", ")
                )));
            }
        }
        let vlan_id = match obj.get("vlanId") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|id| (1..=4094).contains(id))
                    .ok_or_else(|| CniError::Config(format!("vlanId {v} is not 1..4094")))?
                    as u16,
            ),
        };
        let ipam = Self::ipam(obj.get("ipam"))?;
        Ok(NetConf {
            cni_version,
            name,
            master,
            mode,
            mac: string(obj, "mac")?,
            vlan_id,
            mtu,
            ipam,
            runtime_config: obj.get("runtimeConfig").cloned().unwrap_or(Value::Null),
            prev_result: obj.get("prevResult").cloned(),
            valid_attachments: obj.get("cni.dev/valid-attachments").cloned(),
            state_dir: string(obj, "stateDir")?.map(Into::into),
            bpf_dir: string(obj, "bpfDir")?.map(Into::into),
            text: text.to_string(),
            dns: obj.get("dns").filter(|d| !d.is_null()).cloned(),
        })
    }

    fn ipam(value: Option<&Value>) -> Result<Ipam, CniError> {
        let value = value
            .filter(|v| !v.is_null())
            .ok_or_else(|| CniError::Config("ipam is missing".into()))?;
        match value.get("type") {
            Some(Value::String(kind)) if kind == "netvlan" => {}
            Some(Value::String(kind)) if !kind.is_empty() => {
                return Ok(Ipam {
                    subnets: Vec::new(),
                    delegate: Some(kind.clone()),
                })
            }
            _ => return Err(CniError::Config("ipam: type is missing".into())),
        }
        let keys: IpamKeys = serde_json::from_value(value.clone())
            .map_err(|e| CniError::Config(format!("ipam: {e}")))?;
        let subnets = match (keys.subnet, keys.ranges) {
            (Some(subnet), None) => vec![Subnet::parse(&subnet, keys.gateway.as_deref())?],
            (None, Some(sets)) => {
                let mut subnets = Vec::new();
                for (i, set) in sets.iter().enumerate() {
                    let [range] = set.as_slice() else {
                        return Err(CniError::Config(format!(
                            "ipam: ranges[{i}] has {} ranges: netvlan-cni takes one range per address family",
                            set.len()
                        )));
                    };
                    subnets.push(Subnet::parse(&range.subnet, range.gateway.as_deref())?);
                }
                subnets
            }
            (Some(_), Some(_)) => {
                return Err(CniError::Config(
                    "ipam: give subnet or ranges, not both".into(),
                ))
            }
            (None, None) => return Err(CniError::Config("ipam: subnet is missing".into())),
        };
        one_per_family(&subnets)?;
        Ok(Ipam {
            subnets,
            delegate: None,
        })
    }

    /// An ipvlan config: the reference ipvlan plugin's modes.
    pub fn is_ipvlan(&self) -> bool {
        self.mode
            .as_deref()
            .is_some_and(|m| IPVLAN_MODES.contains(&m))
    }

    /// The link endpoints are made on: `master`, or `master.vlanId`.
    pub fn parent(&self) -> String {
        match self.vlan_id {
            Some(id) => format!("{}.{id}", self.master),
            None => self.master.clone(),
        }
    }

    /// `runtimeConfig.mac`.
    pub fn runtime_mac(&self) -> Option<String> {
        self.runtime_config["mac"].as_str().map(str::to_string)
    }

    /// `runtimeConfig.ips` (without their prefixes), as given.
    pub fn runtime_ips(&self) -> Vec<String> {
        self.runtime_config["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|ip| ip.split('/').next().unwrap_or(ip).to_string())
            .collect()
    }
}

/// netvlan's endpoints have one address per family: two subnets of one
/// family are refused, naming both.
pub fn one_per_family(subnets: &[Subnet]) -> Result<(), CniError> {
    for (i, a) in subnets.iter().enumerate() {
        if let Some(b) = subnets[i + 1..]
            .iter()
            .find(|b| b.subnet.addr().is_ipv4() == a.subnet.addr().is_ipv4())
        {
            return Err(CniError::Config(format!(
                "ipam: {} and {} are both IPv{}: netvlan-cni takes one IPv4 and one IPv6 subnet",
                a.subnet,
                b.subnet,
                if a.subnet.addr().is_ipv4() { 4 } else { 6 }
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NetConf, CniError> {
        NetConf::parse(text)
    }

    const GOOD: &str = r#"{"cniVersion":"1.0.0","name":"lan","type":"netvlan-cni","master":"eth0",
        "mode":"bridge","ipam":{"type":"host-local","subnet":"10.1.0.0/24","gateway":"10.1.0.1"}}"#;

    #[test]
    fn the_reference_macvlan_keys_parse() {
        let conf = parse(GOOD).unwrap();
        assert_eq!(conf.parent(), "eth0");
        // host-local is the plugin's to run; its keys are its own.
        assert_eq!(conf.ipam.delegate.as_deref(), Some("host-local"));
        let own = parse(&GOOD.replace("host-local", "netvlan")).unwrap();
        assert_eq!(own.ipam.delegate, None);
        assert_eq!(
            own.ipam.subnets,
            [Subnet {
                subnet: "10.1.0.0/24".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
            }]
        );
    }

    #[test]
    fn dual_stack_ranges_give_one_ipv4_and_one_ipv6_subnet() {
        let dual = r#"{"cniVersion":"1.0.0","name":"lan","type":"netvlan-cni","master":"eth0",
            "ipam":{"type":"netvlan","ranges":[[{"subnet":"10.1.0.0/24"}],
            [{"subnet":"fd00:1::/64","gateway":"fd00:1::1"}]]}}"#;
        let conf = parse(dual).unwrap();
        let subnets: Vec<String> = conf
            .ipam
            .subnets
            .iter()
            .map(|s| format!("{} {:?}", s.subnet, s.gateway.map(|g| g.to_string())))
            .collect();
        assert_eq!(
            subnets,
            ["10.1.0.0/24 None", "fd00:1::/64 Some(\"fd00:1::1\")"]
        );
    }

    #[test]
    fn the_reference_ipvlan_modes_make_an_ipvlan_config() {
        assert!(!parse(GOOD).unwrap().is_ipvlan());
        for mode in ["l2", "l3", "l3s"] {
            let conf = parse(&GOOD.replace("bridge", mode)).unwrap();
            assert!(conf.is_ipvlan(), "{mode}");
        }
    }

    #[test]
    fn a_vlan_id_makes_the_parent_a_sub_interface() {
        let conf = parse(&GOOD.replace(r#""mode""#, r#""vlanId":50,"mode""#)).unwrap();
        assert_eq!(conf.parent(), "eth0.50");
    }

    #[test]
    fn bad_configs_are_refused_naming_what_is_wrong() {
        for (text, says, code) in [
            (
                GOOD.replace(r#""master":"eth0","#, ""),
                "master is missing",
                7,
            ),
            (GOOD.replace("bridge", "bridged"), "mode \"bridged\" is not one of bridge, private, vepa, passthru (macvlan) or l2, l3, l3s (ipvlan)", 7),
            (
                GOOD.replace(r#""mode""#, r#""colour":"red","mode""#),
                "unknown key \"colour\"",
                7,
            ),
            (GOOD.replace("1.0.0", "0.3.1"), "cniVersion \"0.3.1\"", 1),
            (
                GOOD.replace(r#""type":"host-local","#, ""),
                "ipam: type is missing",
                7,
            ),
            (
                GOOD.replace("host-local", "netvlan")
                    .replace("subnet", "colour"),
                "unknown field `colour`",
                7,
            ),
            ("not json".to_string(), "not valid JSON", 7),
            (
                GOOD.replace("host-local", "netvlan")
                    .replace("10.1.0.0/24", "10.1.0.0/33"),
                "subnet \"10.1.0.0/33\" is not a CIDR",
                7,
            ),
            (
                GOOD.replace("host-local", "netvlan")
                    .replace("10.1.0.1", "10.2.0.1"),
                "gateway \"10.2.0.1\" is not an address in 10.1.0.0/24",
                7,
            ),
            (
                GOOD.replace("host-local", "netvlan").replace(
                    r#""subnet":"10.1.0.0/24","gateway":"10.1.0.1""#,
                    r#""ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/24"}]]"#,
                ),
                "10.1.0.0/24 and 10.2.0.0/24 are both IPv4",
                7,
            ),
            (
                GOOD.replace("host-local", "netvlan").replace(
                    r#""subnet":"10.1.0.0/24","gateway":"10.1.0.1""#,
                    r#""ranges":[[{"subnet":"10.1.0.0/25"},{"subnet":"10.1.0.128/25"}]]"#,
                ),
                "ranges[0] has 2 ranges",
                7,
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.to_string().contains(says), "{text}: {e}");
            assert_eq!(e.report().code, code, "{text}: {e}");
        }
    }
}
