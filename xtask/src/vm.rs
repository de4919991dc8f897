//! The VM lane: the privileged integration tests inside Debian's cloud
//! kernel under QEMU.
//!
//! The host kernel has no 802.1Q, ipvlan or dummy links and is newer than
//! most production hosts. Debian 12's own kernel series (6.1 LTS) has all
//! three as modules and predates TCX, so it is both the "full features" and
//! the "older kernel" half of the matrix.
//!
//! Steps: fetch the kernel package with `apt-get download` (cached under
//! `target/vm`), build the test binaries, pack them with busybox, iproute2,
//! ethtool, nsenter, their shared libraries and the modules into an
//! initramfs whose `/init` runs the tests and prints one result line, boot
//! it with `qemu-system-x86_64 -accel tcg` (KVM hangs on these hosts) and
//! no network device, and read the console.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    cmd,
    lane::{build_test_netvlan, print_table, Tally},
    tools, workspace_root,
};

/// Debian packages the VM lane needs on the host.
const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "iproute2",
    "ethtool",
    "util-linux",
    "binutils",
    "iputils-ping",
    "bpftool",
    "tcpdump",
    "tshark",
];

/// Kernel modules the tests need, loaded with their dependencies. Modules
/// built into the kernel are fine; missing ones are an error.
const MODULES: &[&str] = &[
    "veth",
    "macvlan",
    "8021q",
    "ipvlan",
    "dummy",
    "sch_ingress",
    "cls_bpf",
];

/// Host programs copied into the initramfs (with their libraries). The
/// tests need the real iproute2 (`ip -j`), not busybox's applet.
/// `tc` and `bpftool` show and change TC and BPF objects by hand (the
/// rollback snapshots, `netvlan check`'s drift tests). `curl` asks the
/// daemon's HTTP side and its API socket; `tcpdump` and `tshark` read back
/// `netvlan trace --pcap` captures.
const HOST_PROGRAMS: &[&str] = &[
    "ip", "tc", "bpftool", "ethtool", "nsenter", "ping", "curl", "tcpdump", "tshark",
];

/// The reference CNI plugins (Debian's containernetworking-plugins, static
/// Go binaries) the CNI suite's ipvlan tests run beside netvlan-cni.
const CNI_PLUGINS: &[&str] = &["ipvlan", "host-local"];

/// Which tests of a suite the VM lane runs.
#[derive(Clone, Copy, Debug)]
enum VmTests {
    /// Every test: the suite is about what the older kernel changes
    /// (clsact instead of TCX, the 6.1 verifier, memlock estimates, XDP
    /// and TC program swaps, ring buffers).
    All,
    /// Only the tests whose name contains one of these: the suite checks
    /// the control plane's own logic, which no kernel feature changes,
    /// except where it needs 802.1Q, ipvlan or dummy links (the host
    /// kernel has none of them).
    Named(&'static [&'static str]),
}

/// The suites the VM lane runs: only what needs its kernel (CI's time
/// budget; under TCG a test costs about ten times what it does on the
/// host). A suite not listed runs on the host lane only: the CLI's shapes
/// and errors, routes across networks, the demo, the daemon's HTTP side,
/// promtool and Prometheus, the page in Chromium, `stats --watch`,
/// namespace scoping, the connect's BTF reads, host access on macvlan, the
/// package and the CNI plugin.
const VM_SUITES: &[(&str, VmTests)] = &[
    ("check", VmTests::All),
    // ipvlan configs, beside the reference ipvlan plugin (the host kernel
    // has no ipvlan).
    ("cni", VmTests::Named(&["ipvlan_"])),
    // The datapath without its daemon, and aya-log's records off 6.1's
    // ring; the API and CLI tests are the kernel's business nowhere.
    (
        "daemon",
        VmTests::Named(&["a_killed_daemon_", "debug_records_reach"]),
    ),
    ("datapath", VmTests::All),
    ("differential", VmTests::All),
    // Adoption after the move (clsact: 6.1 has no TCX); no dockerd.
    (
        "docker",
        VmTests::Named(&[
            "every_call_of_the_protocol_on_a_raw_socket",
            "join_routes_an_ipvlan_l3_endpoint_out_of_its_link",
        ]),
    ),
    ("endpoint_counters", VmTests::All),
    ("fastpath", VmTests::All),
    ("hairpin", VmTests::All),
    ("hook", VmTests::All),
    ("host_access", VmTests::Named(&["ipvlan_"])),
    ("links", VmTests::Named(&["dummy_", "ipvlan_", "vlan_"])),
    ("network", VmTests::Named(&["vlan_"])),
    ("pins", VmTests::All),
    (
        "policy",
        VmTests::Named(&["qinq", "guards_on_one_parent", "ipvlan_"]),
    ),
    ("policy_scope", VmTests::Named(&["own_vlans"])),
    ("restart", VmTests::All),
    ("spoofing", VmTests::All),
    ("trace", VmTests::All),
    ("upgrade_endpoints", VmTests::All),
];

