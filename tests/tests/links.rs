//! The links netvlan's control plane creates over rtnetlink (never `ip`):
//! 802.1Q, macvlan, ipvlan and dummy, each read back from the kernel.
//!
//! The host kernel here has no 8021q, ipvlan or dummy: those tests report
//! "covered by the VM lane" on the host and must pass in the VM lane.

use netvlan::sys::{
    netlink::{IpvlanFlag, IpvlanMode, LinkInfo, MacvlanMode, Netlink, NetlinkError, NewLink},
    netns,
};
use netvlan_tests::{require_kernel_feature, veth_pair, KernelFeature, Netns};
use serde_json::Value;

/// A namespace with a veth `parent0` (its peer in a second namespace) to
/// hang links on.
struct Lab {
    ns: Netns,
    _peer: Netns,
}

impl Lab {
    fn new() -> Self {
        let ns = Netns::new("link");
        let peer = Netns::new("lpeer");
        veth_pair(&ns, "parent0", &peer, "peer0");
        Lab { ns, _peer: peer }
    }

    /// Runs `job` with netvlan's netlink connection to the namespace.
    fn netlink<T, Fut>(&self, job: impl FnOnce(Netlink) -> Fut) -> T
    where
        Fut: std::future::Future<Output = T>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        runtime.block_on(async {
            let ns = netns::Netns::open(&self.ns.path()).expect("opening the test namespace");
            job(Netlink::connect_in(&ns).expect("connecting in the test namespace")).await
        })
    }

    /// Creates `name` through netvlan's netlink code inside the namespace.
    fn create(
        &self,
        name: &str,
        link: impl FnOnce(u32) -> NewLink,
    ) -> Result<LinkInfo, NetlinkError> {
        self.netlink(|netlink| async move {
            let parent = netlink.link_by_name("parent0").await?;
            let created = netlink.create_link(name, link(parent.ifindex)).await?;
            netlink.set_up(created.ifindex).await?;
            Ok(created)
        })
    }

    fn delete(&self, ifindex: u32) {
        self.netlink(|netlink| async move { netlink.delete_link(ifindex).await })
            .expect("deleting the link");
    }

    /// `ip -d -j link show` of the link: the kernel's view, not ours.
    fn kernel_view(&self, name: &str) -> Value {
        self.ns.link_json(name)
    }
}

#[test]
fn vlan_sub_interface_is_created_with_its_id_and_deleted() {
    if !require_kernel_feature(KernelFeature::Vlan) {
        return;
    }
    let lab = Lab::new();
    let link = lab
        .create("parent0.10", |parent| NewLink::Vlan { parent, vid: 10 })
        .expect("creating parent0.10");
    let view = lab.kernel_view("parent0.10");
    assert_eq!(view["linkinfo"]["info_kind"], "vlan", "{view:#}");
    assert_eq!(view["linkinfo"]["info_data"]["id"], 10, "{view:#}");
    assert_eq!(
        view["linkinfo"]["info_data"]["protocol"], "802.1Q",
        "{view:#}"
    );
    assert_eq!(view["link"], "parent0", "{view:#}");
    assert!(
        view["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{view:#}"
    );
    lab.delete(link.ifindex);
    let gone = lab
        .ns
        .command("ip")
        .args(["link", "show", "parent0.10"])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "parent0.10 still exists");
}

#[test]
fn macvlan_links_are_created_in_every_mode() {
    let lab = Lab::new();
    for (i, (mode, kernel_name)) in [
        (MacvlanMode::Bridge, "bridge"),
        (MacvlanMode::Vepa, "vepa"),
        (MacvlanMode::Private, "private"),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("mv{i}");
        lab.create(&name, move |parent| NewLink::Macvlan { parent, mode })
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        let view = lab.kernel_view(&name);
        assert_eq!(view["linkinfo"]["info_kind"], "macvlan", "{view:#}");
        assert_eq!(
            view["linkinfo"]["info_data"]["mode"], kernel_name,
            "{view:#}"
        );
    }
}

