//! `host_access=ebpf`'s datapath: the hairpin at the parent's TC egress
//! (`netvlan::datapath::host_access`), attached through the library.
//!
//! The lab: the host namespace holds the parent `eth0` with its own
//! addresses in the network's subnets (10.71.0.250, fd00:71::250, kept
//! out of IPAM with `--aux-address`), the switch namespace is the LAN
//! peer (the gateways .1 and ::1), and two endpoints sit on `eth0`.
//! Without the hairpin the host cannot reach them (the kernel's
//! isolation); with it, ping and TCP work both ways, IPv4 and IPv6.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netvlan::datapath::{
    host_access::{HairpinLower, HairpinSpec, HairpinStatus},
    Datapath, DatapathError, WireMode,
};
use netvlan::sys::netlink::IpvlanMode;
use netvlan_tests::{require_kernel_feature, wait_for, KernelFeature, Lan, Netns};
use serde_json::Value;

const HOST4: &str = "10.71.0.250";
const HOST6: &str = "fd00:71::250";

/// Set in the child process that attaches the hairpin and is then killed:
/// `NSPATH;BPF_DIR;LOWER`.
const CHILD_ENV: &str = "NETVLAN_TEST_HAIRPIN_CHILD";
const READY: &str = "hairpin-attached";

struct Setup {
    lab: Lan,
    endpoints: Vec<(Netns, String, String)>,
}

/// The lab with a dual-stack network `hp` on `eth0` (`-d driver` and
/// `options` added) and two endpoints, each with its IPv4 and IPv6 address.
fn setup(driver: &str, options: &[&str]) -> Setup {
    setup_on(driver, "eth0", options)
}

/// [`setup`] on `parent`: `eth0`, or `eth0.VID`, which netvlan creates
/// (the switch gets `peer0.VID`).
fn setup_on(driver: &str, parent: &str, options: &[&str]) -> Setup {
    let lab = Lan::new(true);
    let lan_link = match parent.split_once('.') {
        Some((_, vid)) => {
            let link = format!("peer0.{vid}");
            lab.switch.exec(
                "ip",
                &[
                    "link", "add", "link", "peer0", "name", &link, "type", "vlan", "id", vid,
                ],
            );
            lab.switch.exec("ip", &["link", "set", &link, "up"]);
            link
        }
        None => "peer0".to_string(),
    };
    for addr in ["10.71.0.1/24", "fd00:71::1/64"] {
        lab.switch
            .exec("ip", &["addr", "add", addr, "dev", &lan_link, "nodad"]);
    }
    let parent_option = format!("parent={parent}");
    let mut args = vec![
        "network",
        "create",
        "-d",
        driver,
        "--subnet",
        "10.71.0.0/24",
        "--subnet",
        "fd00:71::/64",
        "--aux-address",
        "host=10.71.0.250",
        "--aux-address",
        "host6=fd00:71::250",
        "-o",
        &parent_option,
    ];
    for o in options {
        args.extend(["-o", o]);
    }
    args.push("hp");
    lab.netvlan(&args).ok();
    for addr in [format!("{HOST4}/24"), format!("{HOST6}/64")] {
        lab.host
            .exec("ip", &["addr", "add", &addr, "dev", parent, "nodad"]);
    }
    let mut endpoints = Vec::new();
    for _ in 0..2 {
        let c = lab.container(true);
        let run = lab
            .netvlan(&["connect", "--json", "hp", c.name()])
            .ok()
            .json();
        let addr = |k: &str| {
            let a = run["endpoint"][k]
                .as_str()
                .unwrap_or_else(|| panic!("{run:#}"));
            a.split('/').next().unwrap().to_string()
        };
        let (v4, v6) = (addr("ipv4"), addr("ipv6"));
        endpoints.push((c, v4, v6));
    }
    // The LAN reaches each endpoint (also: their IPv6 addresses are usable).
    for (_, v4, v6) in &endpoints {
        for a in [v4, v6] {
            assert!(
                wait_for(Duration::from_secs(10), || lab
                    .switch
                    .can_ping(a)
                    .then_some(()))
                .is_some(),
                "the LAN peer cannot reach {a}"
            );
        }
    }
    Setup { lab, endpoints }
}

