//! Docker-compatible networks end to end: a "host" namespace whose `eth0`
//! is wired to a "switch" namespace holding an external host, containers
//! as namespaces, and `netvlan network …` / `connect` run in the host.

use netvlan_tests::{container_entry, require_kernel_feature, KernelFeature, Lan, Netns, Run};
use serde_json::Value;

#[test]
fn bridge_network_gives_docker_addresses_and_reaches_the_lan() {
    let lan = Lan::new(false);
    lan.switch
        .exec("ip", &["addr", "add", "172.16.86.254/24", "dev", "peer0"]);
    lan.netvlan(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "172.16.86.0/24",
        "--gateway",
        "172.16.86.1",
        "-o",
        "parent=eth0",
        "lan",
    ])
    .ok();
    let c1 = lan.container(false);
    let c2 = lan.container(false);
    let first = lan
        .netvlan(&["connect", "--json", "lan", c1.name()])
        .ok()
        .json();
    assert_eq!(first["endpoint"]["ipv4"], "172.16.86.2/24");
    assert_eq!(first["endpoint"]["mac"], "02:42:ac:10:56:02");
    lan.netvlan(&["connect", "lan", c2.name()]).ok();

    // The kernel's view inside the container, not our state.
    let eth0 = c1.link_json("eth0");
    assert_eq!(eth0["address"], "02:42:ac:10:56:02");
    assert_eq!(eth0["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(eth0["linkinfo"]["info_data"]["mode"], "bridge");
    let routes = String::from_utf8(c1.exec("ip", &["route", "show", "default"]).stdout).unwrap();
    assert!(routes.contains("via 172.16.86.1 dev eth0"), "{routes}");

    assert!(
        c1.can_ping("172.16.86.254"),
        "container cannot reach the external host"
    );
    assert!(
        c1.can_ping("172.16.86.3"),
        "container cannot reach the other container"
    );

    let inspect = lan.inspect("lan");
    assert_eq!(inspect["Driver"], "macvlan");
    assert_eq!(inspect["Scope"], "local");
    assert_eq!(inspect["IPAM"]["Config"][0]["Subnet"], "172.16.86.0/24");
    assert_eq!(inspect["IPAM"]["Config"][0]["Gateway"], "172.16.86.1");
    let containers = inspect["Containers"].as_object().unwrap();
    assert_eq!(containers.len(), 2);
    let c2_entry = container_entry(&inspect, c2.name());
    assert_eq!(c2_entry["IPv4Address"], "172.16.86.3/24");
    assert_eq!(c2_entry["MacAddress"], "02:42:ac:10:56:03");

    // The datapath counts the containers' traffic on the parent.
    let stats = lan.netvlan(&["stats", "--json"]).ok().json();
    let macs = stats["interfaces"][0]["macs"].as_array().unwrap();
    assert!(
        macs.iter()
            .any(|m| m["mac"] == "02:42:ac:10:56:02" && m["rx_packets"].as_u64() > Some(0)),
        "{stats:#}"
    );

    // Disconnect deletes the link and frees the address.
    lan.netvlan(&["network", "rm", "lan"]).failed();
    lan.netvlan(&["disconnect", "lan", c1.name()]).ok();
    assert!(
        c1.command("ip")
            .args(["link", "show", "eth0"])
            .output()
            .unwrap()
            .status
            .code()
            != Some(0)
    );
    let again = lan
        .netvlan(&["connect", "--json", "lan", c1.name()])
        .ok()
        .json();
    assert_eq!(
        again["endpoint"]["ipv4"], "172.16.86.2/24",
        "the freed address is handed out again"
    );
    for c in [&c1, &c2] {
        lan.netvlan(&["disconnect", "lan", c.name()]).ok();
    }
    lan.netvlan(&["network", "rm", "lan"]).ok();
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        serde_json::json!([])
    );
    assert_eq!(
        lan.bpf.contents(),
        Vec::<String>::new(),
        "the datapath is detached with the last network"
    );
}

