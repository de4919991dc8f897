//! Family `flood`: how fast a filter on a veth parent throws away a flood
//! of frames policy must drop (unicast to an unknown MAC, frames tagged
//! with a denied VLAN), netvlan's datapath against the same rule in
//! nftables at netdev ingress, `xdp-filter`, and no filter at all.
//!
//! Each (policy, peer) pair is a lab of its own: a generator namespace
//! whose veth `g0` is the peer of the parent `p0` in the machine's
//! namespace, one filter on `p0`. Two generators flood `g0` in turn: the
//! bench's own live-frames test run ([`super::livegen`], frames arrive as
//! XDP frames, as from a NIC driver) and `trafgen` (netsniff-ng, the
//! reference generator: AF_PACKET, frames arrive as skbs). Both run on
//! CPU 0. Under the live frames `p0`'s receive path (its NAPI poll, where
//! every filter runs) runs in a NAPI thread of its own pinned to CPU 1
//! (`threaded` NAPI), so the drop rate is the filter's, not the sum of
//! generator and filter on one CPU. Under trafgen it stays in softirq on
//! CPU 0 right after each send: trafgen cannot wait for a receiver on
//! another CPU (see [`Generator::Trafgen`]). The receive side's own CPU
//! per frame is measured beside it.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::maps::{Map, MapData, MapInfo, PerCpuArray};
use indicatif::ProgressBar;
use netvlan_common::{
    decision::DropReason,
    maps::{Counters, DROPS},
};

use super::{
    ctx::Ctx,
    frames::{self, Ip, Tagging, FRAME_LEN},
    livegen::{self, LiveGen},
    model::{Basis, Better, Bound, Family, Measurement, Unavailable},
    netvlan::Netvlan,
    report::num,
    sandbox::{self, netns, package_version, try_veth_pair, Netns, OwnedDir, Process},
};

/// Destination of the unknown-destination flood: no endpoint's, not `p0`'s.
const UNKNOWN_MAC: [u8; 6] = [0x02, 0xb1, 0xde, 0xad, 0x00, 0x01];
/// `p0`'s address in every lab; the denied-VLAN flood is sent to it, so
/// only its VLAN makes it a frame to drop.
const PARENT_MAC: [u8; 6] = [0x02, 0xb2, 0x00, 0x00, 0x00, 0x01];
/// The VLAN of the denied-VLAN flood (`frames::Tagging::Dot1q`'s).
const DENIED_VLAN: u16 = 10;
/// The VLAN netvlan's allow-list names instead.
const ALLOWED_VLAN: u16 = 20;
/// Where both generators run (trafgen `-P 1` pins its one worker there).
const GEN_CPU: usize = 0;
/// Where `p0`'s NAPI thread, and with it every filter, runs.
const FILTER_CPU: usize = 1;
/// Its SCHED_FIFO priority (the kernel's default for threaded IRQs).
const NAPI_PRIORITY: i32 = 50;
const NFT_TABLE: &str = "nvbflood";
/// A counter read that takes longer than this is taken again (a reading
/// is dated at its middle; a slow one would blur the window's edges).
const MAX_READ: Duration = Duration::from_millis(20);
/// xdp-filter's per-action statistics map (index = XDP action).
const XDP_STATS_MAP: &str = "xdp_stats_map";
const XDP_DROP: u32 = 1;

const NETVLAN: &str = "netvlan";
const NFTABLES: &str = "nftables (netdev ingress)";
const XDP_FILTER: &str = "xdp-filter";
const NO_FILTER: &str = "no filter";
const DROPPED: &str = "dropped by the filter";
const RECEIVED: &str = "received at the parent";
const CPU: &str = "receive CPU per frame";
const GOAL: &str = ">= 3x nftables";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    UnknownDst,
    DeniedVlan,
}

impl Policy {
    const ALL: [Policy; 2] = [Policy::UnknownDst, Policy::DeniedVlan];

