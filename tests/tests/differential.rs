//! Differential test: the loaded XDP program against the host model.
//!
//! The same classifier and policy decision (`netvlan-common`) run on the
//! host as the reference model. At least 1,000,000 random and mutated
//! frames (truncated at every offset, stacked tags, odd EtherTypes, IPv4
//! options, IPv6 extension headers, ARP) go through the kernel with
//! BPF_PROG_TEST_RUN; every verdict must match the model, and so must every
//! counter at the end, and so must the MAC-sprawl guard's learning table
//! and its per-VLAN state. (The kernel refuses test frames under 14 bytes; the
//! classifier's unit tests cover those.)

use std::collections::{HashMap, HashSet};

use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap},
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use netvlan_common::{
    decision::{
        vlan_drop_index, with_mac_limit, DropReason, Verdict, IP_GATEWAY, IP_NOT_REGISTERED,
        VLAN_ALLOWED, VLAN_UNKNOWN_DST_DROP, VLAN_UNKNOWN_IP_DROP, WIRE_VLAN_FILTER,
    },
    frame::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ETH_P_QINQ_LEGACY},
    maps::{self, CounterSlot, Counters, IpKey, LearnKey, MacDrops, MacGuardState, MacKey},
    model::{WireCounters, WireModel},
};
use netvlan_tests::{frame::ETH_P_EXPERIMENTAL, require_root};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const REGISTERED: [[u8; 6]; 3] = [
    [2, 0x42, 10, 0, 0, 2],
    [2, 0x42, 10, 0, 0, 3],
    [2, 0x42, 192, 168, 10, 2],
];
const UNREGISTERED: [[u8; 6]; 2] = [[2, 0x42, 10, 0, 0, 99], [0x52, 0x54, 0, 1, 2, 3]];
const DENIED: [u8; 6] = [2, 0, 0, 0, 0, 0x66];
const SENDER: [u8; 6] = [2, 0, 0, 0, 0, 0x11];
/// ipvlan endpoint addresses (VLAN 100 drops unicast IP to any other).
const REGISTERED_V4: [[u8; 4]; 2] = [[10, 0, 100, 2], [10, 0, 100, 3]];
const REGISTERED_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// Gateways (exempt from the guards); the IPv4 one is also registered, to
/// cover both value flags.
const GATEWAY_V4: [u8; 4] = [10, 0, 100, 1];
const GATEWAY_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Distinct "sprawling" source MACs: more than either guard's limit.
const SPRAWL: u64 = 200;

/// Untagged: guard of 100 MACs that only counts; VLAN 10: guard of 64 that
/// drops; VLAN 100: no guard, ipvlan's drop of unicast IP to unknown
/// addresses.
fn policy() -> WireModel {
    WireModel {
        wire: WIRE_VLAN_FILTER,
        vlans: HashMap::from([
            (
                0,
                with_mac_limit(VLAN_ALLOWED | VLAN_UNKNOWN_DST_DROP, 100, true),
            ),
            (
                10,
                with_mac_limit(VLAN_ALLOWED | VLAN_UNKNOWN_DST_DROP, 64, false),
            ),
            (100, VLAN_ALLOWED | VLAN_UNKNOWN_IP_DROP),
        ]),
        registered: REGISTERED.into_iter().collect(),
        denied: HashSet::from([DENIED]),
        registered_ips: REGISTERED_V4
            .iter()
            .map(|v4| std::net::Ipv4Addr::from(*v4).to_ipv6_mapped().octets())
            .chain([REGISTERED_V6, v4_mapped(GATEWAY_V4)])
            .collect(),
        gateway_ips: HashSet::from([v4_mapped(GATEWAY_V4), GATEWAY_V6]),
        ..WireModel::default()
    }
}

fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
    std::net::Ipv4Addr::from(v4).to_ipv6_mapped().octets()
}

