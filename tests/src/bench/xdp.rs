//! Family `xdp`: the per-packet cost of netvlan's XDP program, with every
//! policy off and with all of them on, run by the kernel's
//! `BPF_PROG_TEST_RUN` next to two peers on the same frames:
//! the pass-only `bench_floor` program of the same object (the floor) and
//! Debian's `xdp-filter` holding one MAC rule (what a user would pick
//! instead for per-MAC filtering).
//!
//! "Hit" and "miss" are about netvlan's per-MAC table (`MAC_STATS`): a hit
//! counts a destination MAC already in the table; a steady-state miss needs
//! a full table (otherwise the first miss inserts the MAC and every later
//! run hits), so the miss instance gets its table filled to capacity first.
//! For xdp-filter, the hit frame matches its MAC rule and the miss frame
//! does not.

use std::borrow::Cow;

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, PerCpuArray},
    programs::{loaded_programs, ProgramInfo, TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use aya_obj::programs::XdpAttachType;
use indicatif::ProgressBar;
use netvlan_common::{
    decision::Verdict,
    maps::{
        direct_slot, DstKey, VlanCounters, BENCH_FLOOR_PROGRAM, DST_DIRECT, VLAN_COUNTERS,
        XDP_PROGRAM,
    },
};

use super::{
    ctx::Ctx,
    frames::{self, Ip, Tagging, FRAME_LEN},
    model::{Basis, Better, Bound, Family, Measurement},
    policies::AllPolicies,
    sandbox::{netns, package_version, try_veth_pair, Netns},
};

/// Runs of the program per test-run call (the issue asks for at least 10^6).
pub const REPEAT: u32 = 1_000_000;

/// Destination MAC of the "hit" frames: in netvlan's table, and the MAC of
/// xdp-filter's rule.
const HIT_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x1f, 0xfa, 0x02];
/// Destination MAC of the "miss" frames: in neither.
const MISS_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x1f, 0xfa, 0x03];

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

const FLOOR: &str = "floor";
const NETVLAN_OFF: &str = "netvlan (policies off)";
const NETVLAN_ON: &str = "netvlan (all policies on)";
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
    lookup: Lookup,
    frame: Vec<u8>,
}

