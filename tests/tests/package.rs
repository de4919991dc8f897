//! What a package installs beside the binary: shell completions, man
//! pages and the systemd unit, each checked with the real tool that reads
//! it (bash, zsh, fish, groff/man, systemd-analyze) and against the clap
//! tree the binary parses with; the unit's capabilities are tried on
//! restore and the daemon in a lab of namespaces.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use netvlan_tests::{netvlan_bin, require_root, unique_name, wait_for, Lan, OwnedDir};

/// Runs `netvlan ARGS`, which must succeed, and returns its stdout.
fn netvlan(args: &[&str]) -> String {
    let out = Command::new(netvlan_bin())
        .args(args)
        .output()
        .expect("netvlan runs");
    assert!(
        out.status.success(),
        "netvlan {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("netvlan prints UTF-8")
}

/// Runs a tool the test needs (a Debian package `cargo xtask test`
/// installs); a missing one fails the test.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (installed by `cargo xtask test`'s TEST_PACKAGES): {e}")
        })
}

fn temp_dir(what: &str) -> OwnedDir {
    let dir = OwnedDir::at(std::env::temp_dir().join(unique_name(what)));
    std::fs::create_dir_all(dir.path()).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Every visible subcommand as its path of names (`["network",
/// "create"]`), from the clap tree the binary uses.
fn subcommand_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_string());
            walk(sub, &path, out);
            out.push(path);
        }
    }
    let mut out = Vec::new();
    walk(&netvlan::cli::command(), &[], &mut out);
    out
}

// Point 1: completions.

/// What bash's completion machinery offers for the words typed, through
/// the function `complete -p netvlan` names, as at a prompt.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let program = format!(
        r#"source {script}
spec=$(complete -p netvlan) || exit 3
fn=$(sed -E 's/.* -F ([^ ]+) .*/\1/' <<<"$spec")
COMP_WORDS=({line}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}
"$fn" netvlan "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        script = script.display()
    );
    let out = run("bash", &["--norc", "--noprofile", "-c", &program]);
    assert!(
        out.status.success(),
        "bash completion of `{line}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_parses_and_completes_subcommands() {
    let dir = temp_dir("bashcomp");
    let script = write(dir.path(), "netvlan", &netvlan(&["completions", "bash"]));
    let parsed = run("bash", &["-n", script.to_str().unwrap()]);
    assert!(
        parsed.status.success(),
        "bash -n refused the completion script: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    assert_eq!(bash_complete(&script, &["netvlan", "net"]), ["network"]);
    assert_eq!(
        bash_complete(&script, &["netvlan", "network", "cr"]),
        ["create"]
    );
    // Every top-level subcommand is offered for an empty word.
    let offered = bash_complete(&script, &["netvlan", "''"]);
    for path in subcommand_paths().iter().filter(|p| p.len() == 1) {
        assert!(
            offered.contains(&path[0]),
            "`netvlan <TAB>` does not offer {}: {offered:?}",
            path[0]
        );
    }
}

#[test]
fn zsh_and_fish_completions_parse() {
    let dir = temp_dir("shcomp");
    for (shell, name) in [("zsh", "_netvlan"), ("fish", "netvlan.fish")] {
        let text = netvlan(&["completions", shell]);
        assert!(
            text.contains("network") && text.contains("create"),
            "the {shell} script lacks the subcommands:\n{text}"
        );
        let script = write(dir.path(), name, &text);
        let parsed = run(shell, &["-n", script.to_str().unwrap()]);
        assert!(
            parsed.status.success(),
            "{shell} -n refused the completion script: {}",
            String::from_utf8_lossy(&parsed.stderr)
        );
    }
}

#[test]
fn completions_refuse_an_unknown_shell_naming_it() {
    let out = Command::new(netvlan_bin())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tcsh") && stderr.contains("bash"),
        "the error names neither the shell given nor the ones known: {stderr}"
    );
}

// Point 1: man pages.

/// The page rendered by groff with every warning on; none is allowed.
fn groff_render(page: &Path) -> String {
    let out = run(
        "groff",
        &["-man", "-Tutf8", "-ww", "-rLL=100n", page.to_str().unwrap()],
    );
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && warnings.trim().is_empty(),
        "groff warns about {}: {warnings}",
        page.display()
    );
    // Without the overstrike of bold and underline.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out.stdout).chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    text
}

