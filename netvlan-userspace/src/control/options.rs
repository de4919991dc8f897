//! `-o KEY=VALUE` driver options and the parent plan, checked before any
//! kernel change.

use std::collections::BTreeMap;

use netvlan_common::{decision::MAX_MACS_LIMIT, maps::DENY_MACS_CAPACITY, Mac};
use serde::{Deserialize, Serialize};

use super::{driver::Driver, NetworkError, Parent, ParentKind};
use crate::{
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
    /// Datapath policy (`unknown_dst=`, `vlans=`, `mac_deny=`).
    #[serde(default)]
    pub policy: PolicyOptions,
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

/// The policy keys, settable at create time and with `netvlan policy set`.
pub(crate) const POLICY_KEYS: &[&str] = &[
    "unknown_dst",
    "vlans",
    "mac_deny",
    "max_macs",
    "max_macs_action",
];

impl PolicyOptions {
    /// Applies `KEY=VALUE` policy settings on top of `self`.
    pub fn update(&mut self, raw: &BTreeMap<String, String>) -> Result<(), NetworkError> {
        if let Some(v) = raw.get("unknown_dst") {
            self.unknown_dst_drop = match v.as_str() {
                "drop" => true,
                "pass" => false,
                other => {
                    return Err(NetworkError::BadOption(format!(
                        "unknown_dst={other}: expected pass or drop"
                    )))
                }
            };
        }
        if let Some(v) = raw.get("vlans") {
            self.vlans = match v.as_str() {
                "" | "off" => None,
                list => Some(parse_vlan_list(list)?),
            };
        }
        if let Some(v) = raw.get("mac_deny") {
            self.mac_deny = v
                .split(',')
                .filter(|m| !m.is_empty())
                .map(|m| {
                    m.trim()
                        .parse::<Mac>()
                        .ok()
                        .filter(|mac| mac.is_unicast())
                        .map(Mac::octets)
                        .ok_or_else(|| {
                            NetworkError::BadOption(format!(
                                "mac_deny: '{m}' is not a unicast MAC address"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?;
            if self.mac_deny.len() > DENY_MACS_CAPACITY as usize {
                return Err(NetworkError::BadOption(format!(
                    "mac_deny: {} MACs given; a parent denies at most {DENY_MACS_CAPACITY}",
                    self.mac_deny.len()
                )));
            }
        }
        if let Some(v) = raw.get("max_macs") {
            self.max_macs = match v.as_str() {
                "" | "off" => None,
                n => Some(
                    n.parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_MACS_LIMIT).contains(n))
                        .ok_or_else(|| {
                            NetworkError::BadOption(format!(
                                "max_macs={n}: expected off or a number from 1 to {MAX_MACS_LIMIT}"
                            ))
                        })?,
                ),
            };
        }
        if let Some(v) = raw.get("max_macs_action") {
            self.max_macs_count_only = match v.as_str() {
                "drop" => false,
                "count" => true,
                other => {
                    return Err(NetworkError::BadOption(format!(
                        "max_macs_action={other}: expected drop or count"
                    )))
                }
            };
        }
        Ok(())
    }
}

/// `10,20,30-39` into VLAN ids, each within 1..4094.
fn parse_vlan_list(list: &str) -> Result<std::collections::BTreeSet<u16>, NetworkError> {
    let bad = |part: &str| {
        NetworkError::BadOption(format!(
            "vlans: '{part}' is not a VLAN id or range within 1..4094"
        ))
    };
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

const KNOWN: &[&str] = &[
    "parent",
    "macvlan_mode",
    "ipvlan_mode",
    "ipvlan_flag",
    "mtu",
    "unknown_dst",
    "vlans",
    "mac_deny",
    "max_macs",
    "max_macs_action",
    "spoofcheck",
];

fn parse_enum<T: Keyword>(key: &str, value: &str) -> Result<T, NetworkError> {
    T::parse_keyword(value).map_err(|e| {
        NetworkError::BadOption(format!(
            "{key}={value}: expected one of {}",
            e.valid.join(", ")
        ))
    })
}

impl NetworkOptions {
    pub fn parse(driver: Driver, options: &[String]) -> Result<Self, NetworkError> {
        let mut raw = BTreeMap::new();
        for option in options {
            let Some((key, value)) = option.split_once('=') else {
                return Err(NetworkError::BadOption(format!(
                    "'{option}' is not KEY=VALUE"
                )));
            };
            if !KNOWN.contains(&key) {
                return Err(NetworkError::BadOption(format!(
                    "unknown option '{key}' (known: {})",
                    KNOWN.join(", ")
                )));
            }
            if raw.insert(key.to_string(), value.to_string()).is_some() {
                return Err(NetworkError::BadOption(format!("'{key}' given twice")));
            }
        }
        let get = |key: &str| raw.get(key).map(String::as_str);
        let for_driver = |key: &str, wanted: Driver| -> Result<(), NetworkError> {
            if get(key).is_some() && driver != wanted {
                return Err(NetworkError::BadOption(format!(
                    "{key} applies to {wanted} networks, not {driver}"
                )));
            }
            Ok(())
        };
        for_driver("macvlan_mode", Driver::Macvlan)?;
        for_driver("ipvlan_mode", Driver::Ipvlan)?;
        for_driver("ipvlan_flag", Driver::Ipvlan)?;
        let parent = match get("parent") {
            Some("") => return Err(NetworkError::BadOption("parent= is empty".into())),
            other => other.map(str::to_string),
        };
        let mtu = get("mtu")
            .map(|v| match v.parse::<u32>() {
                Ok(mtu) if (68..=65535).contains(&mtu) => Ok(mtu),
                _ => Err(NetworkError::BadOption(format!(
                    "mtu={v}: expected a number from 68 to 65535"
                ))),
            })
            .transpose()?;
        Ok(NetworkOptions {
            driver,
            macvlan_mode: match driver {
                Driver::Macvlan => Some(
                    get("macvlan_mode")
                        .map(|v| parse_enum("macvlan_mode", v))
                        .transpose()?
                        .unwrap_or_default(),
                ),
                Driver::Ipvlan => None,
            },
            ipvlan_mode: match driver {
                Driver::Ipvlan => Some(
                    get("ipvlan_mode")
                        .map(|v| parse_enum("ipvlan_mode", v))
                        .transpose()?
                        .unwrap_or_default(),
                ),
                Driver::Macvlan => None,
            },
            ipvlan_flag: match driver {
                Driver::Ipvlan => Some(
                    get("ipvlan_flag")
                        .map(|v| parse_enum("ipvlan_flag", v))
                        .transpose()?
                        .unwrap_or_default(),
                ),
                Driver::Macvlan => None,
            },
            spoofcheck: match get("spoofcheck") {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(NetworkError::BadOption(format!(
                        "spoofcheck={other}: expected on or off"
                    )))
                }
            },
            policy: {
                let mut policy = PolicyOptions::default();
                policy.update(&raw)?;
                policy
            },
            parent,
            mtu,
            raw,
        })
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
        return Err(NetworkError::BadOption(format!(
            "parent={given}: not a valid interface name"
        )));
    }
    if let Some((base, vid)) = given.rsplit_once('.') {
        if !base.is_empty() && !vid.is_empty() && vid.bytes().all(|b| b.is_ascii_digit()) {
            let vid_num = vid
                .parse::<u16>()
                .ok()
                .filter(|v| (1..=4094).contains(v))
                .ok_or_else(|| NetworkError::VlanOutOfRange {
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
