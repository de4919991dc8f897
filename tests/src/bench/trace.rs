//! Family `trace`: what packet tracing costs the wire program, and how many
//! events per second `netvlan trace --pcap` keeps up with.
//!
//! Per-packet cost: `netvlan_xdp` against `bench_xdp_notrace`, the same
//! pipeline from the same object with its trace call and its aya-log debug
//! record (`netvlan datapath debug`) compiled out, both
//! test-run (`BPF_PROG_TEST_RUN`) back to back on the same frame in every
//! round, with the trace config off, set to a filter that matches nothing
//! (a VLAN no frame is on), sampling 1 in 100, and tracing every drop. A
//! thread drains the ring meanwhile, as a reader would.
//!
//! Throughput: the pinned wire program of a real attachment, test-run in
//! bursts at a rising rate while `netvlan trace --pcap` reads its ring;
//! the highest rate with no event lost is the result.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use indicatif::ProgressBar;
use netvlan_common::{
    decision::VLAN_TRACE,
    maps::{VLAN_POLICY, VLAN_SLOTS, XDP_PROGRAM},
    trace::{
        traces_vlan, TraceConfig, BENCH_NOTRACE_PROGRAM, TRACE_CONFIG, TRACE_DROPS, TRACE_LOST,
        TRACE_ON, TRACE_RING, TRACE_VLAN, WIRE_RING_BYTES,
    },
};

use super::{
    ctx::Ctx,
    frames::{self, Ip, MacKind, Tagging, FRAME_LEN},
    model::{Basis, Better, Bound, Family, Measurement},
    netvlan::Netvlan,
    policies::BenchWire,
    sandbox::{netns, try_veth_pair, Process},
};

const REPEAT: u32 = 1_000_000;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const METRIC: &str = "per-packet cost";
const TRACED: &str = "netvlan (trace code)";
const UNTRACED: &str = "netvlan (no trace code)";

