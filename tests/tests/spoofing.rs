//! Anti-spoofing on endpoint egress: a container sends only as itself.
//! Frames are crafted inside the container (AF_PACKET on its eth0) and
//! looked for on the LAN side (a packet socket on the switch's port).

use std::time::Duration;

use netvlan_tests::{
    frame::{FrameBuilder, Mac, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP},
    packet::PacketSocket,
    wait_for, Lan, Netns,
};
use serde_json::Value;

const BROADCAST: Mac = [0xff; 6];
const FOREIGN_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x99];

/// What these tests add to the usual lab.
trait SpoofLab {
    fn endpoint_stats(&self, sandbox: &str) -> Value;
}

impl SpoofLab for Lan {
    fn endpoint_stats(&self, sandbox: &str) -> Value {
        let stats = self.netvlan(&["stats", "--json"]).ok().json();
        stats["endpoints"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["endpoint"] == sandbox).cloned())
            .unwrap_or_else(|| panic!("no egress stats for {sandbox}: {stats:#}"))
    }
}

/// An IPv4 frame (UDP-ish payload) from `src_mac`/`src_ip`.
fn ipv4_frame(src_mac: Mac, src_ip: [u8; 4]) -> Vec<u8> {
    let mut f = FrameBuilder::new(BROADCAST, src_mac)
        .ethertype(ETH_P_IP)
        .build(14);
    let mut ip = [0u8; 28];
    ip[0] = 0x45;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src_ip);
    ip[16..20].copy_from_slice(&[10, 60, 0, 255]);
    f.extend_from_slice(&ip);
    f.resize(64, 0);
    f
}

/// An ARP request from `sender_mac`/`sender_ip` (Ethernet source `src`).
fn arp_frame(src: Mac, sender_mac: Mac, sender_ip: [u8; 4]) -> Vec<u8> {
    let mut f = FrameBuilder::new(BROADCAST, src)
        .ethertype(ETH_P_ARP)
        .build(14);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&sender_ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 60, 0, 254]);
    f.resize(64, 0);
    f
}

#[test]
fn a_container_can_only_send_as_itself() {
    let lab = Lan::new(false);
    lab.switch
        .exec("ip", &["addr", "add", "10.60.0.254/24", "dev", "peer0"]);
    lab.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.60.0.0/24",
        "-o",
        "parent=eth0",
        "guarded",
    ])
    .ok();
    let c = Netns::new("sctr");
    lab.netvlan(&["connect", "guarded", c.name()]).ok();
    let me = c.mac("eth0");
    let my_ip = [10, 60, 0, 2];
    let wire = PacketSocket::listen(&lab.switch, "peer0");
    let out = PacketSocket::open(&c, "eth0");

    let legit = [
        ipv4_frame(me, my_ip),
        arp_frame(me, me, my_ip),
        arp_frame(me, me, [0; 4]),
    ];
    let spoofed = [
        ipv4_frame(FOREIGN_MAC, my_ip),      // foreign MAC
        ipv4_frame(me, [10, 60, 0, 77]),     // foreign IPv4
        arp_frame(me, me, [10, 60, 0, 254]), // ARP poisoning: claims the gateway
        arp_frame(me, FOREIGN_MAC, my_ip),   // ARP sender MAC lies
        FrameBuilder::new(BROADCAST, me)
            .tag(ETH_P_8021Q, 20)
            .build(64), // VLAN hop
    ];
    for f in &legit {
        out.send(f);
    }
    for f in &spoofed {
        out.send_maybe_dropped(f);
    }
    let seen = wait_for(Duration::from_secs(3), || {
        let frames: Vec<Vec<u8>> = wire
            .received()
            .into_iter()
            .filter(|f| f.len() >= 64)
            .collect();
        (frames.len() >= legit.len()).then_some(frames)
    })
    .expect("the legitimate frames never reached the LAN");
    std::thread::sleep(Duration::from_millis(200));
    let late: Vec<Vec<u8>> = wire
        .received()
        .into_iter()
        .filter(|f| f.len() >= 64)
        .collect();
    let all: Vec<Vec<u8>> = seen.into_iter().chain(late).collect();
    for f in &spoofed {
        assert!(
            !all.contains(f),
            "a spoofed frame reached the LAN: {f:02x?}"
        );
    }
    for f in &legit {
        assert!(all.contains(f), "a legitimate frame was lost: {f:02x?}");
    }
    let stats = lab.endpoint_stats(c.name());
    assert_eq!(stats["spoofed_packets"], spoofed.len() as u64, "{stats:#}");

    // Its ordinary traffic still flows, and a MAC change is caught.
    assert!(c.can_ping("10.60.0.254"), "legitimate traffic must flow");
    c.exec(
        "ip",
        &["link", "set", "eth0", "address", "02:00:00:00:00:55"],
    );
    assert!(
        !c.can_ping("10.60.0.254"),
        "a container that changed its MAC must be cut off"
    );
    let after = lab.endpoint_stats(c.name());
    assert!(
        after["spoofed_packets"].as_u64() > stats["spoofed_packets"].as_u64(),
        "{after:#}"
    );

    lab.netvlan(&["disconnect", "guarded", c.name()]).ok();
    lab.netvlan(&["network", "rm", "guarded"]).ok();
    assert_eq!(
        lab.bpf.contents(),
        Vec::<String>::new(),
        "egress pins left behind"
    );
}

#[test]
fn spoofcheck_off_lets_a_container_send_anything() {
    let lab = Lan::new(false);
    lab.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.61.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "spoofcheck=off",
        "open",
    ])
    .ok();
    let c = Netns::new("sctr");
    lab.netvlan(&["connect", "open", c.name()]).ok();
    let wire = PacketSocket::listen(&lab.switch, "peer0");
    let spoofed = ipv4_frame(FOREIGN_MAC, [10, 61, 0, 77]);
    PacketSocket::open(&c, "eth0").send(&spoofed);
    let arrived = wait_for(Duration::from_secs(3), || {
        wire.received().contains(&spoofed).then_some(())
    });
    assert!(
        arrived.is_some(),
        "with spoofcheck=off the frame should pass"
    );
    let stats = lab.endpoint_stats(c.name());
    assert_eq!(
        stats["spoofed_packets"], 0,
        "nothing is dropped without spoofcheck, but it is counted: {stats:#}"
    );
    assert!(stats["tx_packets"].as_u64() >= Some(1), "{stats:#}");
    lab.netvlan(&["disconnect", "open", c.name()]).ok();
    lab.netvlan(&["network", "rm", "open"]).ok();
}
