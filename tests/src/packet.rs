//! Sending raw frames from inside a namespace with an AF_PACKET socket.
//!
//! A socket belongs to the namespace it was created in, whatever thread
//! uses it later. So the socket is created on a dedicated thread that
//! enters the namespace and then ends ([`Netns::in_thread`]): no thread of
//! the test runner ever changes namespace.

use std::{
    cell::Cell,
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use crate::Netns;

/// A raw packet socket bound to one interface of one namespace.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    /// Frames the kernel dropped because this socket's buffer was full,
    /// summed over every read of PACKET_STATISTICS (each read resets the
    /// kernel's count).
    drops: Cell<u64>,
}

/// The receive buffer a listening socket asks for (SO_RCVBUFFORCE, as
/// root): far more than a test's traffic queues up between two drains,
/// so a loaded machine cannot make the socket drop frames.
pub const LISTEN_BUFFER_BYTES: i32 = 256 << 20;

impl PacketSocket {
    /// A socket for sending on `ifname`.
    pub fn open(ns: &Netns, ifname: &str) -> Self {
        Self::create(ns, ifname, false)
    }

    /// A socket that receives every frame arriving on `ifname`, from now on.
    pub fn listen(ns: &Netns, ifname: &str) -> Self {
        Self::create(ns, ifname, true)
    }

    fn create(ns: &Netns, ifname: &str, receive: bool) -> Self {
        let ns_path = ns.path();
        let ifname = ifname.to_string();
        ns.in_thread(|| {
            // SAFETY: plain syscalls on fds we own, on a thread that lives
            // in the target namespace.
            let socket = unsafe {
                let c_name = CString::new(ifname.clone()).expect("interface names have no NUL");
                let ifindex = libc::if_nametoindex(c_name.as_ptr()) as i32;
                assert!(
                    ifindex > 0,
                    "no interface {ifname} in {}",
                    ns_path.display()
                );
                // ETH_P_ALL in network byte order makes the socket receive.
                let protocol = if receive {
                    (libc::ETH_P_ALL as u16).to_be() as i32
                } else {
                    0
                };
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, protocol);
                assert!(
                    fd >= 0,
                    "AF_PACKET socket: {}",
                    std::io::Error::last_os_error()
                );
                let socket = PacketSocket {
                    fd: OwnedFd::from_raw_fd(fd),
                    ifindex,
                    drops: Cell::new(0),
                };
                if receive {
                    // Before bind: from bind on, frames queue up.
                    let size = LISTEN_BUFFER_BYTES;
                    let rc = libc::setsockopt(
                        socket.fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVBUFFORCE,
                        (&size as *const i32).cast(),
                        std::mem::size_of::<i32>() as u32,
                    );
                    assert_eq!(
                        rc,
                        0,
                        "SO_RCVBUFFORCE {size} (needs CAP_NET_ADMIN): {}",
                        std::io::Error::last_os_error()
                    );
                    let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                    addr.sll_family = libc::AF_PACKET as u16;
                    addr.sll_protocol = protocol as u16;
                    addr.sll_ifindex = ifindex;
                    let rc = libc::bind(
                        socket.fd.as_raw_fd(),
                        (&addr as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    );
                    assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
                }
                socket
            };
            Ok(socket)
        })
        .unwrap_or_else(|e| panic!("opening a packet socket in {}: {e:#}", ns_path.display()))
    }

    /// Sends the bytes as they are: SOCK_RAW, only the interface matters.
    fn sendto(&self, frame: &[u8]) -> std::io::Result<usize> {
        // SAFETY: zeroed sockaddr_ll is valid; we fill the fields we use.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        // SAFETY: frame and addr outlive the call.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(sent as usize)
        }
    }

    /// Sends a frame that the sender's own egress filter may drop: the
    /// kernel then answers ENOBUFS, which is what such a drop looks like to
    /// the sender. Any other error panics.
    pub fn send_maybe_dropped(&self, frame: &[u8]) {
        if let Err(err) = self.sendto(frame) {
            assert_eq!(
                err.raw_os_error(),
                Some(libc::ENOBUFS),
                "sending a {}-byte frame: {err}",
                frame.len()
            );
        }
    }

    /// Sends one frame exactly as given (no padding, tags in the bytes).
    pub fn send(&self, frame: &[u8]) {
        match self.sendto(frame) {
            Ok(n) => assert_eq!(n, frame.len(), "short send of a {}-byte frame", frame.len()),
            Err(err) => panic!("sending a {}-byte frame: {err}", frame.len()),
        }
    }

    /// Every frame received so far (non-blocking drain).
    pub fn received(&self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: buf outlives the call; MSG_DONTWAIT never blocks.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "recv: {err}");
                return frames;
            }
            frames.push(buf[..n as usize].to_vec());
        }
    }

    /// Frames the kernel dropped so far because this socket's receive
    /// buffer was full (PACKET_STATISTICS' `tp_drops`). A frame counted
    /// here reached the socket: whatever filter sits before it let it pass.
    pub fn socket_drops(&self) -> u64 {
        let mut stats = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: stats and len outlive the call; len is stats' size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut stats as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        assert_eq!(
            rc,
            0,
            "PACKET_STATISTICS: {}",
            std::io::Error::last_os_error()
        );
        self.drops.set(self.drops.get() + u64::from(stats.tp_drops));
        self.drops.get()
    }

    pub fn send_many(&self, frame: &[u8], count: usize) {
        for _ in 0..count {
            self.send(frame);
        }
    }
}