#[test]
fn ip_range_and_aux_addresses_shape_allocation() {
    let lan = Lan::new(false);
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "172.16.86.0/24",
        "--ip-range",
        "172.16.86.128/25",
        "--aux-address",
        "my-router=172.16.86.128",
        "-o",
        "parent=eth0",
        "ranged",
    ])
    .ok();
    let c1 = lan.container(false);
    let c2 = lan.container(false);
    let first = lan
        .netvlan(&["connect", "--json", "ranged", c1.name()])
        .ok()
        .json();
    assert_eq!(
        first["endpoint"]["ipv4"], "172.16.86.129/24",
        "the range starts at .128, which is an aux-address"
    );
    let explicit = lan
        .netvlan(&[
            "connect",
            "--json",
            "--ip",
            "172.16.86.20",
            "ranged",
            c2.name(),
        ])
        .ok()
        .json();
    assert_eq!(
        explicit["endpoint"]["ipv4"], "172.16.86.20/24",
        "--ip may be anywhere in the subnet"
    );
    let c3 = lan.container(false);
    let run = lan
        .netvlan(&["connect", "--ip", "172.16.86.128", "ranged", c3.name()])
        .failed();
    assert!(
        run.stderr.contains("reserved as aux-address 'my-router'"),
        "{}",
        run.stderr
    );
    let run = lan
        .netvlan(&["connect", "--ip", "172.16.86.20", "ranged", c3.name()])
        .failed();
    assert!(run.stderr.contains("already in use"), "{}", run.stderr);
    assert!(
        c3.command("ip")
            .args(["link", "show", "eth0"])
            .output()
            .unwrap()
            .status
            .code()
            != Some(0),
        "failed connect left a link"
    );
    let aux = lan.inspect("ranged");
    assert_eq!(
        aux["IPAM"]["Config"][0]["AuxiliaryAddresses"]["my-router"],
        "172.16.86.128"
    );
    for c in [&c1, &c2] {
        lan.netvlan(&["disconnect", "ranged", c.name()]).ok();
    }
    lan.netvlan(&["network", "rm", "ranged"]).ok();
}

#[test]
fn bad_input_is_named_and_leaves_nothing_behind() {
    let lan = Lan::new(false);
    let links_before = lan.host_links();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--subnet", "10.0.0.0/33", "-o", "parent=eth0", "n"],
            "10.0.0.0/33",
        ),
        (
            &["--subnet", "10.0.0.5/24", "-o", "parent=eth0", "n"],
            "it should be 10.0.0.0/24",
        ),
        (
            &[
                "--subnet",
                "10.0.0.0/24",
                "--gateway",
                "10.9.0.1",
                "-o",
                "parent=eth0",
                "n",
            ],
            "gateway 10.9.0.1 is outside every subnet",
        ),
        (
            &[
                "--subnet",
                "10.0.0.0/24",
                "--ip-range",
                "10.1.0.0/25",
                "-o",
                "parent=eth0",
                "n",
            ],
            "10.1.0.0/25",
        ),
        (
            &[
                "--subnet",
                "10.0.0.0/24",
                "--aux-address",
                "r=10.9.9.9",
                "-o",
                "parent=eth0",
                "n",
            ],
            "10.9.9.9",
        ),
        (
            &["--subnet", "10.0.0.0/24", "-o", "parent=nosuch0", "n"],
            "parent interface 'nosuch0' does not exist",
        ),
        (
            &["--subnet", "10.0.0.0/24", "-o", "parent=eth0.4095", "n"],
            "VLAN id 4095 in parent 'eth0.4095' is outside 1..4094",
        ),
        (
            &[
                "--subnet",
                "10.0.0.0/24",
                "-o",
                "parent=eth0",
                "-o",
                "macvlan_mode=hairpin",
                "n",
            ],
            "macvlan_mode=hairpin",
        ),
        (
            &["--subnet", "10.0.0.0/24", "-o", "parent=eth0", "bad/name"],
            "network name 'bad/name' is invalid",
        ),
        (&["-o", "parent=eth0", "n"], "--subnet is required"),
    ];
    for (args, expected) in cases {
        let mut full = vec!["network", "create"];
        full.extend_from_slice(args);
        let run = lan.netvlan(&full).failed();
        assert!(
            run.stderr.contains(expected),
            "`{}`: expected '{expected}' in: {}",
            full.join(" "),
            run.stderr
        );
    }
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.0.0.0/24",
        "-o",
        "parent=eth0",
        "first",
    ])
    .ok();
    let dup = lan
        .netvlan(&[
            "network",
            "create",
            "--subnet",
            "10.5.0.0/24",
            "-o",
            "parent=eth0",
            "first",
        ])
        .failed();
    assert!(
        dup.stderr
            .contains("a network named 'first' already exists"),
        "{}",
        dup.stderr
    );
    let overlap = lan
        .netvlan(&[
            "network",
            "create",
            "--subnet",
            "10.0.0.128/25",
            "-o",
            "parent=eth0",
            "second",
        ])
        .failed();
    assert!(
        overlap
            .stderr
            .contains("overlaps subnet 10.0.0.0/24 of network 'first'"),
        "{}",
        overlap.stderr
    );
    let ctr = lan.container(false);
    let unknown = lan
        .netvlan(&["connect", "first", "nvt-no-such-sandbox"])
        .failed();
    assert!(
        unknown
            .stderr
            .contains("unknown sandbox 'nvt-no-such-sandbox'"),
        "{}",
        unknown.stderr
    );
    let unknown_net = lan.netvlan(&["connect", "nonet", ctr.name()]).failed();
    assert!(
        unknown_net.stderr.contains("no network named 'nonet'"),
        "{}",
        unknown_net.stderr
    );
    lan.netvlan(&["network", "rm", "first"]).ok();

    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        serde_json::json!([])
    );
    assert_eq!(
        lan.host_links(),
        links_before,
        "a failed create left a link behind"
    );
    assert_eq!(
        lan.bpf.contents(),
        Vec::<String>::new(),
        "a failed create left pins behind"
    );
}

