//! The wire program at TC ingress (`-o hook=tc`, `--hook tc`, and `auto`
//! on a veth parent): TCX on 6.6+ (the host lane), a clsact filter before
//! (the VM lane's 6.1). Counting, dropping, the offloaded outer VLAN tag,
//! detach, restore, upgrade, and the errors of a bad or conflicting hook.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::Duration,
};

use netvlan_tests::{
    frame::{mac_string, parse_mac, FrameBuilder, Mac, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP},
    kernel_at_least,
    packet::PacketSocket,
    wait_for, Lan, Netns,
};
use serde_json::Value;

const MAC_A: Mac = [0x02, 0x42, 0xac, 0x10, 0x56, 0x02];
const MAC_B: Mac = [0x02, 0x42, 0xac, 0x10, 0x56, 0x03];
const SENDER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x99];
const STRANGER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x77];

/// How TC attaches on this kernel: TCX from 6.6, clsact before.
fn expected_tc_mode() -> &'static str {
    if kernel_at_least(6, 6) {
        "tcx"
    } else {
        "clsact"
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
        .map(|v| {
            counters(
                v["rx_packets"].as_u64().unwrap(),
                v["rx_bytes"].as_u64().unwrap(),
            )
        })
        .unwrap_or_else(|| panic!("no VLAN {vlan} in {:#}", stats["vlans"]))
}

/// Stats of eth0 once exactly `frames` frames were counted.
fn stats_at(lab: &Lan, frames: u64) -> Value {
    let mut last = Value::Null;
    wait_for(Duration::from_secs(5), || {
        last = lab
            .netvlan(&["stats", "--iface", "eth0", "--json"])
            .ok()
            .json()["interfaces"][0]
            .clone();
        (last["frames"]["rx_packets"].as_u64() == Some(frames)).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("expected {frames} frames, stats are {last:#}"))
}

/// The one attachment `datapath status --json` lists.
fn the_attachment(lab: &Lan) -> Value {
    let status = lab.netvlan(&["datapath", "status", "--json"]).ok().json();
    let list = status["attachments"].as_array().expect("attachments");
    assert_eq!(list.len(), 1, "{status:#}");
    list[0].clone()
}

/// Ids of the BPF programs the kernel has loaded.
fn loaded_program_ids() -> Vec<u64> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("bpftool prints JSON");
    list.as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// `tc -j filter show dev DEV ingress` inside `ns`: the filters there.
fn ingress_filters(ns: &Netns, dev: &str) -> Vec<Value> {
    let out = ns
        .command("tc")
        .args(["-j", "filter", "show", "dev", dev, "ingress"])
        .output();
    let out = out.expect("tc runs");
    // No clsact qdisc at all: nothing there.
    if !out.status.success() || out.stdout.is_empty() {
        return Vec::new();
    }
    // `tc -j` lists each priority's chain head apart from its filters.
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.get("options").is_some())
        .collect()
}

