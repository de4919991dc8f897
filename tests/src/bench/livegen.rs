//! The bench's own flood generator: the kernel's live-frames test run
//! (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`, kernel 5.18+),
//! as xdp-trafficgen uses it.
//!
//! A small XDP program (write the frame, then `bpf_redirect(IFINDEX, 0)`)
//! is run by the kernel on copies of one frame, in batches; every copy is
//! redirected out of a veth in the generator's namespace and arrives at its
//! peer as an XDP frame, the way a NIC driver hands frames to its receive
//! path (no socket, no qdisc, no skb on the way). The kernel schedules the
//! receiver's NAPI poll after each batch: in softirq on the generator's CPU,
//! unless the receiver's NAPI is threaded (the flood bench pins that thread
//! to a CPU of its own).

use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    os::unix::thread::JoinHandleExt,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
};

use anyhow::{anyhow, bail, Context, Result};
use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_type, BPF_F_TEST_XDP_LIVE_FRAMES};
use netvlan::sys::netns::{self, NetnsGuard};

use super::sandbox::Netns;

/// Frames per batch inside the test run (the kernel's default and NAPI's
/// weight): the receiver polls after each batch.
pub const BATCH: u32 = 64;

/// The signal that ends the generator's test run (`EINTR`): a test run
/// that stops after a fixed number of frames sets up and tears down its
/// page pool every time (tens of ms here), so the generator makes one
/// endless call and is interrupted instead.
const STOP_SIGNAL: libc::c_int = libc::SIGUSR1;

extern "C" fn on_stop_signal(_: libc::c_int) {}

/// The generator thread; stopped and joined on drop.
pub struct LiveGen {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl LiveGen {
    /// Starts flooding `frame` out of `ifname` in `ns`, from a thread that
    /// entered `ns` and is pinned to `cpu`. Returns once the program is
    /// loaded and the thread is about to run it, or with the error.
    pub fn start(ns: &Netns, ifname: &str, frame: &[u8], cpu: usize) -> Result<Self> {
        install_stop_handler()?;
        let ns_path = ns.path();
        let ifname = CString::new(ifname)?;
        let frame = frame.to_vec();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("flood-gen".into())
                .spawn(move || -> Result<()> {
                    // The guard stays on this thread, in scope for the whole
                    // run: the live frames leave from the namespace's devices.
                    let (_inside, prog) = match prepare(&ns_path, &ifname, &frame, cpu) {
                        Ok(ready) => {
                            let _ = ready_tx.send(Ok(()));
                            ready
                        }
                        Err(e) => {
                            let text = format!("{e:#}");
                            let _ = ready_tx.send(Err(e));
                            bail!("{text}");
                        }
                    };
                    while !stop.load(Ordering::SeqCst) {
                        match live_run(&prog, &frame, u32::MAX) {
                            Ok(()) => {}
                            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                            Err(e) => {
                                return Err(e).context(
                                    "BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES \
                                     (kernel 5.18+)",
                                )
                            }
                        }
                    }
                    Ok(())
                })
                .context("starting the generator thread")?
        };
        let gen = LiveGen {
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(gen),
            Ok(Err(e)) => Err(e.context("the live-frames generator cannot run")),
            Err(_) => bail!("the live-frames generator thread ended before it started"),
        }
    }

    /// Fails if the generator stopped by itself.
    pub fn check_running(&mut self) -> Result<()> {
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            return match self.stop_and_join() {
                Ok(()) => Err(anyhow!("the live-frames generator stopped early")),
                Err(e) => Err(e.context("the live-frames generator stopped")),
            };
        }
        Ok(())
    }

    /// Stops the thread and reports an error it met on the way.
    pub fn finish(mut self) -> Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        // Signalled until it ends: a signal that lands between its check
        // of the flag and the syscall would otherwise be lost.
        while !thread.is_finished() {
            // SAFETY: the thread is ours and not yet joined, so its
            // pthread_t is valid; the handler does nothing.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), STOP_SIGNAL) };
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        thread
            .join()
            .map_err(|_| anyhow!("the generator thread panicked"))?
    }
}

