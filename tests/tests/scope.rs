//! Where a command's state and pins belong: each network namespace sees
//! and touches only its own networks, even with one state directory for
//! all of them, and a command that would lose its pins is refused.

use std::time::Duration;

use netvlan_tests::{
    netvlan_bin, netvlan_with_state, sh, spawn_netvlan, veth_pair, wait_for, BpfDir, Lan, Netns,
    Run, StateDir,
};

/// `netvlan ARGS` in `ns`, with the one shared state and pin directory.
fn nv(ns: &Netns, bpf: &BpfDir, state: &StateDir, args: &[&str]) -> Run {
    netvlan_with_state(ns, bpf, state, args)
}

/// `network create` of the network "lan" on `eth0` these tests use.
const CREATE_LAN: &[&str] = &[
    "network",
    "create",
    "--subnet",
    "172.16.86.0/24",
    "-o",
    "parent=eth0",
    // The checks read the XDP program on eth0.
    "-o",
    "hook=xdp",
    "lan",
];

fn create_lan(ns: &Netns, bpf: &BpfDir, state: &StateDir) -> String {
    nv(ns, bpf, state, CREATE_LAN)
        .ok()
        .stdout
        .trim()
        .to_string()
}

/// The ids of the networks `network ls --json` shows in `ns`.
fn listed_ids(ns: &Netns, bpf: &BpfDir, state: &StateDir) -> Vec<String> {
    let list = nv(ns, bpf, state, &["network", "ls", "--json"]).ok().json();
    list.as_array()
        .unwrap()
        .iter()
        .map(|n| n["Id"].as_str().unwrap().to_string())
        .collect()
}

