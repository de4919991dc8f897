//! Datapath policy with real traffic: frames from the LAN side (a peer
//! namespace, AF_PACKET) towards a container; what policy drops never
//! arrives (a packet socket in the container), counters are exact.

use std::time::Duration;

use netvlan_tests::{
    frame::{
        ipv4_frame, parse_mac, FrameBuilder, Mac, ETH_P_8021AD, ETH_P_8021Q, ETH_P_EXPERIMENTAL,
    },
    packet::PacketSocket,
    require_kernel_feature, wait_for, KernelFeature, Lan, Netns,
};
use serde_json::Value;

const STRANGER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x77];
const SENDER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x11];
const DENIED: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x66];
const BROADCAST: Mac = [0xff; 6];

/// What these tests add to the usual lab.
trait PolicyLab {
    fn connect_container(&self, network: &str) -> (Netns, Mac);
}

impl PolicyLab for Lan {
    /// Connects a fresh container and returns it with its endpoint MAC.
    fn connect_container(&self, network: &str) -> (Netns, Mac) {
        let c = Netns::new("pctr");
        let run = self
            .netvlan(&["connect", "--json", network, c.name()])
            .ok()
            .json();
        (c, parse_mac(run["endpoint"]["mac"].as_str().unwrap()))
    }
}

fn counters(packets: u64, bytes: u64) -> Value {
    serde_json::json!({ "rx_packets": packets, "rx_bytes": bytes })
}

/// Frames of the test's own EtherType that reached the container.
fn arrived(listener: &PacketSocket, dst: Option<Mac>, src: Mac) -> usize {
    listener
        .received()
        .iter()
        .filter(|f| f.len() >= 14 && f[6..12] == src && dst.is_none_or(|d| f[..6] == d))
        .filter(|f| f.len() >= 14)
        .count()
}

#[test]
fn unknown_destinations_are_dropped_only_when_the_network_asks() {
    let lab = Lan::new(false);
    lab.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.40.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "unknown_dst=drop",
        "guarded",
    ])
    .ok();
    let (c, mac) = lab.connect_container("guarded");
    let listener = PacketSocket::listen(&c, "eth0");
    let before = lab.stats_after(0)["frames"]["rx_packets"].as_u64().unwrap();

    let socket = PacketSocket::open(&lab.switch, "peer0");
    socket.send_many(&FrameBuilder::new(mac, SENDER).build(64), 5);
    socket.send_many(&FrameBuilder::new(STRANGER, SENDER).build(64), 7);
    socket.send_many(&FrameBuilder::new(BROADCAST, SENDER).build(64), 3);
    let stats = lab.stats_after(before + 15);
    assert_eq!(
        stats["drops"]["unknown_dst"],
        counters(7, 7 * 64),
        "{stats:#}"
    );
    assert_eq!(stats["drops"]["vlan_not_allowed"], counters(0, 0));
    // The endpoint's destination counted its 5 frames, none dropped.
    let endpoint = stats["macs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mac"] == netvlan_tests::frame::mac_string(&mac) && m["vlan"] == 0)
        .cloned()
        .unwrap_or_else(|| panic!("no counters for the endpoint: {stats:#}"));
    assert_eq!(
        (endpoint["rx_packets"].clone(), endpoint["dropped"].clone()),
        (5.into(), counters(0, 0)),
        "{endpoint:#}"
    );
    assert!(
        stats["vlan_drops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["vlan"] == 0 && d["reason"] == "unknown_dst" && d["rx_packets"] == 7),
        "{stats:#}"
    );
    let got = wait_for(Duration::from_secs(3), || {
        let n = arrived(&listener, None, SENDER);
        (n >= 8).then_some(n)
    });
    assert_eq!(
        got,
        Some(8),
        "the container gets its 5 unicast and 3 broadcast frames, nothing else"
    );

    // Policy changes take effect at once, without re-attaching.
    lab.netvlan(&["policy", "set", "guarded", "unknown_dst=pass"])
        .ok();
    socket.send_many(&FrameBuilder::new(STRANGER, SENDER).build(64), 4);
    let stats = lab.stats_after(before + 19);
    assert_eq!(
        stats["drops"]["unknown_dst"],
        counters(7, 7 * 64),
        "no more drops after unknown_dst=pass"
    );
    let inspect = lab.netvlan(&["network", "inspect", "guarded"]).ok().json();
    assert_eq!(inspect[0]["Netvlan"]["Policy"]["UnknownDst"], "pass");

    lab.netvlan(&["disconnect", "guarded", c.name()]).ok();
    lab.netvlan(&["network", "rm", "guarded"]).ok();
}