/// Line the guest prints once, last; everything else on the console is log.
const RESULT_MARKER: &str = "NETVLAN-VM-RESULT";

/// Upper bound for one boot, against a hung guest. TCG runs the suite in
/// about a quarter of an hour on an idle 2-core machine and takes twice
/// that when the machine is busy; CI's own limit is far above this.
const BOOT_TIMEOUT: Duration = Duration::from_secs(40 * 60);

#[derive(clap::Args, Debug, Default)]
pub struct VmArgs {
    /// Kernel to boot: a package name (linux-image-…-cloud-amd64-unsigned),
    /// a downloaded .deb, or a vmlinuz whose modules sit in
    /// ../lib/modules. Default: the newest Debian 6.1 cloud kernel.
    #[arg(long)]
    pub kernel: Option<String>,
    /// Only tests whose name contains this.
    #[arg(last = true)]
    pub filter: Option<String>,
}

/// What the VM lane measured.
pub struct VmOutcome {
    pub kernel: String,
    pub tally: Tally,
    pub elapsed: Duration,
    /// Why the lane failed, if it did (tests failed, no result, panic).
    pub failure: Option<String>,
}

pub fn vm_test(args: &VmArgs) -> Result<VmOutcome> {
    let started = Instant::now();
    tools::ensure_debian_packages(VM_PACKAGES)?;
    let vm_dir = workspace_root().join("target/vm");
    fs::create_dir_all(&vm_dir)?;
    let kernel = Kernel::prepare(args.kernel.as_deref(), &vm_dir)?;
    println!(
        "xtask: vm lane: kernel {} ({})",
        kernel.release,
        kernel.vmlinuz.display()
    );

    let binaries = build_test_binaries()?;
    let initrd = vm_dir.join("initrd.cpio.gz");
    build_initramfs(
        &kernel,
        &binaries,
        args.filter.as_deref(),
        &vm_dir.join("initramfs"),
        &initrd,
    )?;
    let log = vm_dir.join("console.log");
    let (tally, failure) = match boot(&kernel, &initrd, &log)? {
        Ok(tally) => (tally, None),
        Err((tally, why)) => (tally, Some(why)),
    };
    Ok(VmOutcome {
        kernel: kernel.release,
        tally,
        elapsed: started.elapsed(),
        failure,
    })
}

/// A kernel image and its module tree.
struct Kernel {
    release: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
}

impl Kernel {
    fn prepare(choice: Option<&str>, vm_dir: &Path) -> Result<Self> {
        match choice {
            Some(path) if path.ends_with(".deb") => Self::from_deb(Path::new(path), vm_dir),
            Some(path) if Path::new(path).is_file() => Self::from_vmlinuz(Path::new(path)),
            Some(package) => Self::from_package(package, vm_dir),
            None => Self::from_package(&default_kernel_package()?, vm_dir),
        }
    }

    fn from_package(package: &str, vm_dir: &Path) -> Result<Self> {
        let debs = vm_dir.join("debs");
        fs::create_dir_all(&debs)?;
        let existing = find_deb(&debs, package);
        let deb = match existing {
            Some(deb) => deb,
            None => {
                println!(
                    "xtask: downloading {package} (once; cached in {})",
                    debs.display()
                );
                cmd::run(
                    Command::new("apt-get")
                        .args(["download", "-q", package])
                        .current_dir(&debs),
                )
                .with_context(|| format!("apt-get download {package}"))?;
                find_deb(&debs, package)
                    .with_context(|| format!("apt-get download left no {package}_*.deb"))?
            }
        };
        Self::from_deb(&deb, vm_dir)
    }

