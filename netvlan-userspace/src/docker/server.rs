//! The plugin's HTTP server: libnetwork POSTs `/Plugin.Activate`,
//! `/NetworkDriver.*` and `/IpamDriver.*` with JSON bodies and reads JSON answers (errors as
//! `{"Err": "..."}` with status 500, as Docker's plugin helpers answer);
//! an unknown call is a 404. Calls are served one at a time, each to its
//! end even when Docker drops the connection.

use std::{path::Path, sync::Arc};

use axum::{
    body::Bytes,
    extract::State,
    http::{header, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::{adopt, protocol::CONTENT_TYPE, DockerError, Plugin};

struct Shared {
    plugin: Plugin,
    /// One call at a time (each opens the state, whose lock is per open).
    calls: Arc<Mutex<()>>,
}

fn reply(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn answer(result: Result<Value, DockerError>, call: &str) -> Response {
    match result {
        Ok(body) => reply(StatusCode::OK, &body),
        Err(e) => {
            let message = e.message();
            tracing::warn!("{call}: {message}");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({ "Err": message }),
            )
        }
    }
}

fn parse<T: DeserializeOwned + Default>(
    call: &'static str,
    body: &Bytes,
) -> Result<T, DockerError> {
    // libnetwork sends an empty body (or `null`) for calls without one.
    if body.iter().all(u8::is_ascii_whitespace) || body.as_ref() == b"null" {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|source| DockerError::Json { call, source })
}

/// Runs a call in a task of its own and answers what it returns: when
/// Docker hangs up (its timeout, its restart), hyper drops the
/// connection's future, not the call, which runs to its end (a change
/// half-made would be left for the journal to undo at the next call).
async fn to_the_end(
    call: &'static str,
    served: impl std::future::Future<Output = Response> + Send + 'static,
) -> Response {
    match tokio::spawn(served).await {
        Ok(response) => response,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => answer(Err(DockerError::Stopping), call),
    }
}

/// The plugin's routes, for a server of its own or the daemon's.
pub fn router(plugin: Plugin) -> Router {
    router_with(plugin, Arc::new(Mutex::new(())))
}

fn router_with(plugin: Plugin, calls: Arc<Mutex<()>>) -> Router {
    let shared = Arc::new(Shared { plugin, calls });
    macro_rules! call {
        ($name:literal, $method:ident) => {
            post(|State(s): State<Arc<Shared>>, body: Bytes| {
                to_the_end($name, async move {
                    let _serial = s.calls.lock().await;
                    let result = match parse($name, &body) {
                        Ok(request) => s.plugin.$method(request).await,
                        Err(e) => Err(e),
                    };
                    answer(result, $name)
                })
            })
        };
    }
    Router::new()
        .route(
            "/Plugin.Activate",
            post(|_body: Bytes| async move { reply(StatusCode::OK, &json!({ "Implements": ["NetworkDriver", "IpamDriver"] })) }),
        )
        .route(
            "/NetworkDriver.GetCapabilities",
            post(|_body: Bytes| async move {
                reply(
                    StatusCode::OK,
                    &json!({ "Scope": "local", "ConnectivityScope": "local" }),
                )
            }),
        )
        .route("/NetworkDriver.CreateNetwork", call!("CreateNetwork", create_network))
        .route("/NetworkDriver.DeleteNetwork", call!("DeleteNetwork", delete_network))
        .route("/NetworkDriver.CreateEndpoint", call!("CreateEndpoint", create_endpoint))
        .route("/NetworkDriver.EndpointOperInfo", call!("EndpointOperInfo", endpoint_info))
        .route("/NetworkDriver.DeleteEndpoint", call!("DeleteEndpoint", delete_endpoint))
        .route(
            "/NetworkDriver.Join",
            post(|State(s): State<Arc<Shared>>, body: Bytes| to_the_end("Join", async move {
                let _serial = s.calls.lock().await;
                let result = match parse::<super::protocol::JoinRequest>("Join", &body) {
                    Ok(request) => {
                        let endpoint_id = request.endpoint_id.clone();
                        let sandbox = request.sandbox_key.clone();
                        s.plugin.join(request).await.map(|(network, response)| {
                            adopt::spawn(
                                s.plugin.clone(),
                                s.calls.clone(),
                                network,
                                super::endpoint_key(&endpoint_id),
                                endpoint_id,
                                sandbox.into(),
                            );
                            serde_json::to_value(response).expect("a JoinResponse serialises")
                        })
                    }
                    Err(e) => Err(e),
                };
                answer(result, "Join")
            })),
        )
        .route("/NetworkDriver.Leave", call!("Leave", leave))
        .route(
            "/NetworkDriver.ProgramExternalConnectivity",
            call!("ProgramExternalConnectivity", external),
        )
        .route(
            "/NetworkDriver.RevokeExternalConnectivity",
            call!("RevokeExternalConnectivity", external),
        )
        // Discovery (node and data-store events) and network allocation
        // (swarm's, for global scope): nothing for a local driver to do.
        .route("/NetworkDriver.DiscoverNew", post(|_body: Bytes| async move { reply(StatusCode::OK, &json!({})) }))
        .route(
            "/NetworkDriver.DiscoverDelete",
            post(|_body: Bytes| async move { reply(StatusCode::OK, &json!({})) }),
        )
        .route(
            "/NetworkDriver.AllocateNetwork",
            post(|_body: Bytes| async move { reply(StatusCode::OK, &json!({ "Options": {} })) }),
        )
        .route("/NetworkDriver.FreeNetwork", post(|_body: Bytes| async move { reply(StatusCode::OK, &json!({})) }))
        // The IPAM driver (`--ipam-driver`): netvlan's IPAM for Docker.
        .route(
            "/IpamDriver.GetCapabilities",
            post(|_body: Bytes| async move {
                reply(
                    StatusCode::OK,
                    &json!({ "RequiresMACAddress": false, "RequiresRequestReplay": false }),
                )
            }),
        )
        .route(
            "/IpamDriver.GetDefaultAddressSpaces",
            post(|_body: Bytes| async move {
                let (local, global) = super::ipam::ADDRESS_SPACES;
                reply(
                    StatusCode::OK,
                    &json!({ "LocalDefaultAddressSpace": local, "GlobalDefaultAddressSpace": global }),
                )
            }),
        )
        .route("/IpamDriver.RequestPool", call!("RequestPool", ipam_request_pool))
        .route("/IpamDriver.ReleasePool", call!("ReleasePool", ipam_release_pool))
        .route("/IpamDriver.RequestAddress", call!("RequestAddress", ipam_request_address))
        .route("/IpamDriver.ReleaseAddress", call!("ReleaseAddress", ipam_release_address))
        .fallback(|uri: Uri, _body: Bytes| async move {
            reply(
                StatusCode::NOT_FOUND,
                &json!({ "Err": format!("{}: no such call in the network or IPAM driver protocol", uri.path()) }),
            )
        })
        .with_state(shared)
}

/// The socket file, removed when the server stops (not when it is
/// killed: the next start finds it stale and replaces it).
pub struct SocketFile(std::path::PathBuf);

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds the plugin's socket (making its directory): a stale socket
/// (nothing listening) is replaced; one in use is an error.
pub fn bind(socket: &Path) -> Result<(std::os::unix::net::UnixListener, SocketFile), DockerError> {
    let err = |source| DockerError::Socket {
        socket: socket.to_path_buf(),
        source,
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if socket.exists() {
        match std::os::unix::net::UnixStream::connect(socket) {
            Ok(_) => {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another plugin is serving it",
                )))
            }
            Err(_) => std::fs::remove_file(socket).map_err(err)?,
        }
    }
    let listener = std::os::unix::net::UnixListener::bind(socket).map_err(err)?;
    let file = SocketFile(socket.to_path_buf());
    listener.set_nonblocking(true).map_err(err)?;
    Ok((listener, file))
}

