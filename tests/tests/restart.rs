//! Restarts never stop the datapath: traffic flows the whole time while
//! netvlan commands are killed with SIGKILL half-way and run again, and
//! while the XDP program is swapped for a new load (also killed half-way).
//! Not one frame that policy must drop gets through, every allowed frame
//! arrives, and the counters only ever grow, ending exactly at what was
//! sent.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use netvlan_tests::{
    frame::{parse_mac, FrameBuilder, Mac},
    packet::PacketSocket,
    wait_for, Lan, Netns,
};
use serde_json::Value;

const SENDER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x11];
const STRANGER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x77];
const DENIED: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x66];
const BROADCAST: Mac = [0xff; 6];

/// The four kinds of frame the LAN keeps sending, and what policy says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// To the endpoint from a good source: must arrive.
    Allowed,
    /// To a MAC nobody has (`unknown_dst=drop`): must be dropped.
    UnknownDst,
    /// To the endpoint from a denied source (`mac_deny`): must be dropped.
    DeniedUnicast,
    /// Broadcast from a denied source: must be dropped.
    DeniedBroadcast,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Allowed,
        Kind::UnknownDst,
        Kind::DeniedUnicast,
        Kind::DeniedBroadcast,
    ];

    fn frame(self, endpoint: Mac) -> Vec<u8> {
        let (dst, src) = match self {
            Kind::Allowed => (endpoint, SENDER),
            Kind::UnknownDst => (STRANGER, SENDER),
            Kind::DeniedUnicast => (endpoint, DENIED),
            Kind::DeniedBroadcast => (BROADCAST, DENIED),
        };
        FrameBuilder::new(dst, src).build(64)
    }

    /// The kind of a received frame, by its addresses.
    fn of(frame: &[u8], endpoint: Mac) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| frame.len() >= 12 && k.frame(endpoint)[..12] == frame[..12])
    }
}

/// Counts per kind.
type Tally = [u64; 4];

/// Sends every kind, paced, until `stop`; returns what it sent.
fn send_until(lan_side: PacketSocket, endpoint: Mac, stop: Arc<AtomicBool>) -> Tally {
    let frames: Vec<Vec<u8>> = Kind::ALL.iter().map(|k| k.frame(endpoint)).collect();
    let mut sent = [0u64; 4];
    while !stop.load(Ordering::Relaxed) {
        for (i, frame) in frames.iter().enumerate() {
            lan_side.send(frame);
            sent[i] += 1;
        }
        // About 4,000 frames a second: steady, and well within what a veth
        // and the listeners absorb, so every frame is accounted for.
        thread::sleep(Duration::from_millis(1));
    }
    sent
}

/// What a listener saw: frames per kind, and the frames its socket had to
/// drop because its buffer was full (these passed every filter).
struct Heard {
    got: Tally,
    socket_drops: u64,
}

/// Drains `socket` until `stop`, then once more; counts frames per kind.
/// `stop` is raised only once XDP has seen every frame sent, and a unicast
/// frame XDP passes reaches the packet sockets in the same softirq, so the
/// last drain finds everything that arrived.
fn listen_until(socket: PacketSocket, endpoint: Mac, stop: Arc<AtomicBool>) -> Heard {
    let mut got = [0u64; 4];
    let mut tally = |frames: Vec<Vec<u8>>| {
        for f in frames {
            if let Some(k) = Kind::of(&f, endpoint) {
                got[k as usize] += 1;
            }
        }
    };
    while !stop.load(Ordering::Relaxed) {
        tally(socket.received());
        thread::sleep(Duration::from_millis(1));
    }
    tally(socket.received());
    Heard {
        got,
        socket_drops: socket.socket_drops(),
    }
}

/// Every allowed frame arrived and nothing else did; a frame the socket
/// itself dropped (full buffer) is told apart from one the filter lost.
fn assert_heard(heard: &Heard, sent: &Tally, who: &str) {
    let allowed = sent[Kind::Allowed as usize];
    assert_eq!(
        heard.socket_drops,
        0,
        "{who}: the packet socket itself dropped {} frames (its {} MiB receive buffer \
         was full), so the test cannot tell what the filter did; received {:?} + {} \
         socket drops vs {allowed} allowed sent (sent {sent:?})",
        heard.socket_drops,
        netvlan_tests::packet::LISTEN_BUFFER_BYTES >> 20,
        heard.got,
        heard.socket_drops,
    );
    assert_eq!(
        heard.got,
        [allowed, 0, 0, 0],
        "{who}: every allowed frame arrives, no denied one (the socket dropped none; \
         sent {sent:?})"
    );
}

