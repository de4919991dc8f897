//! Family `traffic`: what containers get through netvlan's network with
//! the datapath attached, against the same containers on a plain macvlan
//! (no program) and on a Docker-style Linux bridge with a veth pair per
//! container.
//!
//! Each variant is a lab of its own: an external host and a machine joined
//! by a veth pair (the machine's end is the parent, `lan0`), and two
//! containers on the machine. All three labs exist at once and are measured
//! round by round in turn, so drift of the shared machine hits all three.
//! Addresses are the labs' own (172.31.250.0/24 inside their namespaces).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use super::{
    ctx::Ctx,
    model::{Basis, Better, Bound, Family, Measurement},
    netvlan::Netvlan,
    perf_tools,
    sandbox::{netns, try_veth_pair, wait_for, Netns, Process},
};

const EXT_IP: &str = "172.31.250.2";
const C1_IP: &str = "172.31.250.10";
const C2_IP: &str = "172.31.250.11";

const NETVLAN_OFF: &str = "netvlan (policies off)";
const NETVLAN_ON: &str = "netvlan (all policies on)";
const NETVLAN_XDP: &str = "netvlan (all policies on, hook=xdp)";
const MACVLAN: &str = "plain macvlan";
const MACVLAN_HOOK: &str = "plain macvlan + pass-only XDP";
const BRIDGE: &str = "bridge + veth";
const THROUGHPUT: &str = "TCP throughput";
const LATENCY: &str = "UDP ping-pong latency";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    NetvlanOff,
    NetvlanOn,
    /// All policies on, the wire at native XDP (`-o hook=xdp`) instead of
    /// TC, which `auto` picks on a veth parent: what the hook costs TCP.
    NetvlanXdp,
    Macvlan,
    /// Plain macvlan with the benchmarks' pass-only XDP program on lan0:
    /// what the XDP hook itself costs on a veth, whatever the program does.
    MacvlanHook,
    Bridge,
}

impl Variant {
    const ALL: [Variant; 6] = [
        Variant::NetvlanOff,
        Variant::NetvlanOn,
        Variant::NetvlanXdp,
        Variant::Macvlan,
        Variant::MacvlanHook,
        Variant::Bridge,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::NetvlanOff => NETVLAN_OFF,
            Variant::NetvlanOn => NETVLAN_ON,
            Variant::NetvlanXdp => NETVLAN_XDP,
            Variant::Macvlan => MACVLAN,
            Variant::MacvlanHook => MACVLAN_HOOK,
            Variant::Bridge => BRIDGE,
        }
    }

    fn short(self) -> &'static str {
        match self {
            Variant::NetvlanOff => "nv",
            Variant::NetvlanOn => "np",
            Variant::NetvlanXdp => "nx",
            Variant::Macvlan => "mv",
            Variant::MacvlanHook => "mx",
            Variant::Bridge => "br",
        }
    }
}

/// The policies of the all-on lab: every filter netvlan has, none of which
/// the lab's own traffic trips (its MACs are registered, it is untagged).
const ALL_POLICIES: [&str; 3] = [
    "unknown_dst=drop",
    "vlans=10,20",
    "mac_deny=02:b0:de:ad:00:01,02:b0:de:ad:00:02",
];

/// Where traffic flows, and who runs the client.
#[derive(Clone, Copy)]
enum Path {
    /// Client in container 1, server on the external host.
    ToExternal,
    /// Same, server sending (`iperf3 -R`): frames enter through the
    /// parent's receive path, where the XDP program runs.
    FromExternal,
    /// The same with TSO off on the external host's end in every lab, so
    /// MTU-sized frames cross the wire as they do from a physical NIC (and
    /// as they already do in netvlan's labs, see the method notes).
    FromExternalWire,
    /// Client in container 1, server in container 2.
    ContainerToContainer,
}