#[test]
fn macvlan_passthru_takes_the_parent_for_itself() {
    let lab = Lab::new();
    lab.create("pt0", |parent| NewLink::Macvlan {
        parent,
        mode: MacvlanMode::Passthru,
    })
    .expect("creating pt0");
    let view = lab.kernel_view("pt0");
    assert_eq!(
        view["linkinfo"]["info_data"]["mode"], "passthru",
        "{view:#}"
    );
    let second = lab.create("pt1", |parent| NewLink::Macvlan {
        parent,
        mode: MacvlanMode::Passthru,
    });
    assert!(
        second.is_err(),
        "a second passthru link on one parent must be refused"
    );
}

#[test]
fn ipvlan_links_are_created_in_l2_and_l3_with_flags() {
    if !require_kernel_feature(KernelFeature::Ipvlan) {
        return;
    }
    let lab = Lab::new();
    let cases = [
        (IpvlanMode::L2, IpvlanFlag::Bridge, "l2", "bridge"),
        (IpvlanMode::L3, IpvlanFlag::Private, "l3", "private"),
        (IpvlanMode::L3s, IpvlanFlag::Vepa, "l3s", "vepa"),
    ];
    for (i, (mode, flag, kernel_mode, kernel_flag)) in cases.into_iter().enumerate() {
        let name = format!("ipv{i}");
        lab.create(&name, move |parent| NewLink::Ipvlan { parent, mode, flag })
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        let view = lab.kernel_view(&name);
        assert_eq!(view["linkinfo"]["info_kind"], "ipvlan", "{view:#}");
        assert_eq!(
            view["linkinfo"]["info_data"]["mode"], kernel_mode,
            "{view:#}"
        );
        // iproute2 prints the flag as a boolean named after it.
        assert_eq!(view["linkinfo"]["info_data"][kernel_flag], true, "{view:#}");
        // ipvlan endpoints share the parent's MAC.
        assert_eq!(
            view["address"],
            lab.kernel_view("parent0")["address"],
            "{view:#}"
        );
    }
}

#[test]
fn dummy_placeholder_parent_is_created() {
    if !require_kernel_feature(KernelFeature::Dummy) {
        return;
    }
    let lab = Lab::new();
    let link = lab
        .netlink(|netlink| async move { netlink.create_link("nvdummy0", NewLink::Dummy).await })
        .expect("creating a dummy link");
    assert_eq!(
        lab.kernel_view("nvdummy0")["linkinfo"]["info_kind"],
        "dummy"
    );
    lab.delete(link.ifindex);
}

#[test]
fn a_missing_link_type_names_the_kernel_option() {
    // Only meaningful where the kernel lacks ipvlan (the host lane); the VM
    // lane has it and checks creation instead.
    let lab = Lab::new();
    let probe = lab
        .ns
        .command("ip")
        .args(["link", "add", "probe0", "link", "parent0", "type", "ipvlan"])
        .output()
        .unwrap();
    if probe.status.success() {
        netvlan_tests::note(
            "kernel has ipvlan: the missing-support error is covered by the host lane",
        );
        return;
    }
    let err = lab
        .create("ipv0", |parent| NewLink::Ipvlan {
            parent,
            mode: IpvlanMode::L2,
            flag: IpvlanFlag::Bridge,
        })
        .expect_err("ipvlan must fail on this kernel");
    assert_eq!(err.to_string(), "this kernel has no ipvlan support (CONFIG_IPVLAN); load its module or use a kernel built with it");
    assert_eq!(err.errno(), Some(libc::EOPNOTSUPP));
}

#[test]
fn creating_an_existing_name_is_a_clear_eexist_error() {
    let lab = Lab::new();
    lab.create("dup0", |parent| NewLink::Macvlan {
        parent,
        mode: MacvlanMode::Bridge,
    })
    .expect("first dup0");
    let err = lab
        .create("dup0", |parent| NewLink::Macvlan {
            parent,
            mode: MacvlanMode::Bridge,
        })
        .expect_err("second dup0");
    assert_eq!(err.to_string(), "an interface named 'dup0' already exists");
    assert_eq!(err.errno(), Some(libc::EEXIST));
}
