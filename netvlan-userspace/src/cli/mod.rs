//! The `netvlan` command line: the clap types, the checks every command
//! makes first, and the dispatch to one module per command (each with its
//! renderers). The only place that knows clap or prints.

mod check;
mod connect;
mod daemon;
mod datapath;
mod demo;
mod docker_plugin;
mod error;
mod network;
pub(crate) mod output;
mod package;
mod policy;
mod restore;
mod stats;
mod trace;

use std::{io::IsTerminal, path::PathBuf};

use clap::{
    builder::{PossibleValue, PossibleValuesParser, TypedValueParser},
    Args, CommandFactory, FromArgMatches, Parser, Subcommand,
};

use self::{
    connect::{ConnectArgs, DisconnectArgs},
    daemon::{DaemonArgs, LogFormat},
    datapath::DatapathCommand,
    demo::DemoAction,
    error::{CliError, Result},
    network::NetworkCommand,
    output::err,
    policy::PolicyCommand,
    stats::StatsArgs,
};
use crate::{
    control::{Manager, OptionKey, OPTION_KEYS},
    daemon::{client::Client, DEFAULT_RUN_DIR},
    datapath::{pins, Datapath, DEFAULT_BPF_DIR},
    keyword::Keyword,
    store::{Store, DEFAULT_STATE_DIR},
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
    #[arg(long, global = true, env = "NETVLAN_BPF_DIR", default_value = DEFAULT_BPF_DIR, value_name = "DIR", help_heading = GLOBAL)]
    bpf_dir: PathBuf,
    /// Where networks and endpoints are stored.
    #[arg(long, global = true, env = "NETVLAN_STATE_DIR", default_value = DEFAULT_STATE_DIR, value_name = "DIR", help_heading = GLOBAL)]
    state_dir: PathBuf,
    /// Where the daemon keeps its API socket (`netvlan.sock`); commands
    /// ask a daemon there when one runs, and work without it.
    #[arg(long, global = true, env = "NETVLAN_RUN_DIR", default_value = DEFAULT_RUN_DIR, value_name = "DIR", help_heading = GLOBAL)]
    run_dir: PathBuf,
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
        #[arg(long, default_value = crate::demo::DEFAULT_PREFIX, value_name = "PREFIX", global = true)]
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
    /// Run the service beside the datapath: Prometheus metrics and the
    /// live page. Programs and maps stay pinned without it; stopping or
    /// killing it loses no packet, filter or count.
    Daemon(DaemonArgs),
    /// Serve Docker's remote network driver protocol on a unix socket, so
    /// `docker network create -d netvlan -o parent=eth0 ...` makes netvlan
    /// networks (same state, datapath and counters as the CLI's). Runs in
    /// the foreground, in dockerd's network namespace.
    DockerPlugin(docker_plugin::DockerPluginArgs),
    /// Show frames as the datapath sees them, filtered in the kernel: a
    /// line per event (JSON with --json), optionally a pcapng capture.
    /// Lost events (a full ring) are counted and printed at the end.
    Trace(trace::TraceArgs),
    /// Print a shell completion script on stdout. Install it as
    /// /usr/share/bash-completion/completions/netvlan (bash),
    /// /usr/share/zsh/vendor-completions/_netvlan (zsh) or
    /// /usr/share/fish/vendor_completions.d/netvlan.fish (fish).
    Completions {
        /// The shell that reads the script.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
        #[command(flatten)]
        output: Output,
    },
    /// Print the man page netvlan(1) on stdout, or with --dir write it and
    /// one page per subcommand (netvlan-network-create.1, ...) there.
    Man {
        /// Directory for the pages, e.g. /usr/local/share/man/man1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        output: Output,
    },
}