/// xorshift64*: fast, deterministic, good enough to spread frames.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let mut f = Vec::with_capacity(256);
    let dst = match rng.below(10) {
        0..=3 => rng.pick(&REGISTERED),
        4 | 5 => rng.pick(&UNREGISTERED),
        6 => [0xff; 6],
        7 => [0x33, 0x33, 0, 0, 0, rng.below(256) as u8],
        // Random unicast, at most 32,768 distinct: below the MAC table's
        // size, so every MAC gets its own counter.
        _ => {
            let r = rng.next().to_le_bytes();
            [r[0] & 0xfe, r[1], 0, 0, 0, 1]
        }
    };
    let src = match rng.below(8) {
        0 => DENIED,
        1 | 2 => [2, 0, 0, 0x5b, 0, rng.below(SPRAWL) as u8],
        _ => SENDER,
    };
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for _ in 0..rng.pick(&[0u64, 0, 1, 1, 2, 3]) {
        f.extend_from_slice(
            &rng.pick(&[ETH_P_8021Q, ETH_P_8021AD, ETH_P_QINQ_LEGACY])
                .to_be_bytes(),
        );
        let random_vid = (rng.next() & 0xfff) as u16;
        let vid = rng.pick(&[0u16, 10, 10, 20, 100, 4095, random_vid]);
        f.extend_from_slice(&((rng.below(8) as u16) << 13 | vid).to_be_bytes());
    }
    let random_type = rng.next() as u16;
    let ethertype = rng.pick(&[
        ETH_P_IP,
        ETH_P_IP,
        ETH_P_IPV6,
        ETH_P_ARP,
        ETH_P_EXPERIMENTAL,
        random_type,
    ]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    match ethertype {
        ETH_P_IP => {
            // IPv4 with a random IHL (options when > 5, nonsense when < 5).
            let ihl = rng.below(16) as u8;
            let start = f.len();
            f.push(rng.pick(&[0x40u8, 0x40, 0x60]) | ihl);
            f.extend((0..usize::from(ihl.max(5)) * 4 - 1).map(|_| rng.next() as u8));
            // Half to a registered address, some multicast and broadcast.
            let dst = match rng.below(8) {
                0..=3 => rng.pick(&REGISTERED_V4),
                4 => [224, 0, 0, rng.below(256) as u8],
                5 => [255; 4],
                _ => [10, 0, 100, rng.below(256) as u8],
            };
            f[start + 16..start + 20].copy_from_slice(&dst);
            // Some from the gateway (the guard exempts them).
            if rng.below(4) == 0 {
                f[start + 12..start + 16].copy_from_slice(&GATEWAY_V4);
            }
        }
        ETH_P_IPV6 => {
            let start = f.len();
            f.push(0x60);
            f.extend((0..39).map(|_| rng.next() as u8));
            let dst = match rng.below(4) {
                0 | 1 => REGISTERED_V6,
                2 => {
                    let mut link_local = REGISTERED_V6;
                    link_local[..2].copy_from_slice(&[0xfe, 0x80]);
                    link_local
                }
                _ => {
                    let mut other = REGISTERED_V6;
                    other[15] = rng.below(256) as u8;
                    other
                }
            };
            f[start + 24..start + 40].copy_from_slice(&dst);
            if rng.below(4) == 0 {
                f[start + 8..start + 24].copy_from_slice(&GATEWAY_V6);
            }
            // Extension headers: hop-by-hop / routing / fragment shapes.
            for _ in 0..rng.below(3) {
                let len = rng.below(4) as usize;
                f.extend((0..8 * (len + 1)).map(|_| rng.next() as u8));
            }
        }
        ETH_P_ARP => {
            let start = f.len();
            f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            f.extend((0..20).map(|_| rng.next() as u8));
            // Half claim the gateway as sender; some with a wrong length.
            if rng.below(2) == 0 {
                f[start + 14..start + 18].copy_from_slice(&GATEWAY_V4);
            }
            if rng.below(8) == 0 {
                f[start + 5] = rng.pick(&[0u8, 6, 16]);
            }
        }
        _ => {}
    }
    f.extend((0..rng.below(64)).map(|_| rng.next() as u8));
    // Mutations: cut anywhere (never below the 14 bytes the kernel
    // accepts), or flip a byte.
    match rng.below(4) {
        0 => {
            let cut = 14 + rng.below((f.len() - 13) as u64) as usize;
            f.truncate(cut);
        }
        1 => {
            let at = rng.below(f.len() as u64) as usize;
            f[at] ^= 1 << rng.below(8);
        }
        _ => {}
    }
    f
}

