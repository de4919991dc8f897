//! `netvlan docker-plugin`: libnetwork's remote network-driver protocol,
//! first driven call by call with raw HTTP on the plugin's socket (every
//! call, the errors and the 404), then by the real engine: Debian's dockerd
//! started in the lab's host namespace, `docker network create -d NAME`,
//! containers of an imported busybox image pinging a namespace on the LAN,
//! counted in `netvlan stats`, and nothing left behind after.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use netvlan_tests::{
    daemon::Daemon,
    frame::{ipv4_frame, Mac},
    netvlan_bin,
    packet::PacketSocket,
    require_kernel_feature, unique_name, wait_for, KernelFeature, Lan, Netns, OwnedDir,
};
use serde_json::{json, Value};

/// The plugin, running in the lab's host namespace on a socket of the
/// test's own; killed (by its PID) on drop.
struct PluginProcess {
    child: Child,
    socket: PathBuf,
}

impl PluginProcess {
    fn start(lan: &Lan, socket: &Path) -> PluginProcess {
        PluginProcess::start_with(lan, socket, &[])
    }

    /// As [`PluginProcess::start`], with more environment (e.g.
    /// `FAILPOINTS`: the test build has the `failpoints` feature).
    fn start_with(lan: &Lan, socket: &Path, env: &[(&str, &str)]) -> PluginProcess {
        let log = std::fs::File::create(socket.with_extension("log")).unwrap();
        // `nsenter` execs netvlan in place: the child's PID is the plugin's.
        let child = lan
            .host
            .command(netvlan_bin())
            .args(["docker-plugin", "--socket", socket.to_str().unwrap()])
            .env("NETVLAN_BPF_DIR", lan.bpf.path())
            .env("NETVLAN_STATE_DIR", lan.state.path())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("netvlan docker-plugin starts");
        let plugin = PluginProcess {
            child,
            socket: socket.to_path_buf(),
        };
        wait_for(Duration::from_secs(10), || {
            UnixStream::connect(socket).ok().map(|_| ())
        })
        .unwrap_or_else(|| {
            panic!(
                "the plugin never listened on {}: {}",
                socket.display(),
                plugin.log()
            )
        });
        plugin
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.socket.with_extension("log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash: no cleanup of its own.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PluginProcess {
    /// SIGTERM (the plugin removes its socket), SIGKILL if it lingers.
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let child = &mut self.child;
        if wait_for(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_))).then_some(())
        })
        .is_none()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 POST on the unix socket, as libnetwork's plugin client
/// sends it: the status and the JSON answer.
fn post(socket: &Path, call: &str, body: &str) -> (u16, Value) {
    let mut stream = UnixStream::connect(socket).expect("the plugin's socket accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "POST /{call} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{call}: no HTTP answer: {answer:?}"));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{call}: no status line: {head}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/vnd.docker.plugins.v1+json"),
        "{call}: {head}"
    );
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{call}: {e}: {body:?}"));
    (status, json)
}

fn call(socket: &Path, name: &str, body: &Value) -> Value {
    let (status, answer) = post(socket, name, &body.to_string());
    assert_eq!(status, 200, "{name} {body}: {answer:#}");
    assert!(
        answer.get("Err").is_none_or(|e| e == ""),
        "{name}: {answer:#}"
    );
    answer
}

/// A call that must fail: its `Err`, which must contain `says`.
fn refused(socket: &Path, name: &str, body: &Value, says: &str) -> String {
    let (status, answer) = post(socket, name, &body.to_string());
    assert_eq!(status, 500, "{name} {body}: {answer:#}");
    let err = answer["Err"].as_str().unwrap_or_default().to_string();
    assert!(err.contains(says), "{name}: {err:?} does not say {says:?}");
    err
}

const BROADCAST: Mac = [0xff; 6];

fn random_id() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn links_in(ns: &Netns) -> Vec<String> {
    ns.sorted_link_names()
}

/// The addresses of every link in `ns` (`link address/len`, sorted).
fn addresses_in(ns: &Netns) -> Vec<String> {
    let out = ns.exec("ip", &["-j", "addr"]);
    let links: Value = serde_json::from_slice(&out.stdout).expect("ip -j addr prints JSON");
    let mut addresses: Vec<String> = links
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|link| {
            link["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |a| format!("{} {}/{}", link["ifname"], a["local"], a["prefixlen"]))
        })
        .collect();
    addresses.sort();
    addresses
}

fn network_create(nid: &str, generic: Value, pool: &str, gateway: &str) -> Value {
    json!({
        "NetworkID": nid,
        "Options": {"com.docker.network.generic": generic},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": pool, "Gateway": gateway,
                      "AuxAddresses": {"router": "10.85.0.200/24"}}],
        "IPv6Data": [],
    })
}