/// Crafted frames from the peer, counted exactly at TC ingress, with the
/// receiving link's VLAN offload `rxvlan` on or off: the kernel takes the
/// outer tag out of the bytes either way before TC runs, and the program
/// counts it as the outer tag, with the 4 bytes it took on the wire.
fn crafted_frames_are_counted_exactly_at_tc(rxvlan: &str) {
    let lab = Lan::new(false);
    lab.host.exec("ethtool", &["-K", "eth0", "rxvlan", rxvlan]);
    let attached = lab
        .netvlan(&["datapath", "attach", "eth0", "--json"])
        .ok()
        .json();
    // auto on a veth: TC, not native XDP (which turns its offloads off).
    assert_eq!(attached["attachment"]["hook"], "tc", "{attached:#}");
    assert_eq!(attached["attachment"]["mode"], expected_tc_mode());
    assert!(
        lab.host.link_json("eth0")["xdp"].is_null(),
        "no XDP program on eth0"
    );

    let socket = PacketSocket::open(&lab.switch, "peer0");
    socket.send_many(&FrameBuilder::new(MAC_A, SENDER).build(64), 7);
    socket.send_many(
        &FrameBuilder::new(MAC_B, SENDER)
            .tag(ETH_P_8021Q, 10)
            .build(70),
        5,
    );
    let qinq = FrameBuilder::new(MAC_A, SENDER)
        .tag(ETH_P_8021AD, 100)
        .tag(ETH_P_8021Q, 20);
    socket.send_many(&qinq.build(80), 3);
    // Runts: 20-byte untagged IPv4 frames (a cut-off IPv4 header too).
    socket.send_many(
        &FrameBuilder::new(MAC_B, SENDER)
            .ethertype(ETH_P_IP)
            .build(20),
        2,
    );
    // A tagged runt whose IPv4 header is cut off: 30 bytes on the wire.
    socket.send_many(
        &FrameBuilder::new(MAC_A, SENDER)
            .tag(ETH_P_8021Q, 10)
            .ethertype(ETH_P_IP)
            .build(30),
        4,
    );

    let stats = stats_at(&lab, 7 + 5 + 3 + 2 + 4);
    assert_eq!(stats["mode"], expected_tc_mode());
    assert_eq!(
        stats["frames"],
        counters(21, 7 * 64 + 5 * 70 + 3 * 80 + 2 * 20 + 4 * 30),
        "{stats:#}"
    );
    assert_eq!(
        stats["vlans"].as_array().unwrap().len(),
        3,
        "{:#}",
        stats["vlans"]
    );
    assert_eq!(vlan_entry(&stats, 0), counters(7 + 2, 7 * 64 + 2 * 20));
    assert_eq!(vlan_entry(&stats, 10), counters(5 + 4, 5 * 70 + 4 * 30));
    assert_eq!(vlan_entry(&stats, 100), counters(3, 3 * 80));
    let anomalies = &stats["anomalies"];
    assert_eq!(
        anomalies["runt"],
        counters(6, 2 * 20 + 4 * 30),
        "{anomalies:#}"
    );
    assert_eq!(anomalies["malformed_l3"], counters(6, 2 * 20 + 4 * 30));
    assert_eq!(anomalies["excess_tags"], counters(0, 0));
    lab.netvlan(&["datapath", "detach", "eth0"]).ok();
}

#[test]
fn tc_hook_crafted_frames_are_counted_exactly_at_tc_with_vlan_offload_off() {
    crafted_frames_are_counted_exactly_at_tc("off");
}

#[test]
fn tc_hook_crafted_frames_are_counted_exactly_at_tc_with_vlan_offload_on() {
    crafted_frames_are_counted_exactly_at_tc("on");
}

/// The `Tcp:` counter `name` of `ns` (/proc/net/snmp is per namespace).
fn tcp_counter(ns: &Netns, name: &str) -> u64 {
    let out = ns.exec("cat", &["/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let at = names.split_whitespace().position(|n| n == name).unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// A lab where the switch side (10.77.0.2 on peer0) talks TCP to the host
/// side (10.77.0.1 on eth0), neighbours fixed so no ARP crosses the wire.
fn tcp_lab() -> Lan {
    let lab = Lan::new(false);
    lab.host
        .exec("ip", &["addr", "add", "10.77.0.1/24", "dev", "eth0"]);
    lab.switch
        .exec("ip", &["addr", "add", "10.77.0.2/24", "dev", "peer0"]);
    let (host_mac, peer_mac) = (
        mac_string(&lab.host.mac("eth0")),
        mac_string(&lab.switch.mac("peer0")),
    );
    lab.host.exec(
        "ip",
        &[
            "neigh",
            "replace",
            "10.77.0.2",
            "lladdr",
            &peer_mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    );
    lab.switch.exec(
        "ip",
        &[
            "neigh",
            "replace",
            "10.77.0.1",
            "lladdr",
            &host_mac,
            "dev",
            "peer0",
            "nud",
            "permanent",
        ],
    );
    lab
}

/// Sends `bytes` over one TCP connection from the switch to the host.
fn tcp_transfer(lab: &Lan, bytes: usize) {
    let listener = lab
        .host
        .in_thread(|| Ok(TcpListener::bind("10.77.0.1:5201")?))
        .expect("listen on the host side");
    let server = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut conn, _) = listener.accept()?;
        let mut got = 0;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match conn.read(&mut buf)? {
                0 => return Ok(got),
                n => got += n,
            }
        }
    });
    lab.switch
        .in_thread(|| {
            let mut conn =
                TcpStream::connect_timeout(&"10.77.0.1:5201".parse()?, Duration::from_secs(5))?;
            let chunk = vec![0x5au8; 1 << 16];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                conn.write_all(&chunk[..n])?;
                left -= n;
            }
            conn.shutdown(std::net::Shutdown::Write)?;
            // Wait for the host's FIN, so every segment of ours is out.
            let mut rest = Vec::new();
            conn.read_to_end(&mut rest)?;
            Ok(())
        })
        .expect("the transfer");
    assert_eq!(server.join().unwrap().expect("the server side"), bytes);
}

