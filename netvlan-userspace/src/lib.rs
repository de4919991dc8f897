//! netvlan: macvlan/ipvlan container networks with an eBPF datapath.
//!
//! Layers, each importing only the ones above it in this list:
//!
//! - [`ipam`]: Docker-compatible address management (pure logic).
//! - [`keyword`]: fixed-word settings (modes, drivers): spellings, parsing.
//! - [`sys`]: the kernel, minus BPF: rtnetlink, namespaces, sandboxes, ethtool.
//! - [`store`]: the persistent state and its lock.
//! - [`datapath`]: loading, pinning and reading the eBPF programs and maps.
//! - [`control`]: the control plane every front shares ([`control::Manager`]).
//! - [`docker`]: the Docker remote network driver, driving the control plane.
//! - [`daemon`]: the service beside the datapath: metrics, page, API.
//! - [`demo`]: a lab in namespaces of its own, built with the control plane.
//! - [`cni`]: the `netvlan-cni` CNI plugin, driving the control plane.
//! - [`cli`]: the `netvlan` command line, the only module that knows clap.

pub mod cli;
pub mod cni;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod demo;
pub mod docker;
pub mod ipam;
pub mod keyword;
pub mod store;
pub mod sys;
