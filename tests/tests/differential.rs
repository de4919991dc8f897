//! Differential test: the loaded wire program, at both hooks, against the
//! host model.
//!
//! The same classifier and policy decision (`netvlan-common`) run on the
//! host as the reference model. At least 1,000,000 random and mutated
//! frames (truncated at every offset, stacked tags, odd EtherTypes, IPv4
//! options, IPv6 extension headers, ARP) go through the kernel with
//! BPF_PROG_TEST_RUN, once through the XDP program and once through the TC
//! classifier (each on a fresh object); every verdict must match the model,
//! and so must every counter at the end (every slot of every counter
//! array), the MAC-sprawl guard's learning table and its per-VLAN state.
//! The destination maps hold registrations in their direct slots, in the
//! hash (user-given MACs, the host's, a MAC on a second VLAN, two
//! netvlan MACs sharing their last two bytes), and the program must count
//! all of them the same way and never insert anything.
//!
//! Frame sizes: the kernel refuses test frames under 14 bytes at both
//! hooks (XDP's and skb test runs both need an Ethernet header; an skb that
//! short never reaches TC at all), so neither half has them; the
//! classifier's unit tests and the fuzzer cover those. The skb test run of
//! 6.18 also refuses untagged IPv4/IPv6 frames cut inside their IP header
//! (EINVAL before the program runs): the TC half leaves those out (about
//! 2% of the corpus), the XDP half runs them. The TC half gives
//! each skb a random `gso_segs` (0 to 4, as after GRO) through the test
//! run's `__sk_buff`, and the model counts it as that many frames.

use std::collections::{BTreeMap, HashMap, HashSet};

use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use netvlan_common::{
    decision::{
        vlan_drop_index, with_mac_limit, DropReason, Verdict, DROP_REASON_SLOTS, IP_GATEWAY,
        IP_NOT_REGISTERED, VLAN_ALLOWED, VLAN_DENY_LIST, VLAN_UNKNOWN_DST_DROP,
        VLAN_UNKNOWN_IP_DROP, VLAN_WIRE_FILTER,
    },
    frame::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ETH_P_QINQ_LEGACY},
    maps::{
        self, CounterSlot, Counters, DstCounters, DstKey, IpKey, LearnKey, MacGuardState, MacKey,
        VlanCounters,
    },
    model::{Placement, WireCounters, WireModel},
};
use netvlan_tests::{frame::ETH_P_EXPERIMENTAL, kernel_at_least, require_root};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

const fn dst(vid: u16, mac: [u8; 6]) -> DstKey {
    DstKey { vid, mac }
}

/// The host's MAC: registered on the untagged VLAN and on every VLAN a
/// network of the wire uses.
const HOST: [u8; 6] = [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f];
/// A user-given (`--mac`) endpoint MAC.
const USER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// Registrations, in the order the control plane would give them slots.
const REGISTERED: [DstKey; 12] = [
    dst(0, [2, 0x42, 10, 0, 0, 2]),
    dst(0, [2, 0x42, 10, 0, 0, 3]),
    dst(0, [2, 0x42, 192, 168, 10, 2]),
    // Shares its last two bytes (direct slot 0x0002) with the first: hashed.
    dst(0, [2, 0x42, 10, 1, 0, 2]),
    // The first MAC again on VLAN 10: its direct slot is taken, hashed.
    dst(10, [2, 0x42, 10, 0, 0, 2]),
    dst(10, [2, 0x42, 10, 0, 10, 7]),
    // A user-given MAC in its direct slot (0x3444: its last four bytes
    // folded), and one folding to the same slot: hashed behind its bit.
    dst(0, USER_MAC),
    dst(0, USER_MAC_SAME_SLOT),
    // Direct untagged; hashed on VLANs 10 and 100 (the same slot).
    dst(0, HOST),
    dst(10, HOST),
    dst(100, HOST),
    // Its direct slot (5) is the hashed slot of a registration above: hashed.
    dst(0, [2, 0x42, 10, 0, 0, 5]),
];
const USER_MAC_SAME_SLOT: [u8; 6] = [0x52, 0x55, 0x00, 0x12, 0x34, 0x56];
const UNREGISTERED: [[u8; 6]; 5] = [
    // A free direct slot.
    [2, 0x42, 10, 0, 0, 99],
    // The direct slot of [2, 0x42, 10, 0, 0, 3], held by that MAC.
    [2, 0x42, 10, 2, 0, 3],
    // A free direct slot (0x0202), no spill bit.
    [0x52, 0x54, 0, 1, 2, 3],
    // The spilled slot of USER_MAC: a hash lookup that misses.
    [0x52, 0x56, 0x00, 0x12, 0x34, 0x56],
    // Registered on VLAN 0 only: unregistered on VLAN 10 (and any other).
    USER_MAC,
];
const DENIED: [u8; 6] = [2, 0, 0, 0, 0, 0x66];
/// Denied after both guards (VLANs 0 and 10) learned it: the control
/// plane marked its learned entries (`maps::MAC_LEARN_DENIED`), so the
/// guard's one lookup answers the deny check for it.
const DENIED_LEARNED: [u8; 6] = [2, 0, 0, 0, 0, 0x67];
/// The VLANs whose guards learned [`DENIED_LEARNED`] before it was denied.
const LEARNED_BEFORE_DENIED: [u16; 2] = [0, 10];
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