#[test]
fn eight_concurrent_connects_get_distinct_addresses() {
    let lan = Lan::new(false);
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "172.16.90.0/24",
        "-o",
        "parent=eth0",
        "busy",
    ])
    .ok();
    let containers: Vec<Netns> = (0..8).map(|_| lan.container(false)).collect();
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = containers
            .iter()
            .map(|c| scope.spawn(|| lan.netvlan(&["connect", "--json", "busy", c.name()])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addresses: Vec<String> = runs
        .into_iter()
        .map(|r| {
            r.ok().json()["endpoint"]["ipv4"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 8, "duplicate addresses: {addresses:?}");
    let inspect = lan.inspect("busy");
    assert_eq!(inspect["Containers"].as_object().unwrap().len(), 8);
    for c in &containers {
        let addr = container_entry(&inspect, c.name())["IPv4Address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let shown =
            String::from_utf8(c.exec("ip", &["-br", "addr", "show", "eth0"]).stdout).unwrap();
        assert!(
            shown.contains(&addr),
            "{} has not {addr}: {shown}",
            c.name()
        );
        lan.netvlan(&["disconnect", "busy", c.name()]).ok();
    }
    lan.netvlan(&["network", "rm", "busy"]).ok();
}

#[test]
fn dual_stack_network_gives_ipv6_address_and_route() {
    let lan = Lan::new(true);
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "172.16.87.0/24",
        "--subnet",
        "fd00:86::/64",
        "-o",
        "parent=eth0",
        "dual",
    ])
    .ok();
    let inspect = lan.inspect("dual");
    assert_eq!(
        inspect["EnableIPv6"], true,
        "IPv6 is inferred from the IPv6 subnet"
    );
    assert_eq!(inspect["Netvlan"]["IPv6Inferred"], true, "{inspect:#}");
    let c = lan.container(true);
    let run = lan
        .netvlan(&["connect", "--json", "dual", c.name()])
        .ok()
        .json();
    assert_eq!(run["endpoint"]["ipv4"], "172.16.87.2/24");
    assert_eq!(run["endpoint"]["ipv6"], "fd00:86::2/64");
    let v6 = String::from_utf8(c.exec("ip", &["-6", "addr", "show", "eth0"]).stdout).unwrap();
    assert!(v6.contains("fd00:86::2/64"), "{v6}");
    let route =
        String::from_utf8(c.exec("ip", &["-6", "route", "show", "default"]).stdout).unwrap();
    assert!(route.contains("via fd00:86::1"), "{route}");
    lan.netvlan(&["disconnect", "dual", c.name()]).ok();
    lan.netvlan(&["network", "rm", "dual"]).ok();
}

#[test]
fn vlan_networks_reach_their_vlan_only_and_remove_their_sub_interfaces() {
    if !require_kernel_feature(KernelFeature::Vlan) {
        return;
    }
    let lan = Lan::new(false);
    // The switch side: one external host per VLAN, each its own namespace
    // (one namespace holding both addresses would answer ARP on either
    // VLAN), all on one /24 so only the VLAN separates them. The networks
    // split it in two halves: networks' subnets never overlap.
    let externals = [Netns::new("next"), Netns::new("next")];
    let plan = [("10", "192.168.50.126/24"), ("20", "192.168.50.253/24")];
    for ((vid, addr), host) in plan.into_iter().zip(&externals) {
        let dev = format!("peer0.{vid}");
        let add = [
            "link", "add", "link", "peer0", "name", &dev, "type", "vlan", "id", vid,
        ];
        lan.switch.exec("ip", &add);
        lan.switch
            .exec("ip", &["link", "set", &dev, "netns", host.name()]);
        host.exec("ip", &["addr", "add", addr, "dev", &dev]);
        host.exec("ip", &["link", "set", &dev, "up"]);
    }
    for (vid, name, subnet) in [
        ("10", "v10", "192.168.50.0/25"),
        ("20", "v20", "192.168.50.128/25"),
    ] {
        let parent = format!("parent=eth0.{vid}");
        lan.netvlan(&["network", "create", "--subnet", subnet, "-o", &parent, name])
            .ok();
    }
    let vlan = lan.host.link_json("eth0.10");
    assert_eq!(vlan["linkinfo"]["info_data"]["id"], 10, "{vlan:#}");
    assert_eq!(
        lan.inspect("v10")["Netvlan"]["ParentCreatedByNetvlan"],
        true
    );

    let a = lan.container(false);
    let b = lan.container(false);
    let c = lan.container(false);
    lan.netvlan(&["connect", "--ip", "192.168.50.10", "v10", a.name()])
        .ok();
    lan.netvlan(&["connect", "--ip", "192.168.50.11", "v10", b.name()])
        .ok();
    lan.netvlan(&["connect", "--ip", "192.168.50.130", "v20", c.name()])
        .ok();
    // The other half of the /24 on-link too: a ARPs for VLAN 20's
    // addresses on its own wire, and only the VLAN keeps it out.
    a.exec("ip", &["route", "add", "192.168.50.128/25", "dev", "eth0"]);
    assert!(a.can_ping("192.168.50.11"), "same VLAN must be reachable");
    assert!(
        a.can_ping("192.168.50.126"),
        "the VLAN 10 external host must be reachable"
    );
    assert!(
        !a.can_ping("192.168.50.130"),
        "VLAN 10 reached a VLAN 20 container"
    );
    assert!(
        !a.can_ping("192.168.50.253"),
        "VLAN 10 reached the VLAN 20 external host"
    );
    assert!(
        c.can_ping("192.168.50.253"),
        "VLAN 20 container reaches its external host"
    );

    // The datapath watches the trunk and counts per VLAN.
    let stats = lan
        .netvlan(&["stats", "--json", "--iface", "eth0"])
        .ok()
        .json();
    let vlans: Vec<u64> = stats["interfaces"][0]["vlans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vlan"].as_u64().unwrap())
        .collect();
    assert!(vlans.contains(&10) && vlans.contains(&20), "{stats:#}");

    for (net, ctr) in [("v10", &a), ("v10", &b), ("v20", &c)] {
        lan.netvlan(&["disconnect", net, ctr.name()]).ok();
    }
    lan.netvlan(&["network", "rm", "v10", "v20"]).ok();
    let links = lan.host_links();
    assert!(
        !links.iter().any(|l| l.starts_with("eth0.")),
        "sub-interfaces left: {links:?}"
    );
}

#[test]
fn ipvlan_l2_shares_the_parent_mac_and_l3_routes() {
    if !require_kernel_feature(KernelFeature::Ipvlan) {
        return;
    }
    let lan = Lan::new(false);
    lan.switch
        .exec("ip", &["addr", "add", "10.60.0.254/24", "dev", "peer0"]);
    lan.netvlan(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet",
        "10.60.0.0/24",
        "-o",
        "parent=eth0",
        "l2net",
    ])
    .ok();
    let taken = lan
        .netvlan(&[
            "network",
            "create",
            "-d",
            "ipvlan",
            "--subnet",
            "10.61.0.0/24",
            "-o",
            "parent=eth0",
            "other",
        ])
        .failed();
    assert!(
        taken
            .stderr
            .contains("network 'l2net' is already using parent interface eth0"),
        "{}",
        taken.stderr
    );
    let c = lan.container(false);
    lan.netvlan(&["connect", "l2net", c.name()]).ok();
    let parent_mac = lan.host.link_json("eth0")["address"].clone();
    assert_eq!(
        c.link_json("eth0")["address"],
        parent_mac,
        "ipvlan endpoints show the parent's MAC"
    );
    assert_eq!(c.link_json("eth0")["linkinfo"]["info_data"]["mode"], "l2");
    assert!(
        c.can_ping("10.60.0.254"),
        "ipvlan l2 endpoint reaches the LAN"
    );
    lan.netvlan(&["disconnect", "l2net", c.name()]).ok();
    lan.netvlan(&["network", "rm", "l2net"]).ok();

    lan.netvlan(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet",
        "10.70.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "ipvlan_mode=l3",
        "l3net",
    ])
    .ok();
    let d = lan.container(false);
    lan.netvlan(&["connect", "l3net", d.name()]).ok();
    assert_eq!(d.link_json("eth0")["linkinfo"]["info_data"]["mode"], "l3");
    let route = String::from_utf8(d.exec("ip", &["route", "show", "default"]).stdout).unwrap();
    assert!(
        route.contains("default dev eth0"),
        "l3 routes out of the device: {route}"
    );
    lan.netvlan(&["disconnect", "l3net", d.name()]).ok();
    lan.netvlan(&["network", "rm", "l3net"]).ok();
}

