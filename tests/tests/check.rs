//! `netvlan check` names every drift between the store and the kernel,
//! and `netvlan restore` repairs each one.

use std::os::unix::fs::MetadataExt;

use netvlan_tests::{Lan, Netns};
use serde_json::Value;

fn ns_label(ns: &Netns) -> String {
    format!("net-{}", std::fs::metadata(ns.path()).unwrap().ino())
}

/// `check --json` must fail and report a drift of `kind` whose text
/// contains `mentions`; then `restore` repairs it and `check` is clean.
fn drift_is_named_and_repaired(lan: &Lan, what: &str, kind: &str, mentions: &str) {
    let run = lan.netvlan(&["check", "--json"]).failed();
    let drifts: Value = run.json()["drifts"].clone();
    let found = drifts.as_array().unwrap().iter().any(|d| {
        d["kind"] == kind
            && format!("{} {}", d["object"], d["problem"]).contains(mentions)
            && d["repair"].as_str().is_some_and(|r| r.contains("restore"))
    });
    assert!(
        found,
        "{what}: no {kind} drift mentioning '{mentions}': {drifts:#}"
    );
    let text = lan.netvlan(&["check"]).failed();
    assert!(text.stdout.contains(kind), "{what}: {}", text.stdout);
    let restore = lan.netvlan(&["restore"]).ok();
    let clean = lan.netvlan(&["check", "--json"]);
    assert!(
        clean.status.success(),
        "{what}: restore left drift:\n{}\nrestore said:\n{}",
        clean.stdout,
        restore.stdout
    );
    assert_eq!(clean.json()["drifts"], serde_json::json!([]), "{what}");
}

fn bpftool(args: &[&str]) {
    netvlan_tests::sh("bpftool", args);
}

/// `bpftool map update pinned MAP key hex KEY value hex VALUE`, the bytes
/// as space-separated hex pairs in the map's (little-endian) layout.
fn map_update(map: &std::path::Path, key: &str, value: &str) {
    let mut args = vec![
        "map",
        "update",
        "pinned",
        map.to_str().unwrap(),
        "key",
        "hex",
    ];
    args.extend(key.split(' '));
    args.extend(["value", "hex"]);
    args.extend(value.split(' '));
    bpftool(&args);
}

