//! Endpoints whose link a runtime moves itself (Docker's remote driver):
//! netvlan makes the link in its own namespace, reserves exactly the
//! addresses the runtime's IPAM chose and registers the MAC with the
//! wire; the runtime moves the link into the sandbox, names, addresses
//! and raises it there; netvlan then adopts it (attaches the endpoint
//! programs, records its namespace and index), after which it is an
//! endpoint like a connected one (`stats`, `inspect`, `check`, `restore`).
//!
//! Where the kernel has TCX (6.6+) the endpoint programs are attached
//! when the link is made, here: a TCX link stays on its link through
//! the move, so the first frame the container sends is checked and
//! counted; adoption only records the namespace and index and moves the
//! pins (one bpffs rename). Older kernels drop a link's clsact filters
//! when it changes namespace, so there the programs can only be attached
//! after the move: until [`adopt`] runs, the link's frames pass
//! unchecked by anti-spoofing and uncounted per endpoint (the wire still
//! counts them).
//!
//! [`adopt`]: Manager::adopt_moved

use std::{net::IpAddr, path::PathBuf};

use ipnet::IpNet;
use netvlan_common::{antispoof::EGRESS_ENFORCE, Mac};

use super::{
    driver::Driver,
    endpoint::{mac_from_ipv4, next_connected, requested_mac, with_prefix},
    failpoint::failpoint,
    operation::{Operation, OperationLog},
    owner::owner_alias,
    sandbox_link::{egress_config, endpoint_link},
    wire_policy::wire_after,
    Endpoint, InvalidRequest, Manager, NetworkError, NetworkRecord,
};
use crate::{
    datapath::endpoint_hooks,
    ipam,
    sys::{
        netlink::{LinkOptions, Netlink, NetlinkError},
        netns::{Netns, NetnsId},
    },
};

/// What a runtime's endpoint creation asks for: the addresses and MAC its
/// own IPAM chose (netvlan reserves exactly those).
#[derive(Clone, Debug, Default)]
pub struct StageRequest {
    pub network: String,
    /// The endpoint's key among the network's endpoints.
    pub key: String,
    /// The endpoint id (the runtime's), shown by `inspect`.
    pub id: String,
    pub ip: Option<String>,
    pub ip6: Option<String>,
    pub mac: Option<String>,
    /// The link's name in netvlan's namespace, until the runtime moves it.
    pub link_name: String,
}

/// The owner tag on the link of endpoint `id`, which it keeps wherever
/// the runtime moves it.
pub fn link_alias(id: &str) -> String {
    owner_alias(id)
}

/// Whether an endpoint was staged and still waits for its sandbox.
pub fn is_staged(endpoint: &Endpoint) -> bool {
    endpoint.staged
}

impl Manager {
    /// Whether a staged endpoint is still the runtime's to finish: its
    /// link is here, or its sandbox (joined) exists, the link on its way
    /// there. `check` and `restore` leave such an endpoint alone.
    pub(super) async fn staged_in_flight(&self, endpoint: &Endpoint) -> Result<bool, NetworkError> {
        let alias = owner_alias(&endpoint.id);
        let here = self
            .netlink()
            .links()
            .await?
            .iter()
            .any(|l| l.alias.as_deref() == Some(alias.as_str()));
        let joining = !endpoint.netns_path.as_os_str().is_empty()
            && crate::sys::sandbox::Sandbox::resolve(&endpoint.sandbox).is_ok();
        Ok(here || joining)
    }

