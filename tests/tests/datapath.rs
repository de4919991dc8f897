//! The XDP datapath on a real veth link: attach/detach lifecycle and exact
//! counters for crafted frames sent from a peer namespace.

use std::time::Duration;

use netvlan_tests::{
    frame::{FrameBuilder, Mac, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP},
    netvlan,
    packet::PacketSocket,
    veth_pair, wait_for, BpfDir, Netns,
};
use serde_json::Value;

const MAC_A: Mac = [0x02, 0x42, 0xac, 0x10, 0x56, 0x02];
const MAC_B: Mac = [0x02, 0x42, 0xac, 0x10, 0x56, 0x03];
const SENDER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x99];

/// A host namespace with `eth0` whose peer `peer0` lives in a sender
/// namespace, plus a private bpffs directory.
struct Lab {
    host: Netns,
    sender: Netns,
    bpf: BpfDir,
}

impl Lab {
    fn new() -> Self {
        let host = Netns::new("host");
        let sender = Netns::new("send");
        veth_pair(&host, "eth0", &sender, "peer0");
        Lab {
            host,
            sender,
            bpf: BpfDir::new(),
        }
    }

    fn netvlan(&self, args: &[&str]) -> netvlan_tests::Run {
        netvlan(&self.host, &self.bpf, args)
    }

    fn stats(&self) -> Value {
        let report = self
            .netvlan(&["stats", "--iface", "eth0", "--json"])
            .ok()
            .json();
        let ifaces = report["interfaces"].as_array().expect("interfaces array");
        assert_eq!(
            ifaces.len(),
            1,
            "one attached interface expected: {report:#}"
        );
        ifaces[0].clone()
    }

    /// Waits until the program has seen `frames` frames, then returns stats.
    fn stats_after(&self, frames: u64) -> Value {
        let mut last = Value::Null;
        wait_for(Duration::from_secs(5), || {
            last = self.stats();
            (last["frames"]["rx_packets"].as_u64() == Some(frames)).then(|| last.clone())
        })
        .unwrap_or_else(|| panic!("expected {frames} frames, stats are {last:#}"))
    }
}

fn counters(packets: u64, bytes: u64) -> Value {
    serde_json::json!({ "rx_packets": packets, "rx_bytes": bytes })
}

fn vlan_entry(stats: &Value, vlan: u64) -> Value {
    stats["vlans"]
        .as_array()
        .expect("vlans array")
        .iter()
        .find(|v| v["vlan"] == vlan)
        .cloned()
        .unwrap_or_else(|| panic!("no VLAN {vlan} in {:#}", stats["vlans"]))
}

/// A VLAN's frames, unregistered unicast and flood, as three counters.
fn vlan_counters(stats: &Value, vlan: u64) -> (Value, Value, Value) {
    let v = vlan_entry(stats, vlan);
    let frames = counters(
        v["rx_packets"].as_u64().unwrap(),
        v["rx_bytes"].as_u64().unwrap(),
    );
    (frames, v["unregistered"].clone(), v["flood"].clone())
}

