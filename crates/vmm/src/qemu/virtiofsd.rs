//! virtiofsd: one per shared directory, serving it to QEMU's `vhost-user-fs-device` over a
//! unix socket in the VM's run directory.
//!
//! ```text
//! virtiofsd --socket-path=<run>/fs<i>.sock -o source=<dir> -o cache=none
//!           -o sandbox=namespace -o no_posix_lock -o no_flock -o modcaps=-mknod
//!           -o log_level=warn
//! ```
//!
//! - Started before QEMU (QEMU connects to the socket while parsing its command line), with
//!   the same guarantees as every VMM process ([`VmmProcess`]): own process group,
//!   `PR_SET_PDEATHSIG(SIGKILL)`, pid file in the run directory (`virtiofsd<i>.pid`) so a
//!   restarted daemon finds leftovers ([`leftover_pids`]).
//! - `cache=none`: no guest page cache for file data or attributes, so every read and write
//!   goes to the host file at once. Several VMs sharing a directory, and the host, see each
//!   other's writes immediately, and an `O_APPEND` write is one `pwrite` on the host file.
//! - `sandbox=namespace`: virtiofsd pivots into the shared directory in its own mount, pid
//!   and network namespaces; the guest can reach nothing outside that directory.
//! - A read-only share: this virtiofsd has no read-only option, so it is started in a mount
//!   namespace of its own where the directory is bound onto itself read-only, recursively
//!   ([`read_only_view`]). Every write the guest asks for then fails in the host kernel with
//!   `EROFS`, whatever the guest's mount says; the host's own view stays read-write.
//! - It exits by itself when QEMU disconnects; it is killed with the VM in any case.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backend::VmmError;
use crate::process::{remove_file_if_exists, tail_file, ChildSetup, ProcessSpec, VmmProcess};
use crate::spec::{Share, VmSpec};

/// Where distributions install the C virtiofsd that QEMU 7.x ships (Debian's
/// `qemu-system-common`; Fedora's older `qemu-virtiofsd`).
pub const CANDIDATES: &[&str] = &["/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"];
/// How long virtiofsd may take to create its socket (milliseconds normally).
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(5);
/// How often a running VM checks that its virtiofsd processes are alive.
const EXIT_POLL: Duration = Duration::from_millis(250);
const LOG_TAIL_BYTES: u64 = 2048;

