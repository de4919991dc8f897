//! `/metrics` of `netvlan daemon`: what `promtool` accepts, what
//! `stats --json` says, what a real Prometheus scrapes and what the
//! Grafana dashboard's queries find, for one known traffic pattern; and
//! the listener stays on loopback unless told.

use std::{
    collections::BTreeMap,
    io::Write,
    process::{Child, Command, Stdio},
    time::Duration,
};

use netvlan_tests::{
    daemon::Daemon, frame::FrameBuilder, frame::Mac, packet::PacketSocket, require_root,
    unique_name, wait_for, Lan, Netns, OwnedDir,
};
use serde_json::Value;

/// The LAN's sender (the switch namespace).
const SENDER: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x11];
/// A unicast MAC nobody registered: `unknown_dst=drop` drops frames to it.
const NOBODY: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x99];
/// A source MAC that is not the container's: anti-spoofing drops it.
const FOREIGN: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x77];
const NETWORK: &str = "obs";

/// One sample of the exposition: name, labels, value.
type Key = (String, BTreeMap<String, String>);

/// Parses the Prometheus text format (0.0.4) as netvlan writes it: no
/// escapes in label values, no timestamps.
fn parse(text: &str) -> BTreeMap<Key, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("a sample line has a value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let previous = out.insert((name.to_string(), labels), value);
        assert!(previous.is_none(), "a series appears twice: {line}");
    }
    out
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    (
        name.to_string(),
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The value of one series, panicking (with the exposition) if it is absent.
fn value(samples: &BTreeMap<Key, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    *samples.get(&key(name, labels)).unwrap_or_else(|| {
        panic!(
            "no {name}{labels:?} in the exposition: {:#?}",
            samples.keys()
        )
    })
}

/// What `/metrics` must show for the counters of one `stats --json`.
fn expected_from_stats(stats: &Value) -> BTreeMap<Key, f64> {
    let mut out = BTreeMap::new();
    let n = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {v}")) as f64;
    for e in stats["endpoints"].as_array().into_iter().flatten() {
        let labels = [
            ("network", e["network"].as_str().unwrap()),
            ("endpoint", e["endpoint"].as_str().unwrap()),
        ];
        for field in [
            "rx_packets",
            "rx_bytes",
            "tx_packets",
            "tx_bytes",
            "spoofed_packets",
        ] {
            out.insert(
                key(&format!("netvlan_endpoint_{field}_total"), &labels),
                n(&e[field]),
            );
        }
    }
    for iface in stats["interfaces"].as_array().unwrap() {
        let parent = iface["ifname"].as_str().unwrap();
        for v in iface["vlans"].as_array().unwrap() {
            let vlan = v["vlan"].to_string();
            let labels = [("parent", parent), ("vlan", vlan.as_str())];
            out.insert(
                key("netvlan_vlan_rx_packets_total", &labels),
                n(&v["rx_packets"]),
            );
            out.insert(
                key("netvlan_vlan_rx_bytes_total", &labels),
                n(&v["rx_bytes"]),
            );
        }
        for d in iface["vlan_drops"].as_array().unwrap() {
            let vlan = d["vlan"].to_string();
            let labels = [
                ("parent", parent),
                ("vlan", vlan.as_str()),
                ("reason", d["reason"].as_str().unwrap()),
            ];
            out.insert(key("netvlan_drops_total", &labels), n(&d["rx_packets"]));
            out.insert(key("netvlan_drop_bytes_total", &labels), n(&d["rx_bytes"]));
        }
        for (kind, c) in iface["anomalies"].as_object().unwrap() {
            out.insert(
                key(
                    "netvlan_anomalies_total",
                    &[("parent", parent), ("kind", kind)],
                ),
                n(&c["rx_packets"]),
            );
        }
        for g in iface["mac_guards"].as_array().unwrap() {
            let vlan = g["vlan"].to_string();
            let labels = [("parent", parent), ("vlan", vlan.as_str())];
            out.insert(key("netvlan_learned_macs", &labels), n(&g["learned"]));
            if !g["limit"].is_null() {
                out.insert(key("netvlan_learned_macs_limit", &labels), n(&g["limit"]));
            }
        }
        let prog_id = iface["prog_id"].to_string();
        let mode = iface["mode"].as_str().unwrap();
        let hook = if matches!(mode, "tcx" | "clsact") {
            "tc"
        } else {
            "xdp"
        };
        out.insert(
            key(
                "netvlan_datapath_info",
                &[
                    ("parent", parent),
                    ("hook", hook),
                    ("mode", mode),
                    ("prog_id", prog_id.as_str()),
                ],
            ),
            1.0,
        );
    }
    out
}

/// The series of `samples` whose names `expected` has.
fn same_names(samples: &BTreeMap<Key, f64>, expected: &BTreeMap<Key, f64>) -> BTreeMap<Key, f64> {
    let names: std::collections::BTreeSet<&String> = expected.keys().map(|(n, _)| n).collect();
    samples
        .iter()
        .filter(|((n, _), _)| names.contains(n))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// The lab with one network (`unknown_dst=drop`, a MAC-sprawl guard) and
/// two connected containers `a` and `b`.
struct Scene {
    lan: Lan,
    a: Netns,
    b: Netns,
}

impl Scene {
    fn new() -> Scene {
        require_root();
        let lan = Lan::new(false);
        lan.network_on_eth0_with(NETWORK, 71, &["unknown_dst=drop", "max_macs=100"]);
        let (a, b) = (Netns::new("mctr"), Netns::new("mctr"));
        lan.netvlan(&["connect", NETWORK, a.name()]).ok();
        lan.netvlan(&["connect", NETWORK, b.name()]).ok();
        Scene { lan, a, b }
    }

    fn stats(&self) -> Value {
        self.lan.netvlan(&["stats", "--json"]).ok().json()
    }

    /// Waits until the counters stop moving (link-up announcements over),
    /// then hands back what `stats --json` says.
    fn quiet_stats(&self) -> Value {
        let mut last = self.stats();
        wait_for(Duration::from_secs(10), || {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.stats();
            let same = now == last;
            last = now;
            same.then_some(())
        })
        .expect("the lab's counters settle within 10 s");
        last
    }

    /// The known pattern: 5 frames of 64 bytes from the LAN to `b`, 3 of
    /// 100 bytes from `a` to the LAN, 1 frame from `a` with a foreign
    /// source MAC (spoofed), 4 frames of 64 bytes to a MAC nobody has
    /// (dropped as `unknown_dst`).
    fn send_pattern(&self) {
        let lan_listens = PacketSocket::listen(&self.lan.switch, "peer0");
        let (mac_a, mac_b) = (self.a.mac("eth0"), self.b.mac("eth0"));
        let b_listens = PacketSocket::listen(&self.b, "eth0");
        let switch = PacketSocket::open(&self.lan.switch, "peer0");
        switch.send_many(&FrameBuilder::new(mac_b, SENDER).build(64), 5);
        switch.send_many(&FrameBuilder::new(NOBODY, SENDER).build(64), 4);
        let a = PacketSocket::open(&self.a, "eth0");
        a.send_many(&FrameBuilder::new(SENDER, mac_a).build(100), 3);
        a.send_maybe_dropped(&FrameBuilder::new(SENDER, FOREIGN).build(100));
        let arrived = |socket: &PacketSocket, src: Mac, n: usize| {
            let mut got = 0;
            wait_for(Duration::from_secs(5), || {
                got += socket
                    .received()
                    .iter()
                    .filter(|f| f.len() >= 12 && f[6..12] == src)
                    .count();
                (got >= n).then_some(())
            })
            .unwrap_or_else(|| panic!("only {got} of {n} frames arrived"));
        };
        arrived(&b_listens, SENDER, 5);
        arrived(&lan_listens, mac_a, 3);
    }

    /// `/metrics` and `stats --json` read at one quiet moment: stats,
    /// metrics, stats again, until both stats agree.
    fn metrics_and_stats(&self, daemon: &Daemon) -> (String, Value) {
        for _ in 0..20 {
            let before = self.quiet_stats();
            let text = daemon.get("/metrics");
            if self.stats() == before {
                return (text, before);
            }
        }
        panic!("the counters never held still around a scrape");
    }
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's prometheus, installed by cargo xtask test)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the exposition:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_pass_promtool_and_agree_exactly_with_stats_json() {
    let scene = Scene::new();
    let daemon = Daemon::start(&scene.lan, &[]);
    let (before, _) = scene.metrics_and_stats(&daemon);
    scene.send_pattern();
    let (text, stats) = scene.metrics_and_stats(&daemon);
    promtool_check(&text);

    let samples = parse(&text);
    let expected = expected_from_stats(&stats);
    assert_eq!(
        same_names(&samples, &expected),
        expected,
        "/metrics and stats --json disagree; stats: {stats:#}"
    );

    // The pattern itself, as /metrics counts it.
    let before = parse(&before);
    let (a, b) = (scene.a.name(), scene.b.name());
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&samples, name, labels) - before.get(&key(name, labels)).copied().unwrap_or(0.0)
    };
    let ep = |e| [("network", NETWORK), ("endpoint", e)];
    assert_eq!(delta("netvlan_endpoint_rx_packets_total", &ep(b)), 5.0);
    assert_eq!(delta("netvlan_endpoint_rx_bytes_total", &ep(b)), 5.0 * 64.0);
    assert_eq!(delta("netvlan_endpoint_tx_packets_total", &ep(a)), 3.0);
    assert_eq!(
        delta("netvlan_endpoint_tx_bytes_total", &ep(a)),
        3.0 * 100.0
    );
    assert_eq!(delta("netvlan_endpoint_spoofed_packets_total", &ep(a)), 1.0);
    let unknown = [("parent", "eth0"), ("vlan", "0"), ("reason", "unknown_dst")];
    assert_eq!(delta("netvlan_drops_total", &unknown), 4.0);
    assert_eq!(delta("netvlan_drop_bytes_total", &unknown), 4.0 * 64.0);

    // Gauges from the store and the maps.
    let net = [("network", NETWORK)];
    let subnet = [("network", NETWORK), ("subnet", "10.71.0.0/24")];
    assert_eq!(value(&samples, "netvlan_endpoints", &net), 2.0);
    assert_eq!(value(&samples, "netvlan_ipam_addresses_used", &subnet), 2.0);
    // A /24 less its network, broadcast and gateway addresses.
    assert_eq!(
        value(&samples, "netvlan_ipam_addresses_capacity", &subnet),
        253.0
    );
    let registered = stats["interfaces"][0]["macs"].as_array().unwrap().len() as f64;
    let map = |m| [("parent", "eth0"), ("map", m)];
    assert_eq!(
        value(&samples, "netvlan_map_entries", &map("DST_STATS")),
        registered
    );
    assert_eq!(
        value(&samples, "netvlan_map_max_entries", &map("DST_SLOTS")),
        65536.0
    );
    assert!(value(&samples, "netvlan_map_entries", &map("MAC_LEARN")) >= 1.0);
    assert_eq!(value(&samples, "netvlan_scrape_errors_total", &[]), 0.0);
    assert!(value(&samples, "netvlan_scrape_duration_seconds", &[]) > 0.0);

    // A disconnected endpoint's series go with it.
    scene.lan.netvlan(&["disconnect", NETWORK, a]).ok();
    let after = parse(&daemon.get("/metrics"));
    let of_a: Vec<&Key> = after
        .keys()
        .filter(|(_, labels)| labels.get("endpoint").map(String::as_str) == Some(a))
        .collect();
    assert!(
        of_a.is_empty(),
        "series of a disconnected endpoint remain: {of_a:#?}"
    );
    assert!(after.contains_key(&key("netvlan_endpoint_rx_packets_total", &ep(b))));
    assert_eq!(value(&after, "netvlan_endpoints", &net), 1.0);
    assert_eq!(value(&after, "netvlan_ipam_addresses_used", &subnet), 1.0);
    scene.lan.netvlan(&["disconnect", NETWORK, b]).ok();
    scene.lan.netvlan(&["network", "rm", NETWORK]).ok();
}