    /// Makes an endpoint's link in this namespace for a runtime to move:
    /// reserves the given addresses, creates the link with the MAC (given,
    /// or Docker's from the IPv4 address) and the owner tag, registers the
    /// MAC with the wire and stores the endpoint, all or nothing.
    pub async fn stage_endpoint(
        &self,
        request: StageRequest,
    ) -> Result<(NetworkRecord, Endpoint), NetworkError> {
        let (mut record, others) = self.network_among(&request.network)?;
        if record.endpoints.contains_key(&request.key) {
            return Err(NetworkError::AlreadyConnected {
                network: record.name,
                sandbox: request.key,
            });
        }
        // Docker's address: the one netvlan's IPAM holds for it
        // (`--ipam-driver`), else taken as `--ip` would be.
        let mut exact = |text: &Option<String>| -> Result<Option<IpAddr>, NetworkError> {
            match text {
                Some(ip) => Ok(Some(record.ipam.claim(ipam::parse_ip(ip)?)?)),
                None => Ok(None),
            }
        };
        let ipv4 = exact(&request.ip)?;
        let ipv6 = exact(&request.ip6)?;
        let mac = match (record.options.driver, &request.mac) {
            (Driver::Ipvlan, Some(_)) => return Err(InvalidRequest::MacOnIpvlan.into()),
            (Driver::Ipvlan, None) => None,
            (Driver::Macvlan, Some(text)) => Some(requested_mac(text)?.octets()),
            (Driver::Macvlan, None) => Some(match ipv4 {
                Some(IpAddr::V4(v4)) => mac_from_ipv4(v4),
                _ => {
                    let mut random: [u8; 6] = rand::random();
                    random[0] = (random[0] & 0xfe) | 0x02;
                    random
                }
            }),
        };
        let parent = self.parent_link(&record.parent.link).await?;
        let ipv4 = ipv4.map(|ip| with_prefix(&record, ip));
        let ipv6 = ipv6.map(|ip| with_prefix(&record, ip));
        let alias = owner_alias(&request.id);
        let mut log = OperationLog::new(self.store());
        log.record(Operation::HostLink {
            name: request.link_name.clone(),
            alias: alias.clone(),
        })?;
        let options = LinkOptions {
            mac,
            mtu: record.options.mtu,
            netns: None,
            alias: Some(alias),
        };
        let link = endpoint_link(&record, parent.ifindex);
        let made = self
            .netlink()
            .create_link_with(&request.link_name, link, &options)
            .await
            .map_err(|e| {
                NetworkError::from(e.described_as(format!(
                    "create the {} endpoint link {} of network '{}' on '{}'",
                    record.options.driver, request.link_name, record.name, record.parent.link
                )))
            });
        if let Err(e) = made.and_then(|_| failpoint("stage-after-link")) {
            return Err(log.undo(self.netlink(), self.datapath(), e).await);
        }
        // Where the programs stay on the link through the runtime's move
        // (TCX), they go on now: its first frame in the sandbox is
        // already checked and counted. Elsewhere adoption attaches them.
        let mut attached = None;
        if endpoint_hooks::attached_across_moves() {
            match self
                .attach_before_move(&request.link_name, ipv4, ipv6, record.options.spoofcheck)
                .await
            {
                Ok(here) => attached = Some(here),
                Err(e) => return Err(log.undo(self.netlink(), self.datapath(), e).await),
            }
        }
        let endpoint = Endpoint {
            id: request.id.clone(),
            sandbox: request.key.clone(),
            netns_path: PathBuf::new(),
            ifname: request.link_name.clone(),
            mac: mac.map(Mac),
            ipv4,
            ipv6,
            ifindex: attached.map_or(0, |(_, ifindex)| ifindex),
            netns: attached.map(|(netns, _)| netns),
            connected: next_connected(others.iter().chain([&record])),
            staged: true,
            // Docker's endpoint id is the key already; CNI's GC never
            // sees Docker's endpoints.
            container_id: String::new(),
            name: String::new(),
        };
        record
            .endpoints
            .insert(request.key.clone(), endpoint.clone());
        let addresses: Vec<IpAddr> = ipv4.iter().chain(ipv6.iter()).map(|n| n.addr()).collect();
        let mut done = self.route_endpoint(&record, &addresses, &mut log).await;
        if done.is_ok() {
            done = self
                .sync_wire(&record.parent.wire, &wire_after(&others, &record, false))
                .await;
        }
        if done.is_ok() {
            done = self
                .store()
                .commit_network(&record.name, &record)
                .map_err(Into::into);
        }
        if let Err(e) = done {
            let _ = self
                .sync_wire(
                    &record.parent.wire,
                    &wire_after(&others, &self.network(&record.name)?, false),
                )
                .await;
            if let Some((netns, ifindex)) = attached {
                let _ = endpoint_hooks::remove_pins(self.datapath().bpf_dir(), netns, ifindex);
            }
            return Err(log.undo(self.netlink(), self.datapath(), e).await);
        }
        log.committed();
        Ok((record, endpoint))
    }

