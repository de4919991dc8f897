//! Fuzzes the one-lookup layout: registrations placed by the control
//! plane's rule (`model::Placement`: a registration in its direct slot when
//! no registration uses that slot, else in the lowest unused slot through
//! the hash with its direct slot's spill bit set), then one frame resolved by
//! the program's own `maps::dst_slot` and counted by the host model. The
//! resolved slot must say "registered" exactly when the model does, belong
//! to that registration, and every count must add up.
//!
//! Input: byte 0 = number of registrations (mod 9) and GSO segments,
//! then 8 bytes per registration (VLAN id, MAC; bit 7 of the first byte
//! makes it a netvlan `02:42` MAC), then the frame.
#![no_main]

use std::collections::{BTreeMap, HashMap, HashSet};

use libfuzzer_sys::fuzz_target;
use netvlan_common::{
    decision::{
        decide, with_mac_limit, Context, VLAN_ALLOWED, VLAN_DENY_LIST, VLAN_UNKNOWN_DST_DROP,
        VLAN_WIRE_FILTER,
    },
    frame::{classify, classify_headers, Classification, Unread},
    maps::{direct_slot, dst_slot, DstKey, DstTables, DST_CAPACITY},
    model::{Placement, WireCounters, WireModel},
};

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(head % 9);
    let packets = u64::from(head / 9 % 4) + 1;
    if rest.len() < count * 8 {
        return;
    }
    let (raw, frame) = rest.split_at(count * 8);
    let registrations: Vec<DstKey> = raw
        .chunks_exact(8)
        .map(|r| {
            let mut mac = [r[2] & 0x7e, r[3], r[4], r[5], r[6], r[7]];
            if r[2] & 0x80 != 0 {
                mac[..2].copy_from_slice(&[0x02, 0x42]);
            }
            DstKey {
                vid: u16::from_le_bytes([r[0], r[1]]) & 0xfff,
                mac,
            }
        })
        .collect();
    let tables = Placement::new(registrations.iter().copied()).unwrap();
    let slots: BTreeMap<DstKey, u32> = registrations
        .iter()
        .map(|k| (*k, tables.slot_of(k).expect("placed")))
        .collect();

    // Every registration resolves to its own slot; slots are distinct and
    // a direct slot is its holder's own.
    let distinct: HashSet<u32> = slots.values().copied().collect();
    assert_eq!(distinct.len(), slots.len());
    for (key, slot) in &slots {
        assert!(*slot < DST_CAPACITY);
        assert_eq!(dst_slot(&tables, key.vid, &key.mac), Some(*slot), "{key:?}");
        assert_eq!(tables.owner(*slot), Some(*key));
    }
    for (slot, key) in &tables.direct {
        assert_eq!(direct_slot(&key.mac), *slot);
    }
    // A hashed registration's direct slot is taken by another one (else it
    // would hold it) and has its spill bit.
    for key in tables.hashed.keys() {
        let i = direct_slot(&key.mac);
        assert!(tables.direct.get(&i) != Some(key));
        assert!(tables.spilled(i), "{key:?} in the hash without its spill bit");
    }

    let model = WireModel {
        vlans: HashMap::from([
            (0, VLAN_ALLOWED | VLAN_UNKNOWN_DST_DROP),
            (
                10,
                with_mac_limit(VLAN_ALLOWED | VLAN_UNKNOWN_DST_DROP, 4, false),
            ),
        ]),
        every_vlan: VLAN_WIRE_FILTER | VLAN_DENY_LIST,
        registered: slots.keys().copied().collect(),
        denied: HashSet::from([[2, 0, 0, 0, 0, 0x66]]),
        ..WireModel::default()
    };
    let Classification::Classified(f) = classify(frame) else {
        return;
    };
    let i = direct_slot(&f.dst);
    assert!(i < DST_CAPACITY);
    if f.dst[..2] == [0x02, 0x42] {
        assert_eq!(i, u32::from(f.dst[4]) << 8 | u32::from(f.dst[5]));
    }
    let unicast = f.dst[0] & 1 == 0;
    let resolved = if unicast {
        dst_slot(&tables, f.outer_vid, &f.dst)
    } else {
        None
    };
    let key = DstKey {
        vid: f.outer_vid,
        mac: f.dst,
    };
    assert_eq!(resolved.is_some(), model.destination(&f).is_some());
    if let Some(slot) = resolved {
        assert_eq!(slots.get(&key), Some(&slot), "the slot belongs to {key:?}");
    }

    // The program's decision (with the resolved answer) is the model's.
    let len = frame.len() as u64;
    let cx = Context {
        vlan_flags: model.vlan_flags(f.outer_vid),
        dst_registered: resolved.is_some(),
        packets,
        len,
    };
    // As the program reads it: the headers, the addresses on demand.
    let Classification::Classified(headers) = classify_headers(frame) else {
        panic!("classify_headers disagrees with classify");
    };
    let program = decide(
        &headers,
        &Unread {
            frame: &headers,
            bytes: frame,
        },
        &cx,
        &WireModel {
            registered: model.registered.clone(),
            denied: model.denied.clone(),
            ..WireModel::default()
        },
    );
    let mut counters = WireCounters::default();
    let verdict = model.run(frame, packets, &mut counters);
    assert_eq!(program, verdict);

    // Counts add up: one frame of `packets`, on its VLAN, in exactly one
    // of flood / unregistered / its destination's slot.
    assert_eq!(counters.frames().packets, packets);
    let vlan = counters.vlans[&f.outer_vid];
    let rx: u64 = counters.dsts.values().map(|d| d.rx.packets).sum();
    assert_eq!(vlan.flood.packets + vlan.unregistered.packets + rx, packets);
    assert_eq!(rx > 0, resolved.is_some());
    assert_eq!(vlan.flood.packets > 0, !unicast);
    for d in counters.dsts.values() {
        assert!(d.dropped.packets <= d.rx.packets);
    }
});