impl Case {
    fn all() -> Vec<Case> {
        let mut cases = Vec::new();
        for tagging in Tagging::ALL {
            for ip in Ip::ALL {
                for lookup in [Lookup::Hit, Lookup::Miss] {
                    let dst = match lookup {
                        Lookup::Hit => HIT_MAC,
                        Lookup::Miss => MISS_MAC,
                    };
                    cases.push(Case {
                        tagging,
                        ip,
                        lookup,
                        frame: frames::frame(dst, tagging, ip),
                    });
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
        format!("{} {} {lookup}", self.tagging.name(), self.ip.name())
    }
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

pub fn run(ctx: &Ctx, bar: &ProgressBar) -> Result<Family> {
    let object = std::fs::read(&ctx.object)
        .with_context(|| format!("reading the eBPF object {}", ctx.object.display()))?;
    let policies = AllPolicies::new(HIT_MAC);

    bar.set_message("loading netvlan's program (4 instances) and the floor");
    // One instance of the object per (policies, lookup): their maps are
    // separate, so a hit table can stay small while a miss table is full.
    let off_hit = instance(&object, &[BENCH_FLOOR_PROGRAM, XDP_PROGRAM], None, false)?;
    let off_miss = instance(&object, &[XDP_PROGRAM], None, true)?;
    let on_hit = instance(
        &object,
        &[XDP_PROGRAM],
        Some((&policies, ctx, "on-hit")),
        false,
    )?;
    let on_miss = instance(
        &object,
        &[XDP_PROGRAM],
        Some((&policies, ctx, "on-miss")),
        true,
    )?;

    bar.set_message("loading xdp-filter on a veth of its own");
    let peer = XdpFilterPeer::start(ctx)?;

    let cases = Case::all();
    let floor = program(&off_hit, BENCH_FLOOR_PROGRAM)?;
    let mut samples: Vec<[Samples; 4]> = cases.iter().map(|_| Default::default()).collect();
    let rounds = rounds(ctx);
    for round in 0..rounds {
        bar.set_message(format!("round {}/{rounds}", round + 1));
        // Interleaved: every round runs the four programs back to back on
        // each frame, so a busy moment of the machine hits all of them.
        for (case, slots) in cases.iter().zip(samples.iter_mut()) {
            let (off, on, filter_verdict) = match case.lookup {
                Lookup::Hit => (&off_hit, &on_hit, XDP_DROP),
                Lookup::Miss => (&off_miss, &on_miss, XDP_PASS),
            };
            for (slot, (prog, verdict, who)) in slots.iter_mut().zip([
                (floor, XDP_PASS, FLOOR),
                (program(off, XDP_PROGRAM)?, XDP_PASS, NETVLAN_OFF),
                (
                    program(on, XDP_PROGRAM)?,
                    match policies.expected(&case.frame) {
                        Verdict::Pass => XDP_PASS,
                        Verdict::Drop(_) => XDP_DROP,
                    },
                    NETVLAN_ON,
                ),
                (&peer.program, filter_verdict, XDP_FILTER),
            ]) {
                let (cpu, kernel) = per_packet(prog, &case.frame, verdict)
                    .with_context(|| format!("{who} on {}", case.name()))?;
                slot.cpu_ns.push(cpu);
                slot.kernel_ns.push(kernel);
            }
        }
        super::progress::tick(bar)?;
    }
    check_miss_path(&off_miss)?;
    check_miss_path(&on_miss)?;

    let mut family = Family {
        key: "xdp",
        title: "Per-packet cost of the XDP program",
        method: vec![
            format!(
                "BPF_PROG_TEST_RUN through aya's `TestRun`, repeat {REPEAT} per sample, \
                 {rounds} rounds; each round runs floor, netvlan (policies off), netvlan (all \
                 policies on) and xdp-filter back to back on every frame."
            ),
            "ns per packet = CPU time of the calling thread across the test-run syscall / \
             repeat (sub-ns resolution); the kernel's own per-run average (whole ns) is kept \
             as `kernel-reported` in the JSON. Every run's return value is checked against \
             the verdict the frame must get."
                .into(),
            format!(
                "Frames: {FRAME_LEN} bytes as XDP sees them (no FCS), untagged, 802.1Q (VLAN 10) \
                 or QinQ (802.1ad 100 + 802.1Q 10), IPv4/UDP or IPv6."
            ),
            format!(
                "netvlan: `{XDP_PROGRAM}` from the object embedded in the release binary, \
                 loaded with aya. hit = destination MAC registered (its DST_DIRECT slot holds \
                 it); miss = a MAC nobody registered, counted as unregistered on its VLAN."
            ),
            format!(
                "netvlan (all policies on): {}, written into the policy maps. Hit frames \
                 go to a registered MAC and pass (QinQ ones are dropped as stacked tags); miss \
                 frames go to an unregistered MAC and are dropped as unknown_dst.",
                policies.describe()
            ),
            format!("floor: `{BENCH_FLOOR_PROGRAM}` from the same object (returns XDP_PASS)."),
            format!(
                "xdp-filter {}: loaded by xdp-filter itself (`load --mode native --features \
                 ethernet`, default allow policy, then `ether {} --mode dst`) on a veth in a \
                 namespace of the bench, found by the link's XDP program id ({}) and test-run \
                 by fd; hit = frame matches the rule (XDP_DROP), miss = it does not (XDP_PASS).",
                peer.version,
                frames::mac_string(&HIT_MAC),
                peer.program_name
            ),
        ],
        measurements: Vec::new(),
        comparisons: Vec::new(),
        unavailable: Vec::new(),
    };
    for (case, slots) in cases.iter().zip(samples) {
        for (who, s) in [FLOOR, NETVLAN_OFF, NETVLAN_ON, XDP_FILTER]
            .into_iter()
            .zip(slots)
        {
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
                "all policies on <= 1.5x the floor",
                Bound::AtMost(1.5),
                None,
            );
        family
            .compare(NETVLAN_ON, XDP_FILTER, &name, METRIC, Basis::Paired)?
            .set_goal("not slower than xdp-filter", Bound::AtMost(1.0), None);
        family.compare(NETVLAN_OFF, FLOOR, &name, METRIC, Basis::Paired)?;
        family.compare(NETVLAN_OFF, XDP_FILTER, &name, METRIC, Basis::Paired)?;
    }
    Ok(family)
}

/// Loads the object with `programs` in the kernel, the policies written
/// into its maps and, for misses, its MAC table filled.
fn instance(
    object: &[u8],
    programs: &[&str],
    policies: Option<(&AllPolicies, &Ctx, &str)>,
    full_mac_table: bool,
) -> Result<Ebpf> {
    let mut obj = Ebpf::load(object).context("loading the eBPF object")?;
    for name in programs {
        load_program(&mut obj, name)?;
    }
    if let Some((p, ctx, name)) = policies {
        p.apply(&obj, &ctx.token, name)
            .context("writing the policy maps")?;
    }
    if !full_mac_table {
        register_hit(&mut obj)?;
    }
    Ok(obj)
}

fn load_program(obj: &mut Ebpf, name: &str) -> Result<()> {
    let prog: &mut Xdp = obj
        .program_mut(name)
        .with_context(|| format!("the eBPF object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))?;
    prog.load()
        .with_context(|| format!("loading {name} into the kernel"))
}

fn program<'a>(obj: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    obj.program(name)
        .with_context(|| format!("the eBPF object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

/// Registers the hit MAC in its direct slot on the untagged VLAN.
fn register_hit(obj: &mut Ebpf) -> Result<()> {
    let mut direct: Array<_, DstKey> = obj
        .map_mut(DST_DIRECT)
        .with_context(|| format!("the eBPF object has no map {DST_DIRECT}"))?
        .try_into()
        .context("DST_DIRECT is not an array")?;
    let slot = direct_slot(&HIT_MAC).context("the hit MAC is not netvlan-assigned")?;
    direct.set(
        slot,
        DstKey {
            vid: 0,
            mac: HIT_MAC,
        },
        0,
    )?;
    Ok(())
}

/// Proves the miss instance really took the unregistered path.
fn check_miss_path(obj: &Ebpf) -> Result<()> {
    let vlans: PerCpuArray<_, VlanCounters> = obj
        .map(VLAN_COUNTERS)
        .with_context(|| format!("the eBPF object has no map {VLAN_COUNTERS}"))?
        .try_into()
        .context("VLAN_COUNTERS is not a per-CPU array")?;
    let missed: u64 = vlans
        .get(&0, 0)?
        .iter()
        .map(|c| c.unregistered.packets)
        .sum();
    if missed < u64::from(REPEAT) {
        bail!("the miss frames were not counted as unregistered ({missed}): the miss case did not miss");
    }
    Ok(())
}

/// One test run of `repeat` packets: (CPU ns per packet, kernel ns per packet).
fn per_packet(prog: &Xdp, frame: &[u8], verdict: u32) -> Result<(f64, f64)> {
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
        let info = load_xdp_filter(&ns, "xf0", &HIT_MAC)?;
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
/// dst`), and returns the kernel's view of the program it attached.
pub fn load_xdp_filter(ns: &Netns, dev: &str, dst: &[u8; 6]) -> Result<ProgramInfo> {
    // xdp-filter pins its maps in a fixed /sys/fs/bpf/xdp-filter: give
    // it a bpffs of its own in a private mount namespace, so it can
    // never meet another xdp-filter of the host. The program stays on
    // the link after the pins vanish with that mount.
    let script = format!(
        "mount -t bpf bpf /sys/fs/bpf && \
         xdp-filter load --mode native --features ethernet {dev} && \
         xdp-filter ether {} --mode dst",
        frames::mac_string(dst)
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