#[test]
fn denied_source_macs_never_reach_endpoints() {
    let lab = Lan::new(false);
    let deny = "mac_deny=02:00:00:00:00:66";
    lab.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.41.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        deny,
        "denying",
    ])
    .ok();
    let (c, mac) = lab.connect_container("denying");
    let listener = PacketSocket::listen(&c, "eth0");
    let before = lab.stats_after(0)["frames"]["rx_packets"].as_u64().unwrap();
    let socket = PacketSocket::open(&lab.switch, "peer0");
    socket.send_many(&FrameBuilder::new(mac, DENIED).build(70), 6);
    socket.send_many(&FrameBuilder::new(BROADCAST, DENIED).build(70), 2);
    socket.send_many(&FrameBuilder::new(mac, SENDER).build(70), 3);
    let stats = lab.stats_after(before + 11);
    assert_eq!(
        stats["drops"]["mac_denied"],
        counters(8, 8 * 70),
        "{stats:#}"
    );
    let good = wait_for(Duration::from_secs(3), || {
        let n = arrived(&listener, Some(mac), SENDER);
        (n >= 3).then_some(n)
    });
    assert_eq!(good, Some(3), "legitimate frames still arrive");
    assert_eq!(
        arrived(&listener, None, DENIED),
        0,
        "a denied frame reached the container"
    );
    // The drops are booked under the endpoint they were aimed at.
    let endpoint = stats["macs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mac"] == netvlan_tests::frame::mac_string(&mac))
        .cloned()
        .unwrap_or_else(|| panic!("no counters for the endpoint: {stats:#}"));
    // Every frame to it is counted, the dropped ones also as dropped (the
    // reason is counted per VLAN).
    assert_eq!(endpoint["dropped"], counters(6, 6 * 70), "{endpoint:#}");
    assert_eq!(endpoint["rx_packets"], 9, "{endpoint:#}");
    assert_eq!(endpoint["rx_bytes"], 9 * 70, "{endpoint:#}");
    assert_eq!(endpoint["vlan"], 0, "{endpoint:#}");
    assert_eq!(endpoint["endpoint"], c.name());
    lab.netvlan(&["disconnect", "denying", c.name()]).ok();
    lab.netvlan(&["network", "rm", "denying"]).ok();
}

#[test]
fn vlan_filter_drops_unlisted_vlans_and_stacked_tags_on_the_trunk() {
    let lab = Lan::new(false);
    lab.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.42.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "vlans=10,30-31",
        "trunk",
    ])
    .ok();
    let before = lab.stats_after(0)["frames"]["rx_packets"].as_u64().unwrap();
    let socket = PacketSocket::open(&lab.switch, "peer0");
    let to = |tags: &[(u16, u16)]| {
        let mut b = FrameBuilder::new(BROADCAST, SENDER).ethertype(ETH_P_EXPERIMENTAL);
        for &(tpid, vid) in tags {
            b = b.tag(tpid, vid);
        }
        b.build(64)
    };
    socket.send_many(&to(&[]), 2); // untagged: always allowed
    socket.send_many(&to(&[(ETH_P_8021Q, 10)]), 3); // listed
    socket.send_many(&to(&[(ETH_P_8021Q, 31)]), 1); // in the range
    socket.send_many(&to(&[(ETH_P_8021Q, 20)]), 4); // not listed
    socket.send_many(&to(&[(ETH_P_8021AD, 10), (ETH_P_8021Q, 20)]), 5); // QinQ smuggling VLAN 20 inside 10
    let stats = lab.stats_after(before + 15);
    assert_eq!(
        stats["drops"]["vlan_not_allowed"],
        counters(9, 9 * 64),
        "{stats:#}"
    );
    let per_vlan: Vec<(u64, u64)> = stats["vlan_drops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["vlan"].as_u64().unwrap(),
                d["rx_packets"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        per_vlan,
        vec![(10, 5), (20, 4)],
        "drops are booked under the outer VLAN"
    );
    lab.netvlan(&["network", "rm", "trunk"]).ok();
}