impl Path {
    fn name(self, metric: &str) -> &'static str {
        match (self, metric == LATENCY) {
            (Path::ToExternal, false) => "container -> external",
            (Path::FromExternal, false) => "external -> container",
            (Path::FromExternalWire, false) => "external -> container, MTU frames",
            (Path::ToExternal | Path::FromExternal | Path::FromExternalWire, true) => {
                "container <-> external"
            }
            (Path::ContainerToContainer, false) => "container -> container",
            (Path::ContainerToContainer, true) => "container <-> container",
        }
    }

    fn server_ip(self) -> &'static str {
        match self {
            Path::ToExternal | Path::FromExternal | Path::FromExternalWire => EXT_IP,
            Path::ContainerToContainer => C2_IP,
        }
    }
}

/// Seconds per iperf3 / sockperf run.
fn run_seconds(ctx: &Ctx) -> u64 {
    ctx.pick(1, 3)
}

/// Two rounds in a quick run: five labs and six paths make every round
/// long, and a smoke run only has to show the family works.
fn rounds(ctx: &Ctx) -> usize {
    ctx.pick(2, 7)
}

const THROUGHPUT_PATHS: [Path; 4] = [
    Path::ToExternal,
    Path::FromExternal,
    Path::FromExternalWire,
    Path::ContainerToContainer,
];
const LATENCY_PATHS: [Path; 2] = [Path::ToExternal, Path::ContainerToContainer];

pub fn steps(ctx: &Ctx) -> u64 {
    (rounds(ctx) * (THROUGHPUT_PATHS.len() + LATENCY_PATHS.len()) * Variant::ALL.len()) as u64
}