/// With the peer's segmentation offloads off every segment is one frame
/// and one skb: the TC program counts exactly the segments the host's TCP
/// received (the receiver's count: a frame the veth's backlog drops under
/// load never reaches TC nor TCP, yet the sender counted it as sent).
#[test]
fn tc_hook_a_tcp_transfer_at_tc_is_counted_segment_for_segment_with_gso_off() {
    let lab = tcp_lab();
    lab.switch
        .exec("ethtool", &["-K", "peer0", "tso", "off", "gso", "off"]);
    lab.host.exec("ethtool", &["-K", "eth0", "gro", "off"]);
    lab.netvlan(&["datapath", "attach", "eth0", "--hook", "tc"])
        .ok();
    let (sent_before, received_before) = (
        tcp_counter(&lab.switch, "OutSegs"),
        tcp_counter(&lab.host, "InSegs"),
    );
    tcp_transfer(&lab, 4 << 20);
    let sent = tcp_counter(&lab.switch, "OutSegs") - sent_before;
    assert!(sent > (4 << 20) / 1500, "{sent} segments for 4 MiB");
    // The last ACK may still be on its way: until both agree.
    let mut last = (0, Value::Null);
    let agreed = wait_for(Duration::from_secs(5), || {
        let received = tcp_counter(&lab.host, "InSegs") - received_before;
        let stats = lab
            .netvlan(&["stats", "--iface", "eth0", "--json"])
            .ok()
            .json()["interfaces"][0]
            .clone();
        let counted = vlan_entry(&stats, 0)["rx_packets"].as_u64().unwrap();
        last = (received, stats["frames"].clone());
        (counted == received && stats["frames"]["rx_packets"] == received).then_some(counted)
    });
    assert!(
        agreed.is_some(),
        "TCP received {} segments ({sent} sent), the program counted {:#}",
        last.0,
        last.1
    );
    lab.netvlan(&["datapath", "detach", "eth0"]).ok();
}

/// hook=tc enforces policy like XDP: unknown destinations and VLANs off the
/// allow-list are dropped (the allow-list read from the offloaded tag),
/// the endpoint gets the rest; `inspect` and `status` name the hook; after
/// a detach behind the network's back, `restore` attaches at TC again.
#[test]
fn tc_hook_a_network_with_hook_tc_drops_what_its_policy_refuses() {
    let lab = Lan::new(false);
    lab.create_network(
        "tcnet",
        "10.78.0.0/24",
        &["parent=eth0", "hook=tc", "unknown_dst=drop", "vlans=10"],
    )
    .ok();
    assert_eq!(lab.inspect("tcnet")["Netvlan"]["Hook"], "tc");
    let attachment = the_attachment(&lab);
    assert_eq!(
        (attachment["hook"].as_str(), attachment["mode"].as_str()),
        (Some("tc"), Some(expected_tc_mode()))
    );
    let text = lab.netvlan(&["datapath", "status"]).ok().stdout;
    assert!(
        text.contains(&format!(" tc   {}", expected_tc_mode())),
        "{text}"
    );

    let c = Netns::new("tctr");
    let run = lab
        .netvlan(&["connect", "--json", "tcnet", c.name()])
        .ok()
        .json();
    let mac = parse_mac(run["endpoint"]["mac"].as_str().unwrap());
    let listener = PacketSocket::listen(&c, "eth0");
    let before = lab.stats_after(0)["frames"]["rx_packets"].as_u64().unwrap();

    let socket = PacketSocket::open(&lab.switch, "peer0");
    socket.send_many(&FrameBuilder::new(mac, SENDER).build(64), 5);
    socket.send_many(&FrameBuilder::new(STRANGER, SENDER).build(64), 7);
    socket.send_many(
        &FrameBuilder::new(mac, SENDER)
            .tag(ETH_P_8021Q, 20)
            .build(64),
        3,
    );
    let stats = stats_at(&lab, before + 15);
    assert_eq!(
        stats["drops"]["unknown_dst"],
        counters(7, 7 * 64),
        "{stats:#}"
    );
    assert_eq!(
        stats["drops"]["vlan_not_allowed"],
        counters(3, 3 * 64),
        "{stats:#}"
    );
    let arrived = wait_for(Duration::from_secs(3), || {
        let n = listener
            .received()
            .iter()
            .filter(|f| f.len() >= 14 && f[6..12] == SENDER)
            .count();
        (n >= 5).then_some(n)
    });
    assert_eq!(
        arrived,
        Some(5),
        "the endpoint gets its 5 untagged frames only"
    );

    // Detached behind the network's back: restore puts it back at TC.
    lab.netvlan(&["datapath", "detach", "eth0", "--force"]).ok();
    lab.netvlan(&["restore"]).ok();
    let attachment = the_attachment(&lab);
    assert_eq!(attachment["hook"], "tc", "{attachment:#}");

    lab.netvlan(&["disconnect", "tcnet", c.name()]).ok();
    lab.netvlan(&["network", "rm", "tcnet"]).ok();
    assert!(lab.bpf.contents().is_empty(), "{:?}", lab.bpf.contents());
}

