//! `netvlan-cni`: the CNI plugin front. A runtime runs it with the
//! operation in `CNI_COMMAND`, the container in `CNI_NETNS`/`CNI_IFNAME`
//! and the network configuration on stdin, in the namespace that holds
//! the master link; it answers with the spec's JSON on stdout (results
//! and errors alike, as libcni reads them). The networks, IPAM and state
//! are the CLI's: an ADD makes the network named by the config's `name`
//! (if the CLI has not) and connects the container through
//! [`control::Manager`], like `netvlan network connect`.
//!
//! Done: VERSION, ADD, DEL, CHECK, STATUS (50, and 51 when a network with
//! endpoints has datapath drift), GC (`cni.dev/valid-attachments`); the
//! reference macvlan plugin's keys `master`, `mode`, `mac`, `mtu`,
//! `vlanId`, `dns`, `ipam`: netvlan's own (`"type": "netvlan"`, host-local's
//! keys) or delegated to the `ipam.type` plugin in `CNI_PATH`
//! (`delegate`); netvlan's own keys `stateDir`, `bpfDir`; `CNI_ARGS`
//! `IgnoreUnknown`, `MAC=`, `IP=`, `K8S_POD_NAMESPACE`/`K8S_POD_NAME` (the
//! endpoint's name in `stats` and `/metrics`); `runtimeConfig.mac`/`ips`.
//! IPv4, IPv6 or both (host-local's dual-stack `ranges`, one range per
//! family; a delegated lease with one address per family).
//! `mode` l2/l3/l3s (the reference ipvlan plugin's) makes an ipvlan network.
//! A delegated IPAM gets DEL, CHECK, and GC and STATUS when it speaks 1.1
//! (else a GC sends it a DEL per collected attachment).
//! Not yet: `linkInContainer`.

mod config;
mod delegate;

use std::{collections::BTreeMap, path::PathBuf};

use serde_json::{json, Value};

use self::delegate::{IpamPlugin, Lease};
use crate::keyword::Keyword;
use crate::{
    control::{
        ConnectRequest, CreateRequest, Driver, Endpoint, ErrorReport, Manager, NetworkError,
        NetworkRecord, CODE_INVALID_CONFIG, CODE_IO,
    },
    datapath::{pins, Datapath, DatapathError, DEFAULT_BPF_DIR},
    store::{Store, StoreError, DEFAULT_STATE_DIR},
};

pub use config::{NetConf, SUPPORTED_VERSIONS};

/// The CNI version this plugin speaks natively.
pub const CNI_VERSION: &str = "1.1.0";
/// CNI's well-known code: incompatible CNI version.
pub const CODE_INCOMPATIBLE_VERSION: u32 = 1;
/// CNI's well-known code: unsupported field in the network configuration.
pub const CODE_UNSUPPORTED_FIELD: u32 = 2;
/// CNI's well-known code: invalid environment variables.
pub const CODE_INVALID_ENV: u32 = 4;
/// CNI 1.1's STATUS code: the plugin cannot serve ADD now.
pub const CODE_NOT_AVAILABLE: u32 = 50;
/// CNI 1.1's STATUS code: not available, and the network's containers
/// may have limited connectivity.
pub const CODE_LIMITED_CONNECTIVITY: u32 = 51;

