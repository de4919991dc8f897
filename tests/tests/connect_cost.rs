//! What a connect costs beyond the links it makes. Loading the endpoint
//! programs (every connect does, their maps are the endpoint's own) never
//! reads the kernel's BTF (5.5 MB on the host): aya 0.14's loader parses
//! it whatever the object needs, netvlan's objects need none of it, and
//! `object::loader` makes the loader where the file cannot be found. Speed
//! itself is the bench's (`control` family); this checks the work, in
//! bytes read, which does not depend on load.

use netvlan::datapath::object::ENDPOINT;
use netvlan_common::antispoof::{EGRESS_PROGRAM, INGRESS_PROGRAM};

const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Bytes this process has read so far (`rchar` of /proc/self/io): every
/// read(2) of any of its threads counts (the loader is made on one of its
/// own), whatever it read from.
fn bytes_read_by_this_process() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io")
        .expect("reading /proc/self/io (a kernel with task I/O accounting)");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rchar in /proc/self/io: {io}"))
}

#[test]
fn loading_the_endpoint_programs_never_reads_the_kernel_btf() {
    netvlan_tests::require_root();
    let btf = std::fs::metadata(KERNEL_BTF)
        .unwrap_or_else(|e| panic!("{KERNEL_BTF}: {e}"))
        .len();
    // The first load of the process also has aya probe the kernel's
    // features, which reads little.
    for round in 0..4 {
        let before = bytes_read_by_this_process();
        let ebpf = ENDPOINT.load().expect("loading the endpoint object");
        let read = bytes_read_by_this_process() - before;
        for program in [EGRESS_PROGRAM, INGRESS_PROGRAM] {
            assert!(
                ebpf.program(program).is_some(),
                "the loaded object has no {program}"
            );
        }
        assert!(
            read < btf / 10,
            "load {round} read {read} bytes for a kernel BTF of {btf} bytes: it parsed it"
        );
    }
}

/// The durable (fsynced) store commits a command reported on its way out
/// (`RUST_LOG=netvlan::store=debug`).
fn durable_commits(run: &netvlan_tests::Run) -> usize {
    let counts = reported(run, "durable commits: ");
    assert_eq!(
        counts.len(),
        1,
        "one writer store per command, reporting once:\n{}",
        run.stderr
    );
    counts[0]
}

const STORE_DEBUG: (&str, &str) = ("RUST_LOG", "netvlan::store=debug");

/// The network records a command decoded (`RUST_LOG=netvlan::store=debug`).
fn records_decoded(run: &netvlan_tests::Run) -> usize {
    reported(run, "records decoded: ").iter().sum()
}

/// Every count the store logged after `label` on the command's stderr.
fn reported(run: &netvlan_tests::Run, label: &str) -> Vec<usize> {
    run.stderr
        .lines()
        .filter_map(|l| l.split(label).nth(1))
        .map(|n| n.trim().parse().expect("a count"))
        .collect()
}

#[test]
fn a_connect_and_a_disconnect_decode_each_network_record_once() {
    // A network of thousands of endpoints is one record: reading it twice
    // (the network, then every network for the wire) was most of what a
    // connect's cost grew by with the endpoints present.
    let lan = netvlan_tests::Lan::new(false);
    for (subnet, name) in [("10.62.0.0/24", "decoded"), ("10.63.0.0/24", "beside")] {
        lan.netvlan(&[
            "network",
            "create",
            "--subnet",
            subnet,
            "-o",
            "parent=eth0",
            name,
        ])
        .ok();
    }
    let present: Vec<_> = (0..3).map(|_| lan.container(false)).collect();
    for c in &present {
        lan.netvlan(&["connect", "decoded", c.name()]).ok();
    }
    let c = lan.container(false);
    let connect = lan
        .netvlan_env(&[STORE_DEBUG], &["connect", "decoded", c.name()])
        .ok();
    assert_eq!(records_decoded(&connect), 2, "connect:\n{}", connect.stderr);
    let disconnect = lan
        .netvlan_env(&[STORE_DEBUG], &["disconnect", "decoded", c.name()])
        .ok();
    assert_eq!(
        records_decoded(&disconnect),
        2,
        "disconnect:\n{}",
        disconnect.stderr
    );
    for c in &present {
        lan.netvlan(&["disconnect", "decoded", c.name()]).ok();
    }
    for name in ["decoded", "beside"] {
        lan.netvlan(&["network", "rm", name]).ok();
    }
}

#[test]
fn a_connect_and_a_disconnect_make_one_durable_commit_each() {
    let lan = netvlan_tests::Lan::new(false);
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.61.0.0/24",
        "-o",
        "parent=eth0",
        "onesync",
    ])
    .ok();
    for _ in 0..2 {
        let c = lan.container(false);
        // The journal written before the link, the record committed after.
        let connect = lan
            .netvlan_env(&[STORE_DEBUG], &["connect", "onesync", c.name()])
            .ok();
        assert_eq!(durable_commits(&connect), 1, "connect:\n{}", connect.stderr);
        assert!(
            !lan.state.path().join("journal").exists(),
            "the committed connect left its journal behind"
        );
        let disconnect = lan
            .netvlan_env(&[STORE_DEBUG], &["disconnect", "onesync", c.name()])
            .ok();
        assert_eq!(
            durable_commits(&disconnect),
            1,
            "disconnect:\n{}",
            disconnect.stderr
        );
    }
    lan.netvlan(&["network", "rm", "onesync"]).ok();
}

