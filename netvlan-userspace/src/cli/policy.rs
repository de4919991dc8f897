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
    /// The settings are listed below.
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