fn lower_text(lower: HairpinLower) -> &'static str {
    match lower {
        HairpinLower::Macvlan => "macvlan",
        HairpinLower::Ipvlan {
            mode: IpvlanMode::L2,
        } => "l2",
        HairpinLower::Ipvlan {
            mode: IpvlanMode::L3,
        } => "l3",
        HairpinLower::Ipvlan { .. } => "l3s",
    }
}

fn lower_of(text: &str) -> HairpinLower {
    match text {
        "macvlan" => HairpinLower::Macvlan,
        "l2" => HairpinLower::Ipvlan {
            mode: IpvlanMode::L2,
        },
        "l3" => HairpinLower::Ipvlan {
            mode: IpvlanMode::L3,
        },
        _ => HairpinLower::Ipvlan {
            mode: IpvlanMode::L3s,
        },
    }
}

/// Runs `job` with the host namespace's datapath, through the library.
fn with_datapath<T: Send>(
    lab: &Lan,
    job: impl FnOnce(&Datapath) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + '_>> + Send,
) -> T {
    let bpf = lab.bpf.path().to_path_buf();
    lab.host
        .in_thread(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let datapath = Datapath::open(&bpf)?;
                Ok(job(&datapath).await)
            })
        })
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn attach(lab: &Lan, lower: HairpinLower) -> Result<HairpinStatus, DatapathError> {
    attach_on(lab, "eth0", 0, lower)
}

fn attach_on(
    lab: &Lan,
    link: &str,
    vlan: u16,
    lower: HairpinLower,
) -> Result<HairpinStatus, DatapathError> {
    let link = link.to_string();
    with_datapath(lab, |dp| {
        Box::pin(async move {
            dp.attach_hairpin(&HairpinSpec {
                wire: "eth0",
                link: &link,
                vlan,
                lower,
            })
            .await
        })
    })
}

fn status(lab: &Lan) -> Option<HairpinStatus> {
    with_datapath(lab, |dp| Box::pin(dp.hairpin_status("eth0"))).expect("status")
}

fn detach(lab: &Lan) -> bool {
    with_datapath(lab, |dp| Box::pin(dp.detach_hairpin("eth0"))).expect("detach")
}

/// The child's part: attach, say so, and wait to be killed.
fn child_attach(spec: &str) {
    let parts: Vec<&str> = spec.split(';').collect();
    let ns = netvlan::sys::netns::Netns::open(Path::new(parts[0])).expect("open the namespace");
    let _inside = netvlan::sys::netns::NetnsGuard::enter(&ns).expect("enter it");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let status = rt
        .block_on(async {
            let dp = Datapath::open(Path::new(parts[1]))?;
            dp.attach_hairpin(&HairpinSpec {
                wire: "eth0",
                link: "eth0",
                vlan: 0,
                lower: lower_of(parts[2]),
            })
            .await
        })
        .unwrap_or_else(|e| panic!("attach_hairpin: {e}"));
    println!("{READY} {}", status.prog_id);
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

/// Attaches the hairpin from a process of its own (this test binary
/// running only `test`, as the child), then SIGKILLs that process: what
/// it attached must live on in its pins.
fn attach_in_a_killed_process(lab: &Lan, test: &str, lower: HairpinLower) -> u32 {
    let spec = format!(
        "{};{};{}",
        lab.host.path().display(),
        lab.bpf.path().display(),
        lower_text(lower)
    );
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the child");
    let mut seen = String::new();
    let mut prog_id = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // libtest prints the test's name before it on the same line.
        if let Some((_, id)) = line.split_once(READY) {
            prog_id = Some(id.trim().parse().unwrap());
            break;
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    child.kill().expect("SIGKILL our own child");
    child.wait().expect("reap it");
    let Some(prog_id) = prog_id else {
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).ok();
        panic!("the child never attached:\n{seen}{err}");
    };
    prog_id
}

/// One TCP exchange: `client` connects to `addr` served from `server`,
/// sends a line and reads the answer.
fn tcp_exchange(server: &Netns, client: &Netns, addr: &str) -> Result<String, String> {
    let ip: IpAddr = addr.parse().unwrap();
    let listener = server
        .in_thread(|| Ok(TcpListener::bind(SocketAddr::new(ip, 0))?))
        .map_err(|e| format!("bind {addr}: {e:#}"))?;
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let served = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut line = String::new();
                    BufReader::new(s.try_clone().unwrap())
                        .read_line(&mut line)
                        .ok();
                    let _ = s.write_all(format!("pong {line}").as_bytes());
                    return;
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(_) => return,
            }
        }
    });
    let answer = client
        .in_thread(|| {
            let mut s =
                TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"ping\n")?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            Ok(answer)
        })
        .map_err(|e| format!("{addr}:{port}: {e:#}"));
    served.join().unwrap();
    answer
}