/// The counters that must never go backwards.
fn watched(stats: &Value) -> Vec<(String, u64)> {
    let mut out = vec![(
        "frames".to_string(),
        stats["frames"]["rx_packets"].as_u64().unwrap_or(0),
    )];
    for reason in ["unknown_dst", "mac_denied"] {
        out.push((
            format!("drops.{reason}"),
            stats["drops"][reason]["rx_packets"].as_u64().unwrap_or(0),
        ));
    }
    for mac in stats["macs"].as_array().into_iter().flatten() {
        out.push((
            format!(
                "macs.{}@{}",
                mac["mac"].as_str().unwrap_or("?"),
                mac["vlan"].as_u64().unwrap_or(0)
            ),
            mac["rx_packets"].as_u64().unwrap_or(0),
        ));
    }
    out
}

/// Takes samples of the counters and checks each is at least the last.
struct Monotonic {
    last: std::collections::BTreeMap<String, u64>,
    samples: usize,
}

impl Monotonic {
    fn sample(&mut self, lan: &Lan, when: &str) -> Value {
        let run = lan.netvlan(&["stats", "--iface", "eth0", "--json"]).ok();
        let stats = run.json()["interfaces"][0].clone();
        for (name, value) in watched(&stats) {
            let before = self.last.insert(name.clone(), value).unwrap_or(0);
            assert!(
                value >= before,
                "{name} went back from {before} to {value} ({when})"
            );
        }
        self.samples += 1;
        stats
    }
}

/// Three rounds of kills and swaps; one under TCG emulation (the VM lane),
/// where every command takes seconds.
fn rounds() -> u32 {
    if std::env::var("NETVLAN_TEST_LANE").as_deref() == Ok("vm") {
        1
    } else {
        3
    }
}

