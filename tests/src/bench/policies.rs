//! The "all policies on" configuration of the per-packet benchmark: every
//! filter the datapath has, switched on for the benchmark's frames, written
//! into the policy maps of a loaded object by the product's own
//! `policy_maps::apply`, and the verdict each frame must get (from the host
//! model in `netvlan_common::model`, which runs the same decision code the
//! program runs), so a run that took another path fails instead of timing
//! the wrong thing.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use aya::Ebpf;
use netvlan::{
    datapath::{
        policy_maps::{self, MacGuard, WirePolicy},
        NamespacePins,
    },
    sys::netns::NetnsId,
};
use netvlan_common::{
    decision::{
        with_mac_limit, Verdict, VLAN_ALLOWED, VLAN_DENY_LIST, VLAN_UNKNOWN_DST_DROP,
        VLAN_WIRE_FILTER,
    },
    maps::DstKey,
    model::{WireCounters, WireModel},
};

use super::sandbox::OwnedDir;

/// VLAN the tagged benchmark frames use (the inner one for QinQ).
const VLAN: u16 = 10;
/// Registered endpoints besides the one the "hit" frames go to.
const OTHER_ENDPOINTS: u32 = 255;
/// Denied source MACs (none of them the benchmark frames' source).
const DENIED: u32 = 64;
/// The MAC-sprawl guard's limit on untagged and VLAN 10. The frames' one
/// source MAC is learned by the first run, so the timed runs measure the
/// steady state (a lookup in the learning table per frame).
const MAX_MACS: u32 = 1024;

/// Every policy on: VLAN filtering with VLAN 10 allowed (so stacked tags
/// are dropped), unknown-destination drop and a MAC-sprawl guard on
/// untagged and VLAN 10, the hit MAC among 256 registered endpoints, 64
/// denied source MACs.
pub struct AllPolicies {
    /// What the control plane would compute for such a wire.
    policy: WirePolicy,
    /// The same policy as the maps hold it, predicting the program.
    model: WireModel,
}

impl AllPolicies {
    pub fn new(endpoint: [u8; 6]) -> Self {
        let registered: BTreeSet<[u8; 6]> = std::iter::once(endpoint)
            .chain((0..OTHER_ENDPOINTS).map(|i| mac(0x42, i)))
            .collect();
        let denied: BTreeSet<[u8; 6]> = (0..DENIED).map(|i| mac(0xde, i)).collect();
        let guard = MacGuard {
            limit: MAX_MACS,
            count_only: false,
        };
        let policy = WirePolicy {
            vlan_filter: true,
            allowed_vlans: BTreeSet::from([VLAN]),
            unknown_dst_drop_vlans: BTreeSet::from([0, VLAN]),
            // Registered on both VLANs the frames use.
            registered: [0, VLAN]
                .into_iter()
                .flat_map(|vid| registered.iter().map(move |&mac| DstKey { vid, mac }))
                .collect(),
            denied: denied.clone(),
            mac_guards: [(0, guard), (VLAN, guard)].into(),
            ..WirePolicy::default()
        };
        let model = WireModel {
            every_vlan: VLAN_WIRE_FILTER | VLAN_DENY_LIST,
            vlans: [
                (0, with_mac_limit(VLAN_UNKNOWN_DST_DROP, MAX_MACS, false)),
                (
                    VLAN,
                    with_mac_limit(VLAN_ALLOWED | VLAN_UNKNOWN_DST_DROP, MAX_MACS, false),
                ),
            ]
            .into(),
            // Each MAC on the VLANs the policy names (untagged and VLAN 10).
            registered: registered
                .iter()
                .flat_map(|&mac| [0, VLAN].map(|vid| DstKey { vid, mac }))
                .collect(),
            denied: denied.into_iter().collect(),
            ..WireModel::default()
        };
        AllPolicies { policy, model }
    }

    /// What `--help`-level text calls this configuration.
    pub fn describe(&self) -> String {
        format!(
            "VLAN filter on (VLAN {VLAN} allowed, stacked tags dropped), unknown_dst=drop and \
             max_macs={MAX_MACS} on untagged and VLAN {VLAN}, {} registered endpoint MACs, {} \
             denied source MACs",
            self.policy.registered.len(),
            self.policy.denied.len()
        )
    }

    /// Writes the configuration into a loaded object's policy maps through
    /// the product's `policy_maps::apply`: the maps are pinned where the
    /// datapath pins a wire's (in a bpffs directory of this run), written,
    /// and unpinned again (the loaded object keeps them).
    pub fn apply(&self, obj: &Ebpf, token: &str, instance: &str) -> Result<()> {
        let dir = OwnedDir::bpf(token, &format!("xdp-{instance}"));
        let netns = NetnsId::current().context("identifying the bench's namespace")?;
        let pins = NamespacePins::new(dir.path(), netns).interface(0);
        std::fs::create_dir_all(pins.dir())
            .with_context(|| format!("creating {}", pins.dir().display()))?;
        for name in netvlan_common::maps::WIRE_MAPS {
            obj.map(name)
                .with_context(|| format!("the eBPF object has no map {name}"))?
                .pin(pins.map(name))
                .with_context(|| format!("pinning {name}"))?;
        }
        policy_maps::apply(&pins, &self.policy).context("writing the wire policy")?;
        Ok(())
    }

    /// The verdict the program must give `frame`.
    pub fn expected(&self, frame: &[u8]) -> Verdict {
        self.model.run(frame, 1, &mut WireCounters::default())
    }
}

fn mac(kind: u8, i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, kind, 0xbe, b[1], b[2], b[3]]
}