    fn name(self) -> &'static str {
        match self {
            Policy::UnknownDst => "unknown dst",
            Policy::DeniedVlan => "denied VLAN",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Policy::UnknownDst => "ud",
            Policy::DeniedVlan => "dv",
        }
    }

    /// The flood's one frame, 64 bytes as XDP sees it.
    fn frame(self) -> Vec<u8> {
        match self {
            Policy::UnknownDst => frames::frame(UNKNOWN_MAC, Tagging::Untagged, Ip::V4),
            Policy::DeniedVlan => frames::frame(PARENT_MAC, Tagging::Dot1q, Ip::V4),
        }
    }

    /// What the flood is, for the report.
    fn describe(self) -> String {
        match self {
            Policy::UnknownDst => format!(
                "untagged IPv4/UDP to {}, a MAC that is neither an endpoint's nor p0's",
                frames::mac_string(&UNKNOWN_MAC)
            ),
            Policy::DeniedVlan => format!(
                "802.1Q VLAN {DENIED_VLAN} IPv4/UDP to p0's own MAC {}",
                frames::mac_string(&PARENT_MAC)
            ),
        }
    }

    fn netvlan_option(self) -> String {
        match self {
            Policy::UnknownDst => "unknown_dst=drop".into(),
            Policy::DeniedVlan => format!("vlans={ALLOWED_VLAN}"),
        }
    }

    /// The drop reason netvlan counts the flood under.
    fn netvlan_reason(self) -> DropReason {
        match self {
            Policy::UnknownDst => DropReason::UnknownDst,
            Policy::DeniedVlan => DropReason::VlanNotAllowed,
        }
    }

    fn nft_match(self) -> String {
        match self {
            Policy::UnknownDst => format!("ether daddr {}", frames::mac_string(&UNKNOWN_MAC)),
            Policy::DeniedVlan => format!("vlan id {DENIED_VLAN}"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Peer {
    Netvlan,
    Nftables,
    XdpFilter,
    NoFilter,
}

impl Peer {
    const ALL: [Peer; 4] = [
        Peer::Netvlan,
        Peer::Nftables,
        Peer::XdpFilter,
        Peer::NoFilter,
    ];

    fn name(self) -> &'static str {
        match self {
            Peer::Netvlan => NETVLAN,
            Peer::Nftables => NFTABLES,
            Peer::XdpFilter => XDP_FILTER,
            Peer::NoFilter => NO_FILTER,
        }
    }

    fn short(self) -> &'static str {
        match self {
            Peer::Netvlan => "nv",
            Peer::Nftables => "nf",
            Peer::XdpFilter => "xf",
            Peer::NoFilter => "no",
        }
    }

    /// Why this peer cannot take part in a policy's flood, if it cannot.
    fn unavailable(self, policy: Policy) -> Option<&'static str> {
        match (self, policy) {
            (Peer::XdpFilter, Policy::DeniedVlan) => Some(
                "xdp-filter has no VLAN rule (its rules match ports, IPv4/IPv6 addresses and \
                 MACs), so it has no rule equivalent to a VLAN allow-list",
            ),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Generator {
    /// p0's receive path on [`FILTER_CPU`], the generator on [`GEN_CPU`].
    LiveFrames,
    /// Both on [`GEN_CPU`]: the skbs waiting in p0's ring for a receiver
    /// elsewhere stay charged to trafgen's socket, whose send buffer (the
    /// host's `net.core.wmem_default`, read-only inside a namespace; the
    /// bench never changes the host's) fills, and trafgen exits on the
    /// EAGAIN that follows.
    Trafgen,
}

impl Generator {
    const ALL: [Generator; 2] = [Generator::LiveFrames, Generator::Trafgen];

    fn name(self) -> &'static str {
        match self {
            Generator::LiveFrames => "live frames",
            Generator::Trafgen => "trafgen",
        }
    }
}

fn case_name(policy: Policy, generator: Generator) -> String {
    format!("{}, {}", policy.name(), generator.name())
}

fn rounds(ctx: &Ctx) -> usize {
    ctx.pick(3, 7)
}

/// How long the generator runs before the window opens.
fn warmup(ctx: &Ctx) -> Duration {
    Duration::from_millis(ctx.pick(200, 500))
}

/// The measured window of one run.
fn window(ctx: &Ctx) -> Duration {
    Duration::from_millis(ctx.pick(600, 2000))
}

/// The (policy, peer) labs, in the order they are built and measured.
fn lab_keys() -> Vec<(Policy, Peer)> {
    Policy::ALL
        .into_iter()
        .flat_map(|policy| Peer::ALL.into_iter().map(move |peer| (policy, peer)))
        .filter(|(policy, peer)| peer.unavailable(*policy).is_none())
        .collect()
}

pub fn steps(ctx: &Ctx) -> u64 {
    (rounds(ctx) * Generator::ALL.len() * lab_keys().len()) as u64
}

/// One run's figures: rates in Mpps, CPU in ns per received frame, loss
/// in % of what was sent.
struct Sample {
    sent: f64,
    lost_pct: f64,
    received: f64,
    dropped: Option<f64>,
    cpu_ns: f64,
}

/// Per-round samples of one (lab, generator).
#[derive(Default)]
struct Series {
    sent: Vec<f64>,
    lost_pct: Vec<f64>,
    received: Vec<f64>,
    dropped: Vec<f64>,
    cpu_ns: Vec<f64>,
}

pub fn run(ctx: &Ctx, bar: &ProgressBar) -> Result<Family> {
    let scratch = OwnedDir::temp(&ctx.token, "fl-scratch")?;
    let mut labs = Vec::new();
    for (policy, peer) in lab_keys() {
        bar.set_message(format!(
            "building the {} lab for {}",
            peer.name(),
            policy.name()
        ));
        labs.push(
            Lab::build(ctx, policy, peer, scratch.path())
                .with_context(|| format!("{} lab for {}", peer.name(), policy.name()))?,
        );
    }
    let rounds = rounds(ctx);
    let (warmup, window) = (warmup(ctx), window(ctx));
    // series[generator][lab]
    let mut series: Vec<Vec<Series>> = Generator::ALL
        .iter()
        .map(|_| labs.iter().map(|_| Series::default()).collect())
        .collect();
    for round in 0..rounds {
        // Every lab of a policy back to back, for each generator in turn:
        // a busy moment of the shared machine hits all peers of a case.
        for (g, generator) in Generator::ALL.into_iter().enumerate() {
            for (l, lab) in labs.iter().enumerate() {
                bar.set_message(format!(
                    "round {}/{rounds}: {} flood on {}",
                    round + 1,
                    case_name(lab.policy, generator),
                    lab.peer.name()
                ));
                let s = lab.measure(generator, warmup, window).with_context(|| {
                    format!(
                        "{} under the {} flood",
                        lab.peer.name(),
                        case_name(lab.policy, generator)
                    )
                })?;
                let out = &mut series[g][l];
                out.sent.push(s.sent);
                out.lost_pct.push(s.lost_pct);
                out.received.push(s.received);
                out.cpu_ns.push(s.cpu_ns);
                if let Some(d) = s.dropped {
                    out.dropped.push(d);
                }
                super::progress::tick(bar)?;
            }
        }
    }

    for lab in &labs {
        lab.check_netvlan_stats()?;
    }

    let mut family = Family {
        key: "flood",
        title: "Flood drop rate",
        method: method(ctx, &labs),
        measurements: Vec::new(),
        comparisons: Vec::new(),
        unavailable: Policy::ALL
            .into_iter()
            .flat_map(|policy| {
                Peer::ALL.into_iter().filter_map(move |peer| {
                    peer.unavailable(policy).map(|why| {
                        Unavailable::new(&format!("{}, {}", peer.name(), policy.name()), why)
                    })
                })
            })
            .collect(),
    };
    let runs = format!(
        "{rounds} rounds of a {:.1} s window after {:.1} s of warm-up",
        window.as_secs_f64(),
        warmup.as_secs_f64()
    );
    for (g, generator) in Generator::ALL.into_iter().enumerate() {
        for (l, lab) in labs.iter().enumerate() {
            let s = std::mem::take(&mut series[g][l]);
            let case = case_name(lab.policy, generator);
            let who = lab.peer.name();
            if lab.peer != Peer::NoFilter {
                family.measurements.push(Measurement::new(
                    who,
                    &case,
                    DROPPED,
                    "Mpps",
                    Better::Higher,
                    s.dropped,
                    format!("{}; {runs}", lab.counter),
                )?);
            }
            family.measurements.push(
                Measurement::new(
                    who,
                    &case,
                    RECEIVED,
                    "Mpps",
                    Better::Higher,
                    s.received,
                    format!("p0's rx_packets; {}; {runs}", lab.rule),
                )?
                .with_aux("sent by the generator", "Mpps", &s.sent)?
                .with_aux("lost before the parent", "%", &s.lost_pct)?,
            );
            family.measurements.push(Measurement::new(
                who,
                &case,
                CPU,
                "ns",
                Better::Lower,
                s.cpu_ns,
                match generator {
                    Generator::LiveFrames => format!(
                        "run time of p0's NAPI thread on CPU {FILTER_CPU} (/proc/PID/schedstat) \
                         over the window / frames received; {runs}"
                    ),
                    Generator::Trafgen => format!(
                        "softirq time of all CPUs (/proc/stat) over the window / frames \
                         received; {runs}"
                    ),
                },
            )?);
        }
    }
    for policy in Policy::ALL {
        for generator in Generator::ALL {
            let case = case_name(policy, generator);
            let note = goal_note(&family, &case)?;
            family
                .compare(NETVLAN, NFTABLES, &case, DROPPED, Basis::Paired)?
                .set_goal(GOAL, Bound::AtLeast(3.0), Some(&note));
            let has_xdp_filter = Peer::XdpFilter.unavailable(policy).is_none();
            if has_xdp_filter {
                family.compare(NETVLAN, XDP_FILTER, &case, DROPPED, Basis::Paired)?;
            }
            family.compare(NETVLAN, NFTABLES, &case, CPU, Basis::Paired)?;
            if has_xdp_filter {
                family.compare(NETVLAN, XDP_FILTER, &case, CPU, Basis::Paired)?;
            }
            family.compare(NETVLAN, NO_FILTER, &case, CPU, Basis::Paired)?;
        }
    }
    Ok(family)
}

/// What the goal's verdict rests on: whether anything was lost before the
/// filters (else the generator set the pace), and the receive side's own
/// share of each frame's time.
fn goal_note(family: &Family, case: &str) -> Result<String> {
    let median = |who: &str, metric: &str| -> Result<f64> {
        Ok(family.measurement(who, case, metric)?.summary.median)
    };
    let mut lost = Vec::new();
    for who in [NETVLAN, NFTABLES] {
        let m = family.measurement(who, case, RECEIVED)?;
        let pct = m
            .aux
            .iter()
            .find(|a| a.name == "lost before the parent")
            .map(|a| a.summary.median)
            .with_context(|| format!("{who} / {case}: no loss figure"))?;
        if pct > 0.5 {
            lost.push(format!(
                "{who} lost {:.1}% of the flood before the filter",
                pct
            ));
        }
    }
    let per_frame = |who: &str| -> Result<String> {
        Ok(format!(
            "{who} {} of {} ns",
            num(median(who, CPU)?),
            num(1e3 / median(who, DROPPED)?)
        ))
    };
    let cpu_ratio = median(NFTABLES, CPU)? / median(NETVLAN, CPU)?;
    let head = if lost.is_empty() {
        "generator-bound: nothing was lost before the filters, each dropped all the \
         generator sent, so the generator set the pace"
            .to_string()
    } else {
        lost.join("; ")
    };
    Ok(format!(
        "{head}; per dropped frame, receive side of all: {}, {}; receive side \
         alone, nftables / netvlan: {}x",
        per_frame(NETVLAN)?,
        per_frame(NFTABLES)?,
        num(cpu_ratio)
    ))
}

fn method(ctx: &Ctx, labs: &[Lab]) -> Vec<String> {
    let mut lines = vec![
        format!(
            "Per (policy, peer) a lab: namespace `gen` with veth g0, its peer p0 (MAC {}) in \
             namespace `dut`, the parent the filter sits on; IPv6 off; VLAN offload off on \
             both ends; GRO on on p0 for every peer (veth then hands frames to p0's NAPI poll, \
             as a NIC driver does; XDP does the same by itself).",
            frames::mac_string(&PARENT_MAC)
        ),
        format!(
            "Floods ({FRAME_LEN}-byte frames as XDP sees them): unknown dst = {}; denied VLAN \
             = {}.",
            Policy::UnknownDst.describe(),
            Policy::DeniedVlan.describe()
        ),
        format!(
            "live frames: the bench's own generator, BPF_PROG_TEST_RUN with \
             BPF_F_TEST_XDP_LIVE_FRAMES (batch {}, one endless call ended by a signal) of a \
             small XDP program that writes the flood's frame into each copy (live frames are \
             recycled with whatever the receiver left in them) and redirects it out of g0, \
             from a thread in `gen` pinned to CPU {GEN_CPU}; p0 receives XDP frames (no skb \
             until a peer without XDP builds one).",
            livegen::BATCH,
        ),
        format!(
            "trafgen: netsniff-ng {} (`trafgen -o g0 -i FLOOD.cfg -P 1 --no-sock-mem \
             --notouch-irq -C`, one worker pinned by trafgen to CPU {GEN_CPU}, AF_PACKET \
             TX_RING without the qdisc) in `gen`; p0 receives skbs.",
            package_version("netsniff-ng")
        ),
    ];
    for lab in labs {
        lines.push(format!(
            "{} for {}: {}; dropped = {}.",
            lab.peer.name(),
            lab.policy.name(),
            lab.rule,
            lab.counter
        ));
    }
    lines.extend([
        format!(
            "Each run starts the generator, waits {:.1} s, then reads every counter at the \
             start and at the end of a {:.1} s window; each rate is the counter's difference \
             over the time between its own two readings (each dated at its middle, and taken \
             again if it took over {} ms). Link counters come from /proc/net/dev of the \
             namespace: sent = g0's tx_packets + tx_dropped (veth counts there what it passed \
             to p0 and what p0's full ring refused, the `lost before the parent`), received = \
             p0's rx_packets. {} rounds; in each round every \
             generator floods every lab, the labs of a policy back to back (ratios are \
             medians of per-round ratios). Every run checks that the filter dropped at least \
             97% of what p0 received.",
            warmup(ctx).as_secs_f64(),
            window(ctx).as_secs_f64(),
            MAX_READ.as_millis(),
            rounds(ctx)
        ),
        format!(
            "Live frames: p0's receive path (NAPI poll: the XDP program, or the skb path \
             with nftables' ingress hook and the stack) runs in p0's NAPI thread (`threaded` \
             NAPI, turned on for the run), pinned with sched_setaffinity to CPU {FILTER_CPU} \
             and made SCHED_FIFO {NAPI_PRIORITY} (softirq work, which it replaces, preempts \
             every process too), while the generator runs on CPU {GEN_CPU}: the drop rate is what the filter \
             keeps up with (what it cannot take, veth's ring refuses: `lost before the \
             parent`), not the generator's pace with the filter's cost added. `receive CPU \
             per frame` is that thread's run time (/proc/PID/schedstat, ns) over the window \
             divided by the frames p0 received."
        ),
        format!(
            "trafgen: the kernel runs p0's receive path in softirq on CPU {GEN_CPU} right \
             after each batch trafgen sends, so generator and filter share that CPU (the drop \
             rate is trafgen's pace with the filter's cost added): the skbs waiting in p0's \
             ring for a receiver on another CPU stay charged to trafgen's socket, whose send \
             buffer (the host's net.core.wmem_default, read-only in a namespace, never \
             changed by the bench: hence --no-sock-mem) fills, and trafgen exits on EAGAIN. \
             `receive CPU per frame` is the softirq time of all CPUs in /proc/stat \
             (tick-sampled; includes the machine's other softirq work, about 1% of a CPU) \
             divided by the frames p0 received."
        ),
        "With trafgen p0 receives skbs, and veth has to make each one an XDP buffer before \
         an XDP program can run on it (a copy into a page of its own when the skb lacks XDP's \
         headroom, as a socket's skbs do): the XDP peers pay that, nftables and the stack do \
         not. That is veth's: a NIC driver runs XDP before any skb exists, which is what the \
         live-frames generator reproduces."
            .into(),
        "no filter: nothing on p0; the stack discards the frames itself (not for this host, \
         or tagged for a VLAN without a VLAN device), so it has received but no dropped \
         figure."
            .into(),
    ]);
    lines
}

/// One (policy, peer) pair's namespaces and filter. Fields drop in order:
/// the maps netvlan's and xdp-filter's programs count in and netvlan's
/// state and pins first, then the namespaces (which take the links,
/// programs and nftables with them).
struct Lab {
    policy: Policy,
    peer: Peer,
    /// The rule the peer got, as configured.
    rule: String,
    /// Where its drop counter comes from.
    counter: String,
    /// trafgen's configuration: the flood's frame.
    trafgen_cfg: std::path::PathBuf,
    /// netvlan's pinned DROPS map.
    netvlan_drops: Option<PerCpuArray<MapData, Counters>>,
    /// xdp-filter's per-action statistics.
    xdp_stats: Option<PerCpuArray<MapData, [u64; 2]>>,
    netvlan: Option<Netvlan>,
    /// Link counters of `gen` and `dut`.
    gen_dev: NetDev,
    dut_dev: NetDev,
    gen: Netns,
    dut: Netns,
}

impl Lab {
    fn build(ctx: &Ctx, policy: Policy, peer: Peer, scratch: &Path) -> Result<Self> {
        let kind = |role: &str| format!("fl-{}{}-{role}", policy.short(), peer.short());
        let gen = netns(&ctx.token, &kind("gen"), false)?;
        let dut = netns(&ctx.token, &kind("dut"), false)?;
        try_veth_pair(&gen, "g0", &dut, "p0")?;
        dut.run(
            "ip",
            &[
                "link",
                "set",
                "p0",
                "address",
                &frames::mac_string(&PARENT_MAC),
            ],
        )?;
        gen.run("ethtool", &["-K", "g0", "rxvlan", "off", "txvlan", "off"])?;
        dut.run(
            "ethtool",
            &["-K", "p0", "rxvlan", "off", "txvlan", "off", "gro", "on"],
        )?;
        let frame = policy.frame();
        if policy == Policy::DeniedVlan && frame[12..16] != [0x81, 0x00, 0, DENIED_VLAN as u8] {
            bail!("the denied-VLAN frame is not tagged with VLAN {DENIED_VLAN}");
        }
        let trafgen_cfg = scratch.join(format!("{}.cfg", policy.short()));
        let bytes: Vec<String> = frame.iter().map(|b| format!("0x{b:02x}")).collect();
        std::fs::write(&trafgen_cfg, format!("{{ {} }}\n", bytes.join(", ")))
            .with_context(|| format!("writing {}", trafgen_cfg.display()))?;
        let mut lab = Lab {
            policy,
            peer,
            rule: String::new(),
            counter: String::new(),
            trafgen_cfg,
            netvlan_drops: None,
            xdp_stats: None,
            netvlan: None,
            gen_dev: NetDev::open(&gen)?,
            dut_dev: NetDev::open(&dut)?,
            gen,
            dut,
        };
        match peer {
            Peer::Netvlan => lab.wire_netvlan(ctx)?,
            Peer::Nftables => lab.wire_nftables()?,
            Peer::XdpFilter => lab.wire_xdp_filter()?,
            Peer::NoFilter => {
                lab.rule = "nothing attached to p0".into();
                lab.counter = "none".into();
            }
        }
        Ok(lab)
    }

    fn wire_netvlan(&mut self, ctx: &Ctx) -> Result<()> {
        let kind = format!("fl-{}", self.policy.short());
        let netvlan = Netvlan::new(&ctx.netvlan, &self.dut, &ctx.token, &kind)?;
        let option = self.policy.netvlan_option();
        // The flood measures the XDP filter against nftables' netdev ingress
        // and xdp-filter: ask for XDP (auto would pick TC on this veth).
        let args = netvlan.create_bench_network("172.31.250.0/24", "p0", &[&option, "hook=xdp"])?;
        let link = self.dut.try_link_json("p0")?;
        // `ip -j` reports mode 1 for a driver (native) attachment.
        if link["xdp"]["prog"]["id"].as_u64().is_none() || link["xdp"]["mode"].as_u64() != Some(1) {
            bail!(
                "netvlan's datapath is not attached to p0 in native mode: {}",
                link["xdp"]
            );
        }
        let pins = super::observe::find_pin_dir(netvlan.bpf_dir())?;
        let map = Map::from_map_data(
            MapData::from_pin(pins.join(DROPS))
                .with_context(|| format!("opening netvlan's pinned {DROPS}"))?,
        )?;
        self.netvlan_drops = Some(
            PerCpuArray::try_from(map)
                .with_context(|| format!("{DROPS} is not a per-CPU array"))?,
        );
        self.rule = format!("`netvlan {args}` (no endpoints; XDP program on p0, native mode)");
        self.counter = format!(
            "netvlan's {DROPS} map, slot {} (read from its pin; equal to `netvlan stats \
             --json` drops.{}, checked after the run)",
            self.policy.netvlan_reason().name(),
            self.policy.netvlan_reason().name()
        );
        self.netvlan = Some(netvlan);
        Ok(())
    }

    fn wire_nftables(&mut self) -> Result<()> {
        let rule = format!(
            "add rule netdev {NFT_TABLE} ingress {} counter drop",
            self.policy.nft_match()
        );
        let chain = format!(
            "add chain netdev {NFT_TABLE} ingress {{ type filter hook ingress device \"p0\" \
             priority 0 ; policy accept ; }}"
        );
        for cmd in [format!("add table netdev {NFT_TABLE}"), chain, rule.clone()] {
            self.dut
                .run("nft", &[&cmd])
                .context("the nftables peer cannot be set up")?;
        }
        self.rule = format!(
            "nftables {}: a netdev table with an ingress chain on p0 (priority 0, policy \
             accept) and one rule, `nft {rule}`",
            package_version("nftables")
        );
        self.counter = "the rule's counter (`nft -j list chain`)".into();
        Ok(())
    }

    fn wire_xdp_filter(&mut self) -> Result<()> {
        let info = super::xdp::load_xdp_filter(&self.dut, "p0", &[UNKNOWN_MAC])?;
        let ids = info
            .map_ids()
            .context("reading xdp-filter's map ids")?
            .context("the kernel lists no maps for xdp-filter's program")?;
        let mut stats = None;
        for id in ids {
            if MapInfo::from_id(id)?.name_as_str() == Some(XDP_STATS_MAP) {
                let map = Map::from_map_data(MapData::from_id(id)?)?;
                stats = Some(
                    PerCpuArray::try_from(map)
                        .with_context(|| format!("{XDP_STATS_MAP} is not a per-CPU array"))?,
                );
            }
        }
        self.xdp_stats =
            Some(stats.with_context(|| format!("xdp-filter's program has no {XDP_STATS_MAP}"))?);
        self.rule = format!(
            "xdp-filter {} (`xdp-filter load --mode native --features ethernet p0`, default \
             allow, then `xdp-filter ether {} --mode dst`)",
            package_version("xdp-tools"),
            frames::mac_string(&UNKNOWN_MAC)
        );
        self.counter = format!(
            "xdp-filter's own {XDP_STATS_MAP}[XDP_DROP], read by map id ({})",
            info.name_as_str().unwrap_or("?")
        );
        Ok(())
    }

    /// One run: the generator floods g0, the counters are read around a
    /// window, the generator is stopped.
    fn measure(&self, generator: Generator, warmup: Duration, window: Duration) -> Result<Sample> {
        let frame = self.policy.frame();
        let before = self.totals()?;
        let (a, b) = match generator {
            Generator::LiveFrames => {
                let receiver = NapiThread::start(&self.dut, "p0", FILTER_CPU)?;
                let mut gen = LiveGen::start(&self.gen, "g0", &frame, GEN_CPU)?;
                let (a, b) = self.window(warmup, window, Some(&receiver), &mut || {
                    gen.check_running()?;
                    receiver.check()
                })?;
                gen.finish()?;
                receiver.stop()?;
                (a, b)
            }
            Generator::Trafgen => {
                let mut cmd = self.gen.command("trafgen");
                cmd.args(["-o", "g0", "-i"]).arg(&self.trafgen_cfg).args([
                    "-P",
                    "1",
                    "--no-sock-mem",
                    "--notouch-irq",
                    "-C",
                ]);
                let mut trafgen = Process::spawn_group(&mut cmd, "trafgen")?;
                self.window(warmup, window, None, &mut || trafgen.check_running())?
            }
        };
        let received = rate(&a.received, &b.received);
        if b.received.value.saturating_sub(a.received.value) < 1000 {
            bail!("p0 received almost nothing: the flood did not arrive");
        }
        let sent = rate(&a.sent, &b.sent);
        let refused = b.refused.saturating_sub(a.refused) as f64;
        let offered = b.sent.value.saturating_sub(a.sent.value) as f64;
        // Whether the rule matches the flood is judged on whole-run totals
        // read once p0 is quiet, not on the window's rates: those come from
        // counters read at different instants (nft's listing is a process
        // spawn, slow under load), which skewed the ratio by up to 15%.
        let after = self.settled_totals()?;
        if let (Some(d0), Some(d1)) = (before.1, after.1) {
            let (got, gone) = (after.0 - before.0, d1 - d0);
            if (gone as f64) < 0.97 * got as f64 {
                bail!(
                    "{} dropped {gone} of the {got} frames p0 received: its rule does not match \
                     the flood",
                    self.peer.name()
                );
            }
        }
        let dropped = match (&a.dropped, &b.dropped) {
            (Some(da), Some(db)) => Some(rate(da, db) / 1e6),
            _ => None,
        };
        Ok(Sample {
            sent: sent / 1e6,
            lost_pct: refused / offered * 100.0,
            received: received / 1e6,
            dropped,
            cpu_ns: rate(&a.receive_ns, &b.receive_ns) / received,
        })
    }

    /// Waits out the warm-up, then reads the counters at both ends of the
    /// window; `alive` fails if the generator died meanwhile.
    /// `receiver`: p0's NAPI thread, whose run time is the receive side's
    /// CPU (else the softirq time of all CPUs is).
    fn window(
        &self,
        warmup: Duration,
        window: Duration,
        receiver: Option<&NapiThread>,
        alive: &mut dyn FnMut() -> Result<()>,
    ) -> Result<(Snapshot, Snapshot)> {
        std::thread::sleep(warmup);
        alive()?;
        let a = self.snapshot(receiver)?;
        std::thread::sleep(window);
        let b = self.snapshot(receiver)?;
        alive()?;
        Ok((a, b))
    }

    fn snapshot(&self, receiver: Option<&NapiThread>) -> Result<Snapshot> {
        // Sent: what reached g0 (veth counts on g0's tx side the frames it
        // passed to p0 and those p0's full ring refused), for both
        // generators.
        let mut refused = 0;
        let sent = Reading::take(|| {
            let s = self.gen_dev.read("g0")?;
            refused = s.tx_dropped;
            Ok(s.tx_packets + s.tx_dropped)
        })?;
        Ok(Snapshot {
            sent,
            refused,
            received: Reading::take(|| Ok(self.dut_dev.read("p0")?.rx_packets))?,
            dropped: match self.peer {
                Peer::NoFilter => None,
                _ => Some(Reading::take(|| self.dropped())?),
            },
            receive_ns: Reading::take(|| match receiver {
                Some(thread) => thread.run_ns(),
                None => softirq_ns(),
            })?,
        })
    }

    /// p0's received frames and the filter's drops (if it counts any).
    fn totals(&self) -> Result<(u64, Option<u64>)> {
        let received = self.dut_dev.read("p0")?.rx_packets;
        let dropped = match self.peer {
            Peer::NoFilter => None,
            _ => Some(self.dropped()?),
        };
        Ok((received, dropped))
    }

    /// [`Self::totals`] once p0 has received nothing for 100 ms (the
    /// generator is stopped; its last frames drain), at most 5 s.
    fn settled_totals(&self) -> Result<(u64, Option<u64>)> {
        let give_up = Instant::now() + Duration::from_secs(5);
        let mut last = self.dut_dev.read("p0")?.rx_packets;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.dut_dev.read("p0")?.rx_packets;
            if now == last || Instant::now() > give_up {
                return self.totals();
            }
            last = now;
        }
    }

    /// The filter's own count of frames it dropped.
    fn dropped(&self) -> Result<u64> {
        match self.peer {
            Peer::Netvlan => {
                let drops = self.netvlan_drops.as_ref().context("no netvlan map")?;
                let reason = self.policy.netvlan_reason() as u32;
                Ok(drops.get(&reason, 0)?.iter().map(|c| c.packets).sum())
            }
            Peer::Nftables => {
                let out = self.dut.run(
                    "nft",
                    &["-j", "list", "chain", "netdev", NFT_TABLE, "ingress"],
                )?;
                let v: serde_json::Value =
                    serde_json::from_slice(&out.stdout).context("nft -j printed no JSON")?;
                v["nftables"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["rule"]["expr"].as_array())
                    .flatten()
                    .find_map(|x| x["counter"]["packets"].as_u64())
                    .context("the nftables rule has no counter")
            }
            Peer::XdpFilter => {
                let stats = self.xdp_stats.as_ref().context("no xdp-filter stats")?;
                Ok(stats.get(&XDP_DROP, 0)?.iter().map(|v| v[0]).sum())
            }
            Peer::NoFilter => bail!("no filter, no drop counter"),
        }
    }

    /// netvlan's own report agrees with the map the bench read.
    fn check_netvlan_stats(&self) -> Result<()> {
        let Some(netvlan) = &self.netvlan else {
            return Ok(());
        };
        let reason = self.policy.netvlan_reason();
        let stats: serde_json::Value = serde_json::from_str(&netvlan.run(&["stats", "--json"])?)
            .context("netvlan stats --json printed no JSON")?;
        let iface = stats["interfaces"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["ifname"] == "p0"))
            .context("netvlan stats lists no p0")?;
        let reported = iface["drops"][reason.name()]["rx_packets"]
            .as_u64()
            .with_context(|| format!("netvlan stats has no {} drop counter", reason.name()))?;
        let read = self.dropped()?;
        if reported != read || reported == 0 {
            bail!(
                "netvlan stats reports {reported} {} drops, the bench read {read} from the map",
                reason.name()
            );
        }
        Ok(())
    }
}