    fn from_deb(deb: &Path, vm_dir: &Path) -> Result<Self> {
        let stem = deb
            .file_stem()
            .and_then(|s| s.to_str())
            .context("odd .deb name")?;
        let root = vm_dir.join("kernels").join(stem);
        let marker = root.join(".extracted");
        if !marker.exists() {
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root)?;
            cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
            fs::write(&marker, b"")?;
        }
        let vmlinuz = fs::read_dir(root.join("boot"))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })
            .with_context(|| format!("{} has no boot/vmlinuz-*", deb.display()))?;
        Self::from_vmlinuz(&vmlinuz)
    }

    fn from_vmlinuz(vmlinuz: &Path) -> Result<Self> {
        let name = vmlinuz
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let release = name
            .strip_prefix("vmlinuz-")
            .context("kernel image must be named vmlinuz-RELEASE")?;
        let root = vmlinuz
            .parent()
            .and_then(Path::parent)
            .context("vmlinuz has no parent")?;
        let modules = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|d| root.join(d).join(release))
            .find(|p| p.is_dir())
            .with_context(|| format!("no lib/modules/{release} beside {}", vmlinuz.display()))?;
        Ok(Kernel {
            release: release.to_string(),
            vmlinuz: vmlinuz.into(),
            modules,
        })
    }
}

fn find_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
}

/// The newest `linux-image-6.1.*-cloud-amd64-unsigned` the archive offers.
fn default_kernel_package() -> Result<String> {
    let search = || -> Result<Vec<String>> {
        let out = cmd::output(Command::new("apt-cache").args([
            "search",
            "--names-only",
            "^linux-image-6\\.1\\.[0-9-]*-cloud-amd64-unsigned$",
        ]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect())
    };
    let mut found = search()?;
    if found.is_empty() {
        cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
        found = search()?;
    }
    found.sort_by_key(|name| {
        // linux-image-6.1.0-56-cloud-amd64-unsigned -> (6, 1, 0, 56)
        name.split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u64>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    found
        .pop()
        .context("the Debian archive offers no linux-image-6.1.*-cloud-amd64-unsigned")
}

/// Builds the integration test binaries and the netvlan binary; returns
/// (netvlan, test executables).
fn build_test_binaries() -> Result<(PathBuf, Vec<(PathBuf, VmTests)>)> {
    let netvlan = build_test_netvlan()?;
    let out = cmd::output(crate::cargo()?.args([
        "test",
        "--package",
        "netvlan-tests",
        "--no-run",
        "--message-format=json",
    ]))?;
    let mut tests = Vec::new();
    for line in out.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = msg["profile"]["test"].as_bool() == Some(true);
        if let (true, Some(exe)) = (is_test, msg["executable"].as_str()) {
            // Only the integration tests (tests/*.rs); the library's own
            // unit-test binary has nothing privileged to run.
            let suite = msg["target"]["name"].as_str().unwrap_or_default();
            let planned = VM_SUITES.iter().find(|(name, _)| *name == suite);
            if let (true, Some(&(_, which))) = (msg["target"]["kind"][0] == "test", planned) {
                tests.push((PathBuf::from(exe), which));
            }
        }
    }
    if tests.is_empty() {
        bail!("cargo built no integration test binary for netvlan-tests");
    }
    Ok((netvlan, tests))
}

fn which(program: &str) -> Result<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} not found on the host"))
}

/// Shared libraries `binary` loads, as absolute host paths (from ldd).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|line| line.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from)
        .collect())
}

/// Copies `from` to `root/to`, creating directories; strips debug info from
/// ELF binaries (the debug builds are large and the guest has 2 GiB).
fn install(root: &Path, from: &Path, to: &Path, strip: bool) -> Result<()> {
    let dest = root.join(to.strip_prefix("/").unwrap_or(to));
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    let from = fs::canonicalize(from).with_context(|| format!("resolving {}", from.display()))?;
    if strip {
        cmd::run(
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg(&from)
                .arg(&dest),
        )?;
    } else {
        fs::copy(&from, &dest).with_context(|| format!("copying {}", from.display()))?;
    }
    Ok(())
}

/// Resolves `wanted` modules and their dependencies (from each .ko's
/// `depends=` modinfo) into a load order. Built-in modules need no file.
fn module_load_order(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<PathBuf>> {
    let normalize = |s: &str| s.replace('-', "_");
    let mut files = BTreeMap::new();
    let mut stack = vec![modules_dir.join("kernel")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                files.insert(normalize(name), path.clone());
            }
        }
    }
    let builtin: BTreeSet<String> = fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .filter_map(|n| n.strip_suffix(".ko"))
        .map(normalize)
        .collect();

    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    fn visit(
        name: &str,
        files: &BTreeMap<String, PathBuf>,
        builtin: &BTreeSet<String>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<PathBuf>,
    ) -> Result<()> {
        if !done.insert(name.to_string()) {
            return Ok(());
        }
        let Some(path) = files.get(name) else {
            if builtin.contains(name) {
                return Ok(());
            }
            bail!("kernel module {name} is neither built in nor shipped with this kernel");
        };
        let bytes = fs::read(path)?;
        let depends = bytes
            .split(|&b| b == 0)
            .find_map(|s| s.strip_prefix(b"depends="))
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .unwrap_or_default();
        for dep in depends.split(',').filter(|d| !d.is_empty()) {
            visit(&dep.replace('-', "_"), files, builtin, done, order)?;
        }
        order.push(path.clone());
        Ok(())
    }
    for name in wanted {
        visit(&normalize(name), &files, &builtin, &mut done, &mut order)?;
    }
    Ok(order)
}