/// A Prometheus server inside a lab namespace, on its loopback, with its
/// own storage; killed by PID on drop.
struct Prometheus {
    child: Option<Child>,
    ns: String,
    _dir: OwnedDir,
}

impl Prometheus {
    /// Scrapes `target` (host:port in `ns`) every second.
    fn start(ns: &Netns, target: &str) -> Prometheus {
        let dir = OwnedDir::at(std::env::temp_dir().join(unique_name("prom")));
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: netvlan\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = ns
            .command("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:9090")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus runs (Debian's prometheus, installed by cargo xtask test)");
        let prometheus = Prometheus {
            child: Some(child),
            ns: ns.name().to_string(),
            _dir: dir,
        };
        let ready = wait_for(Duration::from_secs(60), || {
            prometheus
                .curl(&["http://127.0.0.1:9090/-/ready"])
                .map(|_| ())
        });
        if ready.is_none() {
            let log = std::fs::read_to_string(prometheus._dir.path().join("prometheus.log"));
            panic!("prometheus did not get ready in 60 s: {log:?}");
        }
        prometheus
    }

    fn curl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.ns))
            .args(["curl", "-sf", "--max-time", "10"])
            .args(args)
            .output()
            .expect("curl runs");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The result vector of the instant query `expr`, through the HTTP API.
    fn query(&self, expr: &str) -> Vec<Value> {
        let body = self
            .curl(&[
                "http://127.0.0.1:9090/api/v1/query",
                "--data-urlencode",
                &format!("query={expr}"),
            ])
            .unwrap_or_else(|| panic!("prometheus refused the query {expr}"));
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["status"], "success", "{expr}: {answer:#}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value `expr` evaluates to, if it has exactly one.
    fn scalar(&self, expr: &str) -> Option<f64> {
        match self.query(expr).as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every PromQL expression of the dashboard (panel targets, and the
/// metric each template variable takes its values from), with Grafana's
/// variables as Grafana would fill them with "All".
fn dashboard_queries() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dashboards/grafana-netvlan.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    fn walk(panels: &Value, exprs: &mut Vec<String>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                exprs.push(target["expr"].as_str().unwrap().to_string());
            }
            walk(&panel["panels"], exprs);
        }
    }
    walk(&dashboard["panels"], &mut exprs);
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        let definition = var["definition"].as_str().unwrap();
        let metric = definition
            .strip_prefix("label_values(")
            .and_then(|rest| rest.split_once(','))
            .map(|(metric, _)| metric.to_string())
            .unwrap_or_else(|| panic!("a variable not over label_values: {definition}"));
        exprs.push(metric);
    }
    exprs
        .into_iter()
        .map(|e| {
            e.replace("$__rate_interval", "30s")
                .replace("$network", ".*")
                .replace("$parent", ".*")
        })
        .collect()
}