/// One counter's value and when it was read (the middle of the read).
struct Reading {
    at: Instant,
    value: u64,
}

impl Reading {
    /// Reads until a read takes at most [`MAX_READ`] (five tries).
    fn take(mut read: impl FnMut() -> Result<u64>) -> Result<Self> {
        let mut tries = 0;
        loop {
            let start = Instant::now();
            let value = read()?;
            let end = Instant::now();
            tries += 1;
            if end - start <= MAX_READ || tries == 5 {
                return Ok(Reading {
                    at: start + (end - start) / 2,
                    value,
                });
            }
        }
    }
}

/// Per second between two readings of one counter.
fn rate(a: &Reading, b: &Reading) -> f64 {
    b.value.saturating_sub(a.value) as f64 / b.at.duration_since(a.at).as_secs_f64()
}

struct Snapshot {
    /// g0's tx_packets + tx_dropped.
    sent: Reading,
    /// g0's tx_dropped, read with `sent`.
    refused: u64,
    received: Reading,
    dropped: Option<Reading>,
    /// CPU time of the receive side so far: p0's NAPI thread's, or the
    /// softirq time of all CPUs.
    receive_ns: Reading,
}

struct LinkStats {
    rx_packets: u64,
    tx_packets: u64,
    tx_dropped: u64,
}