#[test]
fn a_qinq_frame_never_reaches_a_vlan_endpoint_through_its_vlan() {
    if !require_kernel_feature(KernelFeature::Vlan) {
        return;
    }
    let lab = Lan::new(false);
    lab.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.43.0.0/24",
        "-o",
        "parent=eth0.10",
        "-o",
        "vlans=10",
        "v10",
    ])
    .ok();
    let (c, mac) = lab.connect_container("v10");
    let listener = PacketSocket::listen(&c, "eth0");
    let socket = PacketSocket::open(&lab.switch, "peer0");
    // Tagged 10 (its VLAN) it arrives, untagged by the VLAN device.
    socket.send_many(
        &FrameBuilder::new(mac, SENDER)
            .tag(ETH_P_8021Q, 10)
            .build(64),
        3,
    );
    // The double-tag trick: VLAN 20 hidden inside VLAN 10.
    socket.send_many(
        &FrameBuilder::new(mac, SENDER)
            .tag(ETH_P_8021Q, 10)
            .tag(ETH_P_8021Q, 20)
            .build(64),
        4,
    );
    let got = wait_for(Duration::from_secs(3), || {
        let frames = listener.received();
        let ours: Vec<_> = frames
            .iter()
            .filter(|f| f[6..12] == SENDER)
            .cloned()
            .collect();
        (!ours.is_empty()).then_some(ours)
    })
    .expect("the VLAN 10 frames never arrived");
    std::thread::sleep(Duration::from_millis(300));
    let late: Vec<_> = listener
        .received()
        .into_iter()
        .filter(|f| f[6..12] == SENDER)
        .collect();
    let all: Vec<_> = got.into_iter().chain(late).collect();
    assert_eq!(all.len(), 3, "only the plain VLAN 10 frames arrive");
    assert!(
        all.iter().all(|f| f[12..14] != ETH_P_8021Q.to_be_bytes()),
        "a frame still tagged (VLAN 20) reached the VLAN 10 endpoint"
    );
    lab.netvlan(&["disconnect", "v10", c.name()]).ok();
    lab.netvlan(&["network", "rm", "v10"]).ok();
}

#[test]
fn bad_policy_settings_are_named() {
    let lab = Lan::new(false);
    let run = lab
        .netvlan(&[
            "network",
            "create",
            "--subnet",
            "10.44.0.0/24",
            "-o",
            "parent=eth0",
            "-o",
            "vlans=10,5000",
            "n",
        ])
        .failed();
    assert!(
        run.stderr.contains("vlans: '5000' is not a VLAN id"),
        "{}",
        run.stderr
    );
    let run = lab
        .netvlan(&[
            "network",
            "create",
            "--subnet",
            "10.44.0.0/24",
            "-o",
            "parent=eth0",
            "-o",
            "unknown_dst=maybe",
            "n",
        ])
        .failed();
    assert!(
        run.stderr
            .contains("unknown_dst=maybe: expected pass or drop"),
        "{}",
        run.stderr
    );
    lab.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.44.0.0/24",
        "-o",
        "parent=eth0",
        "n",
    ])
    .ok();
    let run = lab.netvlan(&["policy", "set", "n", "mtu=1400"]).failed();
    assert!(
        run.stderr.contains("'mtu' is not a policy setting"),
        "{}",
        run.stderr
    );
    let run = lab
        .netvlan(&["policy", "set", "n", "mac_deny=01:00:5e:00:00:01"])
        .failed();
    assert!(run.stderr.contains("not a unicast MAC"), "{}", run.stderr);
    lab.netvlan(&["network", "rm", "n"]).ok();
}

/// `n` distinct sprawling source MACs.
fn sprawl(n: u8) -> Mac {
    [0x02, 0x00, 0x5b, 0x00, 0x00, n]
}

/// Everything a container's packet socket received, kept across drains.
struct Inbox<'a> {
    socket: &'a PacketSocket,
    frames: Vec<Vec<u8>>,
}

impl<'a> Inbox<'a> {
    fn new(socket: &'a PacketSocket) -> Self {
        Inbox {
            socket,
            frames: Vec::new(),
        }
    }

    /// Frames from `src` to `dst` so far.
    fn count(&mut self, dst: Mac, src: Mac) -> usize {
        self.frames.extend(self.socket.received());
        self.frames
            .iter()
            .filter(|f| f.len() >= 14 && f[..6] == dst && f[6..12] == src)
            .count()
    }

    /// Waits (up to 3 s) for `want` frames from `src` to `dst`; returns how
    /// many came.
    fn wait_count(&mut self, dst: Mac, src: Mac, want: usize) -> usize {
        wait_for(Duration::from_secs(3), || {
            let n = self.count(dst, src);
            (n >= want).then_some(n)
        })
        .unwrap_or_else(|| self.count(dst, src))
    }
}

