//! `netvlan daemon`: a service beside the datapath, never in its way.
//!
//! The daemon owns nothing the datapath needs: programs and maps stay
//! pinned, so killing it loses no packet, filter or count. It reads the
//! maps when asked (Prometheus scrapes, the live page, the local API) and
//! forwards trace events from the ring buffers to whoever subscribed.
//!
//! - [`metrics`]: `/metrics`, rendered from the maps at scrape time.
//! - [`page`]: the live page at `/` and its server-push stream.

pub mod metrics;
pub mod page;

use std::{path::PathBuf, sync::Arc};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::datapath::Datapath;

/// What every request handler of the daemon shares.
pub struct Shared {
    /// The datapath of the daemon's network namespace.
    pub datapath: Datapath,
    /// Where networks and endpoints are stored (read for names, IPAM).
    pub state_dir: PathBuf,
    /// Trace events as they leave the ring buffers: one ring record each
    /// (`netvlan_common::trace::TraceHeader` + frame bytes), shared by
    /// every subscriber without copies.
    pub traces: broadcast::Sender<Bytes>,
    /// The metrics exporter's own state across scrapes (its error count).
    pub metrics: metrics::ScrapeState,
}

/// The HTTP side of the daemon on its metrics address: `/metrics` and the
/// live page.
pub fn http_router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .merge(metrics::routes())
        .merge(page::routes())
        .with_state(shared)
}

/// Where the daemon listens for Prometheus and the page unless told:
/// loopback only (`--metrics-addr` opens it wider, by choice).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9465";

/// How the daemon runs.
pub struct Config {
    pub bpf_dir: PathBuf,
    pub state_dir: PathBuf,
    pub metrics_addr: std::net::SocketAddr,
}

/// Failures of the daemon itself (the datapath's own are in
/// [`crate::datapath::DatapathError`]).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot open the datapath under {bpf_dir}: {source}")]
    Datapath {
        bpf_dir: PathBuf,
        #[source]
        source: Box<crate::datapath::DatapathError>,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server on {addr} failed: {source}")]
    Serve {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the daemon until SIGTERM or SIGINT, then stops serving gracefully.
/// Nothing the datapath needs is held here: killing it loses no packet.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let datapath = Datapath::open(&config.bpf_dir).map_err(|source| DaemonError::Datapath {
        bpf_dir: config.bpf_dir.clone(),
        source: Box::new(source),
    })?;
    // Room for a burst of events per slow subscriber; a lagging one is
    // told how many it missed (broadcast's Lagged), never blocks the rest.
    let (traces, _) = broadcast::channel(4096);
    let shared = Arc::new(Shared {
        datapath,
        state_dir: config.state_dir,
        traces,
        metrics: Default::default(),
    });
    let addr = config.metrics_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen { addr, source })?;
    let addr = listener.local_addr().unwrap_or(addr);
    let shutdown = shutdown_signal()?;
    tracing::info!(%addr, "serving metrics and the live page");
    axum::serve(listener, http_router(shared))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| DaemonError::Serve { addr, source })?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed
/// before this returns, so a signal sent right after start is not lost.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|source| DaemonError::Signal {
        signal: "SIGTERM",
        source,
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|source| DaemonError::Signal {
        signal: "SIGINT",
        source,
    })?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
