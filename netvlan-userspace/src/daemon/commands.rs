//! Commands that change the state, run by the daemon for the CLI
//! (`connect`, `disconnect`): the same [`Manager`] calls the CLI makes
//! itself without a daemon, so every guarantee is the same (recovery of a
//! command killed half-way first, all or nothing, the journal, one durable
//! commit per command). What the daemon adds is what it keeps between
//! commands: its netlink connection.
//!
//! They run one at a time on a thread of their own with its own
//! current-thread runtime: a command holds the state's writer lock and
//! namespace guards for as long as it runs, and must neither stall the
//! API, the page and scrapes meanwhile, nor be cancelled half-way when
//! its client goes away (it finishes, and the answer is dropped). On
//! SIGTERM the daemon stops taking commands and waits for the running one.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::{
    control::{ConnectRequest, Endpoint, ErrorReport, Manager, NetworkError, CODE_IO},
    datapath::Datapath,
    store::Store,
};

/// A command the CLI hands to the daemon.
#[derive(Debug, Serialize, Deserialize)]
pub enum Command {
    /// The endpoint id is the CLI's (so it can find the endpoint if the
    /// daemon dies before it answers).
    Connect { request: ConnectRequest, id: String },
    Disconnect {
        network: String,
        sandbox: String,
        force: bool,
    },
}

/// What a command did, for the CLI to print as it would have itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct Outcome {
    /// What cleaning up after a command killed half-way did (`note:` lines).
    pub notes: Vec<String>,
    pub result: Result<Done, RemoteError>,
}

/// A command's result.
#[derive(Debug, Serialize, Deserialize)]
pub enum Done {
    Connected { network: String, endpoint: Endpoint },
    Disconnected { endpoint: Endpoint },
}

/// A failed command's [`ErrorReport`], as it crosses the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    pub code: u32,
    pub kind: String,
    pub msg: String,
    pub details: String,
}

impl From<ErrorReport> for RemoteError {
    fn from(report: ErrorReport) -> Self {
        RemoteError {
            code: report.code,
            kind: report.kind.to_string(),
            msg: report.msg,
            details: report.details,
        }
    }
}

type Job = (Command, oneshot::Sender<Outcome>);

/// A service run on the command thread beside the commands (the Docker
/// plugin): given the thread's datapath (`None` if it could not be
/// opened) and the lock that runs one command or call at a time.
pub type Beside = Box<
    dyn FnOnce(
            Option<Datapath>,
            Arc<tokio::sync::Mutex<()>>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send,
>;

/// The daemon's command thread: takes [`Command`]s one at a time.
pub struct Commands {
    queue: std::sync::Mutex<Option<mpsc::UnboundedSender<Job>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Commands {
    /// Starts the thread for the datapath pinned under `bpf_dir` and the
    /// state in `state_dir` (in the caller's network namespace), and makes
    /// the endpoint object's loader there, before the first command.
    pub fn start(bpf_dir: PathBuf, state_dir: PathBuf) -> std::io::Result<Commands> {
        Commands::start_with(bpf_dir, state_dir, None)
    }

    /// As [`Commands::start`], with a service `beside` the commands on
    /// their thread; [`Commands::stop`] waits for it to end too.
    pub fn start_with(
        bpf_dir: PathBuf,
        state_dir: PathBuf,
        beside: Option<Beside>,
    ) -> std::io::Result<Commands> {
        let (queue, jobs) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("commands".into())
            .spawn(move || serve(&bpf_dir, &state_dir, jobs, beside))?;
        Ok(Commands {
            queue: std::sync::Mutex::new(Some(queue)),
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Runs `command`; `None` if the daemon no longer takes commands (it
    /// is stopping), so the CLI does it itself.
    pub async fn run(&self, command: Command) -> Option<Outcome> {
        let (reply, answer) = oneshot::channel();
        {
            let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.as_ref()?.send((command, reply)).ok()?;
        }
        answer.await.ok()
    }

    /// Takes no more commands and waits for the one running, if any.
    pub async fn stop(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the command thread panicked");
            }
        }
    }
}

/// The command thread's loop: one runtime, one datapath (and netlink
/// connection) for every command.
fn serve(
    bpf_dir: &Path,
    state_dir: &Path,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    beside: Option<Beside>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "no runtime for commands: the CLI runs them itself");
            return;
        }
    };
    runtime.block_on(async {
        let datapath = Datapath::open(bpf_dir);
        if let Err(e) = &datapath {
            tracing::error!(error = %e, "commands cannot open the datapath: the CLI runs them itself");
        }
        let serial = Arc::new(tokio::sync::Mutex::new(()));
        let beside = beside.map(|service| {
            tokio::spawn(service(datapath.as_ref().ok().cloned(), serial.clone()))
        });
        while let Some((command, reply)) = jobs.recv().await {
            let outcome = match &datapath {
                Ok(datapath) => {
                    let _serial = serial.lock().await;
                    execute(datapath, state_dir, command).await
                }
                // Dropping `reply`: the CLI does it itself.
                Err(_) => continue,
            };
            let _ = reply.send(outcome);
        }
        if let Some(service) = beside {
            let _ = service.await;
        }
    });
}

/// One command, exactly as `netvlan` without a daemon runs it: the store
/// opened (waiting for its lock), recovery, the change, the store closed.
async fn execute(datapath: &Datapath, state_dir: &Path, command: Command) -> Outcome {
    tracing::info!(?command, "running a command for the CLI");
    let mut notes = Vec::new();
    let result = async {
        // As the CLI reports a store it cannot open (not as a control-plane
        // error), so the message and code are the same either way.
        let store = Store::open(state_dir).map_err(|e| ErrorReport::new(CODE_IO, "error", &e))?;
        let (manager, recovered) = Manager::open(store, datapath.clone())
            .await
            .map_err(|e| e.report())?;
        notes = recovered;
        let done = match command {
            Command::Connect { request, id } => {
                manager
                    .connect_as(request, id)
                    .await
                    .map(|(record, endpoint)| Done::Connected {
                        network: record.name,
                        endpoint,
                    })
            }
            Command::Disconnect {
                network,
                sandbox,
                force,
            } => manager
                .disconnect(&network, &sandbox, force)
                .await
                .map(|endpoint| Done::Disconnected { endpoint }),
        };
        if done.is_ok() {
            tracing::info!("the command is committed");
            // Where tests kill the daemon: committed, not yet answered.
            crate::sys::failpoint::step("command-after-commit");
        }
        done.map_err(|e: NetworkError| e.report())
    }
    .await;
    if let Err(report) = &result {
        tracing::warn!(error = %report.line(), "a command for the CLI failed");
    }
    Outcome {
        notes,
        result: result.map_err(RemoteError::from),
    }
}