    /// Attaches the endpoint programs to the staged link `name` in this
    /// namespace; its namespace and index, where its pins are.
    async fn attach_before_move(
        &self,
        name: &str,
        ipv4: Option<IpNet>,
        ipv6: Option<IpNet>,
        spoofcheck: bool,
    ) -> Result<(NetnsId, u32), NetworkError> {
        let link = self.netlink().link_by_name(name).await?;
        let here = Netns::current()?;
        let addresses: Vec<IpNet> = ipv4.iter().chain(ipv6.iter()).copied().collect();
        let mut config = egress_config(link.mac, &addresses);
        if spoofcheck {
            config.flags |= EGRESS_ENFORCE;
        }
        endpoint_hooks::attach(
            self.datapath().bpf_dir(),
            &here,
            link.ifindex,
            name,
            &config,
            endpoint_hooks::Loading::start(),
        )?;
        Ok((here.id(), link.ifindex))
    }

    /// Records the sandbox a staged endpoint's link is about to be moved
    /// into (Docker's Join).
    pub fn expect_move(
        &self,
        network: &str,
        key: &str,
        sandbox: PathBuf,
    ) -> Result<Endpoint, NetworkError> {
        let mut record = self.network(network)?;
        let endpoint = staged_mut(&mut record, key)?;
        // Named by its namespace file, as `restore` and `check` resolve it.
        endpoint.sandbox = sandbox.display().to_string();
        endpoint.netns_path = sandbox;
        let endpoint = endpoint.clone();
        self.store().put_network(&record.name, &record)?;
        Ok(endpoint)
    }

    /// Adopts a staged endpoint's link once the runtime has moved it into
    /// the sandbox it was promised: finds it there by its owner tag,
    /// attaches the endpoint programs and records its name, index and
    /// namespace. `Ok(None)` while it has not arrived yet.
    /// `loading`: the endpoint programs, loaded ahead (taken when they
    /// are attached; a fresh load if none is left).
    pub async fn adopt_moved(
        &self,
        network: &str,
        key: &str,
        loading: &mut Option<endpoint_hooks::Loading>,
    ) -> Result<Option<Endpoint>, NetworkError> {
        let mut record = self.network(network)?;
        let spoofcheck = record.options.spoofcheck;
        let endpoint = staged_mut(&mut record, key)?;
        if !endpoint.staged {
            return Ok(Some(endpoint.clone()));
        }
        if endpoint.netns_path.as_os_str().is_empty() {
            return Ok(None);
        }
        let netns = match Netns::open(&endpoint.netns_path) {
            Ok(netns) => netns,
            // Docker mounts the namespace just before it moves the link.
            Err(_) => return Ok(None),
        };
        let netlink = Netlink::connect_in(&netns)?;
        let alias = owner_alias(&endpoint.id);
        let Some(link) = netlink
            .links()
            .await?
            .into_iter()
            .find(|l| l.alias.as_deref() == Some(alias.as_str()))
        else {
            return Ok(None);
        };
        // The programs attach by name: wait until the runtime has given
        // the link its name in the sandbox.
        if link.name == endpoint.ifname {
            return Ok(None);
        }
        let addresses = endpoint.addresses();
        let mut config = egress_config(link.mac, &addresses);
        if spoofcheck {
            config.flags |= EGRESS_ENFORCE;
        }
        let bpf_dir = self.datapath().bpf_dir();
        // Attached before the move (TCX): the programs came along; their
        // pins follow them to the sandbox's place. Unless the link came
        // without them or with another MAC: then afresh.
        let mut kept = false;
        if let Some(before) = endpoint.netns {
            endpoint_hooks::move_pins(bpf_dir, before, endpoint.ifindex, netns.id(), link.ifindex)?;
            let same_mac = endpoint.mac.is_none_or(|m| Some(m.0) == link.mac);
            kept = same_mac
                && endpoint_hooks::programs(bpf_dir, &netlink, &netns, link.ifindex, &link.name)
                    .await?
                    .complete();
            if !kept {
                endpoint_hooks::remove_pins(bpf_dir, netns.id(), link.ifindex)?;
            }
        }
        // Otherwise the move left no programs on it (the kernel drops
        // clsact filters): they are attached now.
        if !kept {
            endpoint_hooks::attach(
                bpf_dir,
                &netns,
                link.ifindex,
                &link.name,
                &config,
                loading
                    .take()
                    .unwrap_or_else(endpoint_hooks::Loading::start),
            )?;
        }
        // The name Docker gives it (`eth0`) may come a moment later.
        let settled = netlink.link_by_index(link.ifindex).await?;
        endpoint.ifname = settled.name;
        endpoint.ifindex = link.ifindex;
        endpoint.netns = Some(netns.id());
        endpoint.staged = false;
        let endpoint = endpoint.clone();
        if let Err(e) = self.store().put_network(&record.name, &record) {
            let _ =
                endpoint_hooks::remove_pins(self.datapath().bpf_dir(), netns.id(), link.ifindex);
            return Err(e.into());
        }
        Ok(Some(endpoint))
    }

