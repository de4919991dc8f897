//! The `netvlan` command.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use netvlan::datapath::{
    stats::{self, StatsReport},
    AttachMode, AttachOutcome, AttachmentStatus, Datapath, DEFAULT_BPF_DIR,
};

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
    #[arg(long, global = true, env = "NETVLAN_BPF_DIR", default_value = DEFAULT_BPF_DIR)]
    bpf_dir: PathBuf,
    /// More detail on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach, detach and inspect the XDP datapath on interfaces.
    #[command(subcommand)]
    Datapath(DatapathCommand),
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
    Detach {
        iface: String,
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
    #[arg(long)]
    json: bool,
}

fn main() {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime can always be built");
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
}

async fn run(cli: Cli) -> Result<()> {
    let datapath = Datapath::open(&cli.bpf_dir)?;
    match cli.command {
        Command::Datapath(cmd) => datapath_command(&datapath, cmd).await,
        Command::Stats(args) => stats_command(&datapath, args).await,
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("serialising output")?
    );
    Ok(())
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
                println!(
                    "attached to {} (ifindex {}) in {} mode, program id {}; pinned at {}",
                    attachment.ifname,
                    attachment.ifindex,
                    attachment.mode,
                    attachment.prog_id,
                    attachment.pin_dir.display()
                );
                if let Some(reason) = fallback {
                    println!("note: native XDP was refused ({reason}); generic mode is slower but sees the same frames");
                }
            } else {
                println!(
                    "already attached to {} in {} mode (program id {}); nothing to do",
                    attachment.ifname, attachment.mode, attachment.prog_id
                );
            }
        }
        DatapathCommand::Detach { iface, output } => {
            let attachment = datapath.detach(&iface).await?;
            if output.json {
                print_json(&serde_json::json!({ "detached": attachment }))?;
            } else {
                println!(
                    "detached from {} (program id {}); its counters are gone",
                    attachment.ifname, attachment.prog_id
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
        DatapathCommand::Prune { output } => {
            let removed = datapath.prune().await?;
            if output.json {
                print_json(&serde_json::json!({ "removed": removed }))?;
            } else if removed.is_empty() {
                println!("nothing stale to remove");
            } else {
                for status in &removed {
                    if let AttachmentStatus::Stale {
                        ifindex, pin_dir, ..
                    } = status
                    {
                        println!(
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

fn print_status(statuses: &[AttachmentStatus]) {
    if statuses.is_empty() {
        println!("netvlan's datapath is not attached to any interface in this network namespace.");
        println!("Attach it with: netvlan datapath attach IFACE");
        return;
    }
    println!(
        "{:<16} {:>7} {:<8} {:>7}  PINS",
        "INTERFACE", "IFINDEX", "MODE", "PROG"
    );
    for status in statuses {
        match status {
            AttachmentStatus::Attached(a) => println!(
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
            } => println!(
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

async fn stats_command(datapath: &Datapath, args: StatsArgs) -> Result<()> {
    let mut report = StatsReport::default();
    for (attachment, pins) in datapath.attachments(args.iface.as_deref()).await? {
        report.interfaces.push(stats::read(&attachment, &pins)?);
    }
    if args.output.json {
        return print_json(&report);
    }
    if report.interfaces.is_empty() {
        println!(
            "no interface has netvlan's datapath attached; try `netvlan datapath attach IFACE`"
        );
    }
    for iface in &report.interfaces {
        println!(
            "{} (ifindex {}, {} XDP, program {}): {} frames, {} bytes",
            iface.ifname,
            iface.ifindex,
            iface.mode,
            iface.prog_id,
            iface.frames.rx_packets,
            iface.frames.rx_bytes
        );
        println!("  {:<20} {:>12} {:>14}", "VLAN", "PACKETS", "BYTES");
        for v in &iface.vlans {
            let label = if v.vlan == 0 {
                "untagged".to_string()
            } else {
                v.vlan.to_string()
            };
            println!(
                "  {:<20} {:>12} {:>14}",
                label, v.counters.rx_packets, v.counters.rx_bytes
            );
        }
        println!(
            "  {:<20} {:>12} {:>14}",
            "DESTINATION MAC", "PACKETS", "BYTES"
        );
        for m in &iface.macs {
            println!(
                "  {:<20} {:>12} {:>14}",
                m.mac, m.counters.rx_packets, m.counters.rx_bytes
            );
        }
        let anomalies: Vec<_> = iface
            .anomalies
            .iter()
            .filter(|(_, c)| c.rx_packets > 0)
            .collect();
        if anomalies.is_empty() && iface.mac_table_full.rx_packets == 0 {
            println!("  no anomalies");
        } else {
            println!("  {:<20} {:>12} {:>14}", "ANOMALY", "PACKETS", "BYTES");
            for (name, c) in anomalies {
                println!("  {:<20} {:>12} {:>14}", name, c.rx_packets, c.rx_bytes);
            }
            if iface.mac_table_full.rx_packets > 0 {
                println!(
                    "  {:<20} {:>12} {:>14}",
                    "mac_table_full",
                    iface.mac_table_full.rx_packets,
                    iface.mac_table_full.rx_bytes
                );
            }
        }
    }
    Ok(())
}
