//! Family `observe`: what it costs to look. The time `netvlan stats --json`
//! takes with 1,000 and 10,000 registered destinations in the counters,
//! its peak RSS, and the datapath's kernel memory.
//!
//! The destinations are registered in the wire's destination maps by the
//! control plane's placement rule (as connects would, without making
//! thousands of namespaces) and their counters filled by real frames: a peer namespace
//! sends one frame per MAC into the parent over AF_PACKET, and the XDP
//! program counts them. Peer for the read: `bpftool map dump` of the
//! pinned per-destination counters (`DST_STATS`, the kernel's generic tool
//! reading the same counters, without summing CPUs or naming endpoints).

use std::{
    collections::{BTreeMap, HashSet},
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use aya::{maps::MapData, programs::ProgramInfo};
use indicatif::ProgressBar;
use netvlan::sys::bpf_batch::BatchMap;
use netvlan_common::maps::{
    direct_slot, spill_bit, DstKey, DST_DIRECT, DST_SLOTS, DST_SPILL, DST_STATS,
};

use super::{
    ctx::Ctx,
    frames::{self, Ip, Tagging},
    model::{Basis, Better, Bound, Family, Measurement},
    netvlan::Netvlan,
    sandbox::OwnedDir,
    sandbox::{netns, try_veth_pair, Netns},
    timing::{peak_rss_kib, timed},
};

const NETVLAN: &str = "netvlan stats --json";
const BPFTOOL: &str = "bpftool map dump";
const READ: &str = "time to read all counters";
const RSS: &str = "peak RSS of the reader";
const SCALES: [u32; 2] = [1_000, 10_000];
/// The goal: reading every counter with `stats --json` at 1,000
/// endpoints costs no more than the kernel's generic dump of one map.
const READ_GOAL: &str = "stats --json <= bpftool map dump at 1,000 endpoints";
const READ_GOAL_SCALE: u32 = 1_000;

fn rounds(ctx: &Ctx) -> usize {
    ctx.pick(5, 21)
}

pub fn steps(ctx: &Ctx) -> u64 {
    (SCALES.len() * (rounds(ctx) + 1)) as u64 + super::metrics::steps(ctx)
}

pub fn run(ctx: &Ctx, bar: &ProgressBar) -> Result<Family> {
    let host = netns(&ctx.token, "ob-host", false)?;
    let gen = netns(&ctx.token, "ob-gen", false)?;
    try_veth_pair(&gen, "gen0", &host, "lan0")?;
    let netvlan = Netvlan::new(&ctx.netvlan, &host, &ctx.token, "ob")?;
    netvlan.create_bench_network("172.31.250.0/24", "lan0", &[])?;
    let pin_dir = find_pin_dir(netvlan.bpf_dir())?;
    let mac_table = pin_dir.join(DST_STATS);
    let rounds = rounds(ctx);
    let scratch = OwnedDir::temp(&ctx.token, "ob-scratch")?;

    let mut family = Family {
        key: "observe",
        title: "Observation cost",
        method: vec![
            "The destination MACs are registered in the wire's destination maps by the \
             control plane's rule (their direct slot in DST_DIRECT, or a slot of their \
             own in DST_SLOTS behind a DST_SPILL bit), then a peer namespace \
             sends one 64-byte frame per destination MAC over AF_PACKET into the parent \
             veth, where netvlan's datapath (attached by `netvlan network create`) counts \
             it; the bench waits until `netvlan stats --json` counts every MAC (resending \
             any a full veth ring dropped)."
                .into(),
            format!(
                "Then {rounds} rounds, each timing `netvlan stats --json` and the peer `bpftool \
                 -j map dump pinned …/{DST_STATS}` (the same counters: every slot of the \
                 per-CPU array), both through `nsenter \
                 --net`, wall time from spawn to exit; peak RSS of each in a separate run \
                 under `/usr/bin/time -f %M` (the kernel's ru_maxrss)."
            ),
            "Kernel memory: `memlock` of every pinned map and of the program, from \
             /proc/self/fdinfo of fds opened on the pins (the kernel's own accounting)."
                .into(),
        ],
        measurements: Vec::new(),
        comparisons: Vec::new(),
        unavailable: Vec::new(),
    };

    let mut sent = 0u32;
    for scale in SCALES {
        bar.set_message(format!("counting {scale} distinct MACs"));
        register(&pin_dir, sent, scale)?;
        fill_counters(&gen, &netvlan, sent, scale)?;
        sent = scale;
        super::progress::tick(bar)?;
        let mut nv_ms = Vec::new();
        let mut nv_rss = Vec::new();
        let mut tool_ms = Vec::new();
        let mut tool_rss = Vec::new();
        for round in 0..rounds {
            bar.set_message(format!("{scale} MACs: round {}/{rounds}", round + 1));
            let mut stats = netvlan.command(&["stats", "--json"]);
            let mut dump = host.command("bpftool");
            dump.args(["-j", "map", "dump", "pinned"]).arg(&mac_table);
            nv_ms.push(timed(&mut stats, None)?.ms());
            tool_ms.push(timed(&mut dump, None)?.ms());
            nv_rss.push(peak_rss_kib(&stats, scratch.path())? as f64 / 1024.0);
            tool_rss.push(peak_rss_kib(&dump, scratch.path())? as f64 / 1024.0);
            super::progress::tick(bar)?;
        }
        let case = format!("{scale} MACs");
        for (who, ms, rss) in [(NETVLAN, nv_ms, nv_rss), (BPFTOOL, tool_ms, tool_rss)] {
            family.measurements.push(Measurement::new(
                who,
                &case,
                READ,
                "ms",
                Better::Lower,
                ms,
                format!("{rounds} runs, wall time, interleaved with the peer"),
            )?);
            family.measurements.push(Measurement::new(
                who,
                &case,
                RSS,
                "MiB",
                Better::Lower,
                rss,
                format!("{rounds} runs under /usr/bin/time -f %M"),
            )?);
        }
        let read = family.compare(NETVLAN, BPFTOOL, &case, READ, Basis::Paired)?;
        if scale == READ_GOAL_SCALE {
            read.set_goal(READ_GOAL, Bound::AtMost(1.0), None);
        }
        family.compare(NETVLAN, BPFTOOL, &case, RSS, Basis::Paired)?;

        let (maps_kib, breakdown) = map_memory(&pin_dir)?;
        family.measurements.push(Measurement::new(
            "netvlan datapath",
            &case,
            "kernel memory of the maps",
            "KiB",
            Better::Lower,
            vec![maps_kib],
            format!("sum of fdinfo memlock over the pinned maps: {breakdown}"),
        )?);
        let prog = ProgramInfo::from_pin(pin_dir.join("prog"))
            .context("opening the pinned program")?
            .memory_locked()
            .context("reading the program's memlock")?;
        family.measurements.push(Measurement::new(
            "netvlan datapath",
            &case,
            "kernel memory of the program",
            "KiB",
            Better::Lower,
            vec![f64::from(prog) / 1024.0],
            "fdinfo memlock of the pinned program".into(),
        )?);
    }
    super::metrics::run(ctx, bar, &mut family)?;
    Ok(family)
}

/// The one interface directory netvlan pinned under its bpffs directory.
pub fn find_pin_dir(bpf_dir: &Path) -> Result<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![bpf_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry.file_name() == DST_STATS {
                found.push(dir.clone());
            }
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one pinned {DST_STATS} under {}, found {}",
            bpf_dir.display(),
            found.len()
        ),
    }
}

