//! rtnetlink access: the one place netvlan talks to the kernel about links.
//!
//! No `ip` subprocess anywhere: every query and change goes through
//! `rtnetlink`, and kernel errors keep their errno so callers can tell
//! `ENODEV` from `EEXIST`.

use crate::{
    keyword::{keyword_text, Keyword},
    sys::netns::{self, Netns},
};
use futures_util::TryStreamExt;
use netlink_packet_route::link::{
    IpVlanFlags, IpVlanMode, LinkAttribute, LinkMessage, LinkXdp, MacVlanMode, XdpAttached,
};
use rtnetlink::{LinkDummy, LinkIpVlan, LinkMacVlan, LinkVlan};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, AsRawFd};

/// Errors talking rtnetlink.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open an rtnetlink socket")]
    Connect(#[source] std::io::Error),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("no interface named '{name}' in this network namespace")]
    NoSuchInterface { name: String },
    #[error("no interface with index {ifindex} in this network namespace")]
    NoSuchIfindex { ifindex: u32 },
    #[error("this kernel has no {kind} support ({config}); load its module or use a kernel built with it")]
    UnsupportedLinkType {
        kind: &'static str,
        config: &'static str,
    },
    #[error("an interface named '{name}' already exists")]
    LinkExists { name: String },
    #[error("netlink request failed: {what}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
}

impl NetlinkError {
    /// The same failure, described as `what` (a request on a link whose
    /// name is netvlan's own temporary one says what it was for instead).
    pub fn described_as(self, what: String) -> Self {
        match self {
            NetlinkError::Request { source, .. } => NetlinkError::Request { what, source },
            other => other,
        }
    }

    /// The kernel's errno for this failure, when the kernel sent one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request { source, .. } => errno(source),
            NetlinkError::NoSuchInterface { .. } | NetlinkError::NoSuchIfindex { .. } => {
                Some(libc::ENODEV)
            }
            NetlinkError::UnsupportedLinkType { .. } => Some(libc::EOPNOTSUPP),
            NetlinkError::LinkExists { .. } => Some(libc::EEXIST),
            _ => None,
        }
    }
}

/// macvlan modes (`-o macvlan_mode=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    /// Endpoints on one parent reach each other inside the host.
    #[default]
    Bridge,
    /// Everything goes out to the switch, which must hairpin.
    Vepa,
    /// Endpoints never reach each other.
    Private,
    /// One endpoint takes over the parent.
    Passthru,
}

/// ipvlan modes (`-o ipvlan_mode=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpvlanMode {
    #[default]
    L2,
    L3,
    L3s,
}

/// ipvlan flags (`-o ipvlan_flag=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpvlanFlag {
    #[default]
    Bridge,
    Private,
    Vepa,
}

impl Keyword for MacvlanMode {
    const WHAT: &'static str = "macvlan mode";
    const ALL: &'static [Self] = &[Self::Bridge, Self::Vepa, Self::Private, Self::Passthru];
    fn name(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Vepa => "vepa",
            Self::Private => "private",
            Self::Passthru => "passthru",
        }
    }
}
keyword_text!(MacvlanMode);

impl Keyword for IpvlanMode {
    const WHAT: &'static str = "ipvlan mode";
    const ALL: &'static [Self] = &[Self::L2, Self::L3, Self::L3s];
    fn name(self) -> &'static str {
        match self {
            Self::L2 => "l2",
            Self::L3 => "l3",
            Self::L3s => "l3s",
        }
    }
}
keyword_text!(IpvlanMode);

impl Keyword for IpvlanFlag {
    const WHAT: &'static str = "ipvlan flag";
    const ALL: &'static [Self] = &[Self::Bridge, Self::Private, Self::Vepa];
    fn name(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Private => "private",
            Self::Vepa => "vepa",
        }
    }
}
keyword_text!(IpvlanFlag);

