//! `netvlan demo`: the README's main job builds a working lab and removes
//! all of it.

use netvlan_tests::{netvlan_bin, require_root, unique_name, BpfDir, StateDir};
use serde_json::Value;

fn demo(prefix: &str, state: &StateDir, bpf: &BpfDir, args: &[&str]) -> std::process::Output {
    std::process::Command::new(netvlan_bin())
        .args(["demo"])
        .args(args)
        .args(["--prefix", prefix])
        .env("NETVLAN_STATE_DIR", state.path())
        .env("NETVLAN_BPF_DIR", bpf.path())
        .output()
        .expect("netvlan runs")
}

fn demo_namespaces(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn demo_up_builds_a_counting_lab_and_down_removes_all_of_it() {
    require_root();
    let prefix = unique_name("demo");
    let state = StateDir::new();
    let bpf = BpfDir::new();
    let up = demo(&prefix, &state, &bpf, &["up", "--json"]);
    let report: Value = serde_json::from_slice(&up.stdout).unwrap_or_else(|e| {
        panic!(
            "demo up printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&up.stdout),
            String::from_utf8_lossy(&up.stderr)
        )
    });
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );

    let endpoints = report["endpoints"].as_array().unwrap();
    let on_lan: Vec<&Value> = endpoints.iter().filter(|e| e["network"] == "lan").collect();
    assert_eq!(on_lan.len(), 2, "{report:#}");
    for e in &on_lan {
        assert!(
            e["rx_packets"].as_u64().unwrap() > 0,
            "no traffic counted for {e}"
        );
    }
    let has_vlan =
        std::path::Path::new("/proc/net/vlan").exists() || report["vlan_network"] == true;
    if report["vlan_network"] == true {
        let v10 = endpoints
            .iter()
            .find(|e| e["network"] == "vlan10")
            .expect("a VLAN 10 container");
        assert!(
            v10["rx_packets"].as_u64().unwrap() > 0,
            "no traffic counted on VLAN 10: {report:#}"
        );
        assert!(
            report["vlans"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["vlan"] == 10),
            "{report:#}"
        );
    } else {
        assert!(
            !has_vlan,
            "the kernel has 802.1Q but the demo left the VLAN network out"
        );
    }

    let again = demo(&prefix, &state, &bpf, &["up"]);
    assert!(!again.status.success(), "a second demo up must refuse");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already up"));
    let status = demo(&prefix, &state, &bpf, &["status", "--json"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let down = demo(&prefix, &state, &bpf, &["down"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(
        demo_namespaces(&prefix),
        Vec::<String>::new(),
        "demo namespaces left"
    );
    assert_eq!(bpf.contents(), Vec::<String>::new(), "demo pins left");
}

/// Takes a demo down on drop, so a failing test leaves nothing up.
struct DownOnDrop<'a>(&'a str, &'a StateDir, &'a BpfDir);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        if !demo_namespaces(self.0).is_empty() {
            demo(self.0, self.1, self.2, &["down"]);
        }
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The program id of netvlan's wire on the demo's uplink, at whichever
/// hook it runs (`datapath status`, checked against the kernel).
fn wire_on_uplink(prefix: &str, state: &StateDir, bpf: &BpfDir) -> Option<u64> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{prefix}-host"))
        .arg(netvlan_bin())
        .args(["datapath", "status", "--json"])
        // The demo keeps its state and pins under `demo/PREFIX`.
        .env("NETVLAN_STATE_DIR", state.path().join("demo").join(prefix))
        .env("NETVLAN_BPF_DIR", bpf.path().join("demo").join(prefix))
        .output()
        .expect("nsenter runs");
    let status: Value = serde_json::from_slice(&out.stdout).ok()?;
    status["attachments"]
        .as_array()?
        .iter()
        .find(|a| a["ifname"] == "uplink" && a["state"] == "attached")?["prog_id"]
        .as_u64()
}

#[test]
fn demos_with_different_prefixes_live_side_by_side_and_each_down_removes_only_its_own() {
    require_root();
    let (a, b) = (unique_name("demoa"), unique_name("demob"));
    let state = StateDir::new();
    let bpf = BpfDir::new();
    let _guards = (DownOnDrop(&a, &state, &bpf), DownOnDrop(&b, &state, &bpf));
    let up_a = demo(&a, &state, &bpf, &["up", "--json"]);
    assert!(up_a.status.success(), "{}", stderr(&up_a));
    let a_prog = wire_on_uplink(&a, &state, &bpf).expect("demo A's datapath is on its uplink");
    let up_b = demo(&b, &state, &bpf, &["up", "--json"]);
    assert!(
        up_b.status.success(),
        "demo B clashed with A: {}",
        stderr(&up_b)
    );

    let down_b = demo(&b, &state, &bpf, &["down"]);
    assert!(down_b.status.success(), "{}", stderr(&down_b));
    assert_eq!(demo_namespaces(&b), Vec::<String>::new());
    // Demo A is whole: namespaces, XDP program, state and counters.
    assert!(!demo_namespaces(&a).is_empty());
    assert_eq!(
        wire_on_uplink(&a, &state, &bpf),
        Some(a_prog),
        "B's down touched A's datapath"
    );
    let status = demo(&a, &state, &bpf, &["status", "--json"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let report: Value = serde_json::from_slice(&status.stdout).unwrap();
    let on_lan = report["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["network"] == "lan" && e["rx_packets"].as_u64() > Some(0))
        .count();
    assert_eq!(on_lan, 2, "A's state or counters are gone: {report:#}");

    // Nothing up under B any more: says so and fails.
    let again = demo(&b, &state, &bpf, &["down"]);
    assert!(!again.status.success(), "a second down must fail");
    assert!(stderr(&again).contains("is up"), "{}", stderr(&again));
    assert!(stderr(&again).contains(&b), "{}", stderr(&again));

    let down_a = demo(&a, &state, &bpf, &["down"]);
    assert!(down_a.status.success(), "{}", stderr(&down_a));
    assert_eq!(demo_namespaces(&a), Vec::<String>::new());
    // The directories the demos made are gone (they made the base ones too).
    assert!(!state.path().exists(), "{} left", state.path().display());
    assert!(!bpf.path().exists(), "{} left", bpf.path().display());
}

#[test]
fn the_demos_try_next_lines_run_as_printed() {
    require_root();
    let prefix = unique_name("demon");
    let state = StateDir::new();
    let bpf = BpfDir::new();
    // `netvlan` on PATH, as `cargo xtask install` leaves it.
    let bin_dir = StateDir::new();
    std::fs::create_dir_all(bin_dir.path()).unwrap();
    std::os::unix::fs::symlink(netvlan_bin(), bin_dir.path().join("netvlan")).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let _guard = DownOnDrop(&prefix, &state, &bpf);
    let up = demo(&prefix, &state, &bpf, &["up", "--json"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let report: Value = serde_json::from_slice(&up.stdout).unwrap();
    let next: Vec<&str> = report["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(next.len() >= 3, "{report:#}");
    for line in &next {
        let out = std::process::Command::new("sh")
            .args(["-c", line])
            .env("PATH", &path)
            .env_remove("NETVLAN_STATE_DIR")
            .env_remove("NETVLAN_BPF_DIR")
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "`{line}` failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
    assert!(
        next.last().unwrap().contains("demo down"),
        "the last line removes the demo"
    );
    assert_eq!(demo_namespaces(&prefix), Vec::<String>::new());
}
