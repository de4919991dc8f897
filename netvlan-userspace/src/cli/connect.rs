//! `netvlan connect` / `disconnect` (also under `netvlan network`).

use super::error::Result;
use clap::Args;

use super::{
    error::CliError,
    output::{err, out, print_json},
    Output,
};
use crate::{
    control::{ConnectRequest, Endpoint, ErrorReport, Manager},
    daemon::{
        client::Client,
        commands::{Command, Done, RemoteError},
    },
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
        }
    }
}

/// Whether the daemon resolves `sandbox` as this command would: a name,
/// an absolute path or pid:PID (it runs on the same host, in the same
/// namespace); a relative path is this command's working directory's.
fn daemon_resolves(sandbox: &str) -> bool {
    !sandbox.contains('/') || sandbox.starts_with('/')
}

/// Has the daemon run `command`; `None` if it did not (the caller does it
/// itself). Its `note:` lines are printed as the command's own would be.
async fn via_daemon(daemon: &Client, sandbox: &str, command: Command) -> Option<Result<Done>> {
    if !daemon_resolves(sandbox) {
        return None;
    }
    let outcome = daemon.command(&command).await?;
    for line in outcome.notes {
        err!("note: {line}");
    }
    Some(outcome.result.map_err(remote))
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

/// `connect` through the daemon; `false` if it did not run it.
pub(super) async fn connect_via_daemon(daemon: &Client, args: &ConnectArgs) -> Result<bool> {
    let command = Command::Connect(args.request());
    match via_daemon(daemon, &args.sandbox, command).await {
        None => Ok(false),
        Some(Ok(Done::Connected { network, endpoint })) => {
            print_connected(&network, &endpoint, args.output).map(|()| true)
        }
        Some(Ok(other)) => unreachable!("a connect answered {other:?}"),
        Some(Err(e)) => Err(e),
    }
}

/// `disconnect` through the daemon; `false` if it did not run it.
pub(super) async fn disconnect_via_daemon(daemon: &Client, args: &DisconnectArgs) -> Result<bool> {
    let command = Command::Disconnect {
        network: args.network.clone(),
        sandbox: args.sandbox.clone(),
        force: args.force,
    };
    match via_daemon(daemon, &args.sandbox, command).await {
        None => Ok(false),
        Some(Ok(Done::Disconnected { endpoint })) => {
            print_disconnected(&args.network, &endpoint, args.output).map(|()| true)
        }
        Some(Ok(other)) => unreachable!("a disconnect answered {other:?}"),
        Some(Err(e)) => Err(e),
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
