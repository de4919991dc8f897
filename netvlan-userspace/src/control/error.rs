//! The errors of the control plane: one enum for every command, naming
//! the object, wrapping the lower layers' errors (errno kept), and typed
//! lists where a rollback or teardown keeps going past failures.

use super::{driver::Driver, options::OptionError};
use crate::{
    datapath::DatapathError,
    ipam::{Family, IpamError},
    store::StoreError,
    sys::netlink::NetlinkError,
    sys::netns::NetnsError,
    sys::sandbox::SandboxError,
};

/// A request that is wrong in itself, whatever the state: names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    #[error("network name '{0}' is invalid: use letters, digits, '_', '.' or '-', starting with a letter or digit, at most 64 characters")]
    BadName(String),
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
    #[error("VLAN id {vid} in parent '{parent}' is outside 1..4094")]
    VlanOutOfRange { parent: String, vid: String },
    #[error("--ifname {0}: not a valid interface name (1-15 characters)")]
    BadIfname(String),
    #[error("endpoint id '{0}' is invalid: expected 64 lowercase hex digits")]
    BadEndpointId(String),
    #[error("{flag} {addr} is not an {want} address")]
    WrongFamily {
        flag: &'static str,
        addr: std::net::IpAddr,
        want: Family,
    },
    #[error("--mac: ipvlan endpoints always use the parent's MAC")]
    MacOnIpvlan,
    #[error("--mac {0}: expected six hex bytes like 02:42:ac:10:56:02")]
    BadMac(String),
    #[error("--mac {0} is the all-zero address, which no interface can have")]
    ZeroMac(String),
    #[error("--mac {0} is a multicast address")]
    MulticastMac(String),
    #[error("--host-ip {0}: a second address of its family (give at most one IPv4 and one IPv6 address)")]
    HostIpTwice(String),
}

/// Errors of network and endpoint commands. Each names the object.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    #[error("a network named '{0}' already exists")]
    NameInUse(String),
    #[error("no network named '{0}'")]
    UnknownNetwork(String),
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
    #[error("networks {} use {iface}: detaching would leave their policy unenforced; remove them first, or pass --force", .networks.join(", "))]
    DatapathInUse {
        iface: String,
        networks: Vec<String>,
    },
    #[error("sandbox '{sandbox}' is already connected to network '{network}'")]
    AlreadyConnected { network: String, sandbox: String },
    #[error("sandbox '{sandbox}' of network '{network}' is gone (the network namespace its endpoint was made in no longer exists): remove the endpoint with `netvlan disconnect -f {network} {sandbox}`")]
    SandboxGone { network: String, sandbox: String },
    #[error("sandbox '{sandbox}' is the network namespace netvlan runs in, which holds parent '{parent}': connect a container's namespace instead")]
    SandboxIsHost { sandbox: String, parent: String },
    #[error("sandbox '{sandbox}' is not connected to network '{network}'")]
    NotConnected { network: String, sandbox: String },
    #[error("no endpoint of sandbox '{0}' is connected to any network")]
    UnknownEndpoint(String),
    #[error("nothing to trace: {0}")]
    NothingToTrace(String),
    #[error("passthru network '{0}' already has its one endpoint")]
    PassthruTaken(String),
    #[error("the sandbox already has an interface named {ifname}")]
    IfnameTaken { ifname: String },
    /// The cause is shown in the message (kept, but not as `#[source]`,
    /// so chains do not repeat it).
    #[error("deleting {ifname} in {sandbox}: {cause}")]
    DisconnectFailed {
        ifname: String,
        sandbox: String,
        cause: Box<UndoError>,
    },
    #[error("disconnected {sandbox} from {network}, but moving its default route to {ifname} of network '{network}' failed: {cause} (run `netvlan restore`)")]
    RouteNotMoved {
        sandbox: String,
        network: String,
        ifname: String,
        cause: Box<NetworkError>,
    },
    #[error("host access on network '{network}': {reason}")]
    HostAccessRefused { network: String, reason: String },
    #[error("network '{network}': {reason}")]
    CannotUpdate { network: String, reason: String },
    #[error(transparent)]
    Sysctl(#[from] crate::sys::sysctl::SysctlError),
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
    #[error("cleaning up after an interrupted command failed")]
    RecoveryFailed(#[source] Box<UndoFailure>),
}

impl From<OptionError> for NetworkError {
    fn from(e: OptionError) -> Self {
        NetworkError::Invalid(InvalidRequest::BadOption(e))
    }
}

/// One cleanup step that failed (undoing a change, tearing down a
/// network): what it was doing, and the lower layer's error.
#[derive(Debug)]
pub struct UndoFailure {
    /// E.g. `deleting eth0.10`.
    pub action: String,
    pub source: UndoError,
}

/// Shown as `action: error`, and so, as a cause, it hands on the error's
/// own cause: a report's chain says each error once.
impl std::fmt::Display for UndoFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.action, self.source)
    }
}