/// The trace configs measured, by case name.
fn configs() -> [(&'static str, TraceConfig); 4] {
    let on = |flags, vlan, sample| TraceConfig {
        flags: TRACE_ON | flags,
        vlan,
        sample,
        ..TraceConfig::default()
    };
    [
        ("tracing off", TraceConfig::default()),
        ("filter matching nothing", on(TRACE_VLAN, 4094, 0)),
        ("sampling 1 in 100", on(0, 0, 100)),
        ("all drops traced", on(TRACE_DROPS, 0, 0)),
    ]
}

pub fn steps(ctx: &Ctx) -> u64 {
    ctx.pick(5, 21) + throughput_rates(ctx).len() as u64
}

pub fn run(ctx: &Ctx, bar: &ProgressBar) -> Result<Family> {
    let object = std::fs::read(&ctx.object)
        .with_context(|| format!("reading the eBPF object {}", ctx.object.display()))?;
    let wire = BenchWire::all_policies();
    let mut obj = Ebpf::load(&object).context("loading the eBPF object")?;
    wire.apply(&mut obj).context("writing the wire's maps")?;
    for name in [XDP_PROGRAM, BENCH_NOTRACE_PROGRAM] {
        let prog: &mut Xdp = obj
            .program_mut(name)
            .with_context(|| format!("the object has no program {name}"))?
            .try_into()?;
        prog.load().with_context(|| format!("loading {name}"))?;
    }
    // A miss (dropped as unknown_dst with all policies on), so "all drops
    // traced" traces every run.
    let dst = frames::endpoint_mac(MacKind::Netvlan, Tagging::Untagged, frames::MISS_HOST);
    let frame = frames::frame(dst, Tagging::Untagged, Ip::V4);
    if wire.resolves(&frame) {
        bail!("the bench frame must be a miss");
    }

    let mut config: Array<MapData, TraceConfig> = obj
        .take_map(TRACE_CONFIG)
        .context("no trace config map")?
        .try_into()?;
    let lost: PerCpuArray<MapData, u64> = obj
        .take_map(TRACE_LOST)
        .context("no lost-event map")?
        .try_into()?;
    let ring: RingBuf<MapData> = obj
        .take_map(TRACE_RING)
        .context("no trace ring")?
        .try_into()?;
    let mut vlans: Array<MapData, u32> = obj
        .take_map(VLAN_POLICY)
        .context("no VLAN flags map")?
        .try_into()?;
    let drain = Drain::start(ring);

    let traced: &Xdp = obj.program(XDP_PROGRAM).unwrap().try_into()?;
    let untraced: &Xdp = obj.program(BENCH_NOTRACE_PROGRAM).unwrap().try_into()?;
    let rounds = ctx.pick(5, 21);
    let cases = configs();
    let mut samples: Vec<[Vec<f64>; 2]> = cases.iter().map(|_| Default::default()).collect();
    for round in 0..rounds {
        bar.set_message(format!("per-packet cost, round {}/{rounds}", round + 1));
        for ((_, cfg), slots) in cases.iter().zip(samples.iter_mut()) {
            config.set(0, *cfg, 0)?;
            mark_vlans(&mut vlans, cfg)?;
            slots[0].push(per_packet(traced, &frame)?);
            slots[1].push(per_packet(untraced, &frame)?);
        }
        super::progress::tick(bar)?;
    }
    config.set(0, TraceConfig::default(), 0)?;
    mark_vlans(&mut vlans, &TraceConfig::default())?;
    let events = drain.stop();
    let lost_events: u64 = lost.get(&0, 0)?.iter().sum();

    let mut family = Family {
        key: "trace",
        title: "Packet tracing: per-packet cost and trace --pcap throughput",
        method: vec![
            format!(
                "Per-packet cost: BPF_PROG_TEST_RUN, repeat {REPEAT}, {rounds} rounds; each round \
                 runs `{XDP_PROGRAM}` and `{BENCH_NOTRACE_PROGRAM}` (the same pipeline, its trace \
                 call and aya-log debug record compiled out) of the release object back to back per trace config, on one \
                 {FRAME_LEN}-byte untagged IPv4 frame to an unregistered MAC (dropped as \
                 unknown_dst; all policies on: {}). ns per packet = the calling thread's CPU \
                 time across the syscall / repeat.",
                wire.describe()
            ),
            format!(
                "Configs: off (TRACE_CONFIG zero, no VLAN marked for tracing or debug: the VLAN flags \
                 word the pipeline reads anyway, one bit test each); a filter matching nothing (VLAN \
                 4094: only VLAN 4094 marked, the frame's VLAN 0 is not); sampling 1 in 100 (an atomic add per frame, an \
                 event per 100); every drop traced (an event per frame, {} B ring drained by a \
                 thread: {events} events read, {lost_events} lost to a full ring).",
                WIRE_RING_BYTES
            ),
        ],
        measurements: Vec::new(),
        comparisons: Vec::new(),
        unavailable: Vec::new(),
    };
    for ((case, _), slots) in cases.iter().zip(samples) {
        for (who, s) in [TRACED, UNTRACED].into_iter().zip(slots) {
            family.measurements.push(Measurement::new(
                who,
                case,
                METRIC,
                "ns",
                Better::Lower,
                s,
                format!(
                    "BPF_PROG_TEST_RUN repeat {REPEAT}, {FRAME_LEN}-byte frame, {rounds} rounds"
                ),
            )?);
        }
    }
    for (case, _) in &cases {
        let c = family.compare(TRACED, UNTRACED, case, METRIC, Basis::Paired)?;
        match *case {
            "tracing off" => {
                c.set_goal(
                    "tracing off <= 1.02x no trace code",
                    Bound::AtMost(1.02),
                    None,
                );
            }
            "filter matching nothing" => {
                c.set_goal(
                    "a filter matching nothing <= 1.05x no trace code",
                    Bound::AtMost(1.05),
                    None,
                );
            }
            _ => {}
        }
    }
    throughput(ctx, bar, &mut family)?;
    Ok(family)
}

/// Marks the VLANs `cfg` can trace ([`VLAN_TRACE`]) as a trace session
/// does (`datapath::trace::mark_vlans`), so the bench frame (VLAN 0) reads
/// the trace config only when the config can trace it.
fn mark_vlans(vlans: &mut Array<MapData, u32>, cfg: &TraceConfig) -> Result<()> {
    for vid in 0..VLAN_SLOTS {
        let was = vlans.get(&vid, 0)?;
        let now = if traces_vlan(cfg, vid as u16) {
            was | VLAN_TRACE
        } else {
            was & !VLAN_TRACE
        };
        if now != was {
            vlans.set(vid, now, 0)?;
        }
    }
    Ok(())
}

/// A thread reading the ring as fast as it can, counting records.
struct Drain {
    stop: Arc<AtomicBool>,
    read: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Drain {
    fn start(mut ring: RingBuf<MapData>) -> Drain {
        let stop = Arc::new(AtomicBool::new(false));
        let read = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, read) = (stop.clone(), read.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut got = 0;
                    while let Some(item) = ring.next() {
                        drop(item);
                        got += 1;
                    }
                    read.fetch_add(got, Ordering::Relaxed);
                    if got == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            })
        };
        Drain { stop, read, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.read.load(Ordering::Relaxed)
    }
}