    /// The runtime took the link back out of the sandbox (Docker's Leave
    /// moves it back here): its program pins go, the endpoint is staged
    /// again under the link's name here.
    pub async fn unadopt(
        &self,
        network: &str,
        key: &str,
        link_name: &str,
    ) -> Result<Endpoint, NetworkError> {
        let mut record = self.network(network)?;
        let Some(endpoint) = record.endpoints.get_mut(key) else {
            return Err(NetworkError::NotConnected {
                network: record.name,
                sandbox: key.into(),
            });
        };
        if let Some(netns) = endpoint.netns.take() {
            endpoint_hooks::remove_pins(self.datapath().bpf_dir(), netns, endpoint.ifindex)?;
        }
        endpoint.ifindex = 0;
        endpoint.staged = true;
        endpoint.netns_path = PathBuf::new();
        endpoint.sandbox = key.to_string();
        endpoint.ifname = link_name.to_string();
        let endpoint = endpoint.clone();
        self.store().put_network(&record.name, &record)?;
        Ok(endpoint)
    }

    /// Removes an endpoint a runtime made: its link wherever it is (here
    /// or still in its sandbox), its pins, its addresses and its record.
    pub async fn unstage_endpoint(&self, network: &str, key: &str) -> Result<(), NetworkError> {
        let record = self.network(network)?;
        let Some(endpoint) = record.endpoints.get(key).cloned() else {
            return Err(NetworkError::NotConnected {
                network: record.name,
                sandbox: key.into(),
            });
        };
        let alias = owner_alias(&endpoint.id);
        delete_by_alias(self.netlink(), &alias).await?;
        if endpoint.netns.is_some() && endpoint.sandbox_alive() {
            let netlink = Netlink::connect_in(&Netns::open(&endpoint.netns_path)?)?;
            delete_by_alias(&netlink, &alias).await?;
        }
        failpoint("unstage-after-link")?;
        // Its link is gone: what stays is the record, the pins and the
        // addresses, which `disconnect -f` removes.
        let mut record = record;
        if let Some(e) = record.endpoints.get_mut(key) {
            e.netns_path = PathBuf::new();
        }
        self.store().put_network(&record.name, &record)?;
        self.disconnect(network, key, true).await.map(|_| ())
    }
}

fn staged_mut<'r>(
    record: &'r mut NetworkRecord,
    key: &str,
) -> Result<&'r mut Endpoint, NetworkError> {
    let name = record.name.clone();
    record
        .endpoints
        .get_mut(key)
        .ok_or(NetworkError::NotConnected {
            network: name,
            sandbox: key.into(),
        })
}

async fn delete_by_alias(netlink: &Netlink, alias: &str) -> Result<(), NetworkError> {
    for link in netlink.links().await? {
        if link.alias.as_deref() == Some(alias) {
            match netlink.delete_link(link.ifindex).await {
                Ok(()) | Err(NetlinkError::NoSuchInterface { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