impl std::error::Error for UndoFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.source)
    }
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

/// One machine-readable form of every control-plane error, for the fronts
/// that answer in a protocol (CNI, Docker's plugin API) or in `--json`.
///
/// `code` follows CNI's well-known codes where one fits (3 unknown
/// container, 5 I/O, 6 decoding, 7 invalid network
/// configuration) and is 100 or more for netvlan's own
/// conditions ([`CODE_CONFLICT`], [`CODE_NOT_FOUND`]). `kind` names the
/// variant in snake case, stable for scripts; `msg` is the message as the
/// CLI prints it; `details` the chain of causes below it (empty if none).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ErrorReport {
    pub code: u32,
    pub kind: &'static str,
    pub msg: String,
    pub details: String,
}

/// CNI: the container (sandbox) is unknown or gone.
pub const CODE_UNKNOWN_CONTAINER: u32 = 3;
/// CNI: an I/O failure (netlink, eBPF, the state database).
pub const CODE_IO: u32 = 5;
/// CNI: failed to decode stored content.
pub const CODE_DECODE: u32 = 6;
/// CNI: the network configuration (the request) is invalid.
pub const CODE_INVALID_CONFIG: u32 = 7;
/// netvlan: the request conflicts with what exists (a name in use, a
/// network with endpoints, a sandbox already connected).
pub const CODE_CONFLICT: u32 = 100;
/// netvlan: what the request names does not exist (a network, a parent,
/// an endpoint).
pub const CODE_NOT_FOUND: u32 = 101;

impl ErrorReport {
    /// `error` as `code` and `kind`: its message, and its chain of causes
    /// (`: `-separated) as details.
    pub fn new(code: u32, kind: &'static str, error: &dyn std::error::Error) -> Self {
        let mut details = Vec::new();
        let mut cause = error.source();
        while let Some(e) = cause {
            details.push(e.to_string());
            cause = e.source();
        }
        ErrorReport {
            code,
            kind,
            msg: error.to_string(),
            details: details.join(": "),
        }
    }

    /// The message and its causes in one line, as the CLI prints it.
    pub fn line(&self) -> String {
        if self.details.is_empty() {
            self.msg.clone()
        } else {
            format!("{}: {}", self.msg, self.details)
        }
    }

    /// CNI's error result: `{"cniVersion", "code", "msg", "details"}`
    /// (`details` left out when empty, as the spec allows).
    pub fn to_cni(&self, cni_version: &str) -> serde_json::Value {
        let mut out = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            out["details"] = serde_json::Value::String(self.details.clone());
        }
        out
    }

    /// Docker's plugin API error: `{"Err": msg}`, with the causes appended
    /// as the CLI shows them (Docker has no field for them).
    pub fn to_docker(&self) -> serde_json::Value {
        serde_json::json!({ "Err": self.line() })
    }
}

