//! Keys, values, names and sizes of the datapath's maps.
//!
//! Layout rules: `#[repr(C)]`, fixed-width fields, explicit padding fields
//! (zeroed by [`MacKey::new`]) so the kernel hashes exactly the bytes we set.

use crate::frame::Anomaly;

/// Per-CPU array of [`Counters`] indexed by [`CounterSlot`]: frames that
/// did not classify, and anomalies.
pub const COUNTERS: &str = "COUNTERS";
/// Name of the XDP program in the object file.
pub const XDP_PROGRAM: &str = "netvlan_xdp";
/// The same pipeline at TC ingress (TCX on 6.6+, clsact before), for
/// parents where native XDP costs the receive offloads.
pub const TC_PROGRAM: &str = "netvlan_tc";
/// A pass-only XDP program in the same object: the benchmarks' floor.
pub const BENCH_FLOOR_PROGRAM: &str = "bench_floor";

/// Array of `u32` `decision::VLAN_*` flags indexed by VLAN id.
pub const VLAN_POLICY: &str = "VLAN_POLICY";
/// Hash (no preallocation) of [`IpKey`] to `u32` flags (`decision::IP_*`; 0 = registered):
/// IPv4/IPv6 addresses of ipvlan endpoints and the host, for ipvlan's
/// unknown-destination drop, and the networks' gateways, which the
/// MAC-sprawl guard exempts.
pub const ENDPOINT_IPS: &str = "ENDPOINT_IPS";
/// Hash (no preallocation) of [`MacKey`] to `u32` (reserved): source MACs
/// that are dropped. Looked up only on VLANs flagged
/// `decision::VLAN_DENY_LIST`.
pub const DENY_MACS: &str = "DENY_MACS";
/// Per-CPU array of [`Counters`] indexed by `decision::DropReason`.
pub const DROPS: &str = "DROPS";
/// Per-CPU array of [`Counters`] indexed by `decision::vlan_drop_index`.
pub const VLAN_DROPS: &str = "VLAN_DROPS";

/// Hash (no preallocation: memory follows what is learned) of [`LearnKey`]
/// to `u64` (first seen, `bpf_ktime_get_ns`, with [`MAC_LEARN_DENIED`]):
/// the source MACs the MAC-sprawl guard has learned, per VLAN. Not an LRU:
/// the guard reserves a MAC's place in its VLAN's count before inserting
/// it, so the table holds at most what the limits allow and nothing is
/// ever evicted. The deny list stays in [`DENY_MACS`] (per wire, never
/// crowded out by learning); the entry's denied bit lets a guarded VLAN
/// answer both checks with this one lookup.
pub const MAC_LEARN: &str = "MAC_LEARN";
/// Bit of a [`MAC_LEARN`] value: the learned MAC is on the wire's deny
/// list. The control plane sets it on every learned entry of a MAC it
/// denies (and clears it when it allows the MAC again) before the VLAN
/// flags turn the deny list on; the program sets it on an entry it learns
/// while the MAC is being denied. A monotonic time in ns never has it.
pub const MAC_LEARN_DENIED: u64 = 1 << 63;
/// Array of [`MacGuardState`] indexed by VLAN id: the guard's count of
/// learned MACs and its over-limit events.
pub const MAC_GUARD: &str = "MAC_GUARD";

// ---- The one-lookup layout (issue #12) -------------------------------
//
// A frame's destination resolves to a slot: every MAC has a direct slot
// found by arithmetic ([`direct_slot`]; for a netvlan-assigned MAC, `02:42`
// + the endpoint's IPv4 address, its last two bytes), checked against the
// key [`DST_DIRECT`] holds there. A registration whose direct slot another
// one holds goes to [`DST_SLOTS`], and its direct slot's bit in
// [`DST_SPILL`] says so: a frame pays a hash lookup only when its slot's
// bit is set, so misses and registrations in their own slot cost none. The slot indexes [`DST_STATS`]. Frames to
// no registered destination are counted per VLAN in [`VLAN_COUNTERS`],
// never inserted anywhere. The control plane gives every registration a
// slot no other registration uses, zeroes the slot's counters before it
// publishes the key, and keeps slots stable while the registration lives.
// A slot's counters are split by how often they change: every frame to it
// in the per-CPU [`DST_STATS`], policy drops (rarer) in the shared
// [`DST_DROPS`] with atomic adds, which costs a quarter of the per-CPU
// copies' memory.

