//! A network's policy stays inside that network: a setting the datapath
//! would also enforce on another network on the same parent (the deny list
//! is per parent, the flags and the MAC-sprawl guard per VLAN of it) is
//! refused with an error naming the other networks, and nothing changes.

use netvlan_tests::{
    frame::{FrameBuilder, Mac},
    packet::PacketSocket,
    wait_for, Lan,
};
use serde_json::Value;
use std::time::Duration;

const DENIED: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x66];

fn policy(lab: &Lan, name: &str) -> Value {
    lab.inspect(name)["Netvlan"]["Policy"].clone()
}

/// The policy of a network nobody set anything on.
fn no_policy() -> Value {
    serde_json::json!({
        "UnknownDst": "pass",
        "Vlans": null,
        "MacDeny": [],
        "MaxMacs": null,
        "MaxMacsAction": "drop",
    })
}

#[test]
fn a_deny_list_that_would_reach_another_network_on_the_parent_is_refused() {
    let lab = Lan::new(false);
    lab.create_network("lan", "10.90.0.0/24", &["parent=eth0"])
        .ok();
    lab.create_network("other", "10.91.0.0/24", &["parent=eth0"])
        .ok();
    let c = lab.container(false);
    let run = lab
        .netvlan(&["connect", "--json", "other", c.name()])
        .ok()
        .json();
    let endpoint = netvlan_tests::frame::parse_mac(run["endpoint"]["mac"].as_str().unwrap());

    let run = lab
        .netvlan(&["policy", "set", "lan", "mac_deny=02:00:00:00:00:66"])
        .failed();
    assert!(
        run.stderr.contains(
            "mac_deny on network 'lan' would also apply to network(s) 'other', \
             which share parent eth0 (one deny list per parent)"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("its own parent or VLAN"),
        "{}",
        run.stderr
    );
    // Every affected network's inspect shows what its wire enforces: nothing.
    assert_eq!(policy(&lab, "lan"), no_policy());
    assert_eq!(policy(&lab, "other"), no_policy());

    // And frames from that MAC still reach the other network's endpoint.
    let listener = PacketSocket::listen(&c, "eth0");
    let sender = PacketSocket::open(&lab.switch, "peer0");
    sender.send_many(&FrameBuilder::new(endpoint, DENIED).build(64), 5);
    let arrived = wait_for(Duration::from_secs(5), || {
        let n = listener
            .received()
            .iter()
            .filter(|f| f.len() >= 12 && f[..6] == endpoint && f[6..12] == DENIED)
            .count();
        (n > 0).then_some(n)
    });
    assert!(arrived.is_some(), "frames to 'other' were dropped");

    lab.netvlan(&["disconnect", "other", c.name()]).ok();
    lab.netvlan(&["network", "rm", "other"]).ok();
    // Alone on the parent, the deny list is lan's own.
    lab.netvlan(&["policy", "set", "lan", "mac_deny=02:00:00:00:00:66"])
        .ok();
    assert_eq!(policy(&lab, "lan")["MacDeny"][0], "02:00:00:00:00:66");
    lab.netvlan(&["network", "rm", "lan"]).ok();
}

#[test]
fn a_guard_or_drop_on_a_shared_vlan_is_refused_at_set_and_at_create() {
    let lab = Lan::new(false);
    lab.create_network("lan", "10.92.0.0/24", &["parent=eth0", "max_macs=3"])
        .ok();
    // A second network on the same untagged wire would share lan's guard
    // (and its gateway would count against lan's three MACs).
    let links = lab.host_links();
    let run = lab
        .create_network("other", "10.93.0.0/24", &["parent=eth0"])
        .failed();
    assert!(
        run.stderr.contains(
            "network 'lan' enforces max_macs on the untagged traffic of parent eth0, \
             which would also apply to the new network 'other'"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(lab.host_links(), links, "the refused create left a link");
    let ls = lab.netvlan(&["network", "ls", "--json"]).ok().json();
    assert_eq!(ls.as_array().map(Vec::len), Some(1), "{ls:#}");

    lab.netvlan(&["policy", "set", "lan", "max_macs=off"]).ok();
    lab.create_network("other", "10.93.0.0/24", &["parent=eth0"])
        .ok();
    for setting in ["max_macs=3", "unknown_dst=drop"] {
        let run = lab.netvlan(&["policy", "set", "other", setting]).failed();
        let key = setting.split('=').next().unwrap();
        assert!(
            run.stderr.contains(&format!(
                "{key} on network 'other' would also apply to network(s) 'lan', \
                 which share the untagged traffic of parent eth0"
            )),
            "{}",
            run.stderr
        );
    }
    assert_eq!(policy(&lab, "lan"), no_policy());
    assert_eq!(policy(&lab, "other"), no_policy());
    // Turning a setting off never reaches anyone.
    lab.netvlan(&["policy", "set", "other", "max_macs=off", "unknown_dst=pass"])
        .ok();
    lab.netvlan(&["network", "rm", "other"]).ok();
    lab.netvlan(&["network", "rm", "lan"]).ok();
}

#[test]
fn a_policy_key_given_twice_is_refused() {
    let lab = Lan::new(false);
    lab.create_network("n", "10.94.0.0/24", &["parent=eth0"])
        .ok();
    let run = lab
        .netvlan(&["policy", "set", "n", "unknown_dst=drop", "unknown_dst=pass"])
        .failed();
    assert!(
        run.stderr
            .contains("invalid option: 'unknown_dst' given twice"),
        "{}",
        run.stderr
    );
    assert_eq!(policy(&lab, "n"), no_policy());
    lab.netvlan(&["network", "rm", "n"]).ok();
}

/// An ARP request from `src` claiming `sender` (Ethernet/IPv4), broadcast.
fn arp_from(src: Mac, sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = FrameBuilder::new([0xff; 6], src)
        .ethertype(netvlan_tests::frame::ETH_P_ARP)
        .build(14);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    f
}

#[test]
fn a_full_mac_guard_never_locks_out_the_networks_gateway() {
    let lab = Lan::new(false);
    lab.create_network("lan", "10.95.0.0/24", &["parent=eth0", "max_macs=1"])
        .ok();
    let gateway = lab.inspect("lan")["IPAM"]["Config"][0]["Gateway"].clone();
    assert_eq!(gateway, "10.95.0.1", "the default gateway");
    let c = lab.container(false);
    let run = lab
        .netvlan(&["connect", "--json", "lan", c.name()])
        .ok()
        .json();
    let endpoint = netvlan_tests::frame::parse_mac(run["endpoint"]["mac"].as_str().unwrap());
    let listener = PacketSocket::listen(&c, "eth0");
    let switch = PacketSocket::open(&lab.switch, "peer0");
    let before = lab.stats_after(0)["frames"]["rx_packets"].as_u64().unwrap();

    // One host fills the guard's one slot; a second is refused.
    let (first, second, router) = (
        [0x02, 0, 0x5b, 0, 0, 1],
        [0x02, 0, 0x5b, 0, 0, 2],
        [0x02, 0, 0x5b, 0, 0, 0xfe],
    );
    switch.send(&FrameBuilder::new(endpoint, first).build(64));
    switch.send(&FrameBuilder::new(endpoint, second).build(64));
    // The gateway (a MAC nobody told netvlan), by ARP and by IPv4.
    switch.send(&arp_from(router, [10, 95, 0, 1], [10, 95, 0, 2]));
    switch.send(&netvlan_tests::frame::ipv4_frame(
        endpoint,
        router,
        [10, 95, 0, 1],
        [10, 95, 0, 2],
        64,
    ));
    // A stranger claiming some other address is still refused.
    switch.send(&netvlan_tests::frame::ipv4_frame(
        endpoint,
        [0x02, 0, 0x5b, 0, 0, 3],
        [10, 95, 0, 77],
        [10, 95, 0, 2],
        64,
    ));
    let stats = lab.stats_after(before + 5);
    assert_eq!(stats["drops"]["mac_limit"]["rx_packets"], 2, "{stats:#}");
    assert_eq!(
        stats["mac_guards"][0]["learned"], 1,
        "the gateway takes no slot: {stats:#}"
    );
    let from_router = wait_for(Duration::from_secs(5), {
        let mut seen = 0;
        move || {
            seen += listener
                .received()
                .iter()
                .filter(|f| f.len() >= 12 && f[6..12] == router)
                .count();
            (seen >= 2).then_some(seen)
        }
    });
    assert_eq!(
        from_router,
        Some(2),
        "the gateway's ARP and IPv4 reach the container with the guard full"
    );
    lab.netvlan(&["disconnect", "lan", c.name()]).ok();
    lab.netvlan(&["network", "rm", "lan"]).ok();
}

/// Networks on their own VLANs of one trunk: the VLAN-scoped settings are
/// each network's own; the deny list (one per parent) is refused.
#[test]
fn networks_on_their_own_vlans_keep_their_own_policy() {
    if !netvlan_tests::require_kernel_feature(netvlan_tests::KernelFeature::Vlan) {
        return;
    }
    let lab = Lan::new(false);
    lab.create_network("v10", "10.96.0.0/24", &["parent=eth0.10", "max_macs=1"])
        .ok();
    lab.create_network("v20", "10.97.0.0/24", &["parent=eth0.20"])
        .ok();
    lab.netvlan(&["policy", "set", "v20", "unknown_dst=drop", "max_macs=5"])
        .ok();
    assert_eq!(policy(&lab, "v10")["MaxMacs"], 1);
    assert_eq!(policy(&lab, "v10")["UnknownDst"], "pass");
    assert_eq!(policy(&lab, "v20")["MaxMacs"], 5);
    let guards = lab.stats_after(0)["mac_guards"].clone();
    let limit_of = |vid: u64| {
        guards
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["vlan"] == vid)
            .map(|g| g["limit"].clone())
    };
    assert_eq!(limit_of(10), Some(1.into()), "{guards:#}");
    assert_eq!(limit_of(20), Some(5.into()), "{guards:#}");
    let run = lab
        .netvlan(&["policy", "set", "v10", "mac_deny=02:00:00:00:00:66"])
        .failed();
    assert!(
        run.stderr
            .contains("would also apply to network(s) 'v20', which share parent eth0"),
        "{}",
        run.stderr
    );
    lab.netvlan(&["network", "rm", "v20"]).ok();
    lab.netvlan(&["network", "rm", "v10"]).ok();
}