#[test]
fn every_call_of_the_protocol_on_a_raw_socket() {
    let lan = Lan::new(false);
    let dir = OwnedDir::at(std::env::temp_dir().join(unique_name("dkp")));
    std::fs::create_dir_all(dir.path()).unwrap();
    let socket = dir.path().join("plugin.sock");
    let ctr = lan.container(false);
    let host_links = links_in(&lan.host);
    let host_addresses = addresses_in(&lan.host);
    let pins_before = lan.bpf.contents();
    let plugin = PluginProcess::start(&lan, &socket);

    // Handshake and capabilities.
    assert_eq!(
        call(&socket, "Plugin.Activate", &Value::Null),
        json!({"Implements": ["NetworkDriver", "IpamDriver"]})
    );
    let caps = call(&socket, "NetworkDriver.GetCapabilities", &Value::Null);
    assert_eq!(caps["Scope"], "local");
    assert_eq!(caps["ConnectivityScope"], "local");
    // An unknown call is a 404 naming it.
    let (status, answer) = post(&socket, "NetworkDriver.Frobnicate", "{}");
    assert_eq!(status, 404, "{answer:#}");
    assert!(answer["Err"]
        .as_str()
        .unwrap()
        .contains("NetworkDriver.Frobnicate"));
    let (status, answer) = post(&socket, "NetworkDriver.CreateNetwork", "{not json");
    assert_eq!(status, 500);
    assert!(
        answer["Err"].as_str().unwrap().contains("CreateNetwork"),
        "{answer:#}"
    );

    // Bad options are refused, naming what is wrong, and leave nothing.
    let nid = random_id();
    refused(
        &socket,
        "NetworkDriver.CreateNetwork",
        &network_create(&nid, json!({}), "10.85.0.0/24", "10.85.0.1/24"),
        "parent",
    );
    refused(
        &socket,
        "NetworkDriver.CreateNetwork",
        &network_create(
            &nid,
            json!({"parent": "eth0", "macvlan_mode": "sideways"}),
            "10.85.0.0/24",
            "10.85.0.1/24",
        ),
        "sideways",
    );
    refused(
        &socket,
        "NetworkDriver.CreateNetwork",
        &network_create(
            &nid,
            json!({"parent": "nosuch9"}),
            "10.85.0.0/24",
            "10.85.0.1/24",
        ),
        "nosuch9",
    );
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        json!([])
    );
    assert_eq!(links_in(&lan.host), host_links);

    // The network, from Docker's options and IPAM data.
    call(
        &socket,
        "NetworkDriver.CreateNetwork",
        &network_create(
            &nid,
            json!({"parent": "eth0", "macvlan_mode": "bridge"}),
            "10.85.0.0/24",
            "10.85.0.1/24",
        ),
    );
    let name = format!("docker-{}", &nid[..12]);
    let inspect = lan.inspect(&name);
    assert_eq!(
        inspect["IPAM"]["Config"][0]["Subnet"], "10.85.0.0/24",
        "{inspect:#}"
    );
    assert_eq!(
        inspect["IPAM"]["Config"][0]["Gateway"], "10.85.0.1",
        "{inspect:#}"
    );
    assert_eq!(inspect["Labels"]["netvlan.docker.network"], nid.as_str());
    // Another network overlapping it is refused.
    let other = random_id();
    refused(
        &socket,
        "NetworkDriver.CreateNetwork",
        &network_create(
            &other,
            json!({"parent": "eth0"}),
            "10.85.0.128/25",
            "10.85.0.129/25",
        ),
        "overlap",
    );

    // CreateEndpoint reserves exactly Docker's address and answers the MAC.
    let eid = random_id();
    let endpoint = json!({"NetworkID": nid, "EndpointID": eid,
                          "Interface": {"Address": "10.85.0.5/24"}, "Options": {}});
    let created = call(&socket, "NetworkDriver.CreateEndpoint", &endpoint);
    assert_eq!(
        created["Interface"]["MacAddress"], "02:42:0a:55:00:05",
        "{created:#}"
    );
    assert!(created["Interface"].get("Address").is_none(), "{created:#}");
    let link = format!("nvd{}", &eid[..10]);
    assert_eq!(
        netvlan_tests::frame::mac_string(&lan.host.mac(&link)),
        "02:42:0a:55:00:05"
    );
    // Staged, not joined: `check` finds it in order, `restore` leaves it.
    let check = lan.netvlan(&["check", "--json"]);
    assert!(check.status.success(), "{}{}", check.stdout, check.stderr);
    let restored = lan.netvlan(&["restore", "--json"]).ok().json();
    assert_eq!(restored, json!({"actions": []}), "{restored:#}");
    assert!(
        links_in(&lan.host).contains(&link),
        "restore took the staged link"
    );
    // The aux address and a taken one are not Docker's to give.
    for (address, says) in [
        ("10.85.0.200/24", "10.85.0.200"),
        ("10.85.0.5/24", "10.85.0.5"),
    ] {
        refused(
            &socket,
            "NetworkDriver.CreateEndpoint",
            &json!({"NetworkID": nid, "EndpointID": random_id(),
                    "Interface": {"Address": address}}),
            says,
        );
    }
    refused(
        &socket,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": random_id(), "EndpointID": random_id(),
                "Interface": {"Address": "10.85.0.6/24"}}),
        "no netvlan network",
    );
    let info = call(
        &socket,
        "NetworkDriver.EndpointOperInfo",
        &json!({"NetworkID": nid, "EndpointID": eid}),
    );
    assert_eq!(
        info["Value"]["netvlan.mac"], "02:42:0a:55:00:05",
        "{info:#}"
    );

    // Join: the link for Docker to move, and the gateway.
    let joined = call(
        &socket,
        "NetworkDriver.Join",
        &json!({"NetworkID": nid, "EndpointID": eid,
                "SandboxKey": ctr.path(), "Options": {}}),
    );
    assert_eq!(
        joined["InterfaceName"]["SrcName"],
        link.as_str(),
        "{joined:#}"
    );
    assert_eq!(joined["InterfaceName"]["DstPrefix"], "eth");
    assert_eq!(joined["Gateway"], "10.85.0.1");
    call(
        &socket,
        "NetworkDriver.ProgramExternalConnectivity",
        &json!({"NetworkID": nid, "EndpointID": eid, "Options": {}}),
    );
    // What dockerd does next: move, rename, address and raise the link.
    lan.host.exec(
        "ip",
        &["link", "set", &link, "netns", ctr.path().to_str().unwrap()],
    );
    ctr.exec("ip", &["link", "set", &link, "name", "eth0"]);
    ctr.exec("ip", &["addr", "add", "10.85.0.5/24", "dev", "eth0"]);
    ctr.exec("ip", &["link", "set", "eth0", "up"]);
    ctr.exec("ip", &["route", "add", "default", "via", "10.85.0.1"]);
    // The plugin adopts it: its programs attached in the sandbox, so
    // `check` finds nothing amiss, and the endpoint counts its frames.
    let mut last = String::new();
    wait_for(Duration::from_secs(10), || {
        let run = lan.netvlan(&["check", "--json"]);
        last = format!("{}{}", run.stdout, run.stderr);
        run.status.success().then_some(())
    })
    .unwrap_or_else(|| panic!("the moved link was never adopted: {last}\n{}", plugin.log()));
    lan.switch
        .exec("ip", &["addr", "add", "10.85.0.1/24", "dev", "peer0"]);
    assert!(ctr.can_ping("10.85.0.1"));
    let stats = lan.netvlan(&["stats", "--json"]).ok().json();
    let counted = stats["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["addresses"].to_string().contains("10.85.0.5"))
        .unwrap_or_else(|| panic!("the endpoint is not in stats: {stats:#}"))
        .clone();
    assert_eq!(counted["ifname"], "eth0", "{counted:#}");
    assert!(counted["tx_packets"].as_u64() >= Some(1), "{counted:#}");
    let inspect = lan.inspect(&name);
    assert!(
        inspect["Containers"].get(&eid).is_some(),
        "keyed by Docker's id: {inspect:#}"
    );

    // Leave, then Docker moves the link back; DeleteEndpoint removes it.
    call(
        &socket,
        "NetworkDriver.RevokeExternalConnectivity",
        &json!({"NetworkID": nid, "EndpointID": eid}),
    );
    call(
        &socket,
        "NetworkDriver.Leave",
        &json!({"NetworkID": nid, "EndpointID": eid}),
    );
    ctr.exec("ip", &["link", "set", "eth0", "down"]);
    ctr.exec("ip", &["link", "set", "eth0", "name", &link]);
    ctr.exec(
        "ip",
        &[
            "link",
            "set",
            &link,
            "netns",
            lan.host.path().to_str().unwrap(),
        ],
    );
    call(
        &socket,
        "NetworkDriver.DeleteEndpoint",
        &json!({"NetworkID": nid, "EndpointID": eid}),
    );
    refused(
        &socket,
        "NetworkDriver.DeleteEndpoint",
        &json!({"NetworkID": nid, "EndpointID": eid}),
        &eid,
    );
    assert_eq!(lan.inspect(&name)["Containers"], json!({}));
    // The remaining calls a local driver answers.
    call(
        &socket,
        "NetworkDriver.DiscoverNew",
        &json!({"DiscoveryType": 1, "DiscoveryData": {}}),
    );
    call(
        &socket,
        "NetworkDriver.DiscoverDelete",
        &json!({"DiscoveryType": 1, "DiscoveryData": {}}),
    );
    let allocated = call(
        &socket,
        "NetworkDriver.AllocateNetwork",
        &json!({"NetworkID": nid, "IPv4Data": [], "IPv6Data": [], "Options": {}}),
    );
    assert_eq!(allocated["Options"], json!({}));
    call(
        &socket,
        "NetworkDriver.FreeNetwork",
        &json!({"NetworkID": nid}),
    );

    call(
        &socket,
        "NetworkDriver.DeleteNetwork",
        &json!({"NetworkID": nid}),
    );
    refused(
        &socket,
        "NetworkDriver.DeleteNetwork",
        &json!({"NetworkID": nid}),
        &nid,
    );
    // Nothing left: networks, links, addresses, pins, TC in the sandbox.
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        json!([])
    );
    assert_eq!(links_in(&lan.host), host_links);
    assert_eq!(addresses_in(&lan.host), host_addresses);
    assert_eq!(ctr.sorted_link_names(), vec!["lo".to_string()]);
    assert_eq!(lan.bpf.contents(), pins_before);
    drop(plugin);
    assert!(!socket.exists(), "the socket was left behind");
}

