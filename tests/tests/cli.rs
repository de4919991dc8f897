//! The command line as a Docker user meets it: `inspect`'s shape, the
//! `network` subcommands and flags Docker has, `--json` everywhere, prune's
//! confirmation, pool checks at create, a closed stdout, and output that
//! reads well in a pipe and at 64-character names.

use std::{
    io::Write,
    os::fd::{FromRawFd, OwnedFd},
    process::{Command, Stdio},
};

use netvlan_tests::{container_entry, netvlan_bin, unique_name, veth_pair, Lan, Run};
use serde_json::Value;

/// `netvlan` in the lab's host namespace with its private pins and state,
/// not yet run (to choose its stdin and stdout).
fn command(lan: &Lan, args: &[&str]) -> Command {
    let mut cmd = lan.host.command(netvlan_bin());
    cmd.args(args)
        .env("NETVLAN_BPF_DIR", lan.bpf.path())
        .env("NETVLAN_STATE_DIR", lan.state.path());
    cmd
}

fn create(lan: &Lan, args: &[&str]) -> Run {
    let mut full = vec!["network", "create"];
    full.extend_from_slice(args);
    lan.netvlan(&full)
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("expected a JSON list: {list:#}"))
        .iter()
        .map(|n| n["Name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object
        .as_object()
        .unwrap_or_else(|| panic!("expected a JSON object: {object:#}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    keys
}

// Point 5: Docker's inspect shape.

#[test]
fn inspect_has_dockers_shape_and_netvlans_own_fields_under_one_key() {
    let lan = Lan::new(false);
    create(
        &lan,
        &[
            "--subnet",
            "10.71.0.0/24",
            "--label",
            "team=web",
            "--label",
            "tier",
            "-o",
            "parent=eth0",
            "web",
        ],
    )
    .ok();
    let c = lan.container(false);
    let connected = lan
        .netvlan(&["network", "connect", "--json", "web", c.name()])
        .ok()
        .json();
    let endpoint_id = connected["endpoint"]["id"].as_str().unwrap().to_string();

    let net = lan.inspect("web");
    assert_eq!(
        keys(&net),
        [
            "Attachable",
            "ConfigFrom",
            "ConfigOnly",
            "Containers",
            "Created",
            "Driver",
            "EnableIPv4",
            "EnableIPv6",
            "IPAM",
            "Id",
            "Ingress",
            "Internal",
            "Labels",
            "Name",
            "Netvlan",
            "Options",
            "Scope",
        ],
        "{net:#}"
    );
    assert_eq!(net["Name"], "web");
    assert_eq!(net["Id"].as_str().unwrap().len(), 64);
    assert_eq!(
        (net["Scope"].clone(), net["Driver"].clone()),
        ("local".into(), "macvlan".into())
    );
    assert_eq!(
        (net["EnableIPv4"].clone(), net["EnableIPv6"].clone()),
        (true.into(), false.into())
    );
    assert_eq!(
        (
            net["Internal"].clone(),
            net["Attachable"].clone(),
            net["Ingress"].clone(),
            net["ConfigOnly"].clone()
        ),
        (false.into(), false.into(), false.into(), false.into())
    );
    assert_eq!(net["ConfigFrom"], serde_json::json!({ "Network": "" }));
    assert_eq!(keys(&net["IPAM"]), ["Config", "Driver", "Options"]);
    assert_eq!(net["IPAM"]["Config"][0]["Subnet"], "10.71.0.0/24");
    assert_eq!(net["Options"], serde_json::json!({ "parent": "eth0" }));
    assert_eq!(
        net["Labels"],
        serde_json::json!({ "team": "web", "tier": "" })
    );

    // Created: RFC 3339 in UTC, as Docker prints it (2026-12-01T06:34:50.123Z).
    let created = net["Created"].as_str().unwrap();
    let b = created.as_bytes();
    assert!(
        created.len() >= 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && created.ends_with('Z')
            && !created.starts_with("0001"),
        "Created is not a creation time: {created}"
    );

    // Containers keyed by endpoint id, with exactly Docker's fields.
    let containers = net["Containers"].as_object().unwrap();
    assert_eq!(keys(&net["Containers"]), [endpoint_id.as_str()]);
    let entry = &containers[&endpoint_id];
    assert_eq!(
        keys(entry),
        [
            "EndpointID",
            "IPv4Address",
            "IPv6Address",
            "MacAddress",
            "Name"
        ]
    );
    assert_eq!(entry["Name"], c.name());
    assert_eq!(entry["EndpointID"], endpoint_id.as_str());
    assert_eq!(entry["IPv4Address"], "10.71.0.2/24");
    assert_eq!(entry["MacAddress"], "02:42:0a:47:00:02");
    assert_eq!(container_entry(&net, c.name()), *entry);

    // netvlan's own: the parent, the datapath, the link name in the sandbox.
    let own = &net["Netvlan"];
    assert_eq!(own["Parent"], "eth0");
    assert_eq!(own["ParentKind"], "existing");
    assert_eq!(own["Endpoints"][&endpoint_id]["InterfaceName"], "eth0");
    assert_eq!(own["Endpoints"][&endpoint_id]["Sandbox"], c.name());
    assert_eq!(own["Policy"]["UnknownDst"], "pass");
}

#[test]
fn inspect_prints_the_networks_that_exist_and_fails_naming_the_others() {
    let lan = Lan::new(false);
    create(
        &lan,
        &["--subnet", "10.72.0.0/24", "-o", "parent=eth0", "a"],
    )
    .ok();
    let run = lan.netvlan(&["network", "inspect", "a", "nosuch"]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert_eq!(names(&run.json()), ["a"]);
    assert!(run.stderr.contains("'nosuch'"), "{}", run.stderr);
    assert!(!run.stderr.contains("'a'"), "{}", run.stderr);
    // --json is accepted: inspect is JSON anyway.
    let json = lan.netvlan(&["network", "inspect", "--json", "a"]).ok();
    assert_eq!(names(&json.json()), ["a"]);
}

// Point 6: Docker's CLI habits.

#[test]
fn network_connect_and_disconnect_with_top_level_aliases() {
    let lan = Lan::new(false);
    create(
        &lan,
        &["--subnet", "10.73.0.0/24", "-o", "parent=eth0", "lan"],
    )
    .ok();
    let c = lan.container(false);
    let connected = lan
        .netvlan(&[
            "network",
            "connect",
            "--json",
            "--ip",
            "10.73.0.9",
            "lan",
            c.name(),
        ])
        .ok()
        .json();
    assert_eq!(connected["endpoint"]["ipv4"], "10.73.0.9/24");
    assert_eq!(
        lan.inspect_container("lan", c.name())["IPv4Address"],
        "10.73.0.9/24"
    );
    let gone = lan
        .netvlan(&["network", "disconnect", "--json", "lan", c.name()])
        .ok()
        .json();
    assert_eq!(gone["endpoint"]["ipv4"], "10.73.0.9/24");
    assert_eq!(lan.inspect("lan")["Containers"], serde_json::json!({}));

    // The short forms stay.
    lan.netvlan(&["connect", "lan", c.name()]).ok();
    assert_eq!(
        lan.inspect_container("lan", c.name())["IPv4Address"],
        "10.73.0.2/24"
    );
    lan.netvlan(&["disconnect", "lan", c.name()]).ok();
    assert_eq!(lan.inspect("lan")["Containers"], serde_json::json!({}));
}

#[test]
fn rm_prune_and_inspect_answer_in_json() {
    let lan = Lan::new(false);
    for (name, subnet) in [
        ("one", "10.74.1.0/24"),
        ("two", "10.74.2.0/24"),
        ("three", "10.74.3.0/24"),
    ] {
        create(&lan, &["--subnet", subnet, "-o", "parent=eth0", name]).ok();
    }
    let inspect = lan
        .netvlan(&["network", "inspect", "--json", "one"])
        .ok()
        .json();
    assert_eq!(names(&inspect), ["one"]);

    let rm = lan.netvlan(&["network", "rm", "--json", "one"]).ok().json();
    assert_eq!(rm, serde_json::json!({ "removed": ["one"], "errors": [] }));

    // A failed removal is in the JSON too, and fails the command.
    let partial = lan
        .netvlan(&["network", "rm", "--json", "two", "nosuch"])
        .failed();
    let report = partial.json();
    assert_eq!(report["removed"], serde_json::json!(["two"]));
    assert_eq!(report["errors"][0]["network"], "nosuch");
    assert!(partial.stderr.contains("'nosuch'"), "{}", partial.stderr);

    let prune = lan
        .netvlan(&["network", "prune", "-f", "--json"])
        .ok()
        .json();
    assert_eq!(
        prune,
        serde_json::json!({ "removed": ["three"], "errors": [] })
    );
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        serde_json::json!([])
    );
}

#[test]
fn ls_quiet_and_filters_by_driver_name_and_label() {
    let lan = Lan::new(false);
    create(
        &lan,
        &[
            "--subnet",
            "10.75.1.0/24",
            "--label",
            "team=web",
            "-o",
            "parent=eth0",
            "web-front",
        ],
    )
    .ok();
    create(
        &lan,
        &[
            "--subnet",
            "10.75.2.0/24",
            "--label",
            "team=db",
            "-o",
            "parent=eth0",
            "db-main",
        ],
    )
    .ok();
    create(&lan, &["--subnet", "10.75.3.0/24", "--internal", "scratch"]).ok();
    let ls = |args: &[&str]| {
        let mut full = vec!["network", "ls", "--json"];
        full.extend_from_slice(args);
        names(&lan.netvlan(&full).ok().json())
    };
    assert_eq!(ls(&[]), ["db-main", "scratch", "web-front"]);
    assert_eq!(
        ls(&["--filter", "driver=macvlan"]),
        ["db-main", "scratch", "web-front"]
    );
    assert!(ls(&["--filter", "driver=ipvlan"]).is_empty());
    assert_eq!(ls(&["--filter", "name=front"]), ["web-front"]);
    assert_eq!(
        ls(&["-f", "name=front", "-f", "name=main"]),
        ["db-main", "web-front"]
    );
    assert_eq!(ls(&["--filter", "label=team"]), ["db-main", "web-front"]);
    assert_eq!(ls(&["--filter", "label=team=db"]), ["db-main"]);
    assert!(ls(&["--filter", "label=team=db", "--filter", "name=web"]).is_empty());

    // -q: one short id per line, the same ids inspect shows.
    let quiet = lan
        .netvlan(&["network", "ls", "-q", "--filter", "label=team"])
        .ok();
    let mut ids: Vec<&str> = quiet.stdout.lines().collect();
    ids.sort();
    let mut expected: Vec<String> = ["web-front", "db-main"]
        .iter()
        .map(|n| lan.inspect(n)["Id"].as_str().unwrap()[..12].to_string())
        .collect();
    expected.sort();
    assert_eq!(ids, expected);

    let bad = lan
        .netvlan(&["network", "ls", "--filter", "colour=red"])
        .failed();
    assert!(bad.stderr.contains("colour=red"), "{}", bad.stderr);
}

#[test]
fn label_flags_are_checked_at_create() {
    let lan = Lan::new(false);
    let twice = create(
        &lan,
        &[
            "--subnet",
            "10.76.0.0/24",
            "--label",
            "a=1",
            "--label",
            "a=2",
            "-o",
            "parent=eth0",
            "n",
        ],
    )
    .failed();
    assert!(
        twice.stderr.contains("--label a is given more than once"),
        "{}",
        twice.stderr
    );
    let empty = create(
        &lan,
        &[
            "--subnet",
            "10.76.0.0/24",
            "--label",
            "=x",
            "-o",
            "parent=eth0",
            "n",
        ],
    )
    .failed();
    assert!(
        empty.stderr.contains("invalid --label '=x'"),
        "{}",
        empty.stderr
    );
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        serde_json::json!([])
    );
}

/// A pseudo-terminal: the master end (to type into) and the slave end
/// (the child's stdin, a terminal).
fn pty() -> (std::fs::File, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors; null name, termios and winsize are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned here alone.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            OwnedFd::from_raw_fd(slave),
        )
    }
}

