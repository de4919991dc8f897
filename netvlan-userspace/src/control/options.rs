//! `-o KEY=VALUE` driver options and the parent plan, checked before any
//! kernel change.

use std::collections::BTreeMap;

use netvlan_common::{
    decision::MAX_MACS_LIMIT,
    maps::{DENY_MACS_CAPACITY, MAC_LEARN_BUDGET},
    Mac,
};
use serde::{Deserialize, Serialize};

use super::{driver::Driver, InvalidRequest, NetworkError, Parent, ParentKind};
use crate::{
    datapath::Hook,
    keyword::Keyword,
    sys::netlink::{IpvlanFlag, IpvlanMode, MacvlanMode},
};

/// The options of a network, as validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkOptions {
    pub driver: Driver,
    /// `parent=` as given (`eth0`, `eth0.10`), `None` for an internal network.
    pub parent: Option<String>,
    pub macvlan_mode: Option<MacvlanMode>,
    pub ipvlan_mode: Option<IpvlanMode>,
    pub ipvlan_flag: Option<IpvlanFlag>,
    pub mtu: Option<u32>,
    /// Anti-spoofing on every endpoint's egress (`spoofcheck=on|off`).
    #[serde(default = "spoofcheck_default")]
    pub spoofcheck: bool,
    /// Where the wire program runs on the parent (`hook=auto|xdp|tc`);
    /// every network of a parent shares its hook.
    #[serde(default)]
    pub hook: Hook,
    /// Datapath policy (`unknown_dst=`, `vlans=`, `mac_deny=`).
    #[serde(default)]
    pub policy: PolicyOptions,
    /// Host <-> endpoint access as asked for (`host_access=`; the mode in
    /// effect is `NetworkRecord::host_access`).
    #[serde(default)]
    pub host_access: super::host_access::HostAccessMode,
    /// Every `-o` exactly as given, for `inspect`'s `Options`.
    pub raw: BTreeMap<String, String>,
}

fn spoofcheck_default() -> bool {
    true
}

/// What the datapath enforces for a network (see `netvlan_common::decision`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyOptions {
    /// Drop unicast frames to MACs that are neither an endpoint nor the host's.
    pub unknown_dst_drop: bool,
    /// VLAN allow-list for the parent's wire; `Some` turns VLAN filtering on
    /// (VLANs used by networks are always allowed).
    pub vlans: Option<std::collections::BTreeSet<u16>>,
    /// Source MACs whose frames never reach endpoints.
    pub mac_deny: std::collections::BTreeSet<[u8; 6]>,
    /// MAC-sprawl guard: at most this many distinct source MACs on the
    /// network's VLAN of the parent (`max_macs=N|off`).
    #[serde(default)]
    pub max_macs: Option<u32>,
    /// Over the limit, only count frames from new MACs instead of dropping
    /// them (`max_macs_action=count|drop`).
    #[serde(default)]
    pub max_macs_count_only: bool,
}

/// A `-o KEY=VALUE` that cannot be taken; names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("'{0}' is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("unknown option '{key}' (known: {})", names(|_| true))]
    Unknown { key: String },
    #[error("'{key}' is not a policy setting (settable: {})", names(|k| k.policy()))]
    NotPolicy { key: String },
    #[error("'{0}' given twice")]
    GivenTwice(String),
    #[error("{key} applies to {wanted} networks, not {driver}")]
    WrongDriver {
        key: &'static str,
        wanted: Driver,
        driver: Driver,
    },
    #[error("parent= is empty")]
    EmptyParent,
    #[error("parent={0}: not a valid interface name")]
    BadParent(String),
    /// A value outside what the key takes (`expected` says what it does).
    #[error("{key}={value}: expected {expected}")]
    BadValue {
        key: &'static str,
        value: String,
        expected: String,
    },
    #[error("vlans: '{0}' is not a VLAN id or range within 1..4094")]
    BadVlan(String),
    #[error("mac_deny: '{0}' is not a unicast MAC address")]
    BadDeniedMac(String),
    #[error("mac_deny: {0} MACs given; a parent denies at most {DENY_MACS_CAPACITY}")]
    TooManyDenied(usize),
    #[error("max_macs: the networks on {wire} would learn up to {budget} MACs in all; one parent learns at most {MAC_LEARN_BUDGET}")]
    LearnBudget { wire: String, budget: u32 },
    #[error("hook={requested} conflicts with network '{network}' on {wire}, which has hook={theirs}; the networks of one parent share its hook")]
    HookConflict {
        wire: String,
        requested: Hook,
        network: String,
        theirs: Hook,
    },
}