/// Sends one call as [`post`] does and closes the connection, unanswered,
/// once `midway` holds (the plugin waits at a failpoint then): Docker
/// giving up on a call (its timeout, its own restart).
/// A dockerd that dies between RequestAddress and CreateEndpoint leaves an
/// address held in netvlan's IPAM that no endpoint will take. Once the
/// grace for Docker's create has passed, `check` names it and `restore`
/// frees it, so the address is handed out again.
#[test]
fn an_address_docker_never_took_is_reported_and_freed() {
    let lan = Lan::new(false);
    let dir = OwnedDir::at(std::env::temp_dir().join(unique_name("dkp")));
    std::fs::create_dir_all(dir.path()).unwrap();
    let socket = dir.path().join("plugin.sock");
    let plugin = PluginProcess::start(&lan, &socket);
    lan.netvlan(&[
        "network",
        "create",
        "--subnet",
        "10.86.0.0/24",
        "--gateway",
        "10.86.0.1",
        "-o",
        "parent=eth0",
        "lan",
    ])
    .ok();
    let held = call(
        &socket,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": "10.86.0.0/24", "Address": "", "Options": {}}),
    );
    assert_eq!(held["Address"], "10.86.0.2/24", "{held:#}");
    // ... and no CreateEndpoint follows.
    drop(plugin);
    std::thread::sleep(Duration::from_secs(netvlan::control::HOLD_GRACE_SECS + 1));
    let run = lan.netvlan(&["check", "--json"]).failed();
    let drifts = run.json()["drifts"].clone();
    assert_eq!(
        drifts.as_array().map(Vec::len),
        Some(1),
        "the hold and nothing else: {drifts:#}"
    );
    let drift = &drifts[0];
    assert_eq!(drift["kind"], "ipam_hold_stale", "{drift:#}");
    assert_eq!(drift["object"], "10.86.0.2", "{drift:#}");
    assert!(
        drift["problem"]
            .as_str()
            .unwrap()
            .contains("no endpoint took it")
            && drift["repair"].as_str().unwrap().contains("restore"),
        "{drift:#}"
    );
    let restored = lan.netvlan(&["restore", "--json"]).ok().json();
    assert!(
        restored["actions"].to_string().contains("free 10.86.0.2"),
        "{restored:#}"
    );
    lan.netvlan(&["check"]).ok();
    // Free again: the next endpoint gets it.
    let c = lan.container(false);
    lan.netvlan(&["connect", "lan", c.name()]).ok();
    let inspected = lan.inspect_container("lan", c.name());
    assert_eq!(inspected["IPv4Address"], "10.86.0.2/24", "{inspected:#}");
    lan.netvlan(&["disconnect", "lan", c.name()]).ok();
    lan.netvlan(&["network", "rm", "lan"]).ok();
}

fn post_and_hang_up(socket: &Path, call: &str, body: &Value, mut midway: impl FnMut() -> bool) {
    let mut stream = UnixStream::connect(socket).expect("the plugin's socket accepts");
    let body = body.to_string();
    let request = format!(
        "POST /{call} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    wait_for(Duration::from_secs(60), || midway().then_some(()))
        .unwrap_or_else(|| panic!("{call} never got half-way"));
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);
}

/// The failpoints that hold CreateEndpoint and DeleteEndpoint half-way
/// (the link made, or removed) for the hang-up tests.
const HALF_WAY: &str = "stage-after-link=sleep(2000);unstage-after-link=sleep(2000)";

/// A call whose connection Docker drops half-way still runs to its end:
/// the endpoint CreateEndpoint was making is staged, the one
/// DeleteEndpoint was removing is gone, and neither leaves the journal an
/// operation to undo. The plugin waits at a failpoint after the link is
/// made (or removed); the connection is closed while it waits.
#[test]
fn a_call_runs_to_its_end_when_docker_hangs_up() {
    let lan = Lan::new(false);
    let dir = OwnedDir::at(std::env::temp_dir().join(unique_name("dkh")));
    std::fs::create_dir_all(dir.path()).unwrap();
    let socket = dir.path().join("plugin.sock");
    let pins_before = lan.bpf.contents();
    let host_links = links_in(&lan.host);
    let plugin = PluginProcess::start_with(&lan, &socket, &[("FAILPOINTS", HALF_WAY)]);
    calls_hung_up_half_way(&lan, &socket, &|| plugin.log());
    assert_eq!(links_in(&lan.host), host_links);
    assert_eq!(lan.bpf.contents(), pins_before);
    drop(plugin);
}

/// As [`a_call_runs_to_its_end_when_docker_hangs_up`], the plugin served
/// by `netvlan daemon --docker-plugin`.
#[test]
fn a_call_to_the_daemon_runs_to_its_end_when_docker_hangs_up() {
    let lan = Lan::new(false);
    let dir = OwnedDir::at(std::env::temp_dir().join(unique_name("dkd")));
    std::fs::create_dir_all(dir.path()).unwrap();
    let socket = dir.path().join("plugin.sock");
    let host_links = links_in(&lan.host);
    let daemon = Daemon::start_with_env(
        &lan.host,
        &lan,
        &[("FAILPOINTS", HALF_WAY)],
        &["--docker-plugin", socket.to_str().unwrap()],
    );
    daemon_serves_the_plugin(&daemon, &socket);
    calls_hung_up_half_way(&lan, &socket, &|| daemon.log());
    assert_eq!(links_in(&lan.host), host_links);
    drop(daemon);
}

/// CreateEndpoint then DeleteEndpoint, each hung up on half-way, on a
/// network of their own (removed after): both run to their end.
fn calls_hung_up_half_way(lan: &Lan, socket: &Path, log: &dyn Fn() -> String) {
    let socket = socket.to_path_buf();
    let nid = random_id();
    call(
        &socket,
        "NetworkDriver.CreateNetwork",
        &network_create(
            &nid,
            json!({"parent": "eth0", "macvlan_mode": "bridge"}),
            "10.85.0.0/24",
            "10.85.0.1/24",
        ),
    );
    let name = format!("docker-{}", &nid[..12]);
    // Nothing interrupted: no note from the CLI, `check` clean, the
    // plugin recovered nothing.
    let settled = || {
        let ls = lan.netvlan(&["network", "ls", "--json"]);
        assert!(ls.status.success(), "{}{}", ls.stdout, ls.stderr);
        assert!(
            !ls.stderr.contains("interrupted"),
            "the journal held an operation: {}",
            ls.stderr
        );
        let check = lan.netvlan(&["check", "--json"]);
        assert!(check.status.success(), "{}{}", check.stdout, check.stderr);
        assert!(
            !log().contains("recovered"),
            "the plugin undid a call: {}",
            log()
        );
    };

    let eid = random_id();
    let link = format!("nvd{}", &eid[..10]);
    let endpoint = json!({"NetworkID": nid, "EndpointID": eid, "Options": {},
                          "Interface": {"Address": "10.85.0.5/24"}});
    post_and_hang_up(&socket, "NetworkDriver.CreateEndpoint", &endpoint, || {
        links_in(&lan.host).contains(&link)
    });
    // The next call waits for the one before it (calls are served one at
    // a time): by then that one has ended.
    let info = json!({"NetworkID": nid, "EndpointID": eid});
    let (status, answer) = post(&socket, "NetworkDriver.EndpointOperInfo", &info.to_string());
    assert_eq!(
        status,
        200,
        "the endpoint was not staged: {answer:#}\n{}",
        log()
    );
    assert_eq!(answer["Value"]["netvlan.adopted"], false, "{answer:#}");
    assert!(links_in(&lan.host).contains(&link), "its link went");
    let inspect = lan.inspect(&name);
    assert_eq!(
        inspect["Containers"].as_object().map(|e| e.len()),
        Some(1),
        "{inspect:#}"
    );
    settled();

    post_and_hang_up(&socket, "NetworkDriver.DeleteEndpoint", &info, || {
        !links_in(&lan.host).contains(&link)
    });
    refused(&socket, "NetworkDriver.EndpointOperInfo", &info, &eid[..12]);
    let inspect = lan.inspect(&name);
    assert!(
        inspect["Containers"]
            .as_object()
            .is_none_or(|e| e.is_empty()),
        "DeleteEndpoint stopped half-way: {inspect:#}"
    );
    settled();

    call(
        &socket,
        "NetworkDriver.DeleteNetwork",
        &json!({"NetworkID": nid}),
    );
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        json!([])
    );
}