fn counters_are_exact(mode: &str) {
    let lab = Lab::new();
    let attached = lab
        .netvlan(&["datapath", "attach", "eth0", "--mode", mode, "--json"])
        .ok()
        .json();
    assert_eq!(attached["attachment"]["mode"], mode, "{attached:#}");

    let socket = PacketSocket::open(&lab.sender, "peer0");
    // 7 untagged 64-byte frames to A.
    socket.send_many(&FrameBuilder::new(MAC_A, SENDER).build(64), 7);
    // 5 frames tagged VID 10, 70 bytes, to B.
    socket.send_many(
        &FrameBuilder::new(MAC_B, SENDER)
            .tag(ETH_P_8021Q, 10)
            .build(70),
        5,
    );
    // 3 QinQ frames, S-tag 100 and C-tag 20, 80 bytes, to A.
    let qinq = FrameBuilder::new(MAC_A, SENDER)
        .tag(ETH_P_8021AD, 100)
        .tag(ETH_P_8021Q, 20);
    socket.send_many(&qinq.build(80), 3);
    // 2 runts: 20-byte untagged IPv4 frames (also a cut-off IPv4 header), to B.
    socket.send_many(
        &FrameBuilder::new(MAC_B, SENDER)
            .ethertype(ETH_P_IP)
            .build(20),
        2,
    );
    // 1 frame whose tag is cut off after the TCI: 16 bytes, to A.
    socket.send(
        &FrameBuilder::new(MAC_A, SENDER)
            .tag(ETH_P_8021Q, 30)
            .build(16),
    );

    let stats = lab.stats_after(7 + 5 + 3 + 2 + 1);
    assert_eq!(stats["mode"], mode);
    assert_eq!(
        stats["frames"],
        counters(18, 7 * 64 + 5 * 70 + 3 * 80 + 2 * 20 + 16)
    );

    // The truncated-tag frame has no trustworthy VLAN or MAC: it does not
    // classify, so it is counted as malformed (and its anomaly) only.
    assert_eq!(stats["malformed"], counters(1, 16));
    assert_eq!(
        stats["vlans"].as_array().unwrap().len(),
        3,
        "{:#}",
        stats["vlans"]
    );
    // Nothing is registered on a wire without networks: every unicast
    // frame counts as unregistered on its outer VLAN, exactly.
    let untagged = counters(7 + 2, 7 * 64 + 2 * 20);
    assert_eq!(
        vlan_counters(&stats, 0),
        (untagged.clone(), untagged, counters(0, 0))
    );
    let tagged = counters(5, 5 * 70);
    assert_eq!(
        vlan_counters(&stats, 10),
        (tagged.clone(), tagged, counters(0, 0))
    );
    let qinq = counters(3, 3 * 80);
    assert_eq!(
        vlan_counters(&stats, 100),
        (qinq.clone(), qinq, counters(0, 0))
    );
    assert_eq!(stats["macs"], serde_json::json!([]), "nothing registered");

    let anomalies = &stats["anomalies"];
    assert_eq!(anomalies["runt"], counters(2, 40));
    assert_eq!(anomalies["malformed_l3"], counters(2, 40));
    assert_eq!(anomalies["truncated_tag"], counters(1, 16));
    assert_eq!(anomalies["short_header"], counters(0, 0));
    assert_eq!(anomalies["excess_tags"], counters(0, 0));
    assert!(
        stats.get("mac_table_full").is_none(),
        "no per-frame insert, no full table: {stats:#}"
    );

    lab.netvlan(&["datapath", "detach", "eth0"]).ok();
}

#[test]
fn counters_are_exact_in_native_mode() {
    counters_are_exact("native");
}

#[test]
fn counters_are_exact_in_generic_mode() {
    counters_are_exact("generic");
}

#[test]
fn the_datapath_keeps_counting_after_the_command_exits() {
    let lab = Lab::new();
    lab.netvlan(&["datapath", "attach", "eth0"]).ok();
    // Every netvlan invocation is a new process: the pins carry the state.
    let socket = PacketSocket::open(&lab.sender, "peer0");
    socket.send_many(&FrameBuilder::new(MAC_A, SENDER).build(60), 4);
    let first = lab.stats_after(4);
    socket.send_many(&FrameBuilder::new(MAC_A, SENDER).build(60), 3);
    let second = lab.stats_after(7);
    assert_eq!(vlan_entry(&first, 0)["unregistered"], counters(4, 240));
    assert_eq!(vlan_entry(&second, 0)["unregistered"], counters(7, 420));
    lab.netvlan(&["datapath", "detach", "eth0"]).ok();
}