/// Settings applied when a link is created.
#[derive(Clone, Debug, Default)]
pub struct LinkOptions<'a> {
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// Create the link directly inside this network namespace.
    pub netns: Option<&'a Netns>,
    /// `IFLA_IFALIAS`: netvlan tags the links it creates with their owner,
    /// so crash recovery only ever deletes its own links. The kernel ignores
    /// an alias in RTM_NEWLINK, so it is set right after creation (for a
    /// link born in another namespace the caller sets it there).
    pub alias: Option<String>,
}

/// How every alias netvlan gives its own links begins (`netvlan:ID`).
pub const OWNER_ALIAS_PREFIX: &str = "netvlan:";

/// A link netvlan creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewLink {
    /// 802.1Q sub-interface of `parent`.
    Vlan {
        parent: u32,
        vid: u16,
    },
    Macvlan {
        parent: u32,
        mode: MacvlanMode,
    },
    Ipvlan {
        parent: u32,
        mode: IpvlanMode,
        flag: IpvlanFlag,
    },
    /// Placeholder parent of an internal network.
    Dummy,
}

impl NewLink {
    /// The kernel's link kind and the config option that provides it.
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            NewLink::Vlan { .. } => ("802.1Q VLAN", "CONFIG_VLAN_8021Q"),
            NewLink::Macvlan { .. } => ("macvlan", "CONFIG_MACVLAN"),
            NewLink::Ipvlan { .. } => ("ipvlan", "CONFIG_IPVLAN"),
            NewLink::Dummy => ("dummy", "CONFIG_DUMMY"),
        }
    }

    fn message(&self, name: &str) -> LinkMessage {
        match *self {
            NewLink::Vlan { parent, vid } => LinkVlan::new(name, parent, vid).build(),
            NewLink::Macvlan { parent, mode } => {
                let mode = match mode {
                    MacvlanMode::Bridge => MacVlanMode::Bridge,
                    MacvlanMode::Vepa => MacVlanMode::Vepa,
                    MacvlanMode::Private => MacVlanMode::Private,
                    MacvlanMode::Passthru => MacVlanMode::Passthrough,
                };
                LinkMacVlan::new(name, parent, mode).build()
            }
            NewLink::Ipvlan { parent, mode, flag } => {
                let mode = match mode {
                    IpvlanMode::L2 => IpVlanMode::L2,
                    IpvlanMode::L3 => IpVlanMode::L3,
                    IpvlanMode::L3s => IpVlanMode::L3S,
                };
                let flag = match flag {
                    IpvlanFlag::Bridge => IpVlanFlags::empty(),
                    IpvlanFlag::Private => IpVlanFlags::Private,
                    IpvlanFlag::Vepa => IpVlanFlags::Vepa,
                };
                LinkIpVlan::new(name, parent, mode).flag(flag).build()
            }
            NewLink::Dummy => LinkDummy::new(name).build(),
        }
    }
}

/// How an XDP program is attached to a link, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttachMode {
    /// In the driver (`XDP_ATTACHED_DRV`).
    Native,
    /// In the generic skb path (`XDP_ATTACHED_SKB`).
    Generic,
    /// Offloaded to the NIC.
    Hardware,
}

impl std::fmt::Display for XdpAttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            XdpAttachMode::Native => "native",
            XdpAttachMode::Generic => "generic",
            XdpAttachMode::Hardware => "hardware",
        })
    }
}

/// The XDP program the kernel reports on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpState {
    pub mode: XdpAttachMode,
    pub prog_id: u32,
}

/// What netvlan needs to know about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub alias: Option<String>,
    pub xdp: Option<XdpState>,
    pub mtu: Option<u32>,
    /// The kernel's link-layer type (`ETHER`, `LOOPBACK`, ...): macvlan
    /// and ipvlan need an Ethernet parent.
    pub link_layer: netlink_packet_route::link::LinkLayerType,
}