fn build_initramfs(
    kernel: &Kernel,
    (netvlan, tests): &(PathBuf, Vec<(PathBuf, VmTests)>),
    filter: Option<&str>,
    root: &Path,
    out: &Path,
) -> Result<()> {
    let _ = fs::remove_dir_all(root);
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "var",
        "lib/modules",
        "tests",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    std::os::unix::fs::symlink("/run", root.join("var/run"))?;
    // Users the tools look up: tcpdump switches to its own after opening
    // a file (and fails when the user cannot be found).
    fs::create_dir_all(root.join("etc"))?;
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ntcpdump:x:100:100:tcpdump:/nonexistent:/bin/false\n",
    )?;
    fs::write(root.join("etc/group"), "root:x:0:\ntcpdump:x:100:\n")?;

    // busybox provides the shell and the small tools /init uses.
    install(
        root,
        Path::new("/bin/busybox"),
        Path::new("/bin/busybox"),
        false,
    )?;
    for applet in [
        "sh", "mount", "mkdir", "insmod", "poweroff", "cat", "echo", "grep", "awk", "sed", "uname",
        "tee", "sleep", "ls", "rm", "tr",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }

    // netvlan-cni beside netvlan, where the CNI suite finds it.
    let mut elves = vec![
        (netvlan.clone(), PathBuf::from("/bin/netvlan")),
        (
            netvlan.with_file_name("netvlan-cni"),
            PathBuf::from("/bin/netvlan-cni"),
        ),
    ];
    for plugin in CNI_PLUGINS {
        let path = Path::new("/usr/lib/cni").join(plugin);
        install(root, &path, &path, false).with_context(|| {
            format!("{} (Debian's containernetworking-plugins)", path.display())
        })?;
    }
    for program in HOST_PROGRAMS {
        let path = which(program)?;
        elves.push((path, Path::new("/usr/sbin").join(program)));
    }
    // One `run_suite` line per suite; a filter given to `vm-test` replaces
    // the plan's names (it asks for those tests of every planned suite).
    let mut runs = String::new();
    for (i, (test, which)) in tests.iter().enumerate() {
        let name = test.file_name().and_then(|n| n.to_str()).unwrap_or("test");
        // Drop cargo's hash suffix so the console names the suite.
        let short = name.rsplit_once('-').map_or(name, |(base, _)| base);
        let guest = format!("/tests/{i:02}-{short}");
        // A plan's suite must run at least one test per name (a renamed test
        // would otherwise drop out of the lane unseen); a `vm-test` filter
        // may match none.
        let (must_match, names): (bool, Vec<&str>) = match (filter, which) {
            (Some(f), _) => (false, vec![f]),
            (None, VmTests::All) => (true, vec![]),
            (None, VmTests::Named(names)) => (true, names.to_vec()),
        };
        let quoted: Vec<String> = names
            .iter()
            .map(|n| format!("'{}'", n.replace('\'', "")))
            .collect();
        let need = if must_match { names.len().max(1) } else { 0 };
        runs.push_str(&format!("run_suite {guest} {need} {}\n", quoted.join(" ")));
        elves.push((test.clone(), PathBuf::from(guest)));
    }
    let mut libraries = BTreeSet::new();
    for (from, to) in &elves {
        install(root, from, to, true)?;
        libraries.extend(shared_libraries(from)?);
    }
    for lib in &libraries {
        install(root, lib, lib, false)?;
    }

    let mut insmods = String::new();
    for module in module_load_order(&kernel.modules, MODULES)? {
        let name = module.file_name().expect("module files have names");
        fs::copy(&module, root.join("lib/modules").join(name))?;
        insmods.push_str(&format!(
            "insmod /lib/modules/{} || echo 'insmod {} failed'\n",
            name.to_string_lossy(),
            name.to_string_lossy()
        ));
    }

    let ci = std::env::var("CI").unwrap_or_default();
    let init = format!(
        r#"#!/bin/sh
# Generated by `cargo xtask vm-test`.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t bpf bpf /sys/fs/bpf
{insmods}
ip link set lo up
export NETVLAN_BIN=/bin/netvlan NETVLAN_TEST_LANE=vm CI='{ci}' RUST_BACKTRACE=1 HOME=/tmp
passed=0; failed=0; status=ok
run_suite() {{
  t=$1; need=$2; shift 2
  echo "== $t $*"
  "$t" --test-threads=2 "$@" > /tmp/out 2>&1
  rc=$?
  cat /tmp/out
  p=$(grep '^test result:' /tmp/out | sed -n 's/.* \([0-9]*\) passed.*/\1/p')
  f=$(grep '^test result:' /tmp/out | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
  passed=$((passed + ${{p:-0}})); failed=$((failed + ${{f:-0}}))
  [ "$rc" = 0 ] || status=failed
  [ -n "$p" ] || status=failed
  [ "${{p:-0}}" -ge "$need" ] || {{ echo "$t: fewer than $need tests matched $*"; status=failed; }}
}}
{runs}leftover=$(ls /run/netns 2>/dev/null | grep '^nvt' | tr '\n' ' ')
[ -z "$leftover" ] || {{ echo "left behind: $leftover"; status=failed; }}
echo "{RESULT_MARKER} kernel=$(uname -r) passed=$passed failed=$failed status=$status"
poweroff -f
"#
    );
    let init_path = root.join("init");
    fs::write(&init_path, init)?;
    fs::set_permissions(
        &init_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;

    // newc cpio, gzip'd: what the kernel's initramfs unpacker expects.
    let file = fs::File::create(out)?;
    let pipeline = format!(
        "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1",
        root.display()
    );
    let status = Command::new("sh")
        .args(["-c", &pipeline])
        .stdout(file)
        .status()?;
    if !status.success() {
        bail!("packing the initramfs failed ({status})");
    }
    Ok(())
}

/// Boots the VM, echoes and records its console, and returns the tally
/// from the result line, or the tally and why the lane failed. `Err` is
/// kept for failures to run the VM at all.
fn boot(kernel: &Kernel, initrd: &Path, log_path: &Path) -> Result<Result<Tally, (Tally, String)>> {
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "2G",
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    let mut log = fs::File::create(log_path)?;
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut result = None;
    let mut panicked = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_string();
                println!("  vm| {line}");
                writeln!(log, "{line}")?;
                if line.contains("Kernel panic") {
                    panicked = true;
                }
                if let Some(rest) = line.strip_prefix(RESULT_MARKER) {
                    result = Some(rest.trim().to_string());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() > deadline {
                    // Only the QEMU this function started, by its PID.
                    let _ = child.kill();
                    let _ = child.wait();
                    let why = format!("the VM did not finish within {BOOT_TIMEOUT:?} (qemu pid {pid} killed); console in {}", log_path.display());
                    return Ok(Err((Tally::default(), why)));
                }
            }
        }
    }
    let _ = reader.join();
    let status = child.wait()?;
    if panicked {
        return Ok(Err((
            Tally::default(),
            format!(
                "the guest kernel panicked; console in {}",
                log_path.display()
            ),
        )));
    }
    let Some(result) = result else {
        let why = format!(
            "the VM printed no {RESULT_MARKER} line (qemu {status}); console in {}",
            log_path.display()
        );
        return Ok(Err((Tally::default(), why)));
    };
    let fields: BTreeMap<&str, &str> = result
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let number = |key: &str| fields.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
    let tally = Tally {
        passed: number("passed"),
        failed: number("failed"),
    };
    if fields.get("status") != Some(&"ok") || tally.failed > 0 || tally.passed == 0 {
        return Ok(Err((
            tally,
            format!(
                "VM lane failed: {result}; console in {}",
                log_path.display()
            ),
        )));
    }
    Ok(Ok(tally))
}

/// `cargo xtask vm-test`: the VM lane alone.
pub fn vm_only(args: &VmArgs) -> Result<()> {
    if !tools::is_root() {
        bail!("the VM lane builds an initramfs and needs root for apt-get; run it as root");
    }
    let vm = vm_test(args)?;
    print_table(&[("vm", vm.kernel.clone(), vm.tally, vm.elapsed)]);
    match vm.failure {
        Some(why) => bail!(why),
        None => Ok(()),
    }
}
