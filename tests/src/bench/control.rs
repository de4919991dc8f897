//! Family `control`: how long netvlan takes to give a sandbox an endpoint
//! and take it away, against the reference CNI macvlan plugin with
//! host-local IPAM driven by the CNI protocol the way a runtime does it
//! (environment + JSON config on stdin, run in the namespace that holds the
//! master link).
//!
//! Beside them `netvlan-cni`, driven exactly as the reference plugin is
//! (same protocol, same config shape with `"type"` changed, same
//! namespaces) on a network of the same shape.
//!
//! All sides start a process per operation, through the same `nsenter`,
//! into the same sandboxes, each on its own parent veth in a namespace of
//! its own.
//!
//! At scale, netvlan against itself: a connect (and disconnect) on a
//! network that already holds many endpoints against the same on an empty
//! network, and the kernel memory of each one's wire maps.

use std::{path::Path, time::Instant};

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use super::{
    ctx::Ctx,
    memory::{self, MIB},
    model::{Basis, Better, Bound, Family, Measurement},
    netvlan::Netvlan,
    sandbox::{netns, try_veth_pair, Netns, NetnsSet, OwnedDir},
    timing::{timed, Timed},
};

const CNI_DIR: &str = "/usr/lib/cni";
const NETVLAN: &str = "netvlan";
const NETVLAN_DAEMON: &str = "netvlan, through its daemon";
const CNI: &str = "CNI macvlan + host-local";
const NETVLAN_CNI: &str = "netvlan-cni";
const CNI_GOAL: &str = "faster than the reference plugin per endpoint";
const ATTACH: &str = "attach (connect / ADD)";
const DETACH: &str = "detach (disconnect / DEL)";
const CYCLE: &str = "attach + detach";
const PER_ENDPOINT: &str = "time per endpoint";
const TOTAL: &str = "total time";
const GOAL: &str = ">= 5x faster per endpoint";
const EMPTY: &str = "netvlan, empty network";
const SCALE_CONNECT: &str = "connect, network at scale";
const SCALE_DISCONNECT: &str = "disconnect, network at scale";
const SCALE_GOAL: &str = "<= 1.2x the empty network's";
const MEMORY: &str = "kernel memory of the wire's maps (memlock; goal <= 8 MiB)";
/// The scale: endpoints present for the scale rows of a full run.
const SCALE_FULL: usize = 10_000;

/// Endpoints brought up together in one network.
pub fn endpoints(ctx: &Ctx) -> usize {
    ctx.pick(50, 1000)
}

/// Single attach + detach cycles per side.
pub fn cycles(ctx: &Ctx) -> usize {
    ctx.pick(30, 200)
}

/// Endpoints present on the network at scale (the 10,000; a
/// quick run fewer, and its method says so).
pub fn scale_endpoints(ctx: &Ctx) -> usize {
    ctx.pick(500, SCALE_FULL)
}

/// Connect + disconnect cycles on each network of the scale rows.
fn scale_cycles(ctx: &Ctx) -> usize {
    ctx.pick(10, 30)
}

pub fn steps(ctx: &Ctx) -> u64 {
    (cycles(ctx) + 6 * endpoints(ctx) + scale_endpoints(ctx) + scale_cycles(ctx)) as u64
}

