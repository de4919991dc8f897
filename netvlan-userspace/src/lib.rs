//! netvlan: macvlan/ipvlan container networks with an eBPF datapath.
//!
//! - [`netlink`]: link queries and changes over rtnetlink (never `ip`).
//! - [`netns`]: network namespace identity.
//! - [`datapath`]: loading, pinning and reading the XDP program.
//! - [`ipam`]: Docker-compatible address management (pure logic).
//! - [`keyword`]: fixed-word settings (modes, drivers): spellings, parsing.
//! - [`network`]: the control plane every front shares ([`network::Manager`]).
//! - [`cli`]: the `netvlan` command line, the only module that knows clap.

pub mod cli;
pub mod datapath;
pub mod demo;
pub mod ipam;
pub mod keyword;
pub mod netlink;
pub mod netns;
pub mod network;
pub mod offload;
pub mod sandbox;
pub mod store;