/// `network prune` with `answer` typed on a terminal.
fn prune_at_terminal(lan: &Lan, answer: &str) -> std::process::Output {
    let (mut master, slave) = pty();
    // Typed ahead: the terminal keeps the line until netvlan reads it.
    master.write_all(answer.as_bytes()).unwrap();
    let out = command(lan, &["network", "prune"])
        .stdin(Stdio::from(slave))
        .output()
        .expect("netvlan runs");
    drop(master);
    out
}

#[test]
fn prune_asks_at_a_terminal_and_needs_force_otherwise() {
    let lan = Lan::new(false);
    create(
        &lan,
        &["--subnet", "10.77.0.0/24", "-o", "parent=eth0", "idle"],
    )
    .ok();
    let stored = || names(&lan.netvlan(&["network", "ls", "--json"]).ok().json());

    // No terminal (stdin is /dev/null here), no -f: refused, nothing removed.
    let refused = lan.netvlan(&["network", "prune"]).failed();
    assert!(refused.stderr.contains("-f"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("nothing was removed"),
        "{}",
        refused.stderr
    );
    assert_eq!(stored(), ["idle"]);

    // A terminal: the question is asked; "n" keeps everything.
    let no = prune_at_terminal(&lan, "n\n");
    let stderr = String::from_utf8_lossy(&no.stderr);
    assert!(no.status.success(), "{stderr}");
    assert!(
        stderr.contains("Are you sure you want to continue? [y/N]"),
        "{stderr}"
    );
    assert_eq!(stored(), ["idle"]);

    let yes = prune_at_terminal(&lan, "y\n");
    assert!(
        yes.status.success(),
        "{}",
        String::from_utf8_lossy(&yes.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&yes.stdout), "removed idle\n");
    assert!(stored().is_empty());

    create(
        &lan,
        &["--subnet", "10.77.0.0/24", "-o", "parent=eth0", "idle"],
    )
    .ok();
    lan.netvlan(&["network", "prune", "--force"]).ok();
    assert!(stored().is_empty());
}

#[test]
fn overlapping_subnets_are_refused_whatever_the_parent() {
    let lan = Lan::new(false);
    // A second wire, so the overlap is on another parent.
    veth_pair(&lan.host, "eth1", &lan.switch, "peer1");
    create(
        &lan,
        &["--subnet", "10.78.0.0/24", "-o", "parent=eth0", "lan"],
    )
    .ok();
    let links_before = lan.host_links();
    let bpf_before = lan.bpf.contents();

    for (what, args) in [
        (
            "internal",
            vec!["--subnet", "10.78.0.0/25", "--internal", "inner"],
        ),
        ("no parent", vec!["--subnet", "10.78.0.128/25", "inner2"]),
        (
            "other parent",
            vec!["--subnet", "10.78.0.0/16", "-o", "parent=eth1", "other"],
        ),
    ] {
        let run = create(&lan, &args).failed();
        assert!(
            run.stderr.contains("of network 'lan'")
                && run.stderr.contains("overlaps subnet 10.78.0.0/24"),
            "{what}: {}",
            run.stderr
        );
        assert_eq!(
            lan.host_links(),
            links_before,
            "{what}: a link was left behind"
        );
        assert_eq!(
            lan.bpf.contents(),
            bpf_before,
            "{what}: pins were left behind"
        );
    }
    assert_eq!(
        names(&lan.netvlan(&["network", "ls", "--json"]).ok().json()),
        ["lan"]
    );
    // Disjoint subnets on the other parent and internal are fine.
    create(
        &lan,
        &["--subnet", "10.79.0.0/24", "-o", "parent=eth1", "other"],
    )
    .ok();
    create(&lan, &["--subnet", "10.80.0.0/24", "--internal", "inner"]).ok();
}

#[test]
fn a_subnet_too_small_for_one_endpoint_is_refused_with_its_size() {
    let lan = Lan::new(false);
    let links_before = lan.host_links();
    let single = create(
        &lan,
        &["--subnet", "10.81.0.9/32", "-o", "parent=eth0", "tiny"],
    )
    .failed();
    assert!(
        single
            .stderr
            .contains("subnet 10.81.0.9/32 is too small to hold an endpoint: it has 1 address"),
        "{}",
        single.stderr
    );
    let full = create(
        &lan,
        &[
            "--subnet",
            "10.81.1.0/30",
            "--aux-address",
            "router=10.81.1.2",
            "-o",
            "parent=eth0",
            "full",
        ],
    )
    .failed();
    assert!(
        full.stderr.contains("it has 4 addresses"),
        "{}",
        full.stderr
    );
    assert!(
        full.stderr.contains("aux-address 'router'"),
        "{}",
        full.stderr
    );
    assert_eq!(lan.host_links(), links_before);
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        serde_json::json!([])
    );
    // One address left is room enough.
    create(
        &lan,
        &["--subnet", "10.81.1.0/30", "-o", "parent=eth0", "small"],
    )
    .ok();
    let c = lan.container(false);
    let joined = lan
        .netvlan(&["connect", "--json", "small", c.name()])
        .ok()
        .json();
    assert_eq!(joined["endpoint"]["ipv4"], "10.81.1.2/30");
}