pub fn run(ctx: &Ctx, bar: &ProgressBar) -> Result<Family> {
    let n = endpoints(ctx);
    let cycles = cycles(ctx);
    bar.set_message(format!("creating {n} sandboxes and both parents"));
    let nv_host = netns(&ctx.token, "cp-nv", true)?;
    try_veth_pair(&nv_host, "lan0", &nv_host, "lan0p")?;
    let cni_host = netns(&ctx.token, "cp-cni", true)?;
    try_veth_pair(&cni_host, "lan0", &cni_host, "lan0p")?;
    let sandboxes = NetnsSet::new(&ctx.token, "sb", n)?;
    let netvlan = Netvlan::new(&ctx.netvlan, &nv_host, &ctx.token, "cp")?;
    netvlan.create_bench_network("172.31.240.0/20", "lan0", &[])?;
    let cni = CniMacvlan::new(ctx, &cni_host)?;
    let ncni_host = netns(&ctx.token, "cp-ncni", true)?;
    try_veth_pair(&ncni_host, "lan0", &ncni_host, "lan0p")?;
    let ncni = NetvlanCni::new(ctx, &ncni_host)?;
    // The same CLI with a daemon running beside it (which then runs its
    // connects and disconnects), on a parent of its own.
    let nvd_host = netns(&ctx.token, "cp-nvd", true)?;
    try_veth_pair(&nvd_host, "lan0", &nvd_host, "lan0p")?;
    let nvd = Netvlan::new(&ctx.netvlan, &nvd_host, &ctx.token, "cpd")?;
    nvd.create_bench_network("172.31.224.0/20", "lan0", &[])?;
    let nvd_daemon = nvd.start_daemon()?;

    // Single cycles, interleaved: netvlan's connect and disconnect, then
    // the plugin's ADD and DEL, then netvlan-cni's, on the same sandbox.
    let mut nv = [Vec::new(), Vec::new(), Vec::new()];
    let mut peer = [Vec::new(), Vec::new(), Vec::new()];
    let mut ours = [Vec::new(), Vec::new(), Vec::new()];
    let mut via = [Vec::new(), Vec::new(), Vec::new()];
    for i in 0..cycles {
        bar.set_message(format!("attach + detach cycle {}/{cycles}", i + 1));
        let sandbox = &sandboxes.names()[i % n];
        let up = netvlan.timed(&["connect", "bench", sandbox])?.ms();
        let down = netvlan.timed(&["disconnect", "bench", sandbox])?.ms();
        nv[0].push(up);
        nv[1].push(down);
        nv[2].push(up + down);
        let id = format!("cycle-{i}");
        let add = cni.add(sandbox, &id)?.ms();
        let del = cni.del(sandbox, &id)?.ms();
        peer[0].push(add);
        peer[1].push(del);
        peer[2].push(add + del);
        let add = ncni.add(sandbox, &id)?.ms();
        let del = ncni.del(sandbox, &id)?.ms();
        ours[0].push(add);
        ours[1].push(del);
        ours[2].push(add + del);
        let up = nvd
            .timed(&["connect", "--ifname", "eth3", "bench", sandbox])?
            .ms();
        let down = nvd.timed(&["disconnect", "bench", sandbox])?.ms();
        via[0].push(up);
        via[1].push(down);
        via[2].push(up + down);
        super::progress::tick(bar)?;
    }
    drop(nvd_daemon);

    // Bulk: N endpoints in one network, one after the other as a runtime
    // starting N containers would, then all taken down.
    bar.set_message(format!("netvlan: bringing up {n} endpoints"));
    let nv_up = bulk(bar, sandboxes.names(), |sb| {
        netvlan.timed(&["connect", "bench", sb])
    })?;
    check_endpoints(sandboxes.names(), "eth0", true)?;
    bar.set_message(format!("netvlan: tearing down {n} endpoints"));
    let nv_down = bulk(bar, sandboxes.names(), |sb| {
        netvlan.timed(&["disconnect", "bench", sb])
    })?;
    check_endpoints(sandboxes.names(), "eth0", false)?;
    bar.set_message(format!("CNI: bringing up {n} endpoints"));
    let cni_up = bulk(bar, sandboxes.names(), |sb| cni.add(sb, sb))?;
    check_endpoints(sandboxes.names(), "eth1", true)?;
    bar.set_message(format!("CNI: tearing down {n} endpoints"));
    let cni_down = bulk(bar, sandboxes.names(), |sb| cni.del(sb, sb))?;
    check_endpoints(sandboxes.names(), "eth1", false)?;
    bar.set_message(format!("netvlan-cni: bringing up {n} endpoints"));
    let ncni_up = bulk(bar, sandboxes.names(), |sb| ncni.add(sb, sb))?;
    check_endpoints(sandboxes.names(), "eth2", true)?;
    bar.set_message(format!("netvlan-cni: tearing down {n} endpoints"));
    let ncni_down = bulk(bar, sandboxes.names(), |sb| ncni.del(sb, sb))?;
    check_endpoints(sandboxes.names(), "eth2", false)?;

    let at_scale = scale(ctx, bar)?;

    let single = format!(
        "{cycles} cycles, wall time of each command from spawn to exit, both sides \
         interleaved cycle by cycle"
    );
    let mut family = Family {
        key: "control",
        title: "Control plane: attaching and detaching endpoints",
        method: vec![
            format!(
                "netvlan: `netvlan connect bench SANDBOX` / `netvlan disconnect bench SANDBOX` \
                 (release build) in a namespace holding the parent veth, private \
                 NETVLAN_STATE_DIR and NETVLAN_BPF_DIR, macvlan network 172.31.240.0/20 with \
                 the datapath attached to the parent."
            ),
            format!(
                "Peer: {CNI_DIR}/macvlan (containernetworking-plugins {}) with host-local IPAM, \
                 CNI 1.0.0 config on stdin, CNI_COMMAND/CNI_CONTAINERID/CNI_NETNS/CNI_IFNAME/\
                 CNI_PATH in the environment, run in the namespace of its own parent veth.",
                cni.version
            ),
            format!(
                "netvlan-cni: the release `netvlan-cni` driven exactly as the peer (same \
                 environment, same config with \"type\": \"netvlan-cni\" and the subnet \
                 172.31.208.0/20, plus netvlan's stateDir/bpfDir keys for a private state), in \
                 the namespace of its own parent veth, on the network `{}` the CLI made there \
                 first (as a host shares one network between the CLI and CNI).",
                ncni.network
            ),
            "netvlan through its daemon: the same CLI and commands (`--ifname eth3`) on a \
             network of the same shape (172.31.224.0/20) on its own parent, with `netvlan \
             daemon` running beside it on its own NETVLAN_RUN_DIR, so the CLI hands each \
             connect and disconnect to the daemon (its kept endpoint loader and netlink \
             connection); every other netvlan row has a private NETVLAN_RUN_DIR with no \
             daemon."
                .into(),
            "All through `nsenter --net=…` (which execs the program), into the same bare \
             sandbox namespaces (netvlan as eth0, the plugin as eth1, netvlan-cni as eth2, \
             netvlan through its daemon as eth3)."
                .into(),
            format!(
                "Single: {single}. Bulk: {n} endpoints brought up one after the other (one \
                 sandbox each) and then torn down, timed as a whole; the distribution of the \
                 single commands inside it is kept as `per endpoint` in the JSON."
            ),
        ],
        measurements: Vec::new(),
        comparisons: Vec::new(),
        unavailable: Vec::new(),
    };
    family.method.extend(at_scale.method());
    for (who, samples) in [
        (NETVLAN, nv),
        (CNI, peer),
        (NETVLAN_CNI, ours),
        (NETVLAN_DAEMON, via),
    ] {
        for (case, s) in [ATTACH, DETACH, CYCLE].into_iter().zip(samples) {
            family.measurements.push(Measurement::new(
                who,
                case,
                PER_ENDPOINT,
                "ms",
                Better::Lower,
                s,
                single.clone(),
            )?);
        }
    }
    for (who, up, down) in [
        (NETVLAN, nv_up, nv_down),
        (CNI, cni_up, cni_down),
        (NETVLAN_CNI, ncni_up, ncni_down),
    ] {
        for (case, b) in [
            (format!("bring-up of {n}"), up),
            (format!("teardown of {n}"), down),
        ] {
            family.measurements.push(
                Measurement::new(
                    who,
                    &case,
                    TOTAL,
                    "s",
                    Better::Lower,
                    vec![b.total_s],
                    format!("{n} sequential commands, wall time of the whole loop, 1 run"),
                )?
                .with_aux("per endpoint", "ms", &b.each_ms)?,
            );
        }
    }
    for case in [ATTACH, DETACH] {
        family.compare(NETVLAN, CNI, case, PER_ENDPOINT, Basis::Paired)?;
    }
    family
        .compare(NETVLAN, CNI, CYCLE, PER_ENDPOINT, Basis::Paired)?
        .set_goal(GOAL, Bound::AtMost(0.2), None);
    family.compare(NETVLAN, CNI, CYCLE, PER_ENDPOINT, Basis::P99)?;
    for case in [ATTACH, DETACH] {
        family.compare(NETVLAN_DAEMON, CNI, case, PER_ENDPOINT, Basis::Paired)?;
    }
    family
        .compare(NETVLAN_DAEMON, CNI, CYCLE, PER_ENDPOINT, Basis::Paired)?
        .set_goal(GOAL, Bound::AtMost(0.2), None);
    family.compare(NETVLAN_DAEMON, NETVLAN, CYCLE, PER_ENDPOINT, Basis::Paired)?;
    family
        .compare(
            NETVLAN,
            CNI,
            &format!("bring-up of {n}"),
            TOTAL,
            Basis::Medians,
        )?
        .set_goal(GOAL, Bound::AtMost(0.2), None);
    family.compare(
        NETVLAN,
        CNI,
        &format!("teardown of {n}"),
        TOTAL,
        Basis::Medians,
    )?;
    for case in [ATTACH, DETACH] {
        family.compare(NETVLAN_CNI, CNI, case, PER_ENDPOINT, Basis::Paired)?;
    }
    family
        .compare(NETVLAN_CNI, CNI, CYCLE, PER_ENDPOINT, Basis::Paired)?
        .set_goal(CNI_GOAL, Bound::AtMost(1.0), None);
    family.compare(NETVLAN_CNI, CNI, CYCLE, PER_ENDPOINT, Basis::P99)?;
    family
        .compare(
            NETVLAN_CNI,
            CNI,
            &format!("bring-up of {n}"),
            TOTAL,
            Basis::Medians,
        )?
        .set_goal(CNI_GOAL, Bound::AtMost(1.0), None);
    family.compare(
        NETVLAN_CNI,
        CNI,
        &format!("teardown of {n}"),
        TOTAL,
        Basis::Medians,
    )?;
    at_scale.add_to(&mut family)?;
    Ok(family)
}

