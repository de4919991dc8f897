//! Timing one command (wall time from spawn to reaped exit) and measuring
//! its peak RSS.
//!
//! Peak RSS comes from GNU time (`%M`, the kernel's `ru_maxrss` of its
//! child), in a separate run: a child spawned straight from the bench
//! inherits the bench's own RSS high-water mark across exec (std spawns
//! with vfork), so its rusage would report the bench's memory, not its own.

use std::{
    io::Read,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::sandbox::describe;

/// What one timed run took.
pub struct Timed {
    pub wall: Duration,
    pub stdout: Vec<u8>,
}

impl Timed {
    pub fn ms(&self) -> f64 {
        self.wall.as_secs_f64() * 1e3
    }
}

/// Runs `cmd` to completion; fails unless it exits 0. Commands started
/// through `nsenter` (which execs) are measured as the program itself.
pub fn timed(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<Timed> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", describe(cmd)))?;
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input)
            .with_context(|| format!("writing to {}", describe(cmd)))?;
    }
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stderr = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut buf);
        buf
    });
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_end(&mut stdout)?;
    let status = child.wait()?;
    let wall = start.elapsed();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "`{}` failed ({status}): {}{}",
            describe(cmd),
            String::from_utf8_lossy(&stderr).trim(),
            String::from_utf8_lossy(&stdout).trim()
        );
    }
    Ok(Timed { wall, stdout })
}

/// Peak RSS in KiB of one run of `cmd`, measured by `/usr/bin/time -f %M`
/// (time's own high-water mark before the exec, about 1 MiB, is the floor
/// of what it can report).
pub fn peak_rss_kib(cmd: &Command, scratch: &Path) -> Result<u64> {
    let out_file = scratch.join("time.out");
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped
        .args(["-f", "%M", "-o"])
        .arg(&out_file)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    timed(&mut wrapped, None)?;
    let text = std::fs::read_to_string(&out_file)
        .with_context(|| format!("reading {}", out_file.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("GNU time printed {text:?} instead of a size"))
}
