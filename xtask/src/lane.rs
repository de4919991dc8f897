//! What both test lanes share: the pass/fail tally, the table that prints
//! it, and the test build of `netvlan` they run. Its own module so that
//! `test` (both lanes) and `vm` (one lane) import it, and not each other.

use anyhow::{Context, Result};

use crate::{cmd, workspace_root};

/// Tests passed and failed in one lane.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub passed: u32,
    pub failed: u32,
}

impl Tally {
    /// Adds the counts of a libtest summary line
    /// (`test result: ok. 3 passed; 0 failed; ...`).
    pub fn add_summary_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            if let [.., n, what] = words.as_slice() {
                match (
                    *what,
                    n.trim_start_matches("ok.")
                        .trim_start_matches("FAILED.")
                        .trim()
                        .parse::<u32>(),
                ) {
                    ("passed", Ok(n)) => self.passed += n,
                    ("failed", Ok(n)) => self.failed += n,
                    _ => {}
                }
            }
        }
    }
}

pub fn print_table(rows: &[(&str, String, Tally, std::time::Duration)]) {
    println!();
    println!(
        "{:<6} {:<32} {:>7} {:>7} {:>9}",
        "LANE", "KERNEL", "PASSED", "FAILED", "TIME"
    );
    for (lane, kernel, tally, elapsed) in rows {
        println!(
            "{:<6} {:<32} {:>7} {:>7} {:>8.0}s",
            lane,
            kernel,
            tally.passed,
            tally.failed,
            elapsed.as_secs_f64()
        );
    }
}

/// Builds `netvlan` with the `failpoints` feature (so rollback tests can
/// inject faults) and copies it aside, where no other build overwrites it.
pub fn build_test_netvlan() -> Result<std::path::PathBuf> {
    cmd::run(crate::cargo()?.args([
        "build",
        "--package",
        "netvlan-userspace",
        "--bin",
        "netvlan",
        "--bin",
        "netvlan-cni",
        "--features",
        "failpoints",
    ]))?;
    let dir = workspace_root().join("target/test-bin");
    std::fs::create_dir_all(&dir)?;
    // The CNI plugin beside it: tests/tests/cni.rs finds it there.
    std::fs::copy(
        workspace_root().join("target/debug/netvlan-cni"),
        dir.join("netvlan-cni"),
    )
    .context("copying the test build of netvlan-cni")?;
    let bin = dir.join("netvlan");
    std::fs::copy(workspace_root().join("target/debug/netvlan"), &bin)
        .context("copying the test build of netvlan")?;
    Ok(bin)
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn libtest_summary_lines_are_tallied() {
        let mut t = Tally::default();
        t.add_summary_line("test result: ok. 11 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.02s");
        t.add_summary_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_summary_line("running 5 tests");
        assert_eq!((t.passed, t.failed), (14, 2));
    }
}
