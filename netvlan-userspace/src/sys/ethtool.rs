//! VLAN offloads, through the ethtool ioctl.
//!
//! With VLAN offload on, a NIC (or a veth whose peer transmits with
//! `txvlan`) carries the 802.1Q tag beside the frame instead of in it, and
//! XDP sees the frame untagged: per-VLAN counters would book it under VLAN 0.
//! The datapath warns about it; links netvlan owns get the offload off.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `ETHTOOL_GFLAGS` / `ETHTOOL_SFLAGS` and their VLAN bits (linux/ethtool.h).
const ETHTOOL_GFLAGS: u32 = 0x25;
const ETHTOOL_SFLAGS: u32 = 0x26;
const ETH_FLAG_TXVLAN: u32 = 1 << 7;
const ETH_FLAG_RXVLAN: u32 = 1 << 8;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    _pad: [u8; 16],
}

/// Calls the ethtool ioctl on `ifname` in the calling thread's namespace.
fn ethtool(ifname: &str, value: &mut EthtoolValue) -> std::io::Result<()> {
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    // SAFETY: a datagram socket only used for the ioctl, owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: value,
        _pad: [0; 16],
    };
    for (dst, src) in request.name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: request points at a live EthtoolValue for the whole call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &mut request) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the link strips received VLAN tags before XDP sees them.
pub fn rx_vlan_offload(ifname: &str) -> std::io::Result<bool> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    ethtool(ifname, &mut value)?;
    Ok(value.data & ETH_FLAG_RXVLAN != 0)
}

/// Turns receive and transmit VLAN offload off, so tags travel in the
/// frame bytes where XDP and TC programs can read them.
pub fn disable_vlan_offload(ifname: &str) -> std::io::Result<()> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    ethtool(ifname, &mut value)?;
    value.cmd = ETHTOOL_SFLAGS;
    value.data &= !(ETH_FLAG_RXVLAN | ETH_FLAG_TXVLAN);
    ethtool(ifname, &mut value)
}
