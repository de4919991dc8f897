//! The CLI's errors: the lower layers' errors it meets, and its own
//! refusals. `main` prints one as `error: ` and its chain of causes.

use crate::{
    control::{ErrorReport, NetworkError, CODE_IO},
    daemon::DaemonError,
    datapath::DatapathError,
    demo::DemoError,
    store::StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Network(Box<NetworkError>),
    #[error(transparent)]
    Datapath(Box<DatapathError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Demo(#[from] DemoError),
    #[error(transparent)]
    Daemon(Box<DaemonError>),
    #[error("{}", .0.message())]
    Docker(Box<crate::docker::DockerError>),
    /// A command the daemon ran failed: its report, printed as this
    /// process's own would be.
    #[error("{}", .0.line())]
    Remote(ErrorReport),
    #[error("reading /proc/self/status to check privileges")]
    ReadStatus(#[source] std::io::Error),
    #[error("no CapEff line in /proc/self/status")]
    NoCapEff,
    #[error("netvlan needs root privileges: it manages links, namespaces and eBPF programs, which takes {needed}; this process (uid {uid}) lacks {missing}. Run it as root (e.g. with sudo)")]
    NotPrivileged {
        needed: String,
        uid: u32,
        missing: String,
    },
    /// Pins made here would vanish with this process (`ip netns exec`);
    /// the message says why and what to do.
    #[error("{0}")]
    PinsWouldVanish(String),
    #[error("{count} drift(s) between the store and the kernel")]
    Drifts { count: usize },
    #[error("{failed} restore action(s) failed")]
    RestoreFailed { failed: usize },
    /// Several objects failed (each message complete): one `error:` line
    /// each.
    #[error("{}", .0.join("\nerror: "))]
    Several(Vec<String>),
    #[error("network prune removes every network without endpoints and stdin is not a terminal to ask on: pass -f (--force) to confirm; nothing was removed")]
    PruneNotConfirmed,
    #[error("reading the answer from stdin")]
    ReadAnswer(#[source] std::io::Error),
    #[error("serialising output")]
    Json(#[source] serde_json::Error),
    #[error("trace: {0}")]
    Trace(&'static str, #[source] std::io::Error),
    #[error("rendering the man page")]
    Man(#[source] std::io::Error),
    #[error("cannot write the man pages into {dir}")]
    ManDir {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the capture {path}")]
    Pcap {
        path: std::path::PathBuf,
        #[source]
        source: Box<pcap_file::pcapng::PcapNgWriteError>,
    },
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

// Boxed: the CLI's error stays small on every path.
impl From<NetworkError> for CliError {
    fn from(e: NetworkError) -> Self {
        CliError::Network(Box::new(e))
    }
}

impl From<DatapathError> for CliError {
    fn from(e: DatapathError) -> Self {
        CliError::Datapath(Box::new(e))
    }
}

impl From<DaemonError> for CliError {
    fn from(e: DaemonError) -> Self {
        CliError::Daemon(Box::new(e))
    }
}

impl From<crate::docker::DockerError> for CliError {
    fn from(e: crate::docker::DockerError) -> Self {
        CliError::Docker(Box::new(e))
    }
}

impl CliError {
    /// The machine-readable form (`--json`): the control plane's own, else
    /// an I/O error (code 5) with the causes as details. Its
    /// [`line`](ErrorReport::line) is what `main` prints after `error: `.
    pub fn report(&self) -> ErrorReport {
        match self {
            CliError::Network(e) => e.report(),
            CliError::Remote(report) => report.clone(),
            other => ErrorReport::new(CODE_IO, "error", other),
        }
    }
}
