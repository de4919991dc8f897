//! `netvlan trace`: the datapath's own view of single frames. Frames are
//! sent from the LAN side (a packet socket on the switch's port) or from
//! inside a container, and `trace` (started in the host namespace, stopped
//! with SIGINT by PID) must show exactly the frames its filters select; its
//! pcapng capture must read back in tcpdump and tshark.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use aya::maps::{Array, Map, MapData};
use netvlan_common::{
    decision::{VLAN_DENY_LIST, VLAN_TRACE},
    maps,
    trace::{TraceConfig, TraceEvent, TRACE_CONFIG, WIRE_RING_BYTES},
};
use netvlan_tests::{
    daemon::Daemon,
    frame::{ipv4_frame, mac_string, parse_mac, FrameBuilder, Mac, ETH_P_8021Q},
    netvlan_bin,
    packet::PacketSocket,
    wait_for, Lan, Netns,
};
use serde_json::Value;

const STRANGER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x77];
const SENDER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x11];
const FOREIGN: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x99];
const BROADCAST: Mac = [0xff; 6];

/// A running `netvlan trace`, its output in files (never a full pipe).
struct Tracer {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: TempDir,
}

/// A directory of the test's own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(netvlan_tests::unique_name("nvt-trace"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Tracer {
    /// Starts `netvlan trace ARGS` in the lab's host namespace and waits
    /// until it has configured the programs and opened their rings.
    fn start(lab: &Lan, args: &[&str]) -> Tracer {
        Tracer::start_with(lab, &[], args)
    }

    /// [`Tracer::start`] with more environment (e.g. a daemon's run dir).
    fn start_with(lab: &Lan, env: &[(&str, &Path)], args: &[&str]) -> Tracer {
        let dir = TempDir::new();
        let stdout = dir.0.join("stdout");
        let stderr = dir.0.join("stderr");
        let mut cmd: Command = lab.host.command(netvlan_bin());
        cmd.arg("trace")
            .args(args)
            .env("NETVLAN_BPF_DIR", lab.bpf.path())
            .env("NETVLAN_STATE_DIR", lab.state.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = cmd.spawn().expect("netvlan trace starts");
        let mut tracer = Tracer {
            child: Some(child),
            stdout,
            stderr,
            _dir: dir,
        };
        let ready = wait_for(Duration::from_secs(10), || {
            if let Some(status) = tracer.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("trace exited early ({status}): {}", tracer.stderr_text());
            }
            tracer
                .stderr_text()
                .contains("Ctrl-C to stop")
                .then_some(())
        });
        assert!(
            ready.is_some(),
            "trace never got ready: {}",
            tracer.stderr_text()
        );
        tracer
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&self, signal: i32) {
        // SAFETY: a signal to the child this test started, by its PID.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    fn stdout_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for at least `n` lines (the VM lane's emulated CPUs print
    /// slowly: a generous bound).
    fn wait_lines(&self, n: usize) -> Vec<String> {
        wait_for(Duration::from_secs(60), || {
            let lines = self.stdout_lines();
            (lines.len() >= n).then_some(lines)
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {n} trace lines, got {:?}; stderr: {}",
                self.stdout_lines(),
                self.stderr_text()
            )
        })
    }

    /// Waits until the lines stop growing, then SIGINT: (lines, stderr).
    fn stop(mut self) -> (Vec<String>, String) {
        settle(|| self.stdout_lines().len());
        self.signal(libc::SIGINT);
        let status = self.child.take().unwrap().wait().unwrap();
        let stderr = self.stderr_text();
        assert!(status.success(), "trace failed ({status}): {stderr}");
        (self.stdout_lines(), stderr)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `value` has not changed for 300 ms (frames cross a veth
/// asynchronously; the ring is read as the kernel wakes the reader).
fn settle(mut value: impl FnMut() -> usize) {
    let mut last = value();
    let mut stable = 0;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        let now = value();
        if now == last {
            stable += 1;
            if stable >= 6 {
                return;
            }
        } else {
            stable = 0;
            last = now;
        }
    }
}

fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// `N event(s), M lost` from trace's last words.
fn events_and_lost(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("event(s)"))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    let mut words = line.split_whitespace();
    let events = words.next().unwrap().parse().unwrap();
    let lost = words.nth(1).unwrap().parse().unwrap();
    (events, lost)
}