/// Links in `ns`, `lo` included.
fn links_in(ns: &Netns) -> usize {
    let out = ns.exec("ip", &["-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn xdp_prog_id(lan: &Lan) -> u64 {
    lan.host.link_json("eth0")["xdp"]["prog"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no XDP program on eth0: {:#}", lan.host.link_json("eth0")))
}

#[test]
fn policy_holds_and_counters_grow_through_killed_commands_and_program_swaps() {
    let lan = Lan::new(false);
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.60.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "unknown_dst=drop",
        "-o",
        "mac_deny=02:00:00:00:00:66",
        // The swaps below are read from the XDP program on eth0.
        "-o",
        "hook=xdp",
        "steady",
    ])
    .ok();
    let target = Netns::new("rctr");
    let run = lan
        .netvlan(&["connect", "--json", "steady", target.name()])
        .ok()
        .json();
    let endpoint = parse_mac(run["endpoint"]["mac"].as_str().unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    // The listeners stop only after XDP has seen every frame sent.
    let heard_all = Arc::new(AtomicBool::new(false));
    // What reaches the container, and what XDP lets through to the host's
    // own stack (taps on eth0 see frames after XDP).
    let in_container = {
        let socket = PacketSocket::listen(&target, "eth0");
        let stop = heard_all.clone();
        thread::spawn(move || listen_until(socket, endpoint, stop))
    };
    let on_host = {
        let socket = PacketSocket::listen(&lan.host, "eth0");
        let stop = heard_all.clone();
        thread::spawn(move || listen_until(socket, endpoint, stop))
    };
    let sender = {
        let socket = PacketSocket::open(&lan.switch, "peer0");
        let stop = stop.clone();
        thread::spawn(move || send_until(socket, endpoint, stop))
    };

    let mut counters = Monotonic {
        last: Default::default(),
        samples: 0,
    };
    let other = Netns::new("rctr");
    let first_prog = xdp_prog_id(&lan);
    let mut prog = first_prog;
    for round in 0..rounds() {
        counters.sample(&lan, "before the round");
        // A connect killed after making its link, then cleaned up by the
        // next command; counters are read while it hangs half-way.
        lan.kill_midway(
            "connect-after-link",
            &["connect", "steady", other.name()],
            || {
                counters.sample(&lan, "connect half-way");
                links_in(&other) > 1
            },
        );
        lan.netvlan(&["network", "inspect", "steady"]).ok();
        assert_eq!(links_in(&other), 1, "recovery removed the half-made link");
        counters.sample(&lan, "after recovery");

        // The same, killed after its addresses are in.
        lan.kill_midway(
            "connect-after-addresses",
            &["connect", "steady", other.name()],
            || {
                counters.sample(&lan, "connect with addresses");
                String::from_utf8_lossy(&other.exec("ip", &["-4", "-o", "addr", "show"]).stdout)
                    .contains("10.60.0.")
            },
        );
        lan.netvlan(&["network", "ls"]).ok();
        assert_eq!(links_in(&other), 1, "recovery removed the half-made link");

        // Ordinary churn: connect, a policy change, disconnect.
        lan.netvlan(&["connect", "steady", other.name()]).ok();
        lan.netvlan(&[
            "policy",
            "set",
            "steady",
            &format!(
                "mac_deny=02:00:00:00:00:66,02:00:00:00:00:{:02x}",
                0x70 + round
            ),
        ])
        .ok();
        lan.netvlan(&["disconnect", "steady", other.name()]).ok();
        counters.sample(&lan, "after churn");

        // A program swap, then one killed between the swap and re-pinning.
        lan.netvlan(&["datapath", "upgrade", "eth0", "--force"])
            .ok();
        let swapped = xdp_prog_id(&lan);
        assert_ne!(swapped, prog, "upgrade --force must load a new program");
        prog = swapped;
        counters.sample(&lan, "after a swap");
        lan.kill_midway(
            "upgrade-after-swap",
            &["datapath", "upgrade", "eth0", "--force"],
            || xdp_prog_id(&lan) != prog,
        );
        let killed_swap = xdp_prog_id(&lan);
        let status = lan.netvlan(&["datapath", "status", "--json"]).ok().json();
        assert_eq!(
            status["attachments"][0]["state"], "attached",
            "after a killed upgrade netvlan still knows its program: {status:#}"
        );
        counters.sample(&lan, "after a killed swap");
        // The program pin lags behind the link now; a plain upgrade
        // repairs it (one more swap), and then there is nothing to do.
        let repair = lan.netvlan(&["datapath", "upgrade", "--json"]).ok().json();
        assert_eq!(repair["upgrades"][0]["outcome"], "replaced", "{repair:#}");
        assert_eq!(
            repair["upgrades"][0]["old_prog_id"].as_u64(),
            Some(killed_swap),
            "the repair starts from what the killed upgrade swapped in"
        );
        prog = xdp_prog_id(&lan);
        let again = lan.netvlan(&["datapath", "upgrade", "--json"]).ok().json();
        assert_eq!(again["upgrades"][0]["outcome"], "current", "{again:#}");
        assert_eq!(xdp_prog_id(&lan), prog, "nothing to do means no swap");
    }

    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().expect("sender thread");
    let total: u64 = sent.iter().sum();
    let settled = wait_for(Duration::from_secs(10), || {
        let stats = counters.sample(&lan, "settling");
        (stats["frames"]["rx_packets"].as_u64() >= Some(total)).then_some(stats)
    });
    heard_all.store(true, Ordering::Relaxed);
    let in_container = in_container.join().expect("container listener");
    let on_host = on_host.join().expect("host listener");
    let stats = settled.unwrap_or_else(|| panic!("XDP never saw all {total} frames sent"));

    let (allowed, unknown, denied_u, denied_b) = (sent[0], sent[1], sent[2], sent[3]);
    assert!(allowed > 1000, "traffic flowed the whole time ({sent:?})");
    assert_ne!(prog, first_prog);
    assert_heard(&in_container, &sent, "container");
    assert_heard(
        &on_host,
        &sent,
        "host eth0 after XDP (nothing policy drops gets past it)",
    );
    assert_eq!(
        stats["frames"]["rx_packets"].as_u64(),
        Some(total),
        "no frame went uncounted across swaps and kills: {stats:#}"
    );
    assert_eq!(
        stats["drops"]["unknown_dst"]["rx_packets"].as_u64(),
        Some(unknown)
    );
    assert_eq!(
        stats["drops"]["mac_denied"]["rx_packets"].as_u64(),
        Some(denied_u + denied_b)
    );
    eprintln!(
        "sent {sent:?}; {} counter samples, all monotonic; program {first_prog} -> {prog}",
        counters.samples
    );
    lan.netvlan(&["disconnect", "steady", target.name()]).ok();
    lan.netvlan(&["network", "rm", "steady"]).ok();
}
