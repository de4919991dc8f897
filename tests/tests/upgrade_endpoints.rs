//! `netvlan datapath upgrade` swaps the endpoint programs too, in place:
//! a TCX link update (6.6+) or a clsact filter replace (older kernels, the
//! VM lane). The endpoint keeps its counters and stays guarded against
//! spoofing; the programs on its link are the new ones.

use std::time::Duration;

use netvlan_tests::{
    frame::{ipv4_frame, Mac},
    packet::PacketSocket,
    snapshot::tc_programs,
    wait_for, Lan, Netns,
};
use serde_json::Value;

const BROADCAST: Mac = [0xff; 6];
const FOREIGN_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x98];

/// A 64-byte IPv4 broadcast from `src_mac`/`src_ip`; `n` (the last byte
/// of its destination, past 100) makes it unique.
fn frame(src_mac: Mac, src_ip: [u8; 4], n: u8) -> Vec<u8> {
    ipv4_frame(BROADCAST, src_mac, src_ip, [10, 63, 0, 100 + n], 64)
}

fn endpoint_stats(lab: &Lan, sandbox: &str) -> Value {
    let stats = lab.netvlan(&["stats", "--json"]).ok().json();
    stats["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["endpoint"] == sandbox).cloned())
        .unwrap_or_else(|| panic!("no endpoint stats for {sandbox}: {stats:#}"))
}

fn count(stats: &Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key}: {stats:#}"))
}

/// Sends `legit` and `spoofed` from the container and returns what the
/// LAN saw of them, once every legitimate frame has arrived.
fn send_and_watch(lab: &Lan, c: &Netns, legit: &[Vec<u8>], spoofed: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let wire = PacketSocket::listen(&lab.switch, "peer0");
    let out = PacketSocket::open(c, "eth0");
    for f in legit {
        out.send(f);
    }
    for f in spoofed {
        out.send_maybe_dropped(f);
    }
    let ours = |frames: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
        frames
            .into_iter()
            .filter(|f| legit.contains(f) || spoofed.contains(f))
            .collect()
    };
    let mut seen = Vec::new();
    let arrived = wait_for(Duration::from_secs(3), || {
        seen.extend(ours(wire.received()));
        legit.iter().all(|f| seen.contains(f)).then_some(())
    });
    assert!(
        arrived.is_some(),
        "the legitimate frames never reached the LAN"
    );
    // Late spoofed frames would have arrived by now.
    std::thread::sleep(Duration::from_millis(200));
    seen.extend(ours(wire.received()));
    seen
}

#[test]
fn an_upgrade_swaps_the_endpoint_programs_and_keeps_counters_and_spoofcheck() {
    let lab = Lan::new(false);
    lab.network_on_eth0("guarded", 63);
    let c = Netns::new("uctr");
    lab.netvlan(&["connect", "--ip", "10.63.0.2", "guarded", c.name()])
        .ok();
    let me = c.mac("eth0");
    let my_ip = [10, 63, 0, 2];

    // Before: some traffic, some of it spoofed, all counted.
    let legit: Vec<Vec<u8>> = (0..4).map(|n| frame(me, my_ip, n)).collect();
    let spoofed = vec![
        frame(FOREIGN_MAC, my_ip, 10),
        frame(me, [10, 63, 0, 77], 11),
    ];
    let seen = send_and_watch(&lab, &c, &legit, &spoofed);
    assert!(spoofed.iter().all(|f| !seen.contains(f)), "spoofed before");
    let before = endpoint_stats(&lab, c.name());
    assert_eq!(count(&before, "spoofed_packets"), 2, "{before:#}");
    assert!(count(&before, "tx_packets") >= 4, "{before:#}");
    let (egress, ingress) = tc_programs(&c, "eth0");
    assert_eq!(
        (egress.len(), ingress.len()),
        (1, 1),
        "one program per hook"
    );

    // The same build, not forced: nothing to do.
    let same = lab.netvlan(&["datapath", "upgrade", "--json"]).ok().json();
    assert_eq!(same["endpoints"][0]["outcome"], "current", "{same:#}");
    assert_eq!(tc_programs(&c, "eth0"), (egress.clone(), ingress.clone()));

    // Forced: new programs, swapped in place.
    let up = lab
        .netvlan(&["datapath", "upgrade", "--force", "--json"])
        .ok()
        .json();
    let outcome = &up["endpoints"][0];
    assert_eq!(outcome["outcome"], "replaced", "{up:#}");
    let ids = |hook: &str| {
        let swap = &outcome[hook];
        let id = |k: &str| swap[k].as_u64().unwrap_or_else(|| panic!("{up:#}")) as u32;
        (id("old_prog_id"), id("new_prog_id"))
    };
    let (egress_old, egress_new) = ids("egress");
    let (ingress_old, ingress_new) = ids("ingress");
    assert_eq!((egress_old, ingress_old), (egress[0], ingress[0]), "{up:#}");
    assert_ne!(egress_new, egress_old, "the egress program id changes");
    assert_ne!(ingress_new, ingress_old, "the ingress program id changes");
    assert_eq!(
        tc_programs(&c, "eth0"),
        (vec![egress_new], vec![ingress_new]),
        "the new programs, and only they, run on the endpoint's link"
    );

    // The counters survived the swap.
    let kept = endpoint_stats(&lab, c.name());
    for key in ["rx_packets", "tx_packets", "spoofed_packets"] {
        assert!(
            count(&kept, key) >= count(&before, key),
            "{key} went back: {before:#} -> {kept:#}"
        );
    }
    assert_eq!(count(&kept, "spoofed_packets"), 2, "{kept:#}");

    // Spoofcheck still holds, and the new program counts on the old maps.
    let legit: Vec<Vec<u8>> = (20..23).map(|n| frame(me, my_ip, n)).collect();
    let spoofed = vec![
        frame(FOREIGN_MAC, my_ip, 30),
        frame(me, [10, 63, 0, 78], 31),
        frame(FOREIGN_MAC, [10, 63, 0, 79], 32),
    ];
    let seen = send_and_watch(&lab, &c, &legit, &spoofed);
    for f in &spoofed {
        assert!(
            !seen.contains(f),
            "a spoofed frame reached the LAN after the upgrade: {f:02x?}"
        );
    }
    let after = endpoint_stats(&lab, c.name());
    assert_eq!(count(&after, "spoofed_packets"), 5, "{after:#}");
    assert!(
        count(&after, "tx_packets") >= count(&kept, "tx_packets") + 3,
        "{kept:#} -> {after:#}"
    );

    // The endpoint is healthy as `check` sees it, and leaves nothing behind.
    let check = lab.netvlan(&["check", "--json"]).ok().json();
    assert_eq!(check["drifts"], serde_json::json!([]), "{check:#}");
    lab.netvlan(&["disconnect", "guarded", c.name()]).ok();
    lab.netvlan(&["network", "rm", "guarded"]).ok();
    assert!(
        lab.bpf
            .contents()
            .iter()
            .all(|pin| !pin.contains("egress-")),
        "endpoint pins left behind: {:?}",
        lab.bpf.contents()
    );
}