/// VLAN filter and deny list on (in every VLAN's flags); untagged: guard
/// of 100 MACs that only counts; VLAN 10: guard of 64 that drops; VLAN
/// 100: no guard, ipvlan's drop of unicast IP to unknown addresses.
fn policy() -> WireModel {
    WireModel {
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
        every_vlan: VLAN_WIRE_FILTER | VLAN_DENY_LIST,
        registered: REGISTERED.into_iter().collect(),
        denied: HashSet::from([DENIED, DENIED_LEARNED]),
        registered_ips: REGISTERED_V4
            .iter()
            .map(|v4| std::net::Ipv4Addr::from(*v4).to_ipv6_mapped().octets())
            .chain([REGISTERED_V6, v4_mapped(GATEWAY_V4)])
            .collect(),
        gateway_ips: HashSet::from([v4_mapped(GATEWAY_V4), GATEWAY_V6]),
        learned: LEARNED_BEFORE_DENIED
            .iter()
            .map(|vid| LearnKey {
                vid: *vid,
                mac: DENIED_LEARNED,
            })
            .collect::<HashSet<_>>()
            .into(),
        guard: LEARNED_BEFORE_DENIED
            .iter()
            .map(|vid| {
                let state = MacGuardState {
                    learned: 1,
                    ..MacGuardState::default()
                };
                (*vid, state)
            })
            .collect::<BTreeMap<_, _>>()
            .into(),
    }
}

fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
    std::net::Ipv4Addr::from(v4).to_ipv6_mapped().octets()
}

/// Writes a placement into a loaded object's DST_DIRECT, DST_SPILL and
/// DST_SLOTS.
fn publish(slots: &Placement, ebpf: &mut Ebpf) {
    let mut direct: Array<&mut MapData, DstKey> =
        ebpf.map_mut(maps::DST_DIRECT).unwrap().try_into().unwrap();
    for (slot, key) in &slots.direct {
        direct.set(*slot, *key, 0).unwrap();
    }
    let mut spill: Array<&mut MapData, u64> =
        ebpf.map_mut(maps::DST_SPILL).unwrap().try_into().unwrap();
    for (word, bits) in &slots.spill {
        spill.set(*word, *bits, 0).unwrap();
    }
    let mut hashed: BpfHashMap<&mut MapData, DstKey, u32> =
        ebpf.map_mut(maps::DST_SLOTS).unwrap().try_into().unwrap();
    for (key, slot) in &slots.hashed {
        hashed.insert(*key, *slot, 0).unwrap();
    }
}