/// Registers the numbered MACs `from..to` (untagged) by the control
/// plane's rule: in its direct slot when no registration uses that slot,
/// otherwise in the lowest unused slot through `DST_SLOTS`, with the
/// direct slot's `DST_SPILL` bit set (the program consults the hash only
/// behind that bit).
fn register(pin_dir: &Path, from: u32, to: u32) -> Result<()> {
    let open = |name: &str| {
        MapData::from_pin(pin_dir.join(name)).with_context(|| format!("opening the pinned {name}"))
    };
    let (direct, slots, spill) = (open(DST_DIRECT)?, open(DST_SLOTS)?, open(DST_SPILL)?);
    let direct = BatchMap::new(&direct, DST_DIRECT)?;
    let slots = BatchMap::new(&slots, DST_SLOTS)?;
    let spill = BatchMap::new(&spill, DST_SPILL)?;
    let mut used: HashSet<u32> = direct
        .lookup_all::<u32, DstKey>()?
        .into_iter()
        .filter(|(_, key)| !key[0].is_free())
        .map(|(slot, _)| slot)
        .collect();
    used.extend(
        slots
            .lookup_all::<DstKey, u32>()?
            .into_iter()
            .map(|(_, s)| s[0]),
    );
    let mut words: BTreeMap<u32, u64> = spill
        .lookup_all::<u32, u64>()?
        .into_iter()
        .map(|(word, bits)| (word, bits[0]))
        .collect();
    let (mut in_direct, mut in_hash) = (Vec::new(), Vec::new());
    let mut next_free = 0;
    for i in from..to {
        let key = DstKey {
            vid: 0,
            mac: frames::numbered_mac(i),
        };
        let own = direct_slot(&key.mac);
        if used.insert(own) {
            in_direct.push((own, key));
            continue;
        }
        while used.contains(&next_free) {
            next_free += 1;
        }
        if next_free >= direct.max_entries() {
            bail!("no free destination slot left");
        }
        used.insert(next_free);
        in_hash.push((key, next_free));
        let (word, bit) = spill_bit(own);
        *words.entry(word).or_default() |= bit;
    }
    let spilled: Vec<(u32, u64)> = words.into_iter().collect();
    // Bits before the hash entries they announce, as the control plane does.
    spill
        .update(&spilled, 0)
        .context("setting DST_SPILL bits")?;
    slots
        .update(&in_hash, 0)
        .context("registering spilled destinations")?;
    direct
        .update(&in_direct, 0)
        .context("registering destinations in their direct slots")?;
    Ok(())
}

