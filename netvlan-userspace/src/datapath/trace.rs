//! Packet traces from userspace: writing (and restoring) a program's trace
//! config, reading its ring buffer as `Bytes` records, its lost-event
//! counter, and decoding a record into a [`TraceRecord`].
//!
//! Every wire (`if-N`) and every endpoint (`egress-N`) has its own ring,
//! config and lost counter, pinned with its other maps
//! (`netvlan_common::trace`). The kernel fills in only the header; MACs,
//! IPs, protocol and ports are parsed here from the captured bytes with the
//! classifier the programs run.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use bytes::Bytes;
use netvlan_common::{
    decision::{DropReason, VLAN_TRACE},
    frame::{classify, Classification, Frame, ETH_P_8021Q, L3, VLAN_HLEN},
    maps::DstKey,
    trace::{
        traces_vlan, TraceConfig, TraceHeader, TracePoint, TRACE_CONFIG, TRACE_DROP, TRACE_LOST,
        TRACE_REASON_SPOOFED, TRACE_RING,
    },
    Mac,
};
use serde::Serialize;
use tokio::{io::unix::AsyncFd, sync::broadcast};

use super::{object, DatapathError, InterfacePins};

/// The trace config of the program pinned in `pins`.
pub fn config(pins: &InterfacePins) -> Result<TraceConfig, DatapathError> {
    let map: Array<MapData, TraceConfig> = object::open_map(pins, TRACE_CONFIG)?;
    map.get(&0, 0).map_err(object::read_err(pins, TRACE_CONFIG))
}

/// Writes the trace config of the program pinned in `pins` (its sampler
/// starts again from zero).
pub fn configure(pins: &InterfacePins, cfg: &TraceConfig) -> Result<(), DatapathError> {
    let mut map: Array<MapData, TraceConfig> = object::open_map(pins, TRACE_CONFIG)?;
    let cfg = TraceConfig { seen: 0, ..*cfg };
    map.set(0, cfg, 0)
        .map_err(object::write_err(pins, TRACE_CONFIG, None))
}

/// Marks the VLANs `cfg` can trace (`decision::VLAN_TRACE` in the wire's
/// `VLAN_POLICY`, `netvlan_common::trace::traces_vlan`) and unmarks the
/// others: the wire program reads its trace config only for frames on a
/// marked VLAN. Wires only (endpoint programs have no VLAN flags).
pub fn mark_vlans(pins: &InterfacePins, cfg: &TraceConfig) -> Result<(), DatapathError> {
    super::policy_maps::set_vlan_bit(pins, VLAN_TRACE, |vid| traces_vlan(cfg, vid))
}

/// Events the program pinned in `pins` lost to a full ring, all CPUs.
pub fn lost(pins: &InterfacePins) -> Result<u64, DatapathError> {
    let map: PerCpuArray<MapData, u64> = object::open_map(pins, TRACE_LOST)?;
    let values = map.get(&0, 0).map_err(object::read_err(pins, TRACE_LOST))?;
    Ok(values.iter().sum())
}

/// The destination slot of `mac` on VLAN `vid` on the wire pinned in
/// `pins`, if registered there.
pub fn dst_slot(pins: &InterfacePins, vid: u16, mac: Mac) -> Result<Option<u32>, DatapathError> {
    let slots = super::policy_maps::read_slots(pins)?.resolved();
    Ok(slots.get(&DstKey { vid, mac: mac.0 }).copied())
}

/// One pinned ring buffer, readable when the kernel signals new records.
pub struct RingReader {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl RingReader {
    /// Opens the ring pinned in `pins` (needs a tokio runtime).
    pub fn open(pins: &InterfacePins) -> Result<RingReader, DatapathError> {
        let ring: RingBuf<MapData> = object::open_map(pins, TRACE_RING)?;
        // SAFETY: the ring owns its map's fd, which stays open and the
        // same for as long as the ring (moved into the AsyncFd) lives.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| DatapathError::TraceRing {
                path: pins.map(TRACE_RING),
                source: e.into(),
            })?;
        Ok(RingReader { ring })
    }

    /// The records available now, each copied once out of the ring into
    /// its own `Bytes` (the ring's space is given back at once); waits for
    /// the kernel's wakeup when there are none.
    pub async fn next_batch(&mut self, out: &mut Vec<Bytes>) -> std::io::Result<()> {
        loop {
            let mut guard = self.ring.readable_mut().await?;
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                out.push(Bytes::copy_from_slice(&item));
            }
            guard.clear_ready();
            if !out.is_empty() {
                return Ok(());
            }
        }
    }
}