impl Drop for LiveGen {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            eprintln!("bench: warning: live-frames generator: {e:#}");
        }
    }
}

/// A handler for [`STOP_SIGNAL`] that does nothing, so the signal only
/// interrupts the test run (no SA_RESTART: the call returns EINTR).
fn install_stop_handler() -> Result<()> {
    // SAFETY: sigaction is plain data; the handler is async-signal-safe
    // (it does nothing).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    let handler: extern "C" fn(libc::c_int) = on_stop_signal;
    action.sa_sigaction = handler as libc::sighandler_t;
    // SAFETY: a valid sigaction for a signal nothing else in xtask uses.
    if unsafe { libc::sigaction(STOP_SIGNAL, &action, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("installing the SIGUSR1 handler");
    }
    Ok(())
}

/// On the generator thread: enter the namespace (the guard keeps the
/// thread there), pin to `cpu`, load the redirect program for the interface.
fn prepare(
    ns_path: &Path,
    ifname: &CString,
    frame: &[u8],
    cpu: usize,
) -> Result<(NetnsGuard, OwnedFd)> {
    let inside = NetnsGuard::enter(&netns::Netns::open(ns_path)?)?;
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is this thread; the set is valid for its size.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pinning the generator to CPU {cpu}"));
    }
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("no interface {ifname:?} in the generator's namespace"));
    }
    Ok((inside, load(frame, ifindex)?))
}

/// One eBPF instruction.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut i = [0u8; 8];
    i[0] = code;
    i[1] = (src << 4) | (dst & 0x0f);
    i[2..4].copy_from_slice(&off.to_le_bytes());
    i[4..8].copy_from_slice(&imm.to_le_bytes());
    i
}

/// The generator's program: writes `frame` into the packet, then
/// `return bpf_redirect(ifindex, 0)`.
///
/// Live frames are not reset between runs (the kernel recycles the pages
/// with whatever the receiver left in them), and the receive path does
/// change frames: taking a VLAN tag off moves the MAC addresses 4 bytes in
/// place. Writing the frame every time keeps every copy the flood's frame.
fn program(frame: &[u8], ifindex: u32) -> Vec<u8> {
    const BPF_LDX_W: u8 = 0x61; // dst = *(u32 *)(src + off)
    const BPF_MOV64_X: u8 = 0xbf;
    const BPF_ADD64_K: u8 = 0x07;
    const BPF_JGT_X: u8 = 0x2d;
    const BPF_ST_W: u8 = 0x62; // *(u32 *)(dst + off) = imm
    const BPF_ST_B: u8 = 0x72; // *(u8 *)(dst + off) = imm
    const BPF_MOV64_K: u8 = 0xb7;
    const BPF_CALL: u8 = 0x85;
    const BPF_EXIT: u8 = 0x95;
    const BPF_FUNC_REDIRECT: i32 = 23;
    let mut stores = Vec::new();
    let words = frame.chunks_exact(4);
    let tail = words.remainder();
    for (i, w) in words.enumerate() {
        let imm = i32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        stores.push(insn(BPF_ST_W, 2, 0, (i * 4) as i16, imm));
    }
    let base = frame.len() - tail.len();
    for (i, b) in tail.iter().enumerate() {
        stores.push(insn(BPF_ST_B, 2, 0, (base + i) as i16, i32::from(*b)));
    }
    let mut p = vec![
        insn(BPF_LDX_W, 2, 1, 0, 0), // r2 = ctx->data
        insn(BPF_LDX_W, 3, 1, 4, 0), // r3 = ctx->data_end
        insn(BPF_MOV64_X, 4, 2, 0, 0),
        insn(BPF_ADD64_K, 4, 0, 0, frame.len() as i32),
        // Past the end: skip the stores (the verifier's bounds check).
        insn(BPF_JGT_X, 4, 3, stores.len() as i16, 0),
    ];
    p.extend(stores);
    p.extend([
        insn(BPF_MOV64_K, 1, 0, 0, ifindex as i32),
        insn(BPF_MOV64_K, 2, 0, 0, 0),
        insn(BPF_CALL, 0, 0, 0, BPF_FUNC_REDIRECT),
        insn(BPF_EXIT, 0, 0, 0, 0),
    ]);
    p.concat()
}

