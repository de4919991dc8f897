//! The network configuration on stdin: the reference macvlan plugin's
//! keys, checked strictly (an unknown key is an error naming it).

use serde::Deserialize;
use serde_json::Value;

use super::CniError;

/// Config versions accepted: 0.4.0 (runtimes still send it) upward.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

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

/// The network's subnet and gateway: netvlan's own IPAM (`"type":
/// "netvlan"`, host-local's keys), or, for any other `ipam.type`, the
/// plugin it delegates to (subnet and gateway then come from its lease).
#[derive(Debug, Clone)]
pub struct Ipam {
    pub subnet: String,
    pub gateway: Option<String>,
    pub delegate: Option<String>,
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
            const MODES: [&str; 4] = ["bridge", "private", "vepa", "passthru"];
            if !MODES.contains(&mode.as_str()) {
                return Err(CniError::Config(format!(
                    "mode {mode:?} is not one of {}",
                    MODES.join(", ")
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
                    subnet: String::new(),
                    gateway: None,
                    delegate: Some(kind.clone()),
                })
            }
            _ => return Err(CniError::Config("ipam: type is missing".into())),
        }
        let keys: IpamKeys = serde_json::from_value(value.clone())
            .map_err(|e| CniError::Config(format!("ipam: {e}")))?;
        let from_ranges = keys
            .ranges
            .and_then(|r| r.into_iter().next())
            .and_then(|r| r.into_iter().next());
        let (subnet, gateway) = match (keys.subnet, from_ranges) {
            (Some(subnet), None) => (subnet, keys.gateway),
            (None, Some(range)) => (range.subnet, range.gateway),
            (Some(_), Some(_)) => {
                return Err(CniError::Config(
                    "ipam: give subnet or ranges, not both".into(),
                ))
            }
            (None, None) => return Err(CniError::Config("ipam: subnet is missing".into())),
        };
        Ok(Ipam {
            subnet,
            gateway,
            delegate: None,
        })
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

    /// The first address of `runtimeConfig.ips` (without its prefix).
    pub fn runtime_ip(&self) -> Option<String> {
        let ip = self.runtime_config["ips"].as_array()?.first()?.as_str()?;
        Some(ip.split('/').next().unwrap_or(ip).to_string())
    }
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
        assert_eq!(own.ipam.subnet, "10.1.0.0/24");
        assert_eq!(own.ipam.gateway.as_deref(), Some("10.1.0.1"));
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
            (GOOD.replace("bridge", "bridged"), "mode \"bridged\"", 7),
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
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.to_string().contains(says), "{text}: {e}");
            assert_eq!(e.report().code, code, "{text}: {e}");
        }
    }
}