/// Where a key's value goes.
enum Setter {
    Network(fn(&mut NetworkOptions, &str) -> Result<(), OptionError>),
    /// A policy setting: also changeable later with `netvlan policy set`.
    Policy(fn(&mut PolicyOptions, &str) -> Result<(), OptionError>),
}

/// One `-o` key: the one place it is spelled, parsed and described.
pub struct OptionKey {
    pub name: &'static str,
    /// The values it takes, as help shows them.
    pub values: &'static str,
    pub help: &'static str,
    /// The one driver it applies to, if not both.
    driver: Option<Driver>,
    set: Setter,
}

impl OptionKey {
    /// Whether `netvlan policy set` can change it.
    pub fn policy(&self) -> bool {
        matches!(self.set, Setter::Policy(_))
    }
}

/// Every `-o` key, in the order they are applied (and so checked).
pub const OPTION_KEYS: &[OptionKey] = &[
    OptionKey {
        name: "parent",
        values: "IFACE[.VID]",
        help: "the LAN's interface; IFACE.VID an 802.1Q sub-interface (none: internal)",
        driver: None,
        set: Setter::Network(|o, v| {
            if v.is_empty() {
                return Err(OptionError::EmptyParent);
            }
            o.parent = Some(v.to_string());
            Ok(())
        }),
    },
    OptionKey {
        name: "macvlan_mode",
        values: "bridge|vepa|private|passthru",
        help: "how endpoints on one parent reach each other",
        driver: Some(Driver::Macvlan),
        set: Setter::Network(|o, v| {
            o.macvlan_mode = Some(keyword("macvlan_mode", v)?);
            Ok(())
        }),
    },
    OptionKey {
        name: "ipvlan_mode",
        values: "l2|l3|l3s",
        help: "switch (l2) or route (l3, l3s) between endpoints and the LAN",
        driver: Some(Driver::Ipvlan),
        set: Setter::Network(|o, v| {
            o.ipvlan_mode = Some(keyword("ipvlan_mode", v)?);
            Ok(())
        }),
    },
    OptionKey {
        name: "ipvlan_flag",
        values: "bridge|private|vepa",
        help: "how ipvlan endpoints reach each other",
        driver: Some(Driver::Ipvlan),
        set: Setter::Network(|o, v| {
            o.ipvlan_flag = Some(keyword("ipvlan_flag", v)?);
            Ok(())
        }),
    },
    OptionKey {
        name: "mtu",
        values: "68..65535",
        help: "the endpoints' MTU (at most the parent's)",
        driver: None,
        set: Setter::Network(|o, v| {
            o.mtu = Some(
                v.parse::<u32>()
                    .ok()
                    .filter(|mtu| (68..=65535).contains(mtu))
                    .ok_or_else(|| bad_value("mtu", v, "a number from 68 to 65535"))?,
            );
            Ok(())
        }),
    },
    OptionKey {
        name: "unknown_dst",
        values: "pass|drop",
        help: "drop unicast frames to MACs that are neither an endpoint's nor the host's (ipvlan: to addresses)",
        driver: None,
        set: Setter::Policy(|p, v| {
            p.unknown_dst_drop = match v {
                "drop" => true,
                "pass" => false,
                other => return Err(bad_value("unknown_dst", other, "pass or drop")),
            };
            Ok(())
        }),
    },
    OptionKey {
        name: "vlans",
        values: "10,20,30-39|off",
        help: "VLAN allow-list on the parent's wire; VLANs used by networks are always allowed",
        driver: None,
        set: Setter::Policy(|p, v| {
            p.vlans = match v {
                "" | "off" => None,
                list => Some(parse_vlan_list(list)?),
            };
            Ok(())
        }),
    },
    OptionKey {
        name: "mac_deny",
        values: "MAC,MAC",
        help: "source MACs that never reach endpoints (empty clears)",
        driver: None,
        set: Setter::Policy(|p, v| {
            p.mac_deny = v
                .split(',')
                .filter(|m| !m.is_empty())
                .map(|m| {
                    m.trim()
                        .parse::<Mac>()
                        .ok()
                        .filter(|mac| mac.is_unicast())
                        .map(Mac::octets)
                        .ok_or_else(|| OptionError::BadDeniedMac(m.to_string()))
                })
                .collect::<Result<_, _>>()?;
            if p.mac_deny.len() > DENY_MACS_CAPACITY as usize {
                return Err(OptionError::TooManyDenied(p.mac_deny.len()));
            }
            Ok(())
        }),
    },
    OptionKey {
        name: "max_macs",
        values: "N|off",
        help: "learn at most N source MACs on the network's VLAN; frames from further new MACs are refused",
        driver: None,
        set: Setter::Policy(|p, v| {
            p.max_macs = match v {
                "" | "off" => None,
                n => Some(
                    n.parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_MACS_LIMIT).contains(n))
                        .ok_or_else(|| {
                            bad_value(
                                "max_macs",
                                n,
                                &format!("off or a number from 1 to {MAX_MACS_LIMIT}"),
                            )
                        })?,
                ),
            };
            Ok(())
        }),
    },
    OptionKey {
        name: "max_macs_action",
        values: "drop|count",
        help: "refuse frames over max_macs (default) or only count them",
        driver: None,
        set: Setter::Policy(|p, v| {
            p.max_macs_count_only = match v {
                "drop" => false,
                "count" => true,
                other => return Err(bad_value("max_macs_action", other, "drop or count")),
            };
            Ok(())
        }),
    },
    OptionKey {
        name: "hook",
        values: "auto|xdp|tc",
        help: "where the parent's wire program runs: tc on veth and virtio_net (native XDP turns their receive offloads off), xdp elsewhere (auto); shared by the parent's networks",
        driver: None,
        set: Setter::Network(|o, v| {
            o.hook = keyword("hook", v)?;
            Ok(())
        }),
    },
    OptionKey {
        name: "host_access",
        values: "off|on|shim|ebpf",
        help: "let the host reach the endpoints and they it: a shim link, the eBPF hairpin, or on (the better that works here); changeable with `network update`",
        driver: None,
        set: Setter::Network(|o, v| {
            o.host_access = keyword("host_access", v)?;
            Ok(())
        }),
    },
    OptionKey {
        name: "spoofcheck",
        values: "on|off",
        help: "drop what an endpoint sends from a MAC or address not its own",
        driver: None,
        set: Setter::Network(|o, v| {
            o.spoofcheck = match v {
                "on" => true,
                "off" => false,
                other => return Err(bad_value("spoofcheck", other, "on or off")),
            };
            Ok(())
        }),
    },
];