/// Join on an ipvlan l3 network: the host routes, so there is no
/// gateway; the sandbox's default route goes straight out of the link, a
/// connected `StaticRoutes` entry (as Docker's own ipvlan driver answers
/// in l3 mode). Needs ipvlan (the VM lane).
#[test]
fn join_routes_an_ipvlan_l3_endpoint_out_of_its_link() {
    if !require_kernel_feature(KernelFeature::Ipvlan) {
        return;
    }
    let lan = Lan::new(false);
    let dir = OwnedDir::at(std::env::temp_dir().join(unique_name("dkp")));
    std::fs::create_dir_all(dir.path()).unwrap();
    let socket = dir.path().join("plugin.sock");
    let ctr = lan.container(false);
    let host_links = links_in(&lan.host);
    let pins_before = lan.bpf.contents();
    let plugin = PluginProcess::start(&lan, &socket);
    let nid = random_id();
    call(
        &socket,
        "NetworkDriver.CreateNetwork",
        &network_create(
            &nid,
            json!({"parent": "eth0", "ipvlan_mode": "l3"}),
            "10.85.0.0/24",
            "10.85.0.1/24",
        ),
    );
    let eid = random_id();
    call(
        &socket,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": nid, "EndpointID": eid,
                "Interface": {"Address": "10.85.0.5/24"}, "Options": {}}),
    );
    let joined = call(
        &socket,
        "NetworkDriver.Join",
        &json!({"NetworkID": nid, "EndpointID": eid,
                "SandboxKey": ctr.path(), "Options": {}}),
    );
    assert!(joined.get("Gateway").is_none(), "{joined:#}");
    assert_eq!(
        joined["StaticRoutes"],
        json!([{"Destination": "0.0.0.0/0", "RouteType": 1}]),
        "{joined:#}\n{}",
        plugin.log()
    );
    for (name, body) in [
        ("Leave", json!({"NetworkID": nid, "EndpointID": eid})),
        (
            "DeleteEndpoint",
            json!({"NetworkID": nid, "EndpointID": eid}),
        ),
        ("DeleteNetwork", json!({"NetworkID": nid})),
    ] {
        call(&socket, &format!("NetworkDriver.{name}"), &body);
    }
    assert_eq!(
        lan.netvlan(&["network", "ls", "--json"]).ok().json(),
        json!([])
    );
    assert_eq!(links_in(&lan.host), host_links);
    assert_eq!(lan.bpf.contents(), pins_before);
    drop(plugin);
}

/// On a kernel with TCX (6.6+, the host lane) the plugin attaches the
/// endpoint programs at CreateEndpoint, before the link is moved: a frame
/// the container sends before the plugin even knows its sandbox (no Join
/// yet) is already checked (a spoofed one dropped) and counted. Adoption
/// then keeps those programs and moves their pins: the counts go on.
#[test]
fn the_first_frames_a_container_sends_are_checked_before_adoption() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut version = release.trim().split(['.', '-']).map(|p| p.parse::<u32>());
    let (major, minor) = (version.next(), version.next());
    assert!(
        matches!((major, minor), (Some(Ok(a)), Some(Ok(b))) if (a, b) >= (6, 6)),
        "this test needs TCX (kernel 6.6+), the host lane's; this kernel is {release}"
    );
    let lan = Lan::new(false);
    let dir = OwnedDir::at(std::env::temp_dir().join(unique_name("dkq")));
    std::fs::create_dir_all(dir.path()).unwrap();
    let socket = dir.path().join("plugin.sock");
    let ctr = lan.container(false);
    let host_links = links_in(&lan.host);
    let pins_before = lan.bpf.contents();
    let plugin = PluginProcess::start(&lan, &socket);
    let nid = random_id();
    call(
        &socket,
        "NetworkDriver.CreateNetwork",
        &network_create(
            &nid,
            json!({"parent": "eth0"}),
            "10.85.0.0/24",
            "10.85.0.1/24",
        ),
    );
    let eid = random_id();
    call(
        &socket,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": nid, "EndpointID": eid,
                "Interface": {"Address": "10.85.0.5/24"}, "Options": {}}),
    );
    let link = format!("nvd{}", &eid[..10]);
    // What dockerd does after Join, done before it: the plugin has no
    // sandbox to watch yet.
    lan.host.exec(
        "ip",
        &["link", "set", &link, "netns", ctr.path().to_str().unwrap()],
    );
    ctr.exec("ip", &["link", "set", &link, "name", "eth0"]);
    ctr.exec("ip", &["addr", "add", "10.85.0.5/24", "dev", "eth0"]);
    ctr.exec("ip", &["link", "set", "eth0", "up"]);
    ctr.exec("ip", &["route", "add", "default", "via", "10.85.0.1"]);
    let me = ctr.mac("eth0");
    let wire = PacketSocket::listen(&lan.switch, "peer0");
    let out = PacketSocket::open(&ctr, "eth0");
    let legit = ipv4_frame(BROADCAST, me, [10, 85, 0, 5], [10, 85, 0, 1], 64);
    let spoofed = ipv4_frame(BROADCAST, me, [10, 85, 0, 77], [10, 85, 0, 1], 64);
    out.send(&legit);
    out.send_maybe_dropped(&spoofed);
    wait_for(Duration::from_secs(3), || {
        wire.received().contains(&legit).then_some(())
    })
    .expect("the legitimate frame never reached the LAN");
    let before_join = endpoint_stats(&lan, "10.85.0.5", 1);
    assert_eq!(before_join["spoofed_packets"], 1, "{before_join:#}");
    assert!(
        !wire.received().contains(&spoofed),
        "the spoofed frame reached the LAN"
    );

    // Join: the plugin adopts the link in the sandbox, keeping the
    // programs that came with it (their counters go on).
    call(
        &socket,
        "NetworkDriver.Join",
        &json!({"NetworkID": nid, "EndpointID": eid,
                "SandboxKey": ctr.path(), "Options": {}}),
    );
    let mut last = String::new();
    wait_for(Duration::from_secs(10), || {
        let run = lan.netvlan(&["check", "--json"]);
        last = format!("{}{}", run.stdout, run.stderr);
        let adopted = call(
            &socket,
            "NetworkDriver.EndpointOperInfo",
            &json!({"NetworkID": nid, "EndpointID": eid}),
        )["Value"]["netvlan.adopted"]
            == true;
        (run.status.success() && adopted).then_some(())
    })
    .unwrap_or_else(|| panic!("the moved link was never adopted: {last}\n{}", plugin.log()));
    out.send(&legit);
    let adopted = endpoint_stats(&lan, "10.85.0.5", 2);
    assert_eq!(adopted["spoofed_packets"], 1, "{adopted:#}");
    assert_eq!(adopted["ifname"], "eth0", "{adopted:#}");

    call(
        &socket,
        "NetworkDriver.Leave",
        &json!({"NetworkID": nid, "EndpointID": eid}),
    );
    ctr.exec("ip", &["link", "set", "eth0", "down"]);
    ctr.exec("ip", &["link", "set", "eth0", "name", &link]);
    ctr.exec(
        "ip",
        &[
            "link",
            "set",
            &link,
            "netns",
            lan.host.path().to_str().unwrap(),
        ],
    );
    call(
        &socket,
        "NetworkDriver.DeleteEndpoint",
        &json!({"NetworkID": nid, "EndpointID": eid}),
    );
    call(
        &socket,
        "NetworkDriver.DeleteNetwork",
        &json!({"NetworkID": nid}),
    );
    assert_eq!(links_in(&lan.host), host_links);
    assert_eq!(ctr.sorted_link_names(), vec!["lo".to_string()]);
    assert_eq!(lan.bpf.contents(), pins_before);
}