#[test]
fn restore_after_a_simulated_reboot_brings_back_links_datapath_and_connectivity() {
    let lan = Lan::new(false);
    lan.switch
        .exec("ip", &["addr", "add", "172.16.88.254/24", "dev", "peer0"]);
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "172.16.88.0/24",
        "-o",
        "parent=eth0",
        "boot",
    ])
    .ok();
    let c = lan.container(false);
    let gone = lan.container(false);
    lan.netvlan(&["connect", "boot", c.name()]).ok();
    lan.netvlan(&["connect", "boot", gone.name()]).ok();

    // "Reboot": the endpoints' links vanish, bpffs is empty, and one
    // sandbox never comes back.
    c.exec("ip", &["link", "del", "eth0"]);
    lan.netvlan(&["datapath", "detach", "--force", "eth0"]).ok();
    let gone_name = gone.name().to_string();
    drop(gone);

    let report = lan.netvlan(&["restore", "--json"]).ok().json();
    let actions: Vec<String> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_string())
        .collect();
    assert!(
        actions
            .iter()
            .any(|a| a.starts_with("attach datapath to eth0")),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a == &format!("recreate eth0 in {}", c.name())),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a == &format!("drop endpoint of vanished sandbox {gone_name}")),
        "{actions:?}"
    );
    assert!(
        report["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["error"].is_null()),
        "{report:#}"
    );

    assert_eq!(
        c.link_json("eth0")["address"],
        "02:42:ac:10:58:02",
        "same MAC after restore"
    );
    assert!(c.can_ping("172.16.88.254"), "connectivity after restore");
    let stats = lan.netvlan(&["stats", "--json"]).ok().json();
    let mac = stats["interfaces"][0]["macs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mac"] == "02:42:ac:10:58:02")
        .cloned();
    let mac =
        mac.unwrap_or_else(|| panic!("restored datapath did not count the container: {stats:#}"));
    assert_eq!(mac["network"], "boot");
    assert_eq!(mac["endpoint"], c.name());
    assert!(
        mac["rx_packets"].as_u64() > Some(0),
        "the ping's replies were counted: {mac:#}"
    );

    let again = lan.netvlan(&["restore", "--json"]).ok().json();
    assert_eq!(
        again["actions"],
        serde_json::json!([]),
        "restore is idempotent"
    );
    let inspect = lan.inspect("boot");
    assert_eq!(
        inspect["Containers"].as_object().unwrap().len(),
        1,
        "the vanished sandbox's endpoint is gone"
    );
    lan.netvlan(&["disconnect", "boot", c.name()]).ok();
    lan.netvlan(&["network", "rm", "boot"]).ok();
}

