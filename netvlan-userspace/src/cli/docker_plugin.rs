//! `netvlan docker-plugin`: serves Docker's remote network driver in the
//! foreground until SIGINT/SIGTERM.

use std::path::{Path, PathBuf};

use clap::Args;

use super::error::Result;
use crate::docker::{server, Plugin, DEFAULT_SOCKET};

#[derive(Args)]
pub struct DockerPluginArgs {
    /// The socket Docker connects to. Docker finds a plugin named NAME at
    /// /run/docker/plugins/NAME.sock, or through
    /// /etc/docker/plugins/NAME.spec holding `unix:///path/to/socket`.
    #[arg(long, default_value = DEFAULT_SOCKET, value_name = "PATH")]
    socket: PathBuf,
    /// Log records as JSON lines (for journald and log collectors), and a
    /// failure to start reported as JSON, as with every command's --json.
    #[arg(long)]
    pub(super) json: bool,
}

pub async fn run(bpf_dir: &Path, state_dir: &Path, args: DockerPluginArgs) -> Result<()> {
    let plugin = Plugin::standalone(bpf_dir.into(), state_dir.into());
    let stop = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    server::serve(plugin, &args.socket, stop).await?;
    Ok(())
}