/// Array of [`DstKey`] indexed by [`direct_slot`]: the registration whose
/// counters live in the same slot of [`DST_STATS`]; all-zero = free.
pub const DST_DIRECT: &str = "DST_DIRECT";
/// Hash (no preallocation: memory follows what is registered) of
/// [`DstKey`] to the `u32` slot in [`DST_STATS`], for registrations that
/// are not in their direct slot (it was taken).
pub const DST_SLOTS: &str = "DST_SLOTS";
/// Array of `u64` words, one bit per direct slot ([`spill_bit`]): set when
/// a registration whose direct slot this is may be in [`DST_SLOTS`]. The
/// control plane sets it before it publishes such a registration and
/// clears it after the last one is gone; a stale bit costs a lookup, never
/// a count.
pub const DST_SPILL: &str = "DST_SPILL";
/// Words of [`DST_SPILL`]: one bit per slot.
pub const DST_SPILL_WORDS: u32 = DST_CAPACITY / 64;
/// Per-CPU array of [`Counters`] indexed by slot: every frame to the
/// registration ([`DstCounters::rx`]).
pub const DST_STATS: &str = "DST_STATS";
/// Array of [`Counters`] indexed by slot, shared by every CPU (atomic
/// adds): the frames to the registration that policy dropped
/// ([`DstCounters::dropped`]).
pub const DST_DROPS: &str = "DST_DROPS";
/// Per-CPU array of [`VlanCounters`] indexed by outer VLAN id (0 = untagged).
pub const VLAN_COUNTERS: &str = "VLAN_COUNTERS";

/// Registered destinations per wire (endpoints and the host's own MACs,
/// per VLAN), and the number of slots of [`DST_DIRECT`] and [`DST_STATS`].
pub const DST_CAPACITY: u32 = 65_536;

/// The direct slot of a MAC, by arithmetic instead of hashing: a
/// netvlan-assigned MAC (`02:42:a:b:c:d`, the endpoint's IPv4 address
/// `a.b.c.d`) indexes by its last two bytes, so a /16 or smaller subnet
/// never collides; any other MAC by its last four bytes folded to 16 bits
/// (vendor prefixes are shared, the NIC-specific bytes are not).
#[inline(always)]
pub const fn direct_slot(mac: &[u8; 6]) -> u32 {
    if is_assigned_mac(mac) {
        ((mac[4] as u32) << 8) | mac[5] as u32
    } else {
        (((mac[2] ^ mac[4]) as u32) << 8) | (mac[3] ^ mac[5]) as u32
    }
}

/// A MAC netvlan assigns: `02:42` + the endpoint's IPv4 address.
#[inline(always)]
pub const fn is_assigned_mac(mac: &[u8; 6]) -> bool {
    mac[0] == 0x02 && mac[1] == 0x42
}

/// The [`DST_SPILL`] word and bit of direct slot `slot`.
#[inline(always)]
pub const fn spill_bit(slot: u32) -> (u32, u64) {
    (slot / 64, 1 << (slot % 64))
}
const _: () = assert!(DST_CAPACITY == 1 << 16);

/// Read access to the destination maps ([`DST_DIRECT`], [`DST_SPILL`],
/// [`DST_SLOTS`]), so
/// the program, the fuzzer and the tests resolve a destination with the
/// same code ([`dst_slot`]).
pub trait DstTables {
    /// `DST_DIRECT[slot]`.
    fn direct(&self, slot: u32) -> Option<&DstKey>;
    /// Whether `DST_SPILL` has direct slot `slot`'s bit.
    fn spilled(&self, slot: u32) -> bool;
    /// `DST_SLOTS[key]`.
    fn hashed(&self, key: &DstKey) -> Option<u32>;
}