/// The first virtiofsd binary found on this host.
pub fn find() -> Option<PathBuf> {
    CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Files of share `index` in a run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharePaths {
    pub socket: PathBuf,
    pub log: PathBuf,
    pub pid: PathBuf,
}

impl SharePaths {
    pub fn new(run_dir: &Path, index: usize) -> SharePaths {
        SharePaths {
            socket: run_dir.join(format!("fs{index}.sock")),
            log: run_dir.join(format!("virtiofsd{index}.log")),
            pid: run_dir.join(format!("virtiofsd{index}.pid")),
        }
    }
}

/// The argv (without the program) serving `share` on `socket`.
pub fn args(share: &Share, socket: &Path) -> Result<Vec<String>, VmmError> {
    let utf8 = |what: &str, p: &Path| -> Result<String, VmmError> {
        p.to_str().map(str::to_string).ok_or_else(|| {
            VmmError::InvalidSpec(format!("{what} path {} is not UTF-8", p.display()))
        })
    };
    let source = utf8("shared directory", &share.host_path)?;
    Ok(vec![
        format!("--socket-path={}", utf8("virtiofsd socket", socket)?),
        "-o".into(),
        // virtiofsd splits -o values at commas; a backslash escapes one.
        format!(
            "source={}",
            source.replace('\\', "\\\\").replace(',', "\\,")
        ),
        "-o".into(),
        "cache=none".into(),
        "-o".into(),
        "sandbox=namespace".into(),
        // Locks are not forwarded to the host: a lock taken in one VM does not exclude
        // another VM (docs/WORKSPACES.md says so).
        "-o".into(),
        "no_posix_lock".into(),
        "-o".into(),
        "no_flock".into(),
        // virtiofsd creates files as root: with CAP_MKNOD a guest could leave a device node
        // (say, the host's disk, mode 0666) in a host directory for any host user to open.
        // FIFOs and sockets need no capability and still work.
        "-o".into(),
        "modcaps=-mknod".into(),
        "-o".into(),
        "log_level=warn".into(),
    ])
}

/// The set-up that makes `dir` read-only for the virtiofsd about to exec, and for it alone:
/// a private mount namespace in which `dir` is bound onto itself (with the mounts below it)
/// and marked read-only recursively with `mount_setattr(2)` (Linux 5.12+). virtiofsd's
/// sandbox then binds that tree again; a bind copies the read-only flag, so every guest write
/// fails with `EROFS` in the host kernel. Needs `CAP_SYS_ADMIN`, like virtiofsd's sandbox.
pub(crate) fn read_only_view(dir: &Path) -> Result<ChildSetup, VmmError> {
    let dir = CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
        VmmError::InvalidSpec(format!(
            "shared directory {} contains a NUL byte",
            dir.display()
        ))
    })?;
    Ok(Box::new(move || {
        let null = std::ptr::null::<libc::c_char>();
        let attr = libc::mount_attr {
            attr_set: libc::MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: unshare, mount and mount_setattr are plain system calls; every pointer is
        // either null where the kernel allows it, a NUL-terminated string owned by this
        // closure, or `attr`, which lives across the call and whose size is passed with it.
        // Nothing here allocates or locks (this runs between fork and exec).
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Nothing mounted below may propagate back into the host's namespace.
            if libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::mount(
                dir.as_ptr(),
                dir.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                dir.as_ptr(),
                libc::AT_RECURSIVE,
                &attr as *const libc::mount_attr,
                std::mem::size_of::<libc::mount_attr>(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }))
}

/// The virtiofsd processes of one VM.
#[derive(Default)]
pub(crate) struct Virtiofsd {
    processes: Vec<VmmProcess>,
    sockets: Vec<PathBuf>,
}

impl Virtiofsd {
    /// Starts one virtiofsd per share of `spec` and waits until each listens. On any failure
    /// the ones already started are killed and reaped before the error is returned.
    pub async fn start(binary: Option<&Path>, spec: &VmSpec) -> Result<Virtiofsd, VmmError> {
        let mut started = Virtiofsd::default();
        if spec.shares.is_empty() {
            return Ok(started);
        }
        let Some(binary) = binary else {
            return Err(VmmError::Unavailable {
                what: "sharing a directory with the guest (virtio-fs)".into(),
                why: format!(
                    "virtiofsd not found (looked for {}); install qemu-system-common",
                    CANDIDATES.join(", ")
                ),
            });
        };
        for (i, share) in spec.shares.iter().enumerate() {
            if let Err(e) = started.start_one(binary, &spec.run_dir, i, share).await {
                started.stop().await;
                return Err(e);
            }
        }
        Ok(started)
    }

    async fn start_one(
        &mut self,
        binary: &Path,
        run_dir: &Path,
        index: usize,
        share: &Share,
    ) -> Result<(), VmmError> {
        let paths = SharePaths::new(run_dir, index);
        let argv = args(share, &paths.socket)?;
        remove_file_if_exists(&paths.socket)?;
        remove_file_if_exists(&paths.pid)?;
        let child_setup = if share.read_only {
            Some(read_only_view(&share.host_path)?)
        } else {
            None
        };
        let process = VmmProcess::spawn(ProcessSpec {
            program: binary,
            args: &argv,
            log: &paths.log,
            pid_file: &paths.pid,
            child_setup,
        })
        .await
        .map_err(|e| match e {
            VmmError::Spawn { program, source } if share.read_only => VmmError::Spawn {
                program,
                source: io::Error::new(
                    source.kind(),
                    format!(
                        "cannot make {} read-only for it (this needs root and Linux 5.12 or \
                         later): {source}",
                        share.host_path.display()
                    ),
                ),
            },
            other => other,
        })?;
        self.sockets.push(paths.socket.clone());
        let deadline = Instant::now() + SOCKET_TIMEOUT;
        loop {
            if let Some(exit) = process.exited() {
                let log = log_tail(&paths.log);
                return Err(VmmError::Spawn {
                    program: binary.to_path_buf(),
                    source: io::Error::other(format!(
                        "it exited ({exit:?}) before serving {} (tag '{}'): {log}",
                        share.host_path.display(),
                        share.tag
                    )),
                });
            }
            if paths.socket.exists() {
                break;
            }
            if Instant::now() > deadline {
                process.kill_and_wait().await;
                return Err(VmmError::Spawn {
                    program: binary.to_path_buf(),
                    source: io::Error::other(format!(
                        "no socket {} after {} s: {}",
                        paths.socket.display(),
                        SOCKET_TIMEOUT.as_secs(),
                        log_tail(&paths.log)
                    )),
                });
            }
            tokio::time::sleep(POLL).await;
        }
        tracing::debug!(tag = %share.tag, pid = process.pid(), "virtiofsd started");
        self.processes.push(process);
        Ok(())
    }

    /// Kills every virtiofsd (and its sandbox child: the whole process group), waits until
    /// they are reaped and removes their sockets. Idempotent.
    pub async fn stop(&self) {
        for p in &self.processes {
            p.kill_and_wait().await;
        }
        for s in &self.sockets {
            let _ = remove_file_if_exists(s);
        }
    }

    /// Resolves with the exit of the first virtiofsd to exit; never if there is none. Polls
    /// (cheaply) so that it can run beside the VMM's own wait for the VM's whole life.
    pub async fn any_exit(&self) -> crate::backend::VmExit {
        if self.processes.is_empty() {
            return std::future::pending().await;
        }
        loop {
            if let Some(exit) = self.processes.iter().find_map(VmmProcess::exited) {
                return exit;
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// Their pids.
    #[cfg(test)]
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(VmmProcess::pid).collect()
    }
}

fn log_tail(log: &Path) -> String {
    let text: String = tail_file(log, LOG_TAIL_BYTES)
        .lines()
        .filter(|l| !l.starts_with("--- aegis: starting"))
        .collect::<Vec<_>>()
        .join("\n");
    if text.trim().is_empty() {
        "(it printed nothing)".into()
    } else {
        text
    }
}

/// Pids of virtiofsd processes that a VM in `run_dir` left behind (a daemon crash): those of
/// its `virtiofsd<i>.pid` files that are alive and whose command line serves a socket in
/// `run_dir` (a guard against pid reuse). For start-up reconciliation.
pub fn leftover_pids(run_dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("virtiofsd") && name.ends_with(".pid")) {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if serves_run_dir(pid, run_dir) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// Whether process `pid` is alive and its command line has `--socket-path=<run_dir>/...`.
pub fn serves_run_dir(pid: u32, run_dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let prefix = format!("--socket-path={}/", run_dir.display());
    cmdline
        .split(|b| *b == 0)
        .any(|arg| std::str::from_utf8(arg).is_ok_and(|a| a.starts_with(&prefix)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(path: &str) -> Share {
        Share {
            tag: "aegis-workspace".into(),
            host_path: path.into(),
            read_only: false,
        }
    }

    #[test]
    fn command_line() {
        let a = args(&share("/data/a,b\\c"), Path::new("/run/vm/fs0.sock")).unwrap();
        assert_eq!(
            a,
            [
                "--socket-path=/run/vm/fs0.sock",
                "-o",
                "source=/data/a\\,b\\\\c",
                "-o",
                "cache=none",
                "-o",
                "sandbox=namespace",
                "-o",
                "no_posix_lock",
                "-o",
                "no_flock",
                "-o",
                "modcaps=-mknod",
                "-o",
                "log_level=warn",
            ]
        );
        // Read-only is enforced by the mount namespace virtiofsd starts in, not by an option.
        let mut ro = share("/data/a,b\\c");
        ro.read_only = true;
        assert_eq!(args(&ro, Path::new("/run/vm/fs0.sock")).unwrap(), a);
    }

    #[test]
    fn paths_are_per_share() {
        let p = SharePaths::new(Path::new("/r"), 1);
        assert_eq!(p.socket, Path::new("/r/fs1.sock"));
        assert_eq!(p.pid, Path::new("/r/virtiofsd1.pid"));
        assert_eq!(p.log, Path::new("/r/virtiofsd1.log"));
    }

    #[test]
    fn leftovers_need_a_matching_command_line() {
        let dir = tempfile::tempdir().unwrap();
        // Our own pid is alive but does not serve this directory.
        std::fs::write(
            dir.path().join("virtiofsd0.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        std::fs::write(dir.path().join("virtiofsd1.pid"), "garbage").unwrap();
        assert!(leftover_pids(dir.path()).is_empty());
        assert!(leftover_pids(Path::new("/nonexistent")).is_empty());
    }

    /// A stand-in virtiofsd running `script`, and a spec sharing `<dir>/shared` through it.
    fn stand_in(dir: &Path, script: &str) -> (PathBuf, VmSpec) {
        use std::os::unix::fs::PermissionsExt;
        let shared = dir.join("shared");
        std::fs::create_dir(&shared).unwrap();
        let fake = dir.join("fake-virtiofsd");
        std::fs::write(&fake, script).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let spec = VmSpec {
            id: "v".into(),
            kernel: fake.clone(),
            initramfs: fake.clone(),
            kernel_args: vec![],
            vcpus: 1,
            memory_mib: 64,
            disks: vec![],
            shares: vec![share(shared.to_str().unwrap())],
            run_dir: dir.to_path_buf(),
        };
        (fake, spec)
    }

    /// A "virtiofsd" that creates its socket and waits: started, found as a leftover by its
    /// command line, stopped with nothing left.
    #[tokio::test]
    async fn start_and_stop_a_stand_in() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, spec) = stand_in(
            dir.path(),
            "#!/bin/sh\nsock=${1#--socket-path=}\ntouch \"$sock\"\nsleep 100\n",
        );
        let v = Virtiofsd::start(Some(&fake), &spec).await.unwrap();
        let pids = v.pids();
        assert_eq!(pids.len(), 1);
        assert_eq!(leftover_pids(dir.path()), pids);
        v.stop().await;
        assert!(leftover_pids(dir.path()).is_empty());
        assert!(!dir.path().join("fs0.sock").exists());
        assert!(
            !Path::new(&format!("/proc/{}", pids[0])).exists()
                || std::fs::read_to_string(format!("/proc/{}/stat", pids[0]))
                    .is_ok_and(|s| s.contains(") Z "))
        );
    }

    /// A read-only share: the stand-in (running as virtiofsd would, as root) cannot write
    /// into the directory, while the host still can. Needs root (CAP_SYS_ADMIN), as
    /// virtiofsd itself does.
    #[tokio::test]
    async fn a_read_only_share_is_read_only_for_virtiofsd_alone() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        let script = format!(
            "#!/bin/sh\nsock=${{1#--socket-path=}}\n\
             if echo x > '{0}/new' 2>/dev/null; then echo WROTE; else echo REFUSED; fi\n\
             if echo x >> '{0}/old' 2>/dev/null; then echo APPENDED; else echo KEPT; fi\n\
             touch \"$sock\"\nsleep 100\n",
            shared.display()
        );
        let (fake, mut spec) = stand_in(dir.path(), &script);
        std::fs::write(shared.join("old"), "host\n").unwrap();
        spec.shares[0].read_only = true;
        let v = Virtiofsd::start(Some(&fake), &spec).await.unwrap();
        v.stop().await;
        let log = std::fs::read_to_string(dir.path().join("virtiofsd0.log")).unwrap();
        assert!(log.contains("REFUSED") && log.contains("KEPT"), "{log}");
        assert!(!shared.join("new").exists());
        assert_eq!(
            std::fs::read_to_string(shared.join("old")).unwrap(),
            "host\n"
        );
        // The host's own view is untouched.
        std::fs::write(shared.join("host-write"), "ok").unwrap();
    }

    #[tokio::test]
    async fn a_dying_virtiofsd_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, spec) = stand_in(
            dir.path(),
            "#!/bin/sh\necho 'fuse: bad mount point' >&2\nexit 1\n",
        );
        match Virtiofsd::start(Some(&fake), &spec).await {
            Err(VmmError::Spawn { source, .. }) => {
                assert!(source.to_string().contains("bad mount point"), "{source}")
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a dying virtiofsd was accepted"),
        }
        match Virtiofsd::start(None, &spec).await {
            Err(VmmError::Unavailable { why, .. }) => assert!(why.contains("virtiofsd")),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("no binary, yet started"),
        }
    }
}