#[test]
fn attaching_twice_is_a_no_op_with_one_program() {
    let lab = Lab::new();
    let first = lab
        .netvlan(&["datapath", "attach", "eth0", "--hook", "xdp", "--json"])
        .ok()
        .json();
    assert_eq!(first["changed"], true);
    let again = lab
        .netvlan(&["datapath", "attach", "eth0", "--hook", "xdp", "--json"])
        .ok()
        .json();
    assert_eq!(again["changed"], false, "{again:#}");
    assert_eq!(
        again["attachment"]["prog_id"],
        first["attachment"]["prog_id"]
    );

    // The kernel sees exactly the first program on the link.
    let link = lab.host.link_json("eth0");
    assert_eq!(
        link["xdp"]["prog"]["id"], first["attachment"]["prog_id"],
        "{link:#}"
    );

    // Asking for another mode than the running one is refused, not stacked.
    let other = if first["attachment"]["mode"] == "native" {
        "generic"
    } else {
        "native"
    };
    let refused = lab
        .netvlan(&["datapath", "attach", "eth0", "--mode", other])
        .failed();
    assert!(
        refused.stderr.contains("detach it first"),
        "{}",
        refused.stderr
    );

    let status = lab.netvlan(&["datapath", "status", "--json"]).ok().json();
    assert_eq!(
        status["attachments"].as_array().unwrap().len(),
        1,
        "{status:#}"
    );
    lab.netvlan(&["datapath", "detach", "eth0"]).ok();
}

#[test]
fn detach_removes_the_program_and_every_pin() {
    let lab = Lab::new();
    lab.netvlan(&["datapath", "attach", "eth0"]).ok();
    assert!(!lab.bpf.contents().is_empty(), "attach pins something");
    let detached = lab
        .netvlan(&["datapath", "detach", "eth0", "--json"])
        .ok()
        .json();
    assert_eq!(detached["detached"]["ifname"], "eth0");

    assert!(
        lab.host.link_json("eth0").get("xdp").is_none(),
        "XDP still on eth0"
    );
    assert_eq!(lab.bpf.contents(), Vec::<String>::new(), "pins left behind");
    let status = lab.netvlan(&["datapath", "status", "--json"]).ok().json();
    assert_eq!(status["attachments"], serde_json::json!([]));
}

#[test]
fn unknown_interface_is_a_clear_error_and_pins_nothing() {
    let lab = Lab::new();
    let run = lab.netvlan(&["datapath", "attach", "nosuch0"]).failed();
    assert!(
        run.stderr.contains("no interface named 'nosuch0'"),
        "{}",
        run.stderr
    );
    assert_eq!(lab.bpf.contents(), Vec::<String>::new());
    let run = lab.netvlan(&["stats", "--iface", "nosuch0"]).failed();
    assert!(
        run.stderr.contains("no interface named 'nosuch0'"),
        "{}",
        run.stderr
    );
}