#[test]
fn man_pages_render_and_document_every_subcommand() {
    let dir = temp_dir("man");
    let listed = netvlan(&["man", "--dir", dir.path().to_str().unwrap()]);
    let paths = subcommand_paths();
    assert!(paths.len() > 10, "the clap tree looks empty: {paths:?}");
    let mut expected: Vec<String> = paths
        .iter()
        .map(|p| format!("netvlan-{}.1", p.join("-")))
        .collect();
    expected.push("netvlan.1".into());
    expected.sort();
    let mut written: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, expected, "one page per subcommand and netvlan.1");
    assert_eq!(listed.lines().count(), expected.len(), "{listed}");

    let top = groff_render(&dir.path().join("netvlan.1"));
    assert!(top.contains("NAME") && top.contains("SUBCOMMANDS"), "{top}");
    for path in &paths {
        let name = path.join("-");
        let page = groff_render(&dir.path().join(format!("netvlan-{name}.1")));
        assert!(
            page.contains(&format!("netvlan-{name}")),
            "the page of {name} does not name it:\n{page}"
        );
        // Each page's parent lists it among its subcommands.
        let parent = match &path[..path.len() - 1] {
            [] => top.clone(),
            p => groff_render(&dir.path().join(format!("netvlan-{}.1", p.join("-")))),
        };
        let listed = format!("netvlan-{name}(1)");
        assert!(
            parent.contains(&listed),
            "the parent page does not list {listed}:\n{parent}"
        );
    }
    // What the options say comes from the clap tree: a flag of `network
    // create` and its help are on its page.
    let create = groff_render(&dir.path().join("netvlan-network-create.1"));
    assert!(create.contains("--subnet"), "{create}");

    // man(1) itself renders the page.
    let out = Command::new("man")
        .args(["-l", dir.path().join("netvlan.1").to_str().unwrap()])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man runs (Debian's man-db)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("netvlan"));
}

#[test]
fn man_without_a_dir_prints_the_top_page() {
    let dir = temp_dir("man1");
    netvlan(&["man", "--dir", dir.path().to_str().unwrap()]);
    let on_disk = std::fs::read_to_string(dir.path().join("netvlan.1")).unwrap();
    assert_eq!(netvlan(&["man"]).trim_end(), on_disk.trim_end());
}

// Point 2: the systemd unit.

fn unit_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/netvlan.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The values of `key=` in the unit, in order (comments left out).
fn unit_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
        .collect()
}

/// Where the unit expects the binary (`cargo xtask install`'s default).
const INSTALLED_BIN: &str = "/usr/local/bin/netvlan";

#[test]
fn systemd_unit_verifies_with_its_man_pages() {
    // systemd-analyze needs no running systemd, but checks that every
    // command exists and (with --man) every Documentation= page: the unit
    // as installed, with the binary under test in place of the installed one.
    let dir = temp_dir("unit");
    let man1 = dir.path().join("man/man1");
    netvlan(&["man", "--dir", man1.to_str().unwrap()]);
    let bin = netvlan_bin().canonicalize().unwrap();
    let text = unit_text().replace(INSTALLED_BIN, bin.to_str().unwrap());
    let unit = write(dir.path(), "netvlan.service", &text);
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=yes", unit.to_str().unwrap()])
        .env("MANPATH", dir.path().join("man"))
        .output()
        .expect("systemd-analyze runs (Debian's systemd, installed by cargo xtask test)");
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify refused the unit ({}): {complaints}",
        out.status
    );
}

#[test]
fn systemd_unit_runs_restore_then_the_daemon_before_docker() {
    let text = unit_text();
    let pre = unit_values(&text, "ExecStartPre");
    let start = unit_values(&text, "ExecStart");
    assert_eq!(pre.len(), 1, "one ExecStartPre: {pre:?}");
    assert_eq!(start.len(), 1, "one ExecStart: {start:?}");
    // Every command line parses with the real CLI: `--help` appended
    // makes clap check the words and print that subcommand's help.
    for (line, subcommand) in [(&pre[0], "restore"), (&start[0], "daemon")] {
        let words: Vec<&str> = line
            .trim_start_matches(['-', '@', '+', '!', ':'])
            .split_whitespace()
            .collect();
        assert_eq!(words[0], INSTALLED_BIN, "{line}");
        let mut args: Vec<&str> = words[1..].to_vec();
        args.push("--help");
        let help = netvlan(&args);
        assert!(
            help.contains(&format!("Usage: netvlan {subcommand}")),
            "`{line}` is not `netvlan {subcommand}`:\n{help}"
        );
    }
    let before = unit_values(&text, "Before").join(" ");
    assert!(
        before.split_whitespace().any(|u| u == "docker.service"),
        "{before}"
    );
    let after = unit_values(&text, "After").join(" ");
    assert!(
        after
            .split_whitespace()
            .any(|u| u == "network-online.target"),
        "{after}"
    );
    assert_eq!(unit_values(&text, "Wants"), ["network-online.target"]);
}