/// The destination maps still hold exactly what was published.
fn assert_unchanged(slots: &Placement, ebpf: &Ebpf) {
    let direct: Array<&MapData, DstKey> = ebpf.map(maps::DST_DIRECT).unwrap().try_into().unwrap();
    for slot in 0..maps::DST_CAPACITY {
        let want = slots.direct.get(&slot).copied().unwrap_or_default();
        assert_eq!(direct.get(&slot, 0).unwrap(), want, "DST_DIRECT[{slot}]");
    }
    let hashed: BpfHashMap<&MapData, DstKey, u32> =
        ebpf.map(maps::DST_SLOTS).unwrap().try_into().unwrap();
    let got: BTreeMap<DstKey, u32> = hashed.iter().map(|e| e.unwrap()).collect();
    assert_eq!(got, slots.hashed, "DST_SLOTS: the program never inserts");
}

/// A fresh object with the policy and the registrations in its maps.
fn loaded_object(policy: &WireModel, slots: &Placement) -> Ebpf {
    let mut ebpf = Ebpf::load(netvlan::datapath::embedded_object()).expect("loading the object");
    {
        let mut vlans: Array<&mut MapData, u32> =
            ebpf.map_mut(maps::VLAN_POLICY).unwrap().try_into().unwrap();
        for vid in 0..maps::VLAN_SLOTS {
            vlans.set(vid, policy.vlan_flags(vid as u16), 0).unwrap();
        }
    }
    publish(slots, &mut ebpf);
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
    {
        let mut deny: BpfHashMap<&mut MapData, MacKey, u32> =
            ebpf.map_mut(maps::DENY_MACS).unwrap().try_into().unwrap();
        for mac in &policy.denied {
            deny.insert(MacKey::new(*mac), 0, 0).unwrap();
        }
    }
    {
        // What the guards learned before the run, denied bits as the
        // control plane keeps them.
        let mut learn: BpfHashMap<&mut MapData, LearnKey, u64> =
            ebpf.map_mut(maps::MAC_LEARN).unwrap().try_into().unwrap();
        for key in policy.learned.borrow().iter() {
            let mut value = 1;
            if policy.denied.contains(&key.mac) {
                value |= maps::MAC_LEARN_DENIED;
            }
            learn.insert(*key, value, 0).unwrap();
        }
        let mut guard: Array<&mut MapData, MacGuardState> =
            ebpf.map_mut(maps::MAC_GUARD).unwrap().try_into().unwrap();
        for (vid, state) in policy.guard.borrow().iter() {
            guard.set(u32::from(*vid), *state, 0).unwrap();
        }
    }
    ebpf
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    Xdp,
    Tc,
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
    let r = rng.next().to_le_bytes();
    let dst = match rng.below(12) {
        0..=4 => rng.pick(&REGISTERED).mac,
        5 | 6 => rng.pick(&UNREGISTERED),
        7 => [0xff; 6],
        8 => [0x33, 0x33, 0, 0, 0, r[0]],
        // netvlan-style MACs nobody registered: random direct slots, most
        // free, some taken by another MAC.
        9 => [2, 0x42, r[0], r[1], 0, r[2] & 3],
        // Random unicast.
        _ => [r[0] & 0xfe, r[1], r[2], 0, 0, 1],
    };
    let src = match rng.below(8) {
        0 => rng.pick(&[DENIED, DENIED_LEARNED]),
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
    full.extend_from_slice(&REGISTERED[0].mac);
    full.extend_from_slice(&SENDER);
    full.extend_from_slice(&[
        0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00, 0x46,
    ]);
    full.extend((0..40).map(|i| i as u8));
    (14..=full.len()).map(|n| full[..n].to_vec()).collect()
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

fn sum<T: aya::Pod>(values: &PerCpuValues<T>, field: impl Fn(&T) -> Counters) -> Counters {
    values.iter().fold(Counters::default(), |mut acc, c| {
        acc.merge(&field(c));
        acc
    })
}

fn per_cpu_array<'a, T: aya::Pod>(ebpf: &'a Ebpf, name: &str) -> PerCpuArray<&'a MapData, T> {
    ebpf.map(name).unwrap().try_into().unwrap()
}

/// `struct __sk_buff` up to and including `gso_segs` (offset 164 in
/// include/uapi/linux/bpf.h, unchanged since it was added): the only field
/// the TC half sets. The kernel zero-fills the rest.
const SKB_GSO_SEGS: usize = 164;