/// The `flags` of every trace config pinned under the lab's bpf dir.
fn trace_configs(dir: &Path) -> Vec<(PathBuf, TraceConfig)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == TRACE_CONFIG) {
                let data = MapData::from_pin(&path).unwrap();
                let map: Array<MapData, TraceConfig> = Map::Array(data).try_into().unwrap();
                out.push((path, map.get(&0, 0).unwrap()));
            }
        }
    }
    out
}

/// Every VLAN's flags in the lab's one wire's `VLAN_POLICY`.
fn vlan_flags(lab: &Lan) -> Vec<u32> {
    let mut found = Vec::new();
    let mut stack = vec![lab.bpf.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == maps::VLAN_POLICY) {
                found.push(path);
            }
        }
    }
    assert_eq!(found.len(), 1, "one wire: {found:?}");
    let data = MapData::from_pin(&found[0]).unwrap();
    let map: Array<MapData, u32> = Map::Array(data).try_into().unwrap();
    (0..maps::VLAN_SLOTS)
        .map(|vid| map.get(&vid, 0).unwrap())
        .collect()
}

/// The VLANs whose flags carry the trace mark.
fn traced_vlans(lab: &Lan) -> Vec<u16> {
    vlan_flags(lab)
        .iter()
        .enumerate()
        .filter(|(_, f)| *f & VLAN_TRACE != 0)
        .map(|(vid, _)| vid as u16)
        .collect()
}

fn assert_configs_cleared(lab: &Lan, expected_programs: usize) {
    let configs = trace_configs(lab.bpf.path());
    assert_eq!(configs.len(), expected_programs, "{configs:?}");
    for (path, cfg) in configs {
        assert_eq!(cfg, TraceConfig::default(), "{} left on", path.display());
    }
}

/// The lab with a network `guarded` (unknown_dst=drop) on eth0 and one
/// container connected: (container, its MAC).
fn guarded_lab(lab: &Lan) -> (Netns, Mac) {
    guarded_lab_at(lab, "auto")
}

/// [`guarded_lab`] with the wire at `hook` (auto picks TC on a veth).
fn guarded_lab_at(lab: &Lan, hook: &str) -> (Netns, Mac) {
    lab.switch
        .exec("ip", &["addr", "add", "10.61.0.254/24", "dev", "peer0"]);
    let hook = format!("hook={hook}");
    lab.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.61.0.0/24",
        "-o",
        "parent=eth0",
        "-o",
        "unknown_dst=drop",
        "-o",
        &hook,
        "guarded",
    ])
    .ok();
    connect(lab, "guarded", "tctr")
}

fn connect(lab: &Lan, network: &str, kind: &str) -> (Netns, Mac) {
    let c = Netns::new(kind);
    let run = lab
        .netvlan(&["connect", "--json", network, c.name()])
        .ok()
        .json();
    (c, parse_mac(run["endpoint"]["mac"].as_str().unwrap()))
}

