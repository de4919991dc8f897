//! The live page: its snapshot is exactly `stats --json`, its event stream
//! pushes new ones, and headless Chromium shows the numbers change while
//! traffic flows (two screenshots kept under target/test-artifacts).

use std::{path::PathBuf, process::Output, time::Duration};

use netvlan_tests::{
    daemon::Daemon,
    frame::{parse_mac, FrameBuilder, Mac},
    packet::PacketSocket,
    require_root, Lan, Netns, OwnedDir,
};
use serde_json::Value;

const SENDER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x11];
const STRANGER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x77];

/// A network dropping unknown destinations, one container on it.
fn lab(subnet: &str) -> (Lan, Netns, Mac) {
    let lan = Lan::new(false);
    lan.create_network("live", subnet, &["parent=eth0", "unknown_dst=drop"])
        .ok();
    let c = Netns::new("pgctr");
    let run = lan
        .netvlan(&["connect", "--json", "live", c.name()])
        .ok()
        .json();
    let mac = parse_mac(run["endpoint"]["mac"].as_str().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    (lan, c, mac)
}

/// `stats --json` once eth0 has seen `frames` frames.
fn stats_at(lan: &Lan, frames: u64) -> Value {
    lan.stats_after(frames);
    lan.netvlan(&["stats", "--json"]).ok().json()
}

#[test]
fn the_snapshot_and_stats_json_agree_exactly_and_the_stream_pushes_them() {
    require_root();
    let (lan, c, mac) = lab("10.73.0.0/24");
    let daemon = Daemon::start(&lan, &[]);
    let wire = PacketSocket::open(&lan.switch, "peer0");
    wire.send_many(&FrameBuilder::new(mac, SENDER).build(64), 20);
    wire.send_many(&FrameBuilder::new(STRANGER, SENDER).build(100), 7);
    let stats = stats_at(&lan, 27);

    let snapshot: Value = serde_json::from_str(&daemon.get("/api/snapshot")).unwrap();
    assert_eq!(
        snapshot["stats"], stats,
        "the page's numbers are stats --json's"
    );
    let eth0 = &snapshot["stats"]["interfaces"][0];
    assert_eq!(eth0["frames"]["rx_packets"], 27);
    assert_eq!(eth0["drops"]["unknown_dst"]["rx_packets"], 7);
    assert_eq!(snapshot["stats"]["endpoints"][0]["endpoint"], c.name());
    assert_eq!(snapshot["stats"]["endpoints"][0]["rx_packets"], 20);
    let network = &snapshot["networks"][0];
    assert_eq!(
        (&network["name"], &network["endpoints"], &network["parent"]),
        (&"live".into(), &1.into(), &"eth0".into())
    );
    assert_eq!(snapshot["traces"], serde_json::json!([]));

    // The server push: `snapshot` events, one a second, each complete.
    let page = daemon.get("/");
    assert!(page.contains("<script src=\"/page.js\">"), "{page}");
    assert!(!page.contains("{{SNAPSHOT}}"), "the snapshot is embedded");
    let stream = std::process::Command::new("nsenter")
        .arg(format!("--net={}", lan.host.path().display()))
        .args(["curl", "-sN", "--max-time", "3.5"])
        .arg(format!("http://{}/api/events", daemon.addr))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&stream.stdout);
    let pushed: Vec<Value> = text
        .split("\n\n")
        .filter(|e| e.contains("event: snapshot"))
        .map(|e| {
            let data = e
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("an event has data");
            serde_json::from_str(data).expect("the data is a snapshot")
        })
        .collect();
    assert!(pushed.len() >= 2, "at least two pushes in 3.5 s: {text}");
    for snapshot in &pushed {
        assert_eq!(snapshot["stats"], stats, "nothing moved: same numbers");
    }
    assert!(pushed[1]["time_ms"].as_u64() > pushed[0]["time_ms"].as_u64());
}

/// Runs headless Chromium in `ns` (as root, so without its sandbox), on a
/// profile of its own, with `args` then `url`.
fn chromium(ns: &Netns, args: &[&str], url: &str) -> Output {
    let profile = OwnedDir::at(std::env::temp_dir().join(netvlan_tests::unique_name("nvchrome")));
    std::fs::create_dir_all(profile.path()).unwrap();
    let out = ns
        .command("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .env("HOME", profile.path())
        .output()
        .unwrap_or_else(|e| {
            panic!("chromium does not run ({e}): install Debian's chromium (cargo xtask test does)")
        });
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The text of the element with `id` in a dumped DOM.
fn element_text(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"));
    let rest = &dom[start..];
    let text = &rest[rest.find('>').unwrap() + 1..];
    text[..text.find('<').unwrap()].to_string()
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn headless_chromium_sees_the_numbers_change_while_traffic_flows() {
    require_root();
    let (lan, c, mac) = lab("10.74.0.0/24");
    let daemon = Daemon::start(&lan, &[]);
    let url = format!("http://{}/", daemon.addr);
    let wire = PacketSocket::open(&lan.switch, "peer0");
    let mut shots = Vec::new();
    let mut frames = 0;
    for (shot, (to_endpoint, to_stranger)) in [(30, 5), (45, 11)].into_iter().enumerate() {
        wire.send_many(&FrameBuilder::new(mac, SENDER).build(64), to_endpoint);
        wire.send_many(&FrameBuilder::new(STRANGER, SENDER).build(64), to_stranger);
        frames += (to_endpoint + to_stranger) as u64;
        let stats = stats_at(&lan, frames);
        let png = artifacts().join(format!("page-{}.png", shot + 1));
        let _ = std::fs::remove_file(&png);
        chromium(
            &lan.host,
            &[&format!("--screenshot={}", png.display())],
            &url,
        );
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 1000,
            "{} is a real screenshot ({size} bytes)",
            png.display()
        );
        let dom = String::from_utf8(chromium(&lan.host, &["--dump-dom"], &url).stdout).unwrap();
        let shown = (
            element_text(&dom, "total-frames"),
            element_text(&dom, "total-drops"),
        );
        let eth0 = &stats["interfaces"][0];
        assert_eq!(
            shown,
            (
                eth0["frames"]["rx_packets"].to_string(),
                eth0["drops"]["unknown_dst"]["rx_packets"].to_string()
            ),
            "the page shows what stats --json says"
        );
        assert!(dom.contains(c.name()), "the endpoint is listed");
        shots.push(shown);
    }
    assert_ne!(shots[0], shots[1], "the numbers changed between the shots");
    assert_eq!(shots[1].0, "91");
}
