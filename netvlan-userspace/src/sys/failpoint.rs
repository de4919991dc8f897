//! Named steps where tests stop or fail a command (`FAILPOINTS=NAME=...`
//! with the `failpoints` feature); nothing at all in normal builds.
//!
//! A test that kills a command half-way must kill it exactly at the step
//! it names: watching for the step's side effects races with the command
//! (under load it gets further before the kill). So every failpoint first
//! leaves a file named after it in `$NETVLAN_FAILPOINTS_REACHED`, and the
//! test waits for that file.

/// Where a failpoint records that it was reached (a directory the test owns).
pub const REACHED_DIR_ENV: &str = "NETVLAN_FAILPOINTS_REACHED";

/// Step `name`: records it, then runs what `FAILPOINTS` configures for it
/// (`sleep(MS)` to be killed there, `return` to fail). True when the
/// configured action is `return`.
#[cfg(feature = "failpoints")]
pub fn step(name: &str) -> bool {
    if let Some(dir) = std::env::var_os(REACHED_DIR_ENV) {
        // A failed write only makes the waiting test time out, loudly.
        let _ = std::fs::write(std::path::Path::new(&dir).join(name), b"");
    }
    fail::fail_point!(name, |_| true);
    false
}

/// Step `name`: nothing happens in a build without `failpoints`.
#[cfg(not(feature = "failpoints"))]
pub fn step(name: &str) -> bool {
    let _ = name;
    false
}