#[test]
fn systemd_unit_serves_the_docker_plugin_where_its_spec_points() {
    // Docker finds a plugin by a socket in /run/docker/plugins or a spec
    // file in /etc/docker/plugins naming its socket: the unit's daemon
    // serves the plugin on a socket in its own RuntimeDirectory (the only
    // part of /run that ProtectSystem=strict leaves writable), and
    // packaging/netvlan.spec (driver "netvlan") names that socket.
    let text = unit_text();
    let start = unit_values(&text, "ExecStart");
    let words: Vec<&str> = start[0].split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "--docker-plugin")
        .unwrap_or_else(|| panic!("the daemon does not serve the Docker plugin: {start:?}"));
    let socket = Path::new(words.get(at + 1).expect("--docker-plugin names its socket"));
    assert_eq!(unit_values(&text, "ProtectSystem"), ["strict"]);
    let run = Path::new("/run").join(&unit_values(&text, "RuntimeDirectory")[0]);
    assert_eq!(socket.parent(), Some(run.as_path()), "{}", start[0]);
    let spec_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/netvlan.spec");
    let spec = std::fs::read_to_string(&spec_path)
        .unwrap_or_else(|e| panic!("{}: {e}", spec_path.display()));
    assert_eq!(spec.trim_end(), format!("unix://{}", socket.display()));
}

#[test]
fn systemd_unit_directories_are_the_clis_defaults() {
    // The CLI run by hand on the host must see the daemon's state and
    // socket: the unit's directories are the built-in defaults.
    let text = unit_text();
    let state = Path::new("/var/lib").join(&unit_values(&text, "StateDirectory")[0]);
    let run = Path::new("/run").join(&unit_values(&text, "RuntimeDirectory")[0]);
    assert_eq!(state, Path::new(netvlan::store::DEFAULT_STATE_DIR));
    assert_eq!(run, Path::new(netvlan::daemon::DEFAULT_RUN_DIR));
    let env = unit_values(&text, "Environment");
    for (var, default) in [
        ("NETVLAN_STATE_DIR", "%S/netvlan"),
        ("NETVLAN_RUN_DIR", "%t/netvlan"),
        ("NETVLAN_BPF_DIR", netvlan::datapath::DEFAULT_BPF_DIR),
    ] {
        assert!(
            env.contains(&format!("{var}={default}")),
            "{var} is not {default}: {env:?}"
        );
    }
    // The capabilities the daemon needs for netlink, BPF and namespaces.
    let caps = unit_values(&text, "CapabilityBoundingSet").join(" ");
    for cap in ["CAP_NET_ADMIN", "CAP_BPF", "CAP_SYS_ADMIN", "CAP_PERFMON"] {
        assert!(
            caps.split_whitespace().any(|c| c == cap),
            "{cap} missing: {caps}"
        );
    }
}

/// The unit's bounding set as setpriv spells it: `-all,+net_admin,...`.
fn unit_bounding_set(drop: &str) -> String {
    let caps = unit_values(&unit_text(), "CapabilityBoundingSet").join(" ");
    let mut set = String::from("-all");
    for cap in caps.split_whitespace().filter(|c| *c != drop) {
        set.push_str(",+");
        set.push_str(&cap.trim_start_matches("CAP_").to_lowercase());
    }
    set
}

/// `netvlan ARGS` in the lab's host namespace as the unit runs it: root
/// with only the unit's capabilities (less `drop`), no new privileges.
fn limited_command(lan: &Lan, drop: &str, args: &[&str]) -> Command {
    let mut cmd = lan.host.command("setpriv");
    cmd.args(["--no-new-privs", "--inh-caps=-all", "--bounding-set"])
        .arg(unit_bounding_set(drop))
        .arg(netvlan_bin())
        .args(args)
        .env("NETVLAN_BPF_DIR", lan.bpf.path())
        .env("NETVLAN_STATE_DIR", lan.state.path());
    cmd
}