#[test]
fn prometheus_scrapes_the_exact_burst_and_every_dashboard_query_has_data() {
    let scene = Scene::new();
    let daemon = Daemon::start(&scene.lan, &[]);
    scene.send_pattern();
    let prometheus = Prometheus::start(&scene.lan.host, &daemon.addr);
    let b = scene.b.name();
    let series = format!(
        "netvlan_endpoint_rx_packets_total{{job=\"netvlan\",network=\"{NETWORK}\",endpoint=\"{b}\"}}"
    );

    // Baseline: Prometheus holds what the daemon counts now.
    let stats = scene.quiet_stats();
    let counted = stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == b)
        .map(|e| e["rx_packets"].as_u64().unwrap() as f64)
        .unwrap();
    wait_for(Duration::from_secs(30), || {
        (prometheus.scalar(&series) == Some(counted)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "prometheus never showed {counted} for {series}: {:?}",
            prometheus.query(&series)
        )
    });

    // A burst of 17 frames to b: Prometheus sees exactly 17 more.
    const BURST: usize = 17;
    let b_listens = PacketSocket::listen(&scene.b, "eth0");
    PacketSocket::open(&scene.lan.switch, "peer0").send_many(
        &FrameBuilder::new(scene.b.mac("eth0"), SENDER).build(64),
        BURST,
    );
    let mut got = 0;
    wait_for(Duration::from_secs(5), || {
        got += b_listens.received().len();
        (got >= BURST).then_some(())
    })
    .expect("the burst arrives");
    let want = counted + BURST as f64;
    let mut seen = None;
    wait_for(Duration::from_secs(30), || {
        seen = prometheus.scalar(&series);
        (seen == Some(want)).then_some(())
    })
    .unwrap_or_else(|| panic!("prometheus shows {seen:?} for {series}, not {want}"));
    // Still exactly that a few scrapes later: nothing else was counted.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(prometheus.scalar(&series), Some(want));

    // Every query of the dashboard, evaluated by this server, has data
    // (rates need two scrapes inside their window: wait a few).
    std::thread::sleep(Duration::from_secs(3));
    let queries = dashboard_queries();
    assert!(
        queries.len() >= 15,
        "the dashboard has its panels: {queries:?}"
    );
    let empty: Vec<&String> = queries
        .iter()
        .filter(|q| prometheus.query(q).is_empty())
        .collect();
    assert!(
        empty.is_empty(),
        "dashboard queries without data: {empty:#?}"
    );
    drop(prometheus);
    scene
        .lan
        .netvlan(&["disconnect", NETWORK, scene.a.name()])
        .ok();
    scene.lan.netvlan(&["disconnect", NETWORK, b]).ok();
    scene.lan.netvlan(&["network", "rm", NETWORK]).ok();
}

