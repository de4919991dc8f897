//! Pins, TC programs and placeholders: a failed command leaves none of
//! them behind, restore and prune clean up after links and sandboxes that
//! went away, and enforcement is never lost without a word.

use netvlan_tests::{snapshot, Lan, Netns};
use serde_json::Value;

fn egress_pins(lan: &Lan) -> Vec<String> {
    lan.bpf
        .contents()
        .into_iter()
        .filter(|p| p.contains("egress-"))
        .collect()
}

#[test]
fn a_failure_at_any_step_of_connect_leaves_links_routes_programs_pins_and_state_as_they_were() {
    let lan = Lan::new(false);
    lan.network_on_eth0("rb", 64);
    // One endpoint already there: its pins and programs must stay as they are.
    let first = lan.container(false);
    lan.netvlan(&["connect", "rb", first.name()]).ok();
    let c = lan.container(false);
    let state = |lan: &Lan| lan.inspect("rb");
    let before = snapshot::kernel(
        &[("host", &lan.host), ("first", &first), ("c", &c)],
        &lan.bpf,
    );
    let state_before = state(&lan);
    for point in [
        "connect-after-link",
        "connect-after-addresses",
        "connect-after-programs",
        "connect-after-up",
        "connect-after-routes",
        "connect-before-persist",
    ] {
        lan.fails_at(point, &["connect", "rb", c.name()]);
        let after = snapshot::kernel(
            &[("host", &lan.host), ("first", &first), ("c", &c)],
            &lan.bpf,
        );
        assert_eq!(after, before, "{point}: the kernel or the pins changed");
        assert_eq!(state(&lan), state_before, "{point}: the store changed");
    }
    lan.netvlan(&["connect", "rb", c.name()]).ok();
    for ctr in [&first, &c] {
        lan.netvlan(&["disconnect", "rb", ctr.name()]).ok();
    }
    lan.netvlan(&["network", "rm", "rb"]).ok();
    assert_eq!(lan.bpf.contents(), Vec::<String>::new());
}

#[test]
fn a_failure_at_any_step_of_create_leaves_links_programs_pins_and_state_as_they_were() {
    let lan = Lan::new(false);
    let before = snapshot::kernel(&[("host", &lan.host)], &lan.bpf);
    let plans: [&[&str]; 2] = [
        &["network", "create", "--subnet", "10.65.0.0/24", "internal"],
        &[
            "network",
            "create",
            "--subnet",
            "10.66.0.0/24",
            "-o",
            "parent=eth0",
            "onparent",
        ],
    ];
    for point in [
        "create-after-parent",
        "create-after-datapath",
        "create-before-persist",
    ] {
        for args in plans {
            netvlan_tests::netvlan_failing_at(&lan.host, &lan.bpf, &lan.state, point, args)
                .failed();
            assert_eq!(
                snapshot::kernel(&[("host", &lan.host)], &lan.bpf),
                before,
                "{point} in `{}`",
                args.join(" ")
            );
            assert_eq!(
                lan.netvlan(&["network", "ls", "--json"]).ok().json(),
                serde_json::json!([]),
                "{point}: state left"
            );
        }
    }
}

#[test]
fn a_connect_the_kernel_refuses_after_its_link_exists_leaves_no_pins() {
    let lan = Lan::new(false);
    lan.network_on_eth0("macs", 67);
    let first = lan.container(false);
    lan.netvlan(&[
        "connect",
        "--mac",
        "02:00:00:00:67:01",
        "macs",
        first.name(),
    ])
    .ok();
    let c = lan.container(false);
    let before = snapshot::kernel(
        &[("host", &lan.host), ("first", &first), ("c", &c)],
        &lan.bpf,
    );
    let state_before = lan.inspect("macs");
    let parent_mac = lan.host.link_json("eth0")["address"]
        .as_str()
        .unwrap()
        .to_string();
    // The kernel refuses both when the link comes up (EADDRINUSE): after
    // the link, its addresses and its programs exist.
    for mac in ["02:00:00:00:67:01", parent_mac.as_str()] {
        let run = lan
            .netvlan(&["connect", "--mac", mac, "macs", c.name()])
            .failed();
        assert!(!run.stderr.is_empty(), "--mac {mac}: no error message");
        assert_eq!(
            snapshot::kernel(
                &[("host", &lan.host), ("first", &first), ("c", &c)],
                &lan.bpf
            ),
            before,
            "--mac {mac}: {}",
            run.stderr
        );
        assert_eq!(lan.inspect("macs"), state_before, "--mac {mac}");
    }
    lan.netvlan(&["disconnect", "macs", first.name()]).ok();
    lan.netvlan(&["network", "rm", "macs"]).ok();
    assert_eq!(lan.bpf.contents(), Vec::<String>::new(), "pins left behind");
}

