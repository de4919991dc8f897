//! Family `xdp`: the per-packet cost of netvlan's wire program at both
//! hooks, XDP and TC, with every policy off and with all of them on, run
//! by the kernel's `BPF_PROG_TEST_RUN` next to two peers on the same
//! frames: the pass-only `bench_floor` program of the same object (the
//! floor) and Debian's `xdp-filter` holding one MAC rule per hit
//! destination (what a user would pick instead for per-MAC filtering).
//!
//! Cases: every tagging and IP version, to a netvlan-assigned MAC or a
//! user-given one (each found in its direct slot) or a user-given one
//! whose direct slot another registration took (a hash lookup behind the
//! slot's spill bit), each a "hit" (a registered endpoint) or a "miss"
//! (nobody's: counted as unregistered on its VLAN, or dropped as
//! unknown_dst with policies on; the hashed kind's miss lands on a spilled
//! slot and pays the lookup), so no layout wins by choosing its frames. For xdp-filter, the hit frame matches one
//! of its MAC rules and the miss frame none.

use std::borrow::Cow;

use anyhow::{bail, Context, Result};
use aya::{
    maps::PerCpuArray,
    programs::{
        loaded_programs, ProgramInfo, SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp,
    },
    Ebpf,
};
use aya_obj::programs::XdpAttachType;
use indicatif::ProgressBar;
use netvlan_common::{
    decision::Verdict,
    maps::{
        Counters, DstKey, VlanCounters, BENCH_FLOOR_PROGRAM, DST_STATS, TC_PROGRAM, VLAN_COUNTERS,
        XDP_PROGRAM,
    },
};

use super::{
    ctx::Ctx,
    frames::{self, Ip, MacKind, Tagging, FRAME_LEN},
    model::{Basis, Better, Bound, Family, Measurement},
    policies::BenchWire,
    sandbox::{netns, package_version, try_veth_pair, Netns},
};

/// Runs of the program per test-run call (the issue asks for at least 10^6).
pub const REPEAT: u32 = 1_000_000;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

const FLOOR: &str = "floor";
const NETVLAN_OFF: &str = "netvlan (policies off)";
const NETVLAN_ON: &str = "netvlan (all policies on)";
const TC_OFF: &str = "netvlan at TC (policies off)";
const TC_ON: &str = "netvlan at TC (all policies on)";
const XDP_FILTER: &str = "xdp-filter";
const METRIC: &str = "per-packet cost";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lookup {
    Hit,
    Miss,
}

struct Case {
    tagging: Tagging,
    ip: Ip,
    kind: MacKind,
    lookup: Lookup,
    dst: [u8; 6],
    frame: Vec<u8>,
}

impl Case {
    fn all() -> Vec<Case> {
        let mut cases = Vec::new();
        for tagging in Tagging::ALL {
            for ip in Ip::ALL {
                for kind in MacKind::ALL {
                    for lookup in [Lookup::Hit, Lookup::Miss] {
                        let dst = match lookup {
                            Lookup::Hit => frames::endpoint_mac(kind, tagging, frames::HIT_HOST),
                            Lookup::Miss => frames::miss_mac(kind, tagging),
                        };
                        cases.push(Case {
                            tagging,
                            ip,
                            kind,
                            lookup,
                            dst,
                            frame: frames::frame(dst, tagging, ip),
                        });
                    }
                }
            }
        }
        cases
    }

    fn name(&self) -> String {
        let lookup = match self.lookup {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
        };
        format!(
            "{} {} {} {lookup}",
            self.tagging.name(),
            self.ip.name(),
            self.kind.name()
        )
    }
}

/// The destinations xdp-filter holds a rule for: every hit case's.
fn hit_macs() -> Vec<[u8; 6]> {
    Tagging::ALL
        .into_iter()
        .flat_map(|t| MacKind::ALL.map(|k| frames::endpoint_mac(k, t, frames::HIT_HOST)))
        .collect()
}

/// Samples of one program on one case, round by round.
#[derive(Default)]
struct Samples {
    cpu_ns: Vec<f64>,
    kernel_ns: Vec<f64>,
}

pub fn rounds(ctx: &Ctx) -> u64 {
    ctx.pick(5, 21)
}