/// The names of the keys `which` picks, for error messages.
fn names(which: impl Fn(&OptionKey) -> bool) -> String {
    OPTION_KEYS
        .iter()
        .filter(|k| which(k))
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The policy keys, settable at create time and with `netvlan policy set`.
pub(crate) fn policy_keys() -> Vec<&'static str> {
    OPTION_KEYS
        .iter()
        .filter(|k| k.policy())
        .map(|k| k.name)
        .collect()
}

fn bad_value(key: &'static str, value: &str, expected: &str) -> OptionError {
    OptionError::BadValue {
        key,
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

fn keyword<T: Keyword>(key: &'static str, value: &str) -> Result<T, OptionError> {
    T::parse_keyword(value)
        .map_err(|e| bad_value(key, value, &format!("one of {}", e.valid.join(", "))))
}

/// `KEY=VALUE` items into a map of known keys (`accept` picks which are
/// known here; `unknown` names a key that is not), each given once.
fn parse_pairs(
    items: &[String],
    accept: impl Fn(&OptionKey) -> bool,
    unknown: impl Fn(&str) -> OptionError,
) -> Result<BTreeMap<String, String>, OptionError> {
    let mut raw = BTreeMap::new();
    for item in items {
        let Some((key, value)) = item.split_once('=') else {
            return Err(OptionError::NotKeyValue(item.clone()));
        };
        if !OPTION_KEYS.iter().any(|k| k.name == key && accept(k)) {
            return Err(unknown(key));
        }
        if raw.insert(key.to_string(), value.to_string()).is_some() {
            return Err(OptionError::GivenTwice(key.to_string()));
        }
    }
    Ok(raw)
}

/// What `network update -o KEY=VALUE` may change: `host_access` only.
/// Returns the mode asked for (`None`: not given) or, for a known key that
/// is fixed at create, its name.
pub(crate) fn parse_update_settings(
    settings: &[String],
) -> Result<Result<Option<super::host_access::HostAccessMode>, String>, OptionError> {
    let raw = parse_pairs(
        settings,
        |_| true,
        |key| OptionError::Unknown {
            key: key.to_string(),
        },
    )?;
    if let Some(fixed) = raw.keys().find(|k| k.as_str() != "host_access") {
        return Ok(Err(fixed.clone()));
    }
    raw.get("host_access")
        .map(|v| keyword("host_access", v))
        .transpose()
        .map(Ok)
}

/// `netvlan policy set` settings: policy keys only.
pub(crate) fn parse_policy_settings(
    settings: &[String],
) -> Result<BTreeMap<String, String>, OptionError> {
    parse_pairs(settings, OptionKey::policy, |key| OptionError::NotPolicy {
        key: key.to_string(),
    })
}

impl PolicyOptions {
    /// Applies `KEY=VALUE` policy settings on top of `self`.
    pub fn update(&mut self, raw: &BTreeMap<String, String>) -> Result<(), OptionError> {
        for key in OPTION_KEYS {
            if let (Setter::Policy(set), Some(value)) = (&key.set, raw.get(key.name)) {
                set(self, value)?;
            }
        }
        Ok(())
    }
}

/// `10,20,30-39` into VLAN ids, each within 1..4094.
fn parse_vlan_list(list: &str) -> Result<std::collections::BTreeSet<u16>, OptionError> {
    let bad = |part: &str| OptionError::BadVlan(part.to_string());
    let parse = |text: &str, part: &str| {
        text.trim()
            .parse::<u16>()
            .ok()
            .filter(|v| (1..=4094).contains(v))
            .ok_or_else(|| bad(part))
    };
    let mut out = std::collections::BTreeSet::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (parse(lo, part)?, parse(hi, part)?);
                if lo > hi {
                    return Err(bad(part));
                }
                out.extend(lo..=hi);
            }
            None => {
                out.insert(parse(part, part)?);
            }
        }
    }
    Ok(out)
}

