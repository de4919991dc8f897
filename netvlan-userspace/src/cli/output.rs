//! Everything the CLI writes: lines on stdout and stderr that survive a
//! closed pipe, JSON, and tables.

use std::{
    io::Write,
    sync::atomic::{AtomicBool, Ordering},
};

use super::error::{CliError, Result};

/// `println!` that survives a closed stdout (see [`write_stdout`]).
macro_rules! out {
    () => { $crate::cli::output::write_stdout(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::output::write_stdout(format_args!($($arg)*)) };
}
pub(crate) use out;

/// `eprintln!` that survives a closed stderr.
macro_rules! err {
    ($($arg:tt)*) => { $crate::cli::output::write_stderr(format_args!($($arg)*)) };
}
pub(crate) use err;

/// Set when stdout stops taking output: nothing more is written there.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// Set when that was an error worth an exit status (not a closed pipe).
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Whether writing to stdout failed with an error worth an exit status.
pub(crate) fn stdout_failed() -> bool {
    STDOUT_FAILED.load(Ordering::Relaxed)
}

/// One line on stdout. A reader that went away (`netvlan network ls |
/// head`) is no error: the command still does all its work and exits as
/// it would have, its output going nowhere. Any other write error is
/// reported once and makes the exit status 1.
pub(crate) fn write_stdout(line: std::fmt::Arguments) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(line)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(e) = written {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            STDOUT_FAILED.store(true, Ordering::Relaxed);
            err!("error: cannot write to stdout: {e}");
        }
    }
}

/// One line on stderr; a closed stderr is ignored (never a panic).
pub(crate) fn write_stderr(line: std::fmt::Arguments) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr
        .write_fmt(line)
        .and_then(|()| stderr.write_all(b"\n"));
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<()> {
    out!(
        "{}",
        serde_json::to_string_pretty(value).map_err(CliError::Json)?
    );
    Ok(())
}

/// A table whose columns are as wide as their widest cell (names can be
/// 64 characters). Columns listed in `right` are right-aligned (numbers).
pub(crate) fn print_table(indent: &str, header: &[&str], rows: &[Vec<String>], right: &[usize]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::from(indent);
        let last = cells.len() - 1;
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if right.contains(&i) {
                text.push_str(&format!("{cell:>width$}"));
            } else if i == last {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}"));
            }
            if i != last {
                text.push_str("  ");
            }
        }
        out!("{}", text.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
