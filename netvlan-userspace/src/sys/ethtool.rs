//! VLAN offloads and the driver's name, through the ethtool ioctl.
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
/// `ETHTOOL_GDRVINFO` (linux/ethtool.h).
const ETHTOOL_GDRVINFO: u32 = 0x03;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ethtool_drvinfo`.
#[repr(C)]
struct DriverInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// Calls the ethtool ioctl on `ifname` in the calling thread's namespace.
fn ethtool(ifname: &str, value: &mut EthtoolValue) -> std::io::Result<()> {
    ethtool_raw(ifname, (value as *mut EthtoolValue).cast())
}

/// The ioctl with `data` pointing at the command's own struct (its first
/// field the command number).
fn ethtool_raw(ifname: &str, data: *mut libc::c_void) -> std::io::Result<()> {
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
        data,
        _pad: [0; 16],
    };
    for (dst, src) in request.name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: request points at the caller's live command struct for the
    // whole call.
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

/// The name of the link's driver (`veth`, `virtio_net`, `ixgbe`, ...), as
/// `ethtool -i` shows it.
pub fn driver_name(ifname: &str) -> std::io::Result<String> {
    let mut info = DriverInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    ethtool_raw(ifname, (&mut info as *mut DriverInfo).cast())?;
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}