fn tool_lines(program: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (TEST_PACKAGES): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn trace_drops_shows_exactly_the_dropped_frames_and_the_pcap_holds_them() {
    let lab = Lan::new(false);
    let (_c, mac) = guarded_lab(&lab);
    let dir = TempDir::new();
    let pcap = dir.0.join("drops.pcapng");
    let tracer = Tracer::start(&lab, &["--drops", "--pcap", pcap.to_str().unwrap()]);

    let socket = PacketSocket::open(&lab.switch, "peer0");
    socket.send_many(&FrameBuilder::new(mac, SENDER).build(64), 5);
    socket.send_many(&FrameBuilder::new(STRANGER, SENDER).build(64), 7);
    socket.send_many(&FrameBuilder::new(BROADCAST, SENDER).build(64), 3);
    tracer.wait_lines(7);
    let (lines, stderr) = tracer.stop();

    assert_eq!(lines.len(), 7, "exactly the dropped frames: {lines:#?}");
    let stranger = mac_string(&STRANGER);
    for line in &lines {
        assert!(line.contains("eth0"), "{line}");
        assert!(
            line.contains(&format!("{} > {stranger}", mac_string(&SENDER))),
            "{line}"
        );
        assert!(line.ends_with("DROP unknown_dst"), "{line}");
    }
    assert_eq!(events_and_lost(&stderr), (7, 0), "{stderr}");
    assert_configs_cleared(&lab, 2);

    let path = pcap.to_str().unwrap();
    // One line per frame (tcpdump adds a hex dump of unknown EtherTypes).
    let tcpdump: Vec<String> = tool_lines("tcpdump", &["-n", "-e", "-r", path])
        .into_iter()
        .filter(|l| !l.starts_with('\t'))
        .collect();
    assert_eq!(tcpdump.len(), 7, "{tcpdump:#?}");
    assert!(
        tcpdump.iter().all(|l| l.contains(&stranger)),
        "{tcpdump:#?}"
    );
    let tshark = tool_lines(
        "tshark",
        &[
            "-r",
            path,
            "-T",
            "fields",
            "-e",
            "eth.dst",
            "-e",
            "frame.len",
            "-e",
            "frame.cap_len",
        ],
    );
    assert_eq!(tshark.len(), 7, "{tshark:#?}");
    for row in &tshark {
        assert_eq!(
            row.split('\t').collect::<Vec<_>>(),
            [stranger.as_str(), "64", "64"],
            "{row}"
        );
    }
}

#[test]
fn trace_json_names_addresses_ports_vlan_and_reason() {
    let lab = Lan::new(false);
    let (_c, mac) = guarded_lab(&lab);
    let tracer = Tracer::start(&lab, &["--json", "--network", "guarded", "--drops"]);
    let socket = PacketSocket::open(&lab.switch, "peer0");
    let mut frame = ipv4_frame(STRANGER, SENDER, [10, 61, 0, 254], [10, 61, 0, 77], 90);
    // UDP ports 4000 -> 53.
    frame[34..38].copy_from_slice(&[0x0f, 0xa0, 0x00, 0x35]);
    socket.send_many(&frame, 2);
    socket.send_many(&FrameBuilder::new(mac, SENDER).build(64), 3);
    tracer.wait_lines(2);
    let (lines, _) = tracer.stop();
    let events = json_lines(&lines);
    assert_eq!(events.len(), 2, "{events:#?}");
    for e in &events {
        assert_eq!(e["parent"], "eth0", "{e:#}");
        assert_eq!(e["src_mac"], mac_string(&SENDER), "{e:#}");
        assert_eq!(e["dst_mac"], mac_string(&STRANGER), "{e:#}");
        assert_eq!(e["src_ip"], "10.61.0.254", "{e:#}");
        assert_eq!(e["dst_ip"], "10.61.0.77", "{e:#}");
        assert_eq!(
            (
                e["protocol"].clone(),
                e["src_port"].clone(),
                e["dst_port"].clone()
            ),
            ("udp".into(), 4000.into(), 53.into()),
            "{e:#}"
        );
        assert_eq!(e["vlan"], 0, "{e:#}");
        assert_eq!(
            (e["verdict"].clone(), e["reason"].clone()),
            ("drop".into(), "unknown_dst".into()),
            "{e:#}"
        );
        assert_eq!(
            (e["len"].clone(), e["cap_len"].clone()),
            (90.into(), 90.into()),
            "{e:#}"
        );
        assert!(e["point"] == "wire-tc" || e["point"] == "wire-xdp", "{e:#}");
        assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e:#}");
    }
}

#[test]
fn trace_drops_at_the_xdp_hook_too() {
    let lab = Lan::new(false);
    let (_c, mac) = guarded_lab_at(&lab, "xdp");
    let tracer = Tracer::start(&lab, &["--json", "--drops"]);
    let socket = PacketSocket::open(&lab.switch, "peer0");
    socket.send_many(&FrameBuilder::new(mac, SENDER).build(64), 2);
    socket.send_many(&FrameBuilder::new(STRANGER, SENDER).build(200), 3);
    tracer.wait_lines(3);
    let (lines, stderr) = tracer.stop();
    let events = json_lines(&lines);
    assert_eq!(events.len(), 3, "{events:#?}");
    for e in &events {
        assert_eq!(e["point"], "wire-xdp", "{e:#}");
        assert_eq!(e["dst_mac"], mac_string(&STRANGER), "{e:#}");
        // 200 bytes on the wire, the first 128 kept.
        assert_eq!(
            (e["len"].clone(), e["cap_len"].clone()),
            (200.into(), 128.into()),
            "{e:#}"
        );
    }
    assert_eq!(events_and_lost(&stderr), (3, 0));
    assert_configs_cleared(&lab, 2);
}

#[test]
fn trace_filters_by_vlan_and_samples_one_in_n() {
    let lab = Lan::new(false);
    let (_c, _mac) = guarded_lab(&lab);
    let socket = PacketSocket::open(&lab.switch, "peer0");

    // VLAN: tagged frames pass this wire (no VLAN filter); only VLAN 30's
    // are traced.
    let tracer = Tracer::start(&lab, &["--json", "--vlan", "30"]);
    let tagged = |vid| {
        FrameBuilder::new(BROADCAST, SENDER)
            .tag(ETH_P_8021Q, vid)
            .build(64)
    };
    socket.send_many(&tagged(30), 3);
    socket.send_many(&tagged(31), 2);
    socket.send_many(&FrameBuilder::new(BROADCAST, SENDER).build(64), 2);
    tracer.wait_lines(3);
    let (lines, _) = tracer.stop();
    let events = json_lines(&lines);
    assert_eq!(events.len(), 3, "{events:#?}");
    assert!(
        events
            .iter()
            .all(|e| e["vlan"] == 30 && e["verdict"] == "pass"),
        "{events:#?}"
    );

    // 1 in 3 of 10 drops: the 1st, 4th, 7th and 10th.
    let tracer = Tracer::start(&lab, &["--drops", "--sample", "3"]);
    socket.send_many(&FrameBuilder::new(STRANGER, SENDER).build(64), 10);
    tracer.wait_lines(4);
    let (lines, stderr) = tracer.stop();
    assert_eq!(lines.len(), 4, "ceil(10 / 3): {lines:#?}");
    assert_eq!(events_and_lost(&stderr), (4, 0));
    assert_configs_cleared(&lab, 2);
}

/// Frames on a VLAN no trace can match never read the trace config: only
/// the VLANs a session's filter can match carry `VLAN_TRACE` in the
/// wire's flags. A policy rewrite of every VLAN keeps the mark; the
/// session's end clears it, also when its client dies under the daemon.
#[test]
fn trace_marks_only_the_vlans_its_filter_can_match_until_it_ends() {
    let lab = Lan::new(false);
    let (_c, _mac) = guarded_lab(&lab);
    assert_eq!(traced_vlans(&lab), Vec::<u16>::new(), "no trace, no mark");

    let tracer = Tracer::start(&lab, &["--json", "--vlan", "30"]);
    assert_eq!(traced_vlans(&lab), [30]);
    // The deny list is wire-wide: every VLAN's flags are rewritten.
    lab.netvlan(&["policy", "set", "guarded", "mac_deny=02:00:00:00:00:66"])
        .ok();
    let flags = vlan_flags(&lab);
    assert!(flags.iter().all(|f| f & VLAN_DENY_LIST != 0), "rewritten");
    assert_eq!(traced_vlans(&lab), [30], "the rewrite kept the mark");
    let socket = PacketSocket::open(&lab.switch, "peer0");
    let tagged = |vid| {
        FrameBuilder::new(BROADCAST, SENDER)
            .tag(ETH_P_8021Q, vid)
            .build(64)
    };
    socket.send_many(&tagged(30), 2);
    socket.send_many(&tagged(31), 2);
    tracer.wait_lines(2);
    let (lines, _) = tracer.stop();
    assert_eq!(json_lines(&lines).len(), 2, "VLAN 30's frames: {lines:#?}");
    assert_eq!(traced_vlans(&lab), Vec::<u16>::new(), "the end unmarks");
    assert!(vlan_flags(&lab).iter().all(|f| f & VLAN_DENY_LIST != 0));
    assert_configs_cleared(&lab, 2);

    // Unfiltered, through the daemon: every VLAN, until the client dies.
    let daemon = Daemon::start(&lab, &[]);
    let tracer = Tracer::start_with(
        &lab,
        &[("NETVLAN_RUN_DIR", daemon.run_dir.path())],
        &["--drops"],
    );
    assert_eq!(traced_vlans(&lab).len(), maps::VLAN_SLOTS as usize);
    tracer.signal(libc::SIGKILL);
    // The daemon notices the client is gone at its next heartbeat (1 s).
    let cleared = wait_for(Duration::from_secs(10), || {
        traced_vlans(&lab).is_empty().then_some(())
    });
    assert!(cleared.is_some(), "still marked: {:?}", traced_vlans(&lab));
    assert_configs_cleared(&lab, 2);
    drop(tracer);
}

#[test]
fn trace_endpoint_shows_its_frames_on_the_wire_and_its_own_link_only() {
    let lab = Lan::new(false);
    let (a, a_mac) = guarded_lab(&lab);
    let (_b, b_mac) = connect(&lab, "guarded", "tctrb");
    let tracer = Tracer::start(&lab, &["--json", "--endpoint", a.name()]);
    let socket = PacketSocket::open(&lab.switch, "peer0");
    socket.send_many(&FrameBuilder::new(a_mac, SENDER).build(64), 4);
    socket.send_many(&FrameBuilder::new(b_mac, SENDER).build(64), 3);
    socket.send_many(&FrameBuilder::new(STRANGER, SENDER).build(64), 2);
    tracer.wait_lines(8);
    let (lines, _) = tracer.stop();
    let events = json_lines(&lines);
    let to_a = mac_string(&a_mac);
    for e in &events {
        assert_eq!(e["endpoint"], a.name(), "{e:#}");
        assert_eq!(e["network"], "guarded", "{e:#}");
    }
    let at = |point: &str| {
        events
            .iter()
            .filter(|e| e["point"] == point && e["dst_mac"] == to_a.as_str())
            .count()
    };
    assert_eq!(at("wire-tc") + at("wire-xdp"), 4, "{events:#?}");
    assert_eq!(at("ingress"), 4, "{events:#?}");
    assert_eq!(events.len(), 8, "nothing of B or the stranger: {events:#?}");
}

#[test]
fn trace_shows_an_endpoints_anti_spoofing_drops() {
    let lab = Lan::new(false);
    let (c, me) = guarded_lab(&lab);
    let tracer = Tracer::start(&lab, &["--json", "--drops", "--endpoint", c.name()]);
    let out = PacketSocket::open(&c, "eth0");
    let mut spoofed = FrameBuilder::new(BROADCAST, FOREIGN).build(64);
    out.send_maybe_dropped(&spoofed);
    spoofed = ipv4_frame(BROADCAST, me, [10, 61, 0, 99], [10, 61, 0, 254], 64);
    out.send_maybe_dropped(&spoofed);
    tracer.wait_lines(2);
    let (lines, _) = tracer.stop();
    let events = json_lines(&lines);
    assert_eq!(events.len(), 2, "{events:#?}");
    for e in &events {
        assert_eq!(e["point"], "egress", "{e:#}");
        assert_eq!(e["reason"], "spoofed", "{e:#}");
        assert_eq!(e["endpoint"], c.name(), "{e:#}");
    }
    assert_eq!(events[0]["src_mac"], mac_string(&FOREIGN));
    assert_eq!(events[1]["src_ip"], "10.61.0.99");
}

#[test]
fn trace_counts_the_events_a_full_ring_loses() {
    let lab = Lan::new(false);
    let (_c, _mac) = guarded_lab(&lab);
    let tracer = Tracer::start(&lab, &["--drops"]);
    // A reader that does not read: the wire's ring (128 KiB, 780
    // events) fills and the rest are counted as lost.
    tracer.signal(libc::SIGSTOP);
    let socket = PacketSocket::open(&lab.switch, "peer0");
    const SENT: u64 = 3000;
    socket.send_many(
        &FrameBuilder::new(STRANGER, SENDER).build(64),
        SENT as usize,
    );
    let stats = lab.stats_after(SENT);
    assert_eq!(
        stats["drops"]["unknown_dst"]["rx_packets"], SENT,
        "{stats:#}"
    );
    tracer.signal(libc::SIGCONT);
    // What the ring held (a record is the event and the ring's 8-byte
    // header), read once the reader runs again.
    let held = (WIRE_RING_BYTES as usize) / (std::mem::size_of::<TraceEvent>() + 8);
    tracer.wait_lines(held);
    let (lines, stderr) = tracer.stop();
    let (events, lost) = events_and_lost(&stderr);
    assert_eq!(events, lines.len() as u64);
    assert_eq!(events, held as u64, "the ring held what fits: {stderr}");
    assert_eq!(events + lost, SENT, "{stderr}");
    assert_configs_cleared(&lab, 2);
    // Never silent: the daemon exports the same count.
    let daemon = Daemon::start(&lab, &[]);
    let metrics = daemon.get("/metrics");
    let line = format!("netvlan_trace_lost_events_total{{parent=\"eth0\"}} {lost}");
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} in /metrics:\n{metrics}"
    );
}