/// The label on networks an ADD created: the DEL of their last endpoint
/// removes them again. Networks the CLI made are never removed by CNI.
const CREATED_BY: &str = "netvlan.cni";

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI_COMMAND is {0:?}: expected ADD, DEL, CHECK, STATUS, GC or VERSION")]
    UnknownCommand(String),
    #[error("the environment variable {0} is missing or empty")]
    MissingEnv(&'static str),
    #[error("CNI_ARGS: {0}")]
    BadArgs(String),
    #[error("reading the network configuration from stdin")]
    Stdin(#[source] std::io::Error),
    #[error("the network configuration is not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("cniVersion {given:?} is not supported (supported: {})", SUPPORTED_VERSIONS.join(", "))]
    Version { given: String },
    #[error("the network configuration: {0}")]
    Config(String),
    #[error("unsupported key in the network configuration: {0}")]
    Unsupported(String),
    #[error("network {network} exists with {what} {stored}, but the configuration says {given}")]
    Mismatch {
        network: String,
        what: &'static str,
        stored: String,
        given: String,
    },
    #[error("CHECK: {0}")]
    Check(String),
    #[error(transparent)]
    Network(Box<NetworkError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Datapath(Box<DatapathError>),
    #[error("{0}")]
    PinsWouldVanish(String),
    /// STATUS: what keeps an ADD from working now.
    #[error("not available: {0}")]
    NotAvailable(String),
    /// STATUS: not available, and the network has endpoints.
    #[error("not available, {endpoints} endpoint(s) of network {network} may have limited connectivity: {why}")]
    LimitedConnectivity {
        network: String,
        endpoints: usize,
        why: String,
    },
    #[error("ipam plugin {plugin:?} is not in CNI_PATH {cni_path:?}")]
    IpamMissing { plugin: String, cni_path: String },
    #[error("running ipam plugin {plugin:?}")]
    IpamExec {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
    /// The delegated plugin's own error, its code passed on.
    #[error("ipam plugin {plugin:?} {command}: {msg}")]
    Ipam {
        plugin: String,
        command: String,
        code: u32,
        msg: String,
    },
    #[error("ipam plugin {plugin:?} result: {why}")]
    IpamResult { plugin: String, why: String },
    /// GC keeps going past a failed attachment: every failure, in order.
    #[error("GC: {}", .0.join("; "))]
    Collect(Vec<String>),
    #[error("two addresses of one family asked for, {first} and {second}: netvlan-cni takes one IPv4 and one IPv6 address")]
    TwoAddresses { first: String, second: String },
}

impl From<NetworkError> for CniError {
    fn from(e: NetworkError) -> Self {
        CniError::Network(Box::new(e))
    }
}

impl From<DatapathError> for CniError {
    fn from(e: DatapathError) -> Self {
        CniError::Datapath(Box::new(e))
    }
}

impl CniError {
    /// The spec's error: CNI's well-known codes, the control plane's own
    /// report for its errors.
    pub fn report(&self) -> ErrorReport {
        use CniError as E;
        let (code, kind) = match self {
            E::Network(e) => return e.report(),
            E::Version { .. } => (CODE_INCOMPATIBLE_VERSION, "incompatible_version"),
            E::Unsupported(_) => (CODE_UNSUPPORTED_FIELD, "unsupported_field"),
            E::UnknownCommand(_) | E::MissingEnv(_) | E::BadArgs(_) => {
                (CODE_INVALID_ENV, "invalid_environment")
            }
            E::Json(_) => (CODE_INVALID_CONFIG, "invalid_json"),
            E::Config(_) | E::Mismatch { .. } | E::TwoAddresses { .. } => {
                (CODE_INVALID_CONFIG, "invalid_config")
            }
            E::Check(_) => (CODE_INVALID_CONFIG, "check_failed"),
            E::NotAvailable(_) => (CODE_NOT_AVAILABLE, "not_available"),
            E::LimitedConnectivity { .. } => (CODE_LIMITED_CONNECTIVITY, "limited_connectivity"),
            E::Stdin(_) | E::Store(_) | E::Datapath(_) | E::PinsWouldVanish(_) | E::Collect(_) => {
                (CODE_IO, "io")
            }
            E::IpamMissing { .. } => (CODE_INVALID_CONFIG, "ipam_missing"),
            E::IpamExec { .. } => (CODE_IO, "io"),
            E::Ipam { code, .. } => (*code, "ipam_failed"),
            E::IpamResult { .. } => (CODE_UNSUPPORTED_FIELD, "ipam_result"),
        };
        ErrorReport::new(code, kind, self)
    }
}

/// What the runtime put in the environment.
#[derive(Debug, Default, Clone)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    /// `CNI_PATH`: where delegated IPAM plugins are.
    pub path: String,
    pub bpf_dir: PathBuf,
    pub state_dir: PathBuf,
}

impl Env {
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        let dir = |name: &str, default: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .unwrap_or_else(|| default.into())
        };
        Env {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            path: var("CNI_PATH"),
            bpf_dir: dir("NETVLAN_BPF_DIR", DEFAULT_BPF_DIR),
            state_dir: dir("NETVLAN_STATE_DIR", DEFAULT_STATE_DIR),
        }
    }

    fn require(value: &str, name: &'static str) -> Result<(), CniError> {
        if value.is_empty() {
            return Err(CniError::MissingEnv(name));
        }
        Ok(())
    }
}