/// Detach leaves nothing of the TC attachment: no pins, no filter, no
/// link, and the kernel has unloaded the program.
#[test]
fn tc_hook_detaching_the_tc_hook_leaves_no_filter_link_or_pin() {
    let lab = Lan::new(false);
    let attached = lab
        .netvlan(&["datapath", "attach", "eth0", "--hook", "tc", "--json"])
        .ok()
        .json();
    let prog_id = attached["attachment"]["prog_id"].as_u64().unwrap();
    assert!(loaded_program_ids().contains(&prog_id));
    if expected_tc_mode() == "clsact" {
        assert_eq!(
            ingress_filters(&lab.host, "eth0").len(),
            1,
            "netvlan's one filter"
        );
    }
    // Attaching again at the same hook is a no-op; at XDP it is refused.
    let again = lab
        .netvlan(&["datapath", "attach", "eth0", "--hook", "tc", "--json"])
        .ok()
        .json();
    assert_eq!(again["changed"], false);
    let refused = lab
        .netvlan(&["datapath", "attach", "eth0", "--hook", "xdp"])
        .failed();
    assert!(
        refused
            .stderr
            .contains("already runs netvlan's wire program at the tc hook")
            && refused.stderr.contains("hook=xdp"),
        "{}",
        refused.stderr
    );

    let detached = lab
        .netvlan(&["datapath", "detach", "eth0", "--json"])
        .ok()
        .json();
    assert_eq!(detached["detached"]["hook"], "tc");
    assert!(lab.bpf.contents().is_empty(), "{:?}", lab.bpf.contents());
    assert!(ingress_filters(&lab.host, "eth0").is_empty());
    let gone = wait_for(Duration::from_secs(5), || {
        (!loaded_program_ids().contains(&prog_id)).then_some(())
    });
    assert!(
        gone.is_some(),
        "program {prog_id} still loaded after detach"
    );
    let status = lab.netvlan(&["datapath", "status", "--json"]).ok().json();
    assert_eq!(status["attachments"], serde_json::json!([]));
}

/// A bad `hook=` names the value and the choices, and a hook that
/// conflicts with another network of the parent names both; neither
/// leaves a link, pin or network behind.
#[test]
fn tc_hook_bad_and_conflicting_hooks_are_refused_leaving_nothing_behind() {
    let lab = Lan::new(false);
    let links = lab.host.sorted_link_names();
    let bad = lab
        .create_network("badhook", "10.79.0.0/24", &["parent=eth0", "hook=ebpf"])
        .failed();
    assert!(
        bad.stderr
            .contains("hook=ebpf: expected one of auto, xdp, tc"),
        "{}",
        bad.stderr
    );
    assert_eq!(lab.host.sorted_link_names(), links);
    assert!(lab.bpf.contents().is_empty(), "{:?}", lab.bpf.contents());
    let cli = lab
        .netvlan(&["datapath", "attach", "eth0", "--hook", "ebpf"])
        .failed();
    assert!(
        cli.stderr.contains("ebpf") && cli.stderr.contains("auto, xdp, tc"),
        "{}",
        cli.stderr
    );
    assert!(lab.bpf.contents().is_empty());

    lab.create_network("first", "10.79.0.0/24", &["parent=eth0", "hook=xdp"])
        .ok();
    let attachment = the_attachment(&lab);
    assert_eq!(
        attachment["hook"], "xdp",
        "explicit xdp on a veth: {attachment:#}"
    );
    let pins = lab.bpf.contents();
    let conflict = lab
        .create_network("second", "10.80.0.0/24", &["parent=eth0", "hook=tc"])
        .failed();
    assert!(
        conflict
            .stderr
            .contains("hook=tc conflicts with network 'first' on eth0, which has hook=xdp"),
        "{}",
        conflict.stderr
    );
    assert_eq!(lab.bpf.contents(), pins);
    assert_eq!(lab.host.sorted_link_names(), links);
    let networks = lab.netvlan(&["network", "ls"]).ok().stdout;
    assert!(!networks.contains("second"), "{networks}");
    // An auto network joins the wire's hook.
    lab.create_network("third", "10.81.0.0/24", &["parent=eth0"])
        .ok();
    assert_eq!(the_attachment(&lab)["hook"], "xdp");
    for name in ["third", "first"] {
        lab.netvlan(&["network", "rm", name]).ok();
    }
    assert!(lab.bpf.contents().is_empty(), "{:?}", lab.bpf.contents());
}

