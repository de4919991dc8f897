//! The errors of the control plane: one enum for every command, naming
//! the object, wrapping the lower layers' errors (errno kept), and typed
//! lists where a rollback or teardown keeps going past failures.

use super::{driver::Driver, options::OptionError};
use crate::{
    datapath::DatapathError, ipam::IpamError, store::StoreError, sys::netlink::NetlinkError,
    sys::netns::NetnsError, sys::sandbox::SandboxError,
};

/// Errors of network and endpoint commands. Each names the object.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network name '{0}' is invalid: use letters, digits, '_', '.' or '-', starting with a letter or digit, at most 64 characters")]
    BadName(String),
    #[error("a network named '{0}' already exists")]
    NameInUse(String),
    #[error("no network named '{0}'")]
    UnknownNetwork(String),
    #[error("--subnet is required: netvlan puts containers on an existing LAN and cannot guess its address plan")]
    NoSubnet,
    #[error("--ipv6 needs at least one IPv6 --subnet")]
    Ipv6WithoutSubnet,
    /// Shown with its input; no `#[source]`, or chains would repeat it.
    #[error("invalid option: {0}")]
    BadOption(OptionError),
    #[error("invalid --label '{0}': expected KEY=VALUE with a non-empty KEY")]
    BadLabel(String),
    #[error("--label {0} is given more than once")]
    DuplicateLabel(String),
    #[error("invalid --filter '{filter}': {reason}")]
    BadFilter { filter: String, reason: String },
    #[error("parent interface '{0}' does not exist")]
    UnknownParent(String),
    #[error("parent interface '{parent}' is a {kind} interface, not Ethernet: macvlan and ipvlan endpoints need an Ethernet parent (a NIC, bond, veth or VLAN link)")]
    ParentNotEthernet { parent: String, kind: String },
    #[error("mtu={mtu} is larger than the MTU of parent interface '{parent}' ({parent_mtu}): endpoints cannot exceed their parent's MTU; raise the parent's MTU first or use mtu={parent_mtu} or less")]
    MtuAboveParent {
        mtu: u32,
        parent: String,
        parent_mtu: u32,
    },
    #[error("parent interface '{parent}' does not accept {driver} endpoints")]
    ParentRefused {
        parent: String,
        driver: Driver,
        #[source]
        source: NetlinkError,
    },
    #[error("{setting} on network '{network}' would also apply to network(s) {others}, which share {scope}; a network's policy must stay inside it: give the network its own parent or VLAN (parent=IFACE.VID)")]
    PolicyReachesOthers {
        network: String,
        setting: String,
        others: String,
        scope: String,
    },
    #[error("network '{other}' enforces {setting} on {scope}, which would also apply to the new network '{network}'; give '{network}' its own parent or VLAN (parent=IFACE.VID), or turn {setting} off on '{other}' first")]
    PolicyWouldReach {
        network: String,
        other: String,
        setting: String,
        scope: String,
    },
    #[error("VLAN id {vid} in parent '{parent}' is outside 1..4094")]
    VlanOutOfRange { parent: String, vid: String },
    #[error("network '{network}' is already using parent interface {parent}")]
    ParentInUse { network: String, parent: String },
    #[error("subnet {subnet} overlaps subnet {other} of network '{network}'")]
    SubnetOverlap {
        subnet: ipnet::IpNet,
        other: ipnet::IpNet,
        network: String,
    },
    #[error("parent interface '{parent}' is {owner}, a link netvlan manages itself; give the LAN's interface as parent, or none for an internal network")]
    ParentIsNetvlans { parent: String, owner: String },
    #[error("the policy of network '{network}' cannot be enforced: {reason}")]
    NotEnforced { network: String, reason: String },
    #[error("network '{network}' has {count} connected endpoint(s); disconnect them first")]
    HasEndpoints { network: String, count: usize },
    #[error("sandbox '{sandbox}' is already connected to network '{network}'")]
    AlreadyConnected { network: String, sandbox: String },
    #[error("sandbox '{sandbox}' of network '{network}' is gone (the network namespace its endpoint was made in no longer exists): remove the endpoint with `netvlan disconnect -f {network} {sandbox}`")]
    SandboxGone { network: String, sandbox: String },
    #[error("sandbox '{sandbox}' is the network namespace netvlan runs in, which holds parent '{parent}': connect a container's namespace instead")]
    SandboxIsHost { sandbox: String, parent: String },
    #[error("sandbox '{sandbox}' is not connected to network '{network}'")]
    NotConnected { network: String, sandbox: String },
    #[error("passthru network '{0}' already has its one endpoint")]
    PassthruTaken(String),
    #[error("{0}")]
    BadEndpoint(String),
    #[error("parent interface '{parent}' of network '{network}' is missing (after a reboot, run `netvlan restore`)")]
    ParentMissing { network: String, parent: String },
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A fault injected by a test through `FAILPOINTS` (feature `failpoints`).
    #[error("injected fault at {0}")]
    Injected(String),
    #[error("{failed} failed, and undoing it also failed: {}", UndoFailure::list(.undo))]
    RollbackFailed {
        #[source]
        failed: Box<NetworkError>,
        /// Every undo that failed, newest change first.
        undo: Vec<UndoFailure>,
    },
    #[error("network '{network}' was removed, but cleaning up failed: {}", UndoFailure::list(.errors))]
    TeardownIncomplete {
        network: String,
        errors: Vec<UndoFailure>,
    },
    /// Cleaning up after a command that died half-way failed.
    #[error("cleaning up after an interrupted command failed: {0}")]
    RecoveryFailed(#[source] Box<UndoFailure>),
}

impl From<OptionError> for NetworkError {
    fn from(e: OptionError) -> Self {
        NetworkError::BadOption(e)
    }
}

/// One cleanup step that failed (undoing a change, tearing down a
/// network): what it was doing, and the lower layer's error.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {source}")]
pub struct UndoFailure {
    /// E.g. `deleting eth0.10`.
    pub action: String,
    #[source]
    pub source: UndoError,
}

impl UndoFailure {
    pub fn new(action: impl Into<String>, source: impl Into<UndoError>) -> Self {
        UndoFailure {
            action: action.into(),
            source: source.into(),
        }
    }

    /// The failures in one line, as the error messages show them.
    fn list(failures: &[UndoFailure]) -> String {
        failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Why a cleanup step failed.
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A step that is a control-plane operation itself (rewriting a
    /// wire's policy).
    #[error(transparent)]
    Network(#[from] Box<NetworkError>),
}
