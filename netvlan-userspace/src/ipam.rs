//! Docker-compatible IP address management: pure logic, no I/O.
//!
//! The control plane builds an [`IpamConfig`] from the `--subnet`,
//! `--gateway`, `--ip-range` and `--aux-address` flags, wraps it in an
//! [`IpamState`], persists that state and mutates it inside one database
//! write transaction per connect/disconnect.
//!
//! Policies (Docker's default IPAM unless said otherwise):
//! - Never handed out automatically or on request: the network address, the
//!   IPv4 broadcast address, the gateway, aux-addresses and addresses in use.
//!   For IPv6 the network address is the subnet-router anycast address;
//!   there is no broadcast.
//! - Point-to-point subnets (IPv4 /31 and /32, IPv6 /127 and /128) have no
//!   network or broadcast address (RFC 3021, RFC 6164): every address is
//!   usable. The default gateway still takes the first one, so a /32 or /128
//!   with a gateway has nothing left to allocate. Build it with
//!   [`GatewayPolicy::None`] to hand out its address.
//! - A subnet with no address left once the network and broadcast
//!   addresses, the gateway and the aux-addresses are set aside is refused
//!   when the network is created, saying how many addresses it has.
//! - Default gateway: the subnet's first usable address that is not an
//!   aux-address (Docker takes the first free address, which lies in the
//!   ip-range when one is given; the subnet's first address is what users
//!   expect of a real router, so netvlan prefers it).
//! - Automatic allocation: the lowest free address of the ip-range (its own
//!   first address included, as Docker does), else of the subnet, trying the
//!   family's subnets in the order they were given.
//! - Releasing an address that is not allocated is an error
//!   ([`IpamError::NotAllocated`]) so that double releases show up; cleanup
//!   paths that must be idempotent can ignore that one variant.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Address family of a subnet or an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn of_net(net: &IpNet) -> Family {
        Family::of(&net.addr())
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Why an address may not be handed out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reserved {
    NetworkAddress,
    Broadcast,
    Gateway,
    /// Holds the aux-address's name.
    Aux(String),
}

/// A list of subnets or pools, displayed comma-separated in error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetList(pub Vec<IpNet>);

impl fmt::Display for SubnetList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

/// "172.16.86.1 is the gateway of 172.16.86.0/24" and the like.
fn reserved_message(addr: &IpAddr, subnet: &IpNet, reason: &Reserved) -> String {
    match reason {
        Reserved::NetworkAddress => format!("{addr} is the network address of {subnet}"),
        Reserved::Broadcast => format!("{addr} is the broadcast address of {subnet}"),
        Reserved::Gateway => format!("{addr} is the gateway of {subnet}"),
        Reserved::Aux(name) => format!("{addr} is reserved as aux-address '{name}'"),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("invalid CIDR '{text}': expected ADDRESS/PREFIX, e.g. 172.16.86.0/24")]
    BadCidr { text: String },
    #[error("invalid IP address '{text}'")]
    BadIp { text: String },
    #[error("invalid aux-address '{text}': {reason}")]
    BadAuxAddress { text: String, reason: String },
    #[error("no subnet given: at least one --subnet is needed")]
    NoSubnet,
    #[error("invalid subnet {given}: it should be {canonical}")]
    SubnetHostBits { given: IpNet, canonical: IpNet },
    #[error("invalid ip-range {given}: it should be {canonical}")]
    RangeHostBits { given: IpNet, canonical: IpNet },
    #[error("subnets {a} and {b} overlap")]
    SubnetsOverlap { a: IpNet, b: IpNet },
    #[error("gateway {gateway} is outside every subnet ({subnets})")]
    GatewayOutside {
        gateway: IpAddr,
        subnets: SubnetList,
    },
    #[error("ip-range {range} is outside every subnet ({subnets})")]
    RangeOutside { range: IpNet, subnets: SubnetList },
    #[error("ip-range {range} is not contained in subnet {subnet}")]
    RangeNotInSubnet { range: IpNet, subnet: IpNet },
    #[error("aux-address '{name}' ({addr}) is outside every subnet ({subnets})")]
    AuxOutside {
        name: String,
        addr: IpAddr,
        subnets: SubnetList,
    },
    #[error("cannot configure multiple gateways ({first}, {second}) for subnet {subnet}")]
    MultipleGateways {
        subnet: IpNet,
        first: IpAddr,
        second: IpAddr,
    },
    #[error("cannot configure multiple ip-ranges ({first}, {second}) on subnet {subnet}")]
    MultipleRanges {
        subnet: IpNet,
        first: IpNet,
        second: IpNet,
    },
    #[error("aux-address name '{name}' is given more than once")]
    DuplicateAuxName { name: String },
    #[error("invalid gateway: {}", reserved_message(.gateway, .subnet, .reason))]
    GatewayReserved {
        gateway: IpAddr,
        subnet: IpNet,
        reason: Reserved,
    },
    #[error("invalid aux-address '{name}': {}", reserved_message(.addr, .subnet, .reason))]
    AuxReserved {
        name: String,
        addr: IpAddr,
        subnet: IpNet,
        reason: Reserved,
    },
    #[error("requested address {addr} is outside every subnet ({subnets})")]
    RequestOutside { addr: IpAddr, subnets: SubnetList },
    #[error("{}", reserved_message(.addr, .subnet, .reason))]
    AddressReserved {
        addr: IpAddr,
        subnet: IpNet,
        reason: Reserved,
    },
    #[error("{addr} is already in use")]
    InUse { addr: IpAddr },
    #[error("the network has no {family} subnet")]
    NoSubnetOfFamily { family: Family },
    #[error("no free address left in {pools}")]
    Exhausted { family: Family, pools: SubnetList },
    #[error("{addr} is not allocated")]
    NotAllocated { addr: IpAddr },
    #[error(
        "subnet {subnet} is too small to hold an endpoint: it has {size} address{}, all set aside ({taken}); use a shorter prefix",
        if *.size == 1 { "" } else { "es" }
    )]
    SubnetTooSmall {
        subnet: IpNet,
        size: u128,
        /// What takes each of its addresses, e.g. "10.0.0.1 the gateway".
        taken: String,
    },
}

/// Parses `--subnet` / `--ip-range` text. Host bits are checked later, by
/// [`IpamConfig::from_flags`], so that the error can suggest the fix.
pub fn parse_cidr(s: &str) -> Result<IpNet, IpamError> {
    s.trim()
        .parse()
        .map_err(|_| IpamError::BadCidr { text: s.into() })
}

/// Parses `--gateway` / `--ip` text.
pub fn parse_ip(s: &str) -> Result<IpAddr, IpamError> {
    s.trim()
        .parse()
        .map_err(|_| IpamError::BadIp { text: s.into() })
}