#[test]
fn a_connect_killed_after_its_journal_is_undone_by_the_next_command() {
    let lan = netvlan_tests::Lan::new(false);
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.62.0.0/24",
        "-o",
        "parent=eth0",
        "killedj",
    ])
    .ok();
    let c = lan.container(false);
    let links = |c: &netvlan_tests::Netns| {
        let mut names = c.link_names();
        names.retain(|n| n != "lo");
        names
    };
    let journal = lan.state.path().join("journal");
    // SIGKILLed with its journal written (not fsynced) and its link made.
    lan.kill_midway(
        "connect-after-link",
        &["connect", "killedj", c.name()],
        || !links(&c).is_empty(),
    );
    assert!(
        journal.exists(),
        "the killed connect's journal did not outlive it"
    );
    assert_eq!(links(&c).len(), 1, "the killed connect left its link");
    let ls = lan.netvlan(&["network", "ls", "--json"]).ok();
    assert!(
        ls.stderr.contains("left by an interrupted connect"),
        "{}",
        ls.stderr
    );
    assert_eq!(links(&c), Vec::<String>::new(), "recovery removed the link");
    assert!(!journal.exists(), "recovery cleared the journal");
    let again = lan
        .netvlan(&["connect", "--json", "killedj", c.name()])
        .ok()
        .json();
    assert_eq!(again["endpoint"]["ipv4"], "10.62.0.2/24", "no address lost");
    lan.netvlan(&["disconnect", "killedj", c.name()]).ok();
    lan.netvlan(&["network", "rm", "killedj"]).ok();
}

/// Entries one `netvlan connect NETWORK SANDBOX` writes into bpf maps
/// (strace's decoding: one per `BPF_MAP_UPDATE_ELEM`/`DELETE_ELEM`,
/// `count` per batch), wire maps and the endpoint's own alike.
fn map_entries_written_by_a_connect(
    lan: &netvlan_tests::Lan,
    network: &str,
    sandbox: &str,
) -> usize {
    let log = std::env::temp_dir().join(format!("{}-bpf", netvlan_tests::unique_name("nvcc")));
    let out = lan
        .host
        .command("strace")
        .args(["-f", "-qq", "-e", "trace=bpf", "-o"])
        .arg(&log)
        .arg(netvlan_tests::netvlan_bin())
        .args(["connect", network, sandbox])
        .env("NETVLAN_BPF_DIR", lan.bpf.path())
        .env("NETVLAN_STATE_DIR", lan.state.path())
        .output()
        .expect("strace runs (Debian's strace)");
    let trace = std::fs::read_to_string(&log).expect("strace wrote its log");
    let _ = std::fs::remove_file(&log);
    assert!(
        out.status.success(),
        "traced connect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut written = 0;
    for line in trace.lines() {
        if line.contains("bpf(BPF_MAP_UPDATE_ELEM") || line.contains("bpf(BPF_MAP_DELETE_ELEM") {
            written += 1;
        } else if line.contains("bpf(BPF_MAP_UPDATE_BATCH")
            || line.contains("bpf(BPF_MAP_DELETE_BATCH")
        {
            written += line
                .split("count=")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("a batch without a count: {line}"));
        }
    }
    assert!(written > 0, "the connect wrote no map entry:\n{trace}");
    written
}

#[test]
fn a_connect_writes_the_same_map_entries_with_one_or_fifty_endpoints_present() {
    const PRESENT: usize = 50;
    let lan = netvlan_tests::Lan::new(false);
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.63.0.0/16",
        "-o",
        "parent=eth0",
        "flat",
    ])
    .ok();
    let first = lan.container(false);
    lan.netvlan(&["connect", "flat", first.name()]).ok();
    let probe = lan.container(false);
    let with_one = map_entries_written_by_a_connect(&lan, "flat", probe.name());
    lan.netvlan(&["disconnect", "flat", probe.name()]).ok();
    let mut present = vec![first];
    while present.len() < PRESENT {
        let c = lan.container(false);
        lan.netvlan(&["connect", "flat", c.name()]).ok();
        present.push(c);
    }
    let with_many = map_entries_written_by_a_connect(&lan, "flat", probe.name());
    assert_eq!(
        with_many, with_one,
        "a connect wrote {with_many} map entries with {PRESENT} endpoints present, \
         {with_one} with one: it rewrote entries of other endpoints"
    );
    let check = lan.netvlan(&["check"]).ok();
    assert!(check.stdout.contains("no drift"), "{}", check.stdout);
    lan.netvlan(&["disconnect", "flat", probe.name()]).ok();
    for c in &present {
        lan.netvlan(&["disconnect", "flat", c.name()]).ok();
    }
    lan.netvlan(&["network", "rm", "flat"]).ok();
}
