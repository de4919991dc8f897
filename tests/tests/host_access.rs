//! Host access (`-o host_access=`): the namespace holding the parent
//! reaches its macvlan endpoints and they it, in `shim` mode through a
//! macvlan link of the host's; `off` shows the kernel's isolation.
//!
//! Lab: the host namespace (where netvlan runs) holds the parent `eth0`,
//! the switch namespace the LAN peer on its other end (the gateway's
//! addresses), endpoints made with the CLI in namespaces of their own.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use netvlan_tests::{
    frame::{FrameBuilder, Mac},
    packet::PacketSocket,
    require_kernel_feature, wait_for, KernelFeature, Lan, Netns,
};
use serde_json::Value;

const V4_SUBNET: &str = "10.86.0.0/24";
const V6_SUBNET: &str = "fd86::/64";

/// A dual-stack network `lan` on eth0 (gateways 10.86.0.1 and fd86::1 on
/// the switch side) with `options`, and eth0 holding 10.86.0.250, the
/// host's own address in the subnet, reserved as an aux-address as in the
/// seeds.
fn dual_stack(options: &[&str]) -> Lan {
    let lan = dual_stack_lab();
    create_lan(&lan, options);
    lan
}

/// [`dual_stack`]'s namespaces and addresses, without the network.
fn dual_stack_lab() -> Lan {
    let lan = Lan::new(true);
    lan.switch
        .exec("ip", &["addr", "add", "10.86.0.1/24", "dev", "peer0"]);
    lan.switch.exec(
        "ip",
        &["addr", "add", "fd86::1/64", "dev", "peer0", "nodad"],
    );
    lan.host
        .exec("ip", &["addr", "add", "10.86.0.250/24", "dev", "eth0"]);
    no_tentative_addresses(&lan.switch);
    lan
}

/// The network `lan` of [`dual_stack`], with `options`.
fn create_lan(lan: &Lan, options: &[&str]) {
    create_network(lan, "macvlan", options).ok();
}

/// [`create_lan`] with another driver; the run, to check either way.
fn create_network(lan: &Lan, driver: &str, options: &[&str]) -> netvlan_tests::Run {
    let mut args = vec![
        "network",
        "create",
        "-d",
        driver,
        "--subnet",
        V4_SUBNET,
        "--gateway",
        "10.86.0.1",
        "--subnet",
        V6_SUBNET,
        "--gateway",
        "fd86::1",
        "--aux-address",
        "host=10.86.0.250",
        "-o",
        "parent=eth0",
    ];
    for o in options {
        args.extend(["-o", o]);
    }
    args.push("lan");
    lan.netvlan(&args)
}

/// A container on `lan` with both families, its addresses usable (not
/// tentative): returns it with its IPv4 and IPv6 address.
fn endpoint(lan: &Lan) -> (Netns, String, String) {
    let ctr = lan.container(true);
    lan.netvlan(&["connect", "lan", ctr.name()]).ok();
    let entry = lan.inspect_container("lan", ctr.name());
    let addr = |key: &str| {
        entry[key]
            .as_str()
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("no {key} in {entry:#}"))
            .to_string()
    };
    let (v4, v6) = (addr("IPv4Address"), addr("IPv6Address"));
    no_tentative_addresses(&ctr);
    (ctr, v4, v6)
}

/// Waits until duplicate address detection is over on every address of
/// `ns` (the kernel's own timer; nothing here depends on guessing it).
fn no_tentative_addresses(ns: &Netns) {
    let done = wait_for(Duration::from_secs(10), || {
        let out = ns.exec("ip", &["-6", "addr", "show", "tentative"]);
        out.stdout.is_empty().then_some(())
    });
    assert!(done.is_some(), "addresses of {} stay tentative", ns.name());
}

fn host_access(lan: &Lan) -> Value {
    lan.inspect("lan")["Netvlan"]["HostAccess"].clone()
}