#[test]
fn the_mac_guard_learns_up_to_max_macs_and_drops_new_sources_beyond() {
    let lab = Lan::new(false);
    lab.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.45.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "max_macs=3",
        "sprawl",
    ])
    .ok();
    let (c, mac) = lab.connect_container("sprawl");
    let listener = PacketSocket::listen(&c, "eth0");
    let mut inbox = Inbox::new(&listener);
    let before = lab.stats_after(0)["frames"]["rx_packets"].as_u64().unwrap();
    let socket = PacketSocket::open(&lab.switch, "peer0");
    // Five sources, two frames each: the first three fill the guard.
    for n in 1..=5 {
        socket.send_many(&FrameBuilder::new(mac, sprawl(n)).build(64), 2);
    }
    let stats = lab.stats_after(before + 10);
    assert_eq!(
        stats["drops"]["mac_limit"],
        counters(4, 4 * 64),
        "{stats:#}"
    );
    assert_eq!(stats["learned_macs"], 3, "{stats:#}");
    let guard = &stats["mac_guards"][0];
    assert_eq!(guard["vlan"], 0, "{stats:#}");
    assert_eq!(guard["limit"], 3);
    assert_eq!(guard["action"], "drop");
    assert_eq!(guard["learned"], 3);
    assert_eq!(guard["over_limit_packets"], 4);
    assert_eq!(guard["last_over_limit"]["mac"], "02:00:5b:00:00:05");
    for n in 1..=3 {
        assert_eq!(
            inbox.wait_count(mac, sprawl(n), 2),
            2,
            "both frames of learned source {n} arrive"
        );
    }
    for n in 4..=5 {
        assert_eq!(
            inbox.count(mac, sprawl(n)),
            0,
            "a frame from new source {n} got past the full guard"
        );
    }

    // A learned MAC keeps passing once the guard is full.
    socket.send_many(&FrameBuilder::new(mac, sprawl(2)).build(64), 1);
    lab.stats_after(before + 11);
    assert_eq!(
        inbox.wait_count(mac, sprawl(2), 3),
        3,
        "a learned source was refused"
    );

    // Count-only: new sources pass and are counted; the count is kept.
    lab.netvlan(&["policy", "set", "sprawl", "max_macs_action=count"])
        .ok();
    socket.send_many(&FrameBuilder::new(mac, sprawl(6)).build(64), 2);
    let stats = lab.stats_after(before + 13);
    assert_eq!(
        stats["drops"]["mac_limit"],
        counters(4, 4 * 64),
        "{stats:#}"
    );
    assert_eq!(stats["mac_guards"][0]["over_limit_packets"], 6);
    assert_eq!(stats["mac_guards"][0]["learned"], 3);
    assert_eq!(stats["mac_guards"][0]["action"], "count");
    assert_eq!(
        inbox.wait_count(mac, sprawl(6), 2),
        2,
        "count-only must let new sources through"
    );
    let inspect = lab.netvlan(&["network", "inspect", "sprawl"]).ok().json();
    assert_eq!(inspect[0]["Netvlan"]["Policy"]["MaxMacs"], 3);
    assert_eq!(inspect[0]["Netvlan"]["Policy"]["MaxMacsAction"], "count");

    // Off forgets everything; on again starts empty.
    lab.netvlan(&["policy", "set", "sprawl", "max_macs=off"])
        .ok();
    let stats = lab.stats_after(before + 13);
    assert_eq!(stats["learned_macs"], 0, "{stats:#}");
    assert_eq!(stats["mac_guards"], serde_json::json!([]));
    lab.netvlan(&[
        "policy",
        "set",
        "sprawl",
        "max_macs=1",
        "max_macs_action=drop",
    ])
    .ok();
    socket.send_many(&FrameBuilder::new(mac, sprawl(5)).build(64), 1);
    socket.send_many(&FrameBuilder::new(mac, sprawl(1)).build(64), 1);
    let stats = lab.stats_after(before + 15);
    assert_eq!(stats["mac_guards"][0]["learned"], 1, "{stats:#}");
    assert_eq!(
        stats["mac_guards"][0]["last_over_limit"]["mac"],
        "02:00:5b:00:00:01"
    );
    assert_eq!(
        stats["drops"]["mac_limit"],
        counters(5, 5 * 64),
        "{stats:#}"
    );
    assert_eq!(
        inbox.wait_count(mac, sprawl(5), 1),
        1,
        "the first source after the reset is learned"
    );

    lab.netvlan(&["disconnect", "sprawl", c.name()]).ok();
    lab.netvlan(&["network", "rm", "sprawl"]).ok();
}