/// The scale rows' figures: per-cycle times on both networks, and each
/// wire's maps with their memlock in bytes.
struct AtScale {
    present: usize,
    cycles: usize,
    fill_s: f64,
    connect: [Vec<f64>; 2],
    disconnect: [Vec<f64>; 2],
    memory: [Vec<(&'static str, u64)>; 2],
}

impl AtScale {
    fn full_subject(&self) -> String {
        format!("netvlan, {} endpoints present", self.present)
    }

    fn method(&self) -> Vec<String> {
        let quick = if self.present < SCALE_FULL {
            format!(
                " (quick run: {} endpoints instead of the full run's {SCALE_FULL})",
                self.present
            )
        } else {
            String::new()
        };
        vec![
            format!(
                "At scale: two netvlan instances (own state and bpffs directories), each on its \
                 own parent veth in a namespace of its own, macvlan network 10.200.0.0/16: one \
                 left empty, the other filled with {} endpoints{quick} by that many sequential \
                 `netvlan connect` (one sandbox each, {:.1} s in all). Then {} cycles, \
                 interleaved: connect + disconnect of one more sandbox on the empty network, \
                 then the same sandbox on the full one; ratio = median of per-cycle ratios.",
                self.present, self.fill_s, self.cycles
            ),
            format!(
                "Memory: the sum of `memlock:` (/proc/self/fdinfo of each map opened from its \
                 pin) over the {} maps the wire object declares (WIRE_MAPS), of each network's \
                 wire: with no endpoints and with {} present; the issue's goal is 8 MiB per \
                 wire at the same capacities.",
                self.memory[0].len(),
                self.present
            ),
        ]
    }

    fn add_to(self, family: &mut Family) -> Result<()> {
        let full = self.full_subject();
        let method = format!(
            "{} interleaved cycles per network, wall time of each command",
            self.cycles
        );
        for (who, connect, disconnect) in [
            (EMPTY.to_string(), &self.connect[0], &self.disconnect[0]),
            (full.clone(), &self.connect[1], &self.disconnect[1]),
        ] {
            for (case, samples) in [(SCALE_CONNECT, connect), (SCALE_DISCONNECT, disconnect)] {
                family.measurements.push(Measurement::new(
                    &who,
                    case,
                    PER_ENDPOINT,
                    "ms",
                    Better::Lower,
                    samples.clone(),
                    method.clone(),
                )?);
            }
        }
        family
            .compare(&full, EMPTY, SCALE_CONNECT, PER_ENDPOINT, Basis::Paired)?
            .set_goal(SCALE_GOAL, Bound::AtMost(1.2), None);
        family.compare(&full, EMPTY, SCALE_DISCONNECT, PER_ENDPOINT, Basis::Paired)?;
        for (case, maps) in [
            ("one wire's maps, no endpoints".to_string(), &self.memory[0]),
            (
                format!("one wire's maps, {} endpoints", self.present),
                &self.memory[1],
            ),
        ] {
            let total: u64 = maps.iter().map(|(_, bytes)| bytes).sum();
            let mut m = Measurement::new(
                NETVLAN,
                &case,
                MEMORY,
                "MiB",
                Better::Lower,
                vec![total as f64 / MIB],
                format!(
                    "sum of memlock over {} pinned maps; per map in `also`",
                    maps.len()
                ),
            )?;
            for (name, bytes) in maps {
                m = m.with_aux(name, "MiB", &[*bytes as f64 / MIB])?;
            }
            family.measurements.push(m);
        }
        Ok(())
    }
}

/// Connect and disconnect on an empty network and on one holding
/// [`scale_endpoints`], and both wires' map memory.
fn scale(ctx: &Ctx, bar: &ProgressBar) -> Result<AtScale> {
    let present = scale_endpoints(ctx);
    let cycles = scale_cycles(ctx);
    bar.set_message("at scale: creating both parents");
    let empty_host = netns(&ctx.token, "cp-se", true)?;
    try_veth_pair(&empty_host, "lan0", &empty_host, "lan0p")?;
    let full_host = netns(&ctx.token, "cp-sf", true)?;
    try_veth_pair(&full_host, "lan0", &full_host, "lan0p")?;
    let empty = Netvlan::new(&ctx.netvlan, &empty_host, &ctx.token, "se")?;
    empty.create_bench_network("10.200.0.0/16", "lan0", &[])?;
    let full = Netvlan::new(&ctx.netvlan, &full_host, &ctx.token, "sf")?;
    full.create_bench_network("10.200.0.0/16", "lan0", &[])?;
    // Declared after the netvlan instances, so dropped before them: the
    // namespaces take the links and their programs with them first, and
    // removing the pins then detaches nothing one by one.
    bar.set_message(format!("at scale: creating {} sandboxes", present + 1));
    let sandboxes = NetnsSet::new(&ctx.token, "ss", present + 1)?;
    let (filled, measured) = sandboxes.names().split_at(present);
    let measured = &measured[0];

    bar.set_message(format!("at scale: connecting {present} endpoints"));
    let fill = bulk(bar, filled, |sb| full.timed(&["connect", "bench", sb]))?;
    check_endpoints(filled, "eth0", true)?;
    let memory = [
        memory::wire_maps_memlock(&memory::wire_pin_dir(empty.bpf_dir())?)?,
        memory::wire_maps_memlock(&memory::wire_pin_dir(full.bpf_dir())?)?,
    ];

    let mut connect = [Vec::new(), Vec::new()];
    let mut disconnect = [Vec::new(), Vec::new()];
    for i in 0..cycles {
        bar.set_message(format!("at scale: cycle {}/{cycles}", i + 1));
        for (side, netvlan) in [&empty, &full].into_iter().enumerate() {
            connect[side].push(netvlan.timed(&["connect", "bench", measured])?.ms());
            disconnect[side].push(netvlan.timed(&["disconnect", "bench", measured])?.ms());
        }
        super::progress::tick(bar)?;
    }
    bar.set_message("at scale: tearing down");
    Ok(AtScale {
        present,
        cycles,
        fill_s: fill.total_s,
        connect,
        disconnect,
        memory,
    })
}

struct Bulk {
    total_s: f64,
    each_ms: Vec<f64>,
}

fn bulk(
    bar: &ProgressBar,
    sandboxes: &[String],
    mut op: impl FnMut(&str) -> Result<Timed>,
) -> Result<Bulk> {
    let start = Instant::now();
    let mut each_ms = Vec::with_capacity(sandboxes.len());
    for sb in sandboxes {
        each_ms.push(op(sb)?.ms());
        super::progress::tick(bar)?;
    }
    Ok(Bulk {
        total_s: start.elapsed().as_secs_f64(),
        each_ms,
    })
}

/// Checks the first, middle and last sandbox have (or no longer have) the
/// interface: a bulk run that did nothing must not look fast.
fn check_endpoints(names: &[String], ifname: &str, present: bool) -> Result<()> {
    for sb in [&names[0], &names[names.len() / 2], &names[names.len() - 1]] {
        let out = std::process::Command::new("ip")
            .args(["-n", sb, "link", "show", "dev", ifname])
            .output()?;
        if out.status.success() != present {
            bail!(
                "{sb} {} {ifname} after the bulk run",
                if present { "lacks" } else { "still has" }
            );
        }
    }
    Ok(())
}

/// The reference CNI macvlan plugin, invoked the way a runtime invokes it.
struct CniMacvlan<'a> {
    host: &'a Netns,
    config: Vec<u8>,
    version: String,
    _ipam: OwnedDir,
}

impl<'a> CniMacvlan<'a> {
    fn new(ctx: &Ctx, host: &'a Netns) -> Result<Self> {
        for plugin in ["macvlan", "host-local"] {
            if !Path::new(CNI_DIR).join(plugin).is_file() {
                bail!("the CNI peer cannot be set up: {CNI_DIR}/{plugin} is missing (Debian package containernetworking-plugins)");
            }
        }
        let ipam = OwnedDir::temp(&ctx.token, "cni-ipam")?;
        let config = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "nvbench",
            "type": "macvlan",
            "master": "lan0",
            "mode": "bridge",
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": "172.31.224.0/20" }]],
                "dataDir": ipam.path(),
            },
        });
        let version = super::sandbox::package_version("containernetworking-plugins");
        let cni = CniMacvlan {
            host,
            config: serde_json::to_vec(&config)?,
            version,
            _ipam: ipam,
        };
        Ok(cni)
    }

    fn invoke(&self, command: &str, sandbox: &str, id: &str) -> Result<Timed> {
        let mut cmd = self.host.command(Path::new(CNI_DIR).join("macvlan"));
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", Path::new("/var/run/netns").join(sandbox))
            .env("CNI_IFNAME", "eth1")
            .env("CNI_PATH", CNI_DIR);
        timed(&mut cmd, Some(&self.config)).with_context(|| format!("CNI {command} for {sandbox}"))
    }

    fn add(&self, sandbox: &str, id: &str) -> Result<Timed> {
        let t = self.invoke("ADD", sandbox, id)?;
        let result: serde_json::Value =
            serde_json::from_slice(&t.stdout).context("CNI ADD printed no JSON result")?;
        if result["ips"].as_array().is_none_or(|ips| ips.is_empty()) {
            bail!("CNI ADD for {sandbox} returned no address: {result}");
        }
        Ok(t)
    }

    fn del(&self, sandbox: &str, id: &str) -> Result<Timed> {
        self.invoke("DEL", sandbox, id)
    }
}