#[test]
fn trace_count_ends_the_trace_by_itself_and_restores_the_configs() {
    let lab = Lan::new(false);
    let (_c, _mac) = guarded_lab(&lab);
    let mut tracer = Tracer::start(&lab, &["--drops", "--count", "2"]);
    let socket = PacketSocket::open(&lab.switch, "peer0");
    socket.send_many(&FrameBuilder::new(STRANGER, SENDER).build(64), 5);
    let status = wait_for(Duration::from_secs(10), || {
        tracer.child.as_mut().unwrap().try_wait().unwrap()
    })
    .expect("trace --count 2 must end after 2 events");
    tracer.child = None;
    assert!(status.success(), "{}", tracer.stderr_text());
    assert_eq!(tracer.stdout_lines().len(), 2);
    assert_configs_cleared(&lab, 2);
}

#[test]
fn trace_refuses_an_unknown_network_and_changes_nothing() {
    let lab = Lan::new(false);
    let (_c, _mac) = guarded_lab(&lab);
    let run = lab.netvlan(&["trace", "--network", "nosuch"]).failed();
    assert!(
        run.stderr.contains("no network named 'nosuch'"),
        "{}",
        run.stderr
    );
    let run = lab.netvlan(&["trace", "--endpoint", "nosuch"]).failed();
    assert!(run.stderr.contains("'nosuch'"), "{}", run.stderr);
    assert_configs_cleared(&lab, 2);
}