/// The host addresses inspect reports, IPv4 then IPv6.
fn host_addresses(lan: &Lan) -> (String, String) {
    let access = host_access(lan);
    let list: Vec<String> = access["Addresses"]
        .as_array()
        .unwrap_or_else(|| panic!("no Addresses: {access:#}"))
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(list.len(), 2, "one address per family: {access:#}");
    let v4 = list.iter().find(|a| !a.contains(':')).unwrap().clone();
    let v6 = list.iter().find(|a| a.contains(':')).unwrap().clone();
    (v4, v6)
}

/// A TCP exchange: `server` listens on `addr`, `client` connects, sends a
/// request and reads the server's answer.
fn tcp_exchange(server: &Netns, client: &Netns, addr: &str, port: u16) {
    let at: SocketAddr = SocketAddr::new(addr.parse().unwrap(), port);
    let listener = server
        .in_thread(|| Ok(TcpListener::bind(at)?))
        .unwrap_or_else(|e| panic!("listen on {at}: {e:#}"));
    let served = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut conn, _) = listener.accept()?;
        let mut request = [0u8; 4];
        conn.read_exact(&mut request)?;
        conn.write_all(b"pong")?;
        Ok(request.to_vec())
    });
    let answer = client
        .in_thread(|| {
            let mut conn = TcpStream::connect_timeout(&at, Duration::from_secs(5))?;
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            conn.write_all(b"ping")?;
            let mut answer = Vec::new();
            conn.read_to_end(&mut answer)?;
            Ok(answer)
        })
        .unwrap_or_else(|e| panic!("TCP from {} to {at}: {e:#}", client.name()));
    assert_eq!(answer, b"pong", "answer from {at}");
    assert_eq!(served.join().unwrap().unwrap(), b"ping");
}