/// Every frame of a QinQ template cut at every offset from 14 on.
fn truncations() -> Vec<Vec<u8>> {
    let mut full = Vec::new();
    full.extend_from_slice(&REGISTERED[0]);
    full.extend_from_slice(&SENDER);
    full.extend_from_slice(&[
        0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00, 0x46,
    ]);
    full.extend((0..40).map(|i| i as u8));
    (14..=full.len()).map(|n| full[..n].to_vec()).collect()
}

/// The model's verdict for one frame as the XDP action, its counters
/// accounted.
fn model(frame: &[u8], policy: &WireModel, expected: &mut WireCounters) -> u32 {
    match policy.run(frame, expected) {
        Verdict::Pass => XDP_PASS,
        Verdict::Drop(_) => XDP_DROP,
    }
}

fn frames_to_run() -> usize {
    // Under TCG emulation a million syscalls take too long; the host lane
    // runs the full million.
    if std::env::var("NETVLAN_TEST_LANE").as_deref() == Ok("vm") {
        100_000
    } else {
        1_000_000
    }
}

fn sum(values: &aya::maps::PerCpuValues<Counters>) -> Counters {
    values.iter().fold(Counters::default(), |mut acc, c| {
        acc.merge(c);
        acc
    })
}

#[test]
fn the_kernel_agrees_with_the_model_on_every_frame_and_counter() {
    require_root();
    let mut ebpf = Ebpf::load(netvlan::datapath::embedded_object()).expect("loading the object");
    let policy = policy();
    {
        let mut wire: Array<&mut MapData, u32> =
            ebpf.map_mut(maps::WIRE_POLICY).unwrap().try_into().unwrap();
        wire.set(0, policy.wire, 0).unwrap();
    }
    {
        let mut vlans: Array<&mut MapData, u32> =
            ebpf.map_mut(maps::VLAN_POLICY).unwrap().try_into().unwrap();
        for (vid, flags) in &policy.vlans {
            vlans.set(u32::from(*vid), *flags, 0).unwrap();
        }
    }
    {
        let cpus = aya::util::nr_cpus().expect("CPU count");
        let mut drops: PerCpuHashMap<&mut MapData, MacKey, MacDrops> =
            ebpf.map_mut(maps::MAC_DROPS).unwrap().try_into().unwrap();
        for mac in &policy.registered {
            let zero = aya::maps::PerCpuValues::try_from(vec![MacDrops::default(); cpus]).unwrap();
            drops.insert(MacKey::new(*mac), zero, 0).unwrap();
        }
    }
    {
        let mut ips: BpfHashMap<&mut MapData, IpKey, u32> = ebpf
            .map_mut(maps::ENDPOINT_IPS)
            .unwrap()
            .try_into()
            .unwrap();
        for ip in policy.registered_ips.union(&policy.gateway_ips) {
            let mut flags = 0;
            if policy.gateway_ips.contains(ip) {
                flags |= IP_GATEWAY;
            }
            if !policy.registered_ips.contains(ip) {
                flags |= IP_NOT_REGISTERED;
            }
            ips.insert(IpKey { addr: *ip }, flags, 0).unwrap();
        }
    }
    for (name, set) in [
        (maps::ENDPOINT_MACS, &policy.registered),
        (maps::DENY_MACS, &policy.denied),
    ] {
        let mut map: BpfHashMap<&mut MapData, MacKey, u32> =
            ebpf.map_mut(name).unwrap().try_into().unwrap();
        for mac in set {
            map.insert(MacKey::new(*mac), 0, 0).unwrap();
        }
    }
    let program: &mut Xdp = ebpf
        .program_mut(maps::XDP_PROGRAM)
        .unwrap()
        .try_into()
        .unwrap();
    program.load().expect("the verifier accepts the program");

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut expected = WireCounters::default();
    let total = frames_to_run();
    let mut frames = truncations();
    let mut run = 0usize;
    let mut mismatches = Vec::new();
    while run < total {
        if frames.is_empty() {
            frames = (0..4096).map(|_| random_frame(&mut rng)).collect();
        }
        for frame in frames.drain(..) {
            let want = model(&frame, &policy, &mut expected);
            let got = program
                .test_run(TestRunOptions {
                    data_in: Some(&frame),
                    ..TestRunOptions::new()
                })
                .unwrap_or_else(|e| panic!("test run of a {}-byte frame: {e}", frame.len()))
                .return_value;
            if got != want && mismatches.len() < 10 {
                mismatches.push(format!("kernel {got}, model {want}: {frame:02x?}"));
            }
            run += 1;
        }
    }
    assert!(
        mismatches.is_empty(),
        "verdicts differ:\n{}",
        mismatches.join("\n")
    );
    eprintln!("{run} frames: every verdict matches the model");

    let counters: PerCpuArray<&MapData, Counters> =
        ebpf.map(maps::COUNTERS).unwrap().try_into().unwrap();
    for slot in 0..maps::COUNTER_SLOTS {
        let want = expected.counters.get(&slot).copied().unwrap_or_default();
        assert_eq!(
            sum(&counters.get(&slot, 0).unwrap()),
            want,
            "COUNTERS[{slot}]"
        );
    }
    let vlans: PerCpuArray<&MapData, Counters> =
        ebpf.map(maps::VLAN_STATS).unwrap().try_into().unwrap();
    for vid in 0..maps::VLAN_SLOTS {
        let want = expected
            .vlans
            .get(&(vid as u16))
            .copied()
            .unwrap_or_default();
        assert_eq!(sum(&vlans.get(&vid, 0).unwrap()), want, "VLAN_STATS[{vid}]");
    }
    let drops: PerCpuArray<&MapData, Counters> = ebpf.map(maps::DROPS).unwrap().try_into().unwrap();
    for reason in DropReason::ALL {
        let want = expected
            .drops
            .get(&(reason as u32))
            .copied()
            .unwrap_or_default();
        assert_eq!(
            sum(&drops.get(&(reason as u32), 0).unwrap()),
            want,
            "DROPS[{}]",
            reason.name()
        );
    }
    let vlan_drops: PerCpuArray<&MapData, Counters> =
        ebpf.map(maps::VLAN_DROPS).unwrap().try_into().unwrap();
    for (index, want) in &expected.vlan_drops {
        assert_eq!(
            sum(&vlan_drops.get(index, 0).unwrap()),
            *want,
            "VLAN_DROPS[{index}]"
        );
    }
    let macs: PerCpuHashMap<&MapData, MacKey, Counters> =
        ebpf.map(maps::MAC_STATS).unwrap().try_into().unwrap();
    let kernel_macs: HashMap<[u8; 6], Counters> = macs
        .iter()
        .map(|e| e.unwrap())
        .map(|(k, v)| (k.addr, sum(&v)))
        .collect();
    assert!(
        expected.macs.len() < maps::MAC_STATS_CAPACITY as usize,
        "the test must stay below the MAC table size"
    );
    assert_eq!(kernel_macs.len(), expected.macs.len(), "distinct MACs");
    for (mac, want) in &expected.macs {
        assert_eq!(kernel_macs.get(mac), Some(want), "MAC_STATS[{mac:02x?}]");
    }
    let guard: Array<&MapData, MacGuardState> =
        ebpf.map(maps::MAC_GUARD).unwrap().try_into().unwrap();
    for (vid, want) in policy.guard.borrow().iter() {
        let mut got = guard.get(&u32::from(*vid), 0).unwrap();
        assert_ne!(got.last_over_limit_ns, 0, "VLAN {vid} never went over");
        got.last_over_limit_ns = 0;
        assert_eq!(&got, want, "MAC_GUARD[{vid}]");
    }
    let learn: BpfHashMap<&MapData, LearnKey, u64> =
        ebpf.map(maps::MAC_LEARN).unwrap().try_into().unwrap();
    let kernel_learned: HashSet<LearnKey> = learn.keys().map(|k| k.unwrap()).collect();
    assert_eq!(
        kernel_learned,
        *policy.learned.borrow(),
        "the learning table holds exactly the MACs the model learned"
    );
    let mac_drops: PerCpuHashMap<&MapData, MacKey, MacDrops> =
        ebpf.map(maps::MAC_DROPS).unwrap().try_into().unwrap();
    for mac in &policy.registered {
        let values = mac_drops.get(&MacKey::new(*mac), 0).unwrap();
        for reason in DropReason::ALL {
            let got = values.iter().fold(Counters::default(), |mut acc, d| {
                acc.merge(&d.by_reason[reason as usize]);
                acc
            });
            let want = expected
                .mac_drops
                .get(&(*mac, reason as u32))
                .copied()
                .unwrap_or_default();
            assert_eq!(got, want, "MAC_DROPS[{mac:02x?}][{}]", reason.name());
        }
    }
    assert!(
        !expected.mac_drops.is_empty(),
        "the corpus must drop frames to registered MACs"
    );
    let unknown_ip = expected
        .vlan_drops
        .get(&vlan_drop_index(100, DropReason::UnknownDst));
    assert!(
        unknown_ip.is_some_and(|c| c.packets > 0),
        "the corpus must exercise ipvlan's address check"
    );
    let limited = expected.drops.get(&(DropReason::MacLimit as u32));
    assert!(
        limited.is_some_and(|c| c.packets > 0),
        "the corpus must exercise the MAC limit"
    );

    let dropped: u64 = expected.drops.values().map(|c| c.packets).sum();
    assert!(
        dropped > total as u64 / 10,
        "the corpus must exercise drops ({dropped} of {total})"
    );
}