/// The TCP listeners of `ns` as (local address, port) in /proc/net/tcp's
/// hex form (`0100007F`, `24F9`).
fn listeners(ns: &Netns) -> Vec<(String, String)> {
    let out = ns.exec("cat", &["/proc/net/tcp"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // st 0A = TCP_LISTEN
            (fields.get(3) == Some(&"0A")).then(|| {
                let (addr, port) = fields[1].split_once(':').unwrap();
                (addr.to_string(), port.to_string())
            })
        })
        .collect()
}

#[test]
fn the_metrics_listener_is_loopback_unless_metrics_addr_says_otherwise() {
    require_root();
    let lan = Lan::new(false);
    let daemon = Daemon::start(&lan, &[]);
    // 9465 = 0x24F9; 127.0.0.1 as the kernel prints it.
    assert_eq!(
        listeners(&lan.host),
        vec![("0100007F".to_string(), "24F9".to_string())],
        "by default the daemon listens on 127.0.0.1:9465 only"
    );
    drop(daemon);
    // Asked for every address, in another namespace of the lab.
    let wide = Daemon::start_in(&lan.switch, &lan, &["--metrics-addr", "0.0.0.0:9465"]);
    assert_eq!(
        listeners(&lan.switch),
        vec![("00000000".to_string(), "24F9".to_string())],
        "--metrics-addr 0.0.0.0:9465 is what the daemon binds"
    );
    assert!(wide
        .get("/metrics")
        .contains("netvlan_scrape_duration_seconds"));
}