/// `datapath upgrade` swaps the TC program in place (TCX link update or
/// the filter's replace): new program id, same hook, counters kept.
#[test]
fn tc_hook_upgrade_replaces_the_tc_program_in_place_keeping_counters() {
    let lab = Lan::new(false);
    lab.netvlan(&["datapath", "attach", "eth0", "--hook", "tc"])
        .ok();
    let before = the_attachment(&lab);
    let socket = PacketSocket::open(&lab.switch, "peer0");
    socket.send_many(&FrameBuilder::new(MAC_A, SENDER).build(64), 6);
    stats_at(&lab, 6);

    let upgraded = lab
        .netvlan(&["datapath", "upgrade", "eth0", "--force", "--json"])
        .ok()
        .json();
    let outcome = &upgraded["upgrades"][0];
    assert_eq!(outcome["outcome"], "replaced", "{upgraded:#}");
    assert_eq!(outcome["old_prog_id"], before["prog_id"]);
    let after = the_attachment(&lab);
    assert_ne!(after["prog_id"], before["prog_id"]);
    assert_eq!(after["prog_id"], outcome["new_prog_id"]);
    assert_eq!(
        (after["hook"].clone(), after["mode"].clone()),
        (before["hook"].clone(), before["mode"].clone())
    );
    if expected_tc_mode() == "clsact" {
        let filters = ingress_filters(&lab.host, "eth0");
        assert_eq!(
            filters
                .iter()
                .filter(|f| f["options"]["prog"]["id"] == after["prog_id"])
                .count(),
            1,
            "{filters:#?}"
        );
    }
    // The new program counts on from what the old one counted.
    socket.send_many(&FrameBuilder::new(MAC_A, SENDER).build(64), 4);
    let stats = stats_at(&lab, 10);
    assert_eq!(vlan_entry(&stats, 0), counters(10, 640));
    // Not forced: this build already runs.
    let again = lab
        .netvlan(&["datapath", "upgrade", "eth0", "--json"])
        .ok()
        .json();
    assert_eq!(again["upgrades"][0]["outcome"], "current", "{again:#}");
    lab.netvlan(&["datapath", "detach", "eth0"]).ok();
    assert!(lab.bpf.contents().is_empty());
}

/// The wire's maps before the destination-slot layout and after it
/// (layout12): a pin set of whichever one this build is not.
const PER_MAC_LAYOUT_ONLY: &[&str] = &[
    "MAC_STATS",
    "VLAN_STATS",
    "ENDPOINT_MACS",
    "MAC_DROPS",
    "WIRE_POLICY",
];
const DST_SLOT_LAYOUT_ONLY: &[&str] = &["DST_STATS", "DST_SLOTS", "DST_DIRECT", "VLAN_COUNTERS"];