/// The guard's entry for (VLAN, MAC) on the lab's wire, if learned.
fn learned_entry(lab: &Lan, vid: u16, mac: Mac) -> Option<u64> {
    use aya::maps::MapData;
    use netvlan::sys::bpf_batch::BatchMap;
    use netvlan_common::maps::{LearnKey, MAC_LEARN};

    let data = MapData::from_pin(pinned_map(lab, MAC_LEARN)).unwrap();
    BatchMap::new(&data, MAC_LEARN)
        .unwrap()
        .lookup_all::<LearnKey, u64>()
        .unwrap()
        .into_iter()
        .find(|(key, _)| *key == LearnKey { vid, mac })
        .map(|(_, value)| value[0])
}

/// Rewrites the guard's entry for (VLAN, MAC) on the lab's wire.
fn set_learned_entry(lab: &Lan, vid: u16, mac: Mac, value: u64) {
    use aya::maps::MapData;
    use netvlan::sys::bpf_batch::BatchMap;
    use netvlan_common::maps::{LearnKey, MAC_LEARN};

    let data = MapData::from_pin(pinned_map(lab, MAC_LEARN)).unwrap();
    BatchMap::new(&data, MAC_LEARN)
        .unwrap()
        .update(&[(LearnKey { vid, mac }, value)], 0)
        .unwrap();
}

/// On a guarded VLAN the deny check is answered by the guard's own entry
/// (one lookup): a MAC learned and denied later has its entry marked and
/// is dropped as denied. Pins of the build before the mark (whose policy
/// writes never marked) are marked by `datapath upgrade`, which carries
/// counters, policy and learned MACs over.
#[test]
fn a_learned_mac_denied_later_is_dropped_and_upgrade_marks_older_entries() {
    use netvlan_common::maps::MAC_LEARN_DENIED;

    let lab = Lan::new(false);
    lab.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.46.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "max_macs=3",
        "late",
    ])
    .ok();
    let (c, mac) = lab.connect_container("late");
    let listener = PacketSocket::listen(&c, "eth0");
    let mut inbox = Inbox::new(&listener);
    let before = lab.stats_after(0)["frames"]["rx_packets"].as_u64().unwrap();
    let socket = PacketSocket::open(&lab.switch, "peer0");
    socket.send_many(&FrameBuilder::new(mac, SENDER).build(64), 2);
    let stats = lab.stats_after(before + 2);
    assert_eq!(stats["learned_macs"], 1, "{stats:#}");
    assert_eq!(inbox.wait_count(mac, SENDER, 2), 2, "a new source passes");
    let learned = learned_entry(&lab, 0, SENDER).expect("the guard learned SENDER");
    assert_eq!(learned & MAC_LEARN_DENIED, 0, "not denied yet");

    lab.netvlan(&["policy", "set", "late", "mac_deny=02:00:00:00:00:11"])
        .ok();
    assert_eq!(
        learned_entry(&lab, 0, SENDER),
        Some(learned | MAC_LEARN_DENIED),
        "denying a learned MAC marks its entry"
    );
    socket.send_many(&FrameBuilder::new(mac, SENDER).build(64), 3);
    let stats = lab.stats_after(before + 5);
    assert_eq!(
        stats["drops"]["mac_denied"],
        counters(3, 3 * 64),
        "{stats:#}"
    );
    assert_eq!(stats["learned_macs"], 1, "{stats:#}");

    // The build before the mark left learned entries of denied MACs
    // unmarked; upgrading from such pins marks them before the swap.
    set_learned_entry(&lab, 0, SENDER, learned);
    lab.netvlan(&["datapath", "upgrade", "eth0", "--force"])
        .ok();
    assert_eq!(
        learned_entry(&lab, 0, SENDER),
        Some(learned | MAC_LEARN_DENIED),
        "upgrade marks the learned entry of a denied MAC"
    );
    socket.send_many(&FrameBuilder::new(mac, SENDER).build(64), 2);
    let stats = lab.stats_after(before + 7);
    assert_eq!(
        stats["drops"]["mac_denied"],
        counters(5, 5 * 64),
        "counters and the deny list carried over: {stats:#}"
    );
    assert_eq!(
        stats["learned_macs"], 1,
        "the learned MAC carried over: {stats:#}"
    );
    assert_eq!(stats["mac_guards"][0]["learned"], 1, "{stats:#}");
    assert_eq!(
        inbox.count(mac, SENDER),
        2,
        "a frame from the denied MAC reached the container"
    );

    lab.netvlan(&["disconnect", "late", c.name()]).ok();
    lab.netvlan(&["network", "rm", "late"]).ok();
}

