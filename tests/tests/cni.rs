//! `netvlan-cni` driven exactly as a runtime drives it (the operation and
//! container in the environment, the config on stdin, run in the namespace
//! of the master link), side by side with the reference macvlan plugin on
//! the same config, and every bad config answered with the spec's error
//! JSON on stdout, leaving nothing behind.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use netvlan_tests::{
    netvlan_bin, require_kernel_feature, unique_name, KernelFeature, Lan, Netns, OwnedDir,
};
use serde_json::{json, Value};

/// The plugin under test, built beside `netvlan`.
fn cni_bin() -> PathBuf {
    let bin = netvlan_bin().with_file_name("netvlan-cni");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p netvlan-userspace` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// The reference plugin (Debian's containernetworking-plugins).
const REFERENCE: &str = "/usr/lib/cni/macvlan";

/// One plugin run: exit status and the JSON it printed (if any).
#[derive(Debug)]
struct Answer {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON on stdout ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    fn ok(self) -> Value {
        assert!(self.ok, "the plugin failed: {self:?}");
        self.json()
    }

    /// A failure with the spec's error: code, msg, the config's version.
    fn error(self, code: u64) -> Value {
        assert!(!self.ok, "the plugin should have failed: {self:?}");
        let e = self.json();
        assert_eq!(e["code"], code, "{e:#}");
        assert!(e["msg"].as_str().is_some_and(|m| !m.is_empty()), "{e:#}");
        assert!(e["cniVersion"].is_string(), "{e:#}");
        e
    }
}

/// Runs `plugin` in the lab's host namespace as a runtime does.
fn cni(
    lan: &Lan,
    plugin: &str,
    command: &str,
    netns: &str,
    extra: &[(&str, &str)],
    config: &Value,
) -> Answer {
    let mut cmd: Command = lan.host.command(plugin);
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "c0ffee")
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env("NETVLAN_BPF_DIR", lan.bpf.path())
        .env("NETVLAN_STATE_DIR", lan.state.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the plugin starts");
    let written = child
        .stdin
        .take()
        .unwrap()
        .write_all(config.to_string().as_bytes());
    // A plugin may answer without reading its stdin (VERSION) and exit
    // first: the write then meets a closed pipe. Runtimes ignore that
    // too (Go's exec drops EPIPE on stdin); any other error is one.
    if let Err(e) = written {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing the config: {e}"
        );
    }
    let out = child.wait_with_output().unwrap();
    Answer {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn netvlan_cni(lan: &Lan, command: &str, ns: &Netns, config: &Value) -> Answer {
    cni(
        lan,
        cni_bin().to_str().unwrap(),
        command,
        &ns_path(ns),
        &[],
        config,
    )
}

fn ns_path(ns: &Netns) -> String {
    ns.path().display().to_string()
}

/// The reference macvlan plugin's config, with `type` netvlan-cni.
fn config(name: &str, subnet: u8, data_dir: &OwnedDir) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "netvlan-cni",
        "master": "eth0",
        "mode": "bridge",
        "ipam": {
            "type": "host-local",
            "subnet": format!("10.{subnet}.0.0/24"),
            "gateway": format!("10.{subnet}.0.1"),
            "dataDir": data_dir.path(),
        }
    })
}

fn data_dir() -> OwnedDir {
    OwnedDir::at(std::env::temp_dir().join(unique_name("hostlocal")))
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v:#}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

fn links_in(ns: &Netns) -> Vec<String> {
    ns.sorted_link_names()
}

#[test]
fn version_lists_the_supported_versions() {
    let lan = Lan::new(false);
    let answer = cni(
        &lan,
        cni_bin().to_str().unwrap(),
        "VERSION",
        "",
        &[],
        &json!({}),
    )
    .ok();
    let supported: Vec<&str> = answer["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for version in ["0.4.0", "1.0.0", "1.1.0"] {
        assert!(supported.contains(&version), "{answer:#}");
    }
    assert_eq!(answer["cniVersion"], "1.1.0");
}

#[test]
fn add_check_del_give_the_reference_plugins_results() {
    let lan = Lan::new(false);
    let before = links_in(&lan.host);
    let hl = data_dir();
    let reference_ctr = lan.container(false);
    let ctr = lan.container(false);
    let mut reference_conf = config("cnilan", 74, &hl);
    reference_conf["type"] = json!("macvlan");
    let conf = config("cnilan", 74, &hl);

    let theirs = cni(
        &lan,
        REFERENCE,
        "ADD",
        &ns_path(&reference_ctr),
        &[("CNI_CONTAINERID", "ref")],
        &reference_conf,
    )
    .ok();
    let ours = netvlan_cni(&lan, "ADD", &ctr, &conf).ok();

    // The same shape: the reference's keys (netvlan also reports the
    // default route it installs), interface and IP entries alike.
    for key in keys(&theirs) {
        assert!(
            ours.get(&key).is_some(),
            "{key} missing: {ours:#} vs {theirs:#}"
        );
    }
    assert_eq!(ours["cniVersion"], theirs["cniVersion"]);
    assert_eq!(keys(&ours["interfaces"][0]), keys(&theirs["interfaces"][0]));
    assert_eq!(keys(&ours["ips"][0]), keys(&theirs["ips"][0]));
    assert_eq!(ours["ips"][0]["gateway"], theirs["ips"][0]["gateway"]);
    assert_eq!(ours["ips"][0]["interface"], 0);
    assert_eq!(ours["interfaces"][0]["name"], "eth0");
    assert_eq!(ours["interfaces"][0]["sandbox"], ns_path(&ctr));
    let address = ours["ips"][0]["address"].as_str().unwrap();
    assert!(
        address.starts_with("10.74.0.") && address.ends_with("/24"),
        "{address}"
    );
    assert_eq!(
        ours["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "10.74.0.1"})
    );

    // What the result says is in the container, and the CLI sees it.
    let link = ctr.link_json("eth0");
    assert_eq!(link["address"], ours["interfaces"][0]["mac"], "{link:#}");
    let addrs =
        String::from_utf8_lossy(&ctr.exec("ip", &["-4", "-o", "addr", "show", "eth0"]).stdout)
            .into_owned();
    assert!(addrs.contains(address), "{addrs}");
    let inspect = lan.inspect("cnilan");
    assert_eq!(
        inspect["Containers"].as_object().unwrap().len(),
        1,
        "{inspect:#}"
    );

    // CHECK against prevResult.
    let mut checked = conf.clone();
    checked["prevResult"] = ours.clone();
    let ok = netvlan_cni(&lan, "CHECK", &ctr, &checked);
    assert!(ok.ok && ok.stdout.trim().is_empty(), "{ok:?}");
    let mut wrong = checked.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!("10.74.0.250/24");
    let e = netvlan_cni(&lan, "CHECK", &ctr, &wrong).error(7);
    assert!(
        e["msg"].as_str().unwrap().contains("10.74.0.250/24"),
        "{e:#}"
    );
    // ADD again on the same container is refused; nothing changes.
    netvlan_cni(&lan, "ADD", &ctr, &conf).error(100);
    assert_eq!(
        lan.inspect("cnilan")["Containers"]
            .as_object()
            .unwrap()
            .len(),
        1
    );

    // DEL, and DEL again: both succeed; the network the ADD made is gone.
    let del = netvlan_cni(&lan, "DEL", &ctr, &conf);
    assert!(del.ok && del.stdout.trim().is_empty(), "{del:?}");
    assert!(!links_in(&ctr).contains(&"eth0".to_string()));
    let again = netvlan_cni(&lan, "DEL", &ctr, &conf);
    assert!(again.ok, "{again:?}");
    let ls = lan.netvlan(&["network", "ls", "--json"]).ok().json();
    assert_eq!(
        ls,
        json!([]),
        "the network the ADD made is removed with its last endpoint"
    );
    let del = cni(
        &lan,
        REFERENCE,
        "DEL",
        &ns_path(&reference_ctr),
        &[("CNI_CONTAINERID", "ref")],
        &reference_conf,
    );
    assert!(del.ok, "{del:?}");
    assert_eq!(links_in(&lan.host), before, "links left behind");
}

#[test]
fn check_reports_an_endpoint_link_removed_behind_its_back() {
    let lan = Lan::new(false);
    let hl = data_dir();
    let ctr = lan.container(false);
    let conf = config("cnicheck", 76, &hl);
    let result = netvlan_cni(&lan, "ADD", &ctr, &conf).ok();
    ctr.exec("ip", &["link", "del", "eth0"]);
    let mut checked = conf.clone();
    checked["prevResult"] = result;
    netvlan_cni(&lan, "CHECK", &ctr, &checked).error(7);
    assert!(netvlan_cni(&lan, "DEL", &ctr, &conf).ok);
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        json!([])
    );
}

#[test]
fn runtime_args_choose_the_mac_and_the_address() {
    let lan = Lan::new(false);
    let hl = data_dir();
    let ctr = lan.container(false);
    let conf = config("cniargs", 77, &hl);
    let bin = cni_bin();
    let refused = cni(
        &lan,
        bin.to_str().unwrap(),
        "ADD",
        &ns_path(&ctr),
        &[("CNI_ARGS", "COLOUR=red")],
        &conf,
    )
    .error(4);
    assert!(
        refused["msg"].as_str().unwrap().contains("COLOUR"),
        "{refused:#}"
    );
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        json!([])
    );
    let args = "IgnoreUnknown=1;COLOUR=red;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=shop;MAC=02:aa:bb:cc:dd:01;IP=10.77.0.42";
    let ours = cni(
        &lan,
        bin.to_str().unwrap(),
        "ADD",
        &ns_path(&ctr),
        &[("CNI_ARGS", args)],
        &conf,
    )
    .ok();
    assert_eq!(ours["interfaces"][0]["mac"], "02:aa:bb:cc:dd:01");
    assert_eq!(ours["ips"][0]["address"], "10.77.0.42/24");
    assert_eq!(ctr.link_json("eth0")["address"], "02:aa:bb:cc:dd:01");
    assert!(netvlan_cni(&lan, "DEL", &ctr, &conf).ok);

    // runtimeConfig (capabilities "mac" and "ips") as well.
    let mut with_runtime = conf.clone();
    with_runtime["runtimeConfig"] = json!({"mac": "02:aa:bb:cc:dd:02", "ips": ["10.77.0.43/24"]});
    let ours = netvlan_cni(&lan, "ADD", &ctr, &with_runtime).ok();
    assert_eq!(ours["interfaces"][0]["mac"], "02:aa:bb:cc:dd:02");
    assert_eq!(ours["ips"][0]["address"], "10.77.0.43/24");
    assert!(netvlan_cni(&lan, "DEL", &ctr, &with_runtime).ok);
}

#[test]
fn a_network_the_cli_made_is_shared_and_kept() {
    let lan = Lan::new(false);
    lan.network_on_eth0("shared", 78);
    let hl = data_dir();
    let ctr = lan.container(false);
    let conf = config("shared", 78, &hl);
    netvlan_cni(&lan, "ADD", &ctr, &conf).ok();
    let inspect = lan.inspect("shared");
    assert_eq!(
        inspect["Containers"].as_object().unwrap().len(),
        1,
        "{inspect:#}"
    );
    assert!(netvlan_cni(&lan, "DEL", &ctr, &conf).ok);
    // Its endpoint is gone; the network, the CLI's, stays.
    let inspect = lan.inspect("shared");
    assert_eq!(
        inspect["Containers"].as_object().unwrap().len(),
        0,
        "{inspect:#}"
    );
    // A config that disagrees with the stored network is refused.
    let mut other = config("shared", 79, &hl);
    other["master"] = json!("eth0");
    netvlan_cni(&lan, "ADD", &ctr, &other).error(7);
    lan.netvlan(&["network", "rm", "shared"]).ok();
}

#[test]
fn bad_configs_get_the_spec_error_and_leave_nothing_behind() {
    let lan = Lan::new(false);
    // For the overlapping subnet: a network the CLI made.
    lan.network_on_eth0("taken", 80);
    let hl = data_dir();
    let ctr = lan.container(false);
    let links = links_in(&lan.host);
    let ctr_links = links_in(&ctr);
    let good = config("bad", 81, &hl);
    let mut cases: Vec<(&str, Value, u64)> = Vec::new();
    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("master");
    cases.push(("master is missing", c, 7));
    let mut c = good.clone();
    c["mode"] = json!("bridged");
    cases.push(("\"bridged\"", c, 7));
    let mut c = good.clone();
    c["colour"] = json!("red");
    cases.push(("\"colour\"", c, 7));
    let mut c = good.clone();
    c["mtu"] = json!("big");
    cases.push(("mtu \"big\"", c, 7));
    let mut c = good.clone();
    c["cniVersion"] = json!("0.3.1");
    cases.push(("0.3.1", c, 1));
    let mut c = good.clone();
    c["ipam"]["subnet"] = json!("10.80.0.0/25");
    c["ipam"]["gateway"] = json!("10.80.0.1");
    // An overlap is the control plane's conflict (code 100), as in the CLI.
    cases.push(("10.80.0.0/25", c, 100));
    let mut c = good.clone();
    c["master"] = json!("nosuch0");
    cases.push(("nosuch0", c, 101));
    let mut c = good.clone();
    c["ipam"]["type"] = json!("nosuch-ipam");
    cases.push(("nosuch-ipam", c, 7));
    // The delegated plugin's own error, with its code.
    let mut c = good.clone();
    c["ipam"] = json!({"type": "static", "addresses": [{"address": "10.81.0.300/24"}]});
    cases.push(("10.81.0.300", c, 999));
    // A lease netvlan cannot honour is released and refused.
    let mut c = good.clone();
    c["ipam"] = json!({
        "type": "static",
        "addresses": [{"address": "10.81.0.5/24", "gateway": "10.81.0.1"}],
        "routes": [{"dst": "192.168.0.0/16"}],
    });
    cases.push(("192.168.0.0/16", c, 2));
    let mut c = good.clone();
    c["linkInContainer"] = json!(true);
    cases.push(("linkInContainer", c, 2));
    for (says, conf, code) in cases {
        let e = netvlan_cni(&lan, "ADD", &ctr, &conf).error(code);
        assert!(
            e["msg"].as_str().unwrap().contains(says)
                || e["details"].as_str().is_some_and(|d| d.contains(says)),
            "{says}: {e:#}"
        );
        assert_eq!(links_in(&lan.host), links, "{says}: links left on the host");
        assert_eq!(
            links_in(&ctr),
            ctr_links,
            "{says}: links left in the container"
        );
        let ls = lan.netvlan(&["network", "ls", "--json"]).ok().json();
        let names: Vec<&str> = ls
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["taken"], "{says}: networks left behind");
    }
    // A namespace that does not exist: the network this ADD made goes too.
    let gone = cni(
        &lan,
        cni_bin().to_str().unwrap(),
        "ADD",
        "/var/run/netns/nvt-no-such-ns",
        &[],
        &good,
    );
    let e = gone.error(3);
    assert!(
        e["msg"].as_str().unwrap().contains("nvt-no-such-ns"),
        "{e:#}"
    );
    let ls = lan.netvlan(&["network", "ls", "--json"]).ok().json();
    assert_eq!(ls.as_array().unwrap().len(), 1, "{ls:#}");
    assert_eq!(links_in(&lan.host), links, "links left on the host");
    // Not JSON at all, and an unknown command.
    let mut cmd = lan.host.command(cni_bin());
    let out = cmd
        .env("CNI_COMMAND", "FROB")
        .env("NETVLAN_BPF_DIR", lan.bpf.path())
        .env("NETVLAN_STATE_DIR", lan.state.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["code"], 4, "{e:#}");
    lan.netvlan(&["network", "rm", "taken"]).ok();
}

#[test]
fn status_says_whether_an_add_can_work() {
    let lan = Lan::new(false);
    let hl = data_dir();
    let conf = config("cnistatus", 82, &hl);
    let bin = cni_bin();
    let ready = cni(&lan, bin.to_str().unwrap(), "STATUS", "", &[], &conf);
    assert!(ready.ok && ready.stdout.trim().is_empty(), "{ready:?}");
    let mut missing = conf.clone();
    missing["master"] = json!("nosuch0");
    let e = cni(&lan, bin.to_str().unwrap(), "STATUS", "", &[], &missing).error(50);
    assert!(e["msg"].as_str().unwrap().contains("nosuch0"), "{e:#}");
    // STATUS changes nothing.
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        json!([])
    );
}

/// `netvlan-cni ADD` of `ctr` as container `id`.
fn add_as(lan: &Lan, ctr: &Netns, id: &str, args: &str, conf: &Value) -> Value {
    let bin = cni_bin();
    cni(
        lan,
        bin.to_str().unwrap(),
        "ADD",
        &ns_path(ctr),
        &[("CNI_CONTAINERID", id), ("CNI_ARGS", args)],
        conf,
    )
    .ok()
}

fn gc(lan: &Lan, conf: &Value, valid: Value) -> Answer {
    let mut conf = conf.clone();
    conf["cniVersion"] = json!("1.1.0");
    conf["cni.dev/valid-attachments"] = valid;
    let bin = cni_bin();
    let mut cmd = cni(lan, bin.to_str().unwrap(), "GC", "", &[], &conf);
    cmd.stdout = cmd.stdout.trim().to_string();
    cmd
}

#[test]
fn gc_removes_the_attachments_not_in_the_valid_list() {
    let lan = Lan::new(false);
    let hl = data_dir();
    let conf = config("cnigc", 85, &hl);
    let (a, b, c) = (
        lan.container(false),
        lan.container(false),
        lan.container(false),
    );
    let a_lease = add_as(&lan, &a, "ctr-a", "", &conf)["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/24")
        .to_string();
    add_as(&lan, &b, "ctr-b", "", &conf);
    // The usual case for GC: a container gone without a DEL.
    let gone = lan.container(false);
    add_as(&lan, &gone, "ctr-gone", "", &conf);
    netvlan_tests::sh("ip", &["netns", "del", gone.name()]);
    // An endpoint the CLI connected is not CNI's to collect.
    lan.netvlan(&["connect", "cnigc", &ns_path(&c)]).ok();
    assert_eq!(host_local_leases(&hl, "cnigc").len(), 3);
    let keep_a = json!([{"containerID": "ctr-a", "ifname": "eth0"}]);
    let done = gc(&lan, &conf, keep_a);
    assert!(done.ok && done.stdout.is_empty(), "{done:?}");
    assert_eq!(links_in(&b), ["lo"], "ctr-b's attachment survived GC");
    // host-local (CNI 1.0.0, no GC of its own) got a DEL for each
    // collected attachment: only ctr-a's lease and the CLI's are left.
    // collected attachment: only ctr-a's lease is left (the CLI's
    // endpoint took its address from netvlan's IPAM).
    assert_eq!(
        host_local_leases(&hl, "cnigc"),
        [a_lease],
        "GC left host-local's leases of the collected attachments"
    );
    assert!(links_in(&a).contains(&"eth0".to_string()), "GC took ctr-a");
    assert!(
        links_in(&c).contains(&"eth0".to_string()),
        "GC took the CLI's"
    );
    assert_eq!(
        lan.inspect("cnigc")["Containers"]
            .as_object()
            .unwrap()
            .len(),
        2
    );
    // Same container id, other ifname: not valid either.
    let other_if = json!([{"containerID": "ctr-a", "ifname": "net1"}]);
    assert!(gc(&lan, &conf, other_if).ok);
    assert_eq!(links_in(&a), ["lo"], "ctr-a/eth0 survived GC");
    assert!(host_local_leases(&hl, "cnigc").is_empty());
    // A malformed list is the spec's error, and removes nothing.
    gc(&lan, &conf, json!([{"ifname": "eth0"}])).error(7);
    assert!(links_in(&c).contains(&"eth0".to_string()));
    // The CLI's endpoint gone too, GC removes the network the ADD made.
    lan.netvlan(&["disconnect", "cnigc", &ns_path(&c)]).ok();
    assert!(gc(&lan, &conf, json!([])).ok);
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        json!([])
    );
    // GC of a network that is not there succeeds.
    assert!(gc(&lan, &conf, json!([])).ok);

    // The IPAM plugin missing from CNI_PATH: the endpoint is collected
    // all the same, and the lease left behind is reported.
    add_as(&lan, &b, "ctr-late", "", &conf);
    let mut late = conf.clone();
    late["cniVersion"] = json!("1.1.0");
    late["cni.dev/valid-attachments"] = json!([]);
    let bin = cni_bin();
    let run = |command: &str, cni_path: &str, conf: &Value| {
        cni(
            &lan,
            bin.to_str().unwrap(),
            command,
            "",
            &[("CNI_PATH", cni_path), ("CNI_CONTAINERID", "ctr-late")],
            conf,
        )
    };
    let e = run("GC", "/nonexistent", &late).error(netvlan::control::CODE_IO.into());
    assert!(e["msg"].as_str().unwrap().contains("host-local"), "{e:#}");
    assert_eq!(links_in(&b), ["lo"], "GC left the endpoint");
    assert_eq!(host_local_leases(&hl, "cnigc").len(), 1);
    // The runtime's DEL (no namespace any more) releases it.
    assert!(run("DEL", "/usr/lib/cni", &conf).ok);
    assert!(host_local_leases(&hl, "cnigc").is_empty());
}

/// A DEL may come without `CNI_NETNS` (the runtime no longer has the
/// namespace): the attachment is found by its container id and interface,
/// as the spec keys attachments, and its lease goes with it.
#[test]
fn del_without_a_namespace_finds_the_attachment_by_its_container_id() {
    let lan = Lan::new(false);
    let hl = data_dir();
    let conf = config("cnidelnons", 84, &hl);
    let ctr = lan.container(false);
    add_as(&lan, &ctr, "ctr-nons", "", &conf);
    let bin = cni_bin();
    let del = |id: &str| {
        cni(
            &lan,
            bin.to_str().unwrap(),
            "DEL",
            "",
            &[("CNI_CONTAINERID", id)],
            &conf,
        )
    };
    // Another container's DEL touches nothing of this one.
    assert!(del("ctr-other").ok);
    assert!(links_in(&ctr).contains(&"eth0".to_string()));
    assert_eq!(host_local_leases(&hl, "cnidelnons").len(), 1);

    let done = del("ctr-nons");
    assert!(done.ok && done.stdout.trim().is_empty(), "{done:?}");
    assert_eq!(links_in(&ctr), ["lo"], "the endpoint link survived DEL");
    assert!(
        host_local_leases(&hl, "cnidelnons").is_empty(),
        "lease kept"
    );
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        json!([]),
        "the network the ADD made outlived its last endpoint"
    );
    assert!(del("ctr-nons").ok, "DEL is idempotent");
}

/// An IPAM plugin that speaks CNI 1.1 and records its calls: the
/// plugin `name` in `dir`, and the file its calls go to.
fn ipam_1_1(dir: &OwnedDir, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.path()).unwrap();
    let exe = dir.path().join(name);
    let calls = dir.path().join(format!("{name}.calls"));
    let script = format!(
        r#"#!/bin/sh
echo "$CNI_COMMAND $CNI_CONTAINERID" >> {calls}
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}}' ;;
ADD) cat >/dev/null; echo '{{"cniVersion":"1.1.0","ips":[{{"address":"10.83.0.7/24","gateway":"10.83.0.1"}}]}}' ;;
STATUS) cat >/dev/null
  if [ -e {down} ]; then echo '{{"cniVersion":"1.1.0","code":50,"msg":"pool exhausted"}}'; exit 1; fi ;;
GC) cat > {gc} ;;
*) cat >/dev/null ;;
esac
"#,
        calls = calls.display(),
        down = dir.path().join(format!("{name}.down")).display(),
        gc = dir.path().join(format!("{name}.gc")).display(),
    );
    std::fs::write(&exe, script).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    calls
}

/// A delegated IPAM that speaks CNI 1.1 gets STATUS and GC as the spec
/// asks of a delegating plugin: its STATUS error (code and message) is
/// the answer, and a GC is passed to it with the valid attachments
/// instead of a DEL per collected attachment.
#[test]
fn a_delegated_ipam_that_speaks_1_1_gets_status_and_gc() {
    let lan = Lan::new(false);
    let plugins = OwnedDir::at(std::env::temp_dir().join(unique_name("ipam11")));
    let calls = ipam_1_1(&plugins, "ipam11");
    let cni_path = format!("{}:/usr/lib/cni", plugins.path().display());
    let mut conf = json!({
        "cniVersion": "1.1.0",
        "name": "cniipam11",
        "type": "netvlan-cni",
        "master": "eth0",
        "ipam": { "type": "ipam11" },
    });
    let bin = cni_bin();
    let run = |command: &str, netns: &str, conf: &Value| {
        cni(
            &lan,
            bin.to_str().unwrap(),
            command,
            netns,
            &[("CNI_PATH", &cni_path), ("CNI_CONTAINERID", "ctr-11")],
            conf,
        )
    };
    let ctr = lan.container(false);
    let added = run("ADD", &ns_path(&ctr), &conf).ok();
    assert_eq!(added["ips"][0]["address"], "10.83.0.7/24", "{added:#}");

    let ready = run("STATUS", "", &conf);
    assert!(ready.ok, "{ready:?}");
    std::fs::write(plugins.path().join("ipam11.down"), b"").unwrap();
    let e = run("STATUS", "", &conf).error(50);
    assert!(
        e["msg"].as_str().unwrap().contains("pool exhausted"),
        "{e:#}"
    );

    conf["cni.dev/valid-attachments"] = json!([]);
    let done = run("GC", "", &conf);
    assert!(done.ok, "{done:?}");
    assert_eq!(links_in(&ctr), ["lo"], "GC left the attachment");
    let gc: Value =
        serde_json::from_slice(&std::fs::read(plugins.path().join("ipam11.gc")).unwrap()).unwrap();
    assert_eq!(gc["cni.dev/valid-attachments"], json!([]), "{gc:#}");
    let called: Vec<String> = std::fs::read_to_string(&calls)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("VERSION"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        called,
        ["ADD ctr-11", "STATUS ctr-11", "STATUS ctr-11", "GC ctr-11"],
        "the plugin's own GC collects: no DEL per attachment"
    );
}

/// STATUS 51: the datapath of a network with endpoints is not as stored
/// (here netvlan's XDP program detached from the parent by hand), so its
/// containers may have limited connectivity; a network without
/// endpoints whose parent is missing is 50; `netvlan restore` makes it
/// ready again.
#[test]
fn status_is_51_when_the_datapath_of_existing_endpoints_is_not_ready() {
    let lan = Lan::new(false);
    let hl = data_dir();
    let conf = config("cnistatus51", 86, &hl);
    let bin = cni_bin();
    let status = |conf: &Value| {
        let mut conf = conf.clone();
        conf["cniVersion"] = json!("1.1.0");
        cni(&lan, bin.to_str().unwrap(), "STATUS", "", &[], &conf)
    };
    let ctr = lan.container(false);
    netvlan_cni(&lan, "ADD", &ctr, &conf).ok();
    let ready = status(&conf);
    assert!(ready.ok && ready.stdout.trim().is_empty(), "{ready:?}");
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(lan.host.path()).unwrap());
    let link = lan
        .bpf
        .path()
        .join(format!("net-{ino}"))
        .join(format!("if-{}", lan.host.ifindex("eth0")))
        .join("link");
    netvlan_tests::sh(
        "bpftool",
        &["link", "detach", "pinned", link.to_str().unwrap()],
    );
    assert!(lan.host.link_json("eth0").get("xdp").is_none());
    let e = status(&conf).error(51);
    let msg = e["msg"].as_str().unwrap();
    assert!(msg.contains("cnistatus51") && msg.contains("XDP"), "{e:#}");
    // Another network of the config's with no endpoint and no parent: 50.
    let mut missing = config("cnistatus50", 87, &hl);
    missing["master"] = json!("nosuch0");
    let e = status(&missing).error(50);
    assert!(e["msg"].as_str().unwrap().contains("nosuch0"), "{e:#}");
    lan.netvlan(&["restore"]).ok();
    assert!(status(&conf).ok);
    assert!(netvlan_cni(&lan, "DEL", &ctr, &conf).ok);
}

/// The addresses host-local holds in `data_dir` for network `name`.
fn host_local_leases(data_dir: &OwnedDir, name: &str) -> Vec<String> {
    let dir = data_dir.path().join(name);
    let mut leases: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    leases.sort();
    leases
}

/// A delegated `ipam` (containernetworking-plugins' `static` and
/// `host-local`, run from CNI_PATH) gives netvlan-cni the reference
/// macvlan plugin's result on the same config, but for the MAC; the
/// lease is the endpoint's address in netvlan's state; CHECK and DEL go
/// to the IPAM plugin too, and an ADD that fails after the lease
/// releases it.
#[test]
fn ipam_is_delegated_to_the_plugin_in_cni_path_as_the_reference_does() {
    let lan = Lan::new(false);
    let hl = data_dir();
    let static_ipam = json!({
        "type": "static",
        "addresses": [{"address": "10.88.0.5/24", "gateway": "10.88.0.1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}],
    });
    let host_local = json!({
        "type": "host-local",
        "ranges": [[{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}]],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.89.0.1"}],
        "dataDir": hl.path(),
    });
    for (name, ipam) in [("cnistatic", static_ipam), ("cnihostlocal", host_local)] {
        let mut conf = config(name, 0, &hl);
        conf["ipam"] = ipam;
        conf["dns"] = json!({"nameservers": ["10.88.0.53"]});
        let mut reference_conf = conf.clone();
        reference_conf["type"] = json!("macvlan");
        let (reference_ctr, ctr) = (lan.container(false), lan.container(false));
        let mut theirs = cni(
            &lan,
            REFERENCE,
            "ADD",
            &ns_path(&reference_ctr),
            &[("CNI_CONTAINERID", "ref")],
            &reference_conf,
        )
        .ok();
        let mut ours = cni(
            &lan,
            cni_bin().to_str().unwrap(),
            "ADD",
            &ns_path(&ctr),
            &[("CNI_CONTAINERID", "ours")],
            &conf,
        )
        .ok();
        let address = ours["ips"][0]["address"].as_str().unwrap().to_string();
        let result = ours.clone();
        if name == "cnihostlocal" {
            // One host-local pool: the second lease is the next address.
            assert_eq!(theirs["ips"][0]["address"], "10.89.0.2/24");
            assert_eq!(address, "10.89.0.3/24");
            theirs["ips"][0]["address"] = json!(address);
            assert_eq!(host_local_leases(&hl, name), ["10.89.0.2", "10.89.0.3"]);
        } else {
            assert_eq!(address, "10.88.0.5/24");
        }
        for r in [&mut theirs, &mut ours] {
            r["interfaces"][0]["mac"] = json!("(mac)");
            r["interfaces"][0]["sandbox"] = json!("(sandbox)");
        }
        assert_eq!(ours, theirs, "{name}");
        // The lease is the endpoint's address in netvlan's state.
        let entry = netvlan_tests::container_entry(&lan.inspect(name), &ns_path(&ctr));
        assert_eq!(entry["IPv4Address"], json!(address), "{entry:#}");
        let addrs =
            String::from_utf8_lossy(&ctr.exec("ip", &["-4", "-o", "addr", "show", "eth0"]).stdout)
                .into_owned();
        assert!(addrs.contains(&address), "{addrs}");

        let run = |command: &str, ns: &str, conf: &Value| {
            cni(
                &lan,
                cni_bin().to_str().unwrap(),
                command,
                ns,
                &[("CNI_CONTAINERID", "ours")],
                conf,
            )
        };
        let mut checked = conf.clone();
        checked["prevResult"] = result;
        let ok = run("CHECK", &ns_path(&ctr), &checked);
        assert!(ok.ok && ok.stdout.trim().is_empty(), "{name}: {ok:?}");
        if name == "cnihostlocal" {
            // ADD again fails on the interface, and keeps the live lease.
            run("ADD", &ns_path(&ctr), &conf).error(100);
            assert_eq!(host_local_leases(&hl, name), ["10.89.0.2", "10.89.0.3"]);
            let prev = run("DEL", &ns_path(&ctr), &conf);
            assert!(prev.ok, "{prev:?}");
            assert_eq!(host_local_leases(&hl, name), ["10.89.0.2"], "DEL releases");
            // An ADD that fails after the lease (its namespace is not
            // there) releases it again.
            run("ADD", "/var/run/netns/nvt-no-such-ns", &conf).error(3);
            assert_eq!(host_local_leases(&hl, name), ["10.89.0.2"], "lease leaked");
            assert_eq!(
                lan.netvlan(&["network", "ls", "--json"]).ok().json(),
                json!([])
            );
        } else {
            let del = run("DEL", &ns_path(&ctr), &conf);
            assert!(del.ok, "{del:?}");
        }
        assert_eq!(links_in(&ctr), ["lo"], "{name}: link left behind");
        let del = cni(
            &lan,
            REFERENCE,
            "DEL",
            &ns_path(&reference_ctr),
            &[("CNI_CONTAINERID", "ref")],
            &reference_conf,
        );
        assert!(del.ok, "{del:?}");
    }
    assert!(host_local_leases(&hl, "cnihostlocal").is_empty());
}

/// Dual stack, as host-local's `ranges` give it (one range set per
/// family): delegated, the result equals the reference macvlan plugin's
/// but for the MAC; with netvlan's own IPAM the container gets both
/// addresses (or the ones `CNI_ARGS IP=` asks for) and reaches the
/// switch over IPv6; two addresses of one family are refused naming both.
#[test]
fn dual_stack_configs_give_an_ipv4_and_an_ipv6_address() {
    let lan = Lan::new(true);
    lan.switch.exec(
        "ip",
        &["addr", "add", "fd00:91::fe/64", "dev", "peer0", "nodad"],
    );
    let hl = data_dir();
    let mut conf = config("cnidual", 91, &hl);
    conf["ipam"] = json!({
        "type": "host-local",
        "ranges": [
            [{"subnet": "10.91.0.0/24", "gateway": "10.91.0.1"}],
            [{"subnet": "fd00:91::/64", "gateway": "fd00:91::1"}],
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.91.0.1"}, {"dst": "::/0", "gw": "fd00:91::1"}],
        "dataDir": hl.path(),
    });
    let mut reference_conf = conf.clone();
    reference_conf["type"] = json!("macvlan");
    let (reference_ctr, ctr) = (lan.container(true), lan.container(true));
    let reference = |command: &str| {
        cni(
            &lan,
            REFERENCE,
            command,
            &ns_path(&reference_ctr),
            &[("CNI_CONTAINERID", "ref")],
            &reference_conf,
        )
    };
    let mut theirs = reference("ADD").ok();
    let mut ours = netvlan_cni(&lan, "ADD", &ctr, &conf).ok();
    assert_eq!(ours["ips"][1]["address"], "fd00:91::3/64", "{ours:#}");
    let v6 = String::from_utf8_lossy(&ctr.exec("ip", &["-6", "-o", "addr", "show", "eth0"]).stdout)
        .into_owned();
    assert!(v6.contains("fd00:91::3/64"), "{v6}");
    let global = v6
        .lines()
        .find(|l| l.contains("fd00:91::3/64"))
        .unwrap_or_default();
    assert!(
        !global.contains("tentative"),
        "added without DAD, as Docker: {v6}"
    );
    assert!(ctr.can_ping("fd00:91::fe"), "the switch over IPv6");
    let entry = netvlan_tests::container_entry(&lan.inspect("cnidual"), &ns_path(&ctr));
    assert_eq!(entry["IPv6Address"], "fd00:91::3/64", "{entry:#}");
    // host-local leased .2 to the reference, .3 to netvlan.
    for family in [0, 1] {
        let address = ours["ips"][family]["address"].clone();
        theirs["ips"][family]["address"] = address;
    }
    for r in [&mut theirs, &mut ours] {
        r["interfaces"][0]["mac"] = json!("(mac)");
        r["interfaces"][0]["sandbox"] = json!("(sandbox)");
    }
    assert_eq!(ours, theirs);
    assert!(netvlan_cni(&lan, "DEL", &ctr, &conf).ok);
    assert!(reference("DEL").ok);
    assert!(
        host_local_leases(&hl, "cnidual").is_empty(),
        "DEL releases both"
    );

    // netvlan's own IPAM, with the addresses CNI_ARGS asks for.
    let mut own = conf.clone();
    own["ipam"] = json!({
        "type": "netvlan",
        "ranges": [[{"subnet": "10.91.0.0/24"}], [{"subnet": "fd00:91::/64"}]],
    });
    let add = |args: &str| {
        cni(
            &lan,
            cni_bin().to_str().unwrap(),
            "ADD",
            &ns_path(&ctr),
            &[("CNI_ARGS", args)],
            &own,
        )
    };
    let two = add("IP=10.91.0.7,10.91.0.8").error(7);
    assert!(
        two["msg"]
            .as_str()
            .unwrap()
            .contains("10.91.0.7 and 10.91.0.8"),
        "{two:#}"
    );
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        json!([])
    );
    let ours = add("IP=10.91.0.7,fd00:91::7").ok();
    let addresses: Vec<&str> = ours["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["10.91.0.7/24", "fd00:91::7/64"], "{ours:#}");
    assert_eq!(
        ours["routes"][1],
        json!({"dst": "::/0", "gw": "fd00:91::1"})
    );
    assert!(ctr.can_ping("fd00:91::fe"), "the switch over IPv6");
    let mut checked = own.clone();
    checked["prevResult"] = ours;
    let ok = netvlan_cni(&lan, "CHECK", &ctr, &checked);
    assert!(ok.ok && ok.stdout.trim().is_empty(), "{ok:?}");
    assert!(netvlan_cni(&lan, "DEL", &ctr, &own).ok);
    assert_eq!(links_in(&ctr), ["lo"]);
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        json!([])
    );
}

/// An ipvlan config (the reference ipvlan plugin's `mode` l2, l3 or l3s)
/// makes an ipvlan network. In l2 the result equals the reference ipvlan
/// plugin's on the same config (both report the parent's MAC) and the
/// container reaches the switch; a macvlan config naming the same
/// network is refused; in l3 the default route goes out of the device.
#[test]
fn ipvlan_configs_give_the_reference_ipvlan_plugins_result() {
    if !require_kernel_feature(KernelFeature::Ipvlan) {
        return;
    }
    let lan = Lan::new(false);
    lan.switch
        .exec("ip", &["addr", "add", "10.92.0.254/24", "dev", "peer0"]);
    let hl = data_dir();
    let mut conf = config("cniipvlan", 92, &hl);
    conf["mode"] = json!("l2");
    conf["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0", "gw": "10.92.0.1"}]);
    let mut reference_conf = conf.clone();
    reference_conf["type"] = json!("ipvlan");
    let (reference_ctr, ctr) = (lan.container(false), lan.container(false));
    let reference = |command: &str| {
        cni(
            &lan,
            "/usr/lib/cni/ipvlan",
            command,
            &ns_path(&reference_ctr),
            &[("CNI_CONTAINERID", "ref")],
            &reference_conf,
        )
    };
    let mut theirs = reference("ADD").ok();
    let mut ours = netvlan_cni(&lan, "ADD", &ctr, &conf).ok();
    assert_eq!(ours["ips"][0]["address"], "10.92.0.3/24", "{ours:#}");
    assert_eq!(lan.inspect("cniipvlan")["Driver"], "ipvlan");
    assert!(ctr.can_ping("10.92.0.254"), "the switch through ipvlan l2");
    theirs["ips"][0]["address"] = ours["ips"][0]["address"].clone();
    for r in [&mut theirs, &mut ours] {
        r["interfaces"][0]["sandbox"] = json!("(sandbox)");
    }
    assert_eq!(ours, theirs);
    let mut macvlan = conf.clone();
    macvlan["mode"] = json!("bridge");
    let other = lan.container(false);
    let refused = cni(
        &lan,
        cni_bin().to_str().unwrap(),
        "ADD",
        &ns_path(&other),
        &[("CNI_CONTAINERID", "other")],
        &macvlan,
    )
    .error(7);
    assert!(
        refused["msg"].as_str().unwrap().contains("driver ipvlan"),
        "{refused:#}"
    );
    assert_eq!(links_in(&other), ["lo"]);
    assert_eq!(
        host_local_leases(&hl, "cniipvlan"),
        ["10.92.0.2", "10.92.0.3"],
        "the refused ADD's lease is released"
    );
    assert!(netvlan_cni(&lan, "DEL", &ctr, &conf).ok);
    assert!(reference("DEL").ok);
    assert!(host_local_leases(&hl, "cniipvlan").is_empty());

    let mut l3 = config("cniipvlan3", 93, &hl);
    l3["mode"] = json!("l3");
    l3["ipam"] = json!({"type": "netvlan", "subnet": "10.93.0.0/24"});
    let ours = netvlan_cni(&lan, "ADD", &ctr, &l3).ok();
    // l3 has no gateway: the first address is an endpoint's.
    assert_eq!(ours["ips"][0]["address"], "10.93.0.1/24", "{ours:#}");
    let routes =
        String::from_utf8_lossy(&ctr.exec("ip", &["-4", "route", "show", "default"]).stdout)
            .into_owned();
    assert!(routes.contains("default dev eth0"), "{routes}");
    assert!(netvlan_cni(&lan, "DEL", &ctr, &l3).ok);
    assert_eq!(links_in(&ctr), ["lo"]);
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        json!([])
    );
}

/// `mtu` is the endpoint's MTU, as the reference plugin sets it; one
/// above the parent's is refused and leaves nothing behind, and a
/// config whose `mtu` disagrees with the stored network is refused.
#[test]
fn mtu_sets_the_endpoints_mtu_as_the_reference_does() {
    let lan = Lan::new(false);
    let hl = data_dir();
    let mut conf = config("cnimtu", 90, &hl);
    conf["mtu"] = json!(1400);
    let mut reference_conf = conf.clone();
    reference_conf["type"] = json!("macvlan");
    let (reference_ctr, ctr, other) = (
        lan.container(false),
        lan.container(false),
        lan.container(false),
    );
    let reference = |command: &str| {
        cni(
            &lan,
            REFERENCE,
            command,
            &ns_path(&reference_ctr),
            &[("CNI_CONTAINERID", "ref")],
            &reference_conf,
        )
    };
    reference("ADD").ok();
    netvlan_cni(&lan, "ADD", &ctr, &conf).ok();
    assert_eq!(reference_ctr.link_json("eth0")["mtu"], 1400);
    assert_eq!(ctr.link_json("eth0")["mtu"], 1400);
    let mut other_mtu = conf.clone();
    other_mtu["mtu"] = json!(1300);
    let e = cni(
        &lan,
        cni_bin().to_str().unwrap(),
        "ADD",
        &ns_path(&other),
        &[("CNI_CONTAINERID", "other")],
        &other_mtu,
    )
    .error(7);
    assert!(e["msg"].as_str().unwrap().contains("1300"), "{e:#}");
    assert_eq!(links_in(&other), ["lo"]);
    assert!(netvlan_cni(&lan, "DEL", &ctr, &conf).ok);
    assert!(reference("DEL").ok);

    let links = links_in(&lan.host);
    let mut jumbo = conf.clone();
    jumbo["mtu"] = json!(9000);
    let e = netvlan_cni(&lan, "ADD", &ctr, &jumbo).error(7);
    assert!(e["msg"].as_str().unwrap().contains("mtu=9000"), "{e:#}");
    assert_eq!(links_in(&ctr), ["lo"]);
    assert_eq!(links_in(&lan.host), links);
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        json!([])
    );
    assert!(host_local_leases(&hl, "cnimtu").is_empty(), "lease leaked");
}

#[test]
fn kubernetes_pod_names_name_the_endpoint_in_stats() {
    let lan = Lan::new(false);
    let hl = data_dir();
    let conf = config("cnipod", 87, &hl);
    let (pod, plain) = (lan.container(false), lan.container(false));
    // As kubelet passes them (host-local, the IPAM, needs IgnoreUnknown).
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=ctr-p";
    add_as(&lan, &pod, "ctr-p", args, &conf);
    add_as(&lan, &plain, "ctr-q", "", &conf);
    let stats = lan.netvlan(&["stats", "--json"]).ok().json();
    let names: Vec<&str> = stats["endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("no endpoints in {stats:#}"))
        .iter()
        .filter(|e| e["network"] == "cnipod")
        .map(|e| e["endpoint"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"shop/web-0"), "{stats:#}");
    // Without pod args the endpoint keeps its sandbox's name.
    assert!(names.contains(&ns_path(&plain).as_str()), "{stats:#}");
    // `/metrics` labels its series with the same names.
    let daemon = netvlan_tests::daemon::Daemon::start(&lan, &[]);
    let metrics = daemon.get("/metrics");
    drop(daemon);
    for endpoint in ["shop/web-0".to_string(), ns_path(&plain)] {
        let series = format!(
            "netvlan_endpoint_rx_packets_total{{network=\"cnipod\",endpoint=\"{endpoint}\"}}"
        );
        assert!(metrics.contains(&series), "no {series} in\n{metrics}");
    }
    for (ctr, id) in [(&pod, "ctr-p"), (&plain, "ctr-q")] {
        let bin = cni_bin();
        let del = cni(
            &lan,
            bin.to_str().unwrap(),
            "DEL",
            &ns_path(ctr),
            &[("CNI_CONTAINERID", id)],
            &conf,
        );
        assert!(del.ok, "{del:?}");
    }
}

#[test]
fn a_0_4_0_config_gets_the_0_4_0_result_shape() {
    let lan = Lan::new(false);
    let hl = data_dir();
    let reference_ctr = lan.container(false);
    let ctr = lan.container(false);
    let mut conf = config("cniold", 83, &hl);
    conf["cniVersion"] = json!("0.4.0");
    let mut reference_conf = conf.clone();
    reference_conf["type"] = json!("macvlan");
    let theirs = cni(
        &lan,
        REFERENCE,
        "ADD",
        &ns_path(&reference_ctr),
        &[("CNI_CONTAINERID", "ref")],
        &reference_conf,
    )
    .ok();
    let ours = netvlan_cni(&lan, "ADD", &ctr, &conf).ok();
    assert_eq!(ours["cniVersion"], "0.4.0");
    assert_eq!(
        keys(&ours["ips"][0]),
        keys(&theirs["ips"][0]),
        "{ours:#} vs {theirs:#}"
    );
    assert_eq!(ours["ips"][0]["version"], "4");
    assert!(netvlan_cni(&lan, "DEL", &ctr, &conf).ok);
    let del = cni(
        &lan,
        REFERENCE,
        "DEL",
        &ns_path(&reference_ctr),
        &[("CNI_CONTAINERID", "ref")],
        &reference_conf,
    );
    assert!(del.ok, "{del:?}");
}

/// Podman (Debian's 4.3, CNI backend) in the lab's host namespace, with
/// its configuration, storage and CNI configs in a directory of its own;
/// its containers are removed on drop.
struct Podman {
    dir: OwnedDir,
    host: String,
    bpf: PathBuf,
    state: PathBuf,
    /// Podman's own caches outside its configured directories (the image
    /// blob cache, libcni's result cache) that this test created.
    created_caches: Vec<&'static str>,
}

const PODMAN_CACHES: [&str; 2] = ["/var/lib/containers", "/var/lib/cni"];

impl Podman {
    fn new(lan: &Lan, conflist: &Value) -> Podman {
        let dir = OwnedDir::at(std::env::temp_dir().join(unique_name("podman")));
        let root = dir.path().to_path_buf();
        for sub in ["cni-bin", "cni-conf", "tmp", "run", "storage", "rootfs/bin"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::copy(cni_bin(), root.join("cni-bin/netvlan-cni")).unwrap();
        std::fs::write(
            root.join("containers.conf"),
            format!(
                r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{root}/events.log"
tmp_dir = "{root}/tmp"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{root}/cni-bin", "/usr/lib/cni"]
network_config_dir = "{root}/cni-conf"
"#,
                root = root.display()
            ),
        )
        .unwrap();
        std::fs::write(
            root.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{root}/storage\"\nrunroot = \"{root}/run\"\n",
                root = root.display()
            ),
        )
        .unwrap();
        std::fs::write(root.join("cni-conf/nvlan.conflist"), conflist.to_string()).unwrap();
        let created_caches = PODMAN_CACHES
            .into_iter()
            .filter(|c| !Path::new(c).exists())
            .collect();
        let podman = Podman {
            created_caches,
            dir,
            host: lan.host.path().display().to_string(),
            bpf: lan.bpf.path().to_path_buf(),
            state: lan.state.path().to_path_buf(),
        };
        // A busybox image made here (no registry).
        std::fs::copy("/bin/busybox", root.join("rootfs/bin/busybox"))
            .expect("a static busybox (Debian's busybox-static)");
        for applet in ["sh", "ping", "sleep", "ip"] {
            std::os::unix::fs::symlink("busybox", root.join(format!("rootfs/bin/{applet}")))
                .unwrap();
        }
        let tar = root.join("rootfs.tar");
        netvlan_tests::sh(
            "tar",
            &[
                "-C",
                root.join("rootfs").to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ],
        );
        podman.ok(&["import", tar.to_str().unwrap(), "nvt-busybox"]);
        podman
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let root = self.dir.path();
        Command::new("nsenter")
            .arg(format!("--net={}", self.host))
            .arg("--")
            .arg("podman")
            .args(args)
            .env("CONTAINERS_CONF", root.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", root.join("storage.conf"))
            .env("NETVLAN_BPF_DIR", &self.bpf)
            .env("NETVLAN_STATE_DIR", &self.state)
            .stdin(Stdio::null())
            .output()
            .expect("podman runs (Debian's podman, installed by cargo xtask test)")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {} failed: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-af", "-t", "0"]);
        let _ = self.run(&["rmi", "-af"]);
        for cache in &self.created_caches {
            let _ = std::fs::remove_dir_all(cache);
        }
    }
}

#[test]
fn podman_runs_a_container_on_a_netvlan_cni_conflist() {
    let lan = Lan::new(false);
    lan.switch
        .exec("ip", &["addr", "add", "10.84.0.1/24", "dev", "peer0"]);
    let host_links = links_in(&lan.host);
    // host-local (the delegated IPAM) keeps its leases here, not on the host.
    let hl = data_dir();
    let conflist = json!({
        "cniVersion": "0.4.0",
        "name": "nvlan",
        "plugins": [{
            "type": "netvlan-cni",
            "master": "eth0",
            "mode": "bridge",
            "ipam": {
                "type": "host-local",
                "subnet": "10.84.0.0/24",
                "gateway": "10.84.0.1",
                "dataDir": hl.path(),
            },
            // podman's cleanup (run by conmon when the container exits)
            // does not pass the environment on: the lab's dirs go here.
            "stateDir": lan.state.path(),
            "bpfDir": lan.bpf.path(),
        }]
    });
    let podman = Podman::new(&lan, &conflist);
    let name = unique_name("ctr");
    podman.ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "nvlan",
        "nvt-busybox",
        "sleep",
        "120",
    ]);
    // The container reaches the external namespace (the LAN's gateway).
    podman.ok(&["exec", &name, "ping", "-c", "1", "-W", "5", "10.84.0.1"]);
    let inspect = lan.inspect("nvlan");
    assert_eq!(
        inspect["Containers"].as_object().unwrap().len(),
        1,
        "{inspect:#}"
    );
    let stats = lan.netvlan(&["stats", "--json"]).ok().json();
    assert!(
        stats.to_string().contains("10.84.0."),
        "the container's endpoint is not in netvlan stats: {stats:#}"
    );
    // podman passes the container's name as the pod's (K8S_POD_NAME alone).
    let endpoints = stats["endpoints"].as_array().unwrap();
    assert!(
        endpoints.iter().any(|e| e["endpoint"] == json!(name)),
        "the endpoint is not under the container's name {name}: {stats:#}"
    );
    // podman rm: the endpoint and the network the ADD made are gone.
    podman.ok(&["rm", "-f", "-t", "0", &name]);
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        json!([])
    );
    assert_eq!(links_in(&lan.host), host_links, "links left behind");
    assert!(
        host_local_leases(&hl, "nvlan").is_empty(),
        "a lease left behind"
    );
}