/// Serves the plugin on `socket` until `stop` resolves (see [`bind`]).
/// Endpoints that joined while no plugin ran are watched for again first.
pub async fn serve(
    plugin: Plugin,
    socket: &Path,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DockerError> {
    let (listener, file) = bind(socket)?;
    serve_bound(plugin, listener, file, Arc::new(Mutex::new(())), stop).await
}

/// Serves the plugin on a socket [`bind`] made, until `stop` resolves.
/// `calls` serialises the plugin's calls (and, in the daemon, its
/// commands for the CLI).
pub async fn serve_bound(
    plugin: Plugin,
    listener: std::os::unix::net::UnixListener,
    file: SocketFile,
    calls: Arc<Mutex<()>>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DockerError> {
    let err = |source| DockerError::Socket {
        socket: file.path().to_path_buf(),
        source,
    };
    let resumed = plugin.resume(calls.clone()).await?;
    if resumed > 0 {
        tracing::info!("watching for {resumed} joined endpoint(s) again");
    }
    let listener = tokio::net::UnixListener::from_std(listener).map_err(err)?;
    tracing::info!(
        "serving Docker's network driver protocol on {}",
        file.path().display()
    );
    let served = axum::serve(listener, router_with(plugin, calls.clone()))
        .with_graceful_shutdown(stop)
        .await
        .map_err(err);
    // A call whose connection Docker dropped is not one the server waits
    // for: the calls are served in turn, so the lock is free once the
    // last of them has ended.
    drop(calls.lock().await);
    served
}