#[test]
fn max_macs_settings_are_checked() {
    let lab = Lan::new(false);
    let create = |extra: &str| {
        lab.netvlan(&[
            "network",
            "create",
            "--subnet",
            "10.46.0.0/24",
            "-o",
            "parent=eth0",
            "-o",
            extra,
            "g",
        ])
    };
    let run = create("max_macs=0").failed();
    assert!(
        run.stderr
            .contains("max_macs=0: expected off or a number from 1 to 16384"),
        "{}",
        run.stderr
    );
    let run = create("max_macs_action=block").failed();
    assert!(
        run.stderr
            .contains("max_macs_action=block: expected drop or count"),
        "{}",
        run.stderr
    );
    create("max_macs=16384").ok();
    lab.netvlan(&["network", "rm", "g"]).ok();
}

#[test]
fn guards_on_one_parent_share_its_learning_budget() {
    if !require_kernel_feature(KernelFeature::Vlan) {
        return;
    }
    let lab = Lan::new(false);
    let create = |name: &str, subnet: &str, parent: &str| {
        lab.netvlan(&[
            "network",
            "create",
            "--subnet",
            subnet,
            "-o",
            &format!("parent={parent}"),
            "-o",
            "max_macs=10000",
            name,
        ])
    };
    create("g10", "10.46.0.0/24", "eth0.10").ok();
    let run = create("g20", "10.47.0.0/24", "eth0.20").failed();
    assert!(
        run.stderr
            .contains("the networks on eth0 would learn up to 20000 MACs in all; one parent learns at most 16384"),
        "{}",
        run.stderr
    );
    assert!(
        !lab.host_links().iter().any(|l| l == "eth0.20"),
        "the refused network's VLAN link was left behind: {:?}",
        lab.host_links()
    );
    let ls = lab.netvlan(&["network", "ls", "--json"]).ok().json();
    assert_eq!(
        ls.as_array().map(Vec::len),
        Some(1),
        "the refused network must not be stored: {ls:#}"
    );
    lab.netvlan(&["network", "rm", "g10"]).ok();
}

/// The pinned map `name` of the lab's one attachment.
fn pinned_map(lab: &Lan, name: &str) -> std::path::PathBuf {
    let suffix = format!("/{name}");
    let found = lab
        .bpf
        .contents()
        .into_iter()
        .find(|p| p.ends_with(&suffix));
    lab.bpf.path().join(
        found.unwrap_or_else(|| panic!("no pinned {name} under {}", lab.bpf.path().display())),
    )
}

/// The registered destinations of the lab's wire: the non-free entries of
/// `DST_DIRECT` and every `DST_SLOTS` entry, with their slots.
fn registrations(lab: &Lan) -> Vec<(netvlan_common::maps::DstKey, u32)> {
    use aya::maps::MapData;
    use netvlan::sys::bpf_batch::BatchMap;
    use netvlan_common::maps::{DstKey, DST_DIRECT, DST_SLOTS};

    let direct = MapData::from_pin(pinned_map(lab, DST_DIRECT)).unwrap();
    let hashed = MapData::from_pin(pinned_map(lab, DST_SLOTS)).unwrap();
    let mut out: Vec<(DstKey, u32)> = BatchMap::new(&direct, DST_DIRECT)
        .unwrap()
        .lookup_all::<u32, DstKey>()
        .unwrap()
        .into_iter()
        .filter(|(_, key)| !key[0].is_free())
        .map(|(slot, key)| (key[0], slot))
        .collect();
    out.extend(
        BatchMap::new(&hashed, DST_SLOTS)
            .unwrap()
            .lookup_all::<DstKey, u32>()
            .unwrap()
            .into_iter()
            .map(|(key, slot)| (key, slot[0])),
    );
    out
}