/// One program to time: which hook, and the return value that means pass
/// and drop there.
enum Hook<'a> {
    Xdp(&'a Xdp),
    Tc(&'a SchedClassifier),
}

impl Hook<'_> {
    fn code(&self, verdict: Verdict) -> u32 {
        match (self, verdict) {
            (Hook::Xdp(_), Verdict::Pass) => XDP_PASS,
            (Hook::Xdp(_), Verdict::Drop(_)) => XDP_DROP,
            (Hook::Tc(_), Verdict::Pass) => TC_ACT_OK,
            (Hook::Tc(_), Verdict::Drop(_)) => TC_ACT_SHOT,
        }
    }

    fn per_packet(&self, frame: &[u8], verdict: u32) -> Result<(f64, f64)> {
        match self {
            Hook::Xdp(p) => per_packet(*p, frame, verdict),
            Hook::Tc(p) => per_packet(*p, frame, verdict),
        }
    }
}

pub fn run(ctx: &Ctx, bar: &ProgressBar) -> Result<Family> {
    let object = std::fs::read(&ctx.object)
        .with_context(|| format!("reading the eBPF object {}", ctx.object.display()))?;
    let off = BenchWire::policies_off();
    let on = BenchWire::all_policies();

    bar.set_message("loading netvlan's programs (2 instances, XDP and TC) and the floor");
    // One instance of the object per configuration: their maps are separate.
    let off_obj = instance(&object, &off, true)?;
    let on_obj = instance(&object, &on, false)?;

    bar.set_message("loading xdp-filter on a veth of its own");
    let peer = XdpFilterPeer::start(ctx)?;

    let cases = Case::all();
    for case in &cases {
        if off.resolves(&case.frame) != (case.lookup == Lookup::Hit) {
            bail!(
                "{}: the frame's destination is not what the case says",
                case.name()
            );
        }
        let key = DstKey {
            vid: case.tagging.outer_vid(),
            mac: case.dst,
        };
        if case.lookup == Lookup::Hit && off.hashed(&key) != (case.kind == MacKind::Spilled) {
            bail!(
                "{}: the destination is not placed where the case says",
                case.name()
            );
        }
    }
    let floor = Hook::Xdp(xdp_program(&off_obj, BENCH_FLOOR_PROGRAM)?);
    let programs = [
        (
            NETVLAN_OFF,
            &off,
            Hook::Xdp(xdp_program(&off_obj, XDP_PROGRAM)?),
        ),
        (TC_OFF, &off, Hook::Tc(tc_program(&off_obj)?)),
        (
            NETVLAN_ON,
            &on,
            Hook::Xdp(xdp_program(&on_obj, XDP_PROGRAM)?),
        ),
        (TC_ON, &on, Hook::Tc(tc_program(&on_obj)?)),
    ];
    let filter = Hook::Xdp(&peer.program);
    let sizes = program_sizes(&[&floor, &programs[0].2, &programs[1].2, &filter])?;
    let subjects = [FLOOR, NETVLAN_OFF, TC_OFF, NETVLAN_ON, TC_ON, XDP_FILTER];
    let mut samples: Vec<[Samples; 6]> = cases.iter().map(|_| Default::default()).collect();
    let rounds = rounds(ctx);
    for round in 0..rounds {
        bar.set_message(format!("round {}/{rounds}", round + 1));
        // Interleaved: every round runs the six programs back to back on
        // each frame, so a busy moment of the machine hits all of them.
        for (case, slots) in cases.iter().zip(samples.iter_mut()) {
            let filter_verdict = match case.lookup {
                Lookup::Hit => XDP_DROP,
                Lookup::Miss => XDP_PASS,
            };
            let mut runs = vec![(FLOOR, &floor, XDP_PASS)];
            for (who, wire, hook) in &programs {
                runs.push((*who, hook, hook.code(wire.expected(&case.frame))));
            }
            runs.push((XDP_FILTER, &filter, filter_verdict));
            for (slot, (who, hook, verdict)) in slots.iter_mut().zip(runs) {
                let (cpu, kernel) = hook
                    .per_packet(&case.frame, verdict)
                    .with_context(|| format!("{who} on {}", case.name()))?;
                slot.cpu_ns.push(cpu);
                slot.kernel_ns.push(kernel);
            }
        }
        super::progress::tick(bar)?;
    }
    check_paths(&off_obj, &off, &cases)?;

    let mut family = Family {
        key: "xdp",
        title: "Per-packet cost of the wire program (XDP and TC)",
        method: vec![
            format!(
                "BPF_PROG_TEST_RUN through aya's `TestRun`, repeat {REPEAT} per sample, \
                 {rounds} rounds; each round runs floor, netvlan at XDP and at TC (policies \
                 off, then all on) and xdp-filter back to back on every frame."
            ),
            "ns per packet = CPU time of the calling thread across the test-run syscall / \
             repeat (sub-ns resolution); the kernel's own per-run average (whole ns) is kept \
             as `kernel-reported` in the JSON. Every run's return value is checked against \
             the verdict the frame must get."
                .into(),
            format!(
                "Frames: {FRAME_LEN} bytes as XDP sees them (no FCS), untagged, 802.1Q (VLAN 10) \
                 or QinQ (802.1ad 100 + 802.1Q 10), IPv4/UDP or IPv6; to a netvlan MAC \
                 (02:42 + IPv4 address) or a --mac one (52:54:…), each in its direct slot, \
                 or a --mac one whose direct slot a netvlan MAC holds (hashed: a lookup \
                 behind the slot's spill bit), of a registered endpoint (hit) or of none \
                 (miss; the hashed kind's miss lands on a spilled slot)."
            ),
            format!(
                "netvlan: `{XDP_PROGRAM}` and `{TC_PROGRAM}` (SchedClassifier, skb test run) \
                 from the object embedded in the release binary, loaded with aya; maps written \
                 from the host model. Policies off: {}. All policies on: {}. With policies on, \
                 hit frames pass (QinQ ones are dropped as stacked tags) and miss frames are \
                 dropped as unknown_dst.",
                off.describe(),
                on.describe()
            ),
            format!("floor: `{BENCH_FLOOR_PROGRAM}` from the same object (returns XDP_PASS)."),
            format!(
                "xdp-filter {}: loaded by xdp-filter itself (`load --mode native --features \
                 ethernet`, default allow policy, then `ether MAC --mode dst` for the {} hit \
                 MACs) on a veth in a namespace of the bench, found by the link's XDP program \
                 id ({}) and test-run by fd; hit = frame matches a rule (XDP_DROP), miss = it \
                 does not (XDP_PASS).",
                peer.version,
                hit_macs().len(),
                peer.program_name
            ),
            format!(
                "Program size as the kernel runs it (xlated instructions, what `bpftool prog \
                 dump xlated` prints; verifier-processed instructions in parentheses): floor \
                 {}, {XDP_PROGRAM} {}, {TC_PROGRAM} {}, xdp-filter {}.",
                sizes[0], sizes[1], sizes[2], sizes[3]
            ),
            "TC vs XDP: the skb test run of the same program on the same frame; it includes \
             the skb the kernel builds once per test-run call, not the per-packet skb \
             allocation of a real receive path."
                .into(),
        ],
        measurements: Vec::new(),
        comparisons: Vec::new(),
        unavailable: Vec::new(),
    };
    for (case, slots) in cases.iter().zip(samples) {
        for (who, s) in subjects.into_iter().zip(slots) {
            let m = Measurement::new(
                who,
                &case.name(),
                METRIC,
                "ns",
                Better::Lower,
                s.cpu_ns,
                format!(
                    "BPF_PROG_TEST_RUN repeat {REPEAT}, {FRAME_LEN}-byte frame, {rounds} rounds"
                ),
            )?
            .with_aux("kernel-reported", "ns", &s.kernel_ns)?;
            family.measurements.push(m);
        }
    }
    for case in &cases {
        let name = case.name();
        family
            .compare(NETVLAN_ON, FLOOR, &name, METRIC, Basis::Paired)?
            .set_goal(
                "all policies on <= 2.0x the floor",
                Bound::AtMost(2.0),
                None,
            );
        family
            .compare(NETVLAN_ON, XDP_FILTER, &name, METRIC, Basis::Paired)?
            .set_goal("not slower than xdp-filter", Bound::AtMost(1.0), None);
        family
            .compare(NETVLAN_OFF, FLOOR, &name, METRIC, Basis::Paired)?
            .set_goal("policies off <= 2.0x the floor", Bound::AtMost(2.0), None);
        family.compare(NETVLAN_OFF, XDP_FILTER, &name, METRIC, Basis::Paired)?;
        family.compare(TC_ON, NETVLAN_ON, &name, METRIC, Basis::Paired)?;
        family.compare(TC_OFF, NETVLAN_OFF, &name, METRIC, Basis::Paired)?;
    }
    Ok(family)
}

