//! Family `host_access`: what a container gets talking to the host that
//! holds its macvlan parent, with `-o host_access=shim` (a macvlan link of
//! the host's) and `-o host_access=ebpf` (the hairpin at the parent's TC
//! egress, no extra link), side by side in one run, against the same
//! container talking to an external host on a plain macvlan (the path
//! macvlan is made for) as the reference.
//!
//! Each variant is a lab of its own: an external host and a machine joined
//! by a veth pair (the machine's end is the parent, `lan0`, holding the
//! host's own address 172.31.251.250), one container on the machine. The
//! labs exist at once and are measured round by round in turn.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use super::{
    ctx::Ctx,
    model::{Basis, Better, Family, Measurement},
    netvlan::Netvlan,
    perf_tools,
    sandbox::{netns, try_veth_pair, wait_for, Netns, Process},
};

const SUBNET: &str = "172.31.251.0/24";
const EXT_IP: &str = "172.31.251.2";
const HOST_IP: &str = "172.31.251.250";
const C1_IP: &str = "172.31.251.10";

const MACVLAN: &str = "plain macvlan, container <-> external";
const SHIM: &str = "host_access=shim, container <-> host";
const EBPF: &str = "host_access=ebpf, container <-> host";
const THROUGHPUT: &str = "TCP throughput";
const LATENCY: &str = "UDP ping-pong latency";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Macvlan,
    Shim,
    Ebpf,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Macvlan, Variant::Shim, Variant::Ebpf];

    fn name(self) -> &'static str {
        match self {
            Variant::Macvlan => MACVLAN,
            Variant::Shim => SHIM,
            Variant::Ebpf => EBPF,
        }
    }

    fn short(self) -> &'static str {
        match self {
            Variant::Macvlan => "hm",
            Variant::Shim => "hs",
            Variant::Ebpf => "he",
        }
    }
}

/// Which way the bulk data flows (the container runs the client).
#[derive(Clone, Copy)]
enum Direction {
    /// The container sends.
    FromContainer,
    /// The peer sends (`iperf3 -R`): host -> container for the host-access
    /// labs.
    ToContainer,
}

impl Direction {
    const ALL: [Direction; 2] = [Direction::FromContainer, Direction::ToContainer];

    fn case(self) -> &'static str {
        match self {
            Direction::FromContainer => "container sends",
            Direction::ToContainer => "container receives",
        }
    }
}

const LATENCY_CASE: &str = "request/response";

fn run_seconds(ctx: &Ctx) -> u64 {
    ctx.pick(1, 3)
}

fn rounds(ctx: &Ctx) -> usize {
    ctx.pick(3, 7)
}

pub fn steps(ctx: &Ctx) -> u64 {
    (rounds(ctx) * (Direction::ALL.len() + 1) * Variant::ALL.len()) as u64
}