/// Loads [`program`] as an XDP program.
fn load(frame: &[u8], ifindex: u32) -> Result<OwnedFd> {
    let program = program(frame, ifindex);
    let license = c"GPL";
    let mut log = vec![0u8; 65536];
    // SAFETY: bpf_attr is plain data; all-zero is its documented default.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing the PROG_LOAD member of the zeroed union.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = bpf_prog_type::BPF_PROG_TYPE_XDP as u32;
    load.insn_cnt = (program.len() / 8) as u32;
    load.insns = program.as_ptr() as u64;
    load.license = license.as_ptr() as u64;
    load.log_level = 1;
    load.log_size = log.len() as u32;
    load.log_buf = log.as_mut_ptr() as u64;
    for (dst, src) in load.prog_name.iter_mut().zip(b"nvb_flood_gen") {
        *dst = *src as libc::c_char;
    }
    let fd = bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let text = String::from_utf8_lossy(&log);
        anyhow!(
            "loading the generator's program: {e}: {}",
            text.trim_end_matches('\0').trim()
        )
    })?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One live-frames test run of `repeat` copies of `frame`.
fn live_run(prog: &OwnedFd, frame: &[u8], repeat: u32) -> std::io::Result<()> {
    // SAFETY: bpf_attr is plain data; all-zero is its documented default.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing the TEST_RUN member of the zeroed union.
    let test = unsafe { &mut attr.test };
    test.prog_fd = prog.as_raw_fd() as u32;
    test.data_in = frame.as_ptr() as u64;
    test.data_size_in = frame.len() as u32;
    test.repeat = repeat;
    test.flags = BPF_F_TEST_XDP_LIVE_FRAMES;
    test.batch_size = BATCH;
    bpf(bpf_cmd::BPF_PROG_TEST_RUN, &mut attr).map(|_| ())
}

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<i32> {
    // SAFETY: attr is a valid, initialised bpf_attr for the kernel to read
    // (and write back) within its size; every pointer in it outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ret as i32)
}

#[cfg(test)]
mod tests {
    use super::{insn, program};

    #[test]
    fn instructions_are_encoded_little_endian_with_registers_in_nibbles() {
        assert_eq!(insn(0xb7, 1, 0, 0, 7), [0xb7, 0x01, 0, 0, 7, 0, 0, 0]);
        assert_eq!(insn(0x61, 3, 1, 4, 0), [0x61, 0x13, 4, 0, 0, 0, 0, 0]);
        assert_eq!(insn(0xb7, 2, 0, -1, -1)[2..], [0xff; 6]);
    }

    #[test]
    fn the_program_writes_the_whole_frame_then_redirects() {
        let frame: Vec<u8> = (0..66).collect();
        let p = program(&frame, 9);
        let insns: Vec<&[u8]> = p.chunks(8).collect();
        // 5 of bounds check, 16 word stores + 2 byte stores, 4 of redirect.
        assert_eq!(insns.len(), 5 + 18 + 4);
        assert_eq!(insns[4][0], 0x2d);
        assert_eq!(i16::from_le_bytes([insns[4][2], insns[4][3]]), 18);
        assert_eq!(
            insns[5],
            insn(0x62, 2, 0, 0, i32::from_le_bytes([0, 1, 2, 3]))
        );
        assert_eq!(insns[22], insn(0x72, 2, 0, 65, 65));
        assert_eq!(insns[23], insn(0xb7, 1, 0, 0, 9));
        assert_eq!(insns[26][0], 0x95);
    }
}