/// Sends frames to MACs `from..to` until the counters count all `to` MACs.
fn fill_counters(gen: &Netns, netvlan: &Netvlan, from: u32, to: u32) -> Result<()> {
    let mut missing: Vec<u32> = (from..to).collect();
    for _attempt in 0..5 {
        send_frames(gen, "gen0", &missing)?;
        // Frames cross the veth asynchronously: let the queue drain.
        std::thread::sleep(Duration::from_millis(200));
        let counted = counted_macs(netvlan)?;
        missing.retain(|&i| !counted.contains(&frames::mac_string(&frames::numbered_mac(i))));
        if missing.is_empty() {
            if counted.len() < to as usize {
                bail!("netvlan counts {} MACs, expected {to}", counted.len());
            }
            return Ok(());
        }
    }
    bail!(
        "{} of {to} MACs never showed up in netvlan's counters",
        missing.len()
    )
}

fn counted_macs(netvlan: &Netvlan) -> Result<HashSet<String>> {
    let stats: serde_json::Value = serde_json::from_str(&netvlan.run(&["stats", "--json"])?)
        .context("netvlan stats --json printed no JSON")?;
    Ok(stats["interfaces"][0]["macs"]
        .as_array()
        .context("netvlan stats --json has no macs")?
        .iter()
        .filter(|m| m["rx_packets"].as_u64() > Some(0))
        .filter_map(|m| m["mac"].as_str().map(str::to_string))
        .collect())
}

/// One frame per numbered MAC out of `ifname` in `ns`, from a thread that
/// entered the namespace (the rest of the bench stays where it is).
fn send_frames(ns: &Netns, ifname: &str, macs: &[u32]) -> Result<()> {
    let ifname = std::ffi::CString::new(ifname)?;
    ns.in_thread(|| {
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error()).context("if_nametoindex");
        }
        // SAFETY: plain socket call; the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
        }
        // SAFETY: fd was just returned by socket(); OwnedFd closes it.
        let _owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        for (n, &i) in macs.iter().enumerate() {
            let frame = frames::frame(frames::numbered_mac(i), Tagging::Untagged, Ip::V4);
            // SAFETY: frame and addr are valid for the lengths given.
            let sent = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if sent < 0 {
                return Err(std::io::Error::last_os_error()).context("sendto");
            }
            // A veth with XDP queues at most a few hundred frames:
            // pace the sender so the receive side keeps up.
            if n % 64 == 63 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    })
}

/// Total memlock of the pinned maps in KiB, and a per-map breakdown.
fn map_memory(pin_dir: &Path) -> Result<(f64, String)> {
    let mut total = 0u64;
    let mut parts = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(pin_dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let data = MapData::from_pin(entry.path())
            .with_context(|| format!("opening {}", entry.path().display()))?;
        // The program's and the link's pins open too; their fdinfo has no
        // map_type. Only maps count here.
        let Some(memlock) = fdinfo_memlock(data.fd().as_fd().as_raw_fd(), "map_type:")? else {
            continue;
        };
        total += memlock;
        parts.push(format!(
            "{} {:.0} KiB",
            entry.file_name().to_string_lossy(),
            memlock as f64 / 1024.0
        ));
    }
    if parts.is_empty() {
        bail!("no pinned map under {}", pin_dir.display());
    }
    Ok((total as f64 / 1024.0, parts.join(", ")))
}

/// The kernel's `memlock` of a BPF object fd, if its fdinfo has `kind`.
fn fdinfo_memlock(fd: i32, kind: &str) -> Result<Option<u64>> {
    let path = format!("/proc/self/fdinfo/{fd}");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    if !text.lines().any(|l| l.starts_with(kind)) {
        return Ok(None);
    }
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .map(Some)
        .with_context(|| format!("{path} has no memlock line"))
}