#[test]
fn a_scrape_that_cannot_read_a_map_counts_an_error_and_serves_the_rest() {
    let scene = Scene::new();
    let daemon = Daemon::start(&scene.lan, &[]);
    let first = parse(&daemon.get("/metrics"));
    assert_eq!(value(&first, "netvlan_scrape_errors_total", &[]), 0.0);
    let map = |m| [("parent", "eth0"), ("map", m)];
    assert!(first.contains_key(&key("netvlan_map_entries", &map("DENY_MACS"))));

    // The wire's DENY_MACS pin taken away for one scrape (the map lives
    // on through the test's fd and is pinned back after): the daemon
    // cannot open it.
    let pin = find_pin(scene.lan.bpf.path(), "DENY_MACS");
    let held = aya::maps::MapData::from_pin(&pin).unwrap();
    std::fs::remove_file(&pin).unwrap();
    let text = daemon.get("/metrics");
    held.pin(&pin).unwrap();

    let samples = parse(&text);
    assert_eq!(value(&samples, "netvlan_scrape_errors_total", &[]), 1.0);
    assert!(!samples.contains_key(&key("netvlan_map_entries", &map("DENY_MACS"))));
    assert!(samples.contains_key(&key("netvlan_map_entries", &map("DST_SLOTS"))));
    let b = [("network", NETWORK), ("endpoint", scene.b.name())];
    assert!(samples.contains_key(&key("netvlan_endpoint_rx_packets_total", &b)));
    assert_eq!(
        value(&samples, "netvlan_endpoints", &[("network", NETWORK)]),
        2.0
    );
    promtool_check(&text);

    // The error total is kept across scrapes; a good scrape adds nothing.
    let again = parse(&daemon.get("/metrics"));
    assert_eq!(value(&again, "netvlan_scrape_errors_total", &[]), 1.0);
    assert!(again.contains_key(&key("netvlan_map_entries", &map("DENY_MACS"))));
    scene
        .lan
        .netvlan(&["disconnect", NETWORK, scene.a.name()])
        .ok();
    scene
        .lan
        .netvlan(&["disconnect", NETWORK, scene.b.name()])
        .ok();
    scene.lan.netvlan(&["network", "rm", NETWORK]).ok();
}