/// Forwards every record of `readers` into `tx` until every receiver is
/// gone or a ring cannot be read: the entry point the daemon spawns.
pub async fn pump(readers: Vec<RingReader>, tx: broadcast::Sender<Bytes>) -> std::io::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for mut reader in readers {
        let tx = tx.clone();
        tasks.spawn(async move {
            let mut batch = Vec::new();
            loop {
                reader.next_batch(&mut batch).await?;
                for record in batch.drain(..) {
                    if tx.send(record).is_err() {
                        return Ok(());
                    }
                }
            }
        });
    }
    drop(tx);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    Ok(())
}

/// Names for what a record only knows by number.
pub trait TraceNames {
    /// The parent link of a wire program's ifindex.
    fn parent(&self, ifindex: u32) -> Option<String>;
    /// The (network, endpoint) of a wire destination slot on `ifindex`, or
    /// of an endpoint program's tag.
    fn endpoint(&self, point: TracePoint, ifindex: u32, slot: u32) -> Option<(String, String)>;
}

/// No names: records keep numbers only.
pub struct NoNames;

impl TraceNames for NoNames {
    fn parent(&self, _: u32) -> Option<String> {
        None
    }
    fn endpoint(&self, _: TracePoint, _: u32, _: u32) -> Option<(String, String)> {
        None
    }
}

/// Converts the programs' `bpf_ktime_get_ns` (CLOCK_MONOTONIC) to wall
/// clock time, by the offset between the two clocks when it was made.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Clock {
        use nix::time::{clock_gettime, ClockId};
        let ns = |id| {
            clock_gettime(id)
                .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
                .unwrap_or(0)
        };
        Clock {
            offset_ns: ns(ClockId::CLOCK_REALTIME) - ns(ClockId::CLOCK_MONOTONIC),
        }
    }

    /// Nanoseconds since the Unix epoch of a monotonic time.
    pub fn wall_ns(&self, monotonic_ns: u64) -> i128 {
        i128::from(monotonic_ns) + self.offset_ns
    }
}

/// A trace event, decoded: what `netvlan trace --json` prints per line.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TraceRecord {
    /// Wall clock, RFC 3339 with nanoseconds (UTC).
    pub time: String,
    /// Wall clock, nanoseconds since the Unix epoch.
    pub time_ns: i128,
    /// `wire-xdp`, `wire-tc`, `egress` (what an endpoint sent) or
    /// `ingress` (what it received).
    pub point: &'static str,
    /// The wire's parent link (wire points).
    pub parent: Option<String>,
    pub ifindex: u32,
    pub network: Option<String>,
    pub endpoint: Option<String>,
    /// The outer VLAN (0: untagged) and the inner one of a QinQ frame.
    pub vlan: u16,
    pub inner_vlan: Option<u16>,
    pub src_mac: Option<String>,
    pub dst_mac: Option<String>,
    pub ethertype: Option<u16>,
    /// `arp`, `ipv4`, `ipv6`, `other`, or the IP protocol (`tcp`, `udp`,
    /// `icmp`, `icmpv6`, `ip-proto-N`).
    pub protocol: &'static str,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// Length on the wire, and bytes captured.
    pub len: u32,
    pub cap_len: u16,
    /// Wire frames the event stands for (a GRO'd skb).
    pub packets: u32,
    /// `pass` or `drop`.
    pub verdict: &'static str,
    /// Why it was dropped (`unknown_dst`, `mac_denied`, ..., `spoofed`).
    pub reason: Option<&'static str>,
}