#[test]
fn restore_recreates_the_vlan_sub_interface_it_created() {
    if !require_kernel_feature(KernelFeature::Vlan) {
        return;
    }
    let lan = Lan::new(false);
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "192.168.30.0/24",
        "-o",
        "parent=eth0.30",
        "v30",
    ])
    .ok();
    let c = lan.container(false);
    lan.netvlan(&["connect", "v30", c.name()]).ok();
    lan.host.exec("ip", &["link", "del", "eth0.30"]); // takes the endpoint with it
    let report = lan.netvlan(&["restore", "--json"]).ok().json();
    let actions: Vec<&str> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"recreate parent eth0.30"), "{actions:?}");
    assert_eq!(
        lan.host.link_json("eth0.30")["linkinfo"]["info_data"]["id"],
        30
    );
    assert!(
        lan.host.link_json("eth0.30")["ifalias"]
            .as_str()
            .is_some_and(|a| a.starts_with("netvlan:")),
        "the recreated VLAN link carries netvlan's owner tag: {:#}",
        lan.host.link_json("eth0.30")
    );
    assert_eq!(c.link_json("eth0")["linkinfo"]["info_kind"], "macvlan");
    lan.netvlan(&["disconnect", "v30", c.name()]).ok();
    lan.netvlan(&["network", "rm", "v30"]).ok();
    assert!(!lan.host_links().contains(&"eth0.30".to_string()));
}