/// `/proc/net/dev` of one namespace: opened by a thread inside it, and
/// bound to that namespace for as long as it is open, so the bench reads
/// link counters in microseconds instead of starting `ip`.
struct NetDev(File);

impl NetDev {
    fn open(ns: &Netns) -> Result<Self> {
        ns.in_thread(|| {
            File::open("/proc/thread-self/net/dev").context("opening /proc/thread-self/net/dev")
        })
        .map(NetDev)
    }

    fn read(&self, dev: &str) -> Result<LinkStats> {
        let mut file = &self.0;
        file.seek(SeekFrom::Start(0))?;
        let mut text = String::new();
        file.read_to_string(&mut text)
            .context("reading /proc/net/dev")?;
        parse_net_dev(&text, dev)
    }
}

/// A device's line of `/proc/net/dev` (receive: bytes packets errs drop
/// fifo frame compressed multicast; transmit: bytes packets errs drop …).
fn parse_net_dev(text: &str, dev: &str) -> Result<LinkStats> {
    let fields: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim() == dev)
        .with_context(|| format!("/proc/net/dev has no {dev}"))?
        .1
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("/proc/net/dev: unreadable counters for {dev}"))?;
    if fields.len() < 16 {
        bail!(
            "/proc/net/dev: {} counters for {dev}, expected 16",
            fields.len()
        );
    }
    Ok(LinkStats {
        rx_packets: fields[1],
        tx_packets: fields[9],
        tx_dropped: fields[11],
    })
}

