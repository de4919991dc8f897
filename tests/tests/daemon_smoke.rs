//! The daemon starts in a lab, answers on loopback and stops on SIGTERM.

use netvlan_tests::{daemon::Daemon, require_root, Lan};

#[test]
fn the_daemon_answers_on_loopback_and_stops_cleanly_on_sigterm() {
    require_root();
    let lan = Lan::new(false);
    let mut daemon = Daemon::start(&lan, &[]);
    assert!(daemon.status_of("/").is_some(), "the daemon answers HTTP");
    let status = daemon.stop_with(libc::SIGTERM);
    assert!(
        status.success(),
        "the daemon exits 0 on SIGTERM: {status:?}"
    );
}
