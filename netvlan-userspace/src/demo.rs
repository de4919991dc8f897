//! `netvlan demo`: a small lab in namespaces of its own, to see netvlan work
//! without touching the machine's real interfaces.
//!
//! ```text
//!  PREFIX-lan (the LAN: gateway/external host 172.16.86.1, VLAN 10 host 192.168.10.1)
//!      lan0 ──veth── uplink  PREFIX-host (where netvlan runs; datapath on uplink)
//!                      ├─ macvlan network "lan" ── PREFIX-web, PREFIX-db
//!                      └─ uplink.10 ── network "vlan10" ── PREFIX-v10   (if the kernel has 802.1Q)
//! ```
//!
//! Each demo keeps its state and pins in `demo/PREFIX/` below the normal
//! state and bpf directories, so it never mixes with real networks or with
//! a demo of another prefix, and `down` removes only its own.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Serialize;

use crate::{
    control::{ConnectRequest, CreateRequest, Driver, Manager, NetworkError},
    datapath::{counters, Datapath},
    store::Store,
    sys::netlink::{Netlink, NetlinkError, NewLink},
    sys::netns::{self, Netns, NETNS_RUN_DIR},
};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo is already up ({0} exists); `netvlan demo down` removes it")]
    AlreadyUp(String),
    #[error("no demo with prefix '{0}' is up")]
    NotUp(String),
    #[error(
        "demo prefix '{0}' is invalid: use letters, digits, '_' or '-', at most 64 characters"
    )]
    BadPrefix(String),
    #[error("cannot record the demo's directories in {path}")]
    Record {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Netns(#[from] netns::NamedNetnsError),
    #[error(transparent)]
    Enter(#[from] netns::NetnsError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// Boxed: a network error is large and the demo's own checks return
    /// this type on their happy path too.
    #[error(transparent)]
    Network(Box<NetworkError>),
    #[error(transparent)]
    Datapath(#[from] crate::datapath::DatapathError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("demo traffic from {from}: {source}")]
    Traffic {
        from: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the demo could not be fully removed: {0}")]
    Teardown(String),
}

impl From<NetworkError> for DemoError {
    fn from(e: NetworkError) -> Self {
        DemoError::Network(Box::new(e))
    }
}

/// Where the demo lives.
#[derive(Clone, Debug)]
pub struct Demo {
    pub prefix: String,
    /// This demo's own directories, `demo/PREFIX` below the base ones.
    pub state_dir: PathBuf,
    pub bpf_dir: PathBuf,
    /// The state and bpf directories the command was given.
    base_state_dir: PathBuf,
    base_bpf_dir: PathBuf,
}

/// The demo's parent link in its host namespace (not `eth0`, which reads
/// like the machine's own interface).
const UPLINK: &str = "uplink";
/// Where `up` lists the directories it created, for `down` to remove.
const MADE_DIRS: &str = "made-dirs.json";

/// One container of the lab.
#[derive(Clone, Debug, Serialize)]
pub struct DemoEndpoint {
    pub sandbox: String,
    pub network: String,
    pub ipv4: String,
    pub mac: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    pub host_namespace: String,
    pub vlan_network: bool,
    pub endpoints: Vec<DemoEndpoint>,
    pub vlans: Vec<counters::VlanStats>,
    /// Commands worth trying next.
    pub next: Vec<String>,
}

impl Demo {
    pub fn new(prefix: &str, state_dir: &Path, bpf_dir: &Path) -> Self {
        Demo {
            prefix: prefix.to_string(),
            state_dir: state_dir.join("demo").join(prefix),
            bpf_dir: bpf_dir.join("demo").join(prefix),
            base_state_dir: state_dir.into(),
            base_bpf_dir: bpf_dir.into(),
        }
    }

    const ROLES: [&'static str; 5] = ["web", "db", "v10", "lan", "host"];

    fn check_prefix(&self) -> Result<(), DemoError> {
        let p = &self.prefix;
        let ok = !p.is_empty()
            && p.len() <= 64
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if ok {
            Ok(())
        } else {
            Err(DemoError::BadPrefix(p.clone()))
        }
    }

    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn ns_path(&self, role: &str) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(self.ns(role))
    }

    pub fn is_up(&self) -> bool {
        self.ns_path("host").exists()
    }

    /// Builds the lab, sends a little traffic and reports what was counted.
    /// Any failure tears down what was built.
    pub async fn up(&self) -> Result<DemoReport, DemoError> {
        self.check_prefix()?;
        for role in Self::ROLES {
            if self.ns_path(role).exists() {
                return Err(DemoError::AlreadyUp(
                    self.ns_path(role).display().to_string(),
                ));
            }
        }
        if self.state_dir.exists() {
            return Err(DemoError::AlreadyUp(self.state_dir.display().to_string()));
        }
        self.record_made_dirs()?;
        match self.build().await {
            Ok(report) => Ok(report),
            Err(e) => {
                if let Err(teardown) = self.teardown().await {
                    tracing::error!("{teardown}");
                }
                Err(e)
            }
        }
    }

    /// Notes which directories up to the demo's own do not exist yet (so
    /// `down` removes exactly those it made), then makes the state one.
    fn record_made_dirs(&self) -> Result<(), DemoError> {
        let missing = |dir: &Path| -> Vec<PathBuf> {
            dir.ancestors()
                .take_while(|p| !p.exists())
                .map(Path::to_path_buf)
                .collect()
        };
        let made: Vec<PathBuf> = missing(&self.state_dir)
            .into_iter()
            .chain(missing(&self.bpf_dir))
            .collect();
        let record = self.state_dir.join(MADE_DIRS);
        let err = |source| DemoError::Record {
            path: record.clone(),
            source,
        };
        std::fs::create_dir_all(&self.state_dir).map_err(err)?;
        let json = serde_json::to_vec(&made).expect("paths serialise");
        std::fs::write(&record, json).map_err(err)
    }

    async fn build(&self) -> Result<DemoReport, DemoError> {
        for role in ["host", "lan", "web", "db"] {
            netns::create_named(&self.ns(role))?;
        }
        // The wire: uplink in the host, lan0 on the LAN side.
        let host = Netns::open(&self.ns_path("host"))?;
        let lan = Netns::open(&self.ns_path("lan"))?;
        {
            let netlink = Netlink::connect_in(&host)?;
            netlink.create_veth(UPLINK, "lan0", None).await?;
            // Tags in the frame bytes, so the datapath counts per VLAN (the
            // ioctl names the links in the calling thread's namespace).
            netns::run_blocking_in(&host, || {
                for end in [UPLINK, "lan0"] {
                    if let Err(e) = crate::sys::ethtool::disable_vlan_offload(end) {
                        tracing::warn!("cannot turn VLAN offload off on {end}: {e}");
                    }
                }
            })?;
            let lan0 = netlink.link_by_name("lan0").await?;
            netlink.move_to_netns(lan0.ifindex, &lan).await?;
            let uplink = netlink.link_by_name(UPLINK).await?;
            netlink.set_up(uplink.ifindex).await?;
        }
        let vlan = async {
            let netlink = Netlink::connect_in(&lan)?;
            let lan0 = netlink.link_by_name("lan0").await?;
            netlink.set_up(lan0.ifindex).await?;
            netlink
                .add_address(lan0.ifindex, "172.16.86.1/24".parse().expect("valid"))
                .await?;
            match netlink
                .create_link(
                    "lan0.10",
                    NewLink::Vlan {
                        parent: lan0.ifindex,
                        vid: 10,
                    },
                )
                .await
            {
                Ok(vlan) => {
                    netlink.set_up(vlan.ifindex).await?;
                    netlink
                        .add_address(vlan.ifindex, "192.168.10.1/24".parse().expect("valid"))
                        .await?;
                    Ok(true)
                }
                Err(NetlinkError::UnsupportedLinkType { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        }
        .await?;
        if vlan {
            netns::create_named(&self.ns("v10"))?;
        }

        let sandboxes: Vec<(String, &str)> = [("web", "lan"), ("db", "lan")]
            .into_iter()
            .chain(vlan.then_some(("v10", "vlan10")))
            .map(|(role, net)| (self.ns(role), net))
            .collect();
        let (state, bpf) = (self.state_dir.clone(), self.bpf_dir.clone());
        let plan = sandboxes.clone();
        control_plane_in(&self.ns_path("host"), move || async move {
            let manager = Manager::new(Store::open(&state)?, Datapath::open(&bpf)?)?;
            let create = |name: &str, subnet: &str, gateway: &str, parent: &str| CreateRequest {
                name: name.into(),
                driver: Driver::Macvlan,
                subnets: vec![subnet.into()],
                gateways: vec![gateway.into()],
                options: vec![format!("parent={parent}")],
                ..Default::default()
            };
            manager
                .create(create("lan", "172.16.86.0/24", "172.16.86.1", UPLINK))
                .await?;
            if vlan {
                manager
                    .create(create(
                        "vlan10",
                        "192.168.10.0/24",
                        "192.168.10.1",
                        &format!("{UPLINK}.10"),
                    ))
                    .await?;
            }
            for (sandbox, network) in plan {
                manager
                    .connect(ConnectRequest {
                        network: network.into(),
                        sandbox,
                        ..Default::default()
                    })
                    .await?;
            }
            Ok::<(), DemoError>(())
        })
        .await?;

        // A little traffic: each container greets its gateway and the web
        // container greets the database, all inside the lab.
        let targets = [
            (self.ns("web"), vec!["172.16.86.1", "172.16.86.3"]),
            (self.ns("db"), vec!["172.16.86.1"]),
        ]
        .into_iter()
        .chain(vlan.then(|| (self.ns("v10"), vec!["192.168.10.1"])));
        for (sandbox, to) in targets {
            send_greetings(&Path::new(NETNS_RUN_DIR).join(&sandbox), &to).await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.status().await
    }

    /// What the lab looks like now, with its counters.
    pub async fn status(&self) -> Result<DemoReport, DemoError> {
        if !self.is_up() {
            return Err(DemoError::NotUp(self.prefix.clone()));
        }
        let (state, bpf) = (self.state_dir.clone(), self.bpf_dir.clone());
        let (records, report) = control_plane_in(&self.ns_path("host"), move || async move {
            let datapath = Datapath::open(&bpf)?;
            let mut interfaces = Vec::new();
            for (attachment, pins) in datapath.attachments(None).await? {
                interfaces.push(counters::read(
                    &attachment,
                    &pins,
                    counters::Detail::PerDestination,
                )?);
            }
            let records = Store::open(&state)?.networks::<crate::control::NetworkRecord>()?;
            Ok::<_, DemoError>((records, interfaces))
        })
        .await?;
        let mut endpoints = Vec::new();
        let mut vlan_network = false;
        for record in &records {
            vlan_network |= record.parent.link.contains('.');
            for e in record.endpoints.values() {
                let counted = report
                    .iter()
                    .flat_map(|i| i.macs.iter())
                    .find(|m| Some(m.mac) == e.mac);
                endpoints.push(DemoEndpoint {
                    sandbox: e.sandbox.clone(),
                    network: record.name.clone(),
                    ipv4: e.ipv4.map(|n| n.to_string()).unwrap_or_default(),
                    mac: e.mac_text(),
                    rx_packets: counted.map_or(0, |m| m.counters.rx_packets),
                    rx_bytes: counted.map_or(0, |m| m.counters.rx_bytes),
                });
            }
        }
        let host = self.ns_path("host");
        let env = format!(
            "NETVLAN_STATE_DIR={} NETVLAN_BPF_DIR={}",
            shell_word(&self.state_dir),
            shell_word(&self.bpf_dir)
        );
        let next = vec![
            format!("{env} nsenter --net={} netvlan stats", shell_word(&host)),
            format!(
                "{env} nsenter --net={} netvlan network inspect lan",
                shell_word(&host)
            ),
            format!(
                "nsenter --net={} ping -c 3 172.16.86.3",
                shell_word(&self.ns_path("web"))
            ),
            self.down_command(),
        ];
        Ok(DemoReport {
            host_namespace: self.ns("host"),
            vlan_network,
            endpoints,
            vlans: report.into_iter().flat_map(|i| i.vlans).collect(),
            next,
        })
    }

    /// `netvlan demo down` as this demo needs it spelled.
    fn down_command(&self) -> String {
        let mut line = String::new();
        if self.base_state_dir != Path::new(crate::store::DEFAULT_STATE_DIR) {
            line.push_str(&format!(
                "NETVLAN_STATE_DIR={} ",
                shell_word(&self.base_state_dir)
            ));
        }
        if self.base_bpf_dir != Path::new(crate::datapath::DEFAULT_BPF_DIR) {
            line.push_str(&format!(
                "NETVLAN_BPF_DIR={} ",
                shell_word(&self.base_bpf_dir)
            ));
        }
        line.push_str("netvlan demo down");
        if self.prefix != DEFAULT_PREFIX {
            line.push_str(&format!(" --prefix {}", self.prefix));
        }
        line
    }

    /// Removes the lab: networks, pins, state and namespaces, and the
    /// empty directories `up` made. A demo that is not up is an error.
    pub async fn down(&self) -> Result<(), DemoError> {
        self.check_prefix()?;
        let anything = Self::ROLES.iter().any(|r| self.ns_path(r).exists())
            || self.state_dir.exists()
            || self.bpf_dir.exists();
        if !anything {
            return Err(DemoError::NotUp(self.prefix.clone()));
        }
        self.teardown().await
    }

    /// Removes whatever of the lab exists. Keeps going past errors and
    /// reports them all at the end.
    async fn teardown(&self) -> Result<(), DemoError> {
        let mut errors = Vec::new();
        if self.is_up() && self.state_dir.exists() {
            let (state, bpf) = (self.state_dir.clone(), self.bpf_dir.clone());
            let result = control_plane_in(&self.ns_path("host"), move || async move {
                let manager = Manager::new(Store::open(&state)?, Datapath::open(&bpf)?)?;
                let mut errors = Vec::new();
                for record in manager.networks()? {
                    for sandbox in record.endpoints.keys() {
                        if let Err(e) = manager.disconnect(&record.name, sandbox, true).await {
                            errors.push(e.to_string());
                        }
                    }
                    if let Err(e) = manager.remove(&record.name).await {
                        errors.push(e.to_string());
                    }
                }
                Ok::<_, DemoError>(errors)
            })
            .await;
            match result {
                Ok(mut e) => errors.append(&mut e),
                Err(e) => errors.push(e.to_string()),
            }
        }
        for role in Self::ROLES {
            if let Err(e) = netns::delete_named(&self.ns(role)) {
                errors.push(e.to_string());
            }
        }
        let made: Vec<PathBuf> = std::fs::read(self.state_dir.join(MADE_DIRS))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        for dir in [&self.state_dir, &self.bpf_dir] {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    errors.push(format!("{}: {e}", dir.display()))
                }
                _ => {}
            }
        }
        // The shared `demo/` directories when no other demo uses them, and
        // whatever else `up` made, deepest first, each only if empty.
        let mut empty: Vec<PathBuf> = vec![
            self.base_state_dir.join("demo"),
            self.base_bpf_dir.join("demo"),
        ];
        empty.extend(made);
        empty.sort();
        empty.dedup();
        empty.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for dir in empty {
            // Not empty (another demo, real networks) or gone: leave it.
            let _ = std::fs::remove_dir(&dir);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DemoError::Teardown(errors.join("; ")))
        }
    }
}

/// The prefix `netvlan demo` uses without `--prefix`.
pub const DEFAULT_PREFIX: &str = "nvdemo";

/// A path as one shell word (quoted when it needs it), so a printed
/// command runs as printed.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,".contains(c));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// Runs `job` as a `netvlan` process living in the namespace at `path`
/// would: the demo drives a whole control plane there (its datapath and
/// XDP attach act on the calling thread's namespace), so the job gets a
/// thread in the namespace and a runtime of its own.
async fn control_plane_in<F, Fut, T, E>(path: &Path, job: F) -> Result<T, DemoError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, E>>,
    T: Send + 'static,
    E: Into<DemoError> + Send + 'static,
{
    let netns = Netns::open(path)?;
    tokio::task::spawn_blocking(move || {
        netns::run_blocking_in(&netns, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime can always be built")
                .block_on(job())
        })
    })
    .await
    .expect("the namespace thread is joined")?
    .map_err(Into::into)
}

/// Sends a few UDP datagrams (discard port) from inside a sandbox.
async fn send_greetings(sandbox: &Path, to: &[&str]) -> Result<(), DemoError> {
    let targets: Vec<IpAddr> = to
        .iter()
        .map(|t| t.parse().expect("literal addresses"))
        .collect();
    let from = sandbox.display().to_string();
    let netns = Netns::open(sandbox)?;
    tokio::task::spawn_blocking(move || {
        netns::run_blocking_in(&netns, || {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            for _ in 0..5 {
                for target in &targets {
                    socket.send_to(b"hello from netvlan demo", SocketAddr::new(*target, 9))?;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok::<(), std::io::Error>(())
        })
    })
    .await
    .expect("the namespace thread is joined")?
    .map_err(|source| DemoError::Traffic { from, source })
}