/// (rx packets, tx packets) of the endpoint of `sandbox`.
fn endpoint_counters(lab: &Lan, sandbox: &str) -> (u64, u64) {
    let stats = lab.netvlan(&["stats", "--json"]).ok().json();
    let e = stats["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["endpoint"] == sandbox).cloned())
        .unwrap_or_else(|| panic!("no endpoint stats for {sandbox}: {stats:#}"));
    (
        e["rx_packets"].as_u64().unwrap(),
        e["tx_packets"].as_u64().unwrap(),
    )
}

/// Frames the wire counted to `mac` (its registration's rx).
fn wire_rx_to(lab: &Lan, mac: &str) -> u64 {
    let wire = lab
        .netvlan(&["stats", "--iface", "eth0", "--json"])
        .ok()
        .json();
    wire["interfaces"][0]["macs"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["mac"] == mac).cloned())
        .map_or(0, |m: Value| m["rx_packets"].as_u64().unwrap_or(0))
}

fn ping_n(from: &Netns, addr: &str, n: u32) -> bool {
    from.command("ping")
        .args(["-c", &n.to_string(), "-i", "0.05", "-W", "2", addr])
        .output()
        .expect("nsenter runs")
        .status
        .success()
}

/// Every direction, both families: host <-> each endpoint, ping and TCP.
fn assert_host_access(s: &Setup) {
    let lab = &s.lab;
    for (c, v4, v6) in &s.endpoints {
        for addr in [v4, v6] {
            assert!(
                wait_for(Duration::from_secs(5), || lab
                    .host
                    .can_ping(addr)
                    .then_some(()))
                .is_some(),
                "host -> {addr}: no ping reply through the hairpin"
            );
            assert_eq!(
                tcp_exchange(c, &lab.host, addr).as_deref(),
                Ok("pong ping\n"),
                "host -> {addr} over TCP"
            );
        }
        for host in [HOST4, HOST6] {
            assert!(
                wait_for(Duration::from_secs(5), || c.can_ping(host).then_some(())).is_some(),
                "{} -> host {host}: no ping reply",
                c.name()
            );
            assert_eq!(
                tcp_exchange(&lab.host, c, host).as_deref(),
                Ok("pong ping\n"),
                "{} -> host {host} over TCP",
                c.name()
            );
        }
    }
    // The LAN still reaches them.
    for (_, v4, v6) in &s.endpoints {
        assert!(lab.switch.can_ping(v4), "LAN -> {v4}");
        assert!(lab.switch.can_ping(v6), "LAN -> {v6}");
    }
}

fn egress_filters(lab: &Lan) -> String {
    String::from_utf8(
        lab.host
            .exec("tc", &["filter", "show", "dev", "eth0", "egress"])
            .stdout,
    )
    .unwrap()
}

