//! `netvlan trace`: the datapath's trace events as they happen, one
//! tcpdump-like line each, JSON lines with `--json`, and with `--pcap` a
//! pcapng capture (one interface per parent and per endpoint, nanosecond
//! timestamps, original and captured lengths kept).
//!
//! Reads the programs' rings itself (the kernel filters, see
//! [`crate::control::trace`]) and puts back the trace configs it changed
//! when it ends: `--count` reached, SIGINT/SIGTERM, or an error. With a
//! daemon running it asks the daemon instead (a ring has one reader), which
//! holds the session for as long as this command reads.

use std::{
    borrow::Cow,
    collections::HashMap,
    fs::File,
    io::{BufWriter, Write},
    path::PathBuf,
    time::Duration,
};

use bytes::Bytes;
use clap::Args;
use netvlan_common::trace::{TraceHeader, TracePoint, TRACE_SNAPLEN};
use pcap_file::{
    pcapng::{
        blocks::{
            enhanced_packet::EnhancedPacketBlock,
            interface_description::{
                InterfaceDescriptionBlock, InterfaceDescriptionOption, InterfaceTsResolution,
            },
        },
        PcapNgWriter,
    },
    DataLink,
};
use tokio::sync::{broadcast, mpsc};

use super::{
    error::{CliError, Result},
    output::{err, out},
};
use crate::{
    control::trace::{plan, TargetKind, TracePlan, TraceRequest, TraceSession},
    daemon::client::{encode_segment, Client},
    datapath::{
        trace::{self as dtrace, Clock, TraceRecord},
        Datapath,
    },
};

#[derive(Args)]
pub(super) struct TraceArgs {
    /// Only dropped frames.
    #[arg(long)]
    drops: bool,
    /// Only this network's traffic: its wire (on its VLAN) and its endpoints.
    #[arg(long, value_name = "NETWORK")]
    network: Option<String>,
    /// Only this endpoint (a sandbox as connected): its own programs, and
    /// on the wire the frames to it.
    #[arg(long, value_name = "SANDBOX")]
    endpoint: Option<String>,
    /// Only frames on this outer VLAN (0: untagged).
    #[arg(long, value_name = "VID", value_parser = clap::value_parser!(u16).range(0..4095))]
    vlan: Option<u16>,
    /// Keep 1 in N matching frames (the 1st, the N+1st, ...), counted in
    /// the kernel across CPUs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    sample: u32,
    /// Stop after N events.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// One JSON object per event and line.
    #[arg(long)]
    json: bool,
    /// Also write the frames into FILE (pcapng).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
}

pub(super) async fn run(
    datapath: &Datapath,
    state_dir: &std::path::Path,
    daemon: Option<&Client>,
    args: TraceArgs,
) -> Result<()> {
    let request = TraceRequest {
        drops: args.drops,
        network: args.network.clone(),
        endpoint: args.endpoint.clone(),
        vlan: args.vlan,
        sample: args.sample,
    };
    // Planned here too: names, pcapng interfaces and the lost counters.
    let plan = plan(datapath, state_dir, &request).await?;
    let mut pcap = match &args.pcap {
        Some(path) => Some(Pcap::create(path, &plan)?),
        None => None,
    };
    let from_daemon = match daemon {
        Some(daemon) => daemon.records(&trace_path(&request)).await,
        None => None,
    };
    let (result, finished) = match from_daemon {
        Some(rx) => {
            let result = trace(&plan, Records::Daemon(rx), &args, pcap.as_mut()).await;
            (result, Ok(()))
        }
        None => {
            let session = TraceSession::start(plan)?;
            let result = match session.readers() {
                Ok(readers) => {
                    let (tx, rx) = broadcast::channel::<Bytes>(1 << 16);
                    let pump = tokio::spawn(dtrace::pump(readers, tx));
                    let result =
                        trace(session.plan(), Records::Local(rx), &args, pcap.as_mut()).await;
                    pump.abort();
                    result
                }
                Err(e) => Err(e.into()),
            };
            (result, session.finish())
        }
    };
    let flushed = pcap.map(Pcap::finish).transpose();
    let (events, lost) = result?;
    finished?;
    flushed?;
    err!("{events} event(s), {lost} lost");
    Ok(())
}

