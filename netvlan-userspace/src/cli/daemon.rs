//! `netvlan daemon`: runs the service beside the datapath in the
//! foreground (for systemd or a terminal).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use clap::{Args, ValueEnum};

use super::error::Result;
use crate::{
    daemon::{self, DEFAULT_METRICS_ADDR},
    docker::DEFAULT_SOCKET,
};

#[derive(Args)]
pub struct DaemonArgs {
    /// Where Prometheus scrapes `/metrics` and the live page is served.
    /// Loopback by default; give another address only on purpose.
    #[arg(long, default_value = DEFAULT_METRICS_ADDR, value_name = "ADDR:PORT")]
    metrics_addr: SocketAddr,
    /// How log records are written to stderr: `text` for a person, `json`
    /// (one object a line) for journald and log collectors. The level is
    /// info (-v debug); RUST_LOG overrides.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Same as `--log-format json` (and a failure to start is reported as
    /// JSON too, as with every command's --json).
    #[arg(long)]
    json: bool,
    /// Serve Docker's network driver (as `netvlan docker-plugin` does) from
    /// the daemon, on SOCKET (default /run/docker/plugins/netvlan.sock),
    /// its calls sharing the daemon's datapath handles. `GET /v1/status`
    /// on the local API says whether it is serving.
    #[arg(
        long,
        value_name = "SOCKET",
        num_args = 0..=1,
        default_missing_value = DEFAULT_SOCKET,
    )]
    docker_plugin: Option<PathBuf>,
}

impl DaemonArgs {
    pub(super) fn log_format(&self) -> LogFormat {
        if self.json {
            LogFormat::Json
        } else {
            self.log_format
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum LogFormat {
    Text,
    Json,
}

pub async fn run(bpf_dir: &Path, state_dir: &Path, run_dir: &Path, args: DaemonArgs) -> Result<()> {
    daemon::run(daemon::Config {
        bpf_dir: bpf_dir.into(),
        state_dir: state_dir.into(),
        metrics_addr: args.metrics_addr,
        run_dir: run_dir.into(),
        docker_plugin: args.docker_plugin,
    })
    .await?;
    Ok(())
}
