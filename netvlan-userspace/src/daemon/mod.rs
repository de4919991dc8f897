//! `netvlan daemon`: a service beside the datapath, never in its way.
//!
//! The daemon owns nothing the datapath needs: programs and maps stay
//! pinned, so killing it loses no packet, filter or count. It reads the
//! maps when asked (Prometheus scrapes, the live page, the local API) and
//! forwards trace events from the ring buffers to whoever subscribed.
//!
//! - [`metrics`]: `/metrics`, rendered from the maps at scrape time.
//! - [`page`]: the live page at `/` and its server-push stream.
//! - [`api`]: the local API on `$NETVLAN_RUN_DIR/netvlan.sock`.
//! - [`client`]: the CLI's side of that API.
//! - [`commands`]: the commands the CLI hands it (connect, disconnect).
//! - [`wire_log`]: the wires' debug records, forwarded into its log.
//! - [`stored`]: the stored networks its readers share, decoded again
//!   only when the store changed.
//! - With `--docker-plugin`: Docker's network driver ([`crate::docker`])
//!   on its own socket, its calls run on the command thread with the
//!   commands' datapath, one call or command at a time.

pub mod api;
pub mod client;
pub mod commands;
pub mod metrics;
pub mod page;
pub mod stored;
pub mod wire_log;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::datapath::{counters::EndpointMaps, Datapath};

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
    /// The latest trace events, for the page's trace panel.
    pub recent_traces: page::RecentTraces,
    /// The namespace and directories this daemon serves; the CLI uses the
    /// local API only when they are its own.
    pub identity: api::Identity,
    /// The metrics exporter's own state across scrapes (its error count).
    pub metrics: metrics::ScrapeState,
    /// The endpoints' counter maps, kept open between scrapes.
    pub endpoint_maps: Arc<Mutex<EndpointMaps>>,
    /// The stored networks, kept between reads.
    pub networks: Arc<stored::StoredNetworks>,
    /// Where the CLI's `connect` and `disconnect` run.
    pub commands: commands::Commands,
    /// The Docker plugin this daemon serves, if it does.
    pub docker_plugin: Option<DockerPluginStatus>,
}

/// The Docker plugin a daemon serves: its socket, and whether it is
/// serving now (false before it listens and after it stopped or failed).
#[derive(Clone, Debug)]
pub struct DockerPluginStatus {
    pub socket: PathBuf,
    pub serving: Arc<std::sync::atomic::AtomicBool>,
}

/// The HTTP side of the daemon on its metrics address: `/metrics` and the
/// live page.
pub fn http_router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .merge(metrics::routes())
        .merge(page::routes())
        .with_state(shared)
}

/// Runs blocking map and store reads on tokio's blocking pool: the daemon
/// runs one thread, and a scrape of 10,000 endpoints must not stall the
/// page and the API meanwhile.
pub(crate) async fn off_loop<T: Send + 'static>(read: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(read).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels a blocking task, and that
        // drops this future first.
        Err(e) => unreachable!("a blocking read was cancelled: {e}"),
    }
}

/// The stats report (`control::report::report`), its reads off the
/// event loop ([`off_loop`]).
pub(crate) async fn stats_report(
    shared: &Shared,
    iface: Option<&str>,
) -> Result<crate::datapath::counters::StatsReport, crate::control::NetworkError> {
    use crate::control::report;
    let attachments = shared.datapath.attachments(iface).await?;
    let bpf_dir = shared.datapath.bpf_dir().to_path_buf();
    let state_dir = shared.state_dir.clone();
    let endpoints = shared.endpoint_maps.clone();
    let stored = shared.networks.clone();
    off_loop(move || {
        let (networks, generation) = match stored.read(&state_dir, report::STATE_PATIENCE)? {
            stored::Stored::Networks {
                networks,
                generation,
            } => (Some(networks), Some(generation)),
            stored::Stored::Absent | stored::Stored::Busy => (None, None),
        };
        let mut endpoints = endpoints.lock().unwrap_or_else(|e| e.into_inner());
        endpoints.records(generation);
        report::read(
            &attachments,
            &bpf_dir,
            networks.as_ref().map(|n| n.as_slice()),
            &mut endpoints,
            crate::datapath::counters::Detail::PerDestination,
        )
    })
    .await
}

/// File descriptors kept free for sockets, pins opened per request and the
/// rest of the daemon.
const SPARE_FDS: u64 = 512;

/// How many endpoint maps stay open between scrapes: the open-file limit,
/// raised to its hard limit first (as systemd advises services that need
/// many), less [`SPARE_FDS`].
fn open_map_budget() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                ..limit
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur.saturating_sub(SPARE_FDS) as usize
}

/// Where the daemon listens for Prometheus and the page unless told:
/// loopback only (`--metrics-addr` opens it wider, by choice).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9465";

/// Where the daemon's socket lives unless `NETVLAN_RUN_DIR` says otherwise.
pub const DEFAULT_RUN_DIR: &str = "/run/netvlan";