impl InvalidRequest {
    /// The variant, in snake case (see [`ErrorReport::kind`]).
    pub fn kind(&self) -> &'static str {
        match self {
            InvalidRequest::BadName(_) => "bad_name",
            InvalidRequest::NoSubnet => "no_subnet",
            InvalidRequest::Ipv6WithoutSubnet => "ipv6_without_subnet",
            InvalidRequest::BadOption(_) => "bad_option",
            InvalidRequest::BadLabel(_) => "bad_label",
            InvalidRequest::DuplicateLabel(_) => "duplicate_label",
            InvalidRequest::BadFilter { .. } => "bad_filter",
            InvalidRequest::VlanOutOfRange { .. } => "vlan_out_of_range",
            InvalidRequest::BadIfname(_) => "bad_ifname",
            InvalidRequest::BadEndpointId(_) => "bad_endpoint_id",
            InvalidRequest::WrongFamily { .. } => "wrong_family",
            InvalidRequest::MacOnIpvlan => "mac_on_ipvlan",
            InvalidRequest::BadMac(_) => "bad_mac",
            InvalidRequest::ZeroMac(_) => "zero_mac",
            InvalidRequest::MulticastMac(_) => "multicast_mac",
            InvalidRequest::HostIpTwice(_) => "host_ip_twice",
        }
    }
}

impl NetworkError {
    /// The error as the fronts report it to machines.
    pub fn report(&self) -> ErrorReport {
        let (code, kind) = self.code_and_kind();
        ErrorReport::new(code, kind, self)
    }