fn tcx_egress(lab: &Lan) -> Vec<u32> {
    lab.host
        .in_thread(|| {
            Ok(aya::programs::SchedClassifier::query_tcx(
                "eth0",
                aya::programs::TcAttachType::Egress,
            )
            .map(|(_, p)| p.iter().map(|p| p.id()).collect())
            .unwrap_or_default())
        })
        .unwrap()
}

const MACVLAN_TEST: &str = "macvlan_host_and_endpoints_reach_each_other_only_through_the_hairpin";

#[test]
fn macvlan_host_and_endpoints_reach_each_other_only_through_the_hairpin() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child_attach(&spec);
    }
    let s = setup("macvlan", &[]);
    let lab = &s.lab;
    let (a, a4, a6) = &s.endpoints[0];

    // The kernel's isolation: the host cannot reach its own endpoints.
    for addr in [a4, a6] {
        assert!(
            !lab.host.can_ping(addr),
            "host -> {addr} without the hairpin"
        );
    }
    assert!(!a.can_ping(HOST4), "endpoint -> host without the hairpin");
    assert_eq!(status(lab), None, "no hairpin yet");

    // Attached by a process that is then SIGKILLed: its pins hold it.
    let prog_id = attach_in_a_killed_process(lab, MACVLAN_TEST, HairpinLower::Macvlan);
    let st = status(lab).expect("the hairpin runs after its process was killed");
    assert_eq!(st.prog_id, prog_id);
    assert!(st.current, "{st:?}");
    assert_host_access(&s);

    // Idempotent: the same program, nothing added.
    let again = attach(lab, HairpinLower::Macvlan).expect("attach again");
    assert_eq!(again, st);

    // Counted per endpoint, no loops, and not counted as LAN traffic.
    let mac_a = netvlan_tests::frame::mac_string(&a.mac("eth0"));
    let (rx0, tx0) = endpoint_counters(lab, a.name());
    let wire0 = wire_rx_to(lab, &mac_a);
    assert!(ping_n(&lab.host, a4, 20), "20 pings host -> {a4}");
    let (rx1, tx1) = endpoint_counters(lab, a.name());
    let wire1 = wire_rx_to(lab, &mac_a);
    assert!(
        (20..=40).contains(&(rx1 - rx0)) && (20..=40).contains(&(tx1 - tx0)),
        "the endpoint counted {} in, {} out for 20 echo requests (loops, or uncounted)",
        rx1 - rx0,
        tx1 - tx0
    );
    assert!(
        wire1 - wire0 < 20,
        "the wire counted {} frames to {mac_a}: re-injected frames counted as LAN traffic",
        wire1 - wire0
    );

    // Detach: nothing left, and the isolation is back.
    assert!(detach(lab), "detach removes the hairpin");
    assert!(!detach(lab), "a second detach has nothing to do");
    assert_eq!(status(lab), None);
    let pins: Vec<_> = lab
        .bpf
        .contents()
        .into_iter()
        .filter(|p| p.contains("hairpin"))
        .collect();
    assert!(pins.is_empty(), "pins left: {pins:?}");
    assert!(
        !egress_filters(lab).contains("bpf"),
        "{}",
        egress_filters(lab)
    );
    assert!(
        !tcx_egress(lab).contains(&prog_id),
        "TCX egress still runs {prog_id}"
    );
    assert!(!lab.host.can_ping(a4), "host -> {a4} after detach");
}

