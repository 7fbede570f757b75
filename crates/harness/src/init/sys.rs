//! Thin, checked wrappers over the system calls PID 1 needs. Each returns `io::Result` and
//! leaves the context (what was being done, to which path) to the caller.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// mount(2). `source`/`fstype`/`data` may be absent.
pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let opt = |s: Option<&str>| -> io::Result<Option<CString>> {
        s.map(|s| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput)))
            .transpose()
    };
    let (source, fstype, data) = (opt(source)?, opt(fstype)?, opt(data)?);
    let target = cstr(target)?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the call.
    check(unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    })
}

/// umount2(2).
pub fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cstr(target)?;
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::umount2(target.as_ptr(), flags) })
}

/// chroot(2).
pub fn chroot(path: &Path) -> io::Result<()> {
    let path = cstr(path)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::chroot(path.as_ptr()) })
}

/// sethostname(2).
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
}

/// umask(2).
pub fn umask(mask: libc::mode_t) {
    // SAFETY: umask cannot fail and touches no memory.
    unsafe { libc::umask(mask) };
}

/// sync(2).
pub fn sync() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// `kill(-1, signal)`: every process except PID 1.
pub fn kill_all_processes(signal: libc::c_int) {
    // SAFETY: kill(2) takes plain integers.
    unsafe { libc::kill(-1, signal) };
}

/// Reaps every exited child without blocking; true when no children are left at all.
pub fn reap_all() -> bool {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`, a valid c_int on our stack.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            continue;
        }
        if pid < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return e.raw_os_error() == Some(libc::ECHILD);
        }
        return false;
    }
}

/// reboot(2) with `cmd` (`RB_AUTOBOOT`, `RB_POWER_OFF`); returns only on failure.
pub fn reboot(cmd: libc::c_int) -> io::Error {
    // SAFETY: reboot(2) takes a plain integer command.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// The kernel release, as `uname -r` prints it.
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the struct we pass.
    if unsafe { libc::uname(&mut u) } < 0 {
        return String::from("unknown");
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Seconds since boot (`CLOCK_BOOTTIME`), for log lines and timings.
pub fn uptime() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Whether file descriptor `fd` is open.
pub fn fd_is_open(fd: libc::c_int) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}
