//! An endpoint's link inside its sandbox: made there under a temporary
//! name (so it never appears in the host's namespace and never collides
//! with the sandbox's own `eth0`), then tagged, renamed, addressed, given
//! its TC programs and brought up; looked at and repaired there; deleted.
//! Each function opens the sandbox once and talks netlink to it over a
//! socket made there; only aya's attach and `/proc/sys` writes need a
//! thread inside it (`run_blocking_in`).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use netvlan_common::antispoof::{EgressConfig, EGRESS_ENFORCE, EGRESS_HAS_IPV4, EGRESS_HAS_IPV6};

use super::{
    driver::Driver,
    error::{UndoError, UndoFailure},
    failpoint::failpoint,
    routes::DefaultRoute,
    Endpoint, NetworkError, NetworkRecord,
};
use crate::{
    datapath::endpoint_hooks,
    sys::netlink::{LinkOptions, Netlink, NetlinkError, NewLink},
    sys::netns::{self, Netns},
};

/// The endpoint link a network's driver and modes call for.
pub(crate) fn endpoint_link(record: &NetworkRecord, parent: u32) -> NewLink {
    match record.options.driver {
        Driver::Macvlan => NewLink::Macvlan {
            parent,
            mode: record.options.macvlan_mode.unwrap_or_default(),
        },
        Driver::Ipvlan => NewLink::Ipvlan {
            parent,
            mode: record.options.ipvlan_mode.unwrap_or_default(),
            flag: record.options.ipvlan_flag.unwrap_or_default(),
        },
    }
}

/// A temporary link name no one else uses (`nvt` + 10 hex digits).
pub(crate) fn temp_link_name() -> String {
    format!("nvt{:010x}", rand::random::<u64>() & 0xff_ffff_ffff)
}

/// Creates an endpoint's link on the parent directly inside the sandbox
/// (under a temporary name, so nothing ever appears in the host's
/// namespace or clashes with the sandbox's own interfaces), then names,
/// addresses and raises it there, with the endpoint programs `loading`.
/// On failure nothing is left behind. Returns the link's MAC as the
/// kernel reports it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn materialize(
    netlink: &Netlink,
    bpf_dir: &Path,
    record: &NetworkRecord,
    link: NewLink,
    sandbox: &Path,
    ifname: &str,
    mac: Option<[u8; 6]>,
    ipv4: Option<IpNet>,
    ipv6: Option<IpNet>,
    routes: Vec<DefaultRoute>,
    alias: &str,
    temp_name: &str,
    loading: endpoint_hooks::Loading,
) -> Result<Materialized, NetworkError> {
    let temp_name = temp_name.to_string();
    let netns = Netns::open(sandbox)?;
    let options = LinkOptions {
        mac,
        mtu: record.options.mtu,
        netns: Some(&netns),
        // Set inside the sandbox, before the rename (see `configure`).
        alias: None,
    };
    // The temporary name is netvlan's own: an error says what it was for.
    netlink
        .create_link_with(&temp_name, link, &options)
        .await
        .map_err(|e| {
            e.described_as(format!(
                "create the {} endpoint link of network '{}' on '{}' in {}",
                record.options.driver,
                record.name,
                record.parent.link,
                sandbox.display()
            ))
        })?;
    if let Err(e) = failpoint("connect-after-link") {
        let undo = delete_link_in(sandbox, &temp_name).await;
        return Err(match undo {
            Ok(()) => e,
            Err(undo) => NetworkError::RollbackFailed {
                failed: Box::new(e),
                undo: vec![UndoFailure::new(
                    format!("deleting {temp_name} in {}", sandbox.display()),
                    undo,
                )],
            },
        });
    }

    let plan = SandboxPlan {
        alias: alias.to_string(),
        temp_name,
        ifname: ifname.to_string(),
        addresses: ipv4.iter().chain(ipv6.iter()).copied().collect(),
        routes,
        bpf_dir: bpf_dir.to_path_buf(),
        spoofcheck: record.options.spoofcheck,
    };
    plan.apply(&netns, loading).await
}

/// Adds default routes on an endpoint's link inside its sandbox; a route
/// that is already there is fine. Returns how many were added.
pub(crate) async fn add_routes_in(
    endpoint: &Endpoint,
    routes: Vec<DefaultRoute>,
) -> Result<usize, NetworkError> {
    let netlink = Netlink::connect_in(&Netns::open(&endpoint.netns_path)?)?;
    let link = netlink.link_by_name(&endpoint.ifname).await?;
    let mut added = 0;
    for (gateway, ipv6) in routes {
        match netlink.add_default_route(link.ifindex, gateway, ipv6).await {
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            other => {
                other?;
                added += 1;
            }
        }
    }
    Ok(added)
}

