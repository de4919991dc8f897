//! `netvlan stats --watch`: rates from deltas and totals with known
//! traffic, one JSON line per interval, each sort order honoured.

use std::{
    io::{BufRead, BufReader},
    process::{Child, ChildStdout, Stdio},
    time::Duration,
};

use netvlan_tests::{
    frame::{parse_mac, FrameBuilder, Mac},
    netvlan_bin,
    packet::PacketSocket,
    require_root, Lan, Netns,
};
use serde_json::Value;

const SENDER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x11];
const STRANGER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x77];
const LINES: usize = 4;

struct Watcher {
    sort: &'static str,
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
    got: Vec<Value>,
}

impl Watcher {
    fn start(lan: &Lan, sort: &'static str) -> Watcher {
        let count = LINES.to_string();
        let mut child = lan
            .host
            .command(netvlan_bin())
            .args([
                "stats",
                "--watch",
                "--json",
                "--interval",
                "1",
                "--count",
                &count,
            ])
            .args(["--sort", sort])
            .env("NETVLAN_BPF_DIR", lan.bpf.path())
            .env("NETVLAN_STATE_DIR", lan.state.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("netvlan stats --watch starts");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Watcher {
            sort,
            child,
            lines,
            got: Vec::new(),
        }
    }

    fn next_line(&mut self) {
        let line = self
            .lines
            .next()
            .unwrap_or_else(|| panic!("--sort {}: the watch ended early", self.sort))
            .unwrap();
        self.got.push(serde_json::from_str(&line).unwrap());
    }

    fn finish(mut self) -> Vec<Value> {
        while self.got.len() < LINES {
            self.next_line();
        }
        assert!(self.lines.next().is_none(), "--count {LINES} stops it");
        assert!(self.child.wait().unwrap().success());
        self.got
    }
}

fn row<'a>(line: &'a Value, kind: &str, field: &str, name: &str) -> Option<&'a Value> {
    line[kind]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[field] == name)
}

/// The sum of `delta.KEY` of one row over every line.
fn delta_sum(lines: &[Value], kind: &str, field: &str, name: &str, key: &str) -> u64 {
    lines
        .iter()
        .filter_map(|l| row(l, kind, field, name))
        .map(|r| r["delta"][key].as_u64().unwrap())
        .sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(1.0)
}