/// Decodes a ring record; `None` if it is too short for a header or of an
/// unknown trace point.
pub fn decode(record: &[u8], clock: &Clock, names: &dyn TraceNames) -> Option<TraceRecord> {
    let header = TraceHeader::parse(record)?;
    let point = TracePoint::from_u8(header.point)?;
    let frame = frame_bytes(&header, record);
    let wire_ns = clock.wall_ns(header.time_ns);
    let dropped = header.verdict == TRACE_DROP;
    let mut out = TraceRecord {
        time: rfc3339(wire_ns),
        time_ns: wire_ns,
        point: point_name(point),
        parent: match point {
            TracePoint::WireXdp | TracePoint::WireTc => names.parent(header.ifindex),
            _ => None,
        },
        ifindex: header.ifindex,
        network: None,
        endpoint: None,
        vlan: header.vlan,
        inner_vlan: None,
        src_mac: None,
        dst_mac: None,
        ethertype: None,
        protocol: "other",
        src_ip: None,
        dst_ip: None,
        src_port: None,
        dst_port: None,
        len: header.orig_len,
        cap_len: header.cap_len,
        packets: header.packets,
        verdict: if dropped { "drop" } else { "pass" },
        reason: dropped.then(|| reason_name(header.reason)),
    };
    if let Some((network, endpoint)) = names.endpoint(point, header.ifindex, header.slot) {
        out.network = Some(network);
        out.endpoint = Some(endpoint);
    }
    if let Classification::Classified(f) = classify(&frame[..]) {
        fill_from_frame(&mut out, &f, &frame);
    }
    Some(out)
}

fn fill_from_frame(out: &mut TraceRecord, f: &Frame, frame: &[u8]) {
    out.src_mac = Some(Mac(f.src).to_string());
    out.dst_mac = Some(Mac(f.dst).to_string());
    out.ethertype = Some(f.ethertype);
    if f.tags > 1 {
        out.inner_vlan = Some(f.inner_vid);
    }
    let l3 = usize::from(f.l3_offset);
    let ip = |a: [u8; 16]| {
        (a != [0; 16]).then(|| {
            let v6 = Ipv6Addr::from(a);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        })
    };
    let (proto, l4) = match f.l3 {
        L3::Arp => {
            out.protocol = "arp";
            // The sender and target protocol addresses of IPv4 ARP.
            if let (Some(s), Some(t)) = (frame.get(l3 + 14..l3 + 18), frame.get(l3 + 24..l3 + 28)) {
                out.src_ip = Some(IpAddr::V4(Ipv4Addr::new(s[0], s[1], s[2], s[3])));
                out.dst_ip = Some(IpAddr::V4(Ipv4Addr::new(t[0], t[1], t[2], t[3])));
            }
            return;
        }
        L3::Other => return,
        L3::Ipv4 => {
            out.protocol = "ipv4";
            out.src_ip = ip(f.src_ip);
            out.dst_ip = ip(f.dst_ip);
            let ihl = frame.get(l3).map(|b| usize::from(b & 0x0f) * 4);
            (frame.get(l3 + 9).copied(), ihl.map(|h| l3 + h))
        }
        L3::Ipv6 => {
            out.protocol = "ipv6";
            out.src_ip = ip(f.src_ip);
            out.dst_ip = ip(f.dst_ip);
            (frame.get(l3 + 6).copied(), Some(l3 + 40))
        }
    };
    let Some(proto) = proto else {
        return;
    };
    out.protocol = match proto {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "icmpv6",
        _ => "ip",
    };
    if matches!(proto, 6 | 17) {
        if let Some(p) = l4.and_then(|at| frame.get(at..at + 4)) {
            out.src_port = Some(u16::from_be_bytes([p[0], p[1]]));
            out.dst_port = Some(u16::from_be_bytes([p[2], p[3]]));
        }
    }
}