/// How the daemon runs.
pub struct Config {
    pub bpf_dir: PathBuf,
    pub state_dir: PathBuf,
    pub metrics_addr: std::net::SocketAddr,
    /// Where the local API's socket is made (`netvlan.sock`).
    pub run_dir: PathBuf,
    /// Serve Docker's network driver on this socket too.
    pub docker_plugin: Option<PathBuf>,
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
    #[error("cannot make the run directory {dir}: {source}")]
    RunDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another netvlan daemon answers on {socket}: stop it first (or give this one another NETVLAN_RUN_DIR)")]
    SocketInUse { socket: PathBuf },
    #[error("{socket} exists and is not a socket: remove it or give another NETVLAN_RUN_DIR")]
    NotASocket { socket: PathBuf },
    #[error("cannot serve the local API on {socket}: {source}")]
    Socket {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the thread that runs commands: {0}")]
    CommandThread(#[source] std::io::Error),
    #[error("cannot serve Docker's network driver")]
    DockerPlugin(#[source] Box<crate::docker::DockerError>),
    #[error("the local API on {socket} failed: {source}")]
    ServeSocket {
        socket: PathBuf,
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
    let identity = api::Identity::of_this_process(&config.bpf_dir, &config.state_dir);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let (plugin, docker_plugin) = match &config.docker_plugin {
        Some(socket) => {
            let (service, status) =
                docker_plugin(&config, socket, Box::pin(until_stopped(stopped.clone())))?;
            (Some(service), Some(status))
        }
        None => (None, None),
    };
    let commands =
        commands::Commands::start_with(config.bpf_dir.clone(), config.state_dir.clone(), plugin)
            .map_err(DaemonError::CommandThread)?;
    let shared = Arc::new(Shared {
        datapath,
        state_dir: config.state_dir,
        traces,
        recent_traces: page::RecentTraces::default(),
        identity,
        metrics: Default::default(),
        endpoint_maps: Arc::new(Mutex::new(EndpointMaps::new(open_map_budget()))),
        networks: Default::default(),
        commands,
        docker_plugin,
    });
    // Signals first: one sent while the listeners come up is not lost.
    let shutdown = shutdown_signal()?;
    // The socket before the TCP port: a second daemon on the same run
    // directory is refused by name, not by a port clash.
    let (unix, socket) = api::bind(&config.run_dir)?;
    let addr = config.metrics_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen { addr, source })?;
    let addr = listener.local_addr().unwrap_or(addr);
    let collector = tokio::spawn(page::collect_traces(shared.clone()));
    let wire_logs = tokio::spawn(wire_log::forward(shared.clone()));
    tracing::info!(%addr, socket = %socket.path().display(), "serving metrics, the live page and the local API");
    let http = axum::serve(listener, http_router(shared.clone()))
        .with_graceful_shutdown(until_stopped(stopped.clone()));
    let local = axum::serve(unix, api::router(shared.clone()))
        .with_graceful_shutdown(until_stopped(stopped));
    let signalled = async move {
        shutdown.await;
        let _ = stop.send(true);
        Ok::<(), DaemonError>(())
    };
    let served = tokio::try_join!(
        async {
            http.await
                .map_err(|source| DaemonError::Serve { addr, source })
        },
        async {
            local.await.map_err(|source| DaemonError::ServeSocket {
                socket: socket.path().to_path_buf(),
                source,
            })
        },
        signalled,
    );
    collector.abort();
    wire_logs.abort();
    // A command still running (its client gone) finishes before the
    // daemon exits: never cut half-way by a SIGTERM. So do the Docker
    // plugin's calls, and its socket goes with it.
    shared.commands.stop().await;
    // The socket goes with a daemon that stops (the guard); one that is
    // killed leaves it stale, and the next start replaces it.
    drop(socket);
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// The Docker plugin as a service beside the commands: its socket bound
/// now (a clear error before the daemon serves anything), served on the
/// command thread with the commands' datapath until `stop` resolves.
fn docker_plugin(
    config: &Config,
    socket: &std::path::Path,
    stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> Result<(commands::Beside, DockerPluginStatus), DaemonError> {
    use crate::docker::{server, Plugin};
    use std::sync::atomic::Ordering;
    let (listener, file) =
        server::bind(socket).map_err(|e| DaemonError::DockerPlugin(Box::new(e)))?;
    let status = DockerPluginStatus {
        socket: socket.to_path_buf(),
        serving: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let serving = status.serving.clone();
    let mut plugin = Plugin::standalone(config.bpf_dir.clone(), config.state_dir.clone());
    let service: commands::Beside = Box::new(move |datapath, calls| {
        Box::pin(async move {
            plugin.datapath = datapath;
            // Polled first once the server listens.
            let listening = serving.clone();
            let stop = async move {
                listening.store(true, Ordering::Relaxed);
                stop.await;
                listening.store(false, Ordering::Relaxed);
            };
            let served = server::serve_bound(plugin, listener, file, calls, stop).await;
            serving.store(false, Ordering::Relaxed);
            if let Err(e) = served {
                tracing::error!(error = %e.message(), "the Docker plugin stopped");
            }
        })
    });
    Ok((service, status))
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