/// An endpoint inside its sandbox, compared with its record.
#[derive(Clone, Debug, Default)]
pub(crate) struct EndpointFacts {
    /// The index of the sandbox's link named as the endpoint, if any.
    pub ifindex: Option<u32>,
    pub missing_addresses: Vec<IpNet>,
    pub missing_routes: Vec<(Option<IpAddr>, bool)>,
    pub programs: endpoint_hooks::EndpointPrograms,
    /// What [`probe`] repaired, when asked to.
    pub repaired: Vec<String>,
}

/// Looks at an endpoint's link inside its (existing) sandbox: its
/// addresses, the default `routes` it holds (see [`held_routes`](super::routes::held_routes)) and
/// its TC programs. With `repair`, adds what
/// is missing and re-attaches the programs (a missing link is the
/// caller's to recreate).
pub(crate) async fn probe(
    bpf_dir: &Path,
    record: &NetworkRecord,
    endpoint: &Endpoint,
    routes: Vec<DefaultRoute>,
    repair: bool,
) -> Result<EndpointFacts, NetworkError> {
    let (ifname, sandbox) = (&endpoint.ifname, &endpoint.sandbox);
    let addresses = endpoint.addresses();
    let spoofcheck = record.options.spoofcheck;
    let netns = Netns::open(&endpoint.netns_path)?;
    let netlink = Netlink::connect_in(&netns)?;
    let mut facts = EndpointFacts::default();
    let link = match netlink.link_by_name(ifname).await {
        Ok(link) => link,
        Err(NetlinkError::NoSuchInterface { .. }) => return Ok(facts),
        Err(e) => return Err(NetworkError::from(e)),
    };
    facts.ifindex = Some(link.ifindex);
    let present = netlink.addresses(link.ifindex).await?;
    facts.missing_addresses = addresses
        .iter()
        .filter(|a| !present.contains(&a.addr()))
        .copied()
        .collect();
    // A sandbox keeps one default route per family: one via
    // another network's endpoint counts.
    for (gateway, ipv6) in &routes {
        if netlink.default_routes(*ipv6).await?.is_empty() {
            facts.missing_routes.push((*gateway, *ipv6));
        }
    }
    facts.programs =
        endpoint_hooks::programs(bpf_dir, &netlink, &netns, link.ifindex, ifname).await?;
    if !repair {
        return Ok(facts);
    }
    for address in &facts.missing_addresses {
        netlink.add_address_nodad(link.ifindex, *address).await?;
        facts
            .repaired
            .push(format!("add address {address} to {ifname} in {sandbox}"));
    }
    if !facts.programs.complete() {
        let mut config = egress_config(link.mac, &addresses);
        if spoofcheck {
            config.flags |= EGRESS_ENFORCE;
        }
        endpoint_hooks::reattach(bpf_dir, &netlink, &netns, link.ifindex, ifname, &config).await?;
        facts.repaired.push(format!(
            "attach the endpoint programs to {ifname} in {sandbox}"
        ));
    }
    for (gateway, ipv6) in &facts.missing_routes {
        netlink
            .add_default_route(link.ifindex, *gateway, *ipv6)
            .await?;
        let via = gateway.map_or("the link".to_string(), |g| g.to_string());
        facts.repaired.push(format!(
            "add the default route via {via} to {ifname} in {sandbox}"
        ));
    }
    Ok(facts)
}

/// What to do inside the sandbox, over a netlink socket made there.
struct SandboxPlan {
    temp_name: String,
    /// Owner tag, set first so crash recovery can always find the link.
    alias: String,
    ifname: String,
    addresses: Vec<IpNet>,
    routes: Vec<(Option<IpAddr>, bool)>,
    /// Where the endpoint programs are pinned.
    bpf_dir: PathBuf,
    /// Anti-spoofing: the egress program drops what the endpoint may not
    /// send (it counts either way).
    spoofcheck: bool,
}

/// The endpoint's link as configured in its sandbox.
pub(crate) struct Materialized {
    pub mac: Option<[u8; 6]>,
    pub ifindex: u32,
}

impl SandboxPlan {
    /// Returns the link's MAC as the kernel reports it. Deletes the link
    /// (by index: never a same-named interface of the sandbox) on failure.
    async fn apply(
        self,
        netns: &Netns,
        loading: endpoint_hooks::Loading,
    ) -> Result<Materialized, NetworkError> {
        let netlink = Netlink::connect_in(netns)?;
        let link = netlink.link_by_name(&self.temp_name).await?;
        let result = self.configure(&netlink, netns, link.ifindex, loading).await;
        let Err(failed) = result else {
            return result;
        };
        let mut undo = Vec::new();
        if let Err(e) = netlink.delete_link(link.ifindex).await {
            undo.push(UndoFailure::new(format!("deleting {}", self.ifname), e));
        }
        // The programs went with the link; their pins would stay.
        if let Err(e) = endpoint_hooks::remove_pins(&self.bpf_dir, netns.id(), link.ifindex) {
            undo.push(UndoFailure::new("removing its program pins", e));
        }
        Err(if undo.is_empty() {
            failed
        } else {
            NetworkError::RollbackFailed {
                failed: Box::new(failed),
                undo,
            }
        })
    }