fn per_packet(prog: &Xdp, frame: &[u8]) -> Result<f64> {
    let before = thread_cpu_ns()?;
    let result = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat: REPEAT,
        ..TestRunOptions::new()
    })?;
    let after = thread_cpu_ns()?;
    if result.return_value != XDP_DROP {
        bail!("returned {} instead of XDP_DROP", result.return_value);
    }
    Ok((after - before) as f64 / f64::from(REPEAT))
}

fn thread_cpu_ns() -> Result<u128> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        bail!("clock_gettime: {}", std::io::Error::last_os_error());
    }
    Ok(ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128)
}

/// Event rates tried, events per second.
fn throughput_rates(ctx: &Ctx) -> Vec<u64> {
    let all = [
        20_000, 50_000, 100_000, 200_000, 400_000, 800_000, 1_600_000,
    ];
    all.iter().copied().take(ctx.pick(6, 7)).collect()
}

/// Events per test-run call: a burst the ring (780 events) absorbs.
const BURST: u32 = 256;

/// Finds the highest rate `trace --pcap` reads without losing an event.
fn throughput(ctx: &Ctx, bar: &ProgressBar, family: &mut Family) -> Result<()> {
    let ns = netns(&ctx.token, "trace", false)?;
    let peer = netns(&ctx.token, "tracepeer", false)?;
    try_veth_pair(&ns, "eth0", &peer, "peer0")?;
    let netvlan = Netvlan::new(&ctx.netvlan, &ns, &ctx.token, "trace")?;
    netvlan.run(&["datapath", "attach", "eth0", "--hook", "xdp"])?;
    let prog = pinned_program(netvlan.bpf_dir())?;
    let dst = frames::endpoint_mac(MacKind::Netvlan, Tagging::Untagged, frames::MISS_HOST);
    let frame = frames::frame(dst, Tagging::Untagged, Ip::V4);
    let seconds = ctx.pick(0.3, 1.0);
    let pcap = super::sandbox::OwnedDir::temp(&ctx.token, "trace-pcap")?;
    let mut kept = None;
    let mut tried = Vec::new();
    for rate in throughput_rates(ctx) {
        bar.set_message(format!("trace --pcap at {rate} events/s"));
        let file = pcap.path().join(format!("{rate}.pcapng"));
        let stderr = pcap.path().join(format!("{rate}.stderr"));
        let mut cmd = netvlan.command(&["trace", "--pcap", file.to_str().unwrap()]);
        let tracer = TraceRun::start(&mut cmd, &stderr)?;
        let sent = drive(&prog, &frame, rate, seconds)?;
        let (events, lost) = tracer.stop()?;
        if events + lost != sent {
            bail!("at {rate}/s: sent {sent} events, trace saw {events} and lost {lost}");
        }
        tried.push(format!("{rate}/s: {lost} lost of {sent}"));
        super::progress::tick(bar)?;
        if lost > 0 {
            break;
        }
        kept = Some(rate);
    }
    let Some(kept) = kept else {
        bail!("trace --pcap lost events even at the lowest rate: {tried:?}");
    };
    family.method.push(format!(
        "Throughput: the wire program pinned by `netvlan datapath attach eth0 --hook xdp` in a \
         namespace of the bench, test-run in bursts of {BURST} (one event each, no filter) at \
         rising rates for {seconds} s each while `netvlan trace --pcap FILE` (its lines to a file) \
         reads the ring; the result is the highest rate with no event lost (each step checks \
         events + lost = sent): {}.",
        tried.join(", ")
    ));
    family.measurements.push(Measurement::new(
        "netvlan trace --pcap",
        "events kept up with",
        "events per second",
        "events/s",
        Better::Higher,
        vec![kept as f64],
        format!("rates {:?}, {seconds} s each", throughput_rates(ctx)),
    )?);
    drop(netvlan);
    drop((ns, peer));
    Ok(())
}