/// One loaded program of the wire object, run on one frame at a time.
enum Loaded<'a> {
    Xdp(&'a Xdp),
    Tc(&'a SchedClassifier),
}

impl<'a> Loaded<'a> {
    fn new(ebpf: &'a Ebpf, hook: Hook) -> Self {
        match hook {
            Hook::Xdp => Loaded::Xdp(ebpf.program(maps::XDP_PROGRAM).unwrap().try_into().unwrap()),
            Hook::Tc => Loaded::Tc(ebpf.program(maps::TC_PROGRAM).unwrap().try_into().unwrap()),
        }
    }

    /// The program's return value for `frame` (at TC, an skb carrying
    /// `segs` GSO segments).
    fn run(&self, frame: &[u8], segs: u32) -> u32 {
        let result = match self {
            Loaded::Xdp(p) => p.test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::new()
            }),
            Loaded::Tc(p) => {
                let mut skb = [0u8; SKB_GSO_SEGS + 4];
                skb[SKB_GSO_SEGS..].copy_from_slice(&segs.to_ne_bytes());
                p.test_run(TestRunOptions {
                    data_in: Some(frame),
                    ctx_in: Some(&skb),
                    ..TestRunOptions::new()
                })
            }
        };
        result
            .unwrap_or_else(|e| {
                panic!(
                    "test run of a {}-byte frame (gso_segs {segs}): {e:?}",
                    frame.len()
                )
            })
            .return_value
    }
}

/// Whether the kernel's skb test run takes `frame`: since 6.1x it refuses
/// (EINVAL) an untagged IPv4 or IPv6 frame cut inside its IP header,
/// before any program runs. Such frames can reach TC on a real link; the
/// XDP half runs them through the same pipeline.
fn skb_test_run_accepts(frame: &[u8]) -> bool {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    match ethertype {
        ETH_P_IP => frame.len() >= 14 + 20,
        ETH_P_IPV6 => frame.len() >= 14 + 40,
        _ => true,
    }
}