    async fn configure(
        &self,
        netlink: &Netlink,
        netns: &Netns,
        ifindex: u32,
        loading: endpoint_hooks::Loading,
    ) -> Result<Materialized, NetworkError> {
        netlink.set_alias(ifindex, &self.alias).await?;
        if netlink.link_by_name(&self.ifname).await.is_ok() {
            return Err(NetworkError::IfnameTaken {
                ifname: self.ifname.clone(),
            });
        }
        netlink.rename(ifindex, &self.ifname).await?;
        // Without DAD, as Docker adds them (IFA_F_NODAD): IPAM handed the
        // address out, and a tentative one could not be used for a second.
        for address in &self.addresses {
            netlink.add_address_nodad(ifindex, *address).await?;
        }
        failpoint("connect-after-addresses")?;
        let mac = netlink.link_by_index(ifindex).await?.mac;
        // Before the link is up: no frame ever leaves unchecked or
        // uncounted.
        let mut config = egress_config(mac, &self.addresses);
        if self.spoofcheck {
            config.flags |= EGRESS_ENFORCE;
        }
        endpoint_hooks::attach(
            &self.bpf_dir,
            netns,
            ifindex,
            &self.ifname,
            &config,
            loading,
        )?;
        failpoint("connect-after-programs")?;
        announce_on_up(netns, &self.ifname);
        netlink.set_up(ifindex).await?;
        failpoint("connect-after-up")?;
        for (gateway, ipv6) in &self.routes {
            netlink.add_default_route(ifindex, *gateway, *ipv6).await?;
        }
        failpoint("connect-after-routes")?;
        Ok(Materialized { mac, ifindex })
    }
}

/// What the endpoint may send as: its MAC and its addresses.
pub(super) fn egress_config(mac: Option<[u8; 6]>, addresses: &[IpNet]) -> EgressConfig {
    let mut config = EgressConfig {
        mac: mac.unwrap_or_default(),
        ..EgressConfig::default()
    };
    for address in addresses {
        match address.addr() {
            IpAddr::V4(v4) => {
                config.ipv4 = v4.octets();
                config.flags |= EGRESS_HAS_IPV4;
            }
            IpAddr::V6(v6) => {
                config.ipv6 = v6.octets();
                config.flags |= EGRESS_HAS_IPV6;
            }
        }
    }
    config
}

/// Asks the kernel to announce the endpoint when it comes up: a gratuitous
/// ARP (`arp_notify`) and an unsolicited neighbour advertisement
/// (`ndisc_notify`), so switches and peers learn the new MAC at once.
/// `/proc/sys/net` resolves to the calling thread's namespace. Best effort:
/// an announcement that cannot be arranged is logged, never fatal.
fn announce_on_up(netns: &Netns, ifname: &str) {
    let written = netns::run_blocking_in(netns, || {
        for (family, knob) in [("ipv4", "arp_notify"), ("ipv6", "ndisc_notify")] {
            let path = format!("/proc/sys/net/{family}/conf/{ifname}/{knob}");
            if let Err(e) = std::fs::write(&path, "1") {
                // No IPv6 in the sandbox is normal.
                tracing::debug!("cannot set {path}: {e}");
            }
        }
    });
    if let Err(e) = written {
        tracing::debug!("cannot ask {ifname} to announce itself: {e}");
    }
}

/// Deletes link `name` inside the namespace at `path`, if it is there.
pub(crate) async fn delete_link_in(path: &Path, name: &str) -> Result<(), UndoError> {
    let netlink = Netlink::connect_in(&Netns::open(path)?)?;
    match netlink.link_by_name(name).await {
        Ok(link) => Ok(netlink.delete_link(link.ifindex).await?),
        Err(NetlinkError::NoSuchInterface { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the links inside the namespace at `path` that carry `alias`
/// or are still named `temp_name`, with their program pins (the programs
/// go with the link, their pins would stay). Returns the links' names.
pub(crate) async fn delete_tagged(
    path: &Path,
    alias: &str,
    temp_name: &str,
    bpf_dir: &Path,
) -> Result<Vec<String>, UndoError> {
    let netns = Netns::open(path)?;
    let netlink = Netlink::connect_in(&netns)?;
    let mut deleted = Vec::new();
    for link in netlink.links().await? {
        if link.alias.as_deref() == Some(alias) || link.name == temp_name {
            netlink.delete_link(link.ifindex).await?;
            endpoint_hooks::remove_pins(bpf_dir, netns.id(), link.ifindex)?;
            deleted.push(link.name);
        }
    }
    Ok(deleted)
}
