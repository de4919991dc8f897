//! Bad input gets a message that names the input and what is wrong: no raw
//! kernel error, no temporary link name (`nvprobe…`, `nvt…`), no Rust
//! `Some(...)`; and it leaves no link, pin or state behind.

use netvlan_tests::{netvlan_bin, Lan};
use serde_json::Value;

/// What bad input must not change: the host's links, the pin tree, the
/// stored networks.
#[derive(Debug, PartialEq)]
struct Snapshot {
    links: Vec<String>,
    pins: Vec<String>,
    networks: Value,
}

fn snapshot(lab: &Lan) -> Snapshot {
    Snapshot {
        links: lab.host_links(),
        pins: lab.bpf.contents(),
        networks: lab.netvlan(&["network", "ls", "--json"]).ok().json(),
    }
}

/// The message says `wanted`, and nothing internal.
fn assert_message(stderr: &str, wanted: &[&str]) {
    for w in wanted {
        assert!(stderr.contains(w), "expected {w:?} in:\n{stderr}");
    }
    for internal in ["nvprobe", "Some(", "None"] {
        assert!(
            !stderr.contains(internal),
            "internal detail {internal:?} in:\n{stderr}"
        );
    }
    assert!(
        !has_temporary_link_name(stderr),
        "a temporary link name (nvt + 10 hex digits) in:\n{stderr}"
    );
}

/// netvlan's temporary endpoint names are `nvt` and 10 hex digits (the
/// test harness's own names are `nvt-...`).
fn has_temporary_link_name(text: &str) -> bool {
    text.match_indices("nvt").any(|(at, _)| {
        let rest = &text.as_bytes()[at + 3..];
        rest.len() >= 10 && rest[..10].iter().all(u8::is_ascii_hexdigit)
    })
}

#[test]
fn the_loopback_interface_is_refused_as_a_parent() {
    let lab = Lan::new(false);
    let before = snapshot(&lab);
    let run = lab
        .create_network("n", "10.80.0.0/24", &["parent=lo"])
        .failed();
    assert_message(
        &run.stderr,
        &[
            "parent interface 'lo' is a loopback interface, not Ethernet",
            "need an Ethernet parent",
        ],
    );
    assert_eq!(snapshot(&lab), before, "a refused create left something");
    assert!(
        lab.host.link_json("lo")["xdp"].is_null(),
        "no XDP program on lo"
    );
}

#[test]
fn an_mtu_above_the_parents_is_refused_at_create() {
    let lab = Lan::new(false);
    let before = snapshot(&lab);
    let run = lab
        .create_network("jumbo", "10.81.0.0/24", &["parent=eth0", "mtu=9000"])
        .failed();
    assert_message(
        &run.stderr,
        &[
            "mtu=9000 is larger than the MTU of parent interface 'eth0' (1500)",
            "use mtu=1500 or less",
        ],
    );
    assert_eq!(snapshot(&lab), before, "a refused create left something");
    // Up to the parent's MTU is fine, and connects work.
    lab.create_network("fits", "10.81.0.0/24", &["parent=eth0", "mtu=1500"])
        .ok();
    let c = lab.container(false);
    lab.netvlan(&["connect", "fits", c.name()]).ok();
    assert_eq!(c.link_json("eth0")["mtu"], 1500);
    lab.netvlan(&["disconnect", "fits", c.name()]).ok();
    lab.netvlan(&["network", "rm", "fits"]).ok();
}

#[test]
fn a_connect_the_kernel_refuses_names_the_network_not_a_temporary_link() {
    let lab = Lan::new(false);
    lab.create_network("n", "10.82.0.0/24", &["parent=eth0", "mtu=1500"])
        .ok();
    // The parent shrinks behind netvlan's back: the kernel now refuses
    // endpoints of the network's MTU.
    lab.host.exec("ip", &["link", "set", "eth0", "mtu", "1400"]);
    let c = lab.container(false);
    let before = snapshot(&lab);
    let run = lab.netvlan(&["connect", "n", c.name()]).failed();
    assert_message(
        &run.stderr,
        &["create the macvlan endpoint link of network 'n' on 'eth0'"],
    );
    assert_eq!(snapshot(&lab), before, "a refused connect left something");
    let links = String::from_utf8_lossy(&c.exec("ip", &["-o", "link", "show"]).stdout).into_owned();
    assert_eq!(
        links.lines().count(),
        1,
        "only lo in the container: {links}"
    );
    lab.netvlan(&["network", "rm", "n"]).ok();
}