/// Debian's dockerd in the lab's host namespace: data, exec root, socket
/// and pidfile in a temp dir; the plugin `name` found through
/// `/etc/docker/plugins/NAME.spec`. On drop: every container removed,
/// dockerd (and the containerd it started) stopped by PID, and the files
/// it or the test made outside the temp dir removed.
struct Dockerd {
    child: Child,
    dir: OwnedDir,
    host: PathBuf,
    spec: PathBuf,
    /// Paths outside the temp dir this test created (deepest last).
    created: Vec<PathBuf>,
}

const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client, matching its daemon (a newer one may be first on PATH).
const DOCKER: &str = "/usr/bin/docker";

impl Dockerd {
    /// `docker run -d` of a busybox that sleeps, on `network`, at `ip` if
    /// given (else Docker's IPAM picks): the container's name.
    fn run_sleeping(&self, network: &str, ip: Option<&str>) -> String {
        match ip {
            Some(ip) => self.run_sleeping_with(network, &["--ip", ip]),
            None => self.run_sleeping_with(network, &[]),
        }
    }

    /// [`Dockerd::run_sleeping`] with more `docker run` options (`--ip6`).
    fn run_sleeping_with(&self, network: &str, options: &[&str]) -> String {
        let ctr = unique_name("ctr");
        let mut args = vec!["run", "-d", "--name", &ctr, "--network", network];
        args.extend(options);
        args.extend(["nvt-busybox", "sleep", "300"]);
        self.ok(&args);
        ctr
    }

    fn start(lan: &Lan, plugin_name: &str, plugin_socket: &Path) -> Dockerd {
        assert!(
            Path::new(DOCKERD).is_file(),
            "{DOCKERD} is missing: install Debian's docker.io (cargo xtask test does)"
        );
        let dir = OwnedDir::at(std::env::temp_dir().join(unique_name("dockerd")));
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(&root).unwrap();
        let mut created = Vec::new();
        for path in [
            "/etc/docker",
            "/etc/docker/plugins",
            "/etc/docker/key.json",
            // dockerd's plugin directories.
            "/run/docker",
            "/run/docker/plugins",
        ] {
            if !Path::new(path).exists() {
                created.push(PathBuf::from(path));
            }
        }
        std::fs::create_dir_all("/etc/docker/plugins").unwrap();
        let spec = PathBuf::from(format!("/etc/docker/plugins/{plugin_name}.spec"));
        std::fs::write(&spec, format!("unix://{}\n", plugin_socket.display())).unwrap();
        let log = std::fs::File::create(root.join("dockerd.log")).unwrap();
        let child = lan
            .host
            .command(DOCKERD)
            .arg(format!("--data-root={}", root.join("data").display()))
            .arg(format!("--exec-root={}", root.join("exec").display()))
            .arg(format!("--pidfile={}", root.join("dockerd.pid").display()))
            .arg(format!(
                "--host=unix://{}",
                root.join("docker.sock").display()
            ))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--storage-driver=vfs",
                "--exec-opt=native.cgroupdriver=cgroupfs",
                "--userland-proxy=false",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd starts");
        let dockerd = Dockerd {
            child,
            dir,
            host: lan.host.path(),
            spec,
            created,
        };
        wait_for(Duration::from_secs(60), || {
            dockerd.run(&["version"]).status.success().then_some(())
        })
        .unwrap_or_else(|| panic!("dockerd did not come up: {}", dockerd.log()));
        // A busybox image made here (no registry).
        let rootfs = root.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("a static busybox (Debian's busybox-static)");
        for applet in ["sh", "ping", "ping6", "sleep", "ip"] {
            std::os::unix::fs::symlink("busybox", rootfs.join(format!("bin/{applet}"))).unwrap();
        }
        let tar = root.join("rootfs.tar");
        netvlan_tests::sh(
            "tar",
            &[
                "-C",
                rootfs.to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ],
        );
        dockerd.ok(&["import", tar.to_str().unwrap(), "nvt-busybox"]);
        dockerd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.host.display()))
            .arg("--")
            .arg(DOCKER)
            .arg(format!(
                "--host=unix://{}",
                self.dir.path().join("docker.sock").display()
            ))
            .args(args)
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .stdin(Stdio::null())
            .output()
            .expect("the docker client runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {} failed: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn failed(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "docker {} should have failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.run(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.run(&["rm", "-f", id]);
        }
        // SIGTERM: dockerd stops the containerd it started, then itself.
        let pid = self.child.id() as i32;
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let stopped = wait_for(Duration::from_secs(30), || {
            matches!(self.child.try_wait(), Ok(Some(_))).then_some(())
        });
        if stopped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.spec);
        // Children before their parents.
        self.created
            .sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for path in &self.created {
            let _ = if path.is_dir() {
                std::fs::remove_dir(path)
            } else {
                std::fs::remove_file(path)
            };
        }
        // The exec root holds dockerd's namespace mounts; unmount before
        // the temp dir goes.
        let exec = self.dir.path().join("exec");
        let _ = Command::new("umount")
            .args(["-R", "--lazy"])
            .arg(&exec)
            .stderr(Stdio::null())
            .status();
    }
}