/// With a daemon running, `trace` asks it (a ring has one reader): the
/// same exact drops, the daemon's page sees them too, and the configs are
/// put back once the trace has gone.
#[test]
fn trace_through_the_daemon_shows_the_same_drops_and_feeds_the_page() {
    let lab = Lan::new(false);
    let (_c, mac) = guarded_lab(&lab);
    let daemon = Daemon::start(&lab, &[]);
    let tracer = Tracer::start_with(
        &lab,
        &[("NETVLAN_RUN_DIR", daemon.run_dir.path())],
        &["--drops", "--json"],
    );
    assert!(
        tracer.stderr_text().contains("through the daemon"),
        "{}",
        tracer.stderr_text()
    );

    let socket = PacketSocket::open(&lab.switch, "peer0");
    socket.send_many(&FrameBuilder::new(mac, SENDER).build(64), 5);
    socket.send_many(&FrameBuilder::new(STRANGER, SENDER).build(64), 7);
    tracer.wait_lines(7);
    let (lines, stderr) = tracer.stop();

    let events = json_lines(&lines);
    assert_eq!(events.len(), 7, "exactly the dropped frames: {lines:#?}");
    for e in &events {
        assert_eq!(e["dst_mac"], mac_string(&STRANGER), "{e}");
        assert_eq!(e["reason"], "unknown_dst", "{e}");
    }
    assert_eq!(events_and_lost(&stderr), (7, 0), "{stderr}");
    let snapshot: Value = serde_json::from_str(&daemon.get("/api/snapshot")).unwrap();
    let traced = snapshot["traces"].as_array().unwrap();
    assert_eq!(traced.len(), 7, "the page's trace panel: {snapshot:#}");
    // The daemon notices the client is gone at its next heartbeat (1 s).
    let cleared = wait_for(Duration::from_secs(10), || {
        trace_configs(lab.bpf.path())
            .iter()
            .all(|(_, cfg)| *cfg == TraceConfig::default())
            .then_some(())
    });
    assert!(cleared.is_some(), "{:?}", trace_configs(lab.bpf.path()));
    assert_configs_cleared(&lab, 2);
}
