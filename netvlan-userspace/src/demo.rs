//! `netvlan demo`: a small lab in namespaces of its own, to see netvlan work
//! without touching the machine's real interfaces.
//!
//! ```text
//!  PREFIX-lan (the LAN: gateway/external host 172.16.86.1, VLAN 10 host 192.168.10.1)
//!      lan0 ──veth── eth0  PREFIX-host (where netvlan runs; datapath on eth0)
//!                      ├─ macvlan network "lan" ── PREFIX-web, PREFIX-db
//!                      └─ eth0.10 ── network "vlan10" ── PREFIX-v10   (if the kernel has 802.1Q)
//! ```
//!
//! The demo keeps its state and pins in `demo/` below the normal state and
//! bpf directories, so it never mixes with real networks.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Serialize;

use crate::{
    datapath::{stats, Datapath},
    netlink::{Netlink, NetlinkError, NewLink},
    netns::{self, NETNS_RUN_DIR},
    network::{ConnectRequest, CreateRequest, Driver, Manager, NetworkError},
    store::Store,
};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo is already up ({0} exists); `netvlan demo down` removes it")]
    AlreadyUp(String),
    #[error("the demo is not up")]
    NotUp,
    #[error(transparent)]
    Netns(#[from] netns::NamedNetnsError),
    #[error(transparent)]
    Enter(#[from] netns::NetnsError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Network(#[from] NetworkError),
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

/// Where the demo lives.
#[derive(Clone, Debug)]
pub struct Demo {
    pub prefix: String,
    pub state_dir: PathBuf,
    pub bpf_dir: PathBuf,
}

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
    pub vlans: Vec<stats::VlanStats>,
    /// Commands worth trying next.
    pub next: Vec<String>,
}

impl Demo {
    pub fn new(prefix: &str, state_dir: &Path, bpf_dir: &Path) -> Self {
        Demo {
            prefix: prefix.to_string(),
            state_dir: state_dir.join("demo"),
            bpf_dir: bpf_dir.join("demo"),
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
        if self.is_up() {
            return Err(DemoError::AlreadyUp(
                self.ns_path("host").display().to_string(),
            ));
        }
        match self.build().await {
            Ok(report) => Ok(report),
            Err(e) => {
                if let Err(teardown) = self.down().await {
                    tracing::error!("{teardown}");
                }
                Err(e)
            }
        }
    }

    async fn build(&self) -> Result<DemoReport, DemoError> {
        for role in ["host", "lan", "web", "db"] {
            netns::create_named(&self.ns(role))?;
        }
        // The wire: eth0 in the host, lan0 on the LAN side.
        let lan_fd =
            std::fs::File::open(self.ns_path("lan")).map_err(|source| netns::NetnsError::Open {
                path: self.ns_path("lan"),
                source,
            })?;
        let lan_raw = std::os::fd::AsRawFd::as_raw_fd(&lan_fd);
        run_in(&self.ns_path("host"), move || async move {
            let netlink = Netlink::connect()?;
            netlink.create_veth("eth0", "lan0", None).await?;
            // Tags in the frame bytes, so the datapath counts per VLAN.
            for end in ["eth0", "lan0"] {
                if let Err(e) = crate::offload::disable_vlan_offload(end) {
                    tracing::warn!("cannot turn VLAN offload off on {end}: {e}");
                }
            }
            let lan0 = netlink.link_by_name("lan0").await?;
            netlink.move_to_netns(lan0.ifindex, lan_raw).await?;
            let eth0 = netlink.link_by_name("eth0").await?;
            netlink.set_up(eth0.ifindex).await
        })
        .await?;
        drop(lan_fd);
        let vlan = run_in(&self.ns_path("lan"), || async {
            let netlink = Netlink::connect()?;
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
        })
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
        run_in(&self.ns_path("host"), move || async move {
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
                .create(create("lan", "172.16.86.0/24", "172.16.86.1", "eth0"))
                .await?;
            if vlan {
                manager
                    .create(create(
                        "vlan10",
                        "192.168.10.0/24",
                        "192.168.10.1",
                        "eth0.10",
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
            return Err(DemoError::NotUp);
        }
        let (state, bpf) = (self.state_dir.clone(), self.bpf_dir.clone());
        let (records, report) = run_in(&self.ns_path("host"), move || async move {
            let datapath = Datapath::open(&bpf)?;
            let mut interfaces = Vec::new();
            for (attachment, pins) in datapath.attachments(None).await? {
                interfaces.push(stats::read(&attachment, &pins)?);
            }
            let records = Store::open(&state)?.networks::<crate::network::NetworkRecord>()?;
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
                    .find(|m| m.mac == e.mac);
                endpoints.push(DemoEndpoint {
                    sandbox: e.sandbox.clone(),
                    network: record.name.clone(),
                    ipv4: e.ipv4.map(|n| n.to_string()).unwrap_or_default(),
                    mac: e.mac.clone(),
                    rx_packets: counted.map_or(0, |m| m.counters.rx_packets),
                    rx_bytes: counted.map_or(0, |m| m.counters.rx_bytes),
                });
            }
        }
        let host = self.ns_path("host");
        let env = format!(
            "NETVLAN_STATE_DIR={} NETVLAN_BPF_DIR={}",
            self.state_dir.display(),
            self.bpf_dir.display()
        );
        let next = vec![
            format!("{env} nsenter --net={} netvlan stats", host.display()),
            format!(
                "{env} nsenter --net={} netvlan network inspect lan",
                host.display()
            ),
            format!(
                "nsenter --net={}/{} ping -c 3 172.16.86.3",
                NETNS_RUN_DIR,
                self.ns("web")
            ),
            "netvlan demo down".to_string(),
        ];
        Ok(DemoReport {
            host_namespace: self.ns("host"),
            vlan_network,
            endpoints,
            vlans: report.into_iter().flat_map(|i| i.vlans).collect(),
            next,
        })
    }

    /// Removes the lab: networks, pins, state and namespaces. Keeps going
    /// past errors and reports them all at the end.
    pub async fn down(&self) -> Result<(), DemoError> {
        let mut errors = Vec::new();
        if self.is_up() {
            let (state, bpf) = (self.state_dir.clone(), self.bpf_dir.clone());
            let result = run_in(&self.ns_path("host"), move || async move {
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
        for role in ["web", "db", "v10", "lan", "host"] {
            if let Err(e) = netns::delete_named(&self.ns(role)) {
                errors.push(e.to_string());
            }
        }
        for dir in [&self.state_dir, &self.bpf_dir] {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    errors.push(format!("{}: {e}", dir.display()))
                }
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DemoError::Teardown(errors.join("; ")))
        }
    }
}

/// `netns::run_in` from async code, on a blocking thread.
async fn run_in<F, Fut, T, E>(path: &Path, job: F) -> Result<T, DemoError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, E>>,
    T: Send + 'static,
    E: Into<DemoError> + Send + 'static,
{
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || netns::run_in(&path, job))
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
    let path = sandbox.to_path_buf();
    tokio::task::spawn_blocking(move || {
        netns::run_in(&path, move || async move {
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
