//! The CLI's side of the local API: a GET over the daemon's unix socket.
//!
//! Every failure to get an answer (no socket, a stale one, a daemon of
//! another namespace or with other directories, a timeout, an error status)
//! means "no daemon": the caller does the work itself, with the same
//! output. Only a definite answer from the right daemon is used.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use axum::http::StatusCode;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;

use super::{
    api::{Identity, SOCKET_NAME},
    commands::{Command, Outcome},
};

/// How long the CLI waits for the daemon before it does the work itself.
const PATIENCE: Duration = Duration::from_secs(5);

/// A daemon the CLI may ask: its socket and the identity it must have.
pub struct Client {
    socket: PathBuf,
    expected: Identity,
}

/// What the daemon answered: a status and a body.
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
}

impl Client {
    /// The daemon of `run_dir`, to be used only if it serves this process's
    /// namespace, pins and state. `None` if no socket is there at all.
    pub fn new(run_dir: &Path, bpf_dir: &Path, state_dir: &Path) -> Option<Client> {
        let socket = run_dir.join(SOCKET_NAME);
        socket.exists().then(|| Client {
            socket,
            expected: Identity::of_this_process(bpf_dir, state_dir),
        })
    }

    /// GET `path` (with its query); `None` when there is no usable answer,
    /// the reason logged at debug level.
    pub async fn get(&self, path: &str) -> Option<Answer> {
        match tokio::time::timeout(PATIENCE, self.request(path)).await {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(why)) => {
                tracing::debug!(socket = %self.socket.display(), "not using the daemon: {why}");
                None
            }
            Err(_) => {
                tracing::warn!(
                    socket = %self.socket.display(),
                    "the daemon did not answer {path} within {PATIENCE:?}; doing it without the daemon"
                );
                None
            }
        }
    }

    /// Hands `command` to the daemon and waits for what it did, however
    /// long the command takes (it may wait for the state's lock, as the
    /// CLI itself would). `None` when the daemon did not run it: nothing
    /// answers, it serves another namespace or directories, it is
    /// stopping, or it went away before answering (killed half-way: the
    /// command the caller then runs itself first cleans up after it).
    pub async fn command(&self, command: &Command) -> Option<Outcome> {
        match self.run_command(command).await {
            Ok(outcome) => {
                tracing::info!(socket = %self.socket.display(), "the command was run by the daemon");
                Some(outcome)
            }
            Err(why) => {
                tracing::debug!(socket = %self.socket.display(), "not using the daemon: {why}");
                None
            }
        }
    }

    async fn run_command(&self, command: &Command) -> Result<Outcome, String> {
        let body = serde_json::to_vec(command).map_err(|e| format!("encoding {command:?}: {e}"))?;
        let connected = tokio::time::timeout(PATIENCE, async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))
        })
        .await
        .map_err(|_| format!("no answer within {PATIENCE:?}"))?;
        let (mut sender, connection) = connected?;
        let connection = tokio::spawn(connection);
        let mut request = hyper::Request::post("/v1/commands")
            .header(hyper::header::HOST, "netvlan")
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in self.expected.headers() {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("request: {e}"))?;
        let answered = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("POST /v1/commands: {e}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(format!(
                    "the daemon answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            serde_json::from_slice::<Outcome>(&body).map_err(|e| format!("its answer: {e}"))
        }
        .await;
        connection.abort();
        answered
    }

    /// GET `path` as a stream of framed records (`/v1/trace`): each is its
    /// length (u32, little-endian) and its bytes; empty ones are the
    /// daemon's heartbeats and skipped. `None` when there is no usable
    /// answer (the caller then reads the rings itself). The stream ends
    /// when the daemon does; dropping the receiver ends the request.
    pub async fn records(&self, path: &str) -> Option<tokio::sync::mpsc::Receiver<Bytes>> {
        match tokio::time::timeout(PATIENCE, self.open_records(path)).await {
            Ok(Ok(rx)) => Some(rx),
            Ok(Err(why)) => {
                tracing::debug!(socket = %self.socket.display(), "not using the daemon: {why}");
                None
            }
            Err(_) => {
                tracing::warn!(socket = %self.socket.display(), "the daemon did not answer {path} within {PATIENCE:?}");
                None
            }
        }
    }

    async fn open_records(&self, path: &str) -> Result<tokio::sync::mpsc::Receiver<Bytes>, String> {
        let (response, connection) = self.send(path).await?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.into_body().collect().await.map(|b| b.to_bytes());
            connection.abort();
            return Err(format!("{path} answered {status}: {body:?}"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1 << 16);
        let mut body = response.into_body();
        tokio::spawn(async move {
            let mut pending = bytes::BytesMut::new();
            'read: while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                pending.extend_from_slice(&data);
                while pending.len() >= 4 {
                    let len = u32::from_le_bytes([pending[0], pending[1], pending[2], pending[3]])
                        as usize;
                    if pending.len() < 4 + len {
                        break;
                    }
                    let record = pending.split_to(4 + len).split_off(4).freeze();
                    if !record.is_empty() && tx.send(record).await.is_err() {
                        break 'read;
                    }
                }
            }
            connection.abort();
        });
        tracing::info!(socket = %self.socket.display(), "{path} streamed by the daemon");
        Ok(rx)
    }

    /// Connects, sends GET `path` and checks that the answer comes from
    /// the daemon this command may use: the response (body unread) and the
    /// connection's task, to abort once the body is read.
    async fn send(
        &self,
        path: &str,
    ) -> Result<
        (
            hyper::Response<hyper::body::Incoming>,
            tokio::task::JoinHandle<hyper::Result<()>>,
        ),
        String,
    > {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
        let connection = tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, "netvlan")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request {path}: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        match Identity::from_headers(response.headers()) {
            Some(identity) if identity == self.expected => Ok((response, connection)),
            other => {
                connection.abort();
                Err(format!(
                    "it serves {other:?}, this command works on {:?}",
                    self.expected
                ))
            }
        }
    }

    async fn request(&self, path: &str) -> Result<Answer, String> {
        let (response, connection) = self.send(path).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer to {path}: {e}"))?
            .to_bytes();
        connection.abort();
        let body = String::from_utf8(body.to_vec())
            .map_err(|_| format!("the answer to {path} is not UTF-8"))?;
        tracing::info!(socket = %self.socket.display(), "{path} answered by the daemon");
        Ok(Answer { status, body })
    }
}

/// `segment` percent-encoded for a URL path (names are short and mostly
/// plain; anything else is escaped).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