/// An attachment whose pins are of the other map layout is refused by
/// upgrade, with what is wrong and how to move, and left as it was.
#[test]
fn tc_hook_upgrade_refuses_pins_of_the_other_map_layout_and_changes_nothing() {
    let lab = Lan::new(false);
    lab.netvlan(&["datapath", "attach", "eth0", "--hook", "tc"])
        .ok();
    let before = the_attachment(&lab);
    let dir = std::path::PathBuf::from(before["pin_dir"].as_str().unwrap());
    let built = netvlan_common::maps::WIRE_MAPS;
    let new_layout = built.contains(&"DST_STATS");
    // Make the pins those of the other layout: its own maps pinned, and
    // (for the per-MAC one) this build's destination-slot maps gone.
    let (theirs, ours) = if new_layout {
        (PER_MAC_LAYOUT_ONLY, DST_SLOT_LAYOUT_ONLY)
    } else {
        (DST_SLOT_LAYOUT_ONLY, PER_MAC_LAYOUT_ONLY)
    };
    for name in theirs {
        let path = dir.join(name);
        let out = std::process::Command::new("bpftool")
            .args(["map", "create"])
            .arg(&path)
            .args([
                "type", "hash", "key", "8", "value", "8", "entries", "16", "name", name,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for name in ours.iter().filter(|n| built.contains(n)) {
        std::fs::remove_file(dir.join(name)).unwrap();
    }
    let pins = lab.bpf.contents();

    let refused = lab
        .netvlan(&["datapath", "upgrade", "eth0", "--force"])
        .failed();
    assert!(
        refused.stderr.contains("attached with another map layout"),
        "{}",
        refused.stderr
    );
    for name in theirs {
        assert!(
            refused.stderr.contains(name),
            "names {name}: {}",
            refused.stderr
        );
    }
    assert!(
        refused.stderr.contains("Nothing was changed")
            && refused
                .stderr
                .contains("netvlan datapath detach eth0 --force"),
        "{}",
        refused.stderr
    );
    assert_eq!(the_attachment(&lab)["prog_id"], before["prog_id"]);
    assert_eq!(lab.bpf.contents(), pins);
    // The way out it names works: detach, attach afresh.
    lab.netvlan(&["datapath", "detach", "eth0", "--force"]).ok();
    assert!(lab.bpf.contents().is_empty());
    lab.netvlan(&["datapath", "attach", "eth0", "--hook", "tc"])
        .ok();
    lab.netvlan(&["datapath", "upgrade", "eth0", "--force"])
        .ok();
    lab.netvlan(&["datapath", "detach", "eth0"]).ok();
}

/// A program at TC ingress that this netvlan did not attach (netvlan's own
/// object from a second bpf dir, as another tool's) is never replaced or
/// stacked on, nor is a foreign XDP program under a TC attachment.
#[test]
fn tc_hook_a_foreign_program_at_tc_ingress_or_xdp_is_refused() {
    let lab = Lan::new(false);
    let other = netvlan_tests::BpfDir::new();
    let foreign = netvlan_tests::netvlan(
        &lab.host,
        &other,
        &["datapath", "attach", "eth0", "--hook", "tc", "--json"],
    )
    .ok()
    .json();
    for args in [
        &["datapath", "attach", "eth0", "--hook", "tc"][..],
        &["datapath", "attach", "eth0"],
    ] {
        let run = lab.netvlan(args).failed();
        assert!(
            run.stderr.contains("another program at TC ingress"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr
                .contains(&format!("id {}", foreign["attachment"]["prog_id"])),
            "{}",
            run.stderr
        );
    }
    assert!(lab.bpf.contents().is_empty(), "{:?}", lab.bpf.contents());
    netvlan_tests::netvlan(&lab.host, &other, &["datapath", "detach", "eth0"]).ok();

    netvlan_tests::netvlan(
        &lab.host,
        &other,
        &["datapath", "attach", "eth0", "--hook", "xdp"],
    )
    .ok();
    let run = lab
        .netvlan(&["datapath", "attach", "eth0", "--hook", "tc"])
        .failed();
    assert!(run.stderr.contains("another XDP program"), "{}", run.stderr);
    assert!(lab.bpf.contents().is_empty(), "{:?}", lab.bpf.contents());
    netvlan_tests::netvlan(&lab.host, &other, &["datapath", "detach", "eth0"]).ok();
}

/// An attach killed after the program went onto TC ingress and before its
/// pins were in place leaves no attachment behind that blocks the next one:
/// a TCX link dies with the process; a clsact filter (which the kernel
/// holds on its own) is netvlan's by its place and name and is removed.
#[test]
fn tc_hook_an_attach_killed_before_its_pins_leaves_nothing_that_blocks_the_next() {
    let lab = Lan::new(false);
    lab.kill_midway(
        "attach-tc-before-pin",
        &["datapath", "attach", "eth0", "--hook", "tc"],
        || lab.bpf.contents().iter().any(|p| p.contains("staging-")),
    );
    let attached = lab
        .netvlan(&["datapath", "attach", "eth0", "--hook", "tc", "--json"])
        .ok()
        .json();
    assert_eq!(attached["changed"], true, "{attached:#}");
    if expected_tc_mode() == "clsact" {
        assert_eq!(
            ingress_filters(&lab.host, "eth0").len(),
            1,
            "one filter, the new one"
        );
    }
    lab.netvlan(&["datapath", "prune"]).ok();
    lab.netvlan(&["datapath", "detach", "eth0"]).ok();
    assert!(lab.bpf.contents().is_empty(), "{:?}", lab.bpf.contents());
    assert!(ingress_filters(&lab.host, "eth0").is_empty());
}