/// The counter slot of a registered unicast destination: one in its
/// direct slot costs an array read and a compare; a frame to nobody the
/// same plus a bit test; only a registration whose direct slot another one
/// took (the slot's spill bit) costs a hash lookup. `None`: not registered
/// (nothing is inserted).
#[inline(always)]
pub fn dst_slot<T: DstTables + ?Sized>(tables: &T, vid: u16, mac: &[u8; 6]) -> Option<u32> {
    let key = DstKey { vid, mac: *mac };
    let slot = direct_slot(mac);
    if tables.direct(slot).is_some_and(|owner| *owner == key) {
        return Some(slot);
    }
    if !tables.spilled(slot) {
        return None;
    }
    tables.hashed(&key)
}

/// A registered destination: a MAC on one outer VLAN. 2 + 6 bytes, no
/// padding (a multiple of 4 hashes faster).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DstKey {
    /// VLAN id in host byte order (0 = untagged).
    pub vid: u16,
    pub mac: [u8; 6],
}

impl DstKey {
    /// A free [`DST_DIRECT`] slot holds the all-zero key.
    #[inline(always)]
    pub const fn is_free(&self) -> bool {
        self.vid == 0 && matches!(self.mac, [0, 0, 0, 0, 0, 0])
    }
}

/// Counters of one registered destination, as the control plane reports
/// them and the model counts them (the kernel keeps the two halves in
/// [`DST_STATS`] and [`DST_DROPS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DstCounters {
    /// Every frame to it (dropped ones included).
    pub rx: Counters,
    /// Frames to it that policy dropped (the reason is counted per VLAN).
    pub dropped: Counters,
}

/// Counters of one outer VLAN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VlanCounters {
    /// Every classified frame on this VLAN.
    pub frames: Counters,
    /// Unicast frames to no registered destination on this VLAN.
    pub unregistered: Counters,
    /// Broadcast and multicast frames.
    pub flood: Counters,
}

/// Every map of the wire (XDP) object, each pinned per parent link; a test
/// in netvlan-userspace checks this list against the built object.
pub const WIRE_MAPS: &[&str] = &[
    COUNTERS,
    VLAN_COUNTERS,
    VLAN_POLICY,
    DST_DIRECT,
    DST_SPILL,
    DST_SLOTS,
    DST_STATS,
    DST_DROPS,
    ENDPOINT_IPS,
    DENY_MACS,
    DROPS,
    VLAN_DROPS,
    MAC_LEARN,
    MAC_GUARD,
    crate::trace::TRACE_RING,
    crate::trace::TRACE_CONFIG,
    crate::trace::TRACE_LOST,
];

/// `map_flags` of the wire's hashes ([`DST_SLOTS`], [`ENDPOINT_IPS`],
/// [`DENY_MACS`], which the control plane fills, and [`MAC_LEARN`]):
/// entries are allocated when inserted, so their memory follows what is
/// configured or learned.
pub const BPF_F_NO_PREALLOC: u32 = 1;
/// Map flag (linux/bpf.h): an array userspace can `mmap`. The control
/// plane reads [`DST_DIRECT`] and [`VLAN_POLICY`] whole on every connect;
/// through the mapping that is a memory copy, not a syscall walking 65,536
/// entries one by one.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Learned source MACs per wire. The control plane keeps the sum of the
/// wire's `max_macs` limits at or under half of this (room left from when
/// the table was an LRU, which evicts before it is full; a guard whose
/// limit was lowered also keeps what it learned above the new limit).
pub const MAC_LEARN_CAPACITY: u32 = 32_768;
/// The most learned MACs all guarded VLANs of one wire may ask for.
pub const MAC_LEARN_BUDGET: u32 = MAC_LEARN_CAPACITY / 2;

