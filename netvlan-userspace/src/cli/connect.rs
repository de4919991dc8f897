//! `netvlan connect` / `disconnect` (also under `netvlan network`).

use std::path::Path;

use super::error::Result;
use clap::Args;

use super::{
    error::CliError,
    output::{err, out, print_json},
    Output,
};
use crate::{
    control::{
        endpoint_key, new_endpoint_id, ConnectRequest, Endpoint, ErrorReport, Manager,
        NetworkRecord,
    },
    daemon::{
        client::{Client, Unanswered},
        commands::{Command, Done, RemoteError},
    },
    store::Store,
};

#[derive(Args)]
pub(super) struct ConnectArgs {
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
pub(super) struct DisconnectArgs {
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

impl ConnectArgs {
    fn request(&self) -> ConnectRequest {
        ConnectRequest {
            network: self.network.clone(),
            sandbox: self.sandbox.clone(),
            ip: self.ip.clone(),
            ip6: self.ip6.clone(),
            mac: self.mac.clone(),
            ifname: Some(self.ifname.clone()),
            ..Default::default()
        }
    }
}

/// Whether the daemon resolves `sandbox` as this command would: a name,
/// an absolute path or pid:PID (it runs on the same host, in the same
/// namespace); a relative path is this command's working directory's.
fn daemon_resolves(sandbox: &str) -> bool {
    !sandbox.contains('/') || sandbox.starts_with('/')
}

/// What handing a command to the daemon came to.
pub(super) enum Asked {
    /// It ran it; the result is printed.
    Answered,
    /// It did not: the caller runs the command itself.
    NotRun,
    /// The daemon went away after the command was sent: it may have
    /// committed it. [`Sent::settle`] says, once recovery ran.
    Lost(Box<Sent>),
}

/// A command the daemon may have run, and how to tell from the state.
pub(super) enum Sent {
    /// Done if an endpoint with this id exists.
    Connect { id: String, output: Output },
    /// Done if this endpoint (as read before it was sent) is gone.
    Disconnect {
        network: String,
        endpoint: Box<Endpoint>,
        output: Output,
    },
}

impl Sent {
    /// With the store open (recovery has run): prints the command's
    /// success output and returns `true` if the daemon committed it;
    /// `false` if it did not (the caller then runs it itself).
    pub(super) fn settle(&self, manager: &Manager) -> Result<bool> {
        let networks = manager.networks()?;
        let find = |id: &str| {
            networks.iter().find_map(|n| {
                n.endpoints
                    .values()
                    .find(|e| e.id == id)
                    .map(|e| (n.name.as_str(), e))
            })
        };
        match self {
            Sent::Connect { id, output } => match find(id) {
                Some((network, endpoint)) => {
                    tracing::info!("the daemon committed the connect before it went away");
                    print_connected(network, endpoint, *output).map(|()| true)
                }
                None => Ok(false),
            },
            Sent::Disconnect {
                network,
                endpoint,
                output,
            } => match find(&endpoint.id) {
                Some(_) => Ok(false),
                None => {
                    tracing::info!("the daemon committed the disconnect before it went away");
                    print_disconnected(network, endpoint, *output).map(|()| true)
                }
            },
        }
    }
}

/// Has the daemon run `command`. Its `note:` lines are printed as the
/// command's own would be.
async fn via_daemon(
    daemon: &Client,
    sandbox: &str,
    command: Command,
) -> std::result::Result<Result<Done>, Unanswered> {
    if !daemon_resolves(sandbox) {
        return Err(Unanswered::NotRun);
    }
    let outcome = daemon.command(&command).await?;
    for line in outcome.notes {
        err!("note: {line}");
    }
    Ok(outcome.result.map_err(remote))
}

/// The daemon's report of a failed command, printed as this command's own.
fn remote(e: RemoteError) -> CliError {
    CliError::Remote(ErrorReport {
        code: e.code,
        // The CLI prints it and exits: one short string for the process.
        kind: Box::leak(e.kind.into_boxed_str()),
        msg: e.msg,
        details: e.details,
    })
}

/// `connect` through the daemon, with an endpoint id of this command's.
pub(super) async fn connect_via_daemon(daemon: &Client, args: &ConnectArgs) -> Result<Asked> {
    let id = new_endpoint_id();
    let command = Command::Connect {
        request: args.request(),
        id: id.clone(),
    };
    match via_daemon(daemon, &args.sandbox, command).await {
        Err(Unanswered::NotRun) => Ok(Asked::NotRun),
        Err(Unanswered::Lost) => Ok(Asked::Lost(Box::new(Sent::Connect {
            id,
            output: args.output,
        }))),
        Ok(Ok(Done::Connected { network, endpoint })) => {
            print_connected(&network, &endpoint, args.output).map(|()| Asked::Answered)
        }
        Ok(Ok(other)) => unreachable!("a connect answered {other:?}"),
        Ok(Err(e)) => Err(e),
    }
}

/// How long `disconnect` waits to read which endpoint it asks the daemon
/// to remove before it leaves the whole command to itself.
const READ_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// The endpoint `disconnect` would remove now, read from the state
/// (shared lock); `None` if there is none or the state cannot be read.
fn endpoint_to_remove(state_dir: &Path, args: &DisconnectArgs) -> Option<Endpoint> {
    let store = match Store::open_within(state_dir, READ_PATIENCE) {
        Ok(Some(store)) => store,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!("disconnect: cannot read the state first: {e}");
            return None;
        }
    };
    let record: NetworkRecord = store.network(&args.network).ok()??;
    let key = endpoint_key(&record, &args.sandbox);
    record.endpoints.get(&key).cloned()
}

/// `disconnect` through the daemon. The endpoint it removes is read
/// first: if the daemon dies before it answers, its absence tells that
/// the disconnect was committed (and is what the output shows).
pub(super) async fn disconnect_via_daemon(
    daemon: &Client,
    state_dir: &Path,
    args: &DisconnectArgs,
) -> Result<Asked> {
    if !daemon_resolves(&args.sandbox) {
        return Ok(Asked::NotRun);
    }
    let before = endpoint_to_remove(state_dir, args);
    let command = Command::Disconnect {
        network: args.network.clone(),
        sandbox: args.sandbox.clone(),
        force: args.force,
    };
    match via_daemon(daemon, &args.sandbox, command).await {
        Err(Unanswered::NotRun) => Ok(Asked::NotRun),
        Err(Unanswered::Lost) => Ok(match before {
            Some(endpoint) => Asked::Lost(Box::new(Sent::Disconnect {
                network: args.network.clone(),
                endpoint: Box::new(endpoint),
                output: args.output,
            })),
            // Nothing to remove as far as it could tell: its own run
            // says what it says without the daemon.
            None => Asked::NotRun,
        }),
        Ok(Ok(Done::Disconnected { endpoint })) => {
            print_disconnected(&args.network, &endpoint, args.output).map(|()| Asked::Answered)
        }
        Ok(Ok(other)) => unreachable!("a disconnect answered {other:?}"),
        Ok(Err(e)) => Err(e),
    }
}

pub(super) async fn connect(manager: &Manager, args: ConnectArgs) -> Result<()> {
    let (record, endpoint) = manager.connect(args.request()).await?;
    print_connected(&record.name, &endpoint, args.output)
}

fn print_connected(network: &str, endpoint: &Endpoint, output: Output) -> Result<()> {
    if output.json {
        return print_json(&serde_json::json!({ "network": network, "endpoint": endpoint }));
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
        network,
        endpoint.ifname,
        endpoint.mac_text(),
        addrs.join(" ")
    );
    Ok(())
}

pub(super) async fn disconnect(manager: &Manager, args: DisconnectArgs) -> Result<()> {
    let endpoint = manager
        .disconnect(&args.network, &args.sandbox, args.force)
        .await?;
    print_disconnected(&args.network, &endpoint, args.output)
}

fn print_disconnected(network: &str, endpoint: &Endpoint, output: Output) -> Result<()> {
    if output.json {
        print_json(&serde_json::json!({ "network": network, "endpoint": endpoint }))
    } else {
        out!("disconnected {} from {network}", endpoint.sandbox);
        Ok(())
    }
}
