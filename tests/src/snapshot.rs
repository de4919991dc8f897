//! What the kernel holds for a set of namespaces, as comparable lines:
//! links, addresses, routes, XDP and TC programs, plus a bpffs pin tree.
//! A failed command must leave every line as it was.

use serde_json::Value;

use crate::{BpfDir, Netns};

/// The TC programs on `dev` in `ns`, by hook, as program ids: TCX links
/// (queried from a thread that enters the namespace and then ends) and
/// cls_bpf filters alike.
pub fn tc_programs(ns: &Netns, dev: &str) -> (Vec<u32>, Vec<u32>) {
    use aya::programs::{tc::TcAttachType, SchedClassifier};
    let tcx = ns
        .in_thread(|| {
            // Kernels without TCX refuse the query: nothing attached that way.
            let query = |hook| {
                SchedClassifier::query_tcx(dev, hook)
                    .map(|(_, programs)| programs.iter().map(|p| p.id()).collect::<Vec<_>>())
                    .unwrap_or_default()
            };
            Ok((query(TcAttachType::Egress), query(TcAttachType::Ingress)))
        })
        .unwrap_or_else(|e| panic!("querying TCX in {}: {e:#}", ns.name()));
    let filters = |hook: &str| -> Vec<u32> {
        let out = ns
            .command("tc")
            .args(["-j", "filter", "show", "dev", dev, hook])
            .output()
            .expect("tc runs");
        let filters: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        filters
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["options"]["prog"]["id"].as_u64())
            .map(|id| id as u32)
            .collect()
    };
    let (mut egress, mut ingress) = tcx;
    egress.extend(filters("egress"));
    ingress.extend(filters("ingress"));
    (egress, ingress)
}

fn json(ns: &Netns, args: &[&str]) -> Value {
    let out = ns.exec("ip", args);
    serde_json::from_slice(&out.stdout).expect("ip -j prints JSON")
}

/// Every link (name, MAC, owner tag, XDP program, TC programs), address
/// and route of `ns`, one line each, prefixed with `label`.
pub fn namespace(label: &str, ns: &Netns) -> Vec<String> {
    let mut out = Vec::new();
    for link in json(ns, &["-j", "-d", "link", "show"])
        .as_array()
        .expect("a list")
    {
        let name = link["ifname"].as_str().unwrap_or_default();
        let (egress, ingress) = tc_programs(ns, name);
        out.push(format!(
            "{label} link {name} mac={} alias={} xdp={} tc-egress={egress:?} tc-ingress={ingress:?}",
            link["address"].as_str().unwrap_or_default(),
            link["ifalias"].as_str().unwrap_or_default(),
            link["xdp"]["prog"]["id"],
        ));
    }
    for link in json(ns, &["-j", "addr", "show"])
        .as_array()
        .expect("a list")
    {
        for addr in link["addr_info"].as_array().into_iter().flatten() {
            out.push(format!(
                "{label} addr {} {}/{}",
                link["ifname"].as_str().unwrap_or_default(),
                addr["local"].as_str().unwrap_or_default(),
                addr["prefixlen"]
            ));
        }
    }
    for family in ["-4", "-6"] {
        for route in json(ns, &[family, "-j", "route", "show", "table", "all"])
            .as_array()
            .expect("a list")
        {
            out.push(format!("{label} route {route}"));
        }
    }
    out
}

/// The kernel state of every namespace given, and the pin tree.
pub fn kernel(namespaces: &[(&str, &Netns)], bpf: &BpfDir) -> Vec<String> {
    let mut out: Vec<String> = namespaces
        .iter()
        .flat_map(|(label, ns)| namespace(label, ns))
        .collect();
    out.extend(bpf.contents().into_iter().map(|p| format!("pin {p}")));
    out
}

/// Every route of `ns`'s tables, both families, as `ip route` prints them.
pub fn routes(ns: &Netns) -> String {
    let v4 = ns.exec("ip", &["-4", "route", "show", "table", "all"]);
    let v6 = ns.exec("ip", &["-6", "route", "show", "table", "all"]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&v4.stdout),
        String::from_utf8_lossy(&v6.stdout)
    )
}
