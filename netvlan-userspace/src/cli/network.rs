//! `netvlan network ...`: create, ls, inspect, rm, prune (connect and
//! disconnect are in [`super::connect`]).

use std::io::{IsTerminal, Write};

use super::error::{CliError, Result};
use clap::{Args, Subcommand};

use super::{
    connect::{self, ConnectArgs, DisconnectArgs},
    keyword_parser,
    output::{err, out, print_json, print_table},
    Output,
};
use crate::{
    control::{self, CreateRequest, Driver, ListFilter, Manager},
    daemon::client::{self, Client},
};

#[derive(Subcommand)]
pub(super) enum NetworkCommand {
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
    /// Change a network's host access (the one setting that changes after create).
    ///
    /// All or nothing: the current mode's link, addresses and routes are
    /// replaced by the new mode's, or left as they were on failure.
    /// Examples:
    ///   netvlan network update lan -o host_access=shim
    ///   netvlan network update lan -o host_access=shim --host-ip 172.16.86.240
    ///   netvlan network update lan -o host_access=off
    #[command(verbatim_doc_comment)]
    Update {
        /// Network name.
        #[arg(value_name = "NETWORK")]
        name: String,
        /// host_access=off|on|shim|ebpf.
        #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
        opt: Vec<String>,
        /// The host's address for host access (one per family; default:
        /// reserved from the network's subnet).
        #[arg(long, value_name = "IP")]
        host_ip: Vec<String>,
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
pub(super) struct CreateArgs {
    /// macvlan (own MAC per endpoint) or ipvlan (parent's MAC).
    #[arg(short, long, value_parser = keyword_parser::<Driver>(), default_value_t = Driver::Macvlan)]
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
    /// Driver options and the policy settings of `netvlan policy set`;
    /// repeat for more (`--help` lists the keys).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
    opt: Vec<String>,
    /// Metadata KEY=VALUE (shown by inspect, matched by `ls --filter label=`);
    /// repeat for more.
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// The host's address for `-o host_access=...` (one per family;
    /// default: reserved from the network's subnet).
    #[arg(long, value_name = "IP")]
    host_ip: Vec<String>,
    /// Name of the new network.
    name: String,
    #[command(flatten)]
    output: Output,
}

pub(super) async fn run(manager: &Manager, cmd: NetworkCommand) -> Result<()> {
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
                    host_ips: args.host_ip,
                })
                .await?;
            if args.output.json {
                print_json(&control::inspect(&record))?;
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
                let list: Vec<_> = records.iter().map(control::inspect).collect();
                print_json(&list)?;
            } else if quiet {
                for record in &records {
                    out!("{}", &record.id[..12]);
                }
            } else {
                let rows: Vec<Vec<String>> = control::list_rows(&records)
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
                    Ok(record) => found.push(control::inspect(&record)),
                    Err(e) => missing.push(format!("{e:#}")),
                }
            }
            print_json(&found)?;
            if !missing.is_empty() {
                return Err(CliError::Several(missing));
            }
        }
        NetworkCommand::Update {
            name,
            opt,
            host_ip,
            output,
        } => {
            let record = manager.update(&name, &opt, &host_ip).await?;
            if output.json {
                print_json(&control::inspect(&record))?;
            } else {
                out!("{}", record.name);
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
        NetworkCommand::Connect(args) => connect::connect(manager, args).await?,
        NetworkCommand::Disconnect(args) => connect::disconnect(manager, args).await?,
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
        let messages = failed.iter().map(|(_, e)| e.clone()).collect();
        return Err(CliError::Several(messages));
    }
    Ok(())
}

/// `network prune` removes things: a person at a terminal confirms, a
/// script says `-f`. Anything else is refused before anything is touched.
pub(super) fn confirm_prune(force: bool) -> Result<bool> {
    if force {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::PruneNotConfirmed);
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
        .map_err(CliError::ReadAnswer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
}

/// `network ls --json` and `network inspect` answered by a running daemon
/// (same output); `false` when it cannot answer and the command runs here.
pub(super) async fn via_daemon(daemon: &Client, cmd: &NetworkCommand) -> Result<bool> {
    match cmd {
        NetworkCommand::Connect(args) => connect::connect_via_daemon(daemon, args).await,
        NetworkCommand::Disconnect(args) => connect::disconnect_via_daemon(daemon, args).await,
        NetworkCommand::Ls {
            quiet: false,
            filter,
            output,
        } if output.json && filter.is_empty() => match daemon.get("/v1/networks").await {
            Some(answer) if answer.status.is_success() => {
                out!("{}", answer.body);
                Ok(true)
            }
            _ => Ok(false),
        },
        NetworkCommand::Inspect { names, output: _ } => {
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for name in names {
                let path = format!("/v1/networks/{}", client::encode_segment(name));
                let Some(answer) = daemon.get(&path).await else {
                    return Ok(false);
                };
                let Ok(body) = serde_json::from_str::<serde_json::Value>(&answer.body) else {
                    return Ok(false);
                };
                match answer.status.as_u16() {
                    200 => found.push(body),
                    404 => match body["error"].as_str() {
                        Some(message) => missing.push(message.to_string()),
                        None => return Ok(false),
                    },
                    _ => return Ok(false),
                }
            }
            print_json(&found)?;
            if !missing.is_empty() {
                return Err(CliError::Several(missing));
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}
