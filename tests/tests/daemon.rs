//! The daemon beside the datapath: killing it loses no packet, filter or
//! count; its local API socket is root's alone; the CLI answers the same
//! through it as without it.

use std::{
    os::unix::fs::{FileTypeExt, MetadataExt},
    time::Duration,
};

use netvlan_tests::{
    daemon::Daemon,
    frame::{parse_mac, FrameBuilder, Mac},
    packet::PacketSocket,
    require_root, wait_for, Lan, Netns,
};
use serde_json::Value;

const SENDER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x11];
const STRANGER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x77];

/// A network on eth0 dropping unknown destinations at XDP (before any
/// packet socket on eth0 could see them), with one connected container.
fn guarded_lab(subnet: &str) -> (Lan, Netns, Mac) {
    let lan = Lan::new(false);
    lan.create_network(
        "guarded",
        subnet,
        &["parent=eth0", "unknown_dst=drop", "hook=xdp"],
    )
    .ok();
    let c = Netns::new("dctr");
    let run = lan
        .netvlan(&["connect", "--json", "guarded", c.name()])
        .ok()
        .json();
    let mac = parse_mac(run["endpoint"]["mac"].as_str().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    (lan, c, mac)
}

/// Frames of `src` (to `dst`, if given) a listener got.
fn arrived(listener: &PacketSocket, dst: Option<Mac>, src: Mac) -> usize {
    listener
        .received()
        .iter()
        .filter(|f| f.len() >= 14 && f[6..12] == src && dst.is_none_or(|d| f[..6] == d))
        .count()
}

fn unknown_dst_drops(stats: &Value) -> u64 {
    stats["drops"]["unknown_dst"]["rx_packets"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_killed_daemon_stops_nothing_and_a_restarted_one_serves_the_same_totals() {
    require_root();
    let (lan, c, mac) = guarded_lab("10.71.0.0/24");
    let mut daemon = Daemon::start(&lan, &[]);
    let in_container = PacketSocket::listen(&c, "eth0");
    let on_host = PacketSocket::listen(&lan.host, "eth0");
    let wire = PacketSocket::open(&lan.switch, "peer0");
    let before = lan.stats_after(0)["frames"]["rx_packets"].as_u64().unwrap();
    let to_endpoint = FrameBuilder::new(mac, SENDER).build(64);
    let to_stranger = FrameBuilder::new(STRANGER, SENDER).build(64);

    // Traffic while the daemon runs...
    wire.send_many(&to_endpoint, 50);
    wire.send_many(&to_stranger, 50);
    lan.stats_after(before + 100);
    // ...and then it is killed mid-traffic: no chance to clean up.
    let status = daemon.stop_with(libc::SIGKILL);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(
        daemon.socket().exists(),
        "a killed daemon leaves its socket behind (stale)"
    );
    wire.send_many(&to_endpoint, 50);
    wire.send_many(&to_stranger, 50);

    // Counting went on without it: the CLI, finding the stale socket,
    // reads the maps itself.
    let stats = lan.stats_after(before + 200);
    assert_eq!(stats["frames"]["rx_packets"].as_u64(), Some(before + 200));
    assert_eq!(unknown_dst_drops(&stats), 100, "{stats:#}");
    let through_stale = daemon.netvlan(&lan, &["stats", "--iface", "eth0", "--json"]);
    assert_eq!(
        through_stale.ok().json()["interfaces"][0],
        stats,
        "a stale socket is no daemon: the CLI works without it"
    );
    // Enforcement had no gap: all 100 frames to the endpoint arrived, none
    // of the 100 to the stranger got past XDP, daemon or not.
    let got = wait_for(Duration::from_secs(3), || {
        let n = arrived(&in_container, Some(mac), SENDER);
        (n >= 100).then_some(n)
    });
    assert_eq!(got, Some(100), "the container got its frames");
    assert_eq!(
        arrived(&on_host, Some(STRANGER), SENDER),
        0,
        "no frame to the unknown destination passed the wire program"
    );

    // A restarted daemon replaces the stale socket and serves the same
    // totals as the maps read without it.
    daemon.restart(&lan);
    let (code, served) = daemon.api("/v1/stats");
    assert_eq!(code, 200, "{served}");
    let local = lan.netvlan(&["stats", "--json"]).ok().stdout;
    assert_eq!(served.trim_end(), local.trim_end());
    let served: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(unknown_dst_drops(&served["interfaces"][0]), 100);
    let endpoint = &served["endpoints"][0];
    assert_eq!(
        (
            endpoint["endpoint"].as_str(),
            endpoint["rx_packets"].as_u64()
        ),
        (Some(c.name()), Some(100)),
        "{served:#}"
    );
    let snapshot: Value = serde_json::from_str(&daemon.get("/api/snapshot")).unwrap();
    assert_eq!(snapshot["stats"], served, "the page shows the same totals");
}

#[test]
fn the_api_socket_is_roots_alone_a_live_one_is_refused_and_sigterm_removes_it() {
    require_root();
    let lan = Lan::new(false);
    let mut daemon = Daemon::start(&lan, &["--log-format", "json"]);
    let meta = std::fs::symlink_metadata(daemon.socket()).expect("the socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o7777, 0o600, "mode {:o}", meta.mode());
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "owned by root");

    let second = daemon.try_second(&lan);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second daemon must not start");
    assert!(
        stderr.contains(&format!(
            "another netvlan daemon answers on {}",
            daemon.socket().display()
        )),
        "{stderr}"
    );
    assert_eq!(
        daemon.api("/v1/stats").0,
        200,
        "the first daemon still serves"
    );

    let status = daemon.stop_with(libc::SIGTERM);
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
    assert!(
        !daemon.socket().exists(),
        "a daemon that stops removes its socket"
    );
    // JSON logs, one object a line, for journald.
    let log = daemon.log();
    let records: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    let messages: Vec<&str> = records
        .iter()
        .filter_map(|r| r["message"].as_str())
        .collect();
    assert!(messages.iter().any(|m| m.starts_with("serving")), "{log}");
    assert!(messages.contains(&"SIGTERM: shutting down"), "{log}");
    assert!(records.iter().all(|r| r["level"].is_string()), "{log}");

    // `--json` says the same, as the issue spells it.
    let mut daemon = Daemon::start(&lan, &["--json"]);
    assert!(daemon.stop_with(libc::SIGTERM).success());
    for line in daemon.log().lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
    }
}

#[test]
fn the_cli_prints_the_same_through_the_daemon_as_without_it() {
    require_root();
    let (lan, c, mac) = guarded_lab("10.72.0.0/24");
    let wire = PacketSocket::open(&lan.switch, "peer0");
    wire.send_many(&FrameBuilder::new(mac, SENDER).build(64), 20);
    wire.send_many(&FrameBuilder::new(STRANGER, SENDER).build(100), 7);
    lan.stats_after(27);
    let daemon = Daemon::start(&lan, &[]);

    for args in [
        &["stats", "--json"][..],
        &["stats", "--iface", "eth0", "--json"],
        &["stats"],
        &["network", "ls", "--json"],
        &["network", "inspect", "guarded"],
    ] {
        let args: Vec<&str> = args.iter().copied().chain(["-v"]).collect();
        let through = daemon.netvlan(&lan, &args).ok();
        let without = lan.netvlan(&args).ok();
        assert!(
            through.stderr.contains("answered by the daemon"),
            "{args:?} went through the daemon: {}",
            through.stderr
        );
        assert!(!without.stderr.contains("answered by the daemon"));
        assert_eq!(through.stdout, without.stdout, "{args:?}");
    }
    let stats = daemon.netvlan(&lan, &["stats", "--json"]).ok().json();
    assert_eq!(unknown_dst_drops(&stats["interfaces"][0]), 7);
    assert_eq!(stats["endpoints"][0]["endpoint"], c.name());

    // A missing network fails the same way either way.
    let args = ["network", "inspect", "guarded", "nosuch"];
    let (through, without) = (
        daemon.netvlan(&lan, &args).failed(),
        lan.netvlan(&args).failed(),
    );
    assert_eq!(
        (through.stdout, through.stderr),
        (without.stdout, without.stderr)
    );

    // A command in another namespace never uses this daemon's view.
    let other = lan
        .switch
        .command(netvlan_tests::netvlan_bin())
        .args(["stats", "--json", "-v"])
        .env("NETVLAN_BPF_DIR", lan.bpf.path())
        .env("NETVLAN_STATE_DIR", lan.state.path())
        .env("NETVLAN_RUN_DIR", daemon.run_dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(other.status.success(), "{stderr}");
    assert!(!stderr.contains("answered by the daemon"), "{stderr}");
    let theirs: Value = serde_json::from_slice(&other.stdout).unwrap();
    assert_eq!(
        theirs["interfaces"],
        serde_json::json!([]),
        "the switch namespace has no datapath of its own"
    );
}

/// The daemon's log lines holding a wire debug record of a frame from
/// `src` (`02:00:00:00:00:xx`) dropped as an unknown destination on eth0.
fn debug_drops_from(daemon: &Daemon, src: Mac) -> usize {
    let src = src.map(|b| format!("{b:02x}")).join(":");
    let record = format!("{src} > 02:00:00:00:00:77: drop reason=unknown_dst");
    daemon
        .log()
        .lines()
        .filter(|l| l.contains(&record) && l.contains("parent=eth0"))
        .count()
}

/// Sends `n` frames from `src` to the stranger (dropped), waits until the
/// wire counted them, and returns how many debug records of them the
/// daemon logged within 10 s (0 if it logged none).
fn dropped_from(lan: &Lan, daemon: &Daemon, wire: &PacketSocket, src: Mac, n: usize) -> usize {
    let before = lan.stats_after(0)["frames"]["rx_packets"].as_u64().unwrap();
    wire.send_many(&FrameBuilder::new(STRANGER, src).build(64), n);
    lan.stats_after(before + n as u64);
    wait_for(Duration::from_secs(10), || {
        let logged = debug_drops_from(daemon, src);
        (logged >= n).then_some(logged)
    })
    .unwrap_or(0)
}

fn debug_switch(lan: &Lan) -> Option<bool> {
    let status = lan.netvlan(&["datapath", "status", "--json"]).ok().json();
    status["attachments"][0]["debug"].as_bool()
}

#[test]
fn the_wires_debug_records_reach_the_daemons_log_only_while_switched_on() {
    require_root();
    const OFF: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0xa0];
    const ON: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0xa1];
    const AFTER_RESTART: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0xa2];
    const AFTER_UPGRADE: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0xa3];
    const OFF_AGAIN: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0xa4];
    const ON_AGAIN: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0xa5];
    let (lan, _c, _mac) = guarded_lab("10.75.0.0/24");
    let mut daemon = Daemon::start(&lan, &[]);
    let wire = PacketSocket::open(&lan.switch, "peer0");

    // Only a wire can be debugged: another link is refused by name.
    let refused = lan.netvlan(&["datapath", "debug", "lo", "on"]).failed();
    assert!(
        refused
            .stderr
            .contains("netvlan's datapath is not attached to lo"),
        "{}",
        refused.stderr
    );

    // Off by default: frames are judged, nothing is recorded.
    assert_eq!(debug_switch(&lan), Some(false), "off by default");
    let before = lan.stats_after(0)["frames"]["rx_packets"].as_u64().unwrap();
    wire.send_many(&FrameBuilder::new(STRANGER, OFF).build(64), 5);
    lan.stats_after(before + 5);

    // On: one record per dropped frame, with its reason and the parent.
    let on = lan
        .netvlan(&["datapath", "debug", "eth0", "on", "--json"])
        .ok()
        .json();
    assert_eq!(on["attachment"]["debug"], true, "{on}");
    assert_eq!(debug_switch(&lan), Some(true));
    assert_eq!(
        dropped_from(&lan, &daemon, &wire, ON, 3),
        3,
        "{}",
        daemon.log()
    );
    // The ring is read in order: the frames sent while off came before
    // these, and left no record.
    assert_eq!(debug_drops_from(&daemon, OFF), 0, "{}", daemon.log());

    // The switch lives in the pinned map: a killed and restarted daemon
    // finds the wire's records again...
    daemon.stop_with(libc::SIGKILL);
    daemon.restart(&lan);
    assert_eq!(
        dropped_from(&lan, &daemon, &wire, AFTER_RESTART, 2),
        2,
        "{}",
        daemon.log()
    );
    // ...and an upgrade (a new program, a new log ring) keeps it.
    let prog_before = lan.netvlan(&["datapath", "status", "--json"]).ok().json()["attachments"][0]
        ["prog_id"]
        .clone();
    lan.netvlan(&["datapath", "upgrade", "eth0", "--force", "--json"])
        .ok();
    let status = lan.netvlan(&["datapath", "status", "--json"]).ok().json();
    assert_ne!(status["attachments"][0]["prog_id"], prog_before, "{status}");
    assert_eq!(status["attachments"][0]["debug"], true, "{status}");
    assert_eq!(
        dropped_from(&lan, &daemon, &wire, AFTER_UPGRADE, 2),
        2,
        "{}",
        daemon.log()
    );

    // Off again: no records until it is switched back on.
    lan.netvlan(&["datapath", "debug", "eth0", "off"]).ok();
    assert_eq!(debug_switch(&lan), Some(false));
    let before = lan.stats_after(0)["frames"]["rx_packets"].as_u64().unwrap();
    wire.send_many(&FrameBuilder::new(STRANGER, OFF_AGAIN).build(64), 4);
    lan.stats_after(before + 4);
    lan.netvlan(&["datapath", "debug", "eth0", "on"]).ok();
    assert_eq!(
        dropped_from(&lan, &daemon, &wire, ON_AGAIN, 1),
        1,
        "{}",
        daemon.log()
    );
    assert_eq!(debug_drops_from(&daemon, OFF_AGAIN), 0, "{}", daemon.log());
}
