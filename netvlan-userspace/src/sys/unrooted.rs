//! A thread that sees no files: its root moved to a directory with
//! nothing netvlan could open below it. For library code that reads a
//! fixed path whose content netvlan does not want read (see
//! [`crate::datapath::object`]'s loader).

use std::{ffi::CStr, io};

/// Where the thread's root goes: exists wherever procfs is mounted (as
/// netvlan needs it anyway) and holds only numbered entries.
const EMPTY_ROOT: &CStr = c"/proc/thread-self/fdinfo";

/// Runs `job` on a thread of its own whose root is [`EMPTY_ROOT`]:
/// `unshare(CLONE_FS)` gives the thread its own root, so the `chroot`
/// changes nothing for the rest of the process, and the thread ends with
/// the job. Fails (before running `job`) where the process may not
/// `chroot` (no CAP_SYS_CHROOT).
pub fn run<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let thread =
        std::thread::Builder::new()
            .name("unrooted".into())
            .spawn(move || -> io::Result<T> {
                // SAFETY: plain syscalls on this thread's own attributes.
                unsafe {
                    if libc::unshare(libc::CLONE_FS) != 0
                        || libc::chroot(EMPTY_ROOT.as_ptr()) != 0
                        || libc::chdir(c"/".as_ptr()) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(job())
            })?;
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_thread_sees_no_files_and_the_process_keeps_its_own() {
        if unsafe { libc::geteuid() } != 0 {
            // chroot needs root; the integration tests run the loader as root.
            assert!(super::run(|| ()).is_err());
            return;
        }
        let seen = super::run(|| std::path::Path::new("/proc/self/status").exists()).unwrap();
        assert!(!seen, "the thread still sees the process's files");
        assert!(
            std::path::Path::new("/proc/self/status").exists(),
            "the chroot leaked into the process"
        );
    }
}
