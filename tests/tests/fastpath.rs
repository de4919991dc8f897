//! The fast path's budgets that a test can check exactly (issue #12): the
//! kernel memory of one wire's maps at the README's capacities, and the
//! refusal of `datapath upgrade` on pins of the map layout before it.

use aya::maps::MapInfo;
use netvlan_common::maps::{
    self, DST_CAPACITY, ENDPOINT_IPS_CAPACITY, MAC_LEARN_CAPACITY, VLAN_SLOTS, WIRE_MAPS,
};
use netvlan_common::trace::TRACE_RING;
use netvlan_tests::{bench::memory, kernel_at_least, Lan};
use serde_json::Value;

const MIB: u64 = 1024 * 1024;

/// The one attachment `datapath status --json` lists.
fn the_attachment(lab: &Lan) -> Value {
    let status = lab.netvlan(&["datapath", "status", "--json"]).ok().json();
    let list = status["attachments"].as_array().expect("attachments");
    assert_eq!(list.len(), 1, "{status:#}");
    list[0].clone()
}

/// The CPUs per-CPU maps keep a copy for (the kernel's possible CPUs).
fn possible_cpus() -> u64 {
    aya::util::nr_cpus().expect("the possible CPUs") as u64
}

/// Bytes one more possible CPU adds to a wire: one copy of every per-CPU
/// map's values.
fn per_cpu_bytes() -> u64 {
    let counters = 16u64;
    let vlan_counters = 48;
    maps::COUNTER_SLOTS as u64 * counters
        + VLAN_SLOTS as u64 * vlan_counters
        + DST_CAPACITY as u64 * counters
        + netvlan_common::decision::DROP_REASON_SLOTS as u64 * counters
        + (VLAN_SLOTS * netvlan_common::decision::DROP_REASON_SLOTS) as u64 * counters
}

/// A freshly attached wire holds at most 8 MiB of maps on a machine of
/// 2 possible CPUs (each CPU beyond adds only its per-CPU copies), at the
/// capacities the README's table names. The budget is checked where the
/// kernel's `memlock` is the map's real memory (6.4+, `map_mem_usage`);
/// before that (the VM lane's 6.1) it is a size estimate that ignores
/// `BPF_F_NO_PREALLOC` (a 65,536-entry hash counts all its entries), and
/// there the capacities and a `memlock` for every map are checked.
#[test]
fn a_wire_holds_at_most_8_mib_of_maps_at_the_readme_capacities() {
    let lab = Lan::new(false);
    lab.netvlan(&["datapath", "attach", "eth0"]).ok();
    let pins = memory::wire_pin_dir(lab.bpf.path()).unwrap();
    let capacity = |name: &str| {
        MapInfo::from_pin(pins.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .max_entries()
    };
    assert_eq!(capacity(maps::DST_DIRECT), 65_536);
    assert_eq!(capacity(maps::DST_SLOTS), 65_536);
    assert_eq!(capacity(maps::DST_SPILL), 1_024, "one bit per direct slot");
    assert_eq!(capacity(maps::DST_STATS), 65_536);
    assert_eq!(capacity(maps::DST_DROPS), DST_CAPACITY);
    assert_eq!(capacity(maps::ENDPOINT_IPS), ENDPOINT_IPS_CAPACITY);
    assert_eq!(capacity(maps::MAC_LEARN), 32_768);
    assert_eq!(capacity(maps::MAC_LEARN), MAC_LEARN_CAPACITY);
    assert_eq!(capacity(maps::VLAN_POLICY), 4_096);
    assert_eq!(capacity(maps::VLAN_COUNTERS), 4_096);

    let each = memory::wire_maps_memlock(&pins).unwrap();
    assert_eq!(each.len(), WIRE_MAPS.len());
    let total: u64 = each.iter().map(|(_, bytes)| bytes).sum();
    let cpus = possible_cpus();
    let budget = 8 * MIB + cpus.saturating_sub(2) * per_cpu_bytes();
    let listing: Vec<String> = each
        .iter()
        .map(|(name, bytes)| format!("{name} {} KiB", bytes / 1024))
        .collect();
    eprintln!(
        "{cpus} possible CPUs: {} KiB in all: {}",
        total / 1024,
        listing.join(", ")
    );
    // Before 6.4 the estimate is (key + value size) x entries, which is 0
    // for a ring buffer (no key, no value): only 6.4+ shows its pages.
    let ring_estimated = |name: &str| !kernel_at_least(6, 4) && name == TRACE_RING;
    assert!(
        each.iter()
            .all(|(name, bytes)| *bytes > 0 || ring_estimated(name)),
        "{listing:?}"
    );
    assert!(
        !kernel_at_least(6, 4) || total <= budget,
        "the wire's maps hold {total} B ({:.2} MiB) on {cpus} possible CPUs, over the budget of {budget} B: {}",
        total as f64 / MIB as f64,
        listing.join(", ")
    );
    lab.netvlan(&["datapath", "detach", "eth0"]).ok();
    assert!(lab.bpf.contents().is_empty());
}

/// Pins of the layout before the 8 MiB maps (per-CPU `DST_STATS` of 32 B
/// values, the guard's table an LRU, no `DST_DROPS`) cannot carry over:
/// upgrade refuses with what differs and how to move, and changes nothing.
#[test]
fn upgrade_refuses_the_pins_of_the_layout_before_the_8_mib_maps_and_changes_nothing() {
    let lab = Lan::new(false);
    lab.netvlan(&["datapath", "attach", "eth0"]).ok();
    let before = the_attachment(&lab);
    let dir = std::path::PathBuf::from(before["pin_dir"].as_str().unwrap());
    let old_shapes: &[(&str, &[&str])] = &[
        (
            maps::DST_STATS,
            &[
                "type",
                "percpu_array",
                "key",
                "4",
                "value",
                "32",
                "entries",
                "65536",
            ],
        ),
        (
            maps::MAC_LEARN,
            &[
                "type", "lru_hash", "key", "8", "value", "8", "entries", "32768",
            ],
        ),
    ];
    for (name, shape) in old_shapes {
        let path = dir.join(name);
        std::fs::remove_file(&path).unwrap();
        let out = std::process::Command::new("bpftool")
            .args(["map", "create"])
            .arg(&path)
            .args(*shape)
            .args(["name", name])
            .output()
            .expect("bpftool runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_file(dir.join(maps::DST_DROPS)).unwrap();
    let pins = lab.bpf.contents();

    let refused = lab
        .netvlan(&["datapath", "upgrade", "eth0", "--force"])
        .failed();
    let says = |what: &str| {
        assert!(
            refused.stderr.contains(what),
            "says {what:?}: {}",
            refused.stderr
        )
    };
    says("cannot upgrade in place");
    says("DST_STATS has type 6, key 4 B, value 32 B, 65536 entries");
    says("this build wants type 6, key 4 B, value 16 B, 65536 entries");
    says("Nothing was changed");
    says("netvlan datapath detach PARENT --force");
    assert_eq!(the_attachment(&lab)["prog_id"], before["prog_id"]);
    assert_eq!(lab.bpf.contents(), pins, "no pin added or removed");

    // The way out it names works: detach, attach afresh, upgrade.
    lab.netvlan(&["datapath", "detach", "eth0", "--force"]).ok();
    assert!(lab.bpf.contents().is_empty());
    lab.netvlan(&["datapath", "attach", "eth0"]).ok();
    lab.netvlan(&["datapath", "upgrade", "eth0", "--force"])
        .ok();
    lab.netvlan(&["datapath", "detach", "eth0"]).ok();
    assert!(lab.bpf.contents().is_empty());
}
