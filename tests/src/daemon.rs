//! A `netvlan daemon` started by a test inside the lab's host namespace,
//! on loopback there, with its own run directory; ended by PID on drop.

use std::{
    path::PathBuf,
    process::{Child, Stdio},
    time::Duration,
};

use crate::{netvlan_bin, wait_for, Lan, Netns, OwnedDir, Run};

/// A running daemon. Dropping it sends SIGKILL to its PID and reaps it.
pub struct Daemon {
    child: Option<Child>,
    /// `127.0.0.1:PORT` in the lab's host namespace.
    pub addr: String,
    /// Its `NETVLAN_RUN_DIR`.
    pub run_dir: OwnedDir,
    ns: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts `netvlan daemon ARGS` in `lan.host` (loopback brought up) and
    /// waits until `/metrics` answers. Every test namespace is its own
    /// network stack, so the default port never clashes between tests.
    pub fn start(lan: &Lan, args: &[&str]) -> Daemon {
        Daemon::start_in(&lan.host, lan, args)
    }

    /// As [`Daemon::start`], in `ns` with the lab's pins and state.
    pub fn start_in(ns: &Netns, lan: &Lan, args: &[&str]) -> Daemon {
        Daemon::start_with_env(ns, lan, &[], args)
    }

    /// As [`Daemon::start_in`], with more environment (e.g. `FAILPOINTS`:
    /// the test build has the `failpoints` feature).
    pub fn start_with_env(ns: &Netns, lan: &Lan, env: &[(&str, &str)], args: &[&str]) -> Daemon {
        crate::sh("ip", &["-n", ns.name(), "link", "set", "lo", "up"]);
        let run_dir =
            OwnedDir::at(std::env::temp_dir().join(format!("{}-run", crate::unique_name("nvd"))));
        std::fs::create_dir_all(run_dir.path()).expect("the run directory can be made");
        let mut daemon = Daemon {
            child: None,
            addr: "127.0.0.1:9465".to_string(),
            run_dir,
            ns: ns.name().to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        daemon.spawn(lan);
        daemon
    }

    /// Starts the daemon again (same namespace, run directory and
    /// arguments) after it stopped or was killed.
    pub fn restart(&mut self, lan: &Lan) {
        assert!(
            self.child.is_none(),
            "the daemon is stopped before a restart"
        );
        self.spawn(lan);
    }

    /// `netvlan daemon` with this daemon's arguments, as a child whose
    /// stderr goes to [`Daemon::log_path`]; it must not start serving.
    pub fn try_second(&self, lan: &Lan) -> std::process::Output {
        self.command(lan)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("netvlan daemon runs")
    }

    fn command(&self, lan: &Lan) -> std::process::Command {
        let ns = [&lan.host, &lan.switch]
            .into_iter()
            .find(|n| n.name() == self.ns)
            .expect("the daemon runs in one of the lab's namespaces");
        let mut cmd = ns.command(netvlan_bin());
        cmd.arg("daemon")
            .args(&self.args)
            .env("NETVLAN_BPF_DIR", lan.bpf.path())
            .env("NETVLAN_STATE_DIR", lan.state.path())
            .env("NETVLAN_RUN_DIR", self.run_dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }

    fn spawn(&mut self, lan: &Lan) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("the daemon's log file can be made");
        let child = self
            .command(lan)
            .stderr(Stdio::from(log))
            .spawn()
            .expect("netvlan daemon starts");
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(20), || {
            (self.status_of("/").is_some() && self.socket().exists()).then_some(())
        });
        if up.is_none() {
            let status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "netvlan daemon did not answer on {} (exit: {status:?}); its log:\n{}",
                self.addr,
                self.log()
            );
        }
    }

    /// Where its stderr (the log) goes.
    pub fn log_path(&self) -> PathBuf {
        self.run_dir.path().join("daemon.log")
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Its local API socket.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.path().join("netvlan.sock")
    }

    /// `netvlan ARGS` in the lab's host namespace, with this daemon's run
    /// directory (so the CLI asks the daemon when it answers).
    pub fn netvlan(&self, lan: &Lan, args: &[&str]) -> Run {
        let run_dir = self.run_dir.path().to_string_lossy().into_owned();
        lan.netvlan_env(&[("NETVLAN_RUN_DIR", &run_dir)], args)
    }

    /// GET `path` from the local API over the socket: (status, body).
    pub fn api(&self, path: &str) -> (u16, String) {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                "-w",
                "\n%{http_code}",
                "--unix-socket",
            ])
            .arg(self.socket())
            .arg(format!("http://netvlan{path}"))
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon was started").id()
    }

    /// The HTTP status GET `path` answers with, `None` if nothing answers.
    pub fn status_of(&self, path: &str) -> Option<u16> {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.ns))
            .args([
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .arg(format!("http://{}{path}", self.addr))
            .output()
            .expect("curl runs");
        let code: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        (code != 0).then_some(code)
    }

    /// GET `path` from the daemon with curl in its namespace; the body, or
    /// `None` if the request failed (no answer, or not a 2xx status).
    pub fn try_get(&self, path: &str) -> Option<String> {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.ns))
            .args(["curl", "-sf", "--max-time", "10"])
            .arg(format!("http://{}{path}", self.addr))
            .output()
            .expect("curl runs");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// GET `path`; panics unless it answers with a 2xx status.
    pub fn get(&self, path: &str) -> String {
        self.try_get(path)
            .unwrap_or_else(|| panic!("GET {path} from the daemon at {} failed", self.addr))
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the daemon and waits for it
    /// to exit; its status.
    pub fn stop_with(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the daemon was started");
        // SAFETY: kill(2) on the PID of our own, not yet reaped, child.
        let rc = unsafe { libc::kill(child.id() as i32, signal) };
        assert_eq!(rc, 0, "the daemon can be signalled");
        child.wait().expect("the daemon can be reaped")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