#[test]
fn a_full_mac_table_counts_every_further_frame_as_mac_table_full() {
    require_root();
    let mut ebpf = Ebpf::load(netvlan::datapath::embedded_object()).expect("loading the object");
    let cpus = aya::util::nr_cpus().expect("CPU count");
    {
        let mut macs: PerCpuHashMap<&mut MapData, MacKey, Counters> =
            ebpf.map_mut(maps::MAC_STATS).unwrap().try_into().unwrap();
        for i in 0..maps::MAC_STATS_CAPACITY {
            let b = i.to_be_bytes();
            macs.insert(
                MacKey::new([0x06, 0xaa, b[0], b[1], b[2], b[3]]),
                aya::maps::PerCpuValues::try_from(vec![Counters::default(); cpus]).unwrap(),
                0,
            )
            .expect("filling the MAC table");
        }
    }
    let program: &mut Xdp = ebpf
        .program_mut(maps::XDP_PROGRAM)
        .unwrap()
        .try_into()
        .unwrap();
    program.load().expect("the verifier accepts the program");
    let known = [0x06, 0xaa, 0, 0, 0, 7];
    let frame = |dst: [u8; 6]| {
        let mut f = dst.to_vec();
        f.extend_from_slice(&SENDER);
        f.extend_from_slice(&0x88b5u16.to_be_bytes());
        f.resize(64, 0);
        f
    };
    let run = |dst: [u8; 6]| {
        let verdict = program
            .test_run(TestRunOptions {
                data_in: Some(&frame(dst)),
                ..TestRunOptions::new()
            })
            .expect("test run")
            .return_value;
        assert_eq!(verdict, XDP_PASS, "counting never drops");
    };
    // New MACs: the table is full, each frame is counted as such (the
    // first one finds out by a failed insert, the rest without one).
    for n in 0..5u8 {
        run([0x06, 0xbb, 0, 0, 0, n]);
    }
    // A MAC already in the table is still counted under its own entry.
    run(known);
    run(known);

    let counters: PerCpuArray<&MapData, Counters> =
        ebpf.map(maps::COUNTERS).unwrap().try_into().unwrap();
    let full = sum(&counters.get(&CounterSlot::MacTableFull.index(), 0).unwrap());
    assert_eq!(
        full,
        Counters {
            packets: 5,
            bytes: 5 * 64
        }
    );
    let macs: PerCpuHashMap<&MapData, MacKey, Counters> =
        ebpf.map(maps::MAC_STATS).unwrap().try_into().unwrap();
    assert_eq!(
        sum(&macs.get(&MacKey::new(known), 0).unwrap()),
        Counters {
            packets: 2,
            bytes: 2 * 64
        }
    );
    assert!(
        macs.get(&MacKey::new([0x06, 0xbb, 0, 0, 0, 0]), 0).is_err(),
        "a MAC beyond the table's size was inserted"
    );
}