/// The endpoint in `netvlan stats --json` holding `address`, once its
/// counters show at least `sent` frames it sent.
fn endpoint_stats(lan: &Lan, address: &str, sent: u64) -> Value {
    let mut last = Value::Null;
    wait_for(Duration::from_secs(10), || {
        last = lan.netvlan(&["stats", "--json"]).ok().json();
        last["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["addresses"].to_string().contains(address))
            .filter(|e| e["tx_packets"].as_u64() >= Some(sent))
            .cloned()
    })
    .unwrap_or_else(|| panic!("no endpoint {address} with {sent} frames sent in stats: {last:#}"))
}

/// The lab for the engine tests: a LAN whose switch side has 10.86.0.1,
/// the plugin under a unique name and dockerd using it.
struct Engine {
    /// One engine at a time: dockerd's files outside its temp dir
    /// (`/etc/docker`, `/run/docker`) are shared.
    _one: std::sync::MutexGuard<'static, ()>,
    lan: Lan,
    plugin_dir: OwnedDir,
    plugin_name: String,
    host_links: Vec<String>,
    host_addresses: Vec<String>,
}

impl Engine {
    fn new() -> (Engine, PluginProcess, Dockerd) {
        Engine::with_ipv6(false)
    }

    /// `ipv6`: IPv6 on in the lab's namespaces (the switch side then has
    /// fd86::1/64 too).
    fn with_ipv6(ipv6: bool) -> (Engine, PluginProcess, Dockerd) {
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let one = ONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let lan = Lan::new(ipv6);
        if ipv6 {
            lan.switch.exec(
                "ip",
                &["-6", "addr", "add", "fd86::1/64", "dev", "peer0", "nodad"],
            );
        }
        lan.switch
            .exec("ip", &["addr", "add", "10.86.0.1/24", "dev", "peer0"]);
        let plugin_dir = OwnedDir::at(std::env::temp_dir().join(unique_name("dkp")));
        std::fs::create_dir_all(plugin_dir.path()).unwrap();
        let plugin_name = unique_name("nvd");
        let engine = Engine {
            _one: one,
            host_links: links_in(&lan.host),
            host_addresses: addresses_in(&lan.host),
            lan,
            plugin_dir,
            plugin_name,
        };
        let plugin = engine.start_plugin();
        let dockerd = Dockerd::start(&engine.lan, &engine.plugin_name, &engine.socket());
        (engine, plugin, dockerd)
    }

    fn socket(&self) -> PathBuf {
        self.plugin_dir.path().join("plugin.sock")
    }

    fn start_plugin(&self) -> PluginProcess {
        PluginProcess::start(&self.lan, &self.socket())
    }

    fn create_network(&self, dockerd: &Dockerd, net: &str) {
        dockerd.ok(&[
            "network",
            "create",
            "-d",
            &self.plugin_name,
            "-o",
            "parent=eth0",
            "--subnet",
            "10.86.0.0/24",
            "--gateway",
            "10.86.0.1",
            net,
        ]);
    }

    /// A network the CLI makes on the LAN (10.86.0.0/24, gateway
    /// 10.86.0.1), for Docker to share: its name.
    fn cli_network(&self) -> String {
        let name = unique_name("lan");
        self.lan
            .netvlan(&[
                "network",
                "create",
                "--subnet",
                "10.86.0.0/24",
                "--gateway",
                "10.86.0.1",
                "-o",
                "parent=eth0",
                &name,
            ])
            .ok();
        name
    }

    /// `netvlan check` finds the store and the kernel agreeing; `log` (the
    /// plugin's) goes into the failure message.
    fn assert_checked(&self, log: &str) {
        let check = self.lan.netvlan(&["check", "--json"]);
        assert!(
            check.status.success(),
            "check: {}{}\n{log}",
            check.stdout,
            check.stderr
        );
    }

    /// `docker rm -f` of `containers`, `docker network rm` of `network`,
    /// and nothing of netvlan's is left.
    fn remove(&self, dockerd: &Dockerd, containers: &[&str], network: &str) {
        let mut rm = vec!["rm", "-f"];
        rm.extend(containers);
        dockerd.ok(&rm);
        dockerd.ok(&["network", "rm", network]);
        self.assert_clean();
    }

    /// Nothing of netvlan's left in the lab's host namespace.
    fn assert_clean(&self) {
        assert_eq!(
            self.lan.netvlan(&["network", "ls", "--json"]).ok().json(),
            json!([])
        );
        assert_eq!(
            links_in(&self.lan.host),
            self.host_links,
            "links left behind"
        );
        assert_eq!(addresses_in(&self.lan.host), self.host_addresses);
        assert_eq!(
            self.lan.bpf.contents(),
            Vec::<String>::new(),
            "pins left behind"
        );
    }
}

#[test]
fn docker_runs_a_container_on_a_netvlan_network() {
    let (engine, plugin, dockerd) = Engine::new();
    // Bad options: Docker shows the plugin's message, nothing is made.
    let err = dockerd.failed(&[
        "network",
        "create",
        "-d",
        &engine.plugin_name,
        "--subnet",
        "10.86.0.0/24",
        "nvbad",
    ]);
    assert!(err.contains("parent is missing"), "{err}");
    let err = dockerd.failed(&[
        "network",
        "create",
        "-d",
        &engine.plugin_name,
        "-o",
        "parent=eth0",
        "-o",
        "macvlan_mode=sideways",
        "--subnet",
        "10.86.0.0/24",
        "nvbad",
    ]);
    assert!(err.contains("sideways"), "{err}");
    engine.assert_clean();

    let net = unique_name("net");
    engine.create_network(&dockerd, &net);
    // A second network overlapping it is refused by netvlan.
    let err = dockerd.failed(&[
        "network",
        "create",
        "-d",
        &engine.plugin_name,
        "-o",
        "parent=eth0",
        "--subnet",
        "10.86.0.0/25",
        "nvover",
    ]);
    assert!(err.contains("overlap"), "{err}");
    // `docker run --rm` pings the LAN namespace.
    let out = dockerd.ok(&[
        "run",
        "--rm",
        "--network",
        &net,
        "nvt-busybox",
        "ping",
        "-c",
        "3",
        "-W",
        "5",
        "10.86.0.1",
    ]);
    assert!(out.contains("3 packets received"), "{out}");
    // A running container: counted per endpoint, in inspect under its
    // endpoint id, and its MAC is Docker's from the address.
    let ctr = dockerd.run_sleeping(&net, Some("10.86.0.7"));
    dockerd.ok(&["exec", &ctr, "ping", "-c", "3", "-W", "5", "10.86.0.1"]);
    let counted = endpoint_stats(&engine.lan, "10.86.0.7", 3);
    assert_eq!(counted["ifname"], "eth0", "{counted:#}");
    let links = dockerd.ok(&["exec", &ctr, "ip", "link", "show", "eth0"]);
    assert!(links.contains("02:42:0a:56:00:07"), "{links}");
    engine.assert_checked(&plugin.log());
    // `restore` finds the adopted endpoint whole: nothing to do.
    let restored = engine.lan.netvlan(&["restore", "--json"]).ok().json();
    assert_eq!(restored, json!({"actions": []}), "{restored:#}");
    let listed = engine.lan.netvlan(&["network", "ls", "--json"]).ok().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed:#}");

    engine.remove(&dockerd, &[&ctr], &net);
    drop(plugin);
}

/// The netvlan network behind Docker network `id` (as `docker network
/// create` printed it), from `network inspect`.
fn inspect_docker_network(lan: &Lan, id: &str) -> Value {
    lan.inspect(&format!("docker-{}", &id[..12]))
}

/// `--ipv6` with an IPv6 pool beside the IPv4 one: the container gets its
/// address from each, a default route per family through the pools'
/// gateways (Join's `Gateway` and `GatewayIPv6`), reaches the LAN over
/// both families and is reached from it over IPv6 (neighbour discovery
/// through the wire program); its endpoint is counted, and `docker network
/// rm` leaves nothing.
#[test]
fn docker_runs_a_dual_stack_container() {
    let (engine, plugin, dockerd) = Engine::with_ipv6(true);
    let net = unique_name("net6");
    let id = dockerd.ok(&[
        "network",
        "create",
        "-d",
        &engine.plugin_name,
        "-o",
        "parent=eth0",
        "--ipv6",
        "--subnet",
        "10.86.0.0/24",
        "--gateway",
        "10.86.0.1",
        "--subnet",
        "fd86::/64",
        "--gateway",
        "fd86::1",
        &net,
    ]);
    let inspected = inspect_docker_network(&engine.lan, &id);
    assert_eq!(inspected["EnableIPv6"], true, "{inspected:#}");
    let ctr = dockerd.run_sleeping_with(&net, &["--ip", "10.86.0.8", "--ip6", "fd86::8"]);
    let addresses = dockerd.ok(&["exec", &ctr, "ip", "addr", "show", "eth0"]);
    for address in ["10.86.0.8/24", "fd86::8/64"] {
        assert!(addresses.contains(address), "{address}: {addresses}");
    }
    let routes = dockerd.ok(&["exec", &ctr, "ip", "-6", "route"]);
    assert!(routes.contains("default via fd86::1"), "{routes}");
    for (ping, to) in [("ping", "10.86.0.1"), ("ping6", "fd86::1")] {
        let out = dockerd.ok(&["exec", &ctr, ping, "-c", "3", "-W", "5", to]);
        assert!(out.contains("3 packets received"), "{ping} {to}: {out}");
    }
    assert!(
        engine.lan.switch.can_ping("fd86::8"),
        "the LAN does not reach the container over IPv6\n{}",
        plugin.log()
    );
    let counted = endpoint_stats(&engine.lan, "fd86::8", 6);
    assert!(
        counted["addresses"].to_string().contains("10.86.0.8"),
        "one endpoint holds both addresses: {counted:#}"
    );
    engine.assert_checked("");

    engine.remove(&dockerd, &[&ctr], &net);
    drop(plugin);
}

/// `--internal` without a parent: netvlan's placeholder parent carries the
/// network, its containers reach each other and nothing else (no default
/// route; the LAN's namespace holds an address of the subnet and is not
/// reached), and `docker network rm` takes the placeholder away.
#[test]
fn docker_runs_an_internal_network_on_a_placeholder_parent() {
    let (engine, plugin, dockerd) = Engine::new();
    engine
        .lan
        .switch
        .exec("ip", &["addr", "add", "10.87.0.1/24", "dev", "peer0"]);
    let net = unique_name("inner");
    let id = dockerd.ok(&[
        "network",
        "create",
        "-d",
        &engine.plugin_name,
        "--internal",
        "--subnet",
        "10.87.0.0/24",
        &net,
    ]);
    let inspected = inspect_docker_network(&engine.lan, &id);
    assert_eq!(inspected["Internal"], true, "{inspected:#}");
    assert_eq!(
        inspected["Netvlan"]["ParentKind"], "placeholder",
        "{inspected:#}"
    );
    let placeholder = inspected["Netvlan"]["Parent"].as_str().unwrap();
    assert!(
        links_in(&engine.lan.host).iter().any(|l| l == placeholder),
        "placeholder {placeholder} missing"
    );
    let a = dockerd.run_sleeping(&net, Some("10.87.0.5"));
    let b = dockerd.run_sleeping(&net, Some("10.87.0.6"));
    let out = dockerd.ok(&["exec", &a, "ping", "-c", "3", "-W", "5", "10.87.0.6"]);
    assert!(out.contains("3 packets received"), "{out}");
    let routes = dockerd.ok(&["exec", &a, "ip", "route"]);
    assert!(
        !routes.contains("default"),
        "internal, yet routed: {routes}"
    );
    let lan_side = dockerd.run(&["exec", &a, "ping", "-c", "1", "-W", "2", "10.87.0.1"]);
    assert!(
        !lan_side.status.success(),
        "an internal network reached the LAN: {}",
        String::from_utf8_lossy(&lan_side.stdout)
    );
    endpoint_stats(&engine.lan, "10.87.0.5", 3);

    engine.remove(&dockerd, &[&a, &b], &net);
    drop(plugin);
}

/// `-o name=` puts Docker on a network the CLI made: a Docker container
/// and a CLI endpoint on one netvlan network reach each other, `netvlan
/// network inspect` lists both, and `docker network rm` gives the network
/// back to the CLI with its endpoint. A request that does not fit the
/// network is refused naming what differs, and changes nothing.
#[test]
fn a_network_the_cli_made_is_shared_with_docker_by_name() {
    let (engine, plugin, dockerd) = Engine::new();
    let lan = &engine.lan;
    let shared = engine.cli_network();
    let named = format!("name={shared}");
    let cli = lan.container(false);
    let cli_sandbox = cli.path().display().to_string();
    lan.netvlan(&["connect", "--ip", "10.86.0.20", &shared, &cli_sandbox])
        .ok();
    let before = lan.inspect(&shared);

    let err = dockerd.failed(&[
        "network",
        "create",
        "-d",
        &engine.plugin_name,
        "-o",
        &named,
        "--subnet",
        "10.99.0.0/24",
        "nvmismatch",
    ]);
    assert!(
        err.contains("cannot be shared") && err.contains("10.86.0.0/24"),
        "{err}"
    );
    assert_eq!(lan.inspect(&shared), before, "a refused share changed it");

    // Docker's IPAM hands out the upper half; the CLI's endpoint is below.
    let dnet = unique_name("dnet");
    dockerd.ok(&[
        "network",
        "create",
        "-d",
        &engine.plugin_name,
        "-o",
        &named,
        "--subnet",
        "10.86.0.0/24",
        "--gateway",
        "10.86.0.1",
        "--ip-range",
        "10.86.0.128/25",
        &dnet,
    ]);
    let inspect = lan.inspect(&shared);
    assert_eq!(
        inspect["Labels"]["netvlan.docker.shared"], "1",
        "{inspect:#}"
    );
    let ctr = dockerd.run_sleeping(&dnet, Some("10.86.0.130"));
    let out = dockerd.ok(&["exec", &ctr, "ping", "-c", "3", "-W", "5", "10.86.0.20"]);
    assert!(out.contains("3 packets received"), "{out}");
    let inspect = lan.inspect(&shared);
    assert_eq!(
        inspect["Containers"].as_object().map(|c| c.len()),
        Some(2),
        "the CLI's endpoint and Docker's on one network: {inspect:#}"
    );
    let listed = lan.netvlan(&["network", "ls", "--json"]).ok().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed:#}");
    // Docker's endpoint is adopted on the shared network as on its own.
    let counted = endpoint_stats(lan, "10.86.0.130", 3);
    assert_eq!(counted["ifname"], "eth0", "{counted:#}");
    engine.assert_checked(&plugin.log());

    dockerd.ok(&["rm", "-f", &ctr]);
    dockerd.ok(&["network", "rm", &dnet]);
    let after = lan.inspect(&shared);
    assert!(
        after["Labels"].get("netvlan.docker.network").is_none()
            && after["Labels"].get("netvlan.docker.shared").is_none(),
        "{after:#}"
    );
    assert_eq!(
        after["Containers"], before["Containers"],
        "the CLI's endpoint is all that is left"
    );
    let ping = cli.exec("ping", &["-c", "1", "-W", "5", "10.86.0.1"]);
    assert!(ping.status.success(), "the CLI's endpoint lost the LAN");

    lan.netvlan(&["disconnect", &shared, &cli_sandbox]).ok();
    lan.netvlan(&["network", "rm", &shared]).ok();
    engine.assert_clean();
    drop(plugin);
}

/// The address Docker gave container `ctr` (on its one network).
fn docker_address(dockerd: &Dockerd, ctr: &str) -> String {
    dockerd
        .ok(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            ctr,
        ])
        .trim()
        .to_string()
}

