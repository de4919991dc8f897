//! Fuzzes the frame classifier and the policy decision together: neither
//! may panic, and what they report must be consistent with the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netvlan_common::{
    decision::{
        decide, with_mac_limit, Context, DropReason, Learning, PolicyView, Source, Verdict,
        VLAN_ALLOWED, VLAN_DENY_LIST, VLAN_UNKNOWN_DST_DROP, VLAN_UNKNOWN_IP_DROP,
        VLAN_WIRE_FILTER,
    },
    frame::{
        classify, classify_headers, Anomaly, Classification, Unread, ETH_HLEN, ETH_ZLEN, VLAN_HLEN,
    },
};

/// A policy that exercises every branch: filter on, VLAN 10 allowed with
/// unknown-destination drop and a MAC-sprawl guard of 16 MACs (sources
/// whose last byte is below 16 count as learned), one registered and two
/// denied MACs, one of them learned (denied after the guard learned it).
struct Fixed;

const DENIED: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 0x66], [2, 0, 0, 0, 0, 0x06]];

fn vlan_flags(vid: u16) -> u32 {
    VLAN_WIRE_FILTER
        | VLAN_DENY_LIST
        | match vid {
            0 => VLAN_ALLOWED | VLAN_UNKNOWN_DST_DROP | VLAN_UNKNOWN_IP_DROP,
            10 => with_mac_limit(VLAN_ALLOWED | VLAN_UNKNOWN_DST_DROP, 16, false),
            _ => 0,
        }
}

impl PolicyView for Fixed {
    fn is_denied(&self, src: &[u8; 6]) -> bool {
        DENIED.contains(src)
    }
    fn is_registered_ip(&self, ip: &[u8; 16]) -> bool {
        ip[15] == 2
    }
    fn is_gateway_ip(&self, ip: &[u8; 16]) -> bool {
        ip[15] == 1
    }
    fn source(&self, _vid: u16, src: &[u8; 6]) -> Source {
        match (src[5] < 16, self.is_denied(src)) {
            (false, _) => Source::New,
            (true, false) => Source::Learned,
            (true, true) => Source::LearnedDenied,
        }
    }
    fn learn(&self, _vid: u16, src: &[u8; 6], limit: u32, _packets: u64, _len: u64) -> Learning {
        if u32::from(src[5]) < limit {
            Learning::Known
        } else {
            Learning::OverLimit
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match classify(data) {
        Classification::Malformed(Anomaly::ShortHeader) => assert!(data.len() < ETH_HLEN),
        Classification::Malformed(Anomaly::TruncatedTag) => {
            assert!(data.len() < ETH_HLEN + 2 * VLAN_HLEN)
        }
        Classification::Malformed(other) => panic!("{other:?} is never a malformed-frame reason"),
        Classification::Classified(f) => {
            assert!(f.tags <= 2);
            assert!(f.outer_vid <= 4095 && f.inner_vid <= 4095);
            assert_eq!(
                usize::from(f.l3_offset),
                ETH_HLEN + usize::from(f.tags) * VLAN_HLEN
            );
            assert!(usize::from(f.l3_offset) <= data.len());
            assert_eq!(f.anomalies.contains(Anomaly::Runt), data.len() < ETH_ZLEN);
            assert_eq!(&data[..6], &f.dst);
            let cx = Context {
                vlan_flags: vlan_flags(f.outer_vid),
                dst_registered: f.dst == [2, 0x42, 10, 0, 0, 2],
                packets: 1,
                len: data.len() as u64,
            };
            // The program's path: the headers, the addresses on demand.
            let Classification::Classified(mut headers) = classify_headers(data) else {
                panic!("classify_headers disagrees with classify");
            };
            let lazy = decide(
                &headers,
                &Unread {
                    frame: &headers,
                    bytes: data,
                },
                &cx,
                &Fixed,
            );
            headers.read_addresses(data);
            assert_eq!(headers, f, "classify = classify_headers + read_addresses");
            let verdict = decide(&f, &f, &cx, &Fixed);
            assert_eq!(lazy, verdict);
            if let Verdict::Drop(_) = verdict {
                // Broadcast from an allowed, undenied source is never dropped.
                assert!(!(f.dst == [0xff; 6] && f.tags == 0 && !DENIED.contains(&f.src)));
            }
            if DENIED.contains(&f.src) {
                // Learned or not, a denied source is dropped as denied.
                assert_eq!(verdict, Verdict::Drop(DropReason::MacDenied));
            }
        }
    }
});