/// Runs the corpus through `hook` and checks every verdict and counter
/// against the model.
fn the_program_agrees_with_the_model(hook: Hook) {
    require_root();
    let policy = policy();
    let slots = Placement::new(REGISTERED).unwrap();
    assert!(
        slots.direct.len() >= 6 && slots.hashed.len() >= 6 && slots.spill.len() >= 2,
        "the registrations must use both maps and spill bits: {slots:?}"
    );
    let mut ebpf = loaded_object(&policy, &slots);
    let name = match hook {
        Hook::Xdp => maps::XDP_PROGRAM,
        Hook::Tc => maps::TC_PROGRAM,
    };
    let loaded = match ebpf.program_mut(name).unwrap() {
        aya::programs::Program::Xdp(p) => p.load(),
        aya::programs::Program::SchedClassifier(p) => p.load(),
        other => panic!("{name} is a {:?}", other.prog_type()),
    };
    loaded.unwrap_or_else(|e| panic!("the verifier refuses {name}: {e}"));
    let program = Loaded::new(&ebpf, hook);
    let (pass, drop) = match hook {
        Hook::Xdp => (XDP_PASS, XDP_DROP),
        Hook::Tc => (TC_ACT_OK, TC_ACT_SHOT),
    };

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut expected = WireCounters::default();
    let total = frames_to_run();
    let mut frames = truncations();
    let mut run = 0usize;
    let mut segments = 0u64;
    let mut left_out = 0usize;
    let mut mismatches = Vec::new();
    while run < total {
        if frames.is_empty() {
            frames = (0..4096).map(|_| random_frame(&mut rng)).collect();
        }
        for frame in frames.drain(..) {
            if hook == Hook::Tc && !skb_test_run_accepts(&frame) {
                left_out += 1;
                continue;
            }
            let segs = match hook {
                Hook::Xdp => 1,
                Hook::Tc => rng.below(5) as u32,
            };
            let packets = u64::from(segs.max(1));
            segments += packets;
            let want = match policy.run(&frame, packets, &mut expected) {
                Verdict::Pass => pass,
                Verdict::Drop(_) => drop,
            };
            let got = program.run(&frame, segs);
            if got != want && mismatches.len() < 10 {
                mismatches.push(format!(
                    "kernel {got}, model {want} (gso_segs {segs}): {frame:02x?}"
                ));
            }
            run += 1;
        }
    }
    assert!(
        mismatches.is_empty(),
        "{hook:?}: verdicts differ:\n{}",
        mismatches.join("\n")
    );
    eprintln!(
        "{hook:?}: {run} frames ({segments} wire frames): every verdict matches the model; \
         {left_out} left out (untagged IPv4/IPv6 cut inside the IP header)"
    );

    let counters = per_cpu_array::<Counters>(&ebpf, maps::COUNTERS);
    for slot in 0..maps::COUNTER_SLOTS {
        let want = expected.counters.get(&slot).copied().unwrap_or_default();
        let got = sum(&counters.get(&slot, 0).unwrap(), |c| *c);
        assert_eq!(got, want, "{hook:?}: COUNTERS[{slot}]");
    }
    assert_eq!(
        sum(&counters.get(&CounterSlot::RESERVED, 0).unwrap(), |c| *c),
        Counters::default(),
        "{hook:?}: slot 1 is reserved"
    );
    let vlans = per_cpu_array::<VlanCounters>(&ebpf, maps::VLAN_COUNTERS);
    let mut frames_seen = expected
        .counters
        .get(&CounterSlot::Malformed.index())
        .copied()
        .unwrap_or_default();
    for vid in 0..maps::VLAN_SLOTS {
        let values = vlans.get(&vid, 0).unwrap();
        let want = expected
            .vlans
            .get(&(vid as u16))
            .copied()
            .unwrap_or_default();
        let got = VlanCounters {
            frames: sum(&values, |v| v.frames),
            unregistered: sum(&values, |v| v.unregistered),
            flood: sum(&values, |v| v.flood),
        };
        assert_eq!(got, want, "{hook:?}: VLAN_COUNTERS[{vid}]");
        frames_seen.merge(&got.frames);
    }
    assert_eq!(frames_seen, expected.frames());
    assert_eq!(
        frames_seen.packets, segments,
        "{hook:?}: COUNTERS[malformed] + every VLAN's frames = every wire frame"
    );
    let stats = per_cpu_array::<Counters>(&ebpf, maps::DST_STATS);
    let dst_drops: Array<&MapData, Counters> =
        ebpf.map(maps::DST_DROPS).unwrap().try_into().unwrap();
    for slot in 0..maps::DST_CAPACITY {
        let got = DstCounters {
            rx: sum(&stats.get(&slot, 0).unwrap(), |c| *c),
            dropped: dst_drops.get(&slot, 0).unwrap(),
        };
        let want = slots
            .owner(slot)
            .and_then(|key| expected.dsts.get(&key).copied())
            .unwrap_or_default();
        assert_eq!(
            got,
            want,
            "{hook:?}: DST_STATS[{slot}] ({:?})",
            slots.owner(slot)
        );
    }
    for key in REGISTERED {
        assert!(
            expected.dsts.get(&key).is_some_and(|d| d.rx.packets > 0),
            "the corpus must reach {key:?}"
        );
    }
    assert_unchanged(&slots, &ebpf);
    let drops = per_cpu_array::<Counters>(&ebpf, maps::DROPS);
    for reason in DropReason::ALL {
        let want = expected
            .drops
            .get(&(reason as u32))
            .copied()
            .unwrap_or_default();
        let got = sum(&drops.get(&(reason as u32), 0).unwrap(), |c| *c);
        assert_eq!(got, want, "{hook:?}: DROPS[{}]", reason.name());
    }
    let vlan_drops = per_cpu_array::<Counters>(&ebpf, maps::VLAN_DROPS);
    for index in 0..maps::VLAN_SLOTS * DROP_REASON_SLOTS {
        let want = expected.vlan_drops.get(&index).copied().unwrap_or_default();
        let got = sum(&vlan_drops.get(&index, 0).unwrap(), |c| *c);
        assert_eq!(got, want, "{hook:?}: VLAN_DROPS[{index}]");
    }
    let guard: Array<&MapData, MacGuardState> =
        ebpf.map(maps::MAC_GUARD).unwrap().try_into().unwrap();
    for (vid, want) in policy.guard.borrow().iter() {
        let mut got = guard.get(&u32::from(*vid), 0).unwrap();
        assert_ne!(got.last_over_limit_ns, 0, "VLAN {vid} never went over");
        got.last_over_limit_ns = 0;
        assert_eq!(&got, want, "{hook:?}: MAC_GUARD[{vid}]");
    }
    let learn: BpfHashMap<&MapData, LearnKey, u64> =
        ebpf.map(maps::MAC_LEARN).unwrap().try_into().unwrap();
    let kernel_learned: HashMap<LearnKey, u64> = learn.iter().map(|e| e.unwrap()).collect();
    assert_eq!(
        kernel_learned.keys().copied().collect::<HashSet<_>>(),
        *policy.learned.borrow(),
        "{hook:?}: the learning table holds exactly the MACs the model learned"
    );
    for (key, value) in &kernel_learned {
        assert_eq!(
            value & maps::MAC_LEARN_DENIED != 0,
            policy.denied.contains(&key.mac),
            "{hook:?}: MAC_LEARN[{key:?}] = {value:#x}: its denied bit"
        );
    }

    assert!(
        expected.dsts.values().any(|d| d.dropped.packets > 0),
        "the corpus must drop frames to registered destinations"
    );
    assert!(
        expected.vlans.values().any(|v| v.unregistered.packets > 0)
            && expected.vlans.values().any(|v| v.flood.packets > 0),
        "the corpus must have unregistered and flooded frames"
    );
    let unknown_ip = expected
        .vlan_drops
        .get(&vlan_drop_index(100, DropReason::UnknownDst));
    assert!(
        unknown_ip.is_some_and(|c| c.packets > 0),
        "the corpus must exercise ipvlan's address check"
    );
    for reason in DropReason::ALL {
        assert!(
            expected
                .drops
                .get(&(reason as u32))
                .is_some_and(|c| c.packets > 0),
            "the corpus must exercise {}",
            reason.name()
        );
    }
    let dropped: u64 = expected.drops.values().map(|c| c.packets).sum();
    assert!(
        dropped > total as u64 / 10,
        "the corpus must exercise drops ({dropped} of {total})"
    );
}