#[test]
fn endpoints_announce_themselves_with_gratuitous_arp() {
    let lan = Lan::new(false);
    lan.switch
        .exec("ip", &["addr", "add", "172.16.89.254/24", "dev", "peer0"]);
    // Let the "switch" learn from unsolicited ARP, as a LAN peer would.
    lan.switch.exec(
        "sh",
        &["-c", "echo 1 > /proc/sys/net/ipv4/conf/peer0/arp_accept"],
    );
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "172.16.89.0/24",
        "-o",
        "parent=eth0",
        "garp",
    ])
    .ok();
    let c = lan.container(false);
    lan.netvlan(&["connect", "garp", c.name()]).ok();
    let learned = netvlan_tests::wait_for(std::time::Duration::from_secs(5), || {
        let neigh = String::from_utf8(
            lan.switch
                .exec("ip", &["neigh", "show", "172.16.89.2"])
                .stdout,
        )
        .unwrap();
        neigh.contains("02:42:ac:10:59:02").then_some(neigh)
    });
    assert!(
        learned.is_some(),
        "the LAN never learned the endpoint without traffic"
    );
    lan.netvlan(&["disconnect", "garp", c.name()]).ok();
    lan.netvlan(&["network", "rm", "garp"]).ok();
}

#[test]
fn macvlan_networks_share_a_parent_unless_passthru() {
    let lan = Lan::new(false);
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.80.0.0/24",
        "-o",
        "parent=eth0",
        "a",
    ])
    .ok();
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.81.0.0/24",
        "-o",
        "parent=eth0",
        "b",
    ])
    .ok();
    let pt = lan
        .netvlan(&[
            "network",
            "create",
            "--subnet",
            "10.82.0.0/24",
            "-o",
            "parent=eth0",
            "-o",
            "macvlan_mode=passthru",
            "p",
        ])
        .failed();
    assert!(
        pt.stderr.contains("is already using parent interface eth0"),
        "{}",
        pt.stderr
    );
    lan.netvlan(&["network", "rm", "a", "b"]).ok();

    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.82.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "macvlan_mode=passthru",
        "p",
    ])
    .ok();
    let c1 = lan.container(false);
    let c2 = lan.container(false);
    lan.netvlan(&["connect", "p", c1.name()]).ok();
    assert_eq!(
        c1.link_json("eth0")["linkinfo"]["info_data"]["mode"],
        "passthru"
    );
    let second = lan.netvlan(&["connect", "p", c2.name()]).failed();
    assert!(
        second
            .stderr
            .contains("passthru network 'p' already has its one endpoint"),
        "{}",
        second.stderr
    );
    lan.netvlan(&["disconnect", "p", c1.name()]).ok();
    lan.netvlan(&["network", "rm", "p"]).ok();
}

#[test]
fn every_macvlan_mode_is_configured_in_the_kernel() {
    let lan = Lan::new(false);
    for (i, mode) in ["bridge", "vepa", "private"].into_iter().enumerate() {
        let name = format!("m{mode}");
        let subnet = format!("10.9{i}.0.0/24");
        let opt = format!("macvlan_mode={mode}");
        lan.netvlan(&[
            "network",
            "create",
            "--subnet",
            &subnet,
            "-o",
            "parent=eth0",
            "-o",
            &opt,
            &name,
        ])
        .ok();
        let c = lan.container(false);
        lan.netvlan(&["connect", &name, c.name()]).ok();
        assert_eq!(c.link_json("eth0")["linkinfo"]["info_data"]["mode"], mode);
        assert_eq!(lan.inspect(&name)["Options"]["macvlan_mode"], mode);
        lan.netvlan(&["disconnect", &name, c.name()]).ok();
        lan.netvlan(&["network", "rm", &name]).ok();
    }
}