#[test]
fn check_names_every_drift_and_restore_repairs_it() {
    let lan = Lan::new(false);
    // XDP: the drifts below include the XDP program detached by hand.
    lan.network_on_eth0_with("lan", 74, &["hook=xdp"]);
    let c1 = lan.container(false);
    let c2 = lan.container(false);
    lan.netvlan(&["connect", "--ip", "10.74.0.2", "lan", c1.name()])
        .ok();
    lan.netvlan(&["connect", "--ip", "10.74.0.3", "lan", c2.name()])
        .ok();
    let run = lan.netvlan(&["check"]).ok();
    assert!(run.stdout.contains("no drift"), "{}", run.stdout);

    // An endpoint's link deleted.
    c1.exec("ip", &["link", "del", "eth0"]);
    drift_is_named_and_repaired(&lan, "link deleted", "endpoint_link_missing", "eth0");
    assert!(c1.can_ping("10.74.0.1"));

    // An address deleted (its default route goes with it).
    c1.exec("ip", &["addr", "del", "10.74.0.2/24", "dev", "eth0"]);
    drift_is_named_and_repaired(&lan, "address deleted", "address_missing", "10.74.0.2/24");
    assert!(c1.can_ping("10.74.0.1"));

    // The default route deleted.
    c1.exec("ip", &["route", "del", "default"]);
    drift_is_named_and_repaired(&lan, "route deleted", "route_missing", "10.74.0.1");

    // XDP detached from the parent by hand.
    let host = ns_label(&lan.host);
    let xdp = lan
        .bpf
        .path()
        .join(&host)
        .join(format!("if-{}", lan.host.ifindex("eth0")));
    bpftool(&[
        "link",
        "detach",
        "pinned",
        xdp.join("link").to_str().unwrap(),
    ]);
    assert!(lan.host.link_json("eth0").get("xdp").is_none());
    drift_is_named_and_repaired(&lan, "XDP detached", "datapath_missing", "eth0");
    assert!(lan.host.link_json("eth0").get("xdp").is_some());

    // An endpoint's TC egress program removed by hand.
    let endpoint = |c: &Netns| {
        lan.bpf
            .path()
            .join(ns_label(c))
            .join(format!("egress-{}", c.ifindex("eth0")))
    };
    let link_pin = endpoint(&c2).join("link");
    if link_pin.exists() {
        bpftool(&["link", "detach", "pinned", link_pin.to_str().unwrap()]);
    } else {
        c2.exec("tc", &["filter", "del", "dev", "eth0", "egress"]);
    }
    drift_is_named_and_repaired(
        &lan,
        "TC filter deleted",
        "endpoint_programs_missing",
        "egress",
    );
    let (egress, ingress) = netvlan_tests::snapshot::tc_programs(&c2, "eth0");
    assert_eq!(
        (egress.len(), ingress.len()),
        (1, 1),
        "one program per hook"
    );

    // An endpoint's pins removed.
    std::fs::remove_dir_all(endpoint(&c2)).unwrap();
    drift_is_named_and_repaired(&lan, "pins removed", "endpoint_pins_missing", "eth0");

    // An endpoint's destination unpublished from the wire's map: the
    // direct slot of 02:42:0a:4a:00:03 (10.74.0.3) is 3; a free slot holds
    // the all-zero key.
    let xdp = lan
        .bpf
        .path()
        .join(&host)
        .join(format!("if-{}", lan.host.ifindex("eth0")));
    let direct = xdp.join("DST_DIRECT");
    map_update(&direct, "03 00 00 00", "00 00 00 00 00 00 00 00");
    drift_is_named_and_repaired(
        &lan,
        "map entry deleted",
        "map_entry_missing",
        "02:42:0a:4a:00:03",
    );

    // A user-given MAC whose direct slot (its last four bytes folded: 3)
    // 10.74.0.3 holds lives in DST_SLOTS behind slot 3's DST_SPILL bit
    // (word 0); with the bit cleared no frame finds it.
    let c3 = lan.container(false);
    lan.netvlan(&[
        "connect",
        "--ip",
        "10.74.0.4",
        "--mac",
        "06:00:00:00:00:03",
        "lan",
        c3.name(),
    ])
    .ok();
    let spill = xdp.join("DST_SPILL");
    map_update(&spill, "00 00 00 00", "00 00 00 00 00 00 00 00");
    drift_is_named_and_repaired(
        &lan,
        "spill bit cleared",
        "map_entry_missing",
        "06:00:00:00:00:03 (VLAN 0) (in DST_SLOTS, but its DST_SPILL bit is clear",
    );
    lan.netvlan(&["disconnect", "lan", c3.name()]).ok();
    drop(c3);

    // A destination registered that no endpoint or host link has: MAC
    // 06:ee:00:00:00:01 on VLAN 5 in slot 40000.
    let slots = xdp.join("DST_SLOTS");
    map_update(&slots, "05 00 06 ee 00 00 00 01", "40 9c 00 00");
    drift_is_named_and_repaired(
        &lan,
        "stray registration",
        "map_entry_stale",
        "06:ee:00:00:00:01 (VLAN 5)",
    );

    // A link tagged as netvlan's that no network owns.
    lan.host.exec(
        "ip",
        &[
            "link", "add", "nvorph", "type", "veth", "peer", "name", "nvorphp",
        ],
    );
    lan.host.exec(
        "ip",
        &["link", "set", "nvorph", "alias", "netvlan:feedfacecafe"],
    );
    drift_is_named_and_repaired(&lan, "orphan link", "orphan_link", "nvorph");

    // Pins of an endpoint link that is gone.
    std::fs::create_dir(lan.bpf.path().join(ns_label(&c1)).join("egress-999")).unwrap();
    drift_is_named_and_repaired(&lan, "stale pins", "stale_pins", "egress-999");

    // A sandbox gone.
    let name = c2.name().to_string();
    drop(c2);
    drift_is_named_and_repaired(&lan, "sandbox gone", "sandbox_gone", &name);
    assert_eq!(
        lan.inspect("lan")["Containers"].as_object().unwrap().len(),
        1
    );

    lan.netvlan(&["disconnect", "lan", c1.name()]).ok();
    lan.netvlan(&["network", "rm", "lan"]).ok();
    assert_eq!(lan.bpf.contents(), Vec::<String>::new());
}
