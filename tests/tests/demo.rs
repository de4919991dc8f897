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