#[test]
fn detach_when_not_attached_is_a_clear_error() {
    let lab = Lab::new();
    let run = lab.netvlan(&["datapath", "detach", "eth0"]).failed();
    assert!(
        run.stderr.contains("not attached to eth0"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_foreign_xdp_program_is_never_replaced() {
    let lab = Lab::new();
    // Another tool's program: netvlan's own object attached by hand with a
    // second bpf dir, so this netvlan instance does not know it.
    let other = BpfDir::new();
    let foreign = netvlan(
        &lab.host,
        &other,
        &["datapath", "attach", "eth0", "--hook", "xdp", "--json"],
    )
    .ok()
    .json();
    let run = lab.netvlan(&["datapath", "attach", "eth0"]).failed();
    assert!(run.stderr.contains("another XDP program"), "{}", run.stderr);
    let link = lab.host.link_json("eth0");
    assert_eq!(link["xdp"]["prog"]["id"], foreign["attachment"]["prog_id"]);
    netvlan(&lab.host, &other, &["datapath", "detach", "eth0"]).ok();
}

#[test]
fn pins_do_not_collide_between_namespaces_with_the_same_interface_name() {
    let one = Lab::new();
    let two = Lab::new();
    // Both labs share one bpffs directory, as two namespaces on one host do.
    let shared = &one.bpf;
    for lab in [&one, &two] {
        netvlan(&lab.host, shared, &["datapath", "attach", "eth0"]).ok();
    }
    PacketSocket::open(&one.sender, "peer0")
        .send_many(&FrameBuilder::new(MAC_A, SENDER).build(60), 2);
    PacketSocket::open(&two.sender, "peer0")
        .send_many(&FrameBuilder::new(MAC_B, SENDER).build(60), 5);

    let read = |lab: &Lab, frames: u64| {
        wait_for(Duration::from_secs(5), || {
            let report = netvlan(&lab.host, shared, &["stats", "--json"]).ok().json();
            let iface = report["interfaces"][0].clone();
            (iface["frames"]["rx_packets"] == frames).then_some(iface)
        })
        .unwrap_or_else(|| panic!("{} never saw {frames} frames", lab.host.name()))
    };
    let s1 = read(&one, 2);
    let s2 = read(&two, 5);
    // Each namespace's frames in its own wire's counters only.
    assert_eq!(vlan_entry(&s1, 0)["unregistered"], counters(2, 120));
    assert_eq!(vlan_entry(&s2, 0)["unregistered"], counters(5, 300));
    assert_ne!(s1["prog_id"], s2["prog_id"]);
    for lab in [&one, &two] {
        netvlan(&lab.host, shared, &["datapath", "detach", "eth0"]).ok();
    }
}

#[test]
fn a_deleted_interface_shows_as_stale_and_prune_clears_it() {
    let lab = Lab::new();
    lab.host.exec(
        "ip",
        &[
            "link", "add", "extra0", "type", "veth", "peer", "name", "extra1",
        ],
    );
    lab.netvlan(&["datapath", "attach", "extra0"]).ok();
    lab.host.exec("ip", &["link", "del", "extra0"]);

    let status = lab.netvlan(&["datapath", "status", "--json"]).ok().json();
    assert_eq!(status["attachments"][0]["state"], "stale", "{status:#}");
    let pruned = lab.netvlan(&["datapath", "prune", "--json"]).ok().json();
    assert_eq!(pruned["removed"].as_array().unwrap().len(), 1, "{pruned:#}");
    assert_eq!(lab.bpf.contents(), Vec::<String>::new());
}

#[test]
fn an_upgrade_keeps_the_counters_and_adds_the_maps_an_older_build_lacked() {
    let lab = Lab::new();
    lab.netvlan(&["datapath", "attach", "eth0", "--hook", "xdp"])
        .ok();
    let socket = PacketSocket::open(&lab.sender, "peer0");
    socket.send_many(&FrameBuilder::new(MAC_A, SENDER).build(60), 4);
    lab.stats_after(4);

    let same = lab.netvlan(&["datapath", "upgrade", "--json"]).ok().json();
    assert_eq!(same["upgrades"][0]["outcome"], "current", "{same:#}");

    // An attachment made by a build without the MAC-sprawl guard: its maps
    // are not pinned.
    let guard_pins: Vec<String> = lab
        .bpf
        .contents()
        .into_iter()
        .filter(|p| p.ends_with("/MAC_LEARN") || p.ends_with("/MAC_GUARD"))
        .collect();
    assert_eq!(guard_pins.len(), 2, "{:?}", lab.bpf.contents());
    for pin in &guard_pins {
        std::fs::remove_file(lab.bpf.path().join(pin)).expect("unpinning");
    }
    let before = lab.host.link_json("eth0")["xdp"]["prog"]["id"].clone();
    let up = lab.netvlan(&["datapath", "upgrade", "--json"]).ok().json();
    let outcome = &up["upgrades"][0];
    assert_eq!(outcome["outcome"], "replaced", "{up:#}");
    assert_eq!(
        outcome["new_maps"],
        serde_json::json!(["MAC_LEARN", "MAC_GUARD"])
    );
    assert_eq!(outcome["old_prog_id"], before);
    assert_ne!(
        lab.host.link_json("eth0")["xdp"]["prog"]["id"],
        before,
        "the link runs the new program"
    );
    for pin in &guard_pins {
        assert!(lab.bpf.path().join(pin).exists(), "{pin} is pinned again");
    }

    // Same counters, still counting.
    socket.send_many(&FrameBuilder::new(MAC_A, SENDER).build(60), 3);
    let stats = lab.stats_after(7);
    assert_eq!(vlan_entry(&stats, 0)["unregistered"], counters(7, 420));
    lab.netvlan(&["datapath", "detach", "eth0"]).ok();
    assert_eq!(
        lab.bpf.contents(),
        Vec::<String>::new(),
        "nothing left pinned"
    );
}