/// A link's NAPI thread: its receive path (NAPI poll, and every filter
/// on it) moved out of softirq on whatever CPU raised it into a kernel
/// thread of its own (`/sys/class/net/DEV/threaded`), pinned to one CPU.
/// [`NapiThread::stop`] turns it off again; the link's deletion (its
/// namespace's) ends it too.
struct NapiThread {
    pid: i32,
    ns: String,
    ifname: String,
    cpu: usize,
}

impl NapiThread {
    /// Turns on threaded NAPI for `ifname` in `ns` and pins the thread the
    /// kernel starts for it (`napi/IFNAME-ID`, one per receive queue: a
    /// veth has one) to `cpu`.
    fn start(ns: &Netns, ifname: &str, cpu: usize) -> Result<Self> {
        // SAFETY: cpu_set_t is plain data, sched_getaffinity writes within it.
        let mut ours: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is this thread; the set is valid for its size.
        if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut ours) }
            != 0
        {
            return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
        }
        for c in [GEN_CPU, cpu] {
            // SAFETY: reads within the set.
            if !unsafe { libc::CPU_ISSET(c, &ours) } {
                bail!(
                    "the flood bench needs CPUs {GEN_CPU} (generator) and {cpu} (filter); CPU \
                     {c} is not available to it"
                );
            }
        }
        let prefix = format!("napi/{ifname}-");
        let before = napi_threads(&prefix)?;
        set_threaded(ns.name(), ifname, true)?;
        let deadline = Instant::now() + Duration::from_secs(2);
        let pid = loop {
            let new: Vec<i32> = napi_threads(&prefix)?
                .into_iter()
                .filter(|p| !before.contains(p))
                .collect();
            match new.as_slice() {
                [pid] => break *pid,
                [] if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                [] => bail!("no {prefix}* thread appeared after turning on threaded NAPI"),
                more => bail!(
                    "{} new {prefix}* threads, expected one: {more:?}",
                    more.len()
                ),
            }
        };
        // SAFETY: as above.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: pid is a kernel thread's; the set is valid for its size.
        if unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) }
            != 0
        {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("pinning {prefix}* (pid {pid}) to CPU {cpu}"));
        }
        // Real-time, as the softirq it replaces preempts every process: on
        // a busy machine a normal thread would wait behind them, and the
        // rate would measure the machine's load instead of the filter.
        let param = libc::sched_param {
            sched_priority: NAPI_PRIORITY,
        };
        // SAFETY: pid is a kernel thread's; param is valid.
        if unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!("making {prefix}* (pid {pid}) SCHED_FIFO {NAPI_PRIORITY}")
            });
        }
        let thread = NapiThread {
            pid,
            ns: ns.name().into(),
            ifname: ifname.into(),
            cpu,
        };
        thread.check()?;
        Ok(thread)
    }

    /// Back to NAPI in softirq (the thread ends).
    fn stop(self) -> Result<()> {
        set_threaded(&self.ns, &self.ifname, false)
    }

    /// Fails unless the thread is still the link's and on its CPU (the
    /// kernel replaces it when the link's NAPI is rebuilt).
    fn check(&self) -> Result<()> {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.pid)).unwrap_or_default();
        if !comm.starts_with(&format!("napi/{}-", self.ifname)) {
            bail!(
                "{}'s NAPI thread (pid {}) is gone: the link's NAPI was rebuilt",
                self.ifname,
                self.pid
            );
        }
        // SAFETY: as in `start`.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the set is valid for its size.
        let got = unsafe {
            libc::sched_getaffinity(self.pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set)
        };
        let only = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: reads within the set.
            .filter(|c| unsafe { libc::CPU_ISSET(*c, &set) })
            .collect::<Vec<_>>();
        // SAFETY: no memory involved.
        let policy = unsafe { libc::sched_getscheduler(self.pid) };
        if policy != libc::SCHED_FIFO {
            bail!(
                "{}'s NAPI thread (pid {}) has scheduling policy {policy}, not SCHED_FIFO",
                self.ifname,
                self.pid
            );
        }
        if got != 0 || only != [self.cpu] {
            bail!(
                "{}'s NAPI thread (pid {}) runs on CPUs {only:?}, not only {}",
                self.ifname,
                self.pid,
                self.cpu
            );
        }
        Ok(())
    }

    /// The thread's time on a CPU so far, in ns (the first field of
    /// `/proc/PID/schedstat`).
    fn run_ns(&self) -> Result<u64> {
        let path = format!("/proc/{}/schedstat", self.pid);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        text.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{path}: no run time in {text:?}"))
    }
}