// Point 17: a closed stdout.

/// Runs `netvlan ARGS` with a stdout whose reader is already gone.
fn with_closed_stdout(lan: &Lan, args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    command(lan, args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("netvlan runs")
}

#[test]
fn a_closed_stdout_ends_commands_quietly() {
    let lan = Lan::new(false);
    create(
        &lan,
        &["--subnet", "10.82.0.0/24", "-o", "parent=eth0", "lan"],
    )
    .ok();
    let c = lan.container(false);
    lan.netvlan(&["connect", "lan", c.name()]).ok();
    for args in [
        &["network", "ls"][..],
        &["network", "ls", "--json"],
        &["network", "inspect", "lan"],
        &["stats"],
        &["stats", "--json"],
        &["datapath", "status"],
    ] {
        let out = with_closed_stdout(&lan, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {} {stderr}", out.status);
        assert!(stderr.is_empty(), "{args:?} said: {stderr}");
    }
    // A command that changes things still does all of it.
    let out = with_closed_stdout(&lan, &["disconnect", "lan", c.name()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lan.inspect("lan")["Containers"], serde_json::json!({}));
}

// Point 18: output that reads well.

#[test]
fn stderr_has_no_colour_codes_when_it_is_not_a_terminal() {
    let lan = Lan::new(false);
    let run = lan
        .netvlan(&[
            "-vv",
            "network",
            "create",
            "--subnet",
            "10.83.0.0/24",
            "-o",
            "parent=eth0",
            "lan",
        ])
        .ok();
    assert!(
        run.stderr.contains("DEBUG") || run.stderr.contains("INFO"),
        "no log lines to check: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains('\u{1b}'),
        "ANSI escapes in a pipe: {:?}",
        run.stderr
    );
}

#[test]
fn vlan_offload_warning_only_for_real_parents_and_only_once() {
    let lan = Lan::new(false);
    // The harness turns VLAN offload off on its veths; a real NIC has it on.
    lan.host.exec("ethtool", &["-K", "eth0", "rxvlan", "on"]);
    let warnings = |run: &Run| run.stderr.matches("VLAN offload is on").count();

    // At XDP only: at TC the program reads the offloaded tag from the skb.
    let first = create(
        &lan,
        &[
            "--subnet",
            "10.84.1.0/24",
            "-o",
            "parent=eth0",
            "-o",
            "hook=xdp",
            "one",
        ],
    )
    .ok();
    assert_eq!(warnings(&first), 1, "{}", first.stderr);
    assert!(
        first.stderr.contains("eth0: VLAN offload is on"),
        "{}",
        first.stderr
    );
    let second = create(
        &lan,
        &["--subnet", "10.84.2.0/24", "-o", "parent=eth0", "two"],
    )
    .ok();
    assert_eq!(warnings(&second), 0, "said again: {}", second.stderr);
    // netvlan's own placeholder never carries a tagged frame.
    let internal = create(&lan, &["--subnet", "10.84.3.0/24", "--internal", "inner"]).ok();
    assert_eq!(
        warnings(&internal),
        0,
        "warned about a placeholder: {}",
        internal.stderr
    );
}

#[test]
fn ls_columns_fit_64_character_names() {
    let lan = Lan::new(false);
    let long = "n".repeat(63) + "1";
    create(
        &lan,
        &["--subnet", "10.85.0.0/24", "-o", "parent=eth0", &long],
    )
    .ok();
    create(
        &lan,
        &["--subnet", "10.85.1.0/24", "-o", "parent=eth0", "short"],
    )
    .ok();
    let ls = lan.netvlan(&["network", "ls"]).ok();
    let lines: Vec<&str> = ls.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", ls.stdout);
    let driver_at = lines[0].find("DRIVER").expect("a DRIVER column");
    for row in &lines[1..] {
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(fields.len(), 4, "name runs into the next column: {row}");
        assert_eq!(
            row.find("macvlan"),
            Some(driver_at),
            "columns do not line up:\n{}",
            ls.stdout
        );
    }
    assert!(ls.stdout.contains(&long));
}

#[test]
fn packet_columns_are_named_by_what_they_count() {
    let lan = Lan::new(false);
    create(
        &lan,
        &["--subnet", "10.86.0.0/24", "-o", "parent=eth0", "lan"],
    )
    .ok();
    let c = lan.container(false);
    lan.netvlan(&["connect", "lan", c.name()]).ok();
    let stats = lan.netvlan(&["stats"]).ok();
    assert!(!stats.stdout.contains("RX PKTS"), "{}", stats.stdout);
    assert!(
        stats.stdout.contains("RECEIVED PKTS") && stats.stdout.contains("SENT PKTS"),
        "{}",
        stats.stdout
    );

    // The demo counts frames from the LAN on the parent, not what an
    // endpoint received: its columns say so.
    let prefix = unique_name("demo");
    let demo = |action: &str| {
        Command::new(netvlan_bin())
            .args(["demo", action, "--prefix", &prefix])
            .env("NETVLAN_STATE_DIR", lan.state.path())
            .env("NETVLAN_BPF_DIR", lan.bpf.path())
            .output()
            .expect("netvlan runs")
    };
    let up = demo("up");
    let down = demo("down");
    let table = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(!table.contains("RX PKTS"), "{table}");
    assert!(table.contains("FRAMES FROM LAN"), "{table}");
}

/// Every command path, read from the `Commands:` sections of `--help`.
fn command_paths(prefix: &[String]) -> Vec<Vec<String>> {
    let mut args = prefix.to_vec();
    args.push("--help".into());
    let out = Command::new(netvlan_bin())
        .args(&args)
        .output()
        .expect("netvlan runs");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut paths = vec![prefix.to_vec()];
    let Some(start) = help.find("\nCommands:\n") else {
        return paths;
    };
    for line in help[start + 11..].lines().take_while(|l| !l.is_empty()) {
        let name = line.split_whitespace().next().unwrap_or_default();
        if name == "help" || !line.starts_with("  ") || line.starts_with("   ") {
            continue;
        }
        let mut path = prefix.to_vec();
        path.push(name.to_string());
        paths.extend(command_paths(&path));
    }
    paths
}

#[test]
fn help_shows_global_flags_once_and_describes_every_positional() {
    let paths = command_paths(&[]);
    assert!(paths.len() > 20, "found only {paths:?}");
    for path in paths {
        let out = Command::new(netvlan_bin())
            .args(&path)
            .arg("--help")
            .output()
            .expect("netvlan runs");
        let help = String::from_utf8_lossy(&out.stdout);
        let shown = path.join(" ");
        assert!(out.status.success(), "{shown}: {help}");
        let usage = help
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .expect("a usage line");
        for flag in ["--state-dir", "--bpf-dir", "--verbose"] {
            assert!(
                !usage.contains(flag),
                "`{shown}` usage names {flag}: {usage}"
            );
            assert_eq!(
                help.matches(flag).count(),
                1,
                "`{shown}` lists {flag} not once:\n{help}"
            );
        }
        assert_eq!(
            help.matches("Global options:").count(),
            1,
            "`{shown}`:\n{help}"
        );
        if !help.contains("\nCommands:\n") {
            assert!(help.contains("--json"), "`{shown}` has no --json:\n{help}");
        }
        let global = help.split("Global options:").nth(1).unwrap();
        assert!(
            global.contains("--state-dir"),
            "`{shown}`: --state-dir is not under Global options:\n{help}"
        );
        if let Some(section) = help.split("\nArguments:\n").nth(1) {
            // `  <NAME>  text`, or `  <NAME>` with the text on the lines below.
            let lines: Vec<&str> = section.lines().take_while(|l| !l.is_empty()).collect();
            for (i, line) in lines.iter().enumerate() {
                if line.starts_with("   ") {
                    continue;
                }
                let inline = line.trim().split_once(char::is_whitespace).is_some();
                let below = lines.get(i + 1).is_some_and(|next| next.starts_with("   "));
                assert!(
                    inline || below,
                    "`{shown}`: positional without a description: {line:?}\n{help}"
                );
            }
        }
    }
}

// Every front gets the manager's refusals, and `--json` gets them as data.

#[test]
fn detaching_under_networks_is_refused_with_a_machine_readable_error() {
    let lan = Lan::new(false);
    create(
        &lan,
        &[
            "--subnet",
            "10.61.0.0/24",
            "-o",
            "parent=eth0",
            "-o",
            "hook=xdp",
            "guarded",
        ],
    )
    .ok();
    let refused = lan
        .netvlan(&["datapath", "detach", "--json", "eth0"])
        .failed();
    assert!(
        refused
            .stderr
            .contains("networks guarded use eth0: detaching would leave their policy unenforced"),
        "{}",
        refused.stderr
    );
    let last = refused.stderr.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the last stderr line is not JSON ({e}): {last}"));
    assert_eq!(report["error"]["kind"], "datapath_in_use", "{report:#}");
    assert_eq!(report["error"]["code"], 100, "{report:#}");
    assert!(
        lan.host.link_json("eth0").get("xdp").is_some(),
        "still attached"
    );
    lan.netvlan(&["network", "rm", "guarded"]).ok();
}