#[test]
fn watch_rates_and_totals_follow_known_traffic_in_each_sort_order() {
    require_root();
    let lan = Lan::new(false);
    lan.create_network(
        "watched",
        "10.75.0.0/24",
        &["parent=eth0", "unknown_dst=drop"],
    )
    .ok();
    let (a, b) = (Netns::new("wctr"), Netns::new("wctr"));
    let mac_of = |c: &Netns| {
        let run = lan
            .netvlan(&["connect", "--json", "watched", c.name()])
            .ok()
            .json();
        parse_mac(run["endpoint"]["mac"].as_str().unwrap())
    };
    let (mac_a, mac_b) = (mac_of(&a), mac_of(&b));
    std::thread::sleep(Duration::from_millis(300));
    let before = lan.netvlan(&["stats", "--json"]).ok().json();

    let mut watchers: Vec<Watcher> = ["pps", "bps", "drops"]
        .into_iter()
        .map(|sort| Watcher::start(&lan, sort))
        .collect();
    for w in &mut watchers {
        w.next_line();
    }
    // Known traffic after every watcher's first interval: `a` gets more
    // packets, `b` more bytes, and 30 frames are dropped.
    let wire = PacketSocket::open(&lan.switch, "peer0");
    wire.send_many(&FrameBuilder::new(mac_a, SENDER).build(64), 200);
    wire.send_many(&FrameBuilder::new(mac_b, SENDER).build(1000), 50);
    wire.send_many(&FrameBuilder::new(STRANGER, SENDER).build(64), 30);
    let runs: Vec<(&str, Vec<Value>)> =
        watchers.into_iter().map(|w| (w.sort, w.finish())).collect();
    let after = lan.netvlan(&["stats", "--json"]).ok().json();

    let total_of = |stats: &Value, c: &Netns| {
        stats["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["endpoint"] == c.name())
            .unwrap()["rx_packets"]
            .as_u64()
            .unwrap()
    };
    for (sort, lines) in &runs {
        assert_eq!(lines.len(), LINES);
        for line in lines {
            assert_eq!(line["sort"], *sort);
            let seconds = line["interval_s"].as_f64().unwrap();
            assert!(seconds > 0.0);
            for kind in ["endpoints", "vlans"] {
                let rows = line[kind].as_array().unwrap();
                for r in rows {
                    let d = &r["delta"];
                    let packets =
                        d["rx_packets"].as_u64().unwrap() + d["tx_packets"].as_u64().unwrap();
                    let bytes = d["rx_bytes"].as_u64().unwrap() + d["tx_bytes"].as_u64().unwrap();
                    assert!(
                        close(r["pps"].as_f64().unwrap(), packets as f64 / seconds),
                        "{r}"
                    );
                    assert!(
                        close(r["bps"].as_f64().unwrap(), (bytes * 8) as f64 / seconds),
                        "{r}"
                    );
                    assert!(close(
                        r["drops_per_s"].as_f64().unwrap(),
                        d["drops"].as_u64().unwrap() as f64 / seconds
                    ));
                }
                // Largest first by the key asked for.
                let key = match *sort {
                    "drops" => "drops_per_s",
                    other => other,
                };
                let values: Vec<f64> = rows.iter().map(|r| r[key].as_f64().unwrap()).collect();
                assert!(
                    values.windows(2).all(|w| w[0] >= w[1]),
                    "--sort {sort}: {kind} out of order: {values:?}"
                );
            }
        }
        // The first interval was quiet; the rest saw exactly the traffic.
        let first = &lines[0];
        for r in first["endpoints"].as_array().unwrap() {
            assert_eq!(r["delta"]["rx_packets"], 0, "{first}");
        }
        let ends = ("endpoints", "endpoint");
        assert_eq!(
            delta_sum(lines, ends.0, ends.1, a.name(), "rx_packets"),
            200
        );
        assert_eq!(
            delta_sum(lines, ends.0, ends.1, a.name(), "rx_bytes"),
            200 * 64
        );
        assert_eq!(delta_sum(lines, ends.0, ends.1, b.name(), "rx_packets"), 50);
        assert_eq!(
            delta_sum(lines, ends.0, ends.1, b.name(), "rx_bytes"),
            50 * 1000
        );
        assert_eq!(
            delta_sum(lines, "vlans", "parent", "eth0", "rx_packets"),
            280
        );
        assert_eq!(delta_sum(lines, "vlans", "parent", "eth0", "drops"), 30);
        // Totals are the counters' own.
        let last = lines.last().unwrap();
        for c in [&a, &b] {
            let shown = row(last, "endpoints", "endpoint", c.name()).unwrap()["total"]
                ["rx_packets"]
                .as_u64()
                .unwrap();
            assert_eq!(shown, total_of(&after, c));
            assert!(shown > total_of(&before, c));
        }
        let vlan = row(last, "vlans", "parent", "eth0").unwrap();
        assert_eq!(
            vlan["total"]["rx_packets"],
            after["interfaces"][0]["vlans"][0]["rx_packets"]
        );
        assert_eq!(
            vlan["total"]["drops"],
            after["interfaces"][0]["drops"]["unknown_dst"]["rx_packets"]
        );
    }

    // Without --json: a table of endpoints and one of VLANs.
    let table = lan
        .netvlan(&["stats", "--watch", "--interval", "0.2", "--count", "2"])
        .ok()
        .stdout;
    assert_eq!(table.matches("sorted by pps").count(), 2, "{table}");
    for needle in [
        "ENDPOINT",
        "PARENT",
        "PKT/S",
        "BIT/S",
        "DROP/S",
        a.name(),
        b.name(),
    ] {
        assert!(table.contains(needle), "{needle} in:\n{table}");
    }
    let wrong = lan
        .netvlan(&["stats", "--watch", "--interval", "0"])
        .failed();
    assert!(
        wrong
            .stderr
            .contains("the interval is 0.1 to 86400 seconds"),
        "{}",
        wrong.stderr
    );
}