/// An rtnetlink connection to one network namespace.
///
/// The socket binds to the namespace of the thread that creates it and
/// stays there. Clones share the connection: one per operation is enough.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a connection in the calling thread's namespace; needs a
    /// running tokio runtime, which drives it.
    pub fn connect() -> Result<Self, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// Opens a connection in `netns`, driven by the calling runtime: the
    /// socket is made on a short thread inside the namespace (registered
    /// with this runtime there), so the link work that follows runs here,
    /// on no thread of its own.
    pub fn connect_in(netns: &Netns) -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::current();
        let (connection, handle, _) = netns::run_blocking_in(netns, || {
            let _runtime = runtime.enter();
            rtnetlink::new_connection()
        })?
        .map_err(NetlinkError::Connect)?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    pub async fn link_by_name(&self, name: &str) -> Result<LinkInfo, NetlinkError> {
        let request = self.handle.link().get().match_name(name.to_string());
        match request.execute().try_next().await {
            Ok(Some(msg)) => Ok(link_info(&msg)),
            Ok(None) => Err(NetlinkError::NoSuchInterface { name: name.into() }),
            Err(e) if is_enodev(&e) => Err(NetlinkError::NoSuchInterface { name: name.into() }),
            Err(source) => Err(NetlinkError::Request {
                what: format!("get link '{name}'"),
                source,
            }),
        }
    }

    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let mut stream = self.handle.link().get().execute();
        let mut out = Vec::new();
        loop {
            match stream.try_next().await {
                Ok(Some(msg)) => out.push(link_info(&msg)),
                Ok(None) => return Ok(out),
                Err(source) => {
                    return Err(NetlinkError::Request {
                        what: "dump links".into(),
                        source,
                    })
                }
            }
        }
    }

    pub async fn link_by_index(&self, ifindex: u32) -> Result<LinkInfo, NetlinkError> {
        let request = self.handle.link().get().match_index(ifindex);
        match request.execute().try_next().await {
            Ok(Some(msg)) => Ok(link_info(&msg)),
            Ok(None) => Err(NetlinkError::NoSuchIfindex { ifindex }),
            Err(e) if is_enodev(&e) => Err(NetlinkError::NoSuchIfindex { ifindex }),
            Err(source) => Err(NetlinkError::Request {
                what: format!("get link #{ifindex}"),
                source,
            }),
        }
    }
}

impl Netlink {
    /// Creates a link (down) and returns it as the kernel reports it.
    pub async fn create_link(&self, name: &str, link: NewLink) -> Result<LinkInfo, NetlinkError> {
        self.create_link_with(name, link, &LinkOptions::default())
            .await?;
        self.link_by_name(name).await
    }