impl NetworkOptions {
    pub fn parse(driver: Driver, options: &[String]) -> Result<Self, OptionError> {
        let raw = parse_pairs(
            options,
            |_| true,
            |key| OptionError::Unknown {
                key: key.to_string(),
            },
        )?;
        for key in OPTION_KEYS {
            match key.driver {
                Some(wanted) if wanted != driver && raw.contains_key(key.name) => {
                    return Err(OptionError::WrongDriver {
                        key: key.name,
                        wanted,
                        driver,
                    });
                }
                _ => {}
            }
        }
        let mut options = NetworkOptions {
            driver,
            parent: None,
            macvlan_mode: (driver == Driver::Macvlan).then(MacvlanMode::default),
            ipvlan_mode: (driver == Driver::Ipvlan).then(IpvlanMode::default),
            ipvlan_flag: (driver == Driver::Ipvlan).then(IpvlanFlag::default),
            mtu: None,
            spoofcheck: spoofcheck_default(),
            hook: Hook::default(),
            policy: PolicyOptions::default(),
            host_access: Default::default(),
            raw: BTreeMap::new(),
        };
        for key in OPTION_KEYS {
            let Some(value) = raw.get(key.name) else {
                continue;
            };
            match &key.set {
                Setter::Network(set) => set(&mut options, value)?,
                Setter::Policy(set) => set(&mut options.policy, value)?,
            }
        }
        options.raw = raw;
        Ok(options)
    }
}

/// The hook the networks on `wire` ask for explicitly (`hook=` given),
/// with the first network that asked; `auto` ones follow the others.
pub(crate) fn wire_hook<'a>(
    networks: impl IntoIterator<Item = (&'a str, &'a str, &'a NetworkOptions)>,
    wire: &str,
) -> Option<(Hook, &'a str)> {
    networks
        .into_iter()
        .filter(|(_, w, o)| *w == wire && o.hook != Hook::Auto)
        .map(|(name, _, o)| (o.hook, name))
        .next()
}