/// The pin directory of `ns`'s one endpoint (`net-<its inode>/egress-<ifindex>`).
fn endpoint_pins(scene: &Scene, ns: &Netns) -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    let ino = std::fs::metadata(ns.path()).unwrap().ino();
    let dir = scene.lan.bpf.path().join(format!("net-{ino}"));
    let mut egress: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("egress-")
        })
        .collect();
    assert_eq!(
        egress.len(),
        1,
        "one endpoint in {}: {egress:?}",
        dir.display()
    );
    egress.remove(0)
}

#[test]
fn an_endpoint_whose_programs_restore_reattached_is_counted_on_its_new_maps() {
    // The daemon keeps endpoint maps open and looks at their pins again
    // only after the store committed: restore's repair must commit.
    let scene = Scene::new();
    let daemon = Daemon::start(&scene.lan, &[]);
    let a = PacketSocket::open(&scene.a, "eth0");
    let mac_a = scene.a.mac("eth0");
    a.send_many(&FrameBuilder::new(SENDER, mac_a).build(100), 10);
    let tx_a = [("network", NETWORK), ("endpoint", scene.a.name())];
    let (text, _) = scene.metrics_and_stats(&daemon);
    let old = value(&parse(&text), "netvlan_endpoint_tx_packets_total", &tx_a);
    assert!(old >= 10.0, "the 10 frames are counted: {old}");
    // Twice: the second scrape reads the maps it keeps open unchecked.
    daemon.get("/metrics");

    // The programs lost (their pins are the links' only holders), then
    // put back by restore with new maps, counting from zero.
    std::fs::remove_dir_all(endpoint_pins(&scene, &scene.a)).unwrap();
    let restored = scene.lan.netvlan(&["restore"]).ok().stdout;
    assert!(
        restored.contains("attach the endpoint programs"),
        "restore repairs the endpoint: {restored}"
    );
    a.send_many(&FrameBuilder::new(SENDER, mac_a).build(100), 3);
    let (text, stats) = scene.metrics_and_stats(&daemon);
    let now = value(&parse(&text), "netvlan_endpoint_tx_packets_total", &tx_a);
    let of_a = stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == scene.a.name())
        .expect("stats --json lists a");
    assert_eq!(now, of_a["tx_packets"].as_f64().unwrap(), "{stats:#}");
    assert!(
        (3.0..old).contains(&now),
        "the new maps count from zero: {now} (before: {old})"
    );
    for ns in [&scene.a, &scene.b] {
        scene.lan.netvlan(&["disconnect", NETWORK, ns.name()]).ok();
    }
    scene.lan.netvlan(&["network", "rm", NETWORK]).ok();
}

