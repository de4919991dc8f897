//! The model shared by netvlan's eBPF programs and its userspace.
//!
//! Everything here is `no_std` so that the exact same code runs inside the
//! XDP program, in host unit tests and in fuzzers:
//!
//! - [`frame`]: the frame classifier (Ethernet, 802.1Q, 802.1ad/QinQ and the
//!   L3 protocol behind the tags).
//! - [`hairpin`]: the host-access hairpin's decision at a parent's TC egress.
//! - [`mac`]: the MAC address type (text form, serde under `user`).
//! - [`maps`]: the `#[repr(C)]` keys and values of the datapath's maps, with
//!   their names and sizes.
//! - [`policy`]: the filtering decision over those maps.
//! - [`trace`]: the packet trace events of the ring buffer.
//! - [`model`] (feature `model`, std): a host model of a wire's maps and
//!   counters, the reference the program is tested and benchmarked against.
#![cfg_attr(not(test), no_std)]

pub mod antispoof;
pub mod decision;
pub mod frame;
pub mod hairpin;
pub mod mac;
pub mod maps;
#[cfg(any(test, feature = "model"))]
pub mod model;
pub mod trace;

pub use mac::Mac;