pub fn run(ctx: &Ctx, bar: &ProgressBar) -> Result<Family> {
    let mut labs = Vec::new();
    for variant in Variant::ALL {
        bar.set_message(format!("building the {} lab", variant.name()));
        labs.push(Lab::build(ctx, variant).with_context(|| format!("{} lab", variant.name()))?);
    }
    let secs = run_seconds(ctx);
    let rounds = rounds(ctx);
    let mut throughput = vec![vec![Vec::new(); labs.len()]; Direction::ALL.len()];
    let mut latency = vec![Vec::new(); labs.len()];
    let mut latency_p99 = vec![Vec::new(); labs.len()];
    for round in 0..rounds {
        for (d, direction) in Direction::ALL.into_iter().enumerate() {
            for (v, lab) in labs.iter().enumerate() {
                bar.set_message(format!(
                    "round {}/{rounds}: iperf3 {} on {}",
                    round + 1,
                    direction.case(),
                    lab.variant.name()
                ));
                throughput[d][v].push(lab.iperf3(direction, secs)?);
                super::progress::tick(bar)?;
            }
        }
        for (v, lab) in labs.iter().enumerate() {
            bar.set_message(format!(
                "round {}/{rounds}: sockperf on {}",
                round + 1,
                lab.variant.name()
            ));
            let (p50, p99) = lab.sockperf(secs)?;
            latency[v].push(p50);
            latency_p99[v].push(p99);
            super::progress::tick(bar)?;
        }
    }
    for lab in &labs {
        lab.check_counted()?;
    }

    let mut family = Family {
        key: "host_access",
        title: "Host <-> container access",
        method: vec![
            format!(
                "Per variant, a lab of namespaces: external host ({EXT_IP}) <-veth-> machine \
                 (parent `lan0`, holding the host's own address {HOST_IP}/24), one container \
                 ({C1_IP}) on the machine; IPv6 off; GRO on on lan0."
            ),
            format!(
                "host_access=shim / host_access=ebpf: `netvlan network create -d macvlan \
                 --subnet {SUBNET} --aux-address host={HOST_IP} -o parent=lan0 -o \
                 host_access=MODE` + `netvlan connect`; the servers run in the machine's \
                 namespace on the address `netvlan network inspect` reports under \
                 HostAccess.Addresses (shim: an address netvlan reserved for its shim link; \
                 ebpf: {HOST_IP} on lan0 itself)."
            ),
            "Reference: plain macvlan (`ip link add … type macvlan mode bridge`, no program), \
             the container talking to the external host: what macvlan gives the traffic it is \
             made for. Without host access the container cannot reach the host at all."
                .into(),
            format!(
                "Throughput: iperf3 TCP, one stream, client in the container, {secs} s per run \
                 (`-t {secs} -J`, receiver's bits/s); `container receives` is `-R` (host -> \
                 container)."
            ),
            format!(
                "Latency: sockperf ping-pong (UDP) from the container, {secs} s per run; the \
                 sample is each run's median one-way latency, its p99 is kept in the JSON."
            ),
            "After the run, each host-access lab checks that netvlan's per-endpoint counters \
             saw the traffic (`netvlan stats --json`, the endpoint's rx/tx packets)."
                .into(),
            format!(
                "{rounds} rounds; each round measures every case on every lab in turn (ratios \
                 are the median of per-round ratios)."
            ),
        ],
        measurements: Vec::new(),
        comparisons: Vec::new(),
        unavailable: Vec::new(),
    };
    for (d, direction) in Direction::ALL.into_iter().enumerate() {
        for (v, variant) in Variant::ALL.into_iter().enumerate() {
            family.measurements.push(Measurement::new(
                variant.name(),
                direction.case(),
                THROUGHPUT,
                "Gbit/s",
                Better::Higher,
                std::mem::take(&mut throughput[d][v]),
                format!("iperf3 -t {secs}, {rounds} runs"),
            )?);
        }
    }
    for (v, variant) in Variant::ALL.into_iter().enumerate() {
        family.measurements.push(
            Measurement::new(
                variant.name(),
                LATENCY_CASE,
                LATENCY,
                "us",
                Better::Lower,
                std::mem::take(&mut latency[v]),
                format!("sockperf ping-pong -t {secs}, median of each run, {rounds} runs"),
            )?
            .with_aux("p99 within run", "us", &latency_p99[v])?,
        );
    }
    let cases = Direction::ALL
        .map(|d| (d.case(), THROUGHPUT))
        .into_iter()
        .chain([(LATENCY_CASE, LATENCY)]);
    for (case, metric) in cases {
        family.compare(SHIM, MACVLAN, case, metric, Basis::Paired)?;
        family.compare(EBPF, MACVLAN, case, metric, Basis::Paired)?;
        family.compare(EBPF, SHIM, case, metric, Basis::Paired)?;
    }
    Ok(family)
}

/// One variant's namespaces, links and servers. Fields drop in order:
/// servers first, then netvlan's state and pins, then the namespaces.
struct Lab {
    variant: Variant,
    /// The address the container's client talks to.
    server_ip: String,
    _servers: Vec<Process>,
    netvlan: Option<Netvlan>,
    ext: Netns,
    host: Netns,
    c1: Netns,
}

impl Lab {
    fn build(ctx: &Ctx, variant: Variant) -> Result<Self> {
        let kind = |role: &str| format!("{}-{role}", variant.short());
        let ext = netns(&ctx.token, &kind("ext"), false)?;
        let host = netns(&ctx.token, &kind("host"), false)?;
        let c1 = netns(&ctx.token, &kind("c1"), false)?;
        try_veth_pair(&ext, "eth0", &host, "lan0")?;
        ext.run(
            "ip",
            &["addr", "add", &format!("{EXT_IP}/24"), "dev", "eth0"],
        )?;
        host.run(
            "ip",
            &["addr", "add", &format!("{HOST_IP}/24"), "dev", "lan0"],
        )?;
        host.run("ip", &["link", "set", "lan0", "up"])?;
        let mut lab = Lab {
            variant,
            server_ip: EXT_IP.into(),
            _servers: Vec::new(),
            netvlan: None,
            ext,
            host,
            c1,
        };
        match variant {
            Variant::Macvlan => lab.wire_macvlan()?,
            Variant::Shim => lab.wire_netvlan(ctx, "shim")?,
            Variant::Ebpf => lab.wire_netvlan(ctx, "ebpf")?,
        }
        lab.host.run("ethtool", &["-K", "lan0", "gro", "on"])?;
        lab.check_reachable()?;
        lab.start_servers()?;
        Ok(lab)
    }