pub fn run(ctx: &Ctx, bar: &ProgressBar) -> Result<Family> {
    let mut labs = Vec::new();
    for variant in Variant::ALL {
        bar.set_message(format!("building the {} lab", variant.name()));
        labs.push(Lab::build(ctx, variant).with_context(|| format!("{} lab", variant.name()))?);
    }
    let secs = run_seconds(ctx);
    let rounds = rounds(ctx);
    // throughput[path][variant], latency[path][variant]: per-round samples.
    let mut throughput = vec![vec![Vec::new(); labs.len()]; THROUGHPUT_PATHS.len()];
    let mut latency = vec![vec![Vec::new(); labs.len()]; LATENCY_PATHS.len()];
    let mut latency_p99 = vec![vec![Vec::new(); labs.len()]; LATENCY_PATHS.len()];
    for round in 0..rounds {
        for (p, path) in THROUGHPUT_PATHS.into_iter().enumerate() {
            for (v, lab) in labs.iter().enumerate() {
                bar.set_message(format!(
                    "round {}/{rounds}: iperf3 {} on {}",
                    round + 1,
                    path.name(THROUGHPUT),
                    lab.variant.name()
                ));
                throughput[p][v].push(lab.iperf3(path, secs)?);
                super::progress::tick(bar)?;
            }
        }
        for (p, path) in LATENCY_PATHS.into_iter().enumerate() {
            for (v, lab) in labs.iter().enumerate() {
                bar.set_message(format!(
                    "round {}/{rounds}: sockperf {} on {}",
                    round + 1,
                    path.name(LATENCY),
                    lab.variant.name()
                ));
                let (p50, p99) = lab.sockperf(path, secs)?;
                latency[p][v].push(p50);
                latency_p99[p][v].push(p99);
                super::progress::tick(bar)?;
            }
        }
    }
    let mut tso = Vec::new();
    for lab in &labs {
        lab.check_datapath_counted()?;
        tso.push(format!("{}: {}", lab.variant.name(), lab.external_tso()?));
    }

    let mut family = Family {
        key: "traffic",
        title: "Container traffic",
        method: vec![
            "Per variant, a lab of namespaces: external host <-veth-> machine (parent `lan0`), \
             two containers on the machine; IPv6 off; offloads left at the kernel's defaults."
                .into(),
            "netvlan: `netvlan network create -d macvlan -o parent=lan0` + `netvlan connect` \
             for both containers (bridge mode macvlan; `hook=auto` runs the wire program at \
             lan0's TC ingress, TCX, since native XDP on a veth turns its offloads off), \
             every policy off."
                .into(),
            format!(
                "netvlan (all policies on): the same, then `netvlan policy set bench {}`. \
                 netvlan (all policies on, hook=xdp): the same with `-o hook=xdp`, the wire \
                 program in native XDP on lan0 (what netvlan did before the TC hook).",
                ALL_POLICIES.join(" ")
            ),
            "plain macvlan: the same macvlan links made with `ip link add … type macvlan mode \
             bridge`, no program. plain macvlan + pass-only XDP: the same with the per-packet \
             benchmark's floor program (returns XDP_PASS, nothing else) attached to lan0 in \
             native mode, to show what the veth's XDP hook costs by itself. bridge + veth: a Linux bridge with lan0 enslaved and a veth \
             pair per container (L2 as Docker's bridge driver wires it; no NAT, the firewall \
             is never touched)."
                .into(),
            format!(
                "Throughput: iperf3 TCP, one stream, {secs} s per run (`-t {secs} -J`, receiver's \
                 bits/s); external -> container is `-R`, so data enters through lan0's hook (TC or XDP)."
            ),
            format!(
                "Latency: sockperf ping-pong (UDP), {secs} s per run; the sample is each run's \
                 median one-way latency (sockperf reports RTT/2), its p99 is kept in the JSON."
            ),
            format!(
                "TSO on the external host's veth, as `ethtool -k` reports it during the run: \
                 {}. A native XDP program on a veth makes the kernel turn off TSO on the \
                 veth's peer, so in the labs with native XDP on lan0 the external host sends MTU-sized segments \
                 (a veth-only coupling; a physical NIC's link partner is unaffected). \
                 The case `external -> container, MTU frames` turns TSO off on that end in \
                 every lab for its runs (`ethtool -K eth0 tso off`), so all labs receive what a \
                 physical link delivers; GRO is on on lan0 in every lab (`ethtool -K lan0 gro \
                 on`), as on a physical NIC.",
                tso.join(", ")
            ),
            format!(
                "{rounds} rounds; each round measures every path on every lab in turn \
                 (ratios are the median of per-round ratios)."
            ),
        ],
        measurements: Vec::new(),
        comparisons: Vec::new(),
        unavailable: Vec::new(),
    };
    for (p, path) in THROUGHPUT_PATHS.into_iter().enumerate() {
        for (v, variant) in Variant::ALL.into_iter().enumerate() {
            family.measurements.push(Measurement::new(
                variant.name(),
                path.name(THROUGHPUT),
                THROUGHPUT,
                "Gbit/s",
                Better::Higher,
                std::mem::take(&mut throughput[p][v]),
                format!("iperf3 -t {secs}, {rounds} runs"),
            )?);
        }
    }
    for (p, path) in LATENCY_PATHS.into_iter().enumerate() {
        for (v, variant) in Variant::ALL.into_iter().enumerate() {
            family.measurements.push(
                Measurement::new(
                    variant.name(),
                    path.name(LATENCY),
                    LATENCY,
                    "us",
                    Better::Lower,
                    std::mem::take(&mut latency[p][v]),
                    format!("sockperf ping-pong -t {secs}, median of each run, {rounds} runs"),
                )?
                .with_aux("p99 within run", "us", &latency_p99[p][v])?,
            );
        }
    }
    for path in THROUGHPUT_PATHS {
        let case = path.name(THROUGHPUT);
        family
            .compare(NETVLAN_ON, MACVLAN, case, THROUGHPUT, Basis::Paired)?
            .set_goal(">= 0.95x plain macvlan", Bound::AtLeast(0.95), None);
        family
            .compare(NETVLAN_ON, BRIDGE, case, THROUGHPUT, Basis::Paired)?
            .set_goal("better than bridge + veth", Bound::AtLeast(1.0), None);
        family.compare(NETVLAN_OFF, MACVLAN, case, THROUGHPUT, Basis::Paired)?;
        // The TC hook against native XDP, same policies, same run.
        family.compare(NETVLAN_XDP, MACVLAN, case, THROUGHPUT, Basis::Paired)?;
        family.compare(NETVLAN_ON, NETVLAN_XDP, case, THROUGHPUT, Basis::Paired)?;
        family.compare(MACVLAN_HOOK, MACVLAN, case, THROUGHPUT, Basis::Paired)?;
        family.compare(NETVLAN_ON, MACVLAN_HOOK, case, THROUGHPUT, Basis::Paired)?;
    }
    for path in LATENCY_PATHS {
        let case = path.name(LATENCY);
        // 0.95x the performance = at most 1/0.95 the latency.
        family
            .compare(NETVLAN_ON, MACVLAN, case, LATENCY, Basis::Paired)?
            .set_goal(
                ">= 0.95x plain macvlan (latency <= 1.053x)",
                Bound::AtMost(1.0 / 0.95),
                None,
            );
        family
            .compare(NETVLAN_ON, BRIDGE, case, LATENCY, Basis::Paired)?
            .set_goal("better than bridge + veth", Bound::AtMost(1.0), None);
        family.compare(NETVLAN_OFF, MACVLAN, case, LATENCY, Basis::Paired)?;
    }
    Ok(family)
}