fn limited(lan: &Lan, drop: &str, args: &[&str]) -> Output {
    limited_command(lan, drop, args)
        .output()
        .expect("setpriv runs (util-linux)")
}

/// A daemon started by this test, killed by its PID on drop.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_units_capabilities_are_enough_for_restore_and_the_daemon() {
    require_root();
    let lan = Lan::new(false);
    lan.network_on_eth0("lan", 73);
    let c = lan.container(false);
    lan.netvlan(&["network", "connect", "lan", c.name()]).ok();
    // What a reboot loses, in part: the endpoint's link.
    c.exec("ip", &["link", "del", "eth0"]);

    // Control: without CAP_SYS_ADMIN the same command is refused, so the
    // bounding set really limits what the command gets.
    let refused = limited(&lan, "CAP_SYS_ADMIN", &["restore"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("CAP_SYS_ADMIN"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let restored = limited(&lan, "", &["restore", "--json"]);
    assert!(
        restored.status.success(),
        "restore with the unit's capabilities failed: {}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let actions: serde_json::Value = serde_json::from_slice(&restored.stdout).unwrap();
    assert!(
        !actions["actions"].as_array().unwrap().is_empty(),
        "restore did nothing: {actions:#}"
    );
    c.link_json("eth0");
    lan.netvlan(&["check"]).ok();

    // The daemon serves /metrics and the Docker plugin with the same
    // capabilities.
    lan.host.exec("ip", &["link", "set", "lo", "up"]);
    let run_dir = temp_dir("unitrun");
    let plugin_socket = run_dir.path().join("docker-plugin.sock");
    let daemon = Started(
        limited_command(
            &lan,
            "",
            &["daemon", "--docker-plugin", plugin_socket.to_str().unwrap()],
        )
        .env("NETVLAN_RUN_DIR", run_dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("setpriv starts"),
    );
    let metrics = wait_for(Duration::from_secs(20), || {
        lan.host
            .in_thread(|| {
                let mut stream = std::net::TcpStream::connect("127.0.0.1:9465")?;
                stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
                let mut answer = String::new();
                stream.read_to_string(&mut answer)?;
                Ok(answer)
            })
            .ok()
            .filter(|a| a.starts_with("HTTP/1.") && a.contains(" 200 "))
    })
    .expect("the daemon with the unit's capabilities serves /metrics");
    assert!(metrics.contains("netvlan_"), "{metrics}");
    let activated = wait_for(Duration::from_secs(20), || {
        let mut stream = std::os::unix::net::UnixStream::connect(&plugin_socket).ok()?;
        stream
            .write_all(
                b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    })
    .expect("the daemon with the unit's capabilities serves the Docker plugin");
    assert!(
        activated.starts_with("HTTP/1.1 200") && activated.contains("NetworkDriver"),
        "{activated}"
    );
    drop(daemon);
    lan.netvlan(&["network", "disconnect", "lan", c.name()])
        .ok();
    lan.netvlan(&["network", "rm", "lan"]).ok();
}

#[test]
fn completions_and_man_need_no_privileges() {
    // A packager's build runs them as an ordinary user.
    let dir = temp_dir("manuser");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let bin = netvlan_bin();
    for args in [
        vec!["completions", "bash"],
        vec!["man", "--dir", dir.path().to_str().unwrap()],
    ] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .args(&args)
            .output()
            .expect("setpriv runs (util-linux)");
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "netvlan {} as nobody: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(dir.path().join("netvlan.1").is_file());
}

#[test]
fn completions_and_man_answer_in_json_too() {
    let script: serde_json::Value =
        serde_json::from_str(&netvlan(&["completions", "fish", "--json"])).unwrap();
    assert_eq!(script["shell"], "fish");
    assert_eq!(
        script["script"].as_str().unwrap().trim_end(),
        netvlan(&["completions", "fish"]).trim_end()
    );
    let dir = temp_dir("manjson");
    let pages: serde_json::Value = serde_json::from_str(&netvlan(&[
        "man",
        "--dir",
        dir.path().to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let pages = pages["pages"].as_array().unwrap();
    assert_eq!(pages.len(), subcommand_paths().len() + 1);
    for page in pages {
        assert!(Path::new(page.as_str().unwrap()).is_file(), "{page}");
    }
}