/// Registered addresses per wire (ipvlan endpoints and the host's).
pub const ENDPOINT_IPS_CAPACITY: u32 = 65_536;
/// Denied source MACs per wire.
pub const DENY_MACS_CAPACITY: u32 = 4_096;

/// One slot per 12-bit VLAN id, so no VLAN can ever miss its counter.
pub const VLAN_SLOTS: u32 = 4096;
/// Size of the [`COUNTERS`] array; spare slots leave room for new counters
/// without changing the map's shape.
pub const COUNTER_SLOTS: u32 = 16;

/// Packets and bytes. Bytes are the frame length as XDP sees it (no FCS).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

impl Counters {
    #[inline(always)]
    pub fn add_frame(&mut self, len: u64) {
        self.add(1, len);
    }

    /// Adds `packets` wire frames of `bytes` in all (a GRO'd skb at TC
    /// carries several).
    #[inline(always)]
    pub fn add(&mut self, packets: u64, bytes: u64) {
        self.packets += packets;
        self.bytes += bytes;
    }

    /// Adds another CPU's share (userspace sums per-CPU values).
    pub fn merge(&mut self, other: &Counters) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// A MAC address as a hash key: 6 bytes plus 2 explicit zero bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacKey {
    pub addr: [u8; 6],
    pub _pad: [u8; 2],
}

impl MacKey {
    #[inline(always)]
    pub const fn new(addr: [u8; 6]) -> Self {
        MacKey { addr, _pad: [0; 2] }
    }
}

/// An IPv4 (IPv4-mapped) or IPv6 address as a hash key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpKey {
    pub addr: [u8; 16],
}

/// A learned source MAC on one VLAN: 2 + 6 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LearnKey {
    /// VLAN id in host byte order (0 = untagged).
    pub vid: u16,
    pub mac: [u8; 6],
}

/// The MAC-sprawl guard of one VLAN, written by the XDP program with
/// atomic adds (every CPU shares it, so the limit holds across CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MacGuardState {
    /// Source MACs learned (entries this VLAN holds in [`MAC_LEARN`]).
    pub learned: u64,
    /// Frames from new MACs while the VLAN held its limit (dropped, or with
    /// the count action only counted).
    pub over_limit_packets: u64,
    pub over_limit_bytes: u64,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of the last such frame; 0 = none.
    pub last_over_limit_ns: u64,
    /// Source MAC of the last such frame.
    pub last_over_limit_mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Index into the [`COUNTERS`] array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterSlot {
    /// Frames that did not classify (too short for their headers). Every
    /// frame the program saw = these + the sum of
    /// [`VlanCounters::frames`] over all VLANs.
    Malformed,
    /// Frames carrying this anomaly.
    Anomaly(Anomaly),
}

impl CounterSlot {
    /// Slot 1 is reserved (it counted frames to a full per-MAC table, in
    /// the layout before destination slots; nothing is inserted per frame
    /// any more, so no table can be full). It stays zero.
    pub const RESERVED: u32 = 1;
    const ANOMALY_BASE: u32 = 2;

    #[inline(always)]
    pub const fn index(self) -> u32 {
        match self {
            CounterSlot::Malformed => 0,
            CounterSlot::Anomaly(a) => Self::ANOMALY_BASE + a as u32,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays, no implicit padding.
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::MacKey {}
    unsafe impl aya::Pod for super::LearnKey {}
    unsafe impl aya::Pod for super::IpKey {}
    unsafe impl aya::Pod for super::MacGuardState {}
    unsafe impl aya::Pod for super::DstKey {}
    unsafe impl aya::Pod for super::VlanCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_types_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<Counters>(), 16);
        assert_eq!(core::mem::size_of::<MacKey>(), 8);
        assert_eq!(core::mem::size_of::<LearnKey>(), 8);
        assert_eq!(core::mem::size_of::<MacGuardState>(), 40);
        assert_eq!(core::mem::size_of::<DstKey>(), 8);
        assert_eq!(core::mem::size_of::<DstCounters>(), 32);
        assert_eq!(core::mem::size_of::<VlanCounters>(), 48);
    }