/// Parses the `--aux-address NAME=IP` syntax.
pub fn parse_aux_address(s: &str) -> Result<(String, IpAddr), IpamError> {
    let bad = |reason: &str| IpamError::BadAuxAddress {
        text: s.into(),
        reason: reason.into(),
    };
    let (name, ip) = s.split_once('=').ok_or_else(|| bad("expected NAME=IP"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(bad("the name is empty"));
    }
    let ip = ip
        .trim()
        .parse()
        .map_err(|_| bad(&format!("'{}' is not an IP address", ip.trim())))?;
    Ok((name.into(), ip))
}

/// Whether two subnets share any address (prefixes either nest or are
/// disjoint, so one must contain the other's network address).
pub fn subnets_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// What to do when a subnet has no `--gateway`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayPolicy {
    /// Docker's behaviour: explicit gateways are kept; a subnet without one
    /// gets its first usable address.
    FirstUsable,
    /// No gateway at all (ipvlan l3 routes through the device): `--gateway`
    /// flags are still matched to their subnets, so typos are reported, and
    /// then dropped; their addresses become allocatable.
    None,
}

fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(family: Family, value: u128) -> IpAddr {
    match family {
        // Callers only pass values taken from an IPv4 subnet.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// One subnet of a network, with everything that belongs to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetConfig {
    pub subnet: IpNet,
    pub gateway: Option<IpAddr>,
    /// The pool for automatic allocation; `None` means the whole subnet.
    pub ip_range: Option<IpNet>,
    /// Name -> address; never handed out.
    pub aux: BTreeMap<String, IpAddr>,
}

impl SubnetConfig {
    pub fn family(&self) -> Family {
        Family::of_net(&self.subnet)
    }

    /// Point-to-point subnets have no network/broadcast address.
    fn has_edge_addresses(&self) -> bool {
        self.subnet.prefix_len() + 1 < self.subnet.max_prefix_len()
    }

    fn first(&self) -> u128 {
        to_u128(self.subnet.network())
    }

    fn last(&self) -> u128 {
        to_u128(self.subnet.broadcast())
    }

    /// Why `addr` (assumed inside the subnet) is never handed out, if it is.
    pub fn reserved_reason(&self, addr: &IpAddr) -> Option<Reserved> {
        if self.has_edge_addresses() {
            let value = to_u128(*addr);
            if value == self.first() {
                return Some(Reserved::NetworkAddress);
            }
            if self.family() == Family::V4 && value == self.last() {
                return Some(Reserved::Broadcast);
            }
        }
        if self.gateway.as_ref() == Some(addr) {
            return Some(Reserved::Gateway);
        }
        self.aux
            .iter()
            .find(|(_, a)| *a == addr)
            .map(|(name, _)| Reserved::Aux(name.clone()))
    }

    /// Like `reserved_reason` but ignoring the gateway and aux-addresses.
    fn edge_reason(&self, addr: &IpAddr) -> Option<Reserved> {
        let bare = SubnetConfig {
            subnet: self.subnet,
            gateway: None,
            ip_range: None,
            aux: BTreeMap::new(),
        };
        bare.reserved_reason(addr)
    }

    /// How many addresses the subnet has (saturating for a huge IPv6 one).
    fn size(&self) -> u128 {
        let host_bits = u32::from(self.subnet.max_prefix_len() - self.subnet.prefix_len());
        1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
    }

    /// Refuses a subnet whose every address is set aside (network,
    /// broadcast, gateway, aux-addresses): no endpoint could ever join.
    fn check_room(&self) -> Result<(), IpamError> {
        let size = self.size();
        // Edge addresses, the gateway and aux entries are distinct here.
        let reserved = 2 + usize::from(self.gateway.is_some()) + self.aux.len();
        if size > reserved as u128 {
            return Ok(());
        }
        let family = self.family();
        let taken: Vec<String> = (self.first()..=self.last())
            .filter_map(|value| {
                let addr = from_u128(family, value);
                let what = match self.reserved_reason(&addr)? {
                    Reserved::NetworkAddress => "the network address".to_string(),
                    Reserved::Broadcast => "the broadcast address".to_string(),
                    Reserved::Gateway => "the gateway".to_string(),
                    Reserved::Aux(name) => format!("aux-address '{name}'"),
                };
                Some(format!("{addr} {what}"))
            })
            .collect();
        if (taken.len() as u128) < size {
            return Ok(());
        }
        Err(IpamError::SubnetTooSmall {
            subnet: self.subnet,
            size,
            taken: taken.join(", "),
        })
    }

    /// How many addresses endpoints can hold: the subnet less its
    /// network and broadcast addresses, gateway and aux-addresses
    /// (saturating for a huge IPv6 subnet).
    pub fn assignable(&self) -> u128 {
        let mut reserved: BTreeSet<IpAddr> = self.aux.values().copied().collect();
        reserved.extend(self.gateway);
        if self.has_edge_addresses() {
            let family = self.family();
            reserved.insert(from_u128(family, self.first()));
            if family == Family::V4 {
                reserved.insert(from_u128(family, self.last()));
            }
        }
        let inside = reserved.iter().filter(|a| self.subnet.contains(*a)).count();
        self.size().saturating_sub(inside as u128)
    }

    /// The pool automatic allocation draws from.
    pub fn pool(&self) -> IpNet {
        self.ip_range.unwrap_or(self.subnet)
    }

    /// Inclusive bounds of the pool, clamped to the subnet so that a
    /// hand-edited persisted state cannot make allocation escape it.
    fn pool_bounds(&self) -> (u128, u128) {
        let pool = self.pool();
        let start = to_u128(pool.network()).max(self.first());
        let end = to_u128(pool.broadcast()).min(self.last());
        (start, end)
    }

    /// Lowest address in the pool that is neither reserved nor allocated.
    /// Cost: one step per blocked address before the answer, never a scan
    /// of the subnet.
    fn lowest_free(&self, allocated: &BTreeSet<IpAddr>) -> Option<IpAddr> {
        let family = self.family();
        let (start, end) = self.pool_bounds();
        if start > end {
            return None;
        }
        let mut taken = allocated
            .range(from_u128(family, start)..=from_u128(family, end))
            .map(|a| to_u128(*a))
            .peekable();
        let mut candidate = start;
        loop {
            while taken.next_if(|&a| a < candidate).is_some() {}
            let in_use = taken.peek() == Some(&candidate);
            let addr = from_u128(family, candidate);
            if !in_use && self.reserved_reason(&addr).is_none() {
                return Some(addr);
            }
            if candidate == end {
                return None;
            }
            candidate += 1;
        }
    }

    /// First usable address that is not an aux-address.
    fn default_gateway(&self) -> Option<IpAddr> {
        let family = self.family();
        let (mut candidate, mut end) = (self.first(), self.last());
        if self.has_edge_addresses() {
            candidate += 1;
            if family == Family::V4 {
                end -= 1;
            }
        }
        loop {
            let addr = from_u128(family, candidate);
            if !self.aux.values().any(|a| *a == addr) {
                return Some(addr);
            }
            if candidate >= end {
                return None;
            }
            candidate += 1;
        }
    }
}

/// A network's validated address plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    subnets: Vec<SubnetConfig>,
}