/// `--ipam-driver` with the plugin's name: Docker's addresses come from
/// netvlan's IPAM. On a network shared with the CLI, Docker and the CLI
/// take addresses from one allocator (never one twice, each skips the
/// other's); a Docker network of its own gets the first address as its
/// gateway and honours `--ip-range`; without `--subnet` it is refused
/// saying so; removing containers and networks gives every address back.
#[test]
fn docker_takes_its_addresses_from_netvlans_ipam() {
    let (engine, plugin, dockerd) = Engine::new();
    let lan = &engine.lan;
    let driver = engine.plugin_name.as_str();
    let err = dockerd.failed(&[
        "network",
        "create",
        "-d",
        driver,
        "--ipam-driver",
        driver,
        "-o",
        "parent=eth0",
        "nvnosubnet",
    ]);
    assert!(err.contains("--subnet"), "{err}");
    engine.assert_clean();

    // Shared with the CLI: one allocator for both.
    let shared = engine.cli_network();
    let sandbox = |ns: &Netns| ns.path().display().to_string();
    let (first, second, third) = (
        lan.container(false),
        lan.container(false),
        lan.container(false),
    );
    lan.netvlan(&["connect", &shared, &sandbox(&first)]).ok();
    let dnet = unique_name("dnet");
    dockerd.ok(&[
        "network",
        "create",
        "-d",
        driver,
        "--ipam-driver",
        driver,
        "-o",
        &format!("name={shared}"),
        "--subnet",
        "10.86.0.0/24",
        "--gateway",
        "10.86.0.1",
        &dnet,
    ]);
    let ctr = dockerd.run_sleeping(&dnet, None);
    assert_eq!(
        docker_address(&dockerd, &ctr),
        "10.86.0.3",
        "Docker's first address skips the CLI's 10.86.0.2"
    );
    lan.netvlan(&["connect", &shared, &sandbox(&second)]).ok();
    let entry = netvlan_tests::container_entry(&lan.inspect(&shared), &sandbox(&second));
    assert_eq!(
        entry["IPv4Address"], "10.86.0.4/24",
        "the CLI skips Docker's: {entry:#}"
    );
    let out = dockerd.ok(&["exec", &ctr, "ping", "-c", "3", "-W", "5", "10.86.0.2"]);
    assert!(out.contains("3 packets received"), "{out}");
    dockerd.ok(&["rm", "-f", &ctr]);
    // Docker gave its address back: the CLI can take it.
    lan.netvlan(&["connect", "--ip", "10.86.0.3", &shared, &sandbox(&third)])
        .ok();
    dockerd.ok(&["network", "rm", &dnet]);
    for ns in [&first, &second, &third] {
        lan.netvlan(&["disconnect", &shared, &sandbox(ns)]).ok();
    }
    lan.netvlan(&["network", "rm", &shared]).ok();
    engine.assert_clean();

    // A network of Docker's own, named, with an --ip-range.
    let own = unique_name("own");
    dockerd.ok(&[
        "network",
        "create",
        "-d",
        driver,
        "--ipam-driver",
        driver,
        "-o",
        "parent=eth0",
        "-o",
        &format!("name={own}"),
        "--subnet",
        "10.87.0.0/24",
        "--ip-range",
        "10.87.0.64/26",
        &own,
    ]);
    let inspect = lan.inspect(&own);
    assert_eq!(
        inspect["IPAM"]["Config"][0]["Gateway"], "10.87.0.1",
        "{inspect:#}"
    );
    let ctr = dockerd.run_sleeping(&own, None);
    assert_eq!(docker_address(&dockerd, &ctr), "10.87.0.65");
    engine.remove(&dockerd, &[&ctr], &own);
    drop(plugin);
}