/// One variant's namespaces, links and servers. Fields drop in order:
/// servers first, then netvlan's state and pins, then the namespaces.
struct Lab {
    variant: Variant,
    _servers: Vec<Process>,
    netvlan: Option<Netvlan>,
    /// The pass-only program of [`Variant::MacvlanHook`]; dropping it
    /// detaches it (its link is not pinned).
    _hook: Option<aya::Ebpf>,
    ext: Netns,
    host: Netns,
    c1: Netns,
    c2: Netns,
}

impl Lab {
    fn build(ctx: &Ctx, variant: Variant) -> Result<Self> {
        let kind = |role: &str| format!("{}-{role}", variant.short());
        let ext = netns(&ctx.token, &kind("ext"), false)?;
        let host = netns(&ctx.token, &kind("host"), false)?;
        let c1 = netns(&ctx.token, &kind("c1"), false)?;
        let c2 = netns(&ctx.token, &kind("c2"), false)?;
        try_veth_pair(&ext, "eth0", &host, "lan0")?;
        ext.run(
            "ip",
            &["addr", "add", &format!("{EXT_IP}/24"), "dev", "eth0"],
        )?;
        let mut lab = Lab {
            variant,
            _servers: Vec::new(),
            netvlan: None,
            _hook: None,
            ext,
            host,
            c1,
            c2,
        };
        match variant {
            Variant::NetvlanOff => lab.wire_netvlan(ctx, &[], "tc")?,
            Variant::NetvlanOn => lab.wire_netvlan(ctx, &ALL_POLICIES, "tc")?,
            Variant::NetvlanXdp => lab.wire_netvlan(ctx, &ALL_POLICIES, "xdp")?,
            Variant::Macvlan => lab.wire_macvlan()?,
            Variant::MacvlanHook => {
                lab.wire_macvlan()?;
                lab._hook = Some(attach_pass_only(ctx, &lab.host, "lan0")?);
            }
            Variant::Bridge => lab.wire_bridge()?,
        }
        // As on a physical NIC: GRO on the receiving end (on a veth this
        // also gives it a NAPI poll, as attaching XDP does).
        lab.host.run("ethtool", &["-K", "lan0", "gro", "on"])?;
        lab.check_reachable()?;
        lab.start_servers()?;
        Ok(lab)
    }

    fn containers(&self) -> [(&Netns, &str); 2] {
        [(&self.c1, C1_IP), (&self.c2, C2_IP)]
    }