    /// Creates a link (down) with extra settings. With `netns` the link
    /// is born in that namespace, so it is never visible in ours.
    pub async fn create_link_with(
        &self,
        name: &str,
        link: NewLink,
        options: &LinkOptions<'_>,
    ) -> Result<(), NetlinkError> {
        let mut message = link.message(name);
        if let Some(mac) = options.mac {
            message
                .attributes
                .push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = options.mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(netns) = options.netns {
            message
                .attributes
                .push(LinkAttribute::NetNsFd(netns.as_fd().as_raw_fd()));
        }
        let request = self.handle.link().add(message);
        if let Err(source) = request.execute().await {
            return Err(match errno(&source) {
                // The kernel answers EOPNOTSUPP when no rtnl_link_ops exist
                // for the kind (module missing): `ip` prints "Unknown device type".
                Some(libc::EOPNOTSUPP) => {
                    let (kind, config) = link.kind();
                    NetlinkError::UnsupportedLinkType { kind, config }
                }
                Some(libc::EEXIST) => NetlinkError::LinkExists { name: name.into() },
                _ => NetlinkError::Request {
                    what: format!("create {} link '{name}'", link.kind().0),
                    source,
                },
            });
        }
        if let (Some(alias), None) = (&options.alias, options.netns) {
            let created = self.link_by_name(name).await?;
            self.set_alias(created.ifindex, alias).await?;
        }
        Ok(())
    }

    /// Sets a link's alias (`IFLA_IFALIAS`).
    pub async fn set_alias(&self, ifindex: u32, alias: &str) -> Result<(), NetlinkError> {
        let mut message = rtnetlink::LinkUnspec::new_with_index(ifindex).build();
        message
            .attributes
            .push(LinkAttribute::IfAlias(alias.to_string()));
        self.handle
            .link()
            .change(message)
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                what: format!("set the alias of link #{ifindex}"),
                source,
            })
    }

    /// Creates a veth pair (both ends down) in this namespace.
    pub async fn create_veth(
        &self,
        name: &str,
        peer: &str,
        alias: Option<&str>,
    ) -> Result<(), NetlinkError> {
        let message = rtnetlink::LinkVeth::new(name, peer).build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(|source| match errno(&source) {
                Some(libc::EEXIST) => NetlinkError::LinkExists { name: name.into() },
                _ => NetlinkError::Request {
                    what: format!("create veth pair '{name}'/'{peer}'"),
                    source,
                },
            })?;
        if let Some(alias) = alias {
            let created = self.link_by_name(name).await?;
            self.set_alias(created.ifindex, alias).await?;
        }
        Ok(())
    }

    /// Moves a link into another network namespace.
    pub async fn move_to_netns(&self, ifindex: u32, netns: &Netns) -> Result<(), NetlinkError> {
        let message = rtnetlink::LinkUnspec::new_with_index(ifindex)
            .setns_by_fd(netns.as_fd().as_raw_fd())
            .build();
        self.handle
            .link()
            .change(message)
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                what: format!("move link #{ifindex} to another namespace"),
                source,
            })
    }

    /// Renames a (down) link.
    pub async fn rename(&self, ifindex: u32, name: &str) -> Result<(), NetlinkError> {
        let message = rtnetlink::LinkUnspec::new_with_index(ifindex)
            .name(name.to_string())
            .build();
        match self.handle.link().change(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                Err(NetlinkError::LinkExists { name: name.into() })
            }
            Err(source) => Err(NetlinkError::Request {
                what: format!("rename link #{ifindex} to '{name}'"),
                source,
            }),
        }
    }

    /// Adds an address with its prefix length.
    pub async fn add_address(
        &self,
        ifindex: u32,
        address: ipnet::IpNet,
    ) -> Result<(), NetlinkError> {
        self.handle
            .address()
            .add(ifindex, address.addr(), address.prefix_len())
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                what: format!("add address {address} to link #{ifindex}"),
                source,
            })
    }

    /// Adds an address that skips duplicate address detection (IPv6:
    /// usable at once instead of tentative for a second or more).
    pub async fn add_address_nodad(
        &self,
        ifindex: u32,
        address: ipnet::IpNet,
    ) -> Result<(), NetlinkError> {
        use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
        let mut request = self
            .handle
            .address()
            .add(ifindex, address.addr(), address.prefix_len());
        let message = request.message_mut();
        message.header.flags |= AddressHeaderFlags::Nodad;
        message
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        request
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                what: format!("add address {address} to link #{ifindex}"),
                source,
            })
    }

    /// Deletes an address; one that is not there is not an error.
    pub async fn delete_address(
        &self,
        ifindex: u32,
        address: ipnet::IpNet,
    ) -> Result<(), NetlinkError> {
        use std::net::IpAddr;
        let message = match address.addr() {
            IpAddr::V4(a) => rtnetlink::AddressMessageBuilder::<std::net::Ipv4Addr>::new()
                .index(ifindex)
                .address(a, address.prefix_len())
                .build(),
            IpAddr::V6(a) => rtnetlink::AddressMessageBuilder::<std::net::Ipv6Addr>::new()
                .index(ifindex)
                .address(a, address.prefix_len())
                .build(),
        };
        match self.handle.address().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL | libc::ENODEV)) => Ok(()),
            Err(source) => Err(NetlinkError::Request {
                what: format!("delete address {address} from link #{ifindex}"),
                source,
            }),
        }
    }

    /// The addresses configured on `ifindex`, with their prefix lengths.
    pub async fn address_nets(&self, ifindex: u32) -> Result<Vec<ipnet::IpNet>, NetlinkError> {
        use netlink_packet_route::address::AddressAttribute;
        let err = |source| NetlinkError::Request {
            what: format!("list the addresses of link #{ifindex}"),
            source,
        };
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute();
        let mut out = Vec::new();
        while let Some(message) = stream.try_next().await.map_err(err)? {
            let prefix = message.header.prefix_len;
            for attribute in message.attributes {
                if let AddressAttribute::Address(ip) = attribute {
                    if let Ok(net) = ipnet::IpNet::new(ip, prefix) {
                        out.push(net);
                    }
                }
            }
        }
        Ok(out)
    }

    /// A host route (/32, /128) to `destination` out of `ifindex`, from
    /// `source` (the link's own address of that family).
    fn host_route_message(
        ifindex: u32,
        destination: std::net::IpAddr,
        source: Option<std::net::IpAddr>,
    ) -> netlink_packet_route::route::RouteMessage {
        use std::net::IpAddr;
        match destination {
            IpAddr::V4(d) => {
                let mut b = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .destination_prefix(d, 32)
                    .output_interface(ifindex)
                    .scope(netlink_packet_route::route::RouteScope::Link);
                if let Some(IpAddr::V4(s)) = source {
                    b = b.pref_source(s);
                }
                b.build()
            }
            IpAddr::V6(d) => {
                let mut b = rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .destination_prefix(d, 128)
                    .output_interface(ifindex);
                if let Some(IpAddr::V6(s)) = source {
                    b = b.pref_source(s);
                }
                b.build()
            }
        }
    }

    /// Adds (or replaces) a host route to `destination` out of `ifindex`.
    pub async fn add_host_route(
        &self,
        ifindex: u32,
        destination: std::net::IpAddr,
        source: Option<std::net::IpAddr>,
    ) -> Result<(), NetlinkError> {
        let message = Self::host_route_message(ifindex, destination, source);
        self.handle
            .route()
            .add(message)
            .replace()
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                what: format!("add a route to {destination} on link #{ifindex}"),
                source,
            })
    }

    /// Deletes the host route to `destination` out of `ifindex`; one that
    /// is not there is not an error.
    pub async fn delete_host_route(
        &self,
        ifindex: u32,
        destination: std::net::IpAddr,
    ) -> Result<(), NetlinkError> {
        let mut message = Self::host_route_message(ifindex, destination, None);
        // Whoever added it: match any protocol and scope, as `ip route del`.
        message.header.protocol = netlink_packet_route::route::RouteProtocol::Unspec;
        message.header.scope = netlink_packet_route::route::RouteScope::NoWhere;
        match self.handle.route().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::ESRCH | libc::ENODEV)) => Ok(()),
            Err(source) => Err(NetlinkError::Request {
                what: format!("delete the route to {destination} on link #{ifindex}"),
                source,
            }),
        }
    }

    /// The destinations of the host routes (/32, /128) of the main table
    /// out of `ifindex`.
    pub async fn host_routes(&self, ifindex: u32) -> Result<Vec<std::net::IpAddr>, NetlinkError> {
        use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader};
        use std::net::{Ipv4Addr, Ipv6Addr};
        let mut out = Vec::new();
        for ipv6 in [false, true] {
            let message = if ipv6 {
                rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new().build()
            } else {
                rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build()
            };
            let mut stream = self.handle.route().get(message).execute();
            while let Some(route) =
                stream
                    .try_next()
                    .await
                    .map_err(|source| NetlinkError::Request {
                        what: "list the routes".into(),
                        source,
                    })?
            {
                let full = if ipv6 { 128 } else { 32 };
                if route.header.table != RouteHeader::RT_TABLE_MAIN
                    || route.header.destination_prefix_length != full
                {
                    continue;
                }
                let mut oif = 0;
                let mut destination = None;
                for attribute in &route.attributes {
                    match attribute {
                        RouteAttribute::Oif(i) => oif = *i,
                        RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                            destination = Some((*a).into())
                        }
                        RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                            destination = Some((*a).into())
                        }
                        _ => {}
                    }
                }
                if let (true, Some(d)) = (oif == ifindex, destination) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// The addresses configured on `ifindex`.
    pub async fn addresses(&self, ifindex: u32) -> Result<Vec<std::net::IpAddr>, NetlinkError> {
        use netlink_packet_route::address::AddressAttribute;
        let err = |source| NetlinkError::Request {
            what: format!("list the addresses of link #{ifindex}"),
            source,
        };
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute();
        let mut out = Vec::new();
        while let Some(message) = stream.try_next().await.map_err(err)? {
            for attribute in message.attributes {
                if let AddressAttribute::Address(ip) = attribute {
                    out.push(ip);
                }
            }
        }
        Ok(out)
    }

    /// Adds a default route out of `ifindex`, via `gateway` when given,
    /// else straight out of the device (ipvlan l3).
    pub async fn add_default_route(
        &self,
        ifindex: u32,
        gateway: Option<std::net::IpAddr>,
        ipv6: bool,
    ) -> Result<(), NetlinkError> {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let message = match (gateway, ipv6) {
            (Some(IpAddr::V4(gw)), _) => rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                .output_interface(ifindex)
                .gateway(gw)
                .build(),
            (Some(IpAddr::V6(gw)), _) => rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new()
                .output_interface(ifindex)
                .gateway(gw)
                .build(),
            (None, false) => rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                .output_interface(ifindex)
                .scope(netlink_packet_route::route::RouteScope::Link)
                .build(),
            (None, true) => rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new()
                .output_interface(ifindex)
                .build(),
        };
        self.handle
            .route()
            .add(message)
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                what: match gateway {
                    Some(gateway) => format!("add default route via {gateway} on link #{ifindex}"),
                    None => format!("add default route on link #{ifindex}"),
                },
                source,
            })
    }

    /// Default routes of the main table: the output link and the gateway
    /// of each.
    pub async fn default_routes(
        &self,
        ipv6: bool,
    ) -> Result<Vec<(u32, Option<std::net::IpAddr>)>, NetlinkError> {
        use netlink_packet_route::route::{RouteAddress, RouteAttribute};
        use std::net::{Ipv4Addr, Ipv6Addr};
        let message = if ipv6 {
            rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new().build()
        } else {
            rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build()
        };
        let mut stream = self.handle.route().get(message).execute();
        let mut out = Vec::new();
        while let Some(route) = stream
            .try_next()
            .await
            .map_err(|source| NetlinkError::Request {
                what: "list the routes".into(),
                source,
            })?
        {
            let main =
                route.header.table == netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN;
            if route.header.destination_prefix_length != 0 || !main {
                continue;
            }
            let mut oif = 0;
            let mut gateway = None;
            for attribute in &route.attributes {
                match attribute {
                    RouteAttribute::Oif(i) => oif = *i,
                    RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some((*a).into()),
                    RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gateway = Some((*a).into()),
                    _ => {}
                }
            }
            out.push((oif, gateway));
        }
        Ok(out)
    }

    /// Ids of the cls_bpf programs in `ifindex`'s clsact egress (or
    /// ingress) hook; none when the link has no clsact qdisc.
    pub async fn tc_bpf_programs(
        &self,
        ifindex: u32,
        egress: bool,
    ) -> Result<Vec<u32>, NetlinkError> {
        let filters = self.tc_bpf_filters(ifindex, egress).await?;
        Ok(filters.into_iter().map(|f| f.prog_id).collect())
    }

    /// The BPF filters in `ifindex`'s clsact egress (or ingress) hook, with
    /// the priority and handle that name each (what replacing one needs).
    pub async fn tc_bpf_filters(
        &self,
        ifindex: u32,
        egress: bool,
    ) -> Result<Vec<TcBpfFilter>, NetlinkError> {
        use netlink_packet_route::tc::{TcAttribute, TcFilterBpfOption, TcOption};
        let request = self.handle.traffic_filter(ifindex as i32).get();
        let request = if egress {
            request.egress()
        } else {
            request.ingress()
        };
        let mut stream = request.execute();
        let mut out = Vec::new();
        loop {
            let message = match stream.try_next().await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                // No clsact qdisc: nothing attached there.
                Err(e) if matches!(errno(&e), Some(libc::EINVAL | libc::ENOENT)) => break,
                Err(source) => {
                    return Err(NetlinkError::Request {
                        what: format!("list the TC filters of link #{ifindex}"),
                        source,
                    })
                }
            };
            for attribute in message.attributes {
                if let TcAttribute::Options(options) = attribute {
                    for option in options {
                        if let TcOption::Bpf(TcFilterBpfOption::ProgId(prog_id)) = option {
                            out.push(TcBpfFilter {
                                prog_id,
                                // tcm_info: priority in the upper half.
                                priority: (message.header.info >> 16) as u16,
                                handle: u32::from(message.header.handle.major) << 16
                                    | u32::from(message.header.handle.minor),
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deletes every filter of `ifindex`'s clsact egress (or ingress)
    /// hook; a link without clsact has none to delete.
    pub async fn flush_tc_hook(&self, ifindex: u32, egress: bool) -> Result<(), NetlinkError> {
        let request = self.handle.traffic_filter(ifindex as i32).del();
        let request = if egress {
            request.egress()
        } else {
            request.ingress()
        };
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::EINVAL | libc::ENOENT)) => Ok(()),
            Err(source) => Err(NetlinkError::Request {
                what: format!("delete the TC filters of link #{ifindex}"),
                source,
            }),
        }
    }

    /// Deletes a link; deleting one that is already gone is not an error.
    pub async fn delete_link(&self, ifindex: u32) -> Result<(), NetlinkError> {
        match self.handle.link().del(ifindex).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_enodev(&e) => Ok(()),
            Err(source) => Err(NetlinkError::Request {
                what: format!("delete link #{ifindex}"),
                source,
            }),
        }
    }

    /// Brings a link up.
    pub async fn set_up(&self, ifindex: u32) -> Result<(), NetlinkError> {
        let message = rtnetlink::LinkUnspec::new_with_index(ifindex).up().build();
        self.handle
            .link()
            .change(message)
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                what: format!("set link #{ifindex} up"),
                source,
            })
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn is_enodev(e: &rtnetlink::Error) -> bool {
    errno(e) == Some(libc::ENODEV)
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut name = String::new();
    let mut xdp = None;
    let mut mac = None;
    let mut alias = None;
    let mut mtu = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Mtu(m) => mtu = Some(*m),
            LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            LinkAttribute::IfAlias(a) => alias = Some(a.clone()),
            LinkAttribute::Xdp(nlas) => xdp = xdp_state(nlas),
            _ => {}
        }
    }
    LinkInfo {
        ifindex: msg.header.index,
        name,
        mac,
        alias,
        xdp,
        mtu,
        link_layer: msg.header.link_layer_type,
    }
}

fn xdp_state(nlas: &[LinkXdp]) -> Option<XdpState> {
    let mut mode = None;
    let mut prog_id = 0;
    for nla in nlas {
        match nla {
            LinkXdp::Attached(XdpAttached::Driver) => mode = Some(XdpAttachMode::Native),
            LinkXdp::Attached(XdpAttached::SocketBuffer) => mode = Some(XdpAttachMode::Generic),
            LinkXdp::Attached(XdpAttached::Hardware) => mode = Some(XdpAttachMode::Hardware),
            LinkXdp::ProgId(id) => prog_id = *id,
            _ => {}
        }
    }
    mode.map(|mode| XdpState { mode, prog_id })
}

/// One BPF filter of a clsact hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcBpfFilter {
    pub prog_id: u32,
    pub priority: u16,
    pub handle: u32,
}