/// With `--json`, a failing command still writes its `error: ...` line to
/// stderr, then one more line there: `{"error": {"code", "kind", "msg",
/// "details"}}` ([`ErrorReport`]), so a script parses stdout for results
/// and the last stderr line for the error.
///
/// [`ErrorReport`]: crate::control::ErrorReport
#[derive(Args, Clone, Copy)]
struct Output {
    /// Machine-readable JSON on stdout (and the error as JSON on stderr).
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// Whether the command given has `--json` on (it is global below each
/// command that takes it).
fn wants_json(matches: &clap::ArgMatches) -> bool {
    let mut innermost = matches;
    while let Some((_, sub)) = innermost.subcommand() {
        innermost = sub;
    }
    matches!(innermost.try_get_one::<bool>("json"), Ok(Some(true)))
}

/// Parses a [`Keyword`] setting, listing its spellings (and what each
/// does) in help and in the error for a wrong one.
fn keyword_parser<K: Keyword + Send + Sync>() -> impl TypedValueParser<Value = K> {
    PossibleValuesParser::new(K::ALL.iter().map(|k| {
        let value = PossibleValue::new(k.name());
        match k.help() {
            Some(help) => value.help(help),
            None => value,
        }
    }))
    .map(|name| K::parse_keyword(&name).expect("clap accepts only the keyword's spellings"))
}

/// Keys of the one table of `-o` keys, for help: `KEY=VALUES` and what
/// it does below, wrapped short enough that clap keeps the lines.
fn key_lines<'a>(keys: impl Iterator<Item = &'a OptionKey>) -> String {
    const INDENT: &str = "      ";
    const WIDTH: usize = 72;
    let mut out = Vec::new();
    for key in keys {
        out.push(format!("  {}={}", key.name, key.values));
        let mut line = String::from(INDENT);
        for word in key.help.split_whitespace() {
            if line.len() > INDENT.len() && line.len() + 1 + word.len() > WIDTH {
                out.push(std::mem::replace(&mut line, String::from(INDENT)));
            }
            if line.len() > INDENT.len() {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push(line);
    }
    out.join("\n")
}

/// The command line with the `-o` keys listed from the control plane's
/// table (so help never drifts from what is parsed). Public for the
/// tests that check the completions and man pages against it.
pub fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand("network", |network| {
            network.mut_subcommand("create", |create| {
                create.mut_arg("opt", |opt| {
                    opt.long_help(format!(
                        "Driver options and the policy settings of `netvlan policy set`; repeat for more:\n{}",
                        key_lines(OPTION_KEYS.iter())
                    ))
                })
            })
        })
        .mut_subcommand("policy", |policy| {
            policy.mut_subcommand("set", |set| {
                set.after_long_help(format!(
                    "Settings:\n{}",
                    key_lines(OPTION_KEYS.iter().filter(|k| k.policy()))
                ))
            })
        })
}

/// Runs the command line and exits with its status.
pub fn main() {
    // Reads FAILPOINTS in test builds (feature `failpoints`); inert otherwise.
    let _failpoints = fail::FailScenario::setup();
    let matches = command().get_matches();
    let json = wants_json(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match &cli.command {
        Command::Daemon(args) => init_daemon_tracing(cli.verbose, args.log_format()),
        Command::DockerPlugin(_) => init_daemon_tracing(cli.verbose, LogFormat::Text),
        _ => init_tracing(cli.verbose),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime can always be built");
    let result = runtime.block_on(run(cli));
    if let Err(e) = result {
        let report = e.report();
        err!("error: {}", report.line());
        if json {
            err!("{}", serde_json::json!({ "error": report }));
        }
        std::process::exit(1);
    }
    if output::stdout_failed() {
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
    // Colours only for a person at a terminal, never in logs or pipes.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
}

/// The daemon logs at info by default, with timestamps, as text or as
/// JSON lines (journald, collectors); never in colour unless a terminal.
fn init_daemon_tracing(verbose: u8, format: LogFormat) {
    let default = if verbose == 0 { "info" } else { "debug" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .with_current_span(false)
            .flatten_event(true)
            .init(),
    }
}

/// Capabilities every command needs: links and routes (CAP_NET_ADMIN),
/// entering namespaces and loading/pinning eBPF (CAP_SYS_ADMIN).
const NEEDED_CAPABILITIES: [(u32, &str); 2] = [(12, "CAP_NET_ADMIN"), (21, "CAP_SYS_ADMIN")];

/// Says up front what privileges are missing, instead of the first
/// syscall's EPERM/EACCES in whatever it happened to touch.
fn require_privileges() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(CliError::ReadStatus)?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or(CliError::NoCapEff)?;
    let missing: Vec<&str> = NEEDED_CAPABILITIES
        .iter()
        .filter(|(bit, _)| effective & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(CliError::NotPrivileged {
            needed: NEEDED_CAPABILITIES.map(|(_, n)| n).join(" and "),
            uid: nix::unistd::geteuid().as_raw(),
            missing: missing.join(" and "),
        });
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    // What a package installs needs no privileges, state or pins.
    match &cli.command {
        Command::Completions { shell, output } => return package::completions(*shell, *output),
        Command::Man { dir, output } => return package::man(dir.as_deref(), *output),
        _ => {}
    }
    require_privileges()?;
    // Refused before anything changes: pins that would vanish with this
    // process (`ip netns exec`). Reading the state needs no pins.
    let pins_persist = pins::check_pins_persist(&cli.bpf_dir);
    let reads_state_only = matches!(
        cli.command,
        Command::Network(NetworkCommand::Ls { .. } | NetworkCommand::Inspect { .. })
    );
    if !reads_state_only {
        pins_persist
            .as_ref()
            .map_err(|e| CliError::PinsWouldVanish(e.to_string()))?;
    }
    // Read-only commands, connect and disconnect ask a running daemon of
    // this namespace first: it answers from the objects and netlink
    // handles it already holds.
    let daemon = Client::new(&cli.run_dir, &cli.bpf_dir, &cli.state_dir);
    if let Some(daemon) = &daemon {
        let answered = match &cli.command {
            Command::Stats(args) => stats::via_daemon(daemon, args).await?,
            Command::Network(cmd) => network::via_daemon(daemon, cmd).await?,
            // Commands that change the state too: the daemon keeps the
            // endpoint object's loader and its netlink connection.
            Command::Connect(args) => connect::connect_via_daemon(daemon, args).await?,
            Command::Disconnect(args) => connect::disconnect_via_daemon(daemon, args).await?,
            _ => false,
        };
        if answered {
            return Ok(());
        }
    }
    let datapath = Datapath::open(&cli.bpf_dir)?;
    let state_dir = cli.state_dir.clone();
    // Opening the manager first cleans up after a command that was killed
    // half-way (not where pins would vanish); say what that did.
    let manager = || async {
        if pins_persist.is_err() {
            return Ok(Manager::new(Store::open(&state_dir)?, datapath.clone())?);
        }
        let (manager, recovered) =
            Manager::open(Store::open(&state_dir)?, datapath.clone()).await?;
        for line in recovered {
            err!("note: {line}");
        }
        Ok::<Manager, CliError>(manager)
    };
    match cli.command {
        Command::Datapath(cmd) => {
            // Detaching under networks is the manager's to refuse; with no
            // state there are none (and no state is made).
            let manager = match &cmd {
                DatapathCommand::Detach { .. } if Store::exists(&state_dir) => {
                    Some(manager().await?)
                }
                _ => None,
            };
            datapath::run(&datapath, manager.as_ref(), cmd).await
        }
        Command::Check { output } => check::run(&manager().await?, output).await,
        Command::Stats(args) => stats::run(&datapath, &cli.state_dir, daemon.as_ref(), args).await,
        Command::Daemon(args) => {
            daemon::run(&cli.bpf_dir, &cli.state_dir, &cli.run_dir, args).await
        }
        Command::DockerPlugin(args) => docker_plugin::run(&cli.bpf_dir, &cli.state_dir, args).await,
        Command::Trace(args) => trace::run(&datapath, &cli.state_dir, daemon.as_ref(), args).await,
        Command::Demo {
            action,
            prefix,
            output,
        } => demo::run(action, &prefix, &cli.state_dir, &cli.bpf_dir, output).await,
        Command::Policy(cmd) => policy::run(&manager().await?, cmd).await,
        Command::Restore { output } => restore::run(&manager().await?, output).await,
        Command::Network(cmd) => {
            if let NetworkCommand::Prune { force, .. } = &cmd {
                if !network::confirm_prune(*force)? {
                    err!("nothing removed");
                    return Ok(());
                }
            }
            network::run(&manager().await?, cmd).await
        }
        Command::Connect(args) => connect::connect(&manager().await?, args).await,
        Command::Disconnect(args) => connect::disconnect(&manager().await?, args).await,
        Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("answered before the privilege check")
        }
    }
}