impl IpamConfig {
    /// Builds and validates the plan from the CLI flags, matching each
    /// gateway, ip-range and aux-address to the subnet that contains it
    /// (as Docker's CLI does).
    pub fn from_flags(
        subnets: &[IpNet],
        gateways: &[IpAddr],
        ranges: &[IpNet],
        aux: &[(String, IpAddr)],
        policy: GatewayPolicy,
    ) -> Result<IpamConfig, IpamError> {
        if subnets.is_empty() {
            return Err(IpamError::NoSubnet);
        }
        for s in subnets {
            if s.trunc() != *s {
                return Err(IpamError::SubnetHostBits {
                    given: *s,
                    canonical: s.trunc(),
                });
            }
        }
        for (i, a) in subnets.iter().enumerate() {
            if let Some(b) = subnets[i + 1..].iter().find(|b| subnets_overlap(a, b)) {
                return Err(IpamError::SubnetsOverlap { a: *a, b: *b });
            }
        }
        let all = || SubnetList(subnets.to_vec());
        let mut out: Vec<SubnetConfig> = subnets
            .iter()
            .map(|s| SubnetConfig {
                subnet: *s,
                gateway: None,
                ip_range: None,
                aux: BTreeMap::new(),
            })
            .collect();

        for r in ranges {
            if r.trunc() != *r {
                return Err(IpamError::RangeHostBits {
                    given: *r,
                    canonical: r.trunc(),
                });
            }
            let sc = out
                .iter_mut()
                .find(|sc| subnets_overlap(&sc.subnet, r))
                .ok_or_else(|| IpamError::RangeOutside {
                    range: *r,
                    subnets: all(),
                })?;
            if !sc.subnet.contains(r) {
                return Err(IpamError::RangeNotInSubnet {
                    range: *r,
                    subnet: sc.subnet,
                });
            }
            if let Some(first) = sc.ip_range {
                return Err(IpamError::MultipleRanges {
                    subnet: sc.subnet,
                    first,
                    second: *r,
                });
            }
            sc.ip_range = Some(*r);
        }

        for g in gateways {
            let sc = out
                .iter_mut()
                .find(|sc| sc.subnet.contains(g))
                .ok_or_else(|| IpamError::GatewayOutside {
                    gateway: *g,
                    subnets: all(),
                })?;
            if let Some(first) = sc.gateway {
                return Err(IpamError::MultipleGateways {
                    subnet: sc.subnet,
                    first,
                    second: *g,
                });
            }
            if policy == GatewayPolicy::FirstUsable {
                if let Some(reason) = sc.edge_reason(g) {
                    return Err(IpamError::GatewayReserved {
                        gateway: *g,
                        subnet: sc.subnet,
                        reason,
                    });
                }
            }
            sc.gateway = Some(*g);
        }
        if policy == GatewayPolicy::None {
            for sc in &mut out {
                sc.gateway = None;
            }
        }

        for (name, addr) in aux {
            if out.iter().any(|sc| sc.aux.contains_key(name)) {
                return Err(IpamError::DuplicateAuxName { name: name.clone() });
            }
            let sc = out
                .iter_mut()
                .find(|sc| sc.subnet.contains(addr))
                .ok_or_else(|| IpamError::AuxOutside {
                    name: name.clone(),
                    addr: *addr,
                    subnets: all(),
                })?;
            if let Some(reason) = sc.reserved_reason(addr) {
                return Err(IpamError::AuxReserved {
                    name: name.clone(),
                    addr: *addr,
                    subnet: sc.subnet,
                    reason,
                });
            }
            sc.aux.insert(name.clone(), *addr);
        }

        if policy == GatewayPolicy::FirstUsable {
            for sc in &mut out {
                if sc.gateway.is_none() {
                    sc.gateway = sc.default_gateway();
                }
            }
        }
        for sc in &out {
            sc.check_room()?;
        }
        Ok(IpamConfig { subnets: out })
    }

    pub fn subnets(&self) -> &[SubnetConfig] {
        &self.subnets
    }

    /// The subnet an address belongs to (for its prefix length and gateway).
    pub fn subnet_of(&self, addr: &IpAddr) -> Option<&SubnetConfig> {
        self.subnets.iter().find(|sc| sc.subnet.contains(addr))
    }

    pub fn has_family(&self, family: Family) -> bool {
        self.subnets.iter().any(|sc| sc.family() == family)
    }

    fn all_subnets(&self) -> SubnetList {
        SubnetList(self.subnets.iter().map(|sc| sc.subnet).collect())
    }
}

/// What an endpoint asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// The lowest free address of that family (no `--ip`).
    Any(Family),
    /// `--ip` / `--ip6`: anywhere in a subnet, not only in the ip-range.
    Exact(IpAddr),
}

/// A network's plan plus the addresses handed out; the persisted unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamState {
    config: IpamConfig,
    allocated: BTreeSet<IpAddr>,
    /// Allocated for Docker's IPAM (`--ipam-driver`), not yet taken by an
    /// endpoint: Docker asks for the address, then creates the endpoint.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    held: BTreeSet<IpAddr>,
    /// When each hold was made (seconds since the epoch), so a hold no
    /// endpoint took in time is told from one in flight. Beside `held`
    /// rather than in it, so an older build still reads the record; a hold
    /// an older build made has no time here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    held_since: BTreeMap<IpAddr, u64>,
}

/// How many addresses of a Docker `--ip-range` a hold tries before it
/// calls the range full (an IPv6 range can be 2^64 long).
const RANGE_TRIES: usize = 1 << 16;

impl IpamState {
    pub fn new(config: IpamConfig) -> IpamState {
        IpamState {
            config,
            allocated: BTreeSet::new(),
            held: BTreeSet::new(),
            held_since: BTreeMap::new(),
        }
    }

    /// Allocates for Docker's IPAM: as [`Self::allocate`] (an `Any` within
    /// `range`, Docker's `--ip-range`, when it gives one), and held for
    /// the endpoint Docker will create with it; `now` in seconds since the
    /// epoch.
    pub fn hold(
        &mut self,
        request: Request,
        range: Option<IpNet>,
        now: u64,
    ) -> Result<IpAddr, IpamError> {
        let addr = match (request, range) {
            (Request::Any(_), Some(range)) => self.free_within(range)?,
            _ => self.allocate(request)?,
        };
        self.allocated.insert(addr);
        self.held.insert(addr);
        self.held_since.insert(addr, now);
        Ok(addr)
    }

    /// An endpoint takes `addr`: the address Docker's IPAM holds for it,
    /// else one allocated as [`Request::Exact`].
    pub fn claim(&mut self, addr: IpAddr) -> Result<IpAddr, IpamError> {
        if self.held.remove(&addr) {
            self.held_since.remove(&addr);
            return Ok(addr);
        }
        self.allocate(Request::Exact(addr))
    }