    fn wire_netvlan(&mut self, ctx: &Ctx, mode: &str) -> Result<()> {
        let netvlan = Netvlan::new(
            &ctx.netvlan,
            &self.host,
            &ctx.token,
            &format!("ha-{}", self.variant.short()),
        )?;
        let aux = format!("host={HOST_IP}");
        let access = format!("host_access={mode}");
        netvlan.run(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet",
            SUBNET,
            "--aux-address",
            &aux,
            "-o",
            "parent=lan0",
            "-o",
            &access,
            "bench",
        ])?;
        netvlan.run(&["connect", "--ip", C1_IP, "bench", self.c1.name()])?;
        let inspect: serde_json::Value =
            serde_json::from_str(&netvlan.run(&["network", "inspect", "bench"])?)
                .context("netvlan network inspect printed no JSON")?;
        let network = if inspect.is_array() {
            &inspect[0]
        } else {
            &inspect
        };
        let access = &network["Netvlan"]["HostAccess"];
        if access["Mode"] != mode {
            bail!("the network's host access is not {mode}: {access}");
        }
        self.server_ip = access["Addresses"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .find(|a| !a.contains(':'))
            })
            .map(|a| a.split('/').next().unwrap_or(a).to_string())
            .with_context(|| format!("HostAccess has no IPv4 address: {access}"))?;
        self.netvlan = Some(netvlan);
        Ok(())
    }

    fn wire_macvlan(&self) -> Result<()> {
        self.host.run(
            "ip",
            &[
                "link", "add", "mvc0", "link", "lan0", "type", "macvlan", "mode", "bridge",
            ],
        )?;
        self.host
            .run("ip", &["link", "set", "mvc0", "netns", self.c1.name()])?;
        self.c1
            .run("ip", &["link", "set", "mvc0", "name", "eth0"])?;
        self.c1.run(
            "ip",
            &["addr", "add", &format!("{C1_IP}/24"), "dev", "eth0"],
        )?;
        self.c1.run("ip", &["link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// The container reaches its peer, and (host-access labs) the host
    /// reaches the container: a lab that cannot talk fails here.
    fn check_reachable(&self) -> Result<()> {
        let mut probes = vec![(&self.c1, self.server_ip.as_str())];
        if self.variant != Variant::Macvlan {
            probes.push((&self.host, C1_IP));
        }
        for (from, to) in probes {
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

    /// The namespace the servers run in: the external host for the
    /// reference, the machine for the host-access labs.
    fn server_ns(&self) -> &Netns {
        match self.variant {
            Variant::Macvlan => &self.ext,
            Variant::Shim | Variant::Ebpf => &self.host,
        }
    }

    fn start_servers(&mut self) -> Result<()> {
        let servers = perf_tools::start_servers(self.server_ns(), &self.server_ip)?;
        self._servers.extend(servers);
        Ok(())
    }

    /// Gbit/s received in one iperf3 run.
    fn iperf3(&self, direction: Direction, secs: u64) -> Result<f64> {
        let reverse = matches!(direction, Direction::ToContainer);
        let mut cmd = perf_tools::iperf3_command(&self.c1, &self.server_ip, secs, reverse);
        let out = super::sandbox::run(&mut cmd)?;
        perf_tools::iperf3_gbps(&out.stdout, self.variant.name())
    }

    /// (median, p99) one-way latency in µs of one sockperf run.
    fn sockperf(&self, secs: u64) -> Result<(f64, f64)> {
        perf_tools::sockperf(&self.c1, &self.server_ip, secs)
    }

    /// A host-access lab's traffic went through netvlan's endpoint: its
    /// per-endpoint counters saw it (the measurement did not go around).
    fn check_counted(&self) -> Result<()> {
        let Some(netvlan) = &self.netvlan else {
            return Ok(());
        };
        let stats: serde_json::Value = serde_json::from_str(&netvlan.run(&["stats", "--json"])?)
            .context("netvlan stats --json printed no JSON")?;
        let endpoint = &stats["endpoints"][0];
        let seen = endpoint["rx_packets"].as_u64().unwrap_or(0);
        let sent = endpoint["tx_packets"].as_u64().unwrap_or(0);
        if seen < 1000 || sent < 1000 {
            bail!(
                "the endpoint's counters on {} saw only {seen} received and {sent} sent frames: {stats}",
                self.variant.name()
            );
        }
        Ok(())
    }
}