#[test]
fn the_xdp_program_agrees_with_the_model_on_every_frame_and_counter() {
    the_program_agrees_with_the_model(Hook::Xdp);
}

#[test]
fn the_tc_program_agrees_with_the_model_on_every_frame_and_counter() {
    the_program_agrees_with_the_model(Hook::Tc);
}

/// A full DST_SLOTS is the control plane's problem (it refuses the
/// registration); the program never inserts. Frames to unregistered MACs,
/// however many distinct ones, create no entry anywhere and are counted
/// exactly as unregistered on their VLAN, with every slot filled.
#[test]
fn frames_to_unregistered_macs_never_create_entries_and_count_as_unregistered() {
    require_root();
    let mut ebpf = Ebpf::load(netvlan::datapath::embedded_object()).expect("loading the object");
    // Every slot taken: all 65,536 direct slots by netvlan MACs on VLAN 0,
    // and DST_SLOTS filled to capacity with user MACs.
    {
        let mut direct: Array<&mut MapData, DstKey> =
            ebpf.map_mut(maps::DST_DIRECT).unwrap().try_into().unwrap();
        for slot in 0..maps::DST_CAPACITY {
            let b = slot.to_be_bytes();
            direct
                .set(slot, dst(0, [2, 0x42, 10, 0, b[2], b[3]]), 0)
                .unwrap();
        }
        let mut hashed: BpfHashMap<&mut MapData, DstKey, u32> =
            ebpf.map_mut(maps::DST_SLOTS).unwrap().try_into().unwrap();
        let mut spill = vec![0u64; maps::DST_SPILL_WORDS as usize];
        for i in 0..maps::DST_CAPACITY {
            let b = i.to_be_bytes();
            let key = dst(0, [0x06, 0xaa, b[0], b[1], b[2], b[3]]);
            hashed.insert(key, i, 0).expect("filling DST_SLOTS");
            let (word, bit) = maps::spill_bit(maps::direct_slot(&key.mac));
            spill[word as usize] |= bit;
        }
        assert!(
            hashed
                .insert(dst(0, [0x06, 0xab, 0, 0, 0, 0]), 0, 0)
                .is_err(),
            "DST_SLOTS holds more than its capacity"
        );
        // Every direct slot has hashed registrations behind it: every miss
        // pays the hash lookup.
        assert!(spill.iter().all(|w| *w == u64::MAX));
        let mut words: Array<&mut MapData, u64> =
            ebpf.map_mut(maps::DST_SPILL).unwrap().try_into().unwrap();
        for (i, w) in spill.into_iter().enumerate() {
            words.set(i as u32, w, 0).unwrap();
        }
    }
    let program: &mut Xdp = ebpf
        .program_mut(maps::XDP_PROGRAM)
        .unwrap()
        .try_into()
        .unwrap();
    program.load().expect("the verifier accepts the program");
    let frame = |dst: [u8; 6], vid: Option<u16>| {
        let mut f = dst.to_vec();
        f.extend_from_slice(&SENDER);
        if let Some(vid) = vid {
            f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&ETH_P_EXPERIMENTAL.to_be_bytes());
        f.resize(64, 0);
        f
    };
    let run = |f: Vec<u8>| {
        let verdict = program
            .test_run(TestRunOptions {
                data_in: Some(&f),
                ..TestRunOptions::new()
            })
            .expect("test run")
            .return_value;
        assert_eq!(verdict, XDP_PASS, "counting never drops");
    };
    // 1,000 distinct unregistered MACs of each kind on VLAN 0, and the
    // registered ones on VLAN 7, where nobody registered them.
    for i in 0..1000u32 {
        let b = i.to_be_bytes();
        run(frame([2, 0x42, 10, 9, b[2], b[3]], None)); // direct slot held by another MAC
        run(frame([0x06, 0xbb, b[0], b[1], b[2], b[3]], None)); // hash miss
        run(frame([2, 0x42, 10, 0, b[2], b[3]], Some(7))); // right MAC, wrong VLAN
    }
    // A registered one of each kind is still counted in its own slot.
    run(frame([2, 0x42, 10, 0, 0, 9], None));
    run(frame([0x06, 0xaa, 0, 0, 0, 5], None));

    let vlans = per_cpu_array::<VlanCounters>(&ebpf, maps::VLAN_COUNTERS);
    let untagged = vlans.get(&0, 0).unwrap();
    assert_eq!(
        sum(&untagged, |v| v.unregistered),
        Counters {
            packets: 2000,
            bytes: 2000 * 64
        }
    );
    assert_eq!(sum(&untagged, |v| v.frames).packets, 2002);
    let tagged = vlans.get(&7, 0).unwrap();
    assert_eq!(
        sum(&tagged, |v| v.unregistered),
        Counters {
            packets: 1000,
            bytes: 1000 * 64
        }
    );
    let stats = per_cpu_array::<Counters>(&ebpf, maps::DST_STATS);
    let one = Counters {
        packets: 1,
        bytes: 64,
    };
    assert_eq!(sum(&stats.get(&9, 0).unwrap(), |d| *d), one);
    assert_eq!(sum(&stats.get(&5, 0).unwrap(), |d| *d), one);
    let counted: u64 = (0..maps::DST_CAPACITY)
        .map(|slot| sum(&stats.get(&slot, 0).unwrap(), |d| *d).packets)
        .sum();
    assert_eq!(counted, 2, "no unregistered frame was counted in a slot");
    let hashed: BpfHashMap<&MapData, DstKey, u32> =
        ebpf.map(maps::DST_SLOTS).unwrap().try_into().unwrap();
    assert_eq!(
        hashed.keys().count(),
        maps::DST_CAPACITY as usize,
        "the program inserted nothing"
    );
    assert!(hashed
        .keys()
        .map(|k| k.unwrap())
        .all(|k| k.vid == 0 && k.mac[..2] == [0x06, 0xaa]));
}

