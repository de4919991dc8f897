//! The local API: HTTP+JSON on `$NETVLAN_RUN_DIR/netvlan.sock` (mode
//! 0600, root's), for the CLI and local tools. It answers from the
//! daemon's own datapath handles, so a command that asks it loads nothing.
//!
//! - `GET /v1/status`: what the daemon serves: `{"docker_plugin": null}`,
//!   or the Docker plugin's `{"socket": PATH, "serving": BOOL}`.
//! - `GET /v1/stats[?iface=IFACE]`: the report `netvlan stats --json` prints.
//! - `GET /v1/networks`: every network as `network ls --json` prints it.
//! - `GET /v1/networks/{name}`: one network as `network inspect` prints it
//!   (404 with `{"error": "..."}` if there is none).
//! - `GET /v1/trace?drops=&network=&endpoint=&vlan=&sample=`: a trace
//!   session held by the daemon for as long as the client reads: the ring
//!   records, each framed as its length (u32, little-endian) and its bytes,
//!   also shown on the live page. One reader per ring: with a daemon
//!   running, `netvlan trace` asks it instead of reading the rings itself.
//! - `POST /v1/commands`: a [`Command`] (JSON) the CLI hands over, run by
//!   [`super::commands`]; answers its [`Outcome`] (JSON). The request
//!   carries the CLI's [`Identity`] in the same headers: a daemon that
//!   serves another namespace or other directories runs nothing and
//!   answers 421, and the CLI does the command itself.
//!
//! Every answer carries the daemon's [`Identity`] in its headers: a CLI in
//! another namespace, or with other pin or state directories, must not use
//! this daemon's view, and checks them.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{Path as UrlPath, Query, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;

use super::{commands::Command, DaemonError, Shared};
use crate::{
    control::{self, Manager, NetworkError},
    store::Store,
};

/// The socket's file name in the run directory.
pub const SOCKET_NAME: &str = "netvlan.sock";

/// Response headers naming whom the daemon serves.
pub const NETNS_HEADER: &str = "netvlan-netns";
pub const BPF_DIR_HEADER: &str = "netvlan-bpf-dir";
pub const STATE_DIR_HEADER: &str = "netvlan-state-dir";

/// How long a request waits for the state lock before it answers 503 (the
/// CLI then does the work itself, waiting as any command would).
const STATE_PATIENCE: Duration = Duration::from_millis(500);

/// The network namespace and directories a process works on: the daemon's
/// and the CLI's must be the same for the CLI to use the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `dev:inode` of `/proc/self/ns/net`.
    pub netns: String,
    pub bpf_dir: String,
    pub state_dir: String,
}

impl Identity {
    pub fn of_this_process(bpf_dir: &Path, state_dir: &Path) -> Identity {
        let netns = std::fs::metadata("/proc/self/ns/net")
            .map(|m| format!("{}:{}", m.dev(), m.ino()))
            .unwrap_or_default();
        let canonical = |dir: &Path| {
            std::fs::canonicalize(dir)
                .unwrap_or_else(|_| dir.to_path_buf())
                .to_string_lossy()
                .into_owned()
        };
        Identity {
            netns,
            bpf_dir: canonical(bpf_dir),
            state_dir: canonical(state_dir),
        }
    }

    /// The identity an answer's headers carry, if they all do.
    pub fn from_headers(headers: &HeaderMap) -> Option<Identity> {
        let get = |name| headers.get(name)?.to_str().ok().map(str::to_string);
        Some(Identity {
            netns: get(NETNS_HEADER)?,
            bpf_dir: get(BPF_DIR_HEADER)?,
            state_dir: get(STATE_DIR_HEADER)?,
        })
    }

    pub fn headers(&self) -> [(&'static str, HeaderValue); 3] {
        let value = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
        [
            (NETNS_HEADER, value(&self.netns)),
            (BPF_DIR_HEADER, value(&self.bpf_dir)),
            (STATE_DIR_HEADER, value(&self.state_dir)),
        ]
    }
}

/// The API's routes.
pub fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/v1/status", get(status))
        .route("/v1/stats", get(stats))
        .route("/v1/networks", get(networks))
        .route("/v1/networks/{name}", get(network))
        .route("/v1/trace", get(trace))
        .route("/v1/commands", axum::routing::post(command))
        .with_state(shared)
}