/// Loads the object with netvlan's programs (and, with `floor`, the
/// floor) in the kernel and `wire` written into its maps.
fn instance(object: &[u8], wire: &BenchWire, floor: bool) -> Result<Ebpf> {
    let mut obj = Ebpf::load(object).context("loading the eBPF object")?;
    wire.apply(&mut obj).context("writing the wire's maps")?;
    let mut xdp = vec![XDP_PROGRAM];
    if floor {
        xdp.push(BENCH_FLOOR_PROGRAM);
    }
    for name in xdp {
        let prog: &mut Xdp = obj
            .program_mut(name)
            .with_context(|| format!("the eBPF object has no program {name}"))?
            .try_into()
            .with_context(|| format!("{name} is not an XDP program"))?;
        prog.load()
            .with_context(|| format!("loading {name} into the kernel"))?;
    }
    let tc: &mut SchedClassifier = obj
        .program_mut(TC_PROGRAM)
        .with_context(|| format!("the eBPF object has no program {TC_PROGRAM}"))?
        .try_into()
        .with_context(|| format!("{TC_PROGRAM} is not a TC classifier"))?;
    tc.load()
        .with_context(|| format!("loading {TC_PROGRAM} into the kernel"))?;
    Ok(obj)
}

fn xdp_program<'a>(obj: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    obj.program(name)
        .with_context(|| format!("the eBPF object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

fn tc_program(obj: &Ebpf) -> Result<&SchedClassifier> {
    obj.program(TC_PROGRAM)
        .with_context(|| format!("the eBPF object has no program {TC_PROGRAM}"))?
        .try_into()
        .with_context(|| format!("{TC_PROGRAM} is not a TC classifier"))
}

/// Proves the policies-off instance took the intended paths: every hit
/// case's destination slot and every miss case's VLAN counted at least
/// the repeats of one round (its verdict alone cannot tell, it passes
/// everything).
fn check_paths(obj: &Ebpf, wire: &BenchWire, cases: &[Case]) -> Result<()> {
    let stats: PerCpuArray<_, Counters> = obj
        .map(DST_STATS)
        .with_context(|| format!("the eBPF object has no map {DST_STATS}"))?
        .try_into()
        .context("DST_STATS is not a per-CPU array")?;
    let vlans: PerCpuArray<_, VlanCounters> = obj
        .map(VLAN_COUNTERS)
        .with_context(|| format!("the eBPF object has no map {VLAN_COUNTERS}"))?
        .try_into()
        .context("VLAN_COUNTERS is not a per-CPU array")?;
    for case in cases {
        let vid = case.tagging.outer_vid();
        let counted: u64 = match case.lookup {
            Lookup::Hit => {
                let key = DstKey { vid, mac: case.dst };
                let slot = wire
                    .slot(&key)
                    .with_context(|| format!("{}: {key:?} has no slot", case.name()))?;
                stats.get(&slot, 0)?.iter().map(|d| d.packets).sum()
            }
            Lookup::Miss => vlans
                .get(&u32::from(vid), 0)?
                .iter()
                .map(|v| v.unregistered.packets)
                .sum(),
        };
        if counted < u64::from(REPEAT) {
            bail!(
                "{}: counted {counted} times where the case says it goes: it took another path",
                case.name()
            );
        }
    }
    Ok(())
}

/// Each loaded program's size as the kernel keeps it: "xlated
/// instructions (verifier-processed instructions)".
fn program_sizes(hooks: &[&Hook]) -> Result<Vec<String>> {
    hooks
        .iter()
        .map(|hook| {
            let info = match hook {
                Hook::Xdp(p) => p.info(),
                Hook::Tc(p) => p.info(),
            }
            .context("reading a loaded program's info")?;
            let xlated = info.size_translated().map_or(0, |bytes| bytes / 8);
            let verified = info.verified_instruction_count().unwrap_or(0);
            Ok(format!("{xlated} ({verified})"))
        })
        .collect()
}

/// One test run of `repeat` packets: (CPU ns per packet, kernel ns per packet).
fn per_packet<P>(prog: &P, frame: &[u8], verdict: u32) -> Result<(f64, f64)>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let before = thread_cpu_ns()?;
    let result = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat: REPEAT,
        ..TestRunOptions::new()
    })?;
    let after = thread_cpu_ns()?;
    if result.return_value != verdict {
        bail!(
            "returned {} instead of {verdict}: the frame did not take the intended path",
            result.return_value
        );
    }
    let cpu = (after - before) as f64 / f64::from(REPEAT);
    Ok((cpu, result.duration.as_nanos() as f64))
}