/// `datapath upgrade` swaps the wire's program and keeps its maps: the
/// hairpin reads them still. A wire attached afresh (new maps) leaves the
/// hairpin reading the old ones: status says so, and attach replaces it.
#[test]
fn a_hairpin_survives_an_upgrade_and_is_replaced_on_a_reattached_wire() {
    let s = setup("macvlan", &[]);
    let lab = &s.lab;
    let (_, a4, _) = &s.endpoints[0];
    let first = attach(lab, HairpinLower::Macvlan).expect("attach");
    lab.netvlan(&["datapath", "upgrade", "--force"]).ok();
    assert_eq!(status(lab).as_ref(), Some(&first), "after the upgrade");
    assert!(
        wait_for(Duration::from_secs(5), || lab
            .host
            .can_ping(a4)
            .then_some(()))
        .is_some(),
        "host -> {a4} after the upgrade"
    );
    lab.netvlan(&["datapath", "detach", "eth0", "--force"]).ok();
    lab.netvlan(&["restore"]).ok();
    let stale = status(lab).expect("the hairpin still runs");
    assert!(!stale.current, "{stale:?}");
    let fresh = attach(lab, HairpinLower::Macvlan).expect("re-attach");
    assert!(fresh.current && fresh.prog_id != first.prog_id, "{fresh:?}");
    assert!(
        wait_for(Duration::from_secs(5), || lab
            .host
            .can_ping(a4)
            .then_some(()))
        .is_some(),
        "host -> {a4} with the re-attached hairpin"
    );
    assert!(detach(lab));
}

/// ipvlan l2: the endpoints share the parent's MAC and are told apart by
/// their registered addresses. VM lane (the host kernel has no ipvlan);
/// there it also runs the clsact egress filter (6.1 has no TCX).
#[test]
fn ipvlan_l2_host_and_endpoints_reach_each_other_through_the_hairpin() {
    if !require_kernel_feature(KernelFeature::Ipvlan) {
        return;
    }
    let s = setup("ipvlan", &["ipvlan_mode=l2"]);
    let lab = &s.lab;
    let (_, a4, a6) = &s.endpoints[0];
    for addr in [a4, a6] {
        assert!(
            !lab.host.can_ping(addr),
            "host -> {addr} without the hairpin"
        );
    }
    let l2 = HairpinLower::Ipvlan {
        mode: IpvlanMode::L2,
    };
    let st = attach(lab, l2).expect("attach on ipvlan l2");
    assert!(st.current, "{st:?}");
    assert_host_access(&s);
    assert!(detach(lab));
    assert!(!lab.host.can_ping(a4), "host -> {a4} after detach");
}

/// ipvlan l3/l3s endpoints do no ARP or neighbour discovery on the
/// parent: the hairpin cannot give them host access, and says so, naming
/// the link and the mode, with nothing attached or pinned.
#[test]
fn ipvlan_l3_modes_are_refused_by_the_hairpin_with_a_clear_error() {
    let lab = Lan::new(false);
    for (mode, text) in [(IpvlanMode::L3, "l3"), (IpvlanMode::L3s, "l3s")] {
        let err = attach(&lab, HairpinLower::Ipvlan { mode }).expect_err("refused");
        let msg = err.to_string();
        assert!(
            matches!(err, DatapathError::HairpinUnsupported { .. })
                && msg.contains("eth0")
                && msg.contains(&format!("ipvlan mode {text} ")),
            "{msg}"
        );
    }
    assert_eq!(status(&lab), None);
    assert!(lab.bpf.contents().is_empty(), "{:?}", lab.bpf.contents());
    assert!(!egress_filters(&lab).contains("bpf"));
}

/// On an 802.1Q sub-interface: the hairpin runs on `eth0.10` and looks the
/// endpoints up on VLAN 10 in the maps of the wire `eth0`. VM lane (the
/// host kernel has no 8021q).
#[test]
fn macvlan_on_a_vlan_sub_interface_reaches_the_host_through_the_hairpin() {
    if !require_kernel_feature(KernelFeature::Vlan) {
        return;
    }
    let s = setup_on("macvlan", "eth0.10", &[]);
    let lab = &s.lab;
    let (_, a4, _) = &s.endpoints[0];
    assert!(!lab.host.can_ping(a4), "host -> {a4} without the hairpin");
    // The wrong VLAN finds no endpoint: nothing is hairpinned.
    attach_on(lab, "eth0.10", 20, HairpinLower::Macvlan).expect("attach on VLAN 20");
    assert!(
        !lab.host.can_ping(a4),
        "host -> {a4} hairpinned on the wrong VLAN"
    );
    with_datapath(lab, |dp| Box::pin(dp.detach_hairpin("eth0.10"))).expect("detach");
    let st = attach_on(lab, "eth0.10", 10, HairpinLower::Macvlan).expect("attach");
    assert!(st.current, "{st:?}");
    assert_host_access(&s);
    assert!(with_datapath(lab, |dp| Box::pin(dp.detach_hairpin("eth0.10"))).expect("detach"));
}