/// Turns threaded NAPI on or off for `ifname` in the namespace `ns`.
fn set_threaded(ns: &str, ifname: &str, on: bool) -> Result<()> {
    // `ip netns exec` mounts the namespace's own /sys for the command.
    let set = format!("echo {} > /sys/class/net/{ifname}/threaded", u8::from(on));
    sandbox::run(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", &set]))
        .with_context(|| format!("setting threaded NAPI {on} for {ifname} in {ns}"))?;
    Ok(())
}

/// The pids of the kernel threads whose name starts with `prefix`.
fn napi_threads(prefix: &str) -> Result<Vec<i32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .context("reading /proc")?
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // A process that ended meanwhile has no comm: not one of them.
        if std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.starts_with(prefix)) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Softirq time of all CPUs so far, in ns (the `cpu` line of /proc/stat).
fn softirq_ns() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let ticks: u64 = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(7))
        .and_then(|v| v.parse().ok())
        .context("/proc/stat has no softirq time")?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok(ticks * 1_000_000_000 / hz as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_net_dev;

    #[test]
    fn net_dev_lines_give_packets_and_drops() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
    g0: 6400 100 0 0 0 0 0 0 12800 200 0 7 0 0 0 0
";
        let s = parse_net_dev(text, "g0").unwrap();
        assert_eq!((s.rx_packets, s.tx_packets, s.tx_dropped), (100, 200, 7));
        assert!(parse_net_dev(text, "p0").is_err());
    }
}
