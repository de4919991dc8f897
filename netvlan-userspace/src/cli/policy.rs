//! `netvlan policy set`.

use super::error::Result;
use clap::Subcommand;

use super::{
    output::{out, print_json},
    Output,
};
use crate::control::{self, Manager};

#[derive(Subcommand)]
pub(super) enum PolicyCommand {
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

pub(super) async fn run(manager: &Manager, command: PolicyCommand) -> Result<()> {
    match command {
        PolicyCommand::Set {
            network,
            settings,
            output,
        } => {
            let record = manager.set_policy(&network, &settings).await?;
            if output.json {
                print_json(&control::inspect(&record))
            } else {
                out!("policy of {} updated and enforced", record.name);
                Ok(())
            }
        }
    }
}