    /// A netvlan network on lan0 whose wire runs at `hook` (`tc`: what
    /// `auto` picks on a veth; `xdp`: asked for with `-o hook=xdp`).
    fn wire_netvlan(&mut self, ctx: &Ctx, policies: &[&str], hook: &str) -> Result<()> {
        let kind = format!("tr-{}", self.variant.short());
        let netvlan = Netvlan::new(&ctx.netvlan, &self.host, &ctx.token, &kind)?;
        let options: &[&str] = if hook == "xdp" { &["hook=xdp"] } else { &[] };
        netvlan.create_bench_network("172.31.250.0/24", "lan0", options)?;
        for (c, ip) in self.containers() {
            netvlan.run(&["connect", "--ip", ip, "bench", c.name()])?;
        }
        if !policies.is_empty() {
            let mut args = vec!["policy", "set", "bench"];
            args.extend_from_slice(policies);
            netvlan.run(&args)?;
        }
        let status: serde_json::Value =
            serde_json::from_str(&netvlan.run(&["datapath", "status", "--json"])?)
                .context("netvlan datapath status --json printed no JSON")?;
        let attachment = &status["attachments"][0];
        let want_mode = if hook == "xdp" { "native" } else { "tcx" };
        if attachment["hook"] != hook || attachment["mode"] != want_mode {
            bail!("netvlan's datapath is not on lan0 at {hook} ({want_mode}): {status}");
        }
        if hook == "xdp" {
            let link = self.host.try_link_json("lan0")?;
            // `ip -j` reports mode 1 for a driver (native) attachment.
            if link["xdp"]["mode"].as_u64() != Some(1) {
                bail!("lan0 has no native XDP program: {}", link["xdp"]);
            }
        }
        self.netvlan = Some(netvlan);
        Ok(())
    }

    fn wire_macvlan(&self) -> Result<()> {
        for (i, (c, ip)) in self.containers().into_iter().enumerate() {
            let dev = format!("mvc{i}");
            self.host.run(
                "ip",
                &[
                    "link", "add", &dev, "link", "lan0", "type", "macvlan", "mode", "bridge",
                ],
            )?;
            self.host
                .run("ip", &["link", "set", &dev, "netns", c.name()])?;
            configure_container(c, &dev, ip)?;
        }
        Ok(())
    }

    fn wire_bridge(&self) -> Result<()> {
        self.host
            .run("ip", &["link", "add", "br0", "type", "bridge"])?;
        self.host.run("ip", &["link", "set", "br0", "up"])?;
        self.host
            .run("ip", &["link", "set", "lan0", "master", "br0"])?;
        for (i, (c, ip)) in self.containers().into_iter().enumerate() {
            let port = format!("vc{i}");
            let dev = format!("vce{i}");
            self.host.run(
                "ip",
                &[
                    "link",
                    "add",
                    &port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &dev,
                    "netns",
                    c.name(),
                ],
            )?;
            self.host
                .run("ip", &["link", "set", &port, "master", "br0", "up"])?;
            configure_container(c, &dev, ip)?;
        }
        Ok(())
    }

    /// One ping from each container to the external host and from c1 to
    /// c2, retried for a few seconds: a lab that cannot talk must fail
    /// here, not produce numbers.
    fn check_reachable(&self) -> Result<()> {
        for (from, to) in [(&self.c1, EXT_IP), (&self.c2, EXT_IP), (&self.c1, C2_IP)] {
            let ok = wait_for(Duration::from_secs(10), || {
                Ok(from
                    .command("ping")
                    .args(["-c", "1", "-W", "1", "-q", to])
                    .output()?
                    .status
                    .success()
                    .then_some(()))
            })?;
            if ok.is_none() {
                bail!("{} cannot reach {to}", from.name());
            }
        }
        Ok(())
    }