/// Refuses an explicit `hook=` that differs from the one another network
/// of the same wire asked for, naming both.
pub(crate) fn check_hook_agreement<'a>(
    networks: impl IntoIterator<Item = (&'a str, &'a str, &'a NetworkOptions)>,
    wire: &str,
    options: &NetworkOptions,
) -> Result<(), OptionError> {
    if options.hook == Hook::Auto {
        return Ok(());
    }
    match wire_hook(networks, wire) {
        Some((theirs, network)) if theirs != options.hook => Err(OptionError::HookConflict {
            wire: wire.to_string(),
            requested: options.hook,
            network: network.to_string(),
            theirs,
        }),
        _ => Ok(()),
    }
}

/// Linux interface names: 1..=15 bytes, no '/', ':' or whitespace.
pub(crate) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && !name.contains(['/', ':', ' ', '\t', '\n'])
        && name != "."
        && name != ".."
}

/// Decides what the parent will be, without touching the kernel:
/// `eth0` as is, `eth0.10` an 802.1Q sub-interface (created if missing),
/// none a placeholder named from the network id.
pub(super) fn plan_parent(given: Option<&str>, network_id: &str) -> Result<Parent, NetworkError> {
    let Some(given) = given else {
        let link = format!("nvd-{}", &network_id[..8]);
        return Ok(Parent {
            wire: link.clone(),
            link,
            kind: ParentKind::Placeholder,
            created: true,
        });
    };
    if !valid_ifname(given) {
        return Err(OptionError::BadParent(given.to_string()).into());
    }
    if let Some((base, vid)) = given.rsplit_once('.') {
        if !base.is_empty() && !vid.is_empty() && vid.bytes().all(|b| b.is_ascii_digit()) {
            let vid_num = vid
                .parse::<u16>()
                .ok()
                .filter(|v| (1..=4094).contains(v))
                .ok_or_else(|| InvalidRequest::VlanOutOfRange {
                    parent: given.into(),
                    vid: vid.into(),
                })?;
            return Ok(Parent {
                link: given.into(),
                wire: base.into(),
                kind: ParentKind::Vlan {
                    base: base.into(),
                    vid: vid_num,
                },
                // Decided when the kernel is asked whether it exists.
                created: false,
            });
        }
    }
    Ok(Parent {
        link: given.into(),
        wire: given.into(),
        kind: ParentKind::Existing,
        created: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_follow_docker() {
        let m = NetworkOptions::parse(Driver::Macvlan, &opts(&["parent=eth0"])).unwrap();
        assert_eq!(m.macvlan_mode, Some(MacvlanMode::Bridge));
        let i = NetworkOptions::parse(Driver::Ipvlan, &opts(&["parent=eth0"])).unwrap();
        assert_eq!(
            (i.ipvlan_mode, i.ipvlan_flag),
            (Some(IpvlanMode::L2), Some(IpvlanFlag::Bridge))
        );
    }

    #[test]
    fn bad_options_are_named() {
        let err = |d, o: &[&str]| NetworkOptions::parse(d, &opts(o)).unwrap_err().to_string();
        assert!(err(Driver::Macvlan, &["macvlan_mode=hairpin"])
            .contains("expected one of bridge, vepa, private, passthru"));
        assert!(err(Driver::Macvlan, &["ipvlan_mode=l3"]).contains("applies to ipvlan networks"));
        assert!(err(Driver::Macvlan, &["colour=blue"]).contains("unknown option 'colour'"));
        assert!(err(Driver::Macvlan, &["parent"]).contains("not KEY=VALUE"));
        assert!(err(Driver::Macvlan, &["mtu=20"]).contains("mtu=20"));
    }

    #[test]
    fn one_table_names_every_key_in_parsing_and_errors() {
        let names: Vec<&str> = OPTION_KEYS.iter().map(|k| k.name).collect();
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "each key once: {names:?}");
        assert_eq!(
            policy_keys(),
            [
                "unknown_dst",
                "vlans",
                "mac_deny",
                "max_macs",
                "max_macs_action"
            ]
        );
        assert_eq!(
            parse_policy_settings(&opts(&["mtu=1400"]))
                .unwrap_err()
                .to_string(),
            "'mtu' is not a policy setting (settable: unknown_dst, vlans, mac_deny, max_macs, max_macs_action)"
        );
        assert!(
            NetworkOptions::parse(Driver::Macvlan, &opts(&["colour=blue"]))
                .unwrap_err()
                .to_string()
                .ends_with(&format!("(known: {})", names.join(", ")))
        );
        // Every key takes a value of its own kind, through the table.
        let o = NetworkOptions::parse(
            Driver::Macvlan,
            &opts(&[
                "parent=eth0.10",
                "macvlan_mode=vepa",
                "mtu=1400",
                "unknown_dst=drop",
                "vlans=10,20-21",
                "mac_deny=02:00:00:00:00:66",
                "max_macs=64",
                "max_macs_action=count",
                "hook=tc",
                "spoofcheck=off",
            ]),
        )
        .unwrap();
        assert_eq!(o.hook, Hook::Tc);
        assert_eq!(o.parent.as_deref(), Some("eth0.10"));
        assert_eq!(o.macvlan_mode, Some(MacvlanMode::Vepa));
        assert_eq!((o.mtu, o.spoofcheck), (Some(1400), false));
        assert!(o.policy.unknown_dst_drop && o.policy.max_macs_count_only);
        assert_eq!(o.policy.vlans, Some([10, 20, 21].into()));
        assert_eq!(o.policy.mac_deny, [[2, 0, 0, 0, 0, 0x66]].into());
        assert_eq!(o.policy.max_macs, Some(64));
        assert_eq!(o.raw.len(), 10);
    }

    #[test]
    fn hook_is_auto_unless_given_and_a_bad_one_names_the_choices() {
        let o = NetworkOptions::parse(Driver::Macvlan, &opts(&["parent=eth0"])).unwrap();
        assert_eq!(o.hook, Hook::Auto);
        for (given, want) in [("auto", Hook::Auto), ("xdp", Hook::Xdp), ("tc", Hook::Tc)] {
            let o =
                NetworkOptions::parse(Driver::Ipvlan, &opts(&[&format!("hook={given}")])).unwrap();
            assert_eq!(o.hook, want);
        }
        let e = NetworkOptions::parse(Driver::Macvlan, &opts(&["hook=ebpf"]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "hook=ebpf: expected one of auto, xdp, tc");
        // Records stored before the hook existed read as auto.
        let mut stored = serde_json::to_value(&o).unwrap();
        stored.as_object_mut().unwrap().remove("hook");
        let old: NetworkOptions = serde_json::from_value(stored).unwrap();
        assert_eq!(old.hook, Hook::Auto);
    }

    #[test]
    fn networks_on_one_wire_must_agree_on_an_explicit_hook() {
        let parse = |o: &[&str]| NetworkOptions::parse(Driver::Macvlan, &opts(o)).unwrap();
        let (xdp, auto, tc) = (parse(&["hook=xdp"]), parse(&[]), parse(&["hook=tc"]));
        let existing = [
            ("a", "eth1", &tc),
            ("b", "eth0", &auto),
            ("c", "eth0", &xdp),
        ];
        let e = check_hook_agreement(existing, "eth0", &tc).unwrap_err();
        assert_eq!(
            e.to_string(),
            "hook=tc conflicts with network 'c' on eth0, which has hook=xdp; the networks of one parent share its hook"
        );
        assert!(check_hook_agreement(existing, "eth0", &xdp).is_ok());
        assert!(check_hook_agreement(existing, "eth0", &auto).is_ok());
        assert!(check_hook_agreement(existing, "eth1", &tc).is_ok());
        assert!(check_hook_agreement(existing, "eth2", &xdp).is_ok());
        assert_eq!(wire_hook(existing, "eth0"), Some((Hook::Xdp, "c")));
        assert_eq!(wire_hook(existing, "eth2"), None);
    }

    #[test]
    fn dotted_parents_are_vlans_within_1_to_4094() {
        let p = plan_parent(Some("eth0.10"), "0123456789").unwrap();
        assert_eq!(
            p.kind,
            ParentKind::Vlan {
                base: "eth0".into(),
                vid: 10
            }
        );
        assert_eq!((p.link.as_str(), p.wire.as_str()), ("eth0.10", "eth0"));
        for bad in ["eth0.0", "eth0.4095", "eth0.99999"] {
            let e = plan_parent(Some(bad), "0123456789")
                .unwrap_err()
                .to_string();
            assert!(e.contains("outside 1..4094"), "{bad}: {e}");
        }
        assert_eq!(
            plan_parent(Some("bond0"), "0123456789").unwrap().kind,
            ParentKind::Existing
        );
        let placeholder = plan_parent(None, "0123456789abcdef").unwrap();
        assert_eq!(
            (placeholder.link.as_str(), placeholder.kind),
            ("nvd-01234567", ParentKind::Placeholder)
        );
    }
}