#[test]
fn restore_removes_the_pins_of_a_vanished_sandbox() {
    let lan = Lan::new(false);
    lan.network_on_eth0("gone", 68);
    let c = lan.container(false);
    lan.netvlan(&["connect", "gone", c.name()]).ok();
    assert!(!egress_pins(&lan).is_empty(), "connect pinned programs");
    drop(c);
    let run = lan.netvlan(&["restore"]).ok();
    assert!(
        run.stdout.contains("drop endpoint of vanished sandbox"),
        "{}",
        run.stdout
    );
    assert_eq!(lan.inspect("gone")["Containers"], serde_json::json!({}));
    assert_eq!(egress_pins(&lan), Vec::<String>::new(), "its pins stayed");
    lan.netvlan(&["network", "rm", "gone"]).ok();
    assert_eq!(lan.bpf.contents(), Vec::<String>::new());
}

#[test]
fn datapath_prune_finds_and_removes_stale_endpoint_pins() {
    let lan = Lan::new(false);
    lan.network_on_eth0("stale", 69);
    let gone = lan.container(false);
    let unlinked = lan.container(false);
    let kept = lan.container(false);
    for c in [&gone, &unlinked, &kept] {
        lan.netvlan(&["connect", "stale", c.name()]).ok();
    }
    let kept_pins = format!("net-{}", ns_inode(&kept));
    drop(gone);
    unlinked.exec("ip", &["link", "del", "eth0"]);
    let dirs = |lan: &Lan| {
        egress_pins(lan)
            .into_iter()
            .filter(|p| {
                p.rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with("egress-"))
            })
            .count()
    };
    assert_eq!(dirs(&lan), 3, "three endpoints' pins");

    let run = lan.netvlan(&["datapath", "prune", "--json"]).ok();
    let removed = run.json()["removed"].as_array().unwrap().len();
    assert_eq!(removed, 2, "{}", run.stdout);
    let left = egress_pins(&lan);
    assert!(
        !left.is_empty() && left.iter().all(|p| p.starts_with(&kept_pins)),
        "only the live endpoint's pins stay: {left:?}"
    );
    // The live endpoint still counts what it sends.
    assert!(kept.can_ping("10.69.0.1"));
    let (egress, ingress) = snapshot::tc_programs(&kept, "eth0");
    assert!(!egress.is_empty() && !ingress.is_empty());
}

fn ns_inode(ns: &Netns) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(ns.path()).unwrap().ino()
}

/// The endpoint counters `stats --json` shows for `sandbox`.
fn endpoint_stats(lan: &Lan, sandbox: &str) -> Value {
    let stats = lan.netvlan(&["stats", "--json"]).ok().json();
    stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == sandbox)
        .unwrap_or_else(|| panic!("no counters for {sandbox}: {stats:#}"))
        .clone()
}

#[test]
fn restore_attaches_the_endpoint_programs_to_the_recreated_link() {
    let lan = Lan::new(false);
    lan.network_on_eth0("again", 70);
    let c = lan.container(false);
    lan.netvlan(&["connect", "again", c.name()]).ok();
    let old = c.ifindex("eth0");
    c.exec("ip", &["link", "del", "eth0"]);
    lan.netvlan(&["restore"]).ok();
    let new = c.ifindex("eth0");
    assert_ne!(old, new);
    let label = format!("net-{}", ns_inode(&c));
    let pins = egress_pins(&lan);
    assert!(
        pins.contains(&format!("{label}/egress-{new}")),
        "no pins for the new link: {pins:?}"
    );
    assert!(
        !pins
            .iter()
            .any(|p| p.starts_with(&format!("{label}/egress-{old}"))),
        "the old link's pins stayed: {pins:?}"
    );
    let (egress, ingress) = snapshot::tc_programs(&c, "eth0");
    assert!(!egress.is_empty() && !ingress.is_empty(), "no TC programs");

    // The counters shown are the live link's: they move with traffic.
    let before = endpoint_stats(&lan, c.name());
    assert!(c.can_ping("10.70.0.1"));
    let after = endpoint_stats(&lan, c.name());
    for counter in ["tx_packets", "rx_packets"] {
        assert!(
            after[counter].as_u64().unwrap() > before[counter].as_u64().unwrap(),
            "{counter} froze: {before} -> {after}"
        );
    }
    // A second restore has nothing to do, and disconnect removes the pins
    // of the live link.
    let run = lan.netvlan(&["restore"]).ok();
    assert!(run.stdout.contains("nothing to restore"), "{}", run.stdout);
    lan.netvlan(&["disconnect", "again", c.name()]).ok();
    assert_eq!(egress_pins(&lan), Vec::<String>::new());
    lan.netvlan(&["network", "rm", "again"]).ok();
}

