//! The kernel, as netvlan needs it outside BPF: links over rtnetlink,
//! network namespaces and the sandboxes containers live in, and the
//! ethtool offload switches.

pub mod bpf_batch;
pub mod ethtool;
pub mod failpoint;
pub mod netlink;
pub mod netns;
pub mod sandbox;
pub mod sysctl;
pub mod unrooted;