fn thread_cpu_ns() -> Result<u128> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the kernel to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error()).context("clock_gettime");
    }
    Ok(ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128)
}

/// xdp-filter, loaded by its own CLI on a veth in a namespace of the
/// bench, and opened by program id for test runs.
struct XdpFilterPeer {
    program: Xdp,
    program_name: String,
    version: String,
    // Deleting the namespace removes the veth and with it the program.
    _ns: Netns,
}

impl XdpFilterPeer {
    fn start(ctx: &Ctx) -> Result<Self> {
        let ns = netns(&ctx.token, "xf", false)?;
        try_veth_pair(&ns, "xf0", &ns, "xf1")?;
        let info = load_xdp_filter(&ns, "xf0", &hit_macs())?;
        let program_name = info.name_as_str().unwrap_or("?").to_string();
        let program =
            Xdp::from_program_info(info, Cow::Borrowed("xdp-filter"), XdpAttachType::Interface)
                .context("opening xdp-filter's program by id")?;
        Ok(XdpFilterPeer {
            program,
            program_name,
            version: package_version("xdp-tools"),
            _ns: ns,
        })
    }
}

/// Loads xdp-filter on `dev` in `ns` by its own CLI (`load --mode native
/// --features ethernet`, default allow policy, then `ether MAC --mode
/// dst` for each of `dsts`), and returns the kernel's view of the program
/// it attached.
pub fn load_xdp_filter(ns: &Netns, dev: &str, dsts: &[[u8; 6]]) -> Result<ProgramInfo> {
    // xdp-filter pins its maps in a fixed /sys/fs/bpf/xdp-filter: give
    // it a bpffs of its own in a private mount namespace, so it can
    // never meet another xdp-filter of the host. The program stays on
    // the link after the pins vanish with that mount.
    let rules: String = dsts
        .iter()
        .map(|dst| {
            format!(
                " && xdp-filter ether {} --mode dst",
                frames::mac_string(dst)
            )
        })
        .collect();
    let script = format!(
        "mount -t bpf bpf /sys/fs/bpf && \
         xdp-filter load --mode native --features ethernet {dev}{rules}"
    );
    let mut cmd = ns.command("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(&script)
        // One program on the link, no libxdp dispatcher in front of it
        // (this kernel refuses freplace, so libxdp would fall back to
        // the same anyway).
        .env("LIBXDP_SKIP_DISPATCHER", "1");
    super::sandbox::run(&mut cmd).context("the xdp-filter peer cannot be set up")?;
    let id = ns
        .xdp_prog_id(dev)?
        .with_context(|| format!("xdp-filter reported success but {dev} has no XDP program"))?;
    let info = loaded_programs()
        .filter_map(|p| p.ok())
        .find(|p| p.id() == id)
        .with_context(|| format!("XDP program {id} of xdp-filter is not loaded"))?;
    let name = info.name_as_str().unwrap_or("?");
    if !name.starts_with("xdpfilt_") {
        bail!("the program on {dev} is {name}, not xdp-filter's");
    }
    Ok(info)
}