#[test]
fn a_full_endpoint_table_refuses_the_connect_and_leaves_nothing_behind() {
    use aya::maps::MapData;
    use netvlan::sys::bpf_batch::BatchMap;
    use netvlan_common::maps::{DstKey, DST_CAPACITY, DST_SLOTS};

    let lab = Lan::new(false);
    lab.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.48.0.0/16",
        "-o",
        "parent=eth0",
        "-o",
        "unknown_dst=drop",
        "crowded",
    ])
    .ok();
    // Fill every slot the way 65,536 registrations would (the host's MAC
    // already has one), without making 65,536 namespaces: user-given MACs
    // on another VLAN, each in a slot nothing else uses.
    let present = registrations(&lab);
    assert_eq!(present.len(), 1, "the host's MAC: {present:?}");
    let used: std::collections::BTreeSet<u32> = present.iter().map(|(_, s)| *s).collect();
    let fillers: Vec<(DstKey, u32)> = (0..DST_CAPACITY)
        .filter(|slot| !used.contains(slot))
        .map(|slot| {
            let b = slot.to_be_bytes();
            let key = DstKey {
                vid: 7,
                mac: [0x06, 0xee, b[0], b[1], b[2], b[3]],
            };
            (key, slot)
        })
        .collect();
    let slots = MapData::from_pin(pinned_map(&lab, DST_SLOTS)).unwrap();
    BatchMap::new(&slots, DST_SLOTS)
        .unwrap()
        .update(&fillers, 0)
        .expect("filling the destination slots");
    assert_eq!(registrations(&lab).len(), DST_CAPACITY as usize);

    let c = Netns::new("pctr");
    let run = lab.netvlan(&["connect", "crowded", c.name()]).failed();
    assert!(
        run.stderr
            .contains("DST_SLOTS is full: it holds at most 65536 entries"),
        "{}",
        run.stderr
    );
    let links = c.exec("ip", &["-j", "link", "show"]);
    let links: Value = serde_json::from_slice(&links.stdout).unwrap();
    assert_eq!(
        links.as_array().map(Vec::len),
        Some(1),
        "only lo may be left in the container: {links:#}"
    );
    assert_eq!(
        lab.inspect("crowded")["Containers"],
        serde_json::json!({}),
        "the refused endpoint must not be stored"
    );
    assert_eq!(
        lab.host_links().len(),
        2,
        "only lo and eth0 may be on the host: {:?}",
        lab.host_links()
    );

    // The control plane owns the table: undoing the refused connect
    // brought it back to exactly the host's registration, in its slot.
    assert_eq!(registrations(&lab), present, "only the host's MAC is left");
    lab.netvlan(&["connect", "crowded", c.name()]).ok();
    let after = registrations(&lab);
    assert_eq!(after.len(), 2, "host MAC and the endpoint's: {after:?}");
    assert!(
        after
            .iter()
            .any(|(key, slot)| key.mac[..2] == [0x02, 0x42] && *slot == 2),
        "the endpoint (10.48.0.2) in its direct slot: {after:?}"
    );
    lab.netvlan(&["disconnect", "crowded", c.name()]).ok();
    assert_eq!(registrations(&lab), present, "disconnect unregisters it");
    lab.netvlan(&["network", "rm", "crowded"]).ok();
}

#[test]
fn ipvlan_drops_unicast_to_addresses_nobody_has() {
    if !require_kernel_feature(KernelFeature::Ipvlan) {
        return;
    }
    let lab = Lan::new(false);
    // The host's own address on the parent stays reachable.
    lab.host
        .exec("ip", &["addr", "add", "10.64.0.254/24", "dev", "eth0"]);
    lab.netvlan(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet",
        "10.64.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "unknown_dst=drop",
        // The host's tap below sees what the hook let through only behind
        // XDP: packet taps run before TC ingress (hook.rs covers TC drops).
        "-o",
        "hook=xdp",
        "ipv",
    ])
    .ok();
    let c = Netns::new("pctr");
    let run = lab
        .netvlan(&["connect", "--json", "ipv", c.name()])
        .ok()
        .json();
    assert_eq!(run["endpoint"]["ipv4"], "10.64.0.2/24");
    let parent_mac = lab.host.mac("eth0");
    let listener = PacketSocket::listen(&c, "eth0");
    let mut inbox = Inbox::new(&listener);
    let host_tap = PacketSocket::listen(&lab.host, "eth0");
    let mut host_inbox = Inbox::new(&host_tap);
    let before = lab.stats_after(0)["frames"]["rx_packets"].as_u64().unwrap();
    let socket = PacketSocket::open(&lab.switch, "peer0");
    let to = |ip: [u8; 4]| ipv4_frame(parent_mac, SENDER, [10, 64, 0, 200], ip, 64);
    socket.send_many(&to([10, 64, 0, 2]), 3); // the endpoint
    socket.send_many(&to([10, 64, 0, 9]), 4); // nobody
    socket.send_many(&to([10, 64, 0, 254]), 2); // the host
    socket.send_many(&to([10, 64, 0, 255]), 1); // subnet broadcast on a unicast MAC: nobody's
    let stats = lab.stats_after(before + 10);
    assert_eq!(
        stats["drops"]["unknown_dst"],
        counters(5, 5 * 64),
        "{stats:#}"
    );
    assert_eq!(
        inbox.wait_count(parent_mac, SENDER, 3),
        3,
        "the endpoint gets its 3 packets"
    );
    // What XDP passed reaches the host's tap: the endpoint's 3 and the
    // host's 2, nothing for 10.64.0.9.
    assert_eq!(host_inbox.wait_count(parent_mac, SENDER, 5), 5);
    let nobody = host_inbox
        .frames
        .iter()
        .filter(|f| f.len() >= 34 && f[30..34] == [10, 64, 0, 9])
        .count();
    assert_eq!(nobody, 0, "a packet to an unknown address got past XDP");
    lab.netvlan(&["disconnect", "ipv", c.name()]).ok();
    lab.netvlan(&["network", "rm", "ipv"]).ok();
}