/// Everything netvlan could leave in the host namespace: links, addresses,
/// routes (both families), TC filters on eth0.
fn host_kernel_view(ns: &Netns) -> String {
    let mut view = String::new();
    for args in [
        &["-o", "link", "show"][..],
        &["-o", "addr", "show"],
        &["route", "show"],
        &["-6", "route", "show"],
        &["-6", "neigh", "show", "nud", "permanent"],
        &["neigh", "show", "nud", "permanent"],
    ] {
        let out = ns.exec("ip", args);
        view.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    for hook in ["ingress", "egress"] {
        let out = ns.exec("tc", &["filter", "show", "dev", "eth0", hook]);
        view.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    // Link statistics and timers change on their own; names, flags and
    // addresses do not.
    view.lines()
        .map(|l| {
            l.split_whitespace()
                .filter(|w| !w.contains("sec") && !w.ends_with("lft"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|l| !l.contains("fe80::") && !l.contains("lft"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `network rm lan` leaves the host's kernel as [`host_kernel_view`] saw
/// it in `before`; returns the view after, for further checks.
fn rm_leaves_nothing(lan: &Lan, before: &str) -> String {
    lan.netvlan(&["network", "rm", "lan"]).ok();
    let after = host_kernel_view(&lan.host);
    let left: Vec<&str> = after
        .lines()
        .filter(|l| !before.lines().any(|b| b == *l))
        .collect();
    assert!(
        left.is_empty(),
        "left behind after rm:\n{}",
        left.join("\n")
    );
    after
}

/// The reachability this mode promises, both ways and both families.
fn host_and_endpoints_reach_each_other(lan: &Lan, endpoints: &[(Netns, String, String)]) {
    let (host_v4, host_v6) = host_addresses(lan);
    for (i, (ctr, v4, v6)) in endpoints.iter().enumerate() {
        for addr in [v4, v6] {
            assert!(lan.host.can_ping(addr), "host -> endpoint {addr}");
            tcp_exchange(ctr, &lan.host, addr, 7100 + i as u16);
            assert!(lan.switch.can_ping(addr), "LAN peer -> endpoint {addr}");
        }
        for addr in [&host_v4, &host_v6] {
            assert!(ctr.can_ping(addr), "endpoint {v4} -> host {addr}");
            tcp_exchange(&lan.host, ctr, addr, 7200 + i as u16);
        }
    }
}

#[test]
fn off_the_host_cannot_reach_its_endpoints_nor_they_it() {
    let lan = dual_stack(&[]);
    let access = host_access(&lan);
    assert_eq!(access["Mode"], "off", "{access:#}");
    assert_eq!(access["Addresses"], serde_json::json!([]));
    assert!(access.get("Link").is_none(), "{access:#}");
    let (ctr, v4, _v6) = endpoint(&lan);
    // The kernel keeps a parent and its macvlan children apart.
    assert!(
        !lan.host.can_ping(&v4),
        "host -> endpoint {v4} without host access"
    );
    assert!(
        !ctr.can_ping("10.86.0.250"),
        "endpoint -> host without host access"
    );
    // The LAN still reaches it.
    assert!(lan.switch.can_ping(&v4));
}

#[test]
fn shim_host_and_endpoints_reach_each_other_after_restore_and_rm_leaves_nothing() {
    let lan = dual_stack_lab();
    let before = host_kernel_view(&lan.host);
    create_lan(&lan, &["host_access=shim"]);
    let access = host_access(&lan);
    assert_eq!(access["Mode"], "shim", "{access:#}");
    assert_eq!(access["Requested"], "shim", "{access:#}");
    let link = access["Link"].as_str().expect("a shim link").to_string();
    assert!(link.starts_with("nvh-") && link.len() <= 15, "{link}");
    let (host_v4, host_v6) = host_addresses(&lan);
    assert!(host_v4.starts_with("10.86.0.") && host_v6.starts_with("fd86::"));
    assert_ne!(host_v4, "10.86.0.1", "not the gateway");
    assert_ne!(host_v4, "10.86.0.250", "not the aux-address");
    // The shim is a bridge-mode macvlan on eth0, up, holding the addresses.
    let shim = lan.host.link_json(&link);
    assert_eq!(shim["linkinfo"]["info_kind"], "macvlan", "{shim:#}");
    assert_eq!(shim["linkinfo"]["info_data"]["mode"], "bridge", "{shim:#}");
    assert_eq!(shim["link"], "eth0", "{shim:#}");
    assert!(shim["flags"].to_string().contains("UP"), "{shim:#}");
    for knob in ["eth0", link.as_str()] {
        let read = |key: &str| {
            let path = format!("/proc/sys/net/ipv4/conf/{knob}/{key}");
            let out = lan.host.exec("cat", &[&path]);
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(
            (read("arp_ignore"), read("arp_announce")),
            ("1".into(), "2".into()),
            "{knob}"
        );
    }

    // Two endpoints; no endpoint gets a host address.
    let endpoints = [endpoint(&lan), endpoint(&lan)];
    for (_, v4, v6) in &endpoints {
        assert!(v4 != &host_v4 && v6 != &host_v6, "{v4} {v6}");
    }
    let routes = lan.host.exec("ip", &["route", "show", "dev", &link]);
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    for (_, v4, _) in &endpoints {
        assert!(
            routes.contains(&format!("{v4} ")),
            "route to {v4}: {routes}"
        );
    }
    host_and_endpoints_reach_each_other(&lan, &endpoints);
    let run = lan.netvlan(&["check"]).ok();
    assert!(run.stdout.contains("no drift"), "{}", run.stdout);

    // The shim deleted by hand: check names it, restore brings it back.
    lan.host.exec("ip", &["link", "del", &link]);
    let drifts = lan.netvlan(&["check", "--json"]).failed().json()["drifts"].clone();
    assert!(
        drifts
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["kind"] == "host_access_link_missing"),
        "{drifts:#}"
    );
    assert!(!lan.host.can_ping(&endpoints[0].1), "the shim is gone");
    lan.netvlan(&["restore"]).ok();
    host_and_endpoints_reach_each_other(&lan, &endpoints);

    // A route deleted by hand, and one added to nowhere.
    let (gone_v4, gone_v6) = (&endpoints[1].1, &endpoints[1].2);
    lan.host
        .exec("ip", &["route", "del", gone_v4, "dev", &link]);
    lan.host
        .exec("ip", &["-6", "route", "del", gone_v6, "dev", &link]);
    lan.host
        .exec("ip", &["route", "add", "10.86.0.77", "dev", &link]);
    let drifts = lan.netvlan(&["check", "--json"]).failed().json()["drifts"].clone();
    let kinds: Vec<&str> = drifts
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "host_access_route_missing")
            .count(),
        2,
        "{drifts:#}"
    );
    assert!(kinds.contains(&"host_access_route_extra"), "{drifts:#}");
    lan.netvlan(&["restore"]).ok();
    let clean = lan.netvlan(&["check", "--json"]).ok();
    assert_eq!(clean.json()["drifts"], serde_json::json!([]));
    // No netvlan process runs now: the kernel carries it alone.
    host_and_endpoints_reach_each_other(&lan, &endpoints);

    // Disconnect takes the endpoint's routes along.
    for (ctr, v4, _) in &endpoints {
        lan.netvlan(&["disconnect", "lan", ctr.name()]).ok();
        let routes = lan.host.exec("ip", &["route", "show", "dev", &link]);
        assert!(
            !String::from_utf8_lossy(&routes.stdout).contains(&format!("{v4} ")),
            "route to {v4} after disconnect"
        );
    }
    let after = rm_leaves_nothing(&lan, &before);
    assert!(!after.contains("nvh-"), "{after}");
    for knob in ["arp_ignore", "arp_announce"] {
        let path = format!("/proc/sys/net/ipv4/conf/eth0/{knob}");
        let out = lan.host.exec("cat", &[&path]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0",
            "{knob} put back"
        );
    }
    assert_eq!(lan.bpf.contents(), Vec::<String>::new(), "pins left");
}

#[test]
fn ebpf_host_and_endpoints_reach_each_other_after_restore_and_rm_leaves_nothing() {
    let lan = dual_stack_lab();
    let before = host_kernel_view(&lan.host);
    create_lan(&lan, &["host_access=ebpf"]);
    let access = host_access(&lan);
    assert_eq!(access["Mode"], "ebpf", "{access:#}");
    assert!(access.get("Link").is_none(), "no extra link: {access:#}");
    // IPv4: the host's own address on eth0 (the aux-address); IPv6: eth0
    // has none in the subnet, so netvlan reserved one and gave it eth0.
    let (host_v4, host_v6) = host_addresses(&lan);
    assert_eq!(host_v4, "10.86.0.250");
    let eth0 = String::from_utf8_lossy(
        &lan.host
            .exec("ip", &["-6", "addr", "show", "dev", "eth0"])
            .stdout,
    )
    .into_owned();
    assert!(
        eth0.contains(&format!("{host_v6}/64")),
        "{host_v6} on eth0: {eth0}"
    );
    let links = lan.host_links();
    assert!(!links.iter().any(|l| l.starts_with("nvh-")), "{links:?}");
    let pins = lan.bpf.contents();
    assert!(
        pins.iter().any(|p| p.contains("hairpin")),
        "the hairpin is pinned: {pins:?}"
    );

    let endpoints = [endpoint(&lan), endpoint(&lan)];
    host_and_endpoints_reach_each_other(&lan, &endpoints);
    let run = lan.netvlan(&["check"]).ok();
    assert!(run.stdout.contains("no drift"), "{}", run.stdout);

    // The address netvlan added deleted by hand: named, and restored.
    lan.host.exec(
        "ip",
        &["-6", "addr", "del", &format!("{host_v6}/64"), "dev", "eth0"],
    );
    let drifts = lan.netvlan(&["check", "--json"]).failed().json()["drifts"].clone();
    assert!(
        drifts
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["kind"] == "host_access_address_missing"),
        "{drifts:#}"
    );
    lan.netvlan(&["restore"]).ok();
    let clean = lan.netvlan(&["check", "--json"]).ok();
    assert_eq!(clean.json()["drifts"], serde_json::json!([]));
    // No netvlan process runs: the pinned hairpin carries it alone.
    host_and_endpoints_reach_each_other(&lan, &endpoints);

    for (ctr, _, _) in &endpoints {
        lan.netvlan(&["disconnect", "lan", ctr.name()]).ok();
    }
    let after = rm_leaves_nothing(&lan, &before);
    assert!(
        after.contains("10.86.0.250"),
        "the parent's own address stays"
    );
    // TC filters on eth0 are in the kernel view compared above.
    assert_eq!(lan.bpf.contents(), Vec::<String>::new(), "pins left");
}

/// The endpoint's counters as `stats --json` reports them.
fn endpoint_stats(lan: &Lan, sandbox: &str) -> Value {
    let stats = lan.netvlan(&["stats", "--json"]).ok().json();
    stats["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["endpoint"] == sandbox).cloned())
        .unwrap_or_else(|| panic!("no stats for {sandbox}: {stats:#}"))
}

/// Host access is no way around anti-spoofing: in either mode, a
/// container that takes an address it was not given cannot reach the host
/// with it (the endpoint's egress program drops those frames and counts
/// them), while its own address still can. Without anti-spoofing the
/// spoofed ping would be answered: the host's ARP for the foreign address
/// reaches the container as any other broadcast does.
#[test]
fn host_access_keeps_anti_spoofing_a_container_reaches_the_host_only_as_itself() {
    for mode in ["shim", "ebpf"] {
        let lan = dual_stack(&[&format!("host_access={mode}")]);
        let (host_v4, _) = host_addresses(&lan);
        let (ctr, v4, _) = endpoint(&lan);
        assert!(ctr.can_ping(&host_v4), "{mode}: endpoint {v4} -> host");
        let before = endpoint_stats(&lan, ctr.name());

        ctr.exec("ip", &["addr", "add", "10.86.0.77/32", "dev", "eth0"]);
        let spoofed = ctr
            .command("ping")
            .args(["-c", "3", "-W", "1", "-I", "10.86.0.77", &host_v4])
            .output()
            .expect("ping runs");
        assert_eq!(
            spoofed.status.code(),
            Some(1),
            "{mode}: a ping from an address the container was not given reached the host: {}",
            String::from_utf8_lossy(&spoofed.stdout)
        );
        let after = endpoint_stats(&lan, ctr.name());
        let grew = after["spoofed_packets"].as_u64().unwrap_or(0)
            - before["spoofed_packets"].as_u64().unwrap_or(0);
        assert!(
            grew >= 3,
            "{mode}: the three spoofed echo requests were not counted as spoofed: \
             {before:#} -> {after:#}"
        );
        ctr.exec("ip", &["addr", "del", "10.86.0.77/32", "dev", "eth0"]);
        assert!(
            ctr.can_ping(&host_v4),
            "{mode}: its own address still reaches the host"
        );

        lan.netvlan(&["disconnect", "lan", ctr.name()]).ok();
        lan.netvlan(&["network", "rm", "lan"]).ok();
    }

    // The same spoofed ping with spoofcheck=off is answered through the
    // hairpin: what the check above drops would otherwise get through.
    let lan = dual_stack(&["host_access=ebpf", "spoofcheck=off"]);
    let (host_v4, _) = host_addresses(&lan);
    let (ctr, _, _) = endpoint(&lan);
    ctr.exec("ip", &["addr", "add", "10.86.0.77/32", "dev", "eth0"]);
    let answered = ctr
        .command("ping")
        .args(["-c", "3", "-W", "1", "-I", "10.86.0.77", &host_v4])
        .output()
        .expect("ping runs");
    assert!(
        answered.status.success(),
        "with spoofcheck=off the host answers the foreign address: {}",
        String::from_utf8_lossy(&answered.stdout)
    );
    lan.netvlan(&["disconnect", "lan", ctr.name()]).ok();
    lan.netvlan(&["network", "rm", "lan"]).ok();
}

/// ipvlan l2 (VM lane: the host kernel has no ipvlan): `on` picks the
/// hairpin, which tells the endpoints apart by their addresses (they share
/// the parent's MAC); shim is refused by name; l3 has no host access.
#[test]
fn ipvlan_l2_host_access_reaches_every_endpoint_and_l3_is_refused_by_name() {
    if !require_kernel_feature(KernelFeature::Ipvlan) {
        return;
    }
    let lan = dual_stack_lab();
    let before = host_kernel_view(&lan.host);
    let shim = create_network(&lan, "ipvlan", &["ipvlan_mode=l2", "host_access=shim"]).failed();
    assert!(
        shim.stderr.contains("host_access") && shim.stderr.contains("ipvlan"),
        "shim on ipvlan is refused naming both: {}",
        shim.stderr
    );
    let l3 = create_network(&lan, "ipvlan", &["ipvlan_mode=l3", "host_access=ebpf"]).failed();
    assert!(l3.stderr.contains("l3"), "names the mode: {}", l3.stderr);
    assert_eq!(
        host_kernel_view(&lan.host),
        before,
        "a refusal changes nothing"
    );

    create_network(&lan, "ipvlan", &["ipvlan_mode=l2", "host_access=on"]).ok();
    assert_eq!(host_access(&lan)["Mode"], "ebpf");
    let endpoints = [endpoint(&lan), endpoint(&lan)];
    host_and_endpoints_reach_each_other(&lan, &endpoints);
    for (ctr, _, _) in &endpoints {
        lan.netvlan(&["disconnect", "lan", ctr.name()]).ok();
    }
    rm_leaves_nothing(&lan, &before);
}

/// Host access is no way around the wire's policy either: the hairpin
/// re-injects only what the host and its endpoints send each other (marked,
/// so the wire's TC program lets those by), and a denied source MAC on the
/// LAN is still dropped before it reaches an endpoint, and counted.
#[test]
fn host_access_keeps_the_wires_policy_a_denied_lan_mac_still_never_arrives() {
    const DENIED: Mac = [0x02, 0, 0, 0, 0, 0x66];
    const SENDER: Mac = [0x02, 0, 0, 0, 0, 0x67];
    let lan = dual_stack(&["host_access=ebpf", "hook=tc", "mac_deny=02:00:00:00:00:66"]);
    let (ctr, v4, _) = endpoint(&lan);
    assert!(
        lan.host.can_ping(&v4),
        "host -> endpoint through the hairpin"
    );
    let mac = ctr.mac("eth0");
    let listener = PacketSocket::listen(&ctr, "eth0");
    let before = lan.stats_after(0)["frames"]["rx_packets"].as_u64().unwrap();
    let socket = PacketSocket::open(&lan.switch, "peer0");
    socket.send_many(&FrameBuilder::new(mac, DENIED).build(70), 6);
    socket.send_many(&FrameBuilder::new(mac, SENDER).build(70), 3);
    let stats = lan.stats_after(before + 9);
    assert_eq!(
        stats["drops"]["mac_denied"]["rx_packets"], 6,
        "the denied frames are dropped and counted: {stats:#}"
    );
    let arrived = |src: Mac| {
        listener
            .received()
            .iter()
            .filter(|f| f.len() >= 14 && f[..6] == mac && f[6..12] == src)
            .count()
    };
    let good = wait_for(Duration::from_secs(3), || {
        (arrived(SENDER) >= 3).then_some(())
    });
    assert!(good.is_some(), "legitimate LAN frames still arrive");
    assert_eq!(
        arrived(DENIED),
        0,
        "a denied LAN frame reached the endpoint"
    );
    assert!(lan.host.can_ping(&v4), "and the host still reaches it");
    lan.netvlan(&["disconnect", "lan", ctr.name()]).ok();
    lan.netvlan(&["network", "rm", "lan"]).ok();
}

#[test]
fn update_moves_between_modes_all_or_nothing() {
    let lan = dual_stack(&[]);
    let (ctr, v4, v6) = endpoint(&lan);
    let before = host_kernel_view(&lan.host);
    assert!(!lan.host.can_ping(&v4));

    // off -> shim: the existing endpoint gets its routes.
    lan.netvlan(&["network", "update", "lan", "-o", "host_access=shim"])
        .ok();
    assert_eq!(host_access(&lan)["Mode"], "shim");
    let endpoints = [(ctr, v4, v6)];
    host_and_endpoints_reach_each_other(&lan, &endpoints);
    let (auto_v4, _) = host_addresses(&lan);

    // shim -> shim on a given address, kept for IPv4, IPv6 as it was.
    lan.netvlan(&["network", "update", "lan", "--host-ip", "10.86.0.240"])
        .ok();
    let (given_v4, _) = host_addresses(&lan);
    assert_eq!(given_v4, "10.86.0.240");
    host_and_endpoints_reach_each_other(&lan, &endpoints);
    // The address given up is free again: the next endpoint may take it.
    let (other, other_v4, _) = endpoint(&lan);
    assert_eq!(other_v4, auto_v4, "the released host address is reused");
    lan.netvlan(&["disconnect", "lan", other.name()]).ok();

    // shim -> ebpf: the shim goes, the hairpin comes; the host's IPv4
    // address is its own on eth0 now.
    lan.netvlan(&["network", "update", "lan", "-o", "host_access=ebpf"])
        .ok();
    let access = host_access(&lan);
    assert_eq!(access["Mode"], "ebpf", "{access:#}");
    assert!(access.get("Link").is_none(), "{access:#}");
    assert_eq!(host_addresses(&lan).0, "10.86.0.250");
    assert!(!host_kernel_view(&lan.host).contains("nvh-"));
    host_and_endpoints_reach_each_other(&lan, &endpoints);

    // on: the better mode that works here (the hairpin).
    lan.netvlan(&["network", "update", "lan", "-o", "host_access=on"])
        .ok();
    let access = host_access(&lan);
    assert_eq!(
        (access["Requested"].as_str(), access["Mode"].as_str()),
        (Some("on"), Some("ebpf"))
    );
    host_and_endpoints_reach_each_other(&lan, &endpoints);

    // -> off: the kernel as it was before host access, isolation back.
    lan.netvlan(&["network", "update", "lan", "-o", "host_access=off"])
        .ok();
    let access = host_access(&lan);
    assert_eq!(access["Mode"], "off", "{access:#}");
    assert_eq!(access["Addresses"], serde_json::json!([]));
    assert_eq!(host_kernel_view(&lan.host), before);
    assert!(!lan.host.can_ping(&endpoints[0].1));
    let clean = lan.netvlan(&["check", "--json"]).ok();
    assert_eq!(clean.json()["drifts"], serde_json::json!([]));
}

#[test]
fn bad_host_access_input_is_refused_naming_it_and_changes_nothing() {
    let lan = dual_stack(&["host_access=shim"]);
    let (ctr, taken, _) = endpoint(&lan);
    let kernel = host_kernel_view(&lan.host);
    let stored = lan.netvlan(&["network", "inspect", "lan"]).ok().stdout;
    let refused = |args: &[String], mentions: &[&str]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = lan.netvlan(&args).failed();
        for m in mentions {
            assert!(
                run.stderr.contains(m),
                "{args:?}: '{m}' not in: {}",
                run.stderr
            );
        }
        assert_eq!(
            host_kernel_view(&lan.host),
            kernel,
            "{args:?} changed the kernel"
        );
        assert_eq!(
            lan.netvlan(&["network", "inspect", "lan"]).ok().stdout,
            stored,
            "{args:?} changed the state"
        );
    };
    let update = |extra: &[&str]| -> Vec<String> {
        ["network", "update", "lan"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    refused(
        &update(&["-o", "host_access=yes"]),
        &["host_access=yes", "off, on, shim, ebpf"],
    );
    refused(
        &update(&["--host-ip", "10.99.0.5"]),
        &["10.99.0.5", "outside", V4_SUBNET],
    );
    refused(
        &update(&["--host-ip", "10.86.0.1"]),
        &["10.86.0.1", "gateway"],
    );
    refused(
        &update(&["--host-ip", "10.86.0.250"]),
        &["10.86.0.250", "aux-address"],
    );
    refused(&update(&["--host-ip", &taken]), &[&taken, "in use"]);
    refused(
        &update(&["--host-ip", "10.86.0.5", "--host-ip", "10.86.0.6"]),
        &["10.86.0.6"],
    );
    refused(
        &update(&["-o", "mtu=1400"]),
        &["mtu", "cannot change after create"],
    );
    refused(&update(&["-o", "bogus=1"]), &["unknown option 'bogus'"]);
    refused(&update(&[]), &["nothing to change"]);
    // Still working as before.
    assert!(lan.host.can_ping(&taken));
    assert!(ctr.can_ping(&host_addresses(&lan).0));

    // At create: nothing made, nothing stored.
    let networks = lan.netvlan(&["network", "ls", "-q"]).ok().stdout;
    let create = |extra: &[&str]| -> Vec<String> {
        ["network", "create", "--subnet", "10.87.0.0/24"]
            .iter()
            .chain(extra)
            .chain(&["second"])
            .map(|s| s.to_string())
            .collect()
    };
    for (args, mentions) in [
        (
            create(&[
                "-o",
                "parent=eth0",
                "-o",
                "host_access=shim",
                "--host-ip",
                "10.86.0.9",
            ]),
            vec!["10.86.0.9", "outside"],
        ),
        (
            create(&["-o", "parent=eth0", "-o", "host_access=shim", "--internal"]),
            vec!["second", "internal"],
        ),
        (
            create(&["-o", "host_access=on"]),
            vec!["second", "internal"],
        ),
        (
            create(&[
                "-o",
                "parent=eth0",
                "-o",
                "macvlan_mode=private",
                "-o",
                "host_access=shim",
            ]),
            vec!["second", "macvlan_mode=private", "host_access=ebpf"],
        ),
        (
            create(&["-o", "parent=eth0", "--host-ip", "10.87.0.9"]),
            vec!["--host-ip 10.87.0.9", "host_access"],
        ),
    ] {
        refused(&args, &mentions);
        assert_eq!(lan.netvlan(&["network", "ls", "-q"]).ok().stdout, networks);
    }
}

#[test]
fn an_update_killed_half_way_is_undone_by_the_next_command() {
    let lan = dual_stack(&[]);
    let (_ctr, v4, _) = endpoint(&lan);
    let shim = |lan: &Lan| lan.host_links().into_iter().find(|l| l.starts_with("nvh-"));
    lan.kill_midway(
        "update-before-persist",
        &["network", "update", "lan", "-o", "host_access=shim"],
        || shim(&lan).is_some(),
    );
    // Made, not committed: the next command takes it back.
    lan.netvlan(&["network", "ls"]).ok();
    assert_eq!(shim(&lan), None, "the shim of the killed update");
    for knob in ["arp_ignore", "arp_announce"] {
        let path = format!("/proc/sys/net/ipv4/conf/eth0/{knob}");
        let out = lan.host.exec("cat", &[&path]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0",
            "{knob} put back"
        );
    }
    assert_eq!(host_access(&lan)["Mode"], "off");
    let routes = lan.host.exec("ip", &["route", "show"]);
    assert!(
        !String::from_utf8_lossy(&routes.stdout).contains(&format!("{v4} ")),
        "route to {v4} left"
    );
    let clean = lan.netvlan(&["check", "--json"]).ok();
    assert_eq!(clean.json()["drifts"], serde_json::json!([]));
}