#[test]
fn a_placeholder_is_never_a_parent_and_orphans_netvlan_tagged_are_removed() {
    let lan = Lan::new(false);
    lan.netvlan(&["network", "create", "--subnet", "10.71.0.0/24", "inner"])
        .ok();
    let placeholder = lan.inspect("inner")["Netvlan"]["Parent"]
        .as_str()
        .unwrap()
        .to_string();
    let mut candidates = vec![placeholder.clone()];
    // On kernels without dummy links the placeholder is one end of a veth
    // pair; the other end is no parent either.
    let peer = format!("{placeholder}p");
    if lan.host_links().contains(&peer) {
        candidates.push(peer);
    }
    for parent in &candidates {
        let run = lan
            .netvlan(&[
                "network",
                "create",
                "--subnet",
                "10.72.0.0/24",
                "-o",
                &format!("parent={parent}"),
                "outer",
            ])
            .failed();
        assert!(
            run.stderr.contains(&format!("parent interface '{parent}'"))
                && run.stderr.contains("'inner'"),
            "{}",
            run.stderr
        );
    }
    lan.netvlan(&["network", "rm", "inner"]).ok();
    let links = lan.host_links();
    assert!(
        !links.iter().any(|l| l.starts_with("nvd-")),
        "placeholder left: {links:?}"
    );

    // Tagged links nobody owns: restore removes one, network prune another.
    for (command, link) in [
        (&["restore"][..], "nvorph1"),
        (&["network", "prune", "-f"][..], "nvorph2"),
    ] {
        lan.host.exec(
            "ip",
            &[
                "link",
                "add",
                link,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{link}p"),
            ],
        );
        lan.host.exec(
            "ip",
            &["link", "set", link, "alias", "netvlan:0123456789abcdef"],
        );
        let run = lan.netvlan(command).ok();
        assert!(
            run.stdout.contains(&format!("deleted orphan link {link}")),
            "{}",
            run.stdout
        );
        assert!(!lan.host_links().iter().any(|l| l.starts_with(link)));
    }
}

#[test]
fn enforcement_is_never_lost_in_silence() {
    let lan = Lan::new(false);
    // XDP: the checks below read the XDP program on eth0.
    lan.network_on_eth0_with("guarded", 73, &["hook=xdp"]);
    let refused = lan.netvlan(&["datapath", "detach", "eth0"]).failed();
    assert!(
        refused.stderr.contains("guarded") && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    let xdp = |lan: &Lan| lan.host.link_json("eth0").get("xdp").is_some();
    assert!(xdp(&lan), "the refused detach changed nothing");

    // Forced off, a policy change puts the datapath back and enforces.
    lan.netvlan(&["datapath", "detach", "--force", "eth0"]).ok();
    assert!(!xdp(&lan));
    lan.netvlan(&["policy", "set", "guarded", "unknown_dst=drop"])
        .ok();
    assert!(
        xdp(&lan),
        "policy set claimed enforcement without a datapath"
    );
    let status = lan.netvlan(&["datapath", "status", "--json"]).ok().json();
    assert_eq!(status["attachments"][0]["state"], "attached", "{status:#}");

    // So does a connect.
    lan.netvlan(&["datapath", "detach", "--force", "eth0"]).ok();
    let c = lan.container(false);
    lan.netvlan(&["connect", "guarded", c.name()]).ok();
    assert!(xdp(&lan), "connect went on without the datapath");
    lan.netvlan(&["disconnect", "guarded", c.name()]).ok();
    lan.netvlan(&["network", "rm", "guarded"]).ok();
    assert!(!xdp(&lan));
}
