//! `connect` and `disconnect` handed to a running daemon: the same output,
//! errors and exit codes as without it, and the same guarantees when the
//! daemon is killed or stopped while it runs one.

use std::{process::Stdio, time::Duration};

use netvlan_tests::{daemon::Daemon, netvlan_bin, require_root, wait_for, Lan, Netns, Run};

/// Lines the daemon logs per command it runs for the CLI.
fn commands_run(daemon: &Daemon) -> usize {
    daemon
        .log()
        .matches("running a command for the CLI")
        .count()
}

/// A LAN with the network `lan` on eth0.
fn lab(subnet: &str) -> Lan {
    let lan = Lan::new(false);
    lan.create_network("lan", subnet, &["parent=eth0"]).ok();
    lan
}

/// What a run printed and how it ended; with `--json`, the endpoint's
/// id and ifindex (new for every link, daemon or not) left out.
fn outputs(run: &Run, json: bool) -> (bool, String, String) {
    let stdout = if json {
        let mut answer = run.json();
        let endpoint = answer["endpoint"].as_object_mut().expect("an endpoint");
        for fresh in ["id", "ifindex"] {
            assert!(
                endpoint.remove(fresh).is_some(),
                "{fresh} in {}",
                run.stdout
            );
        }
        answer.to_string()
    } else {
        run.stdout.clone()
    };
    (run.status.success(), stdout, run.stderr.clone())
}

#[test]
fn connect_and_disconnect_through_the_daemon_print_exactly_what_they_print_without_it() {
    require_root();
    let lan = lab("10.73.0.0/24");
    let daemon = Daemon::start(&lan, &[]);
    let c = Netns::new("dcmd");

    for json in [false, true] {
        let mut connect = vec!["connect", "--ip", "10.73.0.20", "lan", c.name()];
        let mut disconnect = vec!["disconnect", "lan", c.name()];
        if json {
            connect.push("--json");
            disconnect.push("--json");
        }
        let before = commands_run(&daemon);
        let through = daemon.netvlan(&lan, &connect).ok();
        assert_eq!(commands_run(&daemon), before + 1, "the daemon ran it");
        assert_eq!(c.sorted_link_names(), ["eth0", "lo"]);
        lan.netvlan(&["check"]).ok();
        let through_down = daemon.netvlan(&lan, &disconnect).ok();
        assert_eq!(commands_run(&daemon), before + 2, "the daemon ran it");
        assert_eq!(c.sorted_link_names(), ["lo"]);

        let without = lan.netvlan(&connect).ok();
        let without_down = lan.netvlan(&disconnect).ok();
        assert_eq!(
            commands_run(&daemon),
            before + 2,
            "the daemon was not asked"
        );
        assert_eq!(
            outputs(&through, json),
            outputs(&without, json),
            "{connect:?}"
        );
        assert_eq!(outputs(&through_down, json), outputs(&without_down, json));
    }
    lan.netvlan(&["check"]).ok();

    // Bad input fails with the same message, JSON report and exit code,
    // and changes nothing either way.
    let ghost = "/proc/1/ns/nosuch";
    for args in [
        &["connect", "nosuch", c.name()][..],
        &["connect", "--json", "nosuch", c.name()],
        &["connect", "--ip", "10.99.0.1", "lan", c.name()],
        &["connect", "--json", "--mac", "nonsense", "lan", c.name()],
        &["connect", "lan", ghost],
        &["disconnect", "lan", c.name()],
        &["disconnect", "--json", "nosuch", c.name()],
    ] {
        let before = commands_run(&daemon);
        let through = daemon.netvlan(&lan, args).failed();
        assert_eq!(
            commands_run(&daemon),
            before + 1,
            "{args:?}: the daemon ran it"
        );
        let without = lan.netvlan(args).failed();
        assert_eq!(
            (through.status.code(), &through.stdout, &through.stderr),
            (without.status.code(), &without.stdout, &without.stderr),
            "{args:?}"
        );
        assert!(through.stderr.starts_with("error: "), "{}", through.stderr);
        assert_eq!(c.sorted_link_names(), ["lo"], "{args:?} left a link");
    }
    lan.netvlan(&["check"]).ok();

    // A relative namespace path names this command's working directory,
    // which the daemon does not share: the command runs itself.
    let before = commands_run(&daemon);
    let relative = daemon
        .netvlan(&lan, &["connect", "lan", "./nosuch"])
        .failed();
    assert!(relative.stderr.contains("./nosuch"), "{}", relative.stderr);
    assert_eq!(commands_run(&daemon), before);
}

