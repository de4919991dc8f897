//! IPAM delegation as the reference plugins do it: an `ipam.type` other
//! than netvlan's own is a plugin found in `CNI_PATH`, run with this
//! plugin's environment (`CNI_COMMAND` the operation) and the same
//! configuration on stdin; its result gives the endpoint's address.

use std::{
    io::Write,
    net::IpAddr,
    path::PathBuf,
    process::{Command, Stdio},
};

use serde_json::Value;

use super::{
    config::{one_per_family, Subnet},
    CniError,
};

/// One IPAM plugin: its type and the executable `CNI_PATH` names.
pub struct IpamPlugin {
    kind: String,
    exe: PathBuf,
}

/// What a delegated ADD handed out: at most one address per family with
/// its prefix, and the subnets they are in with their gateways (the
/// reference plugin reports the config's `dns`, not the IPAM's).
#[derive(Debug, Clone)]
pub struct Lease {
    pub addresses: Vec<ipnet::IpNet>,
    pub subnets: Vec<Subnet>,
}

impl IpamPlugin {
    /// The plugin `kind` in the first `CNI_PATH` directory that has it.
    pub fn find(kind: &str, cni_path: &str) -> Result<IpamPlugin, CniError> {
        if kind.is_empty() || kind.contains('/') {
            return Err(CniError::Config(format!(
                "ipam type {kind:?} is not a plugin name"
            )));
        }
        cni_path
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d).join(kind))
            .find(|p| p.is_file())
            .map(|exe| IpamPlugin {
                kind: kind.to_string(),
                exe,
            })
            .ok_or_else(|| CniError::IpamMissing {
                plugin: kind.to_string(),
                cni_path: cni_path.to_string(),
            })
    }

    /// Runs the plugin for `command` with `config` on stdin: its result
    /// (if it printed one) or its error, code and message as it gave them.
    pub fn run(&self, command: &str, config: &str) -> Result<Option<Value>, CniError> {
        self.run_as(command, config, &[])
    }

    /// [`Self::run`] with `env` over this plugin's environment.
    fn run_as(
        &self,
        command: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> Result<Option<Value>, CniError> {
        let failed = |source| CniError::IpamExec {
            plugin: self.kind.clone(),
            source,
        };
        let mut child = Command::new(&self.exe)
            .env("CNI_COMMAND", command)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(failed)?;
        let written = child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(config.as_bytes());
        let out = child.wait_with_output().map_err(failed)?;
        // A plugin that answers without reading its stdin closes the pipe
        // first (as libcni, through Go's exec, this is not an error).
        match written {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(failed(e)),
            _ => {}
        }
        let answer: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if out.status.success() {
            return Ok(answer);
        }
        let answer = answer.unwrap_or(Value::Null);
        Err(CniError::Ipam {
            plugin: self.kind.clone(),
            command: command.to_string(),
            code: answer["code"].as_u64().map_or(999, |c| c as u32),
            msg: answer["msg"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stdout).trim().to_string()),
        })
    }

    /// The CNI versions the plugin speaks, from its VERSION answer.
    fn versions(&self) -> Result<Vec<String>, CniError> {
        let answer = self
            .run("VERSION", r#"{"cniVersion":"0.4.0"}"#)?
            .unwrap_or(Value::Null);
        Ok(answer["supportedVersions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect())
    }

    /// Whether the plugin speaks CNI 1.1 (GC and STATUS). Debian's
    /// plugins (1.1.1) speak 1.0.0 at most: they are sent neither.
    pub fn speaks_1_1(&self) -> Result<bool, CniError> {
        Ok(self.versions()?.iter().any(|v| v == "1.1.0"))
    }

    /// DEL of one attachment a GC collected, as its runtime's DEL would
    /// have released it: that container id and interface, the namespace
    /// path if it is still there. The config goes in the newest version
    /// the plugin speaks up to the config's own, without the GC's keys (a
    /// 1.0.0 plugin refuses a 1.1.0 config).
    pub fn release(
        &self,
        config: &str,
        container_id: &str,
        ifname: &str,
        netns: &str,
    ) -> Result<(), CniError> {
        let mut conf: Value = serde_json::from_str(config).map_err(CniError::Json)?;
        let asked = version_key(conf["cniVersion"].as_str().unwrap_or_default());
        let speaks = self
            .versions()?
            .into_iter()
            .filter(|v| version_key(v) <= asked)
            .max_by_key(|v| version_key(v));
        if let (Some(version), Some(obj)) = (speaks, conf.as_object_mut()) {
            obj.insert("cniVersion".into(), Value::String(version));
            obj.remove("cni.dev/valid-attachments");
        }
        self.run_as(
            "DEL",
            &conf.to_string(),
            &[
                ("CNI_CONTAINERID", container_id),
                ("CNI_IFNAME", ifname),
                ("CNI_NETNS", netns),
            ],
        )
        .map(|_| ())
    }

    /// ADD: the lease in the plugin's result. A result netvlan cannot
    /// honour (no IPv4 address, routes other than the default one) is
    /// released again and refused.
    pub fn add(&self, config: &str) -> Result<Lease, CniError> {
        let result = self.run("ADD", config)?.unwrap_or(Value::Null);
        let lease = self.lease(&result);
        if lease.is_err() {
            let _ = self.run("DEL", config);
        }
        lease
    }

    fn lease(&self, result: &Value) -> Result<Lease, CniError> {
        let refuse = |why: String| CniError::IpamResult {
            plugin: self.kind.clone(),
            why,
        };
        let mut subnets = Vec::new();
        let mut addresses = Vec::new();
        for ip in result["ips"].as_array().into_iter().flatten() {
            let address: ipnet::IpNet = ip["address"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| refuse(format!("address {} is not a CIDR", ip["address"])))?;
            let gateway = ip["gateway"]
                .as_str()
                .map(|g| {
                    g.parse::<IpAddr>()
                        .ok()
                        .filter(|g| g.is_ipv4() == address.addr().is_ipv4())
                        .ok_or_else(|| {
                            refuse(format!(
                                "gateway {g:?} is not an address of {address}'s family"
                            ))
                        })
                })
                .transpose()?;
            subnets.push(Subnet {
                subnet: address.trunc(),
                gateway,
            });
            addresses.push(address);
        }
        if addresses.is_empty() {
            return Err(refuse(format!("no address in {result}")));
        }
        one_per_family(&subnets).map_err(|_| {
            refuse(format!(
                "{} addresses in {result}: netvlan-cni takes one IPv4 and one IPv6 address",
                addresses.len()
            ))
        })?;
        for route in result["routes"].as_array().into_iter().flatten() {
            let default = subnets.iter().any(|s| {
                let (any, gateway) = match s.subnet {
                    ipnet::IpNet::V4(_) => ("0.0.0.0/0", s.gateway),
                    ipnet::IpNet::V6(_) => ("::/0", s.gateway),
                };
                route["dst"] == any
                    && (route["gw"].is_null()
                        || route["gw"].as_str() == gateway.map(|g| g.to_string()).as_deref())
            });
            if !default {
                return Err(refuse(format!(
                    "route {route}: netvlan-cni installs only the default routes via the gateways"
                )));
            }
        }
        Ok(Lease { addresses, subnets })
    }
}

/// `"1.0.0"` as `(1, 0, 0)`, for ordering versions; what does not parse
/// sorts first.
fn version_key(version: &str) -> (u32, u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}
