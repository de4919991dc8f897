//! Per-endpoint rx/tx counters cover every path: from the LAN, to it, and
//! between two endpoints on the same parent, which macvlan (bridge mode)
//! switches inside the kernel without the parent ever seeing the frame.
//! ipvlan endpoints share the parent's MAC and are told apart by their
//! own links, so each IP has its own counters.

use std::time::Duration;

use netvlan_tests::{
    frame::{ipv4_frame, FrameBuilder, Mac},
    packet::PacketSocket,
    require_kernel_feature, wait_for, KernelFeature, Lan, Netns,
};
use serde_json::Value;

const SENDER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x11];

/// (rx packets, rx bytes, tx packets, tx bytes) of one endpoint.
fn counters_of(lab: &Lan, sandbox: &str) -> [u64; 4] {
    let stats = lab.netvlan(&["stats", "--json"]).ok().json();
    let e = stats["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["endpoint"] == sandbox).cloned())
        .unwrap_or_else(|| panic!("no endpoint stats for {sandbox}: {stats:#}"));
    ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"].map(|k| e[k].as_u64().unwrap())
}

fn delta(after: [u64; 4], before: [u64; 4]) -> [u64; 4] {
    [0, 1, 2, 3].map(|i| after[i] - before[i])
}

/// Waits until `socket` has received `n` frames from `src`.
fn wait_arrivals(socket: &PacketSocket, src: Mac, n: usize) {
    let mut got = 0;
    let done = wait_for(Duration::from_secs(3), || {
        got += socket
            .received()
            .iter()
            .filter(|f| f.len() >= 12 && f[6..12] == src)
            .count();
        (got >= n).then_some(())
    });
    assert!(done.is_some(), "only {got} of {n} frames arrived");
}

/// Connects two containers to `network` and returns them with a quiet
/// baseline (their link-up announcements are over).
fn two_endpoints(lab: &Lan, network: &str) -> (Netns, Netns) {
    let (a, b) = (Netns::new("ectr"), Netns::new("ectr"));
    lab.netvlan(&["connect", network, a.name()]).ok();
    lab.netvlan(&["connect", network, b.name()]).ok();
    std::thread::sleep(Duration::from_millis(300));
    (a, b)
}

#[test]
fn macvlan_endpoint_counters_cover_the_lan_and_the_bridge_between_endpoints() {
    let lab = Lan::new(false);
    lab.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.62.0.0/24",
        "-o",
        "parent=eth0",
        // At XDP: at TC ingress the parent also sees endpoint-to-endpoint
        // unicast (macvlan's bridge mode hands it to the parent's receive
        // path first, dev_forward_skb), which native XDP never does.
        "-o",
        "hook=xdp",
        "pair",
    ])
    .ok();
    let (a, b) = two_endpoints(&lab, "pair");
    let (mac_a, mac_b) = (a.mac("eth0"), b.mac("eth0"));
    let (a0, b0) = (counters_of(&lab, a.name()), counters_of(&lab, b.name()));
    let b_listens = PacketSocket::listen(&b, "eth0");
    let lan_listens = PacketSocket::listen(&lab.switch, "peer0");

    // LAN -> b: 5 frames of 64 bytes.
    PacketSocket::open(&lab.switch, "peer0")
        .send_many(&FrameBuilder::new(mac_b, SENDER).build(64), 5);
    wait_arrivals(&b_listens, SENDER, 5);
    // a -> b on the same parent: 7 frames of 80 bytes, switched by macvlan.
    PacketSocket::open(&a, "eth0").send_many(&FrameBuilder::new(mac_b, mac_a).build(80), 7);
    wait_arrivals(&b_listens, mac_a, 7);
    // b -> LAN: 3 frames of 100 bytes.
    PacketSocket::open(&b, "eth0").send_many(&FrameBuilder::new(SENDER, mac_b).build(100), 3);
    wait_arrivals(&lan_listens, mac_b, 3);

    let (da, db) = (
        delta(counters_of(&lab, a.name()), a0),
        delta(counters_of(&lab, b.name()), b0),
    );
    assert_eq!(
        da,
        [0, 0, 7, 7 * 80],
        "a sent 7 frames to b, received nothing"
    );
    assert_eq!(
        db,
        [5 + 7, 5 * 64 + 7 * 80, 3, 3 * 100],
        "b received from the LAN and from a, and sent to the LAN"
    );
    // The parent's XDP program saw only the LAN's frames to b: the
    // endpoint-to-endpoint ones never touched the parent.
    let wire = lab
        .netvlan(&["stats", "--iface", "eth0", "--json"])
        .ok()
        .json();
    let b_on_wire: Value = wire["interfaces"][0]["macs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mac"] == netvlan_tests::frame::mac_string(&mac_b))
        .cloned()
        .unwrap_or_else(|| panic!("b's MAC is not counted on the wire: {wire:#}"));
    assert_eq!(b_on_wire["rx_packets"], 5, "{b_on_wire:#}");

    for c in [&a, &b] {
        lab.netvlan(&["disconnect", "pair", c.name()]).ok();
    }
    lab.netvlan(&["network", "rm", "pair"]).ok();
}

#[test]
fn ipvlan_endpoints_are_counted_each_by_its_own_ip() {
    if !require_kernel_feature(KernelFeature::Ipvlan) {
        return;
    }
    let lab = Lan::new(false);
    lab.netvlan(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet",
        "10.63.0.0/24",
        "-o",
        "parent=eth0",
        "shared",
    ])
    .ok();
    let (a, b) = two_endpoints(&lab, "shared");
    let ip_of = |c: &Netns| {
        lab.inspect("shared")["Containers"]
            .as_object()
            .unwrap()
            .values()
            .find(|e| e["Name"] == c.name())
            .map(|e| e["IPv4Address"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_ne!(ip_of(&a), ip_of(&b));
    let parent_mac = a.mac("eth0");
    assert_eq!(
        parent_mac,
        b.mac("eth0"),
        "ipvlan endpoints share the parent's MAC"
    );
    let (a0, b0) = (counters_of(&lab, a.name()), counters_of(&lab, b.name()));

    // IPv4 to b's address (ipvlan delivers by destination IP).
    let b_ip: std::net::Ipv4Addr = ip_of(&b).split('/').next().unwrap().parse().unwrap();
    let frame = ipv4_frame(parent_mac, SENDER, [10, 63, 0, 200], b_ip.octets(), 64);
    let b_listens = PacketSocket::listen(&b, "eth0");
    PacketSocket::open(&lab.switch, "peer0").send_many(&frame, 4);
    wait_arrivals(&b_listens, SENDER, 4);

    let (da, db) = (
        delta(counters_of(&lab, a.name()), a0),
        delta(counters_of(&lab, b.name()), b0),
    );
    let stats = lab.netvlan(&["stats", "--json"]).ok().json();
    let b_entry = stats["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["endpoint"] == b.name()).cloned())
        .unwrap();
    assert_eq!(
        b_entry["addresses"],
        serde_json::json!([b_ip.to_string()]),
        "ipvlan endpoints are shown by their address: {b_entry:#}"
    );
    assert_eq!(da[0], 0, "a's IP got none of b's frames");
    assert_eq!(db[0], 4, "b's IP got its 4 frames");
    for c in [&a, &b] {
        lab.netvlan(&["disconnect", "shared", c.name()]).ok();
    }
    lab.netvlan(&["network", "rm", "shared"]).ok();
}