/// The daemon's `/v1/status` once it says its Docker plugin is serving
/// on `socket` and the socket accepts.
fn daemon_serves_the_plugin(daemon: &Daemon, socket: &Path) -> Value {
    let mut last = Value::Null;
    wait_for(Duration::from_secs(20), || {
        let (code, body) = daemon.api("/v1/status");
        last = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (code == 200
            && last["docker_plugin"]["serving"] == true
            && UnixStream::connect(socket).is_ok())
        .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the daemon never served the plugin: {last:#}\n{}",
            daemon.log()
        )
    });
    last
}

/// A standalone plugin crashes while a container runs; `netvlan daemon
/// --docker-plugin` takes over its socket, serves new containers, is
/// itself SIGKILLed (packets still flow and are counted) and restarted,
/// serves the removals, and takes its socket away on SIGTERM.
#[test]
fn a_plugin_restart_while_a_container_runs_loses_nothing() {
    let (engine, plugin, dockerd) = Engine::new();
    let net = unique_name("net");
    engine.create_network(&dockerd, &net);
    let ctr = dockerd.run_sleeping(&net, Some("10.86.0.9"));
    dockerd.ok(&["exec", &ctr, "ping", "-c", "2", "-W", "5", "10.86.0.1"]);
    let before = endpoint_stats(&engine.lan, "10.86.0.9", 2)["tx_packets"]
        .as_u64()
        .unwrap();
    // A crash, then the daemon serves the plugin on the same socket.
    plugin.kill();
    let socket = engine.socket();
    let mut daemon = Daemon::start(&engine.lan, &["--docker-plugin", socket.to_str().unwrap()]);
    let status = daemon_serves_the_plugin(&daemon, &socket);
    assert_eq!(
        status["docker_plugin"]["socket"],
        socket.to_str().unwrap(),
        "{status:#}"
    );
    // A second daemon for the same socket is refused, naming it, and
    // leaves the first one's socket alone.
    let second = daemon.try_second(&engine.lan);
    let refusal = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{refusal}");
    assert!(
        refusal.contains(&format!(
            "cannot serve Docker's network driver: the plugin's socket {}: another plugin is serving it",
            socket.display()
        )),
        "{refusal}"
    );
    daemon_serves_the_plugin(&daemon, &socket);
    dockerd.ok(&["exec", &ctr, "ping", "-c", "3", "-W", "5", "10.86.0.1"]);
    let before = endpoint_stats(&engine.lan, "10.86.0.9", before + 3)["tx_packets"]
        .as_u64()
        .unwrap();
    // A new container through the daemon's plugin reaches the LAN and is
    // counted (its link adopted by the daemon).
    let out = dockerd.ok(&[
        "run",
        "--rm",
        "--network",
        &net,
        "--ip",
        "10.86.0.11",
        "nvt-busybox",
        "ping",
        "-c",
        "3",
        "-W",
        "5",
        "10.86.0.1",
    ]);
    assert!(
        out.contains("3 packets received"),
        "{out}\n{}",
        daemon.log()
    );
    // The daemon killed: the running container loses nothing.
    daemon.stop_with(libc::SIGKILL);
    dockerd.ok(&["exec", &ctr, "ping", "-c", "3", "-W", "5", "10.86.0.1"]);
    endpoint_stats(&engine.lan, "10.86.0.9", before + 3);
    daemon.restart(&engine.lan);
    daemon_serves_the_plugin(&daemon, &socket);
    engine.assert_checked("");
    // The restarted daemon serves the removal.
    engine.remove(&dockerd, &[&ctr], &net);
    // A graceful stop takes the plugin's socket away.
    let stopped = daemon.stop_with(libc::SIGTERM);
    assert!(stopped.success(), "{stopped:?}\n{}", daemon.log());
    assert!(!socket.exists(), "the plugin's socket outlived the daemon");
}