    fn start_servers(&mut self) -> Result<()> {
        for (ns, ip) in [(&self.ext, EXT_IP), (&self.c2, C2_IP)] {
            self._servers.extend(perf_tools::start_servers(ns, ip)?);
        }
        Ok(())
    }

    /// Gbit/s received in one iperf3 run.
    fn iperf3(&self, path: Path, secs: u64) -> Result<f64> {
        let reverse = matches!(path, Path::FromExternal | Path::FromExternalWire);
        let mut cmd = perf_tools::iperf3_command(&self.c1, path.server_ip(), secs, reverse);
        // MTU frames on the wire: TSO off for this run, back on after
        // (where the kernel had not turned it off already).
        let restore_tso = matches!(path, Path::FromExternalWire) && self.external_tso()? == "on";
        if restore_tso {
            self.ext.run("ethtool", &["-K", "eth0", "tso", "off"])?;
        }
        let out = super::sandbox::run(&mut cmd);
        if restore_tso {
            self.ext.run("ethtool", &["-K", "eth0", "tso", "on"])?;
        }
        perf_tools::iperf3_gbps(&out?.stdout, self.variant.name())
    }

    /// (median, p99) one-way latency in µs of one sockperf run.
    fn sockperf(&self, path: Path, secs: u64) -> Result<(f64, f64)> {
        perf_tools::sockperf(&self.c1, path.server_ip(), secs)
    }

    /// `on` or `off`: TCP segmentation offload on the external host's end.
    fn external_tso(&self) -> Result<String> {
        let out = self.ext.run("ethtool", &["-k", "eth0"])?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.trim().strip_prefix("tcp-segmentation-offload:"))
            .map(|v| v.split_whitespace().next().unwrap_or("?").to_string())
            .context("ethtool -k printed no tcp-segmentation-offload line")
    }

    /// A netvlan lab's program saw the traffic: the measurement went
    /// through the datapath, not around it.
    fn check_datapath_counted(&self) -> Result<()> {
        let Some(netvlan) = &self.netvlan else {
            return Ok(());
        };
        let stats: serde_json::Value = serde_json::from_str(&netvlan.run(&["stats", "--json"])?)
            .context("netvlan stats --json printed no JSON")?;
        let seen = stats["interfaces"][0]["frames"]["rx_packets"]
            .as_u64()
            .unwrap_or(0);
        if seen < 1000 {
            bail!("netvlan's program on lan0 counted only {seen} frames: the traffic bypassed it");
        }
        Ok(())
    }
}

/// Attaches the object's pass-only `bench_floor` program to `dev` in `ns`
/// in native mode, from a thread that entered `ns` (link creation resolves
/// the interface in the caller's namespace). The returned object holds the
/// attachment.
fn attach_pass_only(ctx: &Ctx, ns: &Netns, dev: &str) -> Result<aya::Ebpf> {
    let object =
        std::fs::read(&ctx.object).with_context(|| format!("reading {}", ctx.object.display()))?;
    let dev = std::ffi::CString::new(dev)?;
    ns.in_thread(|| {
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) };
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("no {dev:?} in {}", ns.name()));
        }
        let mut ebpf = aya::Ebpf::load(&object).context("loading the eBPF object")?;
        let program: &mut aya::programs::Xdp = ebpf
            .program_mut(netvlan_common::maps::BENCH_FLOOR_PROGRAM)
            .context("the object has no pass-only program")?
            .try_into()?;
        program.load()?;
        program
            .attach_to_if_index(ifindex, aya::programs::XdpMode::Driver)
            .context("attaching the pass-only program in native mode")?;
        Ok(ebpf)
    })
}

/// Names a container's link eth0, gives it its address, brings it up.
fn configure_container(c: &Netns, dev: &str, ip: &str) -> Result<()> {
    c.run("ip", &["link", "set", dev, "name", "eth0"])?;
    c.run("ip", &["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    c.run("ip", &["link", "set", "eth0", "up"])?;
    Ok(())
}
