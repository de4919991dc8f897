//! `netvlan connect` / `disconnect` (also under `netvlan network`).

use super::error::Result;
use clap::Args;

use super::{
    output::{out, print_json},
    Output,
};
use crate::control::{ConnectRequest, Manager};

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

pub(super) async fn connect(manager: &Manager, args: ConnectArgs) -> Result<()> {
    let (record, endpoint) = manager
        .connect(ConnectRequest {
            network: args.network,
            sandbox: args.sandbox,
            ip: args.ip,
            ip6: args.ip6,
            mac: args.mac,
            ifname: Some(args.ifname),
            ..Default::default()
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
        endpoint.mac_text(),
        addrs.join(" ")
    );
    Ok(())
}

pub(super) async fn disconnect(manager: &Manager, args: DisconnectArgs) -> Result<()> {
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