#[test]
fn the_all_zero_mac_is_refused() {
    let lab = Lan::new(false);
    lab.create_network("n", "10.83.0.0/24", &["parent=eth0"])
        .ok();
    let c = lab.container(false);
    let before = snapshot(&lab);
    let run = lab
        .netvlan(&["connect", "--mac", "00:00:00:00:00:00", "n", c.name()])
        .failed();
    assert_message(
        &run.stderr,
        &["--mac 00:00:00:00:00:00 is the all-zero address"],
    );
    assert_eq!(snapshot(&lab), before, "a refused connect left something");
    assert!(lab.inspect("n")["Containers"]
        .as_object()
        .is_none_or(|c| c.is_empty()));
    lab.netvlan(&["network", "rm", "n"]).ok();
}

#[test]
fn a_uts_namespace_is_not_a_sandbox() {
    let lab = Lan::new(false);
    lab.create_network("n", "10.84.0.0/24", &["parent=eth0"])
        .ok();
    let before = snapshot(&lab);
    let ours = format!("/proc/{}/ns/uts", std::process::id());
    for uts in ["/proc/self/ns/uts", ours.as_str()] {
        let run = lab.netvlan(&["connect", "n", uts]).failed();
        assert_message(
            &run.stderr,
            &[
                &format!("sandbox '{uts}': {uts} is a uts namespace, not a network namespace"),
                "/proc/PID/ns/net",
            ],
        );
    }
    assert_eq!(snapshot(&lab), before, "a refused connect left something");
    lab.netvlan(&["network", "rm", "n"]).ok();
}

#[test]
fn a_read_only_state_directory_is_named() {
    let lab = Lan::new(false);
    std::fs::create_dir_all(lab.state.path()).unwrap();
    let state = lab.state.path().display().to_string();
    // A read-only bind mount in a private mount namespace of this command
    // only: root ignores file modes, a read-only mount it cannot.
    let script = format!(
        "mount --bind -o ro {state} {state} && exec nsenter --net={net} -- {bin} network create --subnet 10.85.0.0/24 -o parent=eth0 n",
        net = lab.host.path().display(),
        bin = netvlan_bin().display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("NETVLAN_STATE_DIR", lab.state.path())
        .env("NETVLAN_BPF_DIR", lab.bpf.path())
        .output()
        .expect("unshare runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "create on a read-only state dir");
    assert_message(
        &stderr,
        &[
            &format!("cannot write to the state directory {state}"),
            "make it writable",
            "Read-only file system",
        ],
    );
    assert!(
        !stderr.contains("is another netvlan stuck"),
        "a read-only directory is not a stuck netvlan: {stderr}"
    );
    assert_eq!(
        std::fs::read_dir(lab.state.path()).unwrap().count(),
        0,
        "nothing written to the state dir"
    );
    assert!(lab.bpf.contents().is_empty(), "nothing pinned");
    assert!(
        lab.host.link_json("eth0")["xdp"].is_null(),
        "nothing attached"
    );
}

#[test]
fn running_without_root_says_which_privileges_are_needed() {
    let lab = Lan::new(false);
    for args in [
        &["network", "ls"][..],
        &[
            "network",
            "create",
            "--subnet",
            "10.86.0.0/24",
            "-o",
            "parent=eth0",
            "n",
        ],
    ] {
        let out = lab
            .host
            .command("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(netvlan_bin())
            .args(args)
            .env("NETVLAN_STATE_DIR", lab.state.path())
            .env("NETVLAN_BPF_DIR", lab.bpf.path())
            .output()
            .expect("setpriv runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} as uid 65534");
        assert_message(
            &stderr,
            &[
                "netvlan needs root privileges",
                "CAP_NET_ADMIN and CAP_SYS_ADMIN",
                "uid 65534",
                "Run it as root",
            ],
        );
        assert!(!stderr.contains("stuck"), "{stderr}");
    }
    assert!(!lab.state.path().exists(), "no state dir made");
    assert!(lab.bpf.contents().is_empty(), "nothing pinned");
}
