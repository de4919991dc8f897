//! The `netvlan` command.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use netvlan::{
    datapath::{
        pins,
        stats::{self, StatsReport},
        upgrade::UpgradeOutcome,
        AttachMode, AttachOutcome, AttachmentStatus, Datapath, DEFAULT_BPF_DIR,
    },
    network::{self, ConnectRequest, CreateRequest, Driver, ListFilter, Manager},
    store::{Store, DEFAULT_STATE_DIR},
};

/// `println!` that survives a closed stdout (see [`write_stdout`]).
macro_rules! out {
    () => { write_stdout(format_args!("")) };
    ($($arg:tt)*) => { write_stdout(format_args!($($arg)*)) };
}

/// `eprintln!` that survives a closed stderr.
macro_rules! err {
    ($($arg:tt)*) => { write_stderr(format_args!($($arg)*)) };
}

/// Containers straight on the physical network (macvlan, ipvlan, 802.1Q),
/// with an eBPF datapath that counts every frame by VLAN and MAC.
///
/// Everything acts on the network namespace the command runs in. To work on
/// another one, enter it with `nsenter --net=/var/run/netns/NAME netvlan ...`
/// (not `ip netns exec`, which hides /sys/fs/bpf and so the pins).
#[derive(Parser)]
#[command(name = "netvlan", version, propagate_version = true)]
struct Cli {
    /// Where the datapath's programs and maps are pinned (on a bpffs).
    #[arg(long, global = true, env = "NETVLAN_BPF_DIR", default_value = DEFAULT_BPF_DIR, value_name = "DIR", help_heading = GLOBAL)]
    bpf_dir: PathBuf,
    /// Where networks and endpoints are stored.
    #[arg(long, global = true, env = "NETVLAN_STATE_DIR", default_value = DEFAULT_STATE_DIR, value_name = "DIR", help_heading = GLOBAL)]
    state_dir: PathBuf,
    /// More detail on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// The `--help` heading of the flags every command takes.
const GLOBAL: &str = "Global options";

#[derive(Subcommand)]
enum Command {
    /// Create, list, inspect and remove macvlan/ipvlan networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Same as `netvlan network connect`.
    Connect(ConnectArgs),
    /// Same as `netvlan network disconnect`.
    Disconnect(DisconnectArgs),
    /// Attach, detach and inspect the XDP datapath on interfaces.
    #[command(subcommand)]
    Datapath(DatapathCommand),
    /// A ready-made lab in namespaces of its own: a LAN with a gateway, a
    /// macvlan network with two containers and, where the kernel has
    /// 802.1Q, a VLAN network. Never touches the host's interfaces.
    Demo {
        #[command(subcommand)]
        action: DemoAction,
        /// Name prefix of the demo's namespaces.
        #[arg(long, default_value = netvlan::demo::DEFAULT_PREFIX, value_name = "PREFIX", global = true)]
        prefix: String,
        #[command(flatten)]
        output: Output,
    },
    /// Change what the datapath enforces for a network, at once.
    #[command(subcommand)]
    #[command(verbatim_doc_comment)]
    Policy(PolicyCommand),
    /// Recreate what the stored networks need after a reboot: VLAN
    /// sub-interfaces and placeholders netvlan created, datapath
    /// attachments, and the endpoints whose sandboxes still exist.
    /// Safe to run any number of times.
    Restore {
        #[command(flatten)]
        output: Output,
    },
    /// Compare the stored networks with the kernel: links, addresses,
    /// routes, XDP and TC programs, pins and the endpoints' map entries.
    /// Lists every drift and what repairs it; exits 1 if there is any.
    Check {
        #[command(flatten)]
        output: Output,
    },
    /// Show the datapath's counters: per VLAN, per destination MAC, anomalies.
    ///
    /// Counters are per-CPU in the kernel and summed here. Frames whose L2
    /// header is incomplete (shorter than 14 bytes, or a cut-off VLAN tag)
    /// are counted only under their anomaly; all others are counted by VLAN
    /// and MAC, and also under any anomaly they carry (runt, excess_tags,
    /// malformed_l3).
    Stats(StatsArgs),
}

#[derive(Subcommand)]
enum DatapathCommand {
    /// Load the XDP program on IFACE and pin it so it keeps running.
    ///
    /// Attaching where netvlan already runs is a no-op. Example:
    ///   netvlan datapath attach eth0 --mode auto
    #[command(verbatim_doc_comment)]
    Attach {
        /// Interface in the current network namespace.
        iface: String,
        /// auto tries native (driver) XDP and falls back to generic.
        #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
        mode: AttachMode,
        #[command(flatten)]
        output: Output,
    },
    /// Detach the XDP program from IFACE and remove its pins and counters.
    ///
    /// Refused while networks use IFACE (nothing would enforce their
    /// policy) unless --force.
    Detach {
        /// Interface in the current network namespace.
        iface: String,
        /// Detach even though networks use IFACE.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        output: Output,
    },
    /// List the interfaces netvlan is attached to, as the kernel sees them.
    Status {
        #[command(flatten)]
        output: Output,
    },
    /// Remove the pins of attachments whose interface or program is gone.
    Prune {
        #[command(flatten)]
        output: Output,
    },
    /// Swap the running XDP program for this binary's build, in place.
    ///
    /// One atomic BPF_LINK_UPDATE per interface: frames never meet a
    /// missing program, and the pinned maps (counters, policy, learned
    /// MACs) carry over. Interfaces already running this build are left
    /// alone unless --force. Run it after installing a new netvlan.
    /// Example:
    ///   netvlan datapath upgrade            # every attachment
    ///   netvlan datapath upgrade eth0 --force
    #[command(verbatim_doc_comment)]
    Upgrade {
        /// Only this interface (default: every attachment).
        iface: Option<String>,
        /// Replace the program even if it is this build already.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Set policy KEY=VALUE pairs on a network; enforced at once.
    ///
    /// Settings:
    ///   unknown_dst=pass|drop       drop unicast frames to MACs that are neither an
    ///                               endpoint's nor the host's (ipvlan: to addresses)
    ///   vlans=10,20,30-39|off       VLAN allow-list on the parent's wire; VLANs used
    ///                               by networks are always allowed, untagged passes
    ///   mac_deny=MAC,MAC            source MACs that never reach endpoints (empty clears)
    ///   max_macs=N|off              learn at most N source MACs on the network's VLAN;
    ///                               frames from further new MACs are refused
    ///   max_macs_action=drop|count  refuse them (default) or only count them
    /// Examples:
    ///   netvlan policy set lan unknown_dst=drop mac_deny=02:00:00:00:00:66
    ///   netvlan policy set lan max_macs=64 max_macs_action=count
    #[command(verbatim_doc_comment)]
    Set {
        /// The network whose policy changes.
        network: String,
        /// KEY=VALUE settings (see above); the others stay as they are.
        #[arg(required = true, value_name = "KEY=VALUE")]
        settings: Vec<String>,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum DemoAction {
    /// Build the lab, send a little traffic, show what was counted.
    Up,
    /// Remove the lab completely.
    Down,
    /// Show the lab and its counters.
    Status,
}

#[derive(Subcommand)]
enum NetworkCommand {
    /// Create a network (Docker's options).
    ///
    /// Examples:
    ///   netvlan network create -d macvlan --subnet 172.16.86.0/24 --gateway 172.16.86.1 -o parent=eth0 lan
    ///   netvlan network create -d macvlan --subnet 192.168.10.0/24 -o parent=eth0.10 vlan10
    ///   netvlan network create -d ipvlan --subnet 10.1.0.0/24 -o parent=eth0 -o ipvlan_mode=l3 routed
    #[command(verbatim_doc_comment)]
    Create(CreateArgs),
    /// List networks.
    ///
    /// Filters (Docker's): driver=macvlan|ipvlan, name=SUBSTRING,
    /// label=KEY or label=KEY=VALUE, id=PREFIX. Several driver, name or
    /// id values are alternatives; every label given must match, and so
    /// must every kind of filter given.
    /// Example: netvlan network ls -q --filter label=team=web
    #[command(verbatim_doc_comment)]
    Ls {
        /// Only the network ids.
        #[arg(short, long)]
        quiet: bool,
        /// KEY=VALUE; repeat for more.
        #[arg(short, long, value_name = "KEY=VALUE")]
        filter: Vec<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Show networks as Docker-shaped JSON (always JSON; --json is accepted).
    ///
    /// Networks that do not exist are reported on stderr, after the ones
    /// that do are printed, and the command exits 1.
    Inspect {
        /// Network names.
        #[arg(required = true, value_name = "NETWORK")]
        names: Vec<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Remove networks (they must have no endpoints).
    Rm {
        /// Network names.
        #[arg(required = true, value_name = "NETWORK")]
        names: Vec<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Remove every network without endpoints.
    ///
    /// Asks first when stdin is a terminal; otherwise needs -f.
    Prune {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Connect a sandbox (network namespace) to a network.
    ///
    /// The endpoint link is created on the network's parent, moved into the
    /// sandbox, named eth0 (--ifname), given its address(es) and a default
    /// route via the gateway of the address's subnet (per family, unless
    /// another network of the sandbox already gives it one: the first
    /// connected keeps it).
    /// Example: netvlan network connect --ip 172.16.86.10 lan web1
    #[command(verbatim_doc_comment)]
    Connect(ConnectArgs),
    /// Disconnect a sandbox: delete its link, return its addresses (its
    /// default routes move to its next network that has a gateway).
    Disconnect(DisconnectArgs),
}

#[derive(Args)]
struct CreateArgs {
    /// macvlan (own MAC per endpoint) or ipvlan (parent's MAC).
    #[arg(short, long, value_enum, default_value_t = Driver::Macvlan)]
    driver: Driver,
    /// Subnet in CIDR form; repeat for more (IPv4 and IPv6).
    #[arg(long)]
    subnet: Vec<String>,
    /// Gateway of the subnet that contains it (default: its first address).
    #[arg(long)]
    gateway: Vec<String>,
    /// Sub-pool of a subnet for automatic addresses.
    #[arg(long)]
    ip_range: Vec<String>,
    /// NAME=IP never handed out (the host's own address, a router...).
    #[arg(long)]
    aux_address: Vec<String>,
    /// Enable IPv6 (inferred from an IPv6 --subnet when omitted).
    #[arg(long)]
    ipv6: bool,
    /// No external connectivity: no default route in the sandboxes.
    #[arg(long)]
    internal: bool,
    /// Driver options: parent=IFACE[.VID], macvlan_mode=bridge|vepa|private|passthru,
    /// ipvlan_mode=l2|l3|l3s, ipvlan_flag=bridge|private|vepa, mtu=N,
    /// spoofcheck=on|off; and the policy settings of `netvlan policy set`
    /// (unknown_dst, vlans, mac_deny, max_macs, max_macs_action).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
    opt: Vec<String>,
    /// Metadata KEY=VALUE (shown by inspect, matched by `ls --filter label=`);
    /// repeat for more.
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Name of the new network.
    name: String,
    #[command(flatten)]
    output: Output,
}

#[derive(Args)]
struct ConnectArgs {
    /// IPv4 address (anywhere in the subnet; default: next free one).
    #[arg(long)]
    ip: Option<String>,
    /// IPv6 address.
    #[arg(long)]
    ip6: Option<String>,
    /// MAC address (macvlan; default: 02:42 + the IPv4 address bytes).
    #[arg(long)]
    mac: Option<String>,
    /// Interface name inside the sandbox.
    #[arg(long, default_value = "eth0")]
    ifname: String,
    /// The network to join.
    network: String,
    /// A name from `ip netns`, a namespace file path (/proc/PID/ns/net) or pid:PID.
    sandbox: String,
    #[command(flatten)]
    output: Output,
}

#[derive(Args)]
struct DisconnectArgs {
    /// The network to leave.
    network: String,
    /// The sandbox as it was connected (name, path or pid:PID).
    sandbox: String,
    /// Also remove an endpoint whose sandbox (namespace) is gone.
    #[arg(short, long)]
    force: bool,
    #[command(flatten)]
    output: Output,
}

#[derive(Args)]
struct StatsArgs {
    /// Only this interface.
    #[arg(long)]
    iface: Option<String>,
    #[command(flatten)]
    output: Output,
}

#[derive(Args, Clone, Copy)]
struct Output {
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
}

fn main() {
    // Reads FAILPOINTS in test builds (feature `failpoints`); inert otherwise.
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime can always be built");
    let result = runtime.block_on(run(cli));
    if let Err(e) = result {
        err!("error: {e:#}");
        std::process::exit(1);
    }
    if STDOUT_FAILED.load(Ordering::Relaxed) {
        std::process::exit(1);
    }
}

/// Set when stdout stops taking output: nothing more is written there.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// Set when that was an error worth an exit status (not a closed pipe).
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// One line on stdout. A reader that went away (`netvlan network ls |
/// head`) is no error: the command still does all its work and exits as
/// it would have, its output going nowhere. Any other write error is
/// reported once and makes the exit status 1.
fn write_stdout(line: std::fmt::Arguments) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(line)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(e) = written {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            STDOUT_FAILED.store(true, Ordering::Relaxed);
            err!("error: cannot write to stdout: {e}");
        }
    }
}

/// One line on stderr; a closed stderr is ignored (never a panic).
fn write_stderr(line: std::fmt::Arguments) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr
        .write_fmt(line)
        .and_then(|()| stderr.write_all(b"\n"));
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a person at a terminal, never in logs or pipes.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
}

/// Capabilities every command needs: links and routes (CAP_NET_ADMIN),
/// entering namespaces and loading/pinning eBPF (CAP_SYS_ADMIN).
const NEEDED_CAPABILITIES: [(u32, &str); 2] = [(12, "CAP_NET_ADMIN"), (21, "CAP_SYS_ADMIN")];

/// Says up front what privileges are missing, instead of the first
/// syscall's EPERM/EACCES in whatever it happened to touch.
fn require_privileges() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status to check privileges")?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .context("no CapEff line in /proc/self/status")?;
    let missing: Vec<&str> = NEEDED_CAPABILITIES
        .iter()
        .filter(|(bit, _)| effective & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "netvlan needs root privileges: it manages links, namespaces and eBPF programs, \
             which takes {}; this process (uid {}) lacks {}. Run it as root (e.g. with sudo)",
            NEEDED_CAPABILITIES.map(|(_, n)| n).join(" and "),
            nix::unistd::geteuid(),
            missing.join(" and ")
        );
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    require_privileges()?;
    // Refused before anything changes: pins that would vanish with this
    // process (`ip netns exec`). Reading the state needs no pins.
    let pins_persist = pins::check_pins_persist(&cli.bpf_dir);
    let reads_state_only = matches!(
        cli.command,
        Command::Network(NetworkCommand::Ls { .. } | NetworkCommand::Inspect { .. })
    );
    if !reads_state_only {
        pins_persist.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let datapath = Datapath::open(&cli.bpf_dir)?;
    let state_dir = cli.state_dir.clone();
    let bpf_dir = cli.bpf_dir.clone();
    // Opening the manager first cleans up after a command that was killed
    // half-way (not where pins would vanish); say what that did.
    let manager = || async {
        if pins_persist.is_err() {
            return Ok(Manager::new(
                Store::open(&state_dir)?,
                Datapath::open(&bpf_dir)?,
            )?);
        }
        let (manager, recovered) =
            Manager::open(Store::open(&state_dir)?, Datapath::open(&bpf_dir)?).await?;
        for line in recovered {
            err!("note: {line}");
        }
        Ok::<Manager, anyhow::Error>(manager)
    };
    if let Command::Datapath(DatapathCommand::Detach {
        iface,
        force: false,
        ..
    }) = &cli.command
    {
        if state_dir.join("netvlan.redb").exists() {
            let users = manager().await?.networks_on(iface)?;
            if !users.is_empty() {
                anyhow::bail!(
                    "networks {} use {iface}: detaching would leave their policy unenforced; remove them first, or pass --force",
                    users.join(", ")
                );
            }
        }
    }
    match cli.command {
        Command::Datapath(cmd) => datapath_command(&datapath, cmd).await,
        Command::Check { output } => {
            let drifts = manager().await?.check().await?;
            if output.json {
                print_json(&serde_json::json!({ "drifts": drifts }))?;
            } else if drifts.is_empty() {
                println!("the kernel matches the stored networks; no drift");
            } else {
                for d in &drifts {
                    println!(
                        "{}: {} [{}]; repair: {}",
                        d.network, d.problem, d.kind, d.repair
                    );
                }
            }
            if !drifts.is_empty() {
                anyhow::bail!("{} drift(s) between the store and the kernel", drifts.len());
            }
            Ok(())
        }
        Command::Stats(args) => stats_command(&datapath, &cli.state_dir, args).await,
        Command::Demo {
            action,
            prefix,
            output,
        } => {
            let demo = netvlan::demo::Demo::new(&prefix, &cli.state_dir, &cli.bpf_dir);
            match action {
                DemoAction::Down => {
                    demo.down().await?;
                    if output.json {
                        print_json(&serde_json::json!({ "removed": prefix }))
                    } else {
                        out!("demo removed");
                        Ok(())
                    }
                }
                DemoAction::Up | DemoAction::Status => {
                    let report = if matches!(action, DemoAction::Up) {
                        err!("building the demo lab in namespaces {prefix}-* ...");
                        demo.up().await?
                    } else {
                        demo.status().await?
                    };
                    if output.json {
                        print_json(&report)
                    } else {
                        print_demo(&report);
                        Ok(())
                    }
                }
            }
        }
        Command::Policy(PolicyCommand::Set {
            network,
            settings,
            output,
        }) => {
            let record = manager().await?.set_policy(&network, &settings).await?;
            if output.json {
                print_json(&network::inspect(&record))
            } else {
                out!("policy of {} updated and enforced", record.name);
                Ok(())
            }
        }
        Command::Restore { output } => {
            let actions = manager().await?.restore().await?;
            let failed = actions.iter().filter(|a| a.error.is_some()).count();
            if output.json {
                print_json(&serde_json::json!({ "actions": actions }))?;
            } else if actions.is_empty() {
                out!("everything is in place; nothing to restore");
            } else {
                for a in &actions {
                    match &a.error {
                        None => out!("{}: {}", a.network, a.action),
                        Some(e) => out!("{}: {} FAILED: {e}", a.network, a.action),
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} restore action(s) failed");
            }
            Ok(())
        }
        Command::Network(cmd) => {
            if let NetworkCommand::Prune { force, .. } = &cmd {
                if !confirm_prune(*force)? {
                    err!("nothing removed");
                    return Ok(());
                }
            }
            network_command(&manager().await?, cmd).await
        }
        Command::Connect(args) => connect_command(&manager().await?, args).await,
        Command::Disconnect(args) => disconnect_command(&manager().await?, args).await,
    }
}

async fn connect_command(manager: &Manager, args: ConnectArgs) -> Result<()> {
    let (record, endpoint) = manager
        .connect(ConnectRequest {
            network: args.network,
            sandbox: args.sandbox,
            ip: args.ip,
            ip6: args.ip6,
            mac: args.mac,
            ifname: Some(args.ifname),
        })
        .await?;
    if args.output.json {
        return print_json(&serde_json::json!({ "network": record.name, "endpoint": endpoint }));
    }
    let addrs: Vec<String> = endpoint
        .ipv4
        .iter()
        .chain(endpoint.ipv6.iter())
        .map(|n| n.to_string())
        .collect();
    out!(
        "connected {} to {}: {} {} {}",
        endpoint.sandbox,
        record.name,
        endpoint.ifname,
        endpoint.mac,
        addrs.join(" ")
    );
    Ok(())
}

async fn disconnect_command(manager: &Manager, args: DisconnectArgs) -> Result<()> {
    let network = args.network;
    let endpoint = manager
        .disconnect(&network, &args.sandbox, args.force)
        .await?;
    if args.output.json {
        print_json(&serde_json::json!({ "network": network, "endpoint": endpoint }))
    } else {
        out!("disconnected {} from {network}", endpoint.sandbox);
        Ok(())
    }
}

/// `network prune` removes things: a person at a terminal confirms, a
/// script says `-f`. Anything else is refused before anything is touched.
fn confirm_prune(force: bool) -> Result<bool> {
    if force {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "network prune removes every network without endpoints and stdin is not a terminal to ask on: \
             pass -f (--force) to confirm; nothing was removed"
        );
    }
    let mut stderr = std::io::stderr().lock();
    let _ = write!(
        stderr,
        "WARNING! This will remove all networks without endpoints.\nAre you sure you want to continue? [y/N] "
    );
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("reading the answer from stdin")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    out!(
        "{}",
        serde_json::to_string_pretty(value).context("serialising output")?
    );
    Ok(())
}

/// A table whose columns are as wide as their widest cell (names can be
/// 64 characters). Columns listed in `right` are right-aligned (numbers).
fn print_table(indent: &str, header: &[&str], rows: &[Vec<String>], right: &[usize]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::from(indent);
        let last = cells.len() - 1;
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if right.contains(&i) {
                text.push_str(&format!("{cell:>width$}"));
            } else if i == last {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}"));
            }
            if i != last {
                text.push_str("  ");
            }
        }
        out!("{}", text.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

async fn datapath_command(datapath: &Datapath, cmd: DatapathCommand) -> Result<()> {
    match cmd {
        DatapathCommand::Attach {
            iface,
            mode,
            output,
        } => {
            let outcome = datapath.attach(&iface, mode).await?;
            let (attachment, changed, fallback) = match &outcome {
                AttachOutcome::Attached {
                    attachment,
                    native_refused,
                } => (attachment, true, native_refused.clone()),
                AttachOutcome::AlreadyAttached(a) => (a, false, None),
            };
            if output.json {
                print_json(&serde_json::json!({
                    "changed": changed,
                    "attachment": attachment,
                    "native_refused": fallback,
                }))?;
            } else if changed {
                out!(
                    "attached to {} (ifindex {}) in {} mode, program id {}; pinned at {}",
                    attachment.ifname,
                    attachment.ifindex,
                    attachment.mode,
                    attachment.prog_id,
                    attachment.pin_dir.display()
                );
                if let Some(reason) = fallback {
                    out!("note: native XDP was refused ({reason}); generic mode is slower but sees the same frames");
                }
            } else {
                out!(
                    "already attached to {} in {} mode (program id {}); nothing to do",
                    attachment.ifname,
                    attachment.mode,
                    attachment.prog_id
                );
            }
        }
        DatapathCommand::Detach { iface, output, .. } => {
            let attachment = datapath.detach(&iface).await?;
            if output.json {
                print_json(&serde_json::json!({ "detached": attachment }))?;
            } else {
                out!(
                    "detached from {} (program id {}); its counters are gone",
                    attachment.ifname,
                    attachment.prog_id
                );
            }
        }
        DatapathCommand::Status { output } => {
            let statuses = datapath.status().await?;
            if output.json {
                print_json(&serde_json::json!({ "attachments": statuses }))?;
            } else {
                print_status(&statuses);
            }
        }
        DatapathCommand::Upgrade {
            iface,
            force,
            output,
        } => {
            let outcomes = datapath.upgrade(iface.as_deref(), force).await?;
            if output.json {
                print_json(&serde_json::json!({ "upgrades": outcomes }))?;
            } else if outcomes.is_empty() {
                out!("no interface has netvlan's datapath attached; nothing to upgrade");
            }
            for outcome in outcomes.iter().filter(|_| !output.json) {
                match outcome {
                    UpgradeOutcome::Current { ifname, prog_id } => out!(
                        "{ifname}: already runs this build (program id {prog_id}); nothing to do"
                    ),
                    UpgradeOutcome::Replaced {
                        ifname,
                        old_prog_id,
                        new_prog_id,
                        new_maps,
                    } => {
                        out!(
                            "{ifname}: program {old_prog_id} replaced by {new_prog_id} in place; counters and policy kept"
                        );
                        if !new_maps.is_empty() {
                            out!("  new maps, starting empty: {}", new_maps.join(", "));
                        }
                    }
                }
            }
        }
        DatapathCommand::Prune { output } => {
            let removed = datapath.prune().await?;
            if output.json {
                print_json(&serde_json::json!({ "removed": removed }))?;
            } else if removed.is_empty() {
                out!("nothing stale to remove");
            } else {
                for status in &removed {
                    if let AttachmentStatus::Stale {
                        ifindex, pin_dir, ..
                    } = status
                    {
                        out!(
                            "removed stale pins of ifindex {ifindex}: {}",
                            pin_dir.display()
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

async fn network_command(manager: &Manager, cmd: NetworkCommand) -> Result<()> {
    match cmd {
        NetworkCommand::Create(args) => {
            let record = manager
                .create(CreateRequest {
                    name: args.name,
                    driver: args.driver,
                    subnets: args.subnet,
                    gateways: args.gateway,
                    ip_ranges: args.ip_range,
                    aux_addresses: args.aux_address,
                    ipv6: args.ipv6,
                    internal: args.internal,
                    options: args.opt,
                    labels: args.label,
                })
                .await?;
            if args.output.json {
                print_json(&network::inspect(&record))?;
            } else {
                out!("{}", record.id);
                if record.ipv6_inferred {
                    err!("note: IPv6 enabled because an IPv6 subnet was given");
                }
            }
        }
        NetworkCommand::Ls {
            quiet,
            filter,
            output,
        } => {
            let filter = ListFilter::parse(&filter)?;
            let records: Vec<_> = manager
                .networks()?
                .into_iter()
                .filter(|r| filter.matches(r))
                .collect();
            if output.json {
                let list: Vec<_> = records.iter().map(network::inspect).collect();
                print_json(&list)?;
            } else if quiet {
                for record in &records {
                    out!("{}", &record.id[..12]);
                }
            } else {
                let rows: Vec<Vec<String>> = network::list_rows(&records)
                    .into_iter()
                    .map(Vec::from)
                    .collect();
                print_table("", &["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows, &[]);
            }
        }
        NetworkCommand::Inspect { names, output: _ } => {
            // As Docker: print what exists, then fail naming what does not.
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for name in &names {
                match manager.network(name) {
                    Ok(record) => found.push(network::inspect(&record)),
                    Err(e) => missing.push(format!("{e:#}")),
                }
            }
            print_json(&found)?;
            if !missing.is_empty() {
                anyhow::bail!("{}", missing.join("\nerror: "));
            }
        }
        NetworkCommand::Rm { names, output } => {
            let mut removed = Vec::new();
            let mut failed = Vec::new();
            for name in &names {
                match manager.remove(name).await {
                    Ok(record) => {
                        if !output.json {
                            out!("{}", record.name);
                        }
                        removed.push(record.name);
                    }
                    Err(e) => failed.push((name.clone(), format!("{e:#}"))),
                }
            }
            finish_removal(output, &removed, &failed)?;
        }
        NetworkCommand::Prune { force: _, output } => {
            let mut removed = Vec::new();
            let mut failed = Vec::new();
            for record in manager.networks()? {
                if record.endpoints.is_empty() {
                    match manager.remove(&record.name).await {
                        Ok(_) => {
                            if !output.json {
                                out!("removed {}", record.name);
                            }
                            removed.push(record.name);
                        }
                        Err(e) => failed.push((record.name, format!("{e:#}"))),
                    }
                }
            }
            // Links that carry netvlan's owner tag but belong to no network.
            let orphans = manager.remove_orphans().await?;
            if !output.json {
                for line in &orphans {
                    out!("{line}");
                }
            }
            if removed.is_empty() && failed.is_empty() && orphans.is_empty() && !output.json {
                out!("no network without endpoints; nothing removed");
            }
            finish_removal(output, &removed, &failed)?;
        }
        NetworkCommand::Connect(args) => connect_command(manager, args).await?,
        NetworkCommand::Disconnect(args) => disconnect_command(manager, args).await?,
    }
    Ok(())
}

/// The end of `network rm` / `prune`: the JSON report, and an error
/// naming every network that could not be removed.
fn finish_removal(output: Output, removed: &[String], failed: &[(String, String)]) -> Result<()> {
    if output.json {
        let errors: Vec<_> = failed
            .iter()
            .map(|(network, error)| serde_json::json!({ "network": network, "error": error }))
            .collect();
        print_json(&serde_json::json!({ "removed": removed, "errors": errors }))?;
    }
    if !failed.is_empty() {
        let messages: Vec<&str> = failed.iter().map(|(_, e)| e.as_str()).collect();
        anyhow::bail!("{}", messages.join("\nerror: "));
    }
    Ok(())
}

fn print_demo(report: &netvlan::demo::DemoReport) {
    out!(
        "netvlan demo: netvlan runs in namespace {}",
        report.host_namespace
    );
    if !report.vlan_network {
        out!("(this kernel has no 802.1Q support: the VLAN network is left out)");
    }
    out!();
    // What the parent's XDP program counted for each container's MAC:
    // frames that came in from the LAN, not what the container sent.
    let rows: Vec<Vec<String>> = report
        .endpoints
        .iter()
        .map(|e| {
            vec![
                e.sandbox.clone(),
                e.network.clone(),
                e.ipv4.clone(),
                e.mac.clone(),
                e.rx_packets.to_string(),
                e.rx_bytes.to_string(),
            ]
        })
        .collect();
    print_table(
        "",
        &[
            "CONTAINER",
            "NETWORK",
            "IPV4",
            "MAC",
            "FRAMES FROM LAN",
            "BYTES FROM LAN",
        ],
        &rows,
        &[4, 5],
    );
    out!();
    out!("Frames on the parent link by VLAN:");
    for v in &report.vlans {
        let label = if v.vlan == 0 {
            "untagged".to_string()
        } else {
            format!("VLAN {}", v.vlan)
        };
        out!(
            "  {:<10} {:>6} frames {:>8} bytes",
            label,
            v.counters.rx_packets,
            v.counters.rx_bytes
        );
    }
    out!();
    out!("Try next:");
    for cmd in &report.next {
        out!("  {cmd}");
    }
}

fn print_status(statuses: &[AttachmentStatus]) {
    if statuses.is_empty() {
        out!("netvlan's datapath is not attached to any interface in this network namespace.");
        out!("Attach it with: netvlan datapath attach IFACE");
        return;
    }
    out!(
        "{:<16} {:>7} {:<8} {:>7}  PINS",
        "INTERFACE",
        "IFINDEX",
        "MODE",
        "PROG"
    );
    for status in statuses {
        match status {
            AttachmentStatus::Attached(a) => out!(
                "{:<16} {:>7} {:<8} {:>7}  {}",
                a.ifname,
                a.ifindex,
                a.mode.to_string(),
                a.prog_id,
                a.pin_dir.display()
            ),
            AttachmentStatus::Stale {
                ifindex,
                ifname,
                reason,
                pin_dir,
            } => out!(
                "{:<16} {:>7} {:<8} {:>7}  {} (stale: {reason}; `netvlan datapath prune` removes it)",
                ifname.as_deref().unwrap_or("-"),
                ifindex,
                "stale",
                "-",
                pin_dir.display()
            ),
        }
    }
}

async fn stats_command(
    datapath: &Datapath,
    state_dir: &std::path::Path,
    args: StatsArgs,
) -> Result<()> {
    let mut report = StatsReport::default();
    for (attachment, pins) in datapath.attachments(args.iface.as_deref()).await? {
        report.interfaces.push(stats::read(&attachment, &pins)?);
    }
    // Name the MACs that belong to endpoints (when there is any state).
    // Counters never wait behind a long command: without the state lock
    // within a second, they are shown without names.
    let store = if state_dir.join("netvlan.redb").exists() {
        let store = Store::open_within(state_dir, std::time::Duration::from_secs(1))?;
        if store.is_none() {
            tracing::warn!(
                "another netvlan command holds the state; showing counters without endpoint names and per-endpoint counters"
            );
        }
        store
    } else {
        None
    };
    if let Some(store) = store {
        let mut owners = std::collections::HashMap::new();
        for record in store.networks::<network::NetworkRecord>()? {
            for endpoint in record.endpoints.values() {
                owners.insert(
                    endpoint.mac.clone(),
                    (record.name.clone(), endpoint.sandbox.clone()),
                );
            }
        }
        for mac in report.interfaces.iter_mut().flat_map(|i| i.macs.iter_mut()) {
            if let Some((network, endpoint)) = owners.get(&mac.mac) {
                mac.network = Some(network.clone());
                mac.endpoint = Some(endpoint.clone());
            }
        }
        for record in store.networks::<network::NetworkRecord>()? {
            for endpoint in record.endpoints.values() {
                let Some(netns) = endpoint.netns else {
                    continue;
                };
                if let Some(egress) = netvlan::datapath::egress::read_stats(
                    datapath.bpf_dir(),
                    netns,
                    endpoint.ifindex,
                )? {
                    report.endpoints.push(stats::EndpointStats {
                        network: record.name.clone(),
                        endpoint: endpoint.sandbox.clone(),
                        ifname: endpoint.ifname.clone(),
                        addresses: endpoint
                            .ipv4
                            .iter()
                            .chain(endpoint.ipv6.iter())
                            .map(|net| net.addr().to_string())
                            .collect(),
                        egress,
                    });
                }
            }
        }
    }
    if args.output.json {
        return print_json(&report);
    }
    if !report.endpoints.is_empty() {
        // Counted on the endpoint's own link (TC): what reached the
        // container and what it sent, and the frames anti-spoofing caught.
        let rows: Vec<Vec<String>> = report
            .endpoints
            .iter()
            .map(|e| {
                vec![
                    e.endpoint.clone(),
                    e.network.clone(),
                    e.egress.rx_packets.to_string(),
                    e.egress.rx_bytes.to_string(),
                    e.egress.tx_packets.to_string(),
                    e.egress.tx_bytes.to_string(),
                    e.egress.spoofed_packets.to_string(),
                ]
            })
            .collect();
        print_table(
            "",
            &[
                "ENDPOINT",
                "NETWORK",
                "RECEIVED PKTS",
                "RECEIVED BYTES",
                "SENT PKTS",
                "SENT BYTES",
                "SPOOFED PKTS",
            ],
            &rows,
            &[2, 3, 4, 5, 6],
        );
        out!();
    }
    if report.interfaces.is_empty() {
        out!("no interface has netvlan's datapath attached; try `netvlan datapath attach IFACE`");
    }
    for iface in &report.interfaces {
        out!(
            "{} (ifindex {}, {} XDP, program {}): {} frames, {} bytes",
            iface.ifname,
            iface.ifindex,
            iface.mode,
            iface.prog_id,
            iface.frames.rx_packets,
            iface.frames.rx_bytes
        );
        out!("  {:<20} {:>12} {:>14}", "VLAN", "PACKETS", "BYTES");
        for v in &iface.vlans {
            let label = if v.vlan == 0 {
                "untagged".to_string()
            } else {
                v.vlan.to_string()
            };
            out!(
                "  {:<20} {:>12} {:>14}",
                label,
                v.counters.rx_packets,
                v.counters.rx_bytes
            );
        }
        out!(
            "  {:<20} {:>12} {:>14}",
            "DESTINATION MAC",
            "PACKETS",
            "BYTES"
        );
        for m in &iface.macs {
            let owner = match (&m.network, &m.endpoint) {
                (Some(n), Some(e)) => format!("  {e} on {n}"),
                _ => String::new(),
            };
            out!(
                "  {:<20} {:>12} {:>14}{owner}",
                m.mac,
                m.counters.rx_packets,
                m.counters.rx_bytes
            );
        }
        let anomalies: Vec<_> = iface
            .anomalies
            .iter()
            .filter(|(_, c)| c.rx_packets > 0)
            .collect();
        if anomalies.is_empty() && iface.mac_table_full.rx_packets == 0 {
            out!("  no anomalies");
        } else {
            out!("  {:<20} {:>12} {:>14}", "ANOMALY", "PACKETS", "BYTES");
            for (name, c) in anomalies {
                out!("  {:<20} {:>12} {:>14}", name, c.rx_packets, c.rx_bytes);
            }
            if iface.mac_table_full.rx_packets > 0 {
                out!(
                    "  {:<20} {:>12} {:>14}",
                    "mac_table_full",
                    iface.mac_table_full.rx_packets,
                    iface.mac_table_full.rx_bytes
                );
            }
        }
        let drops: Vec<_> = iface
            .drops
            .iter()
            .filter(|(_, c)| c.rx_packets > 0)
            .collect();
        if drops.is_empty() {
            out!("  nothing dropped by policy");
        } else {
            out!(
                "  {:<20} {:>12} {:>14}",
                "DROPPED (POLICY)",
                "PACKETS",
                "BYTES"
            );
            for (reason, c) in drops {
                out!("  {:<20} {:>12} {:>14}", reason, c.rx_packets, c.rx_bytes);
            }
            for d in &iface.vlan_drops {
                let label = format!("  vlan {} {}", d.vlan, d.reason);
                out!(
                    "  {:<20} {:>12} {:>14}",
                    label,
                    d.counters.rx_packets,
                    d.counters.rx_bytes
                );
            }
        }
        if !iface.mac_guards.is_empty() {
            out!(
                "  {:<20} {:>12} {:>14} {:>12}",
                "MAC GUARD (VLAN)",
                "LEARNED/MAX",
                "OVER LIMIT",
                "ACTION"
            );
            for g in &iface.mac_guards {
                let label = if g.vlan == 0 {
                    "untagged".to_string()
                } else {
                    g.vlan.to_string()
                };
                let limit = g.limit.map_or("off".to_string(), |l| l.to_string());
                let mut line = format!(
                    "  {:<20} {:>12} {:>14} {:>12}",
                    label,
                    format!("{}/{limit}", g.learned),
                    g.over_limit_packets,
                    g.action
                );
                if let Some(event) = &g.last_over_limit {
                    line.push_str(&format!("  last: {} {}s ago", event.mac, event.seconds_ago));
                }
                out!("{line}");
            }
        }
    }
    Ok(())
}
