//! rtnetlink access: the one place netvlan talks to the kernel about links.
//!
//! No `ip` subprocess anywhere: every query and change goes through
//! `rtnetlink`, and kernel errors keep their errno so callers can tell
//! `ENODEV` from `EEXIST`.

use futures_util::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached};

/// Errors talking rtnetlink.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open an rtnetlink socket")]
    Connect(#[source] std::io::Error),
    #[error("no interface named '{name}' in this network namespace")]
    NoSuchInterface { name: String },
    #[error("no interface with index {ifindex} in this network namespace")]
    NoSuchIfindex { ifindex: u32 },
    #[error("netlink request failed: {what}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
}

impl NetlinkError {
    /// The kernel's errno for this failure, when the kernel sent one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request {
                source: rtnetlink::Error::NetlinkError(msg),
                ..
            } => msg.code.map(|c| -c.get()),
            NetlinkError::NoSuchInterface { .. } | NetlinkError::NoSuchIfindex { .. } => {
                Some(libc::ENODEV)
            }
            _ => None,
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
    pub xdp: Option<XdpState>,
}

/// An rtnetlink connection in the current network namespace.
///
/// The socket binds to the namespace of the thread that creates it, so
/// create it after entering the namespace you mean.
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a connection; needs a running tokio runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
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

fn is_enodev(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.code.map(|c| -c.get()) == Some(libc::ENODEV))
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut name = String::new();
    let mut xdp = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Xdp(nlas) => xdp = xdp_state(nlas),
            _ => {}
        }
    }
    LinkInfo {
        ifindex: msg.header.index,
        name,
        xdp,
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