/// The loaded map behind `map`.
fn map_data(map: &aya::maps::Map) -> &MapData {
    use aya::maps::Map;
    match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::RingBuf(d) => d,
        _ => panic!("the wire object has no map of this kind"),
    }
}

/// `key:` of the kernel's fdinfo of a map (`memlock`, `map_flags`, ...).
fn fdinfo(map: &MapData, key: &str) -> u64 {
    use std::os::fd::{AsFd, AsRawFd};
    let fd = map.fd().as_fd().as_raw_fd();
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in the fdinfo of fd {fd}:\n{text}"))
        .trim();
    match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
        None => value.parse().unwrap(),
    }
}

/// The hashes the control plane fills are not preallocated: an empty one
/// takes only its buckets, and its memory grows with its entries. Prints
/// each map's kernel memory (`memlock`) and the wire's total.
#[test]
fn the_configured_hashes_take_memory_by_their_entries() {
    require_root();
    let mut ebpf = Ebpf::load(netvlan::datapath::embedded_object()).expect("loading the object");
    let mut total = 0;
    for name in maps::WIRE_MAPS {
        let map = map_data(ebpf.map(name).unwrap_or_else(|| panic!("no map {name}")));
        let memlock = fdinfo(map, "memlock");
        eprintln!("{name:>14}: {memlock:>9} bytes");
        total += memlock;
    }
    eprintln!(
        "{:>14}: {total:>9} bytes ({:.2} MiB, {} possible CPUs)",
        "wire",
        total as f64 / (1 << 20) as f64,
        aya::util::nr_cpus().unwrap()
    );
    for name in [maps::DST_SLOTS, maps::ENDPOINT_IPS, maps::DENY_MACS] {
        let map = map_data(ebpf.map(name).unwrap());
        assert_eq!(
            fdinfo(map, "map_flags") & u64::from(maps::BPF_F_NO_PREALLOC),
            u64::from(maps::BPF_F_NO_PREALLOC),
            "{name} is preallocated"
        );
    }
    // Before 6.4 (the VM lane's 6.1) `memlock` is the kernel's estimate
    // from the map's definition, not what it allocated (`map_mem_usage`
    // came in 6.4): there the flag above is all the kernel can show.
    if !kernel_at_least(6, 4) {
        eprintln!("memlock on this kernel is an estimate from the definition: growth not visible");
        return;
    }
    let empty = fdinfo(map_data(ebpf.map(maps::DST_SLOTS).unwrap()), "memlock");
    {
        let mut hashed: BpfHashMap<&mut MapData, DstKey, u32> =
            ebpf.map_mut(maps::DST_SLOTS).unwrap().try_into().unwrap();
        for i in 0..10_000u32 {
            let b = i.to_be_bytes();
            hashed
                .insert(dst(0, [0x06, 0xaa, b[0], b[1], b[2], b[3]]), i, 0)
                .unwrap();
        }
    }
    let filled = fdinfo(map_data(ebpf.map(maps::DST_SLOTS).unwrap()), "memlock");
    eprintln!("DST_SLOTS: {empty} bytes empty, {filled} with 10,000 entries");
    let entry = (core::mem::size_of::<DstKey>() + core::mem::size_of::<u32>()) as u64;
    assert!(
        filled - empty >= 10_000 * entry,
        "10,000 entries added {} bytes",
        filled - empty
    );
    // The kernel allocates a hash's buckets (16 bytes each, one per entry
    // of capacity rounded up to a power of two) up front either way; a
    // preallocated one would add every element (over 64 bytes each).
    let buckets = u64::from(maps::DST_CAPACITY.next_power_of_two()) * 16;
    assert!(
        empty <= buckets + 64 * 1024,
        "the empty DST_SLOTS takes {empty} bytes: more than its {buckets} bytes of buckets"
    );
}