/// The daemon's `/v1/trace` for `request`.
fn trace_path(request: &TraceRequest) -> String {
    let mut query = vec![format!("sample={}", request.sample)];
    if request.drops {
        query.push("drops=true".into());
    }
    if let Some(network) = &request.network {
        query.push(format!("network={}", encode_segment(network)));
    }
    if let Some(endpoint) = &request.endpoint {
        query.push(format!("endpoint={}", encode_segment(endpoint)));
    }
    if let Some(vlan) = request.vlan {
        query.push(format!("vlan={vlan}"));
    }
    format!("/v1/trace?{}", query.join("&"))
}

/// Where the ring records come from: this command's own readers, or the
/// daemon's session.
enum Records {
    Local(broadcast::Receiver<Bytes>),
    Daemon(mpsc::Receiver<Bytes>),
}

enum Next {
    Record(Bytes),
    /// Records this reader fell behind by (counted as lost).
    Lagged(u64),
    End,
}

impl Records {
    async fn next(&mut self) -> Next {
        match self {
            Records::Local(rx) => match rx.recv().await {
                Ok(record) => Next::Record(record),
                Err(broadcast::error::RecvError::Lagged(n)) => Next::Lagged(n),
                Err(broadcast::error::RecvError::Closed) => Next::End,
            },
            Records::Daemon(rx) => rx.recv().await.map_or(Next::End, Next::Record),
        }
    }
}

/// Reads events until `--count`, a signal or an error: (events, lost).
async fn trace(
    plan: &TracePlan,
    mut records: Records,
    args: &TraceArgs,
    mut pcap: Option<&mut Pcap>,
) -> Result<(u64, u64)> {
    use tokio::signal::unix::{signal, SignalKind};
    let signal_err = |e| CliError::Trace("cannot wait for SIGINT/SIGTERM", e);
    let mut sigint = signal(SignalKind::interrupt()).map_err(signal_err)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(signal_err)?;
    let lost_before = plan.lost()?;
    let clock = Clock::now();
    err!(
        "tracing {} program(s){}{}; Ctrl-C to stop",
        plan.targets.len(),
        if matches!(records, Records::Daemon(_)) {
            " through the daemon"
        } else {
            ""
        },
        args.pcap
            .as_ref()
            .map(|p| format!(", writing {}", p.display()))
            .unwrap_or_default()
    );
    let mut events = 0u64;
    // Records the channel dropped because this reader fell behind.
    let mut lagged = 0u64;
    let outcome = loop {
        if args.count.is_some_and(|c| events >= c) {
            break Ok(());
        }
        let record = tokio::select! {
            r = records.next() => r,
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
        };
        let record = match record {
            Next::Record(record) => record,
            Next::Lagged(n) => {
                lagged += n;
                continue;
            }
            Next::End => break Ok(()),
        };
        let Some(decoded) = dtrace::decode(&record, &clock, plan) else {
            continue;
        };
        events += 1;
        if args.json {
            match serde_json::to_string(&decoded) {
                Ok(line) => out!("{line}"),
                Err(e) => break Err(CliError::Json(e)),
            }
        } else {
            out!("{}", line(&decoded));
        }
        if let Some(pcap) = pcap.as_deref_mut() {
            if let Err(e) = pcap.write(&record, &decoded) {
                break Err(e);
            }
        }
    };
    // Events the kernel wrote after we stopped reading are not lost.
    let lost = plan.lost()?.saturating_sub(lost_before) + lagged;
    outcome.map(|()| (events, lost))
}