/// With the wire at XDP (which never sees re-injected frames) nothing is
/// marked, and host access works the same; the endpoint resolves the
/// host's addresses itself (ARP, NDP) before the host has sent it anything.
#[test]
fn the_hairpin_works_beside_a_wire_at_xdp() {
    let s = setup("macvlan", &["hook=xdp"]);
    let lab = &s.lab;
    let (a, a4, a6) = &s.endpoints[0];
    assert!(!lab.host.can_ping(a4), "host -> {a4} without the hairpin");
    attach(lab, HairpinLower::Macvlan).expect("attach");
    // The endpoint first, with nothing learned yet: its own ARP request
    // and neighbour solicitation must reach the host (the clones).
    for host in [HOST4, HOST6] {
        assert!(
            wait_for(Duration::from_secs(5), || a.can_ping(host).then_some(())).is_some(),
            "endpoint -> host {host} beside a wire at XDP"
        );
    }
    for addr in [a4, a6] {
        assert!(
            lab.host.can_ping(addr),
            "host -> {addr} beside a wire at XDP"
        );
    }
    assert!(detach(lab));
}

/// `datapath status` lists a hairpin under the wire of its link (text and
/// JSON); the pins of a hairpin whose link is gone show as stale, and
/// `datapath prune` removes them and nothing else.
#[test]
fn datapath_status_lists_hairpins_under_their_wire_and_prune_removes_one_whose_link_is_gone() {
    let s = setup("macvlan", &[]);
    let lab = &s.lab;
    let wire_of = |json: &Value| -> Value {
        json["attachments"]
            .as_array()
            .unwrap_or_else(|| panic!("{json:#}"))
            .iter()
            .find(|a| a["ifname"] == "eth0" && a["state"] == "attached")
            .unwrap_or_else(|| panic!("no wire on eth0: {json:#}"))
            .clone()
    };
    let before = lab.netvlan(&["datapath", "status", "--json"]).ok().json();
    assert!(
        wire_of(&before).get("hairpin").is_none(),
        "no hairpin yet: {before:#}"
    );

    let st = attach(lab, HairpinLower::Macvlan).expect("attach");
    let json = lab.netvlan(&["datapath", "status", "--json"]).ok().json();
    let hairpin = wire_of(&json)["hairpin"].clone();
    assert_eq!(hairpin["prog_id"], st.prog_id, "{json:#}");
    assert_eq!(hairpin["link"], "eth0", "{json:#}");
    assert_eq!(hairpin["current"], true, "{json:#}");
    let text = lab.netvlan(&["datapath", "status"]).ok().stdout;
    let line = format!(
        "hairpin (host access): TC egress, {}, program {}",
        st.mode, st.prog_id
    );
    let wire_line = text
        .lines()
        .position(|l| l.starts_with("eth0 "))
        .unwrap_or_else(|| panic!("no eth0 row:\n{text}"));
    assert_eq!(
        text.lines().nth(wire_line + 1).map(str::trim),
        Some(line.as_str()),
        "the hairpin under its wire:\n{text}"
    );

    // A second hairpin, on a link that then goes away with its program.
    lab.host.exec(
        "ip",
        &["link", "add", "hp1", "type", "veth", "peer", "name", "hp1p"],
    );
    let gone = attach_on(lab, "hp1", 0, HairpinLower::Macvlan).expect("attach on hp1");
    let gone_dir = format!("hairpin-{}", gone.ifindex);
    assert!(
        lab.bpf.contents().iter().any(|p| p.ends_with(&gone_dir)),
        "{:?}",
        lab.bpf.contents()
    );
    lab.host.exec("ip", &["link", "del", "hp1"]);
    let json = lab.netvlan(&["datapath", "status", "--json"]).ok().json();
    let stale: Vec<&Value> = json["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "stale")
        .collect();
    assert_eq!(stale.len(), 1, "{json:#}");
    assert_eq!(stale[0]["ifindex"], gone.ifindex, "{json:#}");
    assert!(
        stale[0]["pin_dir"].as_str().unwrap().ends_with(&gone_dir),
        "{json:#}"
    );
    assert_eq!(wire_of(&json)["hairpin"]["prog_id"], st.prog_id, "{json:#}");

    let pruned = lab.netvlan(&["datapath", "prune", "--json"]).ok().json();
    let removed = pruned["removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1, "{pruned:#}");
    assert!(
        removed[0]["pin_dir"].as_str().unwrap().ends_with(&gone_dir),
        "{pruned:#}"
    );
    let pins = lab.bpf.contents();
    assert!(!pins.iter().any(|p| p.contains(&gone_dir)), "{pins:?}");
    // The live hairpin and its wire are untouched.
    assert_eq!(status(lab), Some(st));
    assert_host_access(&s);
    let again = lab.netvlan(&["datapath", "prune"]).ok().stdout;
    assert!(again.contains("nothing stale"), "{again}");
}

/// A `host_access=ebpf` update SIGKILLed after the hairpin went onto the
/// link and was pinned into its staging directory, before the rename: the
/// next update removes the dead process's staging pins and what they kept
/// attached, and runs exactly one hairpin; `host_access=off` leaves nothing.
#[test]
fn a_hairpin_attach_killed_before_its_rename_leaves_nothing_behind() {
    let s = setup("macvlan", &[]);
    let lab = &s.lab;
    let staging = || {
        lab.bpf
            .contents()
            .into_iter()
            .filter(|p| p.contains("staging-hairpin-"))
            .collect::<Vec<_>>()
    };
    let update = ["network", "update", "hp", "-o", "host_access=ebpf"];
    lab.kill_midway("hairpin-before-rename", &update, || {
        staging()
            .iter()
            .any(|p| p.ends_with("/link") || p.ends_with("/prog"))
    });
    assert!(
        !staging().is_empty(),
        "the killed attach left its staging pins"
    );
    assert_eq!(status(lab), None, "no hairpin in place");

    lab.netvlan(&update).ok();
    assert_eq!(staging(), Vec::<String>::new(), "staging pins removed");
    let st = status(lab).expect("the hairpin runs");
    if st.mode == WireMode::Tcx {
        assert_eq!(tcx_egress(lab), vec![st.prog_id], "exactly one hairpin");
    } else {
        // `tc` prints a header line per priority and one line per filter
        // (the one with its handle).
        let filters = egress_filters(lab);
        let hairpins = filters
            .lines()
            .filter(|l| l.contains(" handle ") && l.contains("netvlan_hairpin"))
            .count();
        assert_eq!(hairpins, 1, "exactly one filter:\n{filters}");
    }
    assert_host_access(&s);

    lab.netvlan(&["network", "update", "hp", "-o", "host_access=off"])
        .ok();
    assert_eq!(status(lab), None);
    let pins: Vec<_> = lab
        .bpf
        .contents()
        .into_iter()
        .filter(|p| p.contains("hairpin"))
        .collect();
    assert!(pins.is_empty(), "pins left: {pins:?}");
    assert!(tcx_egress(lab).is_empty(), "{:?}", tcx_egress(lab));
    assert!(
        !egress_filters(lab).contains("bpf"),
        "{}",
        egress_filters(lab)
    );
}