/// Pins of a build without `DST_SPILL` looked every MAC that was not in
/// its direct slot up in the hash. `datapath upgrade` from such pins sets
/// the spill bits before the swap, so a user-given MAC they hold in the
/// hash is still found: counted in its slot and passed where unknown
/// destinations are dropped.
#[test]
fn upgrade_from_pins_without_spill_bits_still_finds_the_macs_they_hashed() {
    use aya::maps::MapData;
    use netvlan::sys::bpf_batch::BatchMap;
    use netvlan_common::maps::{direct_slot, DstKey, DST_DIRECT, DST_SLOTS, DST_SPILL};

    const USER: Mac = [0x52, 0x54, 0x00, 0x47, 0x00, 0x05];
    let lab = Lan::new(false);
    lab.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.47.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "unknown_dst=drop",
        "spill",
    ])
    .ok();
    let c = Netns::new("pctr");
    lab.netvlan(&["connect", "--mac", "52:54:00:47:00:05", "spill", c.name()])
        .ok();
    let key = DstKey { vid: 0, mac: USER };
    let slot = direct_slot(&USER);
    assert!(
        registrations(&lab).contains(&(key, slot)),
        "a user-given MAC takes its direct slot: {:?}",
        registrations(&lab)
    );

    // What the older build left: the MAC in the hash with the same
    // counter slot, its direct slot free, and no DST_SPILL at all.
    let direct = MapData::from_pin(pinned_map(&lab, DST_DIRECT)).unwrap();
    BatchMap::new(&direct, DST_DIRECT)
        .unwrap()
        .update(&[(slot, DstKey::default())], 0)
        .unwrap();
    let hashed = MapData::from_pin(pinned_map(&lab, DST_SLOTS)).unwrap();
    BatchMap::new(&hashed, DST_SLOTS)
        .unwrap()
        .update(&[(key, slot)], 0)
        .unwrap();
    std::fs::remove_file(pinned_map(&lab, DST_SPILL)).unwrap();
    // The host's own MAC stays in its direct slot.
    let left = registrations(&lab);
    assert!(left.contains(&(key, slot)) && left.len() == 2, "{left:?}");

    // An upgrade that fails before its swap takes back the DST_SPILL it
    // created: left empty, the next upgrade would take it for carried-over
    // state and never set the bits of the hashed MACs.
    lab.fails_at(
        "upgrade-before-swap",
        &["datapath", "upgrade", "eth0", "--force"],
    );
    let spill = format!("/{DST_SPILL}");
    assert!(
        !lab.bpf.contents().iter().any(|p| p.ends_with(&spill)),
        "the failed upgrade left the map it added pinned: {:?}",
        lab.bpf.contents()
    );
    assert_eq!(
        registrations(&lab),
        left,
        "the failed upgrade changed nothing"
    );

    lab.netvlan(&["datapath", "upgrade", "eth0", "--force"])
        .ok();
    assert!(pinned_map(&lab, DST_SPILL).exists(), "upgrade pins it anew");
    assert_eq!(registrations(&lab), left, "carried over as is");

    let listener = PacketSocket::listen(&c, "eth0");
    let mut inbox = Inbox::new(&listener);
    let before = lab.stats_after(0)["frames"]["rx_packets"].as_u64().unwrap();
    let socket = PacketSocket::open(&lab.switch, "peer0");
    socket.send_many(&FrameBuilder::new(USER, SENDER).build(64), 3);
    let stats = lab.stats_after(before + 3);
    assert_eq!(
        inbox.wait_count(USER, SENDER, 3),
        3,
        "the hashed MAC is found behind its spill bit: {stats:#}"
    );
    let mine = stats["macs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mac"] == "52:54:00:47:00:05")
        .cloned()
        .unwrap_or_else(|| panic!("no entry for the endpoint: {stats:#}"));
    assert_eq!(mine["rx_packets"], 3, "{mine:#}");
    assert_eq!(mine["dropped"]["rx_packets"], 0, "{mine:#}");

    lab.netvlan(&["disconnect", "spill", c.name()]).ok();
    lab.netvlan(&["network", "rm", "spill"]).ok();
}