#[test]
fn internal_network_without_parent_connects_its_containers_only() {
    let lan = Lan::new(false);
    let created = lan
        .netvlan(&[
            "network",
            "create",
            "--subnet",
            "10.99.0.0/24",
            "--json",
            "island",
        ])
        .ok()
        .json();
    assert_eq!(created["Internal"], true);
    assert_eq!(created["Netvlan"]["ParentKind"], "placeholder");
    let placeholder = created["Netvlan"]["Parent"].as_str().unwrap().to_string();
    assert!(
        lan.host_links().contains(&placeholder),
        "placeholder {placeholder} missing"
    );
    let a = lan.container(false);
    let b = lan.container(false);
    lan.netvlan(&["connect", "island", a.name()]).ok();
    lan.netvlan(&["connect", "island", b.name()]).ok();
    assert!(
        a.can_ping("10.99.0.3"),
        "containers on an internal network reach each other"
    );
    let routes = String::from_utf8(a.exec("ip", &["route", "show", "default"]).stdout).unwrap();
    assert!(
        routes.trim().is_empty(),
        "internal networks get no default route: {routes}"
    );
    for c in [&a, &b] {
        lan.netvlan(&["disconnect", "island", c.name()]).ok();
    }
    lan.netvlan(&["network", "rm", "island"]).ok();
    assert!(
        !lan.host_links().contains(&placeholder),
        "placeholder {placeholder} left behind"
    );
    assert_eq!(lan.bpf.contents(), Vec::<String>::new());
}

/// The links netvlan put into container `c` (all but `lo`): empty when
/// nothing is left.
fn container_links(c: &Netns) -> Vec<String> {
    c.link_names().into_iter().filter(|n| n != "lo").collect()
}

#[test]
fn a_failure_at_any_step_of_create_leaves_nothing_behind() {
    let lan = Lan::new(false);
    let links_before = lan.host_links();
    // An internal network creates its placeholder parent; a network on eth0
    // attaches the datapath: between them every create step is covered.
    let plans: [&[&str]; 2] = [
        &[
            "network",
            "create",
            "--subnet",
            "10.50.0.0/24",
            "internal-rb",
        ],
        &[
            "network",
            "create",
            "--subnet",
            "10.51.0.0/24",
            "-o",
            "parent=eth0",
            "parent-rb",
        ],
    ];
    for point in [
        "create-after-parent",
        "create-after-datapath",
        "create-before-persist",
    ] {
        for args in plans {
            lan.fails_at(point, args);
            assert_eq!(
                lan.netvlan(&["network", "ls", "--json"]).ok().json(),
                serde_json::json!([]),
                "{point}: state left"
            );
            assert_eq!(lan.host_links(), links_before, "{point}: links left");
            assert_eq!(
                lan.bpf.contents(),
                Vec::<String>::new(),
                "{point}: pins left"
            );
        }
    }
    // And without a fault the same commands work.
    for args in plans {
        lan.netvlan(args).ok();
    }
    lan.netvlan(&["network", "rm", "internal-rb", "parent-rb"])
        .ok();
}

#[test]
fn a_failure_at_any_step_of_connect_leaves_nothing_behind() {
    let lan = Lan::new(false);
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.52.0.0/24",
        "-o",
        "parent=eth0",
        "conn-rb",
    ])
    .ok();
    let c = lan.container(false);
    for point in [
        "connect-after-link",
        "connect-after-addresses",
        "connect-before-persist",
    ] {
        lan.fails_at(point, &["connect", "conn-rb", c.name()]);
        assert_eq!(
            container_links(&c),
            Vec::<String>::new(),
            "{point}: link left in the sandbox"
        );
        assert_eq!(
            lan.inspect("conn-rb")["Containers"],
            serde_json::json!({}),
            "{point}: endpoint recorded"
        );
    }
    // No address leaked: the first real connect still gets the first address.
    let ok = lan
        .netvlan(&["connect", "--json", "conn-rb", c.name()])
        .ok()
        .json();
    assert_eq!(ok["endpoint"]["ipv4"], "10.52.0.2/24");
    lan.netvlan(&["disconnect", "conn-rb", c.name()]).ok();
    lan.netvlan(&["network", "rm", "conn-rb"]).ok();
}