/// `netvlan-cni`, invoked exactly as [`CniMacvlan`] invokes the reference
/// plugin, on a network the CLI created with the same parent and subnet.
struct NetvlanCni<'a> {
    host: &'a Netns,
    bin: std::path::PathBuf,
    config: Vec<u8>,
    network: String,
    // Dropped last: its state and pins, after the plugin's last DEL.
    _netvlan: Netvlan,
}

impl<'a> NetvlanCni<'a> {
    fn new(ctx: &Ctx, host: &'a Netns) -> Result<Self> {
        const SUBNET: &str = "172.31.208.0/20";
        let netvlan = Netvlan::new(&ctx.netvlan, host, &ctx.token, "cpc")?;
        netvlan.create_bench_network(SUBNET, "lan0", &["macvlan_mode=bridge"])?;
        let config = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "bench",
            "type": "netvlan-cni",
            "master": "lan0",
            "mode": "bridge",
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": SUBNET }]],
            },
            "stateDir": netvlan.state_dir(),
            "bpfDir": netvlan.bpf_dir(),
        });
        Ok(NetvlanCni {
            host,
            bin: ctx.netvlan_cni.clone(),
            config: serde_json::to_vec(&config)?,
            network: "bench".into(),
            _netvlan: netvlan,
        })
    }

    fn invoke(&self, command: &str, sandbox: &str, id: &str) -> Result<Timed> {
        let mut cmd = self.host.command(&self.bin);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", Path::new("/var/run/netns").join(sandbox))
            .env("CNI_IFNAME", "eth2")
            .env("CNI_PATH", CNI_DIR)
            .env_remove("NETVLAN_STATE_DIR")
            .env_remove("NETVLAN_BPF_DIR")
            .env_remove("RUST_LOG");
        timed(&mut cmd, Some(&self.config))
            .with_context(|| format!("netvlan-cni {command} for {sandbox}"))
    }

    fn add(&self, sandbox: &str, id: &str) -> Result<Timed> {
        let t = self.invoke("ADD", sandbox, id)?;
        let result: serde_json::Value =
            serde_json::from_slice(&t.stdout).context("netvlan-cni ADD printed no JSON result")?;
        if result["ips"].as_array().is_none_or(|ips| ips.is_empty()) {
            bail!("netvlan-cni ADD for {sandbox} returned no address: {result}");
        }
        Ok(t)
    }

    fn del(&self, sandbox: &str, id: &str) -> Result<Timed> {
        self.invoke("DEL", sandbox, id)
    }
}