/// The frame as it was on the wire: a tag the NIC took out of the bytes
/// (TC with receive VLAN offload) goes back in as an 802.1Q tag (its
/// priority bits are not kept), so the capture shows what was sent.
pub fn frame_bytes<'a>(header: &TraceHeader, record: &'a [u8]) -> Cow<'a, [u8]> {
    let frame = header.frame(record);
    let offloaded = header.point == TracePoint::WireTc as u8
        && header.vlan != 0
        && frame.len() >= 14
        && !netvlan_common::frame::is_vlan_tpid(u16::from_be_bytes([frame[12], frame[13]]));
    if !offloaded {
        return Cow::Borrowed(frame);
    }
    let mut with_tag = Vec::with_capacity(frame.len() + VLAN_HLEN);
    with_tag.extend_from_slice(&frame[..12]);
    with_tag.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
    with_tag.extend_from_slice(&(header.vlan & 0x0fff).to_be_bytes());
    with_tag.extend_from_slice(&frame[12..]);
    Cow::Owned(with_tag)
}

pub fn point_name(point: TracePoint) -> &'static str {
    match point {
        TracePoint::WireXdp => "wire-xdp",
        TracePoint::WireTc => "wire-tc",
        TracePoint::EndpointEgress => "egress",
        TracePoint::EndpointIngress => "ingress",
    }
}

fn reason_name(reason: u8) -> &'static str {
    if reason == TRACE_REASON_SPOOFED {
        return "spoofed";
    }
    DropReason::ALL
        .into_iter()
        .find(|r| *r as u8 == reason)
        .map_or("unknown", DropReason::name)
}

fn rfc3339(ns: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ns)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netvlan_common::trace::TRACE_PASS;

    fn record(header: TraceHeader, frame: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 32];
        // SAFETY: plain integers into a buffer of a header's size.
        unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast(), header) };
        out.extend_from_slice(frame);
        out
    }

    fn udp4_frame() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&28u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]);
        f
    }

    #[test]
    fn a_dropped_udp_frame_decodes_with_addresses_ports_and_reason() {
        let frame = udp4_frame();
        let header = TraceHeader {
            time_ns: 1,
            ifindex: 4,
            orig_len: 60,
            slot: u32::MAX,
            packets: 1,
            cap_len: frame.len() as u16,
            vlan: 0,
            point: TracePoint::WireXdp as u8,
            verdict: TRACE_DROP,
            reason: DropReason::UnknownDst as u8,
            _pad: 0,
        };
        let r = decode(&record(header, &frame), &Clock { offset_ns: 0 }, &NoNames).unwrap();
        assert_eq!(r.point, "wire-xdp");
        assert_eq!(r.src_mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(r.dst_mac.as_deref(), Some("02:00:00:00:00:02"));
        assert_eq!(r.src_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(r.dst_ip, Some("10.0.0.2".parse().unwrap()));
        assert_eq!((r.src_port, r.dst_port), (Some(12345), Some(53)));
        assert_eq!(r.protocol, "udp");
        assert_eq!((r.verdict, r.reason), ("drop", Some("unknown_dst")));
        assert_eq!((r.len, r.cap_len), (60, frame.len() as u16));
        assert_eq!(r.time, "1970-01-01T00:00:00.000000001Z");
    }

    #[test]
    fn an_offloaded_tag_goes_back_into_the_captured_bytes() {
        let frame = udp4_frame();
        let header = TraceHeader {
            cap_len: frame.len() as u16,
            vlan: 50,
            point: TracePoint::WireTc as u8,
            verdict: TRACE_PASS,
            ..TraceHeader::default()
        };
        let rec = record(header, &frame);
        let bytes = frame_bytes(&header, &rec);
        assert_eq!(bytes.len(), frame.len() + 4);
        assert_eq!(&bytes[12..16], &[0x81, 0x00, 0x00, 50]);
        assert_eq!(&bytes[16..], &frame[12..]);
        let r = decode(&rec, &Clock { offset_ns: 0 }, &NoNames).unwrap();
        assert_eq!((r.vlan, r.protocol, r.reason), (50, "udp", None));
        // At XDP the tag is in the bytes already.
        let xdp = TraceHeader {
            point: TracePoint::WireXdp as u8,
            ..header
        };
        assert_eq!(frame_bytes(&xdp, &rec).len(), frame.len());
    }
}