fn containers(ns: &Netns, bpf: &BpfDir, state: &StateDir) -> Vec<String> {
    let inspect = nv(ns, bpf, state, &["network", "inspect", "lan"])
        .ok()
        .json();
    let containers = inspect[0]["Containers"].as_object().unwrap();
    let mut names: Vec<String> = containers
        .values()
        .map(|c| c["Name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn xdp_prog(ns: &Netns) -> Option<u64> {
    ns.link_json("eth0")["xdp"]["prog"]["id"].as_u64()
}

#[test]
fn two_namespaces_sharing_one_state_dir_each_see_only_their_own_networks() {
    let a = Lan::new(false);
    let b = Lan::new(false);
    // One state and pin directory for both namespaces.
    let (bpf, state) = (&a.bpf, &a.state);

    // A network named `lan` in each: no name clash across namespaces.
    let a_id = create_lan(&a.host, bpf, state);
    let b_id = create_lan(&b.host, bpf, state);
    assert_ne!(a_id, b_id);
    assert_eq!(listed_ids(&a.host, bpf, state), std::slice::from_ref(&a_id));
    assert_eq!(listed_ids(&b.host, bpf, state), std::slice::from_ref(&b_id));

    // Connect a container to each; each inspect shows only its own.
    let ca = a.container(false);
    let cb = b.container(false);
    nv(&a.host, bpf, state, &["connect", "lan", ca.name()]).ok();
    nv(&b.host, bpf, state, &["connect", "lan", cb.name()]).ok();
    assert_eq!(containers(&a.host, bpf, state), [ca.name().to_string()]);
    assert_eq!(containers(&b.host, bpf, state), [cb.name().to_string()]);
    // Both got the first address: the address plans are separate too.
    assert_eq!(ca.link_json("eth0")["address"], "02:42:ac:10:56:02");
    assert_eq!(cb.link_json("eth0")["address"], "02:42:ac:10:56:02");

    // Restore in B acts in B only: nothing new appears in A.
    let a_links = a.host.sorted_link_names();
    let a_prog = xdp_prog(&a.host);
    let restored = nv(&b.host, bpf, state, &["restore", "--json"]).ok().json();
    assert_eq!(restored["actions"], serde_json::json!([]), "{restored:#}");
    assert_eq!(a.host.sorted_link_names(), a_links);
    assert_eq!(xdp_prog(&a.host), a_prog);

    // A "reboot" of B: its links are gone and its namespace is recreated
    // under the same name, with a new inode (the old namespace is held
    // open meanwhile, or the kernel may hand its inode out again).
    b.host.exec("ip", &["link", "del", "eth0"]);
    assert!(!cb.sorted_link_names().contains(&"eth0".to_string()));
    let old = std::fs::File::open(b.host.path()).unwrap();
    sh("ip", &["netns", "del", b.host.name()]);
    sh("ip", &["netns", "add", b.host.name()]);
    b.host.exec("ip", &["link", "set", "lo", "up"]);
    veth_pair(&b.host, "eth0", &b.switch, "peer0");
    let inode = |f: &std::fs::File| {
        use std::os::unix::fs::MetadataExt;
        f.metadata().unwrap().ino()
    };
    let new = std::fs::File::open(b.host.path()).unwrap();
    assert_ne!(inode(&old), inode(&new), "B has a new identity");
    let restored = nv(&b.host, bpf, state, &["restore", "--json"]).ok().json();
    let actions: Vec<&str> = restored["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&format!("recreate eth0 in {}", cb.name()).as_str()),
        "B's restore found its network by the namespace's name: {restored:#}"
    );
    assert!(xdp_prog(&b.host).is_some(), "B's datapath is back");
    assert_eq!(
        a.host.sorted_link_names(),
        a_links,
        "B's restore left A alone"
    );
    assert_eq!(xdp_prog(&a.host), a_prog);
    let again = nv(&a.host, bpf, state, &["restore", "--json"]).ok().json();
    assert_eq!(again["actions"], serde_json::json!([]), "{again:#}");
    drop((old, new));

    // A connect in B killed half-way: a command in A must not replay B's
    // intents, B's next command does.
    let cb2 = b.container(false);
    let mut child = spawn_netvlan(
        &b.host,
        bpf,
        state,
        &[("FAILPOINTS", "connect-after-link=sleep(20000)")],
        &["connect", "lan", cb2.name()],
    );
    let reached = wait_for(Duration::from_secs(10), || {
        (cb2.sorted_link_names().len() > 1).then_some(())
    });
    child.kill().expect("SIGKILL our own child");
    child.wait().expect("reap it");
    assert!(reached.is_some(), "the connect never made its link");
    let half_made = cb2.sorted_link_names();
    let in_a = nv(&a.host, bpf, state, &["network", "ls"]).ok();
    assert!(
        !in_a.stderr.contains("note:"),
        "A recovered B's command: {}",
        in_a.stderr
    );
    assert_eq!(
        cb2.sorted_link_names(),
        half_made,
        "A's command touched B's sandbox"
    );
    let in_b = nv(&b.host, bpf, state, &["network", "ls"]).ok();
    assert!(in_b.stderr.contains("interrupted"), "{}", in_b.stderr);
    assert_eq!(
        cb2.sorted_link_names(),
        ["lo"],
        "B's own command cleaned up"
    );

    // Removing B's network leaves A's in place, and the other way round.
    nv(&b.host, bpf, state, &["disconnect", "lan", cb.name()]).ok();
    nv(&b.host, bpf, state, &["network", "rm", "lan"]).ok();
    assert_eq!(listed_ids(&b.host, bpf, state), Vec::<String>::new());
    assert_eq!(listed_ids(&a.host, bpf, state), [a_id]);
    assert_eq!(containers(&a.host, bpf, state), [ca.name().to_string()]);
    assert!(ca.link_json("eth0")["address"].is_string());
    nv(&a.host, bpf, state, &["disconnect", "lan", ca.name()]).ok();
    nv(&a.host, bpf, state, &["network", "rm", "lan"]).ok();
    assert_eq!(listed_ids(&a.host, bpf, state), Vec::<String>::new());
}

/// `netvlan ARGS` run the way that loses pins: `ip netns exec`.
fn under_ip_netns_exec(lab: &Lan, args: &[&str]) -> Run {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", lab.host.name()])
        .arg(netvlan_bin())
        .args(args)
        .env("NETVLAN_BPF_DIR", lab.bpf.path())
        .env("NETVLAN_STATE_DIR", lab.state.path())
        .output()
        .expect("ip netns exec runs");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn ip_netns_exec_is_refused_before_anything_changes() {
    let lab = Lan::new(false);
    let links_before = lab.host_links();
    let refusals = [
        vec!["datapath", "attach", "eth0"],
        CREATE_LAN.to_vec(),
        vec!["network", "create", "--subnet", "10.99.0.0/24", "island"],
        vec!["restore"],
    ];
    for args in &refusals {
        let run = under_ip_netns_exec(&lab, args).failed();
        assert!(
            run.stderr.contains("nsenter --net=/var/run/netns/"),
            "`{}` does not say how to run it: {}",
            args.join(" "),
            run.stderr
        );
    }
    assert_eq!(lab.host_links(), links_before, "a link was made");
    assert!(xdp_prog(&lab.host).is_none(), "XDP was attached");
    assert_eq!(lab.bpf.contents(), Vec::<String>::new(), "pins were made");
    // Reading the state touches no pins and still works that way.
    let listed = under_ip_netns_exec(&lab, &["network", "ls", "--json"]).ok();
    assert_eq!(listed.json(), serde_json::json!([]), "a network was stored");

    // The same commands through nsenter work.
    lab.netvlan(CREATE_LAN).ok();
    assert!(xdp_prog(&lab.host).is_some());
    let inspect = under_ip_netns_exec(&lab, &["network", "inspect", "lan"]).ok();
    assert_eq!(inspect.json()[0]["Name"], "lan");
    let rm = under_ip_netns_exec(&lab, &["network", "rm", "lan"]).failed();
    assert!(rm.stderr.contains("nsenter --net="), "{}", rm.stderr);
    lab.netvlan(&["network", "rm", "lan"]).ok();
}