/// `netvlan ARGS` through `daemon`, started and left running.
fn spawn_through(lan: &Lan, daemon: &Daemon, args: &[&str]) -> std::process::Child {
    lan.host
        .command(netvlan_bin())
        .args(args)
        .env("NETVLAN_BPF_DIR", lan.bpf.path())
        .env("NETVLAN_STATE_DIR", lan.state.path())
        .env("NETVLAN_RUN_DIR", daemon.run_dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("netvlan starts")
}

fn finish(child: std::process::Child) -> Run {
    let out = child.wait_with_output().expect("netvlan ends");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Waits until `c` has a link beside `lo` (the connect made its link).
fn link_made(c: &Netns) -> bool {
    wait_for(Duration::from_secs(60), || {
        (c.sorted_link_names().len() > 1).then_some(())
    })
    .is_some()
}

#[test]
fn a_daemon_killed_mid_connect_leaves_the_command_to_the_cli_which_cleans_up_and_connects() {
    require_root();
    let lan = lab("10.74.0.0/24");
    let mut daemon = Daemon::start_with_env(
        &lan.host,
        &lan,
        &[("FAILPOINTS", "connect-after-link=sleep(30000)")],
        &[],
    );
    let c = Netns::new("dkill");
    let child = spawn_through(&lan, &daemon, &["connect", "lan", c.name()]);
    assert!(link_made(&c), "the daemon's connect never made its link");
    daemon.stop_with(libc::SIGKILL);

    // The CLI lost its answer: it does the command itself, and first
    // undoes what the killed daemon left half-made.
    let run = finish(child).ok();
    assert!(
        run.stderr.contains("note: ") && run.stderr.contains("interrupted"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout
            .starts_with(&format!("connected {} to lan: eth0", c.name())),
        "{}",
        run.stdout
    );
    assert_eq!(c.sorted_link_names(), ["eth0", "lo"]);
    lan.netvlan(&["check"]).ok();
    let inspect = lan.netvlan(&["network", "inspect", "lan"]).ok().json();
    assert_eq!(inspect[0]["Containers"].as_object().unwrap().len(), 1);
    lan.netvlan(&["disconnect", "lan", c.name()]).ok();
    lan.netvlan(&["check"]).ok();
}

#[test]
fn sigterm_while_the_daemon_runs_a_connect_lets_it_finish_and_answer() {
    require_root();
    let lan = lab("10.75.0.0/24");
    let mut daemon = Daemon::start_with_env(
        &lan.host,
        &lan,
        &[("FAILPOINTS", "connect-after-link=sleep(2000)")],
        &[],
    );
    let c = Netns::new("dterm");
    let child = spawn_through(&lan, &daemon, &["connect", "--json", "lan", c.name()]);
    assert!(link_made(&c), "the daemon's connect never made its link");
    let status = daemon.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status}: {}", daemon.log());
    assert_eq!(commands_run(&daemon), 1);

    let run = finish(child).ok();
    assert!(
        !run.stderr.contains("note:"),
        "nothing was left to clean up: {}",
        run.stderr
    );
    let answer = run.json();
    assert_eq!(answer["network"], "lan");
    assert_eq!(answer["endpoint"]["sandbox"], c.name());
    assert_eq!(c.sorted_link_names(), ["eth0", "lo"]);
    lan.netvlan(&["check"]).ok();
    lan.netvlan(&["disconnect", "lan", c.name()]).ok();
}