    /// Docker's IPAM gives `addr` back: freed if it is only held. One an
    /// endpoint took is its endpoint's to free (Docker releases it after
    /// the endpoint is gone, when it is free already). True if it was held.
    pub fn release_held(&mut self, addr: &IpAddr) -> bool {
        let held = self.held.remove(addr);
        if held {
            self.held_since.remove(addr);
            self.allocated.remove(addr);
        }
        held
    }

    /// The addresses Docker's IPAM holds and no endpoint has taken yet.
    pub fn held(&self) -> impl Iterator<Item = &IpAddr> {
        self.held.iter()
    }

    /// The holds no endpoint took within `grace` seconds of being made, by
    /// `now`, each with when it was made (`None`: by an older build, which
    /// kept no time, so as old as can be): what a dockerd that died
    /// between RequestAddress and CreateEndpoint leaves.
    pub fn stale_holds(
        &self,
        now: u64,
        grace: u64,
    ) -> impl Iterator<Item = (IpAddr, Option<u64>)> + '_ {
        self.held.iter().filter_map(move |addr| {
            let since = self.held_since.get(addr).copied();
            since
                .is_none_or(|made| now.saturating_sub(made) >= grace)
                .then_some((*addr, since))
        })
    }

    fn free_within(&self, range: IpNet) -> Result<IpAddr, IpamError> {
        let family = Family::of_net(&range);
        let subnet = self
            .config
            .subnets
            .iter()
            .find(|sc| sc.subnet.contains(&range))
            .ok_or_else(|| IpamError::RequestOutside {
                addr: range.network(),
                subnets: self.config.all_subnets(),
            })?;
        range
            .hosts()
            .take(RANGE_TRIES)
            .find(|a| subnet.reserved_reason(a).is_none() && !self.allocated.contains(a))
            .ok_or(IpamError::Exhausted {
                family,
                pools: SubnetList(vec![range]),
            })
    }

    pub fn config(&self) -> &IpamConfig {
        &self.config
    }

    pub fn allocate(&mut self, request: Request) -> Result<IpAddr, IpamError> {
        let addr = match request {
            Request::Any(family) => self.find_free(family)?,
            Request::Exact(addr) => self.check_requested(addr)?,
        };
        self.allocated.insert(addr);
        Ok(addr)
    }

    fn find_free(&self, family: Family) -> Result<IpAddr, IpamError> {
        let mut pools = Vec::new();
        for sc in self
            .config
            .subnets
            .iter()
            .filter(|sc| sc.family() == family)
        {
            if let Some(addr) = sc.lowest_free(&self.allocated) {
                return Ok(addr);
            }
            pools.push(sc.pool());
        }
        if pools.is_empty() {
            return Err(IpamError::NoSubnetOfFamily { family });
        }
        Err(IpamError::Exhausted {
            family,
            pools: SubnetList(pools),
        })
    }

    fn check_requested(&self, addr: IpAddr) -> Result<IpAddr, IpamError> {
        let sc = self
            .config
            .subnet_of(&addr)
            .ok_or_else(|| IpamError::RequestOutside {
                addr,
                subnets: self.config.all_subnets(),
            })?;
        if let Some(reason) = sc.reserved_reason(&addr) {
            return Err(IpamError::AddressReserved {
                addr,
                subnet: sc.subnet,
                reason,
            });
        }
        if self.allocated.contains(&addr) {
            return Err(IpamError::InUse { addr });
        }
        Ok(addr)
    }

    /// Returns an address to the pool; an address not allocated is an error.
    pub fn release(&mut self, addr: IpAddr) -> Result<(), IpamError> {
        if self.allocated.remove(&addr) {
            Ok(())
        } else {
            Err(IpamError::NotAllocated { addr })
        }
    }

    pub fn is_allocated(&self, addr: &IpAddr) -> bool {
        self.allocated.contains(addr)
    }

    /// Allocated addresses in ascending order (IPv4 first).
    pub fn allocated(&self) -> impl Iterator<Item = &IpAddr> {
        self.allocated.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        parse_cidr(s).unwrap_or_else(|e| panic!("test CIDR {s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        parse_ip(s).unwrap_or_else(|e| panic!("test IP {s}: {e}"))
    }

    fn config(
        subnets: &[&str],
        gateways: &[&str],
        ranges: &[&str],
        aux: &[(&str, &str)],
        policy: GatewayPolicy,
    ) -> Result<IpamConfig, IpamError> {
        let subnets: Vec<IpNet> = subnets.iter().map(|s| net(s)).collect();
        let gateways: Vec<IpAddr> = gateways.iter().map(|s| ip(s)).collect();
        let ranges: Vec<IpNet> = ranges.iter().map(|s| net(s)).collect();
        let aux: Vec<(String, IpAddr)> = aux.iter().map(|(n, a)| (n.to_string(), ip(a))).collect();
        IpamConfig::from_flags(&subnets, &gateways, &ranges, &aux, policy)
    }

    fn state(
        subnets: &[&str],
        gateways: &[&str],
        ranges: &[&str],
        aux: &[(&str, &str)],
    ) -> IpamState {
        let cfg = config(subnets, gateways, ranges, aux, GatewayPolicy::FirstUsable)
            .unwrap_or_else(|e| panic!("config should be valid: {e}"));
        IpamState::new(cfg)
    }

    fn any4(st: &mut IpamState) -> IpAddr {
        st.allocate(Request::Any(Family::V4))
            .unwrap_or_else(|e| panic!("IPv4 allocation should succeed: {e}"))
    }

    fn config_err(
        subnets: &[&str],
        gateways: &[&str],
        ranges: &[&str],
        aux: &[(&str, &str)],
    ) -> IpamError {
        match config(subnets, gateways, ranges, aux, GatewayPolicy::FirstUsable) {
            Ok(c) => panic!("config should be rejected, got {c:?}"),
            Err(e) => e,
        }
    }

    fn request_err(st: &mut IpamState, addr: &str) -> IpamError {
        match st.allocate(Request::Exact(ip(addr))) {
            Ok(a) => panic!("request for {addr} should fail, got {a}"),
            Err(e) => e,
        }
    }

    #[test]
    fn assignable_addresses_leave_out_edges_gateway_and_aux() {
        let st = state(
            &["172.16.86.0/24", "10.9.0.0/31", "fd00::/64"],
            &["172.16.86.1"],
            &[],
            &[("router", "172.16.86.129")],
        );
        let counts: Vec<u128> = st
            .config()
            .subnets()
            .iter()
            .map(|s| s.assignable())
            .collect();
        // /24: 256 less network, broadcast, gateway and the aux-address;
        // /31: no edges, its default gateway; /64: its subnet-router
        // anycast address and its default gateway.
        assert_eq!(counts, vec![252, 1, (1u128 << 64) - 2]);
    }

    #[test]
    fn first_allocation_with_gateway_dot_1_is_dot_2() {
        let mut st = state(&["172.16.86.0/24"], &["172.16.86.1"], &[], &[]);
        assert_eq!(any4(&mut st), ip("172.16.86.2"));
        assert_eq!(any4(&mut st), ip("172.16.86.3"));
        assert!(st.is_allocated(&ip("172.16.86.2")), ".2 should be recorded");
    }

    #[test]
    fn default_gateway_is_first_usable_address() {
        let st = state(&["172.16.86.0/24", "fd00::/64"], &[], &[], &[]);
        let gws: Vec<_> = st.config().subnets().iter().map(|s| s.gateway).collect();
        assert_eq!(gws, vec![Some(ip("172.16.86.1")), Some(ip("fd00::1"))]);
    }

    #[test]
    fn default_gateway_skips_aux_addresses() {
        let st = state(&["172.16.86.0/24"], &[], &[], &[("host", "172.16.86.1")]);
        assert_eq!(st.config().subnets()[0].gateway, Some(ip("172.16.86.2")));
    }

    #[test]
    fn gateway_policy_none_records_no_gateway_and_hands_out_dot_1() {
        let cfg = config(
            &["172.16.86.0/24"],
            &["172.16.86.1"],
            &[],
            &[],
            GatewayPolicy::None,
        )
        .unwrap_or_else(|e| panic!("l3 config should be valid: {e}"));
        assert_eq!(cfg.subnets()[0].gateway, None);
        let mut st = IpamState::new(cfg);
        assert_eq!(any4(&mut st), ip("172.16.86.1"));
    }

    #[test]
    fn gateway_policy_none_still_rejects_gateway_outside_subnets() {
        let err = config(
            &["172.16.86.0/24"],
            &["10.0.0.1"],
            &[],
            &[],
            GatewayPolicy::None,
        )
        .expect_err("a gateway outside every subnet is a typo even in l3");
        assert!(matches!(err, IpamError::GatewayOutside { .. }), "{err}");
    }

    #[test]
    fn ip_range_first_allocation_is_the_range_network_address() {
        let mut st = state(
            &["172.16.86.0/24"],
            &["172.16.86.1"],
            &["172.16.86.128/25"],
            &[],
        );
        assert_eq!(any4(&mut st), ip("172.16.86.128"));
        assert_eq!(any4(&mut st), ip("172.16.86.129"));
    }

    #[test]
    fn ip_range_at_subnet_start_skips_network_and_gateway() {
        let mut st = state(
            &["172.16.86.0/24"],
            &["172.16.86.1"],
            &["172.16.86.0/25"],
            &[],
        );
        assert_eq!(any4(&mut st), ip("172.16.86.2"));
    }

    #[test]
    fn aux_address_is_never_handed_out() {
        let mut st = state(
            &["172.16.86.0/24"],
            &["172.16.86.1"],
            &["172.16.86.128/25"],
            &[("my-router", "172.16.86.129")],
        );
        assert_eq!(any4(&mut st), ip("172.16.86.128"));
        assert_eq!(any4(&mut st), ip("172.16.86.130"));
        assert!(!st.is_allocated(&ip("172.16.86.129")), "aux was handed out");
    }

    #[test]
    fn gateway_is_never_handed_out() {
        let mut st = state(&["10.0.0.0/29"], &["10.0.0.3"], &[], &[]);
        let got: Vec<_> = (0..5).map(|_| any4(&mut st)).collect();
        let want: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
            .iter()
            .map(|s| ip(s))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn broadcast_is_never_handed_out() {
        let mut st = state(&["10.0.0.0/29"], &["10.0.0.1"], &["10.0.0.4/30"], &[]);
        assert_eq!(any4(&mut st), ip("10.0.0.4"));
        assert_eq!(any4(&mut st), ip("10.0.0.5"));
        assert_eq!(any4(&mut st), ip("10.0.0.6"));
        let err = st
            .allocate(Request::Any(Family::V4))
            .expect_err("10.0.0.7 is the broadcast address");
        assert_eq!(err.to_string(), "no free address left in 10.0.0.4/30");
    }

    #[test]
    fn exhaustion_on_a_slash_30_with_gateway_after_one_allocation() {
        let mut st = state(&["172.16.86.128/30"], &["172.16.86.129"], &[], &[]);
        assert_eq!(any4(&mut st), ip("172.16.86.130"));
        let err = st
            .allocate(Request::Any(Family::V4))
            .expect_err("a /30 with a gateway has one address");
        assert_eq!(err.to_string(), "no free address left in 172.16.86.128/30");
        assert!(
            matches!(
                err,
                IpamError::Exhausted {
                    family: Family::V4,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn exhaustion_moves_on_to_the_next_subnet_of_the_family() {
        let mut st = state(&["10.0.0.0/30", "10.0.1.0/30"], &[], &[], &[]);
        assert_eq!(any4(&mut st), ip("10.0.0.2"));
        assert_eq!(any4(&mut st), ip("10.0.1.2"));
        let err = st
            .allocate(Request::Any(Family::V4))
            .expect_err("both full");
        assert_eq!(
            err.to_string(),
            "no free address left in 10.0.0.0/30, 10.0.1.0/30"
        );
    }

    #[test]
    fn release_then_reallocate_gets_the_lowest_again() {
        let mut st = state(&["172.16.86.0/24"], &["172.16.86.1"], &[], &[]);
        for _ in 0..4 {
            any4(&mut st);
        }
        st.release(ip("172.16.86.3"))
            .unwrap_or_else(|e| panic!("release of an allocated address: {e}"));
        assert!(!st.is_allocated(&ip("172.16.86.3")));
        assert_eq!(any4(&mut st), ip("172.16.86.3"));
        assert_eq!(any4(&mut st), ip("172.16.86.6"));
    }

    #[test]
    fn releasing_an_unallocated_address_is_an_error() {
        let mut st = state(&["172.16.86.0/24"], &[], &[], &[]);
        let err = st
            .release(ip("172.16.86.9"))
            .expect_err("nothing was allocated");
        assert_eq!(err.to_string(), "172.16.86.9 is not allocated");
        any4(&mut st);
        st.release(ip("172.16.86.2"))
            .unwrap_or_else(|e| panic!("first release: {e}"));
        assert!(
            st.release(ip("172.16.86.2")).is_err(),
            "double release should be reported"
        );
    }

    #[test]
    fn explicit_ip_outside_the_range_but_inside_the_subnet_works() {
        let mut st = state(
            &["172.16.86.0/24"],
            &["172.16.86.1"],
            &["172.16.86.128/25"],
            &[],
        );
        let got = st
            .allocate(Request::Exact(ip("172.16.86.10")))
            .unwrap_or_else(|e| panic!("explicit .10 should work: {e}"));
        assert_eq!(got, ip("172.16.86.10"));
        assert!(st.is_allocated(&ip("172.16.86.10")));
        assert_eq!(any4(&mut st), ip("172.16.86.128"));
    }

    #[test]
    fn explicit_ip_errors() {
        let mut st = state(
            &["172.16.86.0/24"],
            &["172.16.86.1"],
            &["172.16.86.128/25"],
            &[("my-router", "172.16.86.129")],
        );
        st.allocate(Request::Exact(ip("172.16.86.5")))
            .unwrap_or_else(|e| panic!("explicit .5 should work: {e}"));
        let cases = [
            (
                "10.0.0.1",
                "requested address 10.0.0.1 is outside every subnet (172.16.86.0/24)",
            ),
            (
                "172.16.86.0",
                "172.16.86.0 is the network address of 172.16.86.0/24",
            ),
            (
                "172.16.86.255",
                "172.16.86.255 is the broadcast address of 172.16.86.0/24",
            ),
            (
                "172.16.86.1",
                "172.16.86.1 is the gateway of 172.16.86.0/24",
            ),
            (
                "172.16.86.129",
                "172.16.86.129 is reserved as aux-address 'my-router'",
            ),
            ("172.16.86.5", "172.16.86.5 is already in use"),
            (
                "fd00::5",
                "requested address fd00::5 is outside every subnet (172.16.86.0/24)",
            ),
        ];
        for (addr, want) in cases {
            let err = request_err(&mut st, addr);
            assert_eq!(err.to_string(), want, "request for {addr}");
        }
        let err = request_err(&mut st, "172.16.86.129");
        assert_eq!(
            err,
            IpamError::AddressReserved {
                addr: ip("172.16.86.129"),
                subnet: net("172.16.86.0/24"),
                reason: Reserved::Aux("my-router".into()),
            }
        );
    }

    #[test]
    fn dual_stack_allocates_one_address_per_family() {
        let mut st = state(
            &["172.16.86.0/24", "2001:db8:1::/64"],
            &["172.16.86.1", "2001:db8:1::1"],
            &[],
            &[],
        );
        assert_eq!(any4(&mut st), ip("172.16.86.2"));
        let v6 = st
            .allocate(Request::Any(Family::V6))
            .unwrap_or_else(|e| panic!("IPv6 allocation: {e}"));
        assert_eq!(v6, ip("2001:db8:1::2"));
        assert_eq!(any4(&mut st), ip("172.16.86.3"));
    }

    #[test]
    fn ipv6_network_address_is_never_handed_out_and_has_no_broadcast() {
        let mut st = state(&["fd00::/126"], &["fd00::3"], &[], &[]);
        let a = st.allocate(Request::Any(Family::V6));
        assert_eq!(a, Ok(ip("fd00::1")));
        let a = st.allocate(Request::Any(Family::V6));
        assert_eq!(a, Ok(ip("fd00::2")));
        assert!(st.allocate(Request::Any(Family::V6)).is_err());
        let err = request_err(&mut st, "fd00::");
        assert_eq!(
            err.to_string(),
            "fd00:: is the network address of fd00::/126"
        );
    }

    #[test]
    fn missing_family_is_a_clear_error() {
        let mut st = state(&["172.16.86.0/24"], &[], &[], &[]);
        let err = st
            .allocate(Request::Any(Family::V6))
            .expect_err("no IPv6 subnet");
        assert_eq!(err.to_string(), "the network has no IPv6 subnet");
        assert!(st.config().has_family(Family::V4));
        assert!(!st.config().has_family(Family::V6));
    }

    #[test]
    fn allocation_in_a_slash_64_with_10000_allocated_completes() {
        let mut st = state(&["2001:db8::/64"], &["2001:db8::1"], &[], &[]);
        let base = to_u128(ip("2001:db8::2"));
        for i in 0..10_000u128 {
            let addr = from_u128(Family::V6, base + i);
            st.allocate(Request::Exact(addr))
                .unwrap_or_else(|e| panic!("explicit {addr}: {e}"));
        }
        let next = st
            .allocate(Request::Any(Family::V6))
            .unwrap_or_else(|e| panic!("allocation after 10000: {e}"));
        assert_eq!(next, from_u128(Family::V6, base + 10_000));
        // A few hundred more sequential allocations, each skipping the run.
        for i in 1..=300u128 {
            let got = st
                .allocate(Request::Any(Family::V6))
                .unwrap_or_else(|e| panic!("allocation {i}: {e}"));
            assert_eq!(got, from_u128(Family::V6, base + 10_000 + i));
        }
    }

    #[test]
    fn allocation_at_the_top_of_the_ipv6_space_does_not_overflow() {
        let mut st = state(
            &["ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126"],
            &[],
            &[],
            &[],
        );
        let a = st.allocate(Request::Any(Family::V6));
        assert_eq!(a, Ok(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")));
        let a = st.allocate(Request::Any(Family::V6));
        assert_eq!(a, Ok(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(matches!(
            st.allocate(Request::Any(Family::V6)),
            Err(IpamError::Exhausted { .. })
        ));
    }

    #[test]
    fn gateway_outside_subnet_is_an_error() {
        let err = config_err(&["172.16.86.0/24"], &["10.0.0.1"], &[], &[]);
        assert_eq!(
            err.to_string(),
            "gateway 10.0.0.1 is outside every subnet (172.16.86.0/24)"
        );
    }

    #[test]
    fn gateway_on_network_or_broadcast_address_is_an_error() {
        let err = config_err(&["172.16.86.0/24"], &["172.16.86.255"], &[], &[]);
        assert_eq!(
            err.to_string(),
            "invalid gateway: 172.16.86.255 is the broadcast address of 172.16.86.0/24"
        );
        let err = config_err(&["172.16.86.0/24"], &["172.16.86.0"], &[], &[]);
        assert!(
            matches!(
                err,
                IpamError::GatewayReserved {
                    reason: Reserved::NetworkAddress,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn two_gateways_or_ranges_for_one_subnet_are_errors() {
        let err = config_err(
            &["172.16.86.0/24"],
            &["172.16.86.1", "172.16.86.254"],
            &[],
            &[],
        );
        assert_eq!(
            err.to_string(),
            "cannot configure multiple gateways (172.16.86.1, 172.16.86.254) for subnet 172.16.86.0/24"
        );
        let err = config_err(
            &["172.16.86.0/24"],
            &[],
            &["172.16.86.0/25", "172.16.86.128/25"],
            &[],
        );
        assert!(matches!(err, IpamError::MultipleRanges { .. }), "{err:?}");
    }

    #[test]
    fn gateways_and_ranges_go_to_the_subnet_that_contains_them() {
        let cfg = config(
            &["10.0.0.0/24", "10.0.1.0/24", "fd00::/64"],
            &["fd00::fe", "10.0.1.254"],
            &["10.0.1.64/26"],
            &[("a", "10.0.0.9")],
            GatewayPolicy::FirstUsable,
        )
        .unwrap_or_else(|e| panic!("config should be valid: {e}"));
        let s = cfg.subnets();
        assert_eq!(s[0].gateway, Some(ip("10.0.0.1")));
        assert_eq!(s[0].aux.get("a"), Some(&ip("10.0.0.9")));
        assert_eq!(s[1].gateway, Some(ip("10.0.1.254")));
        assert_eq!(s[1].ip_range, Some(net("10.0.1.64/26")));
        assert_eq!(s[2].gateway, Some(ip("fd00::fe")));
        assert_eq!(
            cfg.subnet_of(&ip("10.0.1.70")).map(|s| s.subnet),
            Some(net("10.0.1.0/24"))
        );
    }

    #[test]
    fn ip_range_outside_subnet_is_an_error() {
        let err = config_err(&["172.16.86.0/24"], &[], &["10.0.0.0/25"], &[]);
        assert_eq!(
            err.to_string(),
            "ip-range 10.0.0.0/25 is outside every subnet (172.16.86.0/24)"
        );
        let err = config_err(&["172.16.86.0/24"], &[], &["172.16.0.0/16"], &[]);
        assert_eq!(
            err.to_string(),
            "ip-range 172.16.0.0/16 is not contained in subnet 172.16.86.0/24"
        );
        let err = config_err(&["172.16.86.0/24"], &[], &["172.16.86.130/25"], &[]);
        assert_eq!(
            err.to_string(),
            "invalid ip-range 172.16.86.130/25: it should be 172.16.86.128/25"
        );
    }

    #[test]
    fn aux_address_errors() {
        let err = config_err(&["172.16.86.0/24"], &[], &[], &[("r", "10.0.0.1")]);
        assert_eq!(
            err.to_string(),
            "aux-address 'r' (10.0.0.1) is outside every subnet (172.16.86.0/24)"
        );
        let err = config_err(
            &["172.16.86.0/24"],
            &["172.16.86.1"],
            &[],
            &[("r", "172.16.86.1")],
        );
        assert_eq!(
            err.to_string(),
            "invalid aux-address 'r': 172.16.86.1 is the gateway of 172.16.86.0/24"
        );
        let err = config_err(
            &["172.16.86.0/24"],
            &[],
            &[],
            &[("a", "172.16.86.9"), ("b", "172.16.86.9")],
        );
        assert_eq!(
            err.to_string(),
            "invalid aux-address 'b': 172.16.86.9 is reserved as aux-address 'a'"
        );
        let err = config_err(
            &["172.16.86.0/24"],
            &[],
            &[],
            &[("a", "172.16.86.9"), ("a", "172.16.86.10")],
        );
        assert_eq!(err, IpamError::DuplicateAuxName { name: "a".into() });
    }

    #[test]
    fn overlapping_subnets_are_an_error() {
        let err = config_err(&["172.16.86.0/24", "172.16.0.0/16"], &[], &[], &[]);
        assert_eq!(
            err.to_string(),
            "subnets 172.16.86.0/24 and 172.16.0.0/16 overlap"
        );
        let err = config_err(&["fd00::/64", "fd00::/64"], &[], &[], &[]);
        assert!(matches!(err, IpamError::SubnetsOverlap { .. }), "{err:?}");
    }

    #[test]
    fn subnet_with_host_bits_set_is_an_error_suggesting_the_canonical_form() {
        let err = config_err(&["172.16.86.5/24"], &[], &[], &[]);
        assert_eq!(
            err.to_string(),
            "invalid subnet 172.16.86.5/24: it should be 172.16.86.0/24"
        );
        let err = config_err(&["fd00::1/64"], &[], &[], &[]);
        assert_eq!(
            err.to_string(),
            "invalid subnet fd00::1/64: it should be fd00::/64"
        );
    }

    #[test]
    fn no_subnet_is_an_error() {
        let err = IpamConfig::from_flags(&[], &[], &[], &[], GatewayPolicy::FirstUsable)
            .expect_err("a plan needs a subnet");
        assert_eq!(err, IpamError::NoSubnet);
    }

    #[test]
    fn parse_helpers_name_the_bad_text() {
        assert_eq!(parse_cidr("172.16.86.0/24"), Ok(net("172.16.86.0/24")));
        assert_eq!(
            parse_cidr("172.16.86.0/33").map_err(|e| e.to_string()),
            Err(
                "invalid CIDR '172.16.86.0/33': expected ADDRESS/PREFIX, e.g. 172.16.86.0/24"
                    .into()
            )
        );
        assert!(parse_cidr("172.16.86.0").is_err(), "a CIDR needs a prefix");
        assert_eq!(
            parse_ip("fd00::1"),
            Ok(IpAddr::V6("fd00::1".parse().expect("v6")))
        );
        assert_eq!(
            parse_ip("300.1.1.1").map_err(|e| e.to_string()),
            Err("invalid IP address '300.1.1.1'".into())
        );
    }

    #[test]
    fn parse_aux_address_accepts_name_equals_ip() {
        assert_eq!(
            parse_aux_address("my-router=172.16.86.129"),
            Ok(("my-router".to_string(), ip("172.16.86.129")))
        );
        assert_eq!(
            parse_aux_address("v6host=fd00::9"),
            Ok(("v6host".to_string(), ip("fd00::9")))
        );
        let msg = |s: &str| match parse_aux_address(s) {
            Ok(v) => panic!("'{s}' should be rejected, got {v:?}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            msg("172.16.86.129"),
            "invalid aux-address '172.16.86.129': expected NAME=IP"
        );
        assert_eq!(
            msg("=172.16.86.129"),
            "invalid aux-address '=172.16.86.129': the name is empty"
        );
        assert_eq!(
            msg("r=nope"),
            "invalid aux-address 'r=nope': 'nope' is not an IP address"
        );
    }

    #[test]
    fn docker_holds_are_taken_by_their_endpoint_or_given_back() {
        let mut st = state(&["10.1.0.0/24"], &["10.1.0.1"], &[], &[]);
        let cli = st.allocate(Request::Any(Family::V4)).unwrap();
        assert_eq!(cli, ip("10.1.0.2"));
        // Docker's IPAM: the next free address, held, so the CLI skips it.
        let held = st.hold(Request::Any(Family::V4), None, 100).unwrap();
        assert_eq!(held, ip("10.1.0.3"));
        assert_eq!(any4(&mut st), ip("10.1.0.4"), "the CLI skips Docker's hold");
        assert!(matches!(
            st.allocate(Request::Exact(held)),
            Err(IpamError::InUse { .. })
        ));
        // Its endpoint takes it; Docker's release after the endpoint is
        // gone finds nothing held.
        assert_eq!(st.claim(held).unwrap(), held);
        assert_eq!(st.held().count(), 0);
        assert!(!st.release_held(&held));
        assert!(st.is_allocated(&held), "the endpoint's until it goes");
        // A hold Docker gives back before an endpoint took it is freed.
        let range = net("10.1.0.64/26");
        let in_range = st.hold(Request::Any(Family::V4), Some(range), 100).unwrap();
        assert_eq!(in_range, ip("10.1.0.65"), "within Docker's --ip-range");
        assert!(st.release_held(&in_range));
        assert!(!st.is_allocated(&in_range));
        // An endpoint with an address no hold has: allocated as --ip.
        assert_eq!(st.claim(ip("10.1.0.9")).unwrap(), ip("10.1.0.9"));
        assert!(st.claim(ip("10.1.0.9")).is_err(), "in use");
        // A range outside the subnets is refused.
        assert!(st
            .hold(Request::Any(Family::V4), Some(net("10.9.0.0/26")), 100)
            .is_err());
    }

    #[test]
    fn a_hold_no_endpoint_took_in_time_is_stale() {
        let mut st = state(&["10.1.0.0/24"], &["10.1.0.1"], &[], &[]);
        let young = st.hold(Request::Any(Family::V4), None, 1_000).unwrap();
        let old = st.hold(Request::Any(Family::V4), None, 900).unwrap();
        let taken = st.hold(Request::Any(Family::V4), None, 900).unwrap();
        st.claim(taken).unwrap();
        let stale: Vec<_> = st.stale_holds(1_005, 10).collect();
        assert_eq!(
            stale,
            [(old, Some(900))],
            "in flight: {young}; taken: {taken}"
        );
        assert_eq!(st.stale_holds(1_010, 10).count(), 2);
        // A hold an older build made (no time kept) is stale at once.
        let mut json = serde_json::to_value(&st).unwrap();
        json.as_object_mut().unwrap().remove("held_since");
        let older: IpamState = serde_json::from_value(json).unwrap();
        assert_eq!(
            older.stale_holds(1_000, 10).collect::<Vec<_>>(),
            [(young, None), (old, None)]
        );
        // Given back: no longer held, nor timed.
        assert!(st.release_held(&old));
        assert_eq!(st.stale_holds(u64::MAX, 10).count(), 1);
        let json = serde_json::to_string(&st).unwrap();
        assert!(!json.contains(&old.to_string()), "{json}");
    }

    #[test]
    fn state_survives_a_serde_round_trip() {
        let mut st = state(
            &["172.16.86.0/24", "fd00::/64"],
            &["172.16.86.1"],
            &["172.16.86.128/25"],
            &[("my-router", "172.16.86.129")],
        );
        any4(&mut st);
        st.allocate(Request::Any(Family::V6))
            .unwrap_or_else(|e| panic!("v6: {e}"));
        let json = serde_json::to_string(&st).unwrap_or_else(|e| panic!("serialize: {e}"));
        assert!(
            json.contains("\"172.16.86.0/24\""),
            "subnets as text: {json}"
        );
        let mut back: IpamState =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("deserialize {json}: {e}"));
        assert_eq!(back, st);
        assert_eq!(
            serde_json::to_string(&back).unwrap_or_else(|e| panic!("{e}")),
            json,
            "serialization should be deterministic"
        );
        assert_eq!(any4(&mut back), ip("172.16.86.130"));
    }

    #[test]
    fn slash_32_with_gateway_is_refused_as_too_small() {
        let err = config(&["10.9.9.9/32"], &[], &[], &[], GatewayPolicy::FirstUsable)
            .expect_err("/32 is all gateway");
        assert_eq!(
            err.to_string(),
            "subnet 10.9.9.9/32 is too small to hold an endpoint: it has 1 address, \
             all set aside (10.9.9.9 the gateway); use a shorter prefix"
        );
    }

    #[test]
    fn subnet_filled_by_reserved_addresses_is_refused() {
        let err = config(
            &["10.0.0.0/30"],
            &[],
            &[],
            &[("router", "10.0.0.2")],
            GatewayPolicy::FirstUsable,
        )
        .expect_err("net, gateway, aux and broadcast fill a /30");
        assert_eq!(
            err,
            IpamError::SubnetTooSmall {
                subnet: "10.0.0.0/30".parse().unwrap(),
                size: 4,
                taken: "10.0.0.0 the network address, 10.0.0.1 the gateway, \
                        10.0.0.2 aux-address 'router', 10.0.0.3 the broadcast address"
                    .into(),
            }
        );
        assert!(err.to_string().contains("it has 4 addresses"), "{err}");
        // One address left is enough.
        let mut st = state(&["10.0.0.0/30"], &[], &[], &[]);
        assert_eq!(any4(&mut st), ip("10.0.0.2"));
        // A huge IPv6 subnet never overflows the count.
        assert!(config(&["::/0"], &[], &[], &[], GatewayPolicy::FirstUsable).is_ok());
    }

    #[test]
    fn slash_32_without_gateway_hands_out_its_only_address() {
        let cfg = config(&["10.9.9.9/32"], &[], &[], &[], GatewayPolicy::None)
            .unwrap_or_else(|e| panic!("/32 config: {e}"));
        let mut st = IpamState::new(cfg);
        assert_eq!(any4(&mut st), ip("10.9.9.9"));
        assert!(st.allocate(Request::Any(Family::V4)).is_err());
    }

    #[test]
    fn slash_31_uses_both_addresses() {
        let mut st = state(&["10.0.0.0/31"], &[], &[], &[]);
        assert_eq!(st.config().subnets()[0].gateway, Some(ip("10.0.0.0")));
        assert_eq!(any4(&mut st), ip("10.0.0.1"));
        let err = st
            .allocate(Request::Any(Family::V4))
            .expect_err("/31 is full");
        assert_eq!(err.to_string(), "no free address left in 10.0.0.0/31");
        // A gateway on the upper address leaves the lower one.
        let mut st = state(&["10.0.0.0/31"], &["10.0.0.1"], &[], &[]);
        assert_eq!(any4(&mut st), ip("10.0.0.0"));
    }

    #[test]
    fn ipv6_slash_127_and_slash_128() {
        let mut st = state(&["fd00::/127"], &[], &[], &[]);
        assert_eq!(st.config().subnets()[0].gateway, Some(ip("fd00::")));
        assert_eq!(st.allocate(Request::Any(Family::V6)), Ok(ip("fd00::1")));
        assert!(matches!(
            config(&["fd00::7/128"], &[], &[], &[], GatewayPolicy::FirstUsable),
            Err(IpamError::SubnetTooSmall { size: 1, .. })
        ));
    }

    #[test]
    fn subnets_overlap_truth_table() {
        let cases = [
            ("10.0.0.0/24", "10.0.0.0/24", true),
            ("10.0.0.0/24", "10.0.0.128/25", true),
            ("10.0.0.128/25", "10.0.0.0/16", true),
            ("10.0.0.0/24", "10.0.1.0/24", false),
            ("10.0.0.0/25", "10.0.0.128/25", false),
            ("0.0.0.0/0", "192.168.1.7/32", true),
            ("10.0.0.0/8", "fd00::/8", false),
            ("fd00::/64", "fd00::/48", true),
            ("fd00::/64", "fd00:0:0:1::/64", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(subnets_overlap(&net(a), &net(b)), want, "{a} vs {b}");
            assert_eq!(subnets_overlap(&net(b), &net(a)), want, "{b} vs {a}");
        }
    }
}