#[test]
fn a_killed_create_is_cleaned_up_by_the_next_command() {
    let lan = Lan::new(false);
    let links_before = lan.host_links();
    // Killed right after creating its placeholder parent.
    lan.kill_midway(
        "create-after-parent",
        &["network", "create", "--subnet", "10.54.0.0/24", "killed"],
        // There, the placeholder exists and carries its owner tag.
        || {
            let out = lan.host.exec("ip", &["-d", "-j", "link", "show"]);
            let links: Value = serde_json::from_slice(&out.stdout).unwrap();
            links.as_array().unwrap().iter().any(|l| {
                l["ifname"].as_str().unwrap_or("").starts_with("nvd-")
                    && l["ifalias"].as_str().unwrap_or("").starts_with("netvlan:")
            })
        },
    );
    assert_ne!(
        lan.host_links(),
        links_before,
        "the killed command left its placeholder (as expected)"
    );
    let ls = lan.netvlan(&["network", "ls", "--json"]).ok();
    assert_eq!(ls.json(), serde_json::json!([]));
    assert!(
        ls.stderr.contains("left by an interrupted command"),
        "{}",
        ls.stderr
    );
    assert_eq!(
        lan.host_links(),
        links_before,
        "recovery removed the orphan"
    );

    // Killed right after attaching the datapath to eth0.
    lan.kill_midway(
        "create-after-datapath",
        &[
            "network",
            "create",
            "--subnet",
            "10.55.0.0/24",
            "-o",
            "parent=eth0",
            "killed",
        ],
        // Attached and pinned in place: the command is at the fail point.
        // The program's pin is there at either hook (a clsact filter, on
        // kernels before 6.6, has no link to pin).
        || {
            lan.bpf
                .contents()
                .iter()
                .any(|p| p.contains("/if-") && p.ends_with("/prog"))
        },
    );
    lan.netvlan(&["network", "ls"]).ok();
    assert!(
        lan.host.link_json("eth0").get("xdp").is_none(),
        "the orphaned attachment is gone"
    );
    assert_eq!(lan.bpf.contents(), Vec::<String>::new(), "its pins too");
}

#[test]
fn a_killed_connect_is_cleaned_up_by_the_next_command() {
    let lan = Lan::new(false);
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.56.0.0/24",
        "-o",
        "parent=eth0",
        "victim",
    ])
    .ok();
    let c = lan.container(false);
    lan.kill_midway(
        "connect-after-link",
        &["connect", "victim", c.name()],
        || !container_links(&c).is_empty(),
    );
    assert_eq!(
        container_links(&c).len(),
        1,
        "the killed connect left its link (as expected)"
    );
    let inspect = lan.netvlan(&["network", "inspect", "victim"]).ok();
    assert!(
        inspect.stderr.contains("left by an interrupted connect"),
        "{}",
        inspect.stderr
    );
    assert_eq!(
        container_links(&c),
        Vec::<String>::new(),
        "recovery removed the orphan link"
    );
    assert_eq!(inspect.json()[0]["Containers"], serde_json::json!({}));
    let ok = lan
        .netvlan(&["connect", "--json", "victim", c.name()])
        .ok()
        .json();
    assert_eq!(
        ok["endpoint"]["ipv4"], "10.56.0.2/24",
        "no address was lost"
    );
    lan.netvlan(&["disconnect", "victim", c.name()]).ok();
    lan.netvlan(&["network", "rm", "victim"]).ok();
}

/// Recovery rewrites the policy only on wires that run netvlan's
/// datapath: one detached by hand is `restore`'s business, and must not
/// make the next command fail.
#[test]
fn a_killed_connect_on_a_wire_whose_datapath_was_detached_is_still_recovered() {
    let lan = Lan::new(false);
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.57.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "hook=xdp",
        "bare",
    ])
    .ok();
    let link_pin = lan
        .bpf
        .contents()
        .into_iter()
        .find(|p| p.contains("/if-") && p.ends_with("/link"))
        .expect("the XDP link is pinned");
    netvlan_tests::sh(
        "bpftool",
        &[
            "link",
            "detach",
            "pinned",
            lan.bpf.path().join(&link_pin).to_str().unwrap(),
        ],
    );
    assert!(lan.host.link_json("eth0").get("xdp").is_none());
    let c = lan.container(false);
    lan.kill_midway("connect-after-link", &["connect", "bare", c.name()], || {
        !container_links(&c).is_empty()
    });
    let ls = lan.netvlan(&["network", "ls"]).ok();
    assert!(
        ls.stderr.contains("left by an interrupted connect"),
        "{}",
        ls.stderr
    );
    assert_eq!(container_links(&c), Vec::<String>::new());
    let drifts = lan.netvlan(&["check", "--json"]).failed().json()["drifts"].clone();
    assert!(
        drifts
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["kind"] == "datapath_missing"),
        "the detached datapath is left for restore: {drifts:#}"
    );
    lan.netvlan(&["restore"]).ok();
    assert!(lan.host.link_json("eth0").get("xdp").is_some());
    lan.netvlan(&["connect", "bare", c.name()]).ok();
    lan.netvlan(&["disconnect", "bare", c.name()]).ok();
    lan.netvlan(&["network", "rm", "bare"]).ok();
    assert_eq!(lan.bpf.contents(), Vec::<String>::new());
}
