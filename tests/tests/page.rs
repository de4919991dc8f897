//! The live page: its snapshot is exactly `stats --json`, its event stream
//! pushes new ones, and headless Chromium, on one page load, shows the
//! numbers change from pushed snapshots while traffic flows (two
//! screenshots kept under target/test-artifacts).

use std::{path::PathBuf, time::Duration};

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

/// Headless Chromium in `ns` (as root, so without its sandbox), on a
/// profile of its own, showing `url`, driven over the DevTools protocol on
/// a pipe (`--remote-debugging-pipe`: commands on its fd 3, answers on its
/// fd 4, each message NUL-terminated), so one page load can be read and
/// photographed at several moments.
struct Browser {
    child: std::process::Child,
    commands: std::fs::File,
    answers: std::sync::mpsc::Receiver<Value>,
    session: String,
    next_id: u64,
    _profile: OwnedDir,
}

/// How long Chromium gets to answer one command.
const CDP_TIMEOUT: Duration = Duration::from_secs(30);

impl Browser {
    fn open(ns: &Netns, url: &str) -> Self {
        use std::os::{fd::FromRawFd, unix::process::CommandExt};
        let profile =
            OwnedDir::at(std::env::temp_dir().join(netvlan_tests::unique_name("nvchrome")));
        std::fs::create_dir_all(profile.path()).unwrap();
        let (to_chrome, from_chrome) = (pipe(), pipe());
        let (child_in, child_out) = (to_chrome[0], from_chrome[1]);
        let mut cmd = ns.command("chromium");
        cmd.args([
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
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .env("HOME", profile.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        // SAFETY: only async-signal-safe dup2 between fork and exec; the
        // targets lose close-on-exec, the pipes' own fds keep it.
        unsafe {
            cmd.pre_exec(move || {
                for (fd, target) in [(child_in, 3), (child_out, 4)] {
                    if libc::dup2(fd, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("chromium does not run ({e}): install Debian's chromium (cargo xtask test does)")
        });
        // SAFETY: fresh pipe fds from `pipe`, each owned exactly once here.
        let (commands, mut replies) = unsafe {
            libc::close(child_in);
            libc::close(child_out);
            (
                std::fs::File::from_raw_fd(to_chrome[1]),
                std::fs::File::from_raw_fd(from_chrome[0]),
            )
        };
        let (tx, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let (mut pending, mut chunk) = (Vec::new(), [0u8; 65536]);
            while let Ok(n @ 1..) = replies.read(&mut chunk) {
                pending.extend_from_slice(&chunk[..n]);
                while let Some(end) = pending.iter().position(|&b| b == 0) {
                    let message: Vec<u8> = pending.drain(..=end).collect();
                    let Ok(value) = serde_json::from_slice(&message[..end]) else {
                        continue;
                    };
                    if tx.send(value).is_err() {
                        return;
                    }
                }
            }
        });
        let mut browser = Self {
            child,
            commands,
            answers,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let targets = browser.call("Target.getTargets", serde_json::json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .unwrap_or_else(|| panic!("chromium shows no page: {targets}"));
        let attached = browser.call(
            "Target.attachToTarget",
            serde_json::json!({ "targetId": page["targetId"], "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser
    }

    /// Sends `method` (to the page once attached) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        use std::io::Write;
        self.next_id += 1;
        let mut message =
            serde_json::json!({ "id": self.next_id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = self.session.clone().into();
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).unwrap();
        loop {
            let answer = self
                .answers
                .recv_timeout(CDP_TIMEOUT)
                .unwrap_or_else(|e| panic!("chromium never answered {method}: {e}"));
            if answer["id"] == self.next_id {
                assert!(answer["error"].is_null(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// The value of the JavaScript `expression` in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let out = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        );
        assert!(out["exceptionDetails"].is_null(), "{expression}: {out}");
        out["result"]["value"].clone()
    }

    /// The page's text in the element with `id` ("" while there is none:
    /// the page may still be loading).
    fn text(&mut self, id: &str) -> String {
        let value = self.eval(&format!(
            "document.getElementById('{id}')?.textContent ?? ''"
        ));
        value.as_str().unwrap_or_default().to_string()
    }

    /// Waits (up to 20 s; the page is pushed one snapshot a second) until
    /// `ready` holds for the page.
    fn wait_until(&mut self, what: &str, mut ready: impl FnMut(&mut Self) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !ready(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "the page never showed {what}: frames {}, drops {}, pushes {}",
                self.text("total-frames"),
                self.text("total-drops"),
                self.text("pushes")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the page as it is now, written to `png`.
    fn screenshot(&mut self, png: &std::path::Path) {
        let shot = self.call(
            "Page.captureScreenshot",
            serde_json::json!({ "format": "png" }),
        );
        let bytes = base64_decode(shot["data"].as_str().expect("a screenshot has data"));
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 1000,
            "a real screenshot ({} bytes)",
            bytes.len()
        );
        std::fs::write(png, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        use std::io::Write;
        // Asked to close (it ends its own helper processes), then, if it is
        // still there after 10 s, killed by its PID; reaped either way.
        let close = b"{\"id\":0,\"method\":\"Browser.close\",\"params\":{}}\0";
        let _ = self.commands.write_all(close);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipe, both ends close-on-exec: `[read, write]`.
fn pipe() -> [i32; 2] {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    fds
}

/// Standard base64 (what the DevTools protocol sends screenshots in).
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut out, mut bits, mut held) = (Vec::new(), 0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("{c:#x} is not base64")) as u32;
        bits = bits << 6 | v;
        held += 6;
        if held >= 8 {
            held -= 8;
            out.push((bits >> held) as u8);
            bits &= (1 << held) - 1;
        }
    }
    out
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
    let wire = PacketSocket::open(&lan.switch, "peer0");
    // One page load for the whole test: what it shows later can only have
    // come through the server push.
    let mut page = Browser::open(&lan.host, &format!("http://{}/", daemon.addr));
    page.wait_until("a first push", |p| {
        p.text("pushes").parse::<u64>().is_ok_and(|n| n > 0)
    });
    let loaded_at = page.eval("performance.timeOrigin");
    let mut frames = 0;
    let mut pushes = Vec::new();
    for (shot, (to_endpoint, to_stranger)) in [(30, 5), (45, 11)].into_iter().enumerate() {
        wire.send_many(&FrameBuilder::new(mac, SENDER).build(64), to_endpoint);
        wire.send_many(&FrameBuilder::new(STRANGER, SENDER).build(64), to_stranger);
        frames += (to_endpoint + to_stranger) as u64;
        let stats = stats_at(&lan, frames);
        let eth0 = &stats["interfaces"][0];
        let want = (
            eth0["frames"]["rx_packets"].to_string(),
            eth0["drops"]["unknown_dst"]["rx_packets"].to_string(),
        );
        page.wait_until(&format!("stats --json's {want:?}"), |p| {
            (p.text("total-frames"), p.text("total-drops")) == want
        });
        let png = artifacts().join(format!("page-{}.png", shot + 1));
        page.screenshot(&png);
        assert!(
            page.text("endpoints").contains(c.name()),
            "the endpoint is listed"
        );
        pushes.push(page.text("pushes").parse::<u64>().unwrap());
    }
    assert_eq!(page.text("total-frames"), "91");
    assert_eq!(
        page.eval("performance.timeOrigin"),
        loaded_at,
        "still the first load"
    );
    assert_eq!(
        page.eval("performance.getEntriesByType('navigation').length"),
        1,
        "never reloaded"
    );
    assert_eq!(
        page.eval(
            "JSON.parse(document.getElementById('snapshot').textContent)\
             .stats.interfaces[0].frames.rx_packets"
        ),
        0,
        "the page was loaded before the traffic: its numbers were pushed"
    );
    assert!(
        pushes[1] > pushes[0],
        "pushed between the shots: {pushes:?}"
    );
}