/// The socket file, removed when the daemon stops (not when it is killed:
/// the next start finds it stale and replaces it).
pub struct SocketGuard(PathBuf);

impl SocketGuard {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            tracing::warn!(socket = %self.0.display(), error = %e, "cannot remove the socket");
        }
    }
}

/// Binds `run_dir/netvlan.sock`, mode 0600: a socket left by a killed
/// daemon (nothing answers on it) is replaced; one a live daemon answers on
/// is refused.
pub fn bind(run_dir: &Path) -> Result<(tokio::net::UnixListener, SocketGuard), DaemonError> {
    std::fs::create_dir_all(run_dir).map_err(|source| DaemonError::RunDir {
        dir: run_dir.to_path_buf(),
        source,
    })?;
    let path = run_dir.join(SOCKET_NAME);
    let socket_err = |source| DaemonError::Socket {
        socket: path.clone(),
        source,
    };
    match std::fs::symlink_metadata(&path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(DaemonError::NotASocket { socket: path });
            }
            match std::os::unix::net::UnixStream::connect(&path) {
                Ok(_) => return Err(DaemonError::SocketInUse { socket: path }),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tracing::info!(socket = %path.display(), "replacing the stale socket of a daemon that is gone");
                    std::fs::remove_file(&path).map_err(socket_err)?;
                }
                Err(e) => return Err(socket_err(e)),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(socket_err(e)),
    }
    // Made with no access for group and others from the start (no window
    // in which another user could connect), then set exactly.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = tokio::net::UnixListener::bind(&path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(socket_err)?;
    let guard = SocketGuard(path.clone());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(socket_err)?;
    Ok((listener, guard))
}

/// A JSON answer (pretty, as the CLI prints it) with the identity headers.
fn answer(shared: &Shared, status: StatusCode, body: &impl serde::Serialize) -> Response {
    let body = serde_json::to_string_pretty(body).unwrap_or_else(|e| {
        serde_json::json!({ "error": format!("serialising the answer: {e}") }).to_string()
    });
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    for (name, value) in shared.identity.headers() {
        response.headers_mut().insert(name, value);
    }
    response
}

fn failed(shared: &Shared, status: StatusCode, e: &NetworkError) -> Response {
    tracing::warn!(error = %e, "local API request failed");
    answer(shared, status, &serde_json::json!({ "error": e.report() }))
}

/// The state, read without waiting long behind a command that holds it.
enum StateRead {
    None,
    Busy,
    Open(Box<Manager>),
}

fn open_state(shared: &Shared) -> Result<StateRead, NetworkError> {
    if !Store::exists(&shared.state_dir) {
        return Ok(StateRead::None);
    }
    match Store::open_within(&shared.state_dir, STATE_PATIENCE)? {
        None => Ok(StateRead::Busy),
        Some(store) => Ok(StateRead::Open(Box::new(Manager::new(
            store,
            shared.datapath.clone(),
        )?))),
    }
}

fn busy(shared: &Shared) -> Response {
    answer(
        shared,
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({ "error": "another netvlan command holds the state" }),
    )
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let plugin = shared.docker_plugin.as_ref().map(|p| {
        serde_json::json!({
            "socket": p.socket,
            "serving": p.serving.load(std::sync::atomic::Ordering::Relaxed),
        })
    });
    answer(
        &shared,
        StatusCode::OK,
        &serde_json::json!({ "docker_plugin": plugin }),
    )
}

#[derive(Deserialize)]
struct StatsQuery {
    iface: Option<String>,
}