/// The one pin called `name` under `dir` (the wire's: endpoints' pin
/// directories hold no such map).
fn find_pin(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry.file_name() == name {
                found.push(path);
            }
        }
    }
    assert_eq!(
        found.len(),
        1,
        "one {name} pin under {}: {found:?}",
        dir.display()
    );
    found.remove(0)
}

/// The state database's bytes and modification time.
fn state_file(scene: &Scene) -> (Vec<u8>, std::time::SystemTime) {
    let path = scene.lan.state.path().join("netvlan.redb");
    let bytes = std::fs::read(&path).expect("the state database exists");
    let mtime = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("the state database has an mtime");
    (bytes, mtime)
}

/// Whether every thread of `pid` is traced.
fn traced(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("status")).is_ok_and(|status| {
            status
                .lines()
                .any(|l| l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0"))
        })
    })
}

#[test]
fn readers_neither_write_nor_fsync_the_state() {
    let scene = Scene::new();
    let daemon = Daemon::start(&scene.lan, &[]);
    // A first scrape: the daemon's one-off set-up is done.
    daemon.get("/metrics");
    let before = state_file(&scene);
    // Past the file system's timestamp granularity.
    std::thread::sleep(Duration::from_millis(50));

    // Every fsync the daemon makes while it serves reads.
    let log = std::env::temp_dir().join(format!("{}-strace", unique_name("nvm")));
    let mut strace = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,sync_file_range",
            "-o",
        ])
        .arg(&log)
        .arg("-p")
        .arg(daemon.pid().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace runs (Debian's strace)");
    wait_for(Duration::from_secs(10), || {
        traced(daemon.pid()).then_some(())
    })
    .expect("strace attaches to the daemon within 10 s");
    for _ in 0..3 {
        let text = daemon.get("/metrics");
        assert!(
            text.contains(&format!("netvlan_endpoints{{network=\"{NETWORK}\"}} 2")),
            "the scrape read the store: {text}"
        );
        let (status, body) = daemon.api("/v1/networks");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(NETWORK), "{body}");
    }
    // SIGINT: strace detaches and writes out its log.
    // SAFETY: kill(2) on the PID of the strace this test started.
    let rc = unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    assert_eq!(rc, 0, "strace can be stopped");
    strace.wait().expect("strace ends");
    let syncs = std::fs::read_to_string(&log).expect("strace wrote its log");
    let _ = std::fs::remove_file(&log);
    assert!(
        !syncs.contains("sync"),
        "the daemon fsynced while it only read:\n{syncs}"
    );

    // The CLI's own reads (no daemon socket given): stats, ls, inspect.
    let stats = scene.stats();
    assert!(
        !stats["interfaces"]
            .as_array()
            .expect("interfaces")
            .is_empty(),
        "{stats}"
    );
    assert_eq!(
        state_file(&scene),
        before,
        "a read wrote the state database"
    );
}
