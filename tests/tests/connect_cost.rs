//! What a connect costs beyond the links it makes. Loading the endpoint
//! programs (every connect does, their maps are the endpoint's own) goes
//! through a loader that parses the kernel's BTF (5.5 MB on the host) when
//! it is made: once per process, kept for the next loads (a daemon running
//! connects pays it once, not once per connect; `Ebpf::load` used to parse
//! it twice per load). Speed itself is the bench's (`control` family);
//! this checks the work, in bytes read, which does not depend on load.

use netvlan::datapath::object::ENDPOINT;
use netvlan_common::antispoof::{EGRESS_PROGRAM, INGRESS_PROGRAM};

const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Bytes this thread has read so far (`rchar` of /proc/thread-self/io):
/// every read(2) counts, whatever it read from.
fn bytes_read_by_this_thread() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io")
        .expect("reading /proc/thread-self/io (a kernel with task I/O accounting)");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rchar in /proc/thread-self/io: {io}"))
}

#[test]
fn loading_the_endpoint_programs_reads_the_kernel_btf_once_per_process() {
    netvlan_tests::require_root();
    let btf = std::fs::metadata(KERNEL_BTF)
        .unwrap_or_else(|e| panic!("{KERNEL_BTF}: {e} (the endpoint programs are loaded with it)"))
        .len();
    // The first load of the process makes the kept loader (and aya probes
    // the kernel's features, which reads little).
    let before = bytes_read_by_this_thread();
    drop(ENDPOINT.load().expect("loading the endpoint object"));
    let first = bytes_read_by_this_thread() - before;
    assert!(
        first >= btf,
        "the first load read {first} bytes, less than the kernel BTF ({btf} bytes): it was not \
         read, so CO-RE relocation would not happen"
    );
    assert!(
        first < btf + btf / 2,
        "the first load read {first} bytes for a kernel BTF of {btf} bytes: parsed {:.1} times",
        first as f64 / btf as f64
    );

    // Every later one reuses it.
    for _ in 0..3 {
        let before = bytes_read_by_this_thread();
        let ebpf = ENDPOINT.load().expect("loading the endpoint object");
        let read = bytes_read_by_this_thread() - before;
        for program in [EGRESS_PROGRAM, INGRESS_PROGRAM] {
            assert!(
                ebpf.program(program).is_some(),
                "the loaded object has no {program}"
            );
        }
        assert!(
            read < btf / 10,
            "a later load read {read} bytes for a kernel BTF of {btf} bytes: it parsed it again"
        );
    }
}