async fn stats(State(shared): State<Arc<Shared>>, Query(query): Query<StatsQuery>) -> Response {
    match super::stats_report(&shared, query.iface.as_deref()).await {
        Ok(report) => answer(&shared, StatusCode::OK, &report),
        Err(e) => failed(&shared, StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

async fn networks(State(shared): State<Arc<Shared>>) -> Response {
    let records = match open_state(&shared) {
        Ok(StateRead::None) => Vec::new(),
        Ok(StateRead::Busy) => return busy(&shared),
        Ok(StateRead::Open(manager)) => match manager.networks() {
            Ok(records) => records,
            Err(e) => return failed(&shared, StatusCode::INTERNAL_SERVER_ERROR, &e),
        },
        Err(e) => return failed(&shared, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let list: Vec<_> = records.iter().map(control::inspect).collect();
    answer(&shared, StatusCode::OK, &list)
}

async fn network(State(shared): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> Response {
    let found = match open_state(&shared) {
        Ok(StateRead::None) => Err(NetworkError::UnknownNetwork(name)),
        Ok(StateRead::Busy) => return busy(&shared),
        Ok(StateRead::Open(manager)) => manager.network(&name),
        Err(e) => return failed(&shared, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    match found {
        Ok(record) => answer(&shared, StatusCode::OK, &control::inspect(&record)),
        Err(e @ NetworkError::UnknownNetwork(_)) => answer(
            &shared,
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": format!("{e:#}") }),
        ),
        Err(e) => failed(&shared, StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// Runs the CLI's command, if the CLI works on what this daemon serves.
async fn command(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::Json(command): axum::Json<Command>,
) -> Response {
    if Identity::from_headers(&headers).as_ref() != Some(&shared.identity) {
        return answer(
            &shared,
            StatusCode::MISDIRECTED_REQUEST,
            &serde_json::json!({ "error": "this daemon serves another namespace or other directories" }),
        );
    }
    match shared.commands.run(command).await {
        Some(outcome) => answer(&shared, StatusCode::OK, &outcome),
        None => answer(
            &shared,
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "error": "the daemon is stopping and takes no commands" }),
        ),
    }
}

/// Ring records a trace client may fall behind by before it is told it
/// lagged (it counts them as lost).
const TRACE_BACKLOG: usize = 1 << 16;

async fn trace(
    State(shared): State<Arc<Shared>>,
    Query(request): Query<control::trace::TraceRequest>,
) -> Response {
    use control::trace::{plan, TraceSession};
    let plan = match plan(&shared.datapath, &shared.state_dir, &request).await {
        Ok(plan) => plan,
        Err(e) => return failed(&shared, StatusCode::BAD_REQUEST, &e),
    };
    let session = match TraceSession::start(plan) {
        Ok(session) => session,
        Err(e) => return failed(&shared, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let readers = match session.readers() {
        Ok(readers) => readers,
        Err(e) => return failed(&shared, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let (body_tx, body_rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(TRACE_BACKLOG);
    let page = shared.traces.clone();
    // The session lives in this task: when the client goes away (the body
    // is dropped), it ends and the configs it changed are put back.
    tokio::spawn(async move {
        let (ring_tx, mut ring_rx) = tokio::sync::broadcast::channel(TRACE_BACKLOG);
        let pump = tokio::spawn(crate::datapath::trace::pump(readers, ring_tx));
        // An empty frame every second: writing it is how a client that
        // went away is noticed when no events flow (then the body is gone).
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        loop {
            let record = tokio::select! {
                r = ring_rx.recv() => r,
                _ = body_tx.closed() => break,
                _ = heartbeat.tick() => {
                    if body_tx.send(bytes::Bytes::from_static(&[0; 4])).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let record = match record {
                Ok(record) => record,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "a trace client fell behind");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            let _ = page.send(record.clone());
            let mut framed = bytes::BytesMut::with_capacity(4 + record.len());
            framed.extend_from_slice(&(record.len() as u32).to_le_bytes());
            framed.extend_from_slice(&record);
            if body_tx.send(framed.freeze()).await.is_err() {
                break;
            }
        }
        pump.abort();
        if let Err(e) = session.finish() {
            tracing::error!(error = %e, "a trace session's configs could not all be put back");
        }
    });
    let stream = futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    let mut response = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        axum::body::Body::from_stream(stream),
    )
        .into_response();
    for (name, value) in shared.identity.headers() {
        response.headers_mut().insert(name, value);
    }
    response
}
