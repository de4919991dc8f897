//! The wire configurations of the per-packet benchmark, written into a
//! loaded object's maps, and the verdict each frame must get (from the
//! host model in `netvlan_common::model`, which runs the same decision
//! code the program runs), so a run that took another path fails instead
//! of timing the wrong thing.
//!
//! Both configurations register the same destinations, as the control
//! plane does for every wire (its counters need them): on each bench
//! network (untagged, VLAN 10, VLAN 100) [`frames::ENDPOINTS`] endpoints
//! of each [`MacKind`] (netvlan and user-given MACs in their direct slots,
//! user-given ones whose slot a netvlan MAC holds in the hash), and the
//! host's MAC on every VLAN (one direct, two hashed),
//! placed by the control plane's rule (`model::Placement`). The maps are
//! written from the model, the way the differential test fills them.

use anyhow::{Context, Result};
use aya::{
    maps::{Array, HashMap, MapData},
    Ebpf,
};
use netvlan_common::{
    decision::{
        with_mac_limit, Verdict, VLAN_ALLOWED, VLAN_DENY_LIST, VLAN_UNKNOWN_DST_DROP,
        VLAN_WIRE_FILTER,
    },
    maps::{DstKey, MacKey, DENY_MACS, DST_DIRECT, DST_SLOTS, DST_SPILL, VLAN_POLICY, VLAN_SLOTS},
    model::{Placement, WireCounters, WireModel},
};

use super::frames::{self, MacKind, Tagging};

/// VLAN the tagged benchmark frames use (the inner one for QinQ).
const VLAN: u16 = 10;
/// Denied source MACs (none of them the benchmark frames' source).
const DENIED: u32 = 64;
/// The MAC-sprawl guard's limit on untagged and VLAN 10. The frames' one
/// source MAC is learned by the first run, so the timed runs measure the
/// steady state (a lookup in the learning table per frame).
const MAX_MACS: u32 = 1024;
/// The host's own MAC on the wire.
const HOST_MAC: [u8; 6] = [0x0a, 0xbe, 0x00, 0x00, 0x00, 0x01];

/// One wire configuration: its registrations and policy, as the model
/// holds them.
pub struct BenchWire {
    model: WireModel,
    placement: Placement,
    policies: bool,
}

impl BenchWire {
    /// Registrations only: counting, no filter.
    pub fn policies_off() -> Self {
        Self::new(false)
    }

    /// Every policy on: VLAN filtering with VLAN 10 allowed (so stacked
    /// tags and VLAN 100 are dropped), unknown-destination drop and a
    /// MAC-sprawl guard on untagged and VLAN 10, 64 denied source MACs.
    pub fn all_policies() -> Self {
        Self::new(true)
    }

    fn new(policies: bool) -> Self {
        let registrations: Vec<DstKey> = Tagging::ALL
            .into_iter()
            .flat_map(|t| {
                MacKind::ALL.into_iter().flat_map(move |kind| {
                    (0..frames::ENDPOINTS).map(move |i| DstKey {
                        vid: t.outer_vid(),
                        mac: frames::endpoint_mac(kind, t, frames::HIT_HOST + i),
                    })
                })
            })
            .chain(Tagging::ALL.map(|t| DstKey {
                vid: t.outer_vid(),
                mac: HOST_MAC,
            }))
            .collect();
        let placement =
            Placement::new(registrations.iter().copied()).expect("the bench fits the slots");
        let mut model = WireModel {
            registered: registrations.into_iter().collect(),
            ..WireModel::default()
        };
        if policies {
            model.every_vlan = VLAN_WIRE_FILTER | VLAN_DENY_LIST;
            model.vlans = [
                (0, with_mac_limit(VLAN_UNKNOWN_DST_DROP, MAX_MACS, false)),
                (
                    VLAN,
                    with_mac_limit(VLAN_ALLOWED | VLAN_UNKNOWN_DST_DROP, MAX_MACS, false),
                ),
            ]
            .into();
            model.denied = (0..DENIED).map(|i| mac(0xde, i)).collect();
        }
        BenchWire {
            model,
            placement,
            policies,
        }
    }

    /// What `--help`-level text calls this configuration.
    pub fn describe(&self) -> String {
        let registered = format!(
            "{} registered destinations ({} in direct slots, {} hashed)",
            self.model.registered.len(),
            self.placement.direct.len(),
            self.placement.hashed.len()
        );
        if self.policies {
            format!(
                "VLAN filter on (VLAN {VLAN} allowed, stacked tags and VLAN 100 dropped), \
                 unknown_dst=drop and max_macs={MAX_MACS} on untagged and VLAN {VLAN}, \
                 {registered}, {} denied source MACs",
                self.model.denied.len()
            )
        } else {
            format!("no policy, {registered}")
        }
    }

    /// Writes the configuration into a loaded object's maps.
    pub fn apply(&self, obj: &mut Ebpf) -> Result<()> {
        if self.policies {
            let mut vlans: Array<&mut MapData, u32> = typed(obj, VLAN_POLICY)?;
            for vid in 0..VLAN_SLOTS {
                vlans.set(vid, self.model.vlan_flags(vid as u16), 0)?;
            }
        }
        let mut direct: Array<&mut MapData, DstKey> = typed(obj, DST_DIRECT)?;
        for (slot, key) in &self.placement.direct {
            direct.set(*slot, *key, 0)?;
        }
        let mut spill: Array<&mut MapData, u64> = typed(obj, DST_SPILL)?;
        for (word, bits) in &self.placement.spill {
            spill.set(*word, *bits, 0)?;
        }
        let mut hashed: HashMap<&mut MapData, DstKey, u32> = typed(obj, DST_SLOTS)?;
        for (key, slot) in &self.placement.hashed {
            hashed.insert(*key, *slot, 0)?;
        }
        let mut deny: HashMap<&mut MapData, MacKey, u32> = typed(obj, DENY_MACS)?;
        for src in &self.model.denied {
            deny.insert(MacKey::new(*src), 0, 0)?;
        }
        Ok(())
    }

    /// Whether `frame`'s destination is registered (the "hit" cases).
    pub fn resolves(&self, frame: &[u8]) -> bool {
        match netvlan_common::frame::classify(frame) {
            netvlan_common::frame::Classification::Classified(f) => {
                self.model.destination(&f).is_some()
            }
            _ => false,
        }
    }

    /// The slot of a registered destination.
    pub fn slot(&self, key: &DstKey) -> Option<u32> {
        self.placement.slot_of(key)
    }

    /// Whether a registered destination was placed in the hash.
    pub fn hashed(&self, key: &DstKey) -> bool {
        self.placement.hashed.contains_key(key)
    }

    /// The verdict the program must give `frame`.
    pub fn expected(&self, frame: &[u8]) -> Verdict {
        self.model.run(frame, 1, &mut WireCounters::default())
    }
}

fn typed<'a, T>(obj: &'a mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = obj
        .map_mut(name)
        .with_context(|| format!("the eBPF object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("{name} has another type"))
}

fn mac(kind: u8, i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, kind, 0xbe, b[1], b[2], b[3]]
}
