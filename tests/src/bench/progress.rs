//! A progress bar per scenario, and Ctrl-C turned into an orderly stop so
//! the guards still take down what the bench built.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM only set a flag: the running step ends
/// (its child got the signal too) and the bench unwinds through its guards
/// instead of dying with namespaces left behind.
pub fn catch_interrupts() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}

/// Fails once an interrupt arrived.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// One step done: advances the bar, or stops the scenario after Ctrl-C.
pub fn tick(bar: &ProgressBar) -> Result<()> {
    bar.inc(1);
    check_interrupted()
}

/// The bar of one scenario (drawn only on a terminal; CI gets the lines
/// the bench prints when a scenario ends).
pub fn bar(name: &str, steps: u64) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{elapsed_precise}] [{bar:30.cyan/blue}] {pos}/{len} {wide_msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_prefix(name.to_string());
    bar
}