/// `CNI_ARGS`: `K=V;K=V`. Known keys: `IgnoreUnknown`, `MAC`, `IP`,
/// Kubernetes' pod keys; any other is refused unless `IgnoreUnknown`.
#[derive(Debug, Default)]
struct Args {
    mac: Option<String>,
    /// `IP=`: one address per family, comma-separated.
    ips: Vec<String>,
    /// `K8S_POD_NAMESPACE/K8S_POD_NAME`, or `K8S_POD_NAME` alone.
    pod: Option<String>,
}

fn parse_args(text: &str) -> Result<Args, CniError> {
    let mut pairs = BTreeMap::new();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| CniError::BadArgs(format!("{pair:?} is not KEY=VALUE")))?;
        pairs.insert(k.to_string(), v.to_string());
    }
    let ignore_unknown = pairs
        .get("IgnoreUnknown")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true"));
    const KNOWN: [&str; 7] = [
        "IgnoreUnknown",
        "MAC",
        "IP",
        "K8S_POD_NAME",
        "K8S_POD_NAMESPACE",
        "K8S_POD_INFRA_CONTAINER_ID",
        "K8S_POD_UID",
    ];
    if !ignore_unknown {
        if let Some(k) = pairs.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(CniError::BadArgs(format!(
                "unknown key {k} (set IgnoreUnknown=1 to pass it)"
            )));
        }
    }
    Ok(Args {
        mac: pairs.get("MAC").cloned(),
        ips: pairs
            .get("IP")
            .map(|ips| ips.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        pod: match (pairs.get("K8S_POD_NAMESPACE"), pairs.get("K8S_POD_NAME")) {
            (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => {
                Some(format!("{ns}/{name}"))
            }
            // podman passes the container's name alone.
            (_, Some(name)) if !name.is_empty() => Some(name.clone()),
            _ => None,
        },
    })
}

/// Runs one CNI operation: the JSON to print on stdout, or the error
/// (printed there too, with the spec's code, by the binary).
pub async fn run(env: &Env, stdin: &str) -> Result<Option<Value>, CniError> {
    match env.command.as_str() {
        "VERSION" => Ok(Some(json!({
            "cniVersion": CNI_VERSION,
            "supportedVersions": SUPPORTED_VERSIONS,
        }))),
        "STATUS" => {
            let conf = NetConf::parse(stdin)?;
            status(env, &conf).await.map(|()| None)
        }
        "ADD" | "DEL" | "CHECK" | "GC" => {
            let conf = NetConf::parse(stdin)?;
            if env.command != "GC" {
                Env::require(&env.container_id, "CNI_CONTAINERID")?;
                Env::require(&env.ifname, "CNI_IFNAME")?;
            }
            let manager = open_manager(env, &conf).await?;
            match env.command.as_str() {
                "ADD" => {
                    Env::require(&env.netns, "CNI_NETNS")?;
                    add(&manager, env, &conf).await.map(Some)
                }
                "DEL" => del(&manager, env, &conf).await.map(|()| None),
                "GC" => gc(&manager, env, &conf).await.map(|()| None),
                _ => {
                    Env::require(&env.netns, "CNI_NETNS")?;
                    check(&manager, env, &conf).await.map(|()| None)
                }
            }
        }
        other => Err(CniError::UnknownCommand(other.into())),
    }
}

/// STATUS: ready when the state and the datapath's pins can be opened
/// and the parent's link (or, for a VLAN, its base) exists; else code 50
/// saying which is missing. Code 51 when the network already has
/// endpoints and `netvlan check` finds its datapath not as stored (its
/// parent or wire gone, the XDP program detached, map entries lost):
/// those containers may have limited connectivity now.
async fn status(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let manager = open_manager(env, conf)
        .await
        .map_err(|e| CniError::NotAvailable(e.report().line()))?;
    if let Ok(record) = manager.network(&conf.name) {
        if !record.endpoints.is_empty() {
            let drifts = manager
                .check()
                .await
                .map_err(|e| CniError::NotAvailable(e.report().line()))?;
            let why: Vec<String> = drifts
                .into_iter()
                .filter(|d| d.network == record.name || d.object == record.parent.wire)
                .map(|d| d.problem)
                .collect();
            if !why.is_empty() {
                return Err(CniError::LimitedConnectivity {
                    network: record.name.clone(),
                    endpoints: record.endpoints.len(),
                    why: why.join("; "),
                });
            }
        }
    }
    if let Err(e) = manager.parent_link(&conf.master).await {
        return Err(CniError::NotAvailable(e.report().line()));
    }
    // A delegated IPAM that speaks 1.1 has its own say (its error, with
    // its code, is the answer); one missing from CNI_PATH is not ready.
    let plugin = ipam_plugin(env, conf).map_err(|e| CniError::NotAvailable(e.to_string()))?;
    if let Some(plugin) = plugin {
        if plugin.speaks_1_1()? {
            plugin.run("STATUS", &conf.text)?;
        }
    }
    Ok(())
}

/// The version an error is answered in: the config's, when it says one.
pub fn error_version(stdin: &str) -> String {
    serde_json::from_str::<Value>(stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| CNI_VERSION.to_string())
}

async fn open_manager(env: &Env, conf: &NetConf) -> Result<Manager, CniError> {
    let bpf_dir = conf.bpf_dir.as_ref().unwrap_or(&env.bpf_dir);
    let state_dir = conf.state_dir.as_ref().unwrap_or(&env.state_dir);
    pins::check_pins_persist(bpf_dir).map_err(|e| CniError::PinsWouldVanish(e.to_string()))?;
    let datapath = Datapath::open(bpf_dir)?;
    let (manager, _recovered) = Manager::open(Store::open(state_dir)?, datapath).await?;
    Ok(manager)
}

/// The network the config names: as stored (it must agree with the
/// config), or created from it.
async fn network(manager: &Manager, conf: &NetConf) -> Result<NetworkRecord, CniError> {
    let parent = conf.parent();
    match manager.network(&conf.name) {
        Ok(record) => {
            let driver = if conf.is_ipvlan() {
                Driver::Ipvlan
            } else {
                Driver::Macvlan
            };
            if record.options.driver != driver {
                return Err(CniError::Mismatch {
                    network: conf.name.clone(),
                    what: "driver",
                    stored: record.options.driver.name().into(),
                    given: driver.name().into(),
                });
            }
            if record.parent.link != parent {
                return Err(CniError::Mismatch {
                    network: conf.name.clone(),
                    what: "parent",
                    stored: record.parent.link,
                    given: parent,
                });
            }
            let stored: Vec<ipnet::IpNet> = record
                .ipam
                .config()
                .subnets()
                .iter()
                .map(|s| s.subnet)
                .collect();
            if let Some(missing) = conf
                .ipam
                .subnets
                .iter()
                .find(|s| !stored.contains(&s.subnet))
            {
                return Err(CniError::Mismatch {
                    network: conf.name.clone(),
                    what: "subnets",
                    stored: stored
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    given: missing.subnet.to_string(),
                });
            }
            if conf.mtu.is_some() && record.options.mtu != conf.mtu {
                return Err(CniError::Mismatch {
                    network: conf.name.clone(),
                    what: "mtu",
                    stored: record
                        .options
                        .mtu
                        .map_or_else(|| "the parent's".into(), |m| m.to_string()),
                    given: conf.mtu.map(|m| m.to_string()).unwrap_or_default(),
                });
            }
            Ok(record)
        }
        Err(NetworkError::UnknownNetwork(_)) => {
            let mut options = vec![format!("parent={parent}")];
            let driver = if conf.is_ipvlan() {
                Driver::Ipvlan
            } else {
                Driver::Macvlan
            };
            if let Some(mode) = &conf.mode {
                let key = match driver {
                    Driver::Ipvlan => "ipvlan_mode",
                    Driver::Macvlan => "macvlan_mode",
                };
                options.push(format!("{key}={mode}"));
            }
            if let Some(mtu) = conf.mtu {
                options.push(format!("mtu={mtu}"));
            }
            Ok(manager
                .create(CreateRequest {
                    name: conf.name.clone(),
                    driver,
                    subnets: conf
                        .ipam
                        .subnets
                        .iter()
                        .map(|s| s.subnet.to_string())
                        .collect(),
                    gateways: conf
                        .ipam
                        .subnets
                        .iter()
                        .filter_map(|s| s.gateway.map(|g| g.to_string()))
                        .collect(),
                    options,
                    labels: vec![format!("{CREATED_BY}=1")],
                    ..Default::default()
                })
                .await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The delegated IPAM plugin of the config, if it names one.
fn ipam_plugin(env: &Env, conf: &NetConf) -> Result<Option<IpamPlugin>, CniError> {
    conf.ipam
        .delegate
        .as_deref()
        .map(|kind| IpamPlugin::find(kind, &env.path))
        .transpose()
}

/// ADD: with a delegated IPAM, its lease first (released again if the
/// rest fails), then the endpoint with that address.
async fn add(manager: &Manager, env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    let args = parse_args(&env.args)?;
    let Some(plugin) = ipam_plugin(env, conf)? else {
        return add_endpoint(manager, env, conf, args, None).await;
    };
    // ADD of an attachment that exists fails before the IPAM is asked
    // (its DEL on the failure would release the live endpoint's lease).
    if let Some(endpoint) = manager
        .network(&conf.name)
        .ok()
        .and_then(|r| endpoint_of(&r, env))
    {
        return Err(NetworkError::AlreadyConnected {
            network: conf.name.clone(),
            sandbox: endpoint.sandbox,
        }
        .into());
    }
    let lease = plugin.add(&conf.text)?;
    let added = add_endpoint(manager, env, conf, args, Some(&lease)).await;
    if added.is_err() {
        let _ = plugin.run("DEL", &conf.text);
    }
    added
}

async fn add_endpoint(
    manager: &Manager,
    env: &Env,
    conf: &NetConf,
    args: Args,
    lease: Option<&Lease>,
) -> Result<Value, CniError> {
    let mut conf = conf.clone();
    if let Some(lease) = lease {
        // The lease's subnets and gateways are the network's; its
        // addresses are reserved for the endpoint in netvlan's IPAM.
        conf.ipam.subnets = lease.subnets.clone();
    }
    let conf = &conf;
    // One address per family: the lease's, else runtimeConfig.ips, else
    // CNI_ARGS IP= (a comma-separated list, as the static IPAM takes it).
    let runtime = conf.runtime_ips();
    let asked: Vec<String> = match lease {
        Some(lease) => lease
            .addresses
            .iter()
            .map(|a| a.addr().to_string())
            .collect(),
        None if !runtime.is_empty() => runtime,
        None => args.ips.clone(),
    };
    // Checked before the network is made: a refusal leaves nothing.
    let (mut ip, mut ip6) = (None, None);
    for address in asked {
        // What does not parse goes on as IPv4: the control plane names it.
        let v6 = address
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_ipv6());
        let slot = if v6 { &mut ip6 } else { &mut ip };
        if let Some(first) = slot.replace(address.clone()) {
            return Err(CniError::TwoAddresses {
                first,
                second: address,
            });
        }
    }
    let created = manager.network(&conf.name).is_err();
    let record = network(manager, conf).await?;
    let mac = conf.runtime_mac().or(args.mac).or_else(|| conf.mac.clone());
    let connected = manager
        .connect(ConnectRequest {
            network: record.name.clone(),
            sandbox: env.netns.clone(),
            ip,
            ip6,
            mac,
            ifname: Some(env.ifname.clone()),
            container_id: Some(env.container_id.clone()),
            name: args.pod,
        })
        .await;
    let (record, endpoint) = match connected {
        Ok(done) => done,
        Err(e) => {
            // All or nothing: a network this ADD made goes with its failure.
            if created {
                let _ = manager.remove(&record.name).await;
            }
            return Err(e.into());
        }
    };
    Ok(result(conf, &record, &endpoint))
}

/// The spec's result for one endpoint (the reference plugins' shape:
/// `interfaces`, `ips` pointing at the container's interface, `routes`
/// netvlan installed, `dns`).
fn result(conf: &NetConf, record: &NetworkRecord, endpoint: &Endpoint) -> Value {
    let mut ips = Vec::new();
    let mut routes = Vec::new();
    for (net, default) in [(endpoint.ipv4, "0.0.0.0/0"), (endpoint.ipv6, "::/0")] {
        let Some(net) = net else { continue };
        let gateway = record
            .ipam
            .config()
            .subnet_of(&net.addr())
            .and_then(|s| s.gateway);
        let mut ip = json!({ "interface": 0, "address": net.to_string() });
        if let Some(gw) = gateway {
            ip["gateway"] = json!(gw.to_string());
            routes.push(json!({ "dst": default, "gw": gw.to_string() }));
        }
        if conf.cni_version.starts_with("0.") {
            ip["version"] = json!(if net.addr().is_ipv4() { "4" } else { "6" });
        }
        ips.push(ip);
    }
    let mut out = json!({
        "cniVersion": conf.cni_version,
        "interfaces": [{
            "name": endpoint.ifname,
            "mac": endpoint.mac_text(),
            "sandbox": env_netns_text(endpoint),
        }],
        "ips": ips,
        "dns": conf.dns.clone().unwrap_or_else(|| json!({})),
    });
    if !routes.is_empty() {
        out["routes"] = Value::Array(routes);
    }
    out
}

fn env_netns_text(endpoint: &Endpoint) -> String {
    endpoint.netns_path.display().to_string()
}

/// The endpoint of this attachment on the network: by its
/// (`CNI_CONTAINERID`, `CNI_IFNAME`), the spec's key (a DEL may come
/// without `CNI_NETNS`), else, for endpoints stored without a container
/// id, by its namespace (or, the namespace gone, by the path it was
/// connected with).
fn endpoint_of(record: &NetworkRecord, env: &Env) -> Option<Endpoint> {
    use std::os::unix::fs::MetadataExt;
    let attachment = record.endpoints.values().find(|e| {
        !e.container_id.is_empty() && e.container_id == env.container_id && e.ifname == env.ifname
    });
    if let Some(endpoint) = attachment {
        return Some(endpoint.clone());
    }
    if env.netns.is_empty() {
        return None;
    }
    let id = std::fs::metadata(&env.netns)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    record
        .endpoints
        .values()
        .find(|e| {
            e.ifname == env.ifname
                && (e.netns.map(|n| (n.dev, n.ino)) == id && id.is_some()
                    || e.netns_path == std::path::Path::new(&env.netns))
        })
        .cloned()
}

/// DEL is idempotent: an unknown network, endpoint or namespace is
/// success. A delegated IPAM releases its lease after the endpoint goes.
async fn del(manager: &Manager, env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let plugin = ipam_plugin(env, conf)?;
    del_endpoint(manager, env, conf).await?;
    if let Some(plugin) = plugin {
        plugin.run("DEL", &conf.text)?;
    }
    Ok(())
}

async fn del_endpoint(manager: &Manager, env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let record = match manager.network(&conf.name) {
        Ok(r) => r,
        Err(NetworkError::UnknownNetwork(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if let Some(endpoint) = endpoint_of(&record, env) {
        detach(manager, &record.name, &endpoint.sandbox).await?;
    }
    remove_if_ours_and_empty(manager, &conf.name).await
}

/// Removes an endpoint, its sandbox gone or not; one already gone is done.
async fn detach(manager: &Manager, network: &str, sandbox: &str) -> Result<(), CniError> {
    match manager.disconnect(network, sandbox, true).await {
        Ok(_) | Err(NetworkError::NotConnected { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the network `name` once it has no endpoints, if an ADD made it.
async fn remove_if_ours_and_empty(manager: &Manager, name: &str) -> Result<(), CniError> {
    let record = manager.network(name)?;
    if record.endpoints.is_empty() && record.labels.contains_key(CREATED_BY) {
        match manager.remove(&record.name).await {
            Ok(_) | Err(NetworkError::UnknownNetwork(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// GC: removes the network's endpoints a CNI ADD made whose
/// (`containerID`, `ifname`) is not in `cni.dev/valid-attachments`
/// (endpoints the CLI connected are not CNI's to collect), then the
/// network itself if an ADD made it and nothing is left. A delegated
/// IPAM gets the GC if it speaks 1.1, else a DEL per collected
/// attachment, so its leases go with the endpoints. A failed attachment
/// does not stop the others; every failure is reported.
async fn gc(manager: &Manager, env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let valid = match &conf.valid_attachments {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(
                |a| match (a["containerID"].as_str(), a["ifname"].as_str()) {
                    (Some(id), Some(ifname)) => Ok((id.to_string(), ifname.to_string())),
                    _ => Err(CniError::Config(format!(
                        "cni.dev/valid-attachments: {a} lacks containerID or ifname"
                    ))),
                },
            )
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(CniError::Config(format!(
                "cni.dev/valid-attachments is {other}, expected a list"
            )))
        }
    };
    let mut failures = Vec::new();
    // A plugin missing from CNI_PATH does not keep netvlan's endpoints
    // from being collected; its leases are reported left.
    let plugin = ipam_plugin(env, conf).unwrap_or_else(|e| {
        failures.push(format!("the delegated IPAM: {e}"));
        None
    });
    let gc_passes = match &plugin {
        Some(plugin) => plugin.speaks_1_1().unwrap_or_else(|e| {
            failures.push(format!("asking the delegated IPAM its versions: {e}"));
            false
        }),
        None => false,
    };
    match manager.network(&conf.name) {
        Ok(record) => {
            for endpoint in record.endpoints.values() {
                if endpoint.container_id.is_empty()
                    || valid.iter().any(|(id, ifname)| {
                        *id == endpoint.container_id && *ifname == endpoint.ifname
                    })
                {
                    continue;
                }
                if let Err(e) = detach(manager, &record.name, &endpoint.sandbox).await {
                    failures.push(format!(
                        "{}/{}: {e}",
                        endpoint.container_id, endpoint.ifname
                    ));
                    continue;
                }
                let Some(plugin) = plugin.as_ref().filter(|_| !gc_passes) else {
                    continue;
                };
                let netns = if endpoint.sandbox_alive() {
                    endpoint.netns_path.to_string_lossy().into_owned()
                } else {
                    String::new()
                };
                if let Err(e) =
                    plugin.release(&conf.text, &endpoint.container_id, &endpoint.ifname, &netns)
                {
                    failures.push(format!(
                        "{}/{}: releasing its lease: {e}",
                        endpoint.container_id, endpoint.ifname
                    ));
                }
            }
            if let Err(e) = remove_if_ours_and_empty(manager, &conf.name).await {
                failures.push(e.to_string());
            }
        }
        Err(NetworkError::UnknownNetwork(_)) => {}
        Err(e) => return Err(e.into()),
    }
    if let (Some(plugin), true) = (&plugin, gc_passes) {
        if let Err(e) = plugin.run("GC", &conf.text) {
            failures.push(e.to_string());
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CniError::Collect(failures))
    }
}

/// CHECK: the endpoint exists with the address `prevResult` gave, and
/// the kernel has what the store says for its network.
fn check_prev(conf: &NetConf, endpoint: &Endpoint) -> Result<(), CniError> {
    let Some(prev) = &conf.prev_result else {
        return Err(CniError::Check("no prevResult in the configuration".into()));
    };
    let have: Vec<String> = [endpoint.ipv4, endpoint.ipv6]
        .into_iter()
        .flatten()
        .map(|n| n.to_string())
        .collect();
    for ip in prev["ips"].as_array().into_iter().flatten() {
        let address = ip["address"].as_str().unwrap_or_default();
        if !have.iter().any(|h| h == address) {
            return Err(CniError::Check(format!(
                "prevResult has {address}, the endpoint has {}",
                have.join(", ")
            )));
        }
    }
    for iface in prev["interfaces"].as_array().into_iter().flatten() {
        if iface["sandbox"].is_string() && iface["name"] != endpoint.ifname.as_str() {
            return Err(CniError::Check(format!(
                "prevResult has interface {}, the endpoint is {}",
                iface["name"], endpoint.ifname
            )));
        }
        if let Some(mac) = iface["mac"].as_str().filter(|m| !m.is_empty()) {
            if iface["sandbox"].is_string() && !mac.eq_ignore_ascii_case(&endpoint.mac_text()) {
                return Err(CniError::Check(format!(
                    "prevResult has MAC {mac}, the endpoint has {}",
                    endpoint.mac_text()
                )));
            }
        }
    }
    Ok(())
}

/// CHECK: netvlan's endpoint, then the delegated IPAM's own CHECK.
async fn check(manager: &Manager, env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let plugin = ipam_plugin(env, conf)?;
    check_endpoint(manager, env, conf).await?;
    if let Some(plugin) = plugin {
        plugin.run("CHECK", &conf.text)?;
    }
    Ok(())
}

async fn check_endpoint(manager: &Manager, env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let record = manager.network(&conf.name)?;
    let endpoint = endpoint_of(&record, env).ok_or_else(|| {
        CniError::Check(format!(
            "no endpoint {} of {} on network {}",
            env.ifname, env.netns, record.name
        ))
    })?;
    if !endpoint.sandbox_alive() {
        return Err(CniError::Check(format!(
            "the namespace {} is gone",
            env.netns
        )));
    }
    check_prev(conf, &endpoint)?;
    // The kernel against the store, as `netvlan check`: the endpoint's
    // link, addresses, routes and the network's datapath.
    let drifts: Vec<String> = manager
        .check()
        .await?
        .into_iter()
        .filter(|d| d.network == record.name)
        .map(|d| format!("{}: {}", d.object, d.problem))
        .collect();
    if !drifts.is_empty() {
        return Err(CniError::Check(drifts.join("; ")));
    }
    Ok(())
}
