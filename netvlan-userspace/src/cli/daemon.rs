//! `netvlan daemon`: runs the service beside the datapath in the
//! foreground (for systemd or a terminal).

use std::{net::SocketAddr, path::Path};

use clap::Args;

use super::error::Result;
use crate::daemon::{self, DEFAULT_METRICS_ADDR};

#[derive(Args)]
pub struct DaemonArgs {
    /// Where Prometheus scrapes `/metrics` and the live page is served.
    /// Loopback by default; give another address only on purpose.
    #[arg(long, default_value = DEFAULT_METRICS_ADDR, value_name = "ADDR:PORT")]
    metrics_addr: SocketAddr,
}

pub async fn run(bpf_dir: &Path, state_dir: &Path, args: DaemonArgs) -> Result<()> {
    daemon::run(daemon::Config {
        bpf_dir: bpf_dir.into(),
        state_dir: state_dir.into(),
        metrics_addr: args.metrics_addr,
    })
    .await?;
    Ok(())
}