/// One event as a line: time, where, VLAN, MACs, addresses and ports,
/// length, verdict and reason, endpoint.
fn line(r: &TraceRecord) -> String {
    let mut s = String::new();
    let time = r.time.split('T').nth(1).unwrap_or(&r.time);
    s.push_str(time.trim_end_matches('Z'));
    s.push(' ');
    s.push_str(r.parent.as_deref().unwrap_or(""));
    if r.parent.is_none() {
        s.push_str(&format!("if{}", r.ifindex));
    }
    s.push_str(&format!(" {}", r.point));
    if r.vlan != 0 {
        s.push_str(&format!(" vlan {}", r.vlan));
    }
    if let Some(inner) = r.inner_vlan {
        s.push_str(&format!(" inner-vlan {inner}"));
    }
    if let (Some(src), Some(dst)) = (&r.src_mac, &r.dst_mac) {
        s.push_str(&format!(" {src} > {dst}"));
    }
    s.push_str(&format!(" {}", r.protocol));
    if let (Some(src), Some(dst)) = (r.src_ip, r.dst_ip) {
        match (r.src_port, r.dst_port) {
            (Some(sp), Some(dp)) => s.push_str(&format!(" {src}.{sp} > {dst}.{dp}")),
            _ => s.push_str(&format!(" {src} > {dst}")),
        }
    }
    s.push_str(&format!(" len {}", r.len));
    if r.packets > 1 {
        s.push_str(&format!(" ({} frames)", r.packets));
    }
    match r.reason {
        Some(reason) => s.push_str(&format!(" DROP {reason}")),
        None => s.push_str(" pass"),
    }
    if let (Some(network), Some(endpoint)) = (&r.network, &r.endpoint) {
        s.push_str(&format!(" [{network}/{endpoint}]"));
    }
    s
}

/// The pcapng capture: one interface per parent and per endpoint traced.
struct Pcap {
    path: PathBuf,
    writer: PcapNgWriter<BufWriter<File>>,
    /// Wire ifindex -> interface id.
    wires: HashMap<u32, u32>,
    /// Endpoint tag -> interface id.
    endpoints: HashMap<u32, u32>,
}

impl Pcap {
    fn create(path: &PathBuf, plan: &TracePlan) -> Result<Pcap> {
        let io = |e| CliError::Pcap {
            path: path.clone(),
            source: Box::new(e),
        };
        let file =
            File::create(path).map_err(|e| io(pcap_file::pcapng::PcapNgWriteError::from(e)))?;
        let mut writer = PcapNgWriter::new(BufWriter::new(file)).map_err(io)?;
        let mut wires = HashMap::new();
        let mut endpoints = HashMap::new();
        for (tag, target) in plan.targets.iter().enumerate() {
            let (name, description) = match &target.kind {
                TargetKind::Wire { parent, ifindex } => {
                    wires.insert(*ifindex, wires.len() as u32 + endpoints.len() as u32);
                    (parent.clone(), format!("netvlan wire on {parent}"))
                }
                TargetKind::Endpoint { network, endpoint } => {
                    endpoints.insert(tag as u32, wires.len() as u32 + endpoints.len() as u32);
                    (
                        format!("{network}/{endpoint}"),
                        format!("netvlan endpoint {endpoint} of network {network}"),
                    )
                }
            };
            let idb = InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                // Room for a tag put back into an offloaded frame.
                snaplen: (TRACE_SNAPLEN + 4) as u32,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Owned(name)),
                    InterfaceDescriptionOption::IfDescription(Cow::Owned(description)),
                    InterfaceDescriptionOption::IfTsResol(InterfaceTsResolution::NANO),
                ],
            };
            writer.write_pcapng_block(idb).map_err(io)?;
        }
        Ok(Pcap {
            path: path.clone(),
            writer,
            wires,
            endpoints,
        })
    }

    fn write(&mut self, record: &[u8], decoded: &TraceRecord) -> Result<()> {
        let Some(header) = TraceHeader::parse(record) else {
            return Ok(());
        };
        let wire = matches!(
            TracePoint::from_u8(header.point),
            Some(TracePoint::WireXdp | TracePoint::WireTc)
        );
        let id = if wire {
            self.wires.get(&header.ifindex)
        } else {
            self.endpoints.get(&header.slot)
        };
        let Some(&interface_id) = id else {
            return Ok(());
        };
        let data = dtrace::frame_bytes(&header, record);
        let block = EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_nanos(decoded.time_ns.max(0) as u64),
            original_len: header.orig_len.max(data.len() as u32),
            data,
            options: vec![],
        };
        self.writer
            .write_pcapng_block(block)
            .map_err(|e| CliError::Pcap {
                path: self.path.clone(),
                source: Box::new(e),
            })?;
        Ok(())
    }

    fn finish(self) -> Result<()> {
        let path = self.path;
        self.writer
            .into_inner()
            .flush()
            .map_err(|e| CliError::Pcap {
                path,
                source: Box::new(e.into()),
            })
    }
}