    #[test]
    fn netvlan_macs_slot_by_their_last_two_bytes_and_others_by_their_last_four_folded() {
        assert_eq!(direct_slot(&[2, 0x42, 10, 0, 0, 2]), 2);
        assert_eq!(direct_slot(&[2, 0x42, 192, 168, 10, 2]), 0x0a02);
        assert_eq!(direct_slot(&[2, 0x42, 0, 0, 0xff, 0xff]), DST_CAPACITY - 1);
        assert_eq!(direct_slot(&[2, 0x43, 10, 0, 0, 2]), 0x0a02);
        assert_eq!(
            direct_slot(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            0x3444,
            "0x00 ^ 0x34, 0x12 ^ 0x56"
        );
        assert_eq!(spill_bit(0), (0, 1));
        assert_eq!(spill_bit(65), (1, 2));
        assert_eq!(spill_bit(DST_CAPACITY - 1), (DST_SPILL_WORDS - 1, 1 << 63));
    }

    struct Tables {
        direct: std::collections::HashMap<u32, DstKey>,
        hashed: std::collections::HashMap<DstKey, u32>,
        lookups: core::cell::Cell<u32>,
    }

    impl DstTables for Tables {
        fn direct(&self, slot: u32) -> Option<&DstKey> {
            self.direct.get(&slot)
        }
        fn spilled(&self, slot: u32) -> bool {
            self.hashed.keys().any(|k| direct_slot(&k.mac) == slot)
        }
        fn hashed(&self, key: &DstKey) -> Option<u32> {
            self.lookups.set(self.lookups.get() + 1);
            self.hashed.get(key).copied()
        }
    }

    #[test]
    fn a_destination_resolves_through_its_direct_slot_only_if_the_slot_holds_it() {
        let mine = DstKey {
            vid: 0,
            mac: [2, 0x42, 10, 0, 0, 2],
        };
        let same_mac_vlan_10 = DstKey { vid: 10, ..mine };
        let same_slot = DstKey {
            vid: 0,
            mac: [2, 0x42, 10, 1, 0, 2],
        };
        let user = DstKey {
            vid: 0,
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        };
        let t = Tables {
            direct: [(2, mine), (0x3444, user)].into(),
            hashed: [(same_mac_vlan_10, 7), (same_slot, 8)].into(),
            lookups: 0.into(),
        };
        let slot = |k: DstKey| dst_slot(&t, k.vid, &k.mac);
        let lookups = |f: &dyn Fn() -> Option<u32>| {
            t.lookups.set(0);
            (f(), t.lookups.get())
        };
        assert_eq!(lookups(&|| slot(mine)), (Some(2), 0));
        assert_eq!(lookups(&|| slot(user)), (Some(0x3444), 0));
        assert_eq!(lookups(&|| slot(same_mac_vlan_10)), (Some(7), 1));
        assert_eq!(lookups(&|| slot(same_slot)), (Some(8), 1));
        assert_eq!(lookups(&|| slot(DstKey { vid: 20, ..mine })), (None, 1));
        assert_eq!(
            lookups(&|| dst_slot(&t, 0, &[2, 0x42, 10, 0, 0, 3])),
            (None, 0),
            "a free slot nobody spilled from costs no lookup"
        );
        assert_eq!(
            lookups(&|| slot(DstKey { vid: 3, ..user })),
            (None, 0),
            "nor a taken one"
        );
    }

    #[test]
    fn counter_slots_are_distinct_and_fit_the_array() {
        let mut seen = std::collections::HashSet::from([CounterSlot::RESERVED]);
        let slots = [CounterSlot::Malformed]
            .into_iter()
            .chain(Anomaly::ALL.into_iter().map(CounterSlot::Anomaly));
        for slot in slots {
            assert!(slot.index() < COUNTER_SLOTS, "{slot:?} outside the array");
            assert!(seen.insert(slot.index()), "{slot:?} shares an index");
        }
    }
}