    fn code_and_kind(&self) -> (u32, &'static str) {
        use NetworkError as E;
        match self {
            E::Invalid(invalid) => (CODE_INVALID_CONFIG, invalid.kind()),
            E::NameInUse(_) => (CODE_CONFLICT, "name_in_use"),
            E::UnknownNetwork(_) => (CODE_NOT_FOUND, "unknown_network"),
            E::UnknownParent(_) => (CODE_NOT_FOUND, "unknown_parent"),
            E::ParentNotEthernet { .. } => (CODE_INVALID_CONFIG, "parent_not_ethernet"),
            E::MtuAboveParent { .. } => (CODE_INVALID_CONFIG, "mtu_above_parent"),
            E::ParentRefused { .. } => (CODE_IO, "parent_refused"),
            E::PolicyReachesOthers { .. } => (CODE_INVALID_CONFIG, "policy_reaches_others"),
            E::PolicyWouldReach { .. } => (CODE_INVALID_CONFIG, "policy_would_reach"),
            E::ParentInUse { .. } => (CODE_CONFLICT, "parent_in_use"),
            E::SubnetOverlap { .. } => (CODE_CONFLICT, "subnet_overlap"),
            E::ParentIsNetvlans { .. } => (CODE_INVALID_CONFIG, "parent_is_netvlans"),
            E::NotEnforced { .. } => (CODE_IO, "not_enforced"),
            E::HasEndpoints { .. } => (CODE_CONFLICT, "has_endpoints"),
            E::DatapathInUse { .. } => (CODE_CONFLICT, "datapath_in_use"),
            E::AlreadyConnected { .. } => (CODE_CONFLICT, "already_connected"),
            E::SandboxGone { .. } => (CODE_UNKNOWN_CONTAINER, "sandbox_gone"),
            E::SandboxIsHost { .. } => (CODE_INVALID_CONFIG, "sandbox_is_host"),
            E::NotConnected { .. } => (CODE_NOT_FOUND, "not_connected"),
            E::UnknownEndpoint(_) => (CODE_NOT_FOUND, "unknown_endpoint"),
            E::NothingToTrace(_) => (CODE_NOT_FOUND, "nothing_to_trace"),
            E::PassthruTaken(_) => (CODE_CONFLICT, "passthru_taken"),
            E::IfnameTaken { .. } => (CODE_CONFLICT, "ifname_taken"),
            E::DisconnectFailed { .. } => (CODE_IO, "disconnect_failed"),
            E::RouteNotMoved { .. } => (CODE_IO, "route_not_moved"),
            E::ParentMissing { .. } => (CODE_NOT_FOUND, "parent_missing"),
            E::HostAccessRefused { .. } => (CODE_INVALID_CONFIG, "host_access_refused"),
            E::CannotUpdate { .. } => (CODE_INVALID_CONFIG, "cannot_update"),
            E::Sysctl(_) => (CODE_IO, "sysctl"),
            E::Ipam(e) => match e {
                IpamError::InUse { .. } => (CODE_CONFLICT, "address_in_use"),
                IpamError::Exhausted { .. } => (CODE_CONFLICT, "addresses_exhausted"),
                _ => (CODE_INVALID_CONFIG, "bad_address_plan"),
            },
            E::Netlink(_) => (CODE_IO, "netlink"),
            E::Datapath(_) => (CODE_IO, "datapath"),
            E::Store(e) => match e {
                StoreError::Lock { .. } => (CODE_IO, "state_lock"),
                StoreError::Corrupt { .. } => (CODE_DECODE, "state_corrupt"),
                _ => (CODE_IO, "state"),
            },
            E::Sandbox(_) => (CODE_UNKNOWN_CONTAINER, "unknown_sandbox"),
            E::Netns(_) => (CODE_IO, "netns"),
            E::Injected(_) => (CODE_IO, "injected"),
            E::RollbackFailed { .. } => (CODE_IO, "rollback_failed"),
            E::TeardownIncomplete { .. } => (CODE_IO, "teardown_incomplete"),
            E::RecoveryFailed(_) => (CODE_IO, "recovery_failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_error_reports_cni_code_7_with_the_cli_message() {
        let e = NetworkError::from(InvalidRequest::BadName("-x".into()));
        let report = e.report();
        assert_eq!((report.code, report.kind), (7, "bad_name"));
        assert_eq!(report.msg, e.to_string());
        assert_eq!(report.details, "");
        assert_eq!(
            report.to_cni("1.0.0"),
            serde_json::json!({"cniVersion": "1.0.0", "code": 7, "msg": e.to_string()})
        );
        assert_eq!(
            report.to_docker(),
            serde_json::json!({"Err": e.to_string()})
        );
    }

    #[test]
    fn causes_go_to_details_and_plugin_codes_start_at_100() {
        let e = NetworkError::Store(StoreError::Lock {
            path: "/run/netvlan/state.lock".into(),
            source: std::io::Error::from_raw_os_error(libc::EAGAIN),
        });
        let report = e.report();
        assert_eq!((report.code, report.kind), (CODE_IO, "state_lock"));
        assert!(!report.details.is_empty(), "the errno is kept: {report:?}");
        let cni = report.to_cni("1.0.0");
        assert_eq!(cni["details"], report.details.as_str());
        assert_eq!(
            report.to_docker()["Err"],
            format!("{}: {}", report.msg, report.details)
        );
        let conflict = NetworkError::NameInUse("lan".into()).report();
        assert_eq!(
            (conflict.code, conflict.kind),
            (CODE_CONFLICT, "name_in_use")
        );
        assert!(NetworkError::UnknownNetwork("lan".into()).report().code >= 100);
    }

    /// A failed recovery says what it was doing and why, each once.
    #[test]
    fn a_failed_recovery_reports_its_step_and_cause_once() {
        let cause = NetlinkError::NoSuchInterface {
            name: "nv-eth0".into(),
        };
        let step = "deleting nv-eth0";
        let e = NetworkError::RecoveryFailed(Box::new(UndoFailure::new(step, cause)));
        let line = e.report().line();
        assert_eq!(line.matches(step).count(), 1, "{line}");
        assert_eq!(line.matches("nv-eth0").count(), 2, "{line}");
        assert!(
            line.starts_with("cleaning up after an interrupted command failed: "),
            "{line}"
        );
    }

    #[test]
    fn option_errors_keep_their_message() {
        let e = NetworkError::from(OptionError::GivenTwice("unknown_dst".into()));
        assert_eq!(e.to_string(), "invalid option: 'unknown_dst' given twice");
        assert_eq!(e.report().kind, "bad_option");
    }
}