/// The XDP program netvlan pinned under `bpf_dir` (its one attachment).
fn pinned_program(bpf_dir: &Path) -> Result<Xdp> {
    for ns in std::fs::read_dir(bpf_dir)? {
        for iface in std::fs::read_dir(ns?.path())? {
            let path = iface?.path().join("prog");
            if path.exists() {
                return Xdp::from_pin(&path, aya_obj::programs::XdpAttachType::Interface)
                    .with_context(|| format!("opening {}", path.display()));
            }
        }
    }
    bail!("no pinned program under {}", bpf_dir.display())
}

/// Test-runs `prog` at `rate` events per second for `seconds`: returns
/// the events produced.
fn drive(prog: &Xdp, frame: &[u8], rate: u64, seconds: f64) -> Result<u64> {
    let calls = ((rate as f64 * seconds) / f64::from(BURST)).ceil() as u64;
    let gap = Duration::from_secs_f64(f64::from(BURST) / rate as f64);
    let start = Instant::now();
    for i in 0..calls {
        let due = start + gap * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let result = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: BURST,
            ..TestRunOptions::new()
        })?;
        if result.return_value != XDP_PASS {
            bail!("the attached wire returned {}", result.return_value);
        }
    }
    Ok(calls * u64::from(BURST))
}

/// `netvlan trace` running, its output in files.
struct TraceRun {
    process: Process,
    stdout: std::path::PathBuf,
    stderr: std::path::PathBuf,
}

impl TraceRun {
    fn start(cmd: &mut std::process::Command, stderr: &Path) -> Result<TraceRun> {
        let stdout = stderr.with_extension("stdout");
        let mut process = Process::spawn_with_output(
            cmd,
            "netvlan trace",
            std::fs::File::create(&stdout)?,
            std::fs::File::create(stderr)?,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            process.check_running()?;
            let text = std::fs::read_to_string(stderr).unwrap_or_default();
            if text.contains("Ctrl-C to stop") {
                break;
            }
            if Instant::now() > deadline {
                bail!("netvlan trace never got ready: {text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(TraceRun {
            process,
            stdout,
            stderr: stderr.to_path_buf(),
        })
    }

    /// Waits until the reader has caught up (its output, a line per event,
    /// stopped growing for 300 ms), stops it with SIGINT: (events, lost).
    fn stop(mut self) -> Result<(u64, u64)> {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let (mut last, mut since) = (size(&self.stdout), Instant::now());
        while since.elapsed() < Duration::from_millis(300) {
            std::thread::sleep(Duration::from_millis(20));
            let now = size(&self.stdout);
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
        self.process.interrupt_and_wait()?;
        let text = std::fs::read_to_string(&self.stderr)?;
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains("event(s)"))
            .with_context(|| format!("no summary from trace: {text}"))?;
        let mut words = line.split_whitespace();
        let events = words.next().unwrap_or_default().parse()?;
        let lost = words.nth(1).unwrap_or_default().parse()?;
        Ok((events, lost))
    }
}
