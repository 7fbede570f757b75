//! VMM processes: spawned so that none outlives the daemon, waited for by one task, killed
//! as a process group.
//!
//! Three details matter:
//! - `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
//!   A tokio worker or blocking-pool thread can exit while the daemon lives on (blocking
//!   threads retire after 10 s idle; `block_in_place` turns a worker into one), which would
//!   SIGKILL a healthy VM. So every VMM is forked from one dedicated thread that lives as long
//!   as the daemon.
//! - One waiter task owns the child and publishes its exit on a watch channel, so any number
//!   of callers can wait, concurrently and repeatedly.
//! - Kills go through that task, which signals only while the child is not yet reaped: the
//!   process group id cannot have been recycled for another process.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, OnceLock};

use parking_lot::Mutex;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::{VmExit, VmmError};

/// A request to the spawner thread.
struct SpawnRequest {
    command: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The thread all VMM processes are forked from (see the module docs).
fn spawner() -> &'static Mutex<std_mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<std_mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<SpawnRequest>();
        let thread = std::thread::Builder::new()
            .name("aegis-vmm-spawner".into())
            .spawn(move || {
                for mut req in rx {
                    // The child must be registered with the caller's runtime for its exit to
                    // be observed there.
                    let _guard = req.runtime.enter();
                    let _ = req.reply.send(req.command.spawn());
                }
            });
        if let Err(e) = thread {
            // Without the thread every spawn fails with a clear error (the receiver is gone).
            tracing::error!(error = %e, "cannot start the VMM spawner thread");
        }
        Mutex::new(tx)
    })
}

/// What to run.
pub(crate) struct ProcessSpec<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    /// stdout and stderr are appended here, after a header line with the command.
    pub log: &'a Path,
    /// The pid is written here (atomically) once the process runs.
    pub pid_file: &'a Path,
    /// Runs in the forked child after the common set-up, just before exec. It must only make
    /// async-signal-safe calls: no allocation, no locks.
    pub child_setup: Option<ChildSetup>,
}

/// Extra set-up of a child process before exec (see [`ProcessSpec::child_setup`]).
pub(crate) type ChildSetup = Box<dyn FnMut() -> io::Result<()> + Send + Sync>;

/// A running (or exited) VMM process.
pub(crate) struct VmmProcess {
    pid: u32,
    exit: watch::Receiver<Option<VmExit>>,
    kill: mpsc::UnboundedSender<()>,
}

impl VmmProcess {
    /// Spawns `spec` in its own process group with `PDEATHSIG=SIGKILL`, stdin null.
    pub async fn spawn(spec: ProcessSpec<'_>) -> Result<VmmProcess, VmmError> {
        let log = open_log(spec.log, spec.program, spec.args)?;
        let log_err = log.try_clone().map_err(|e| VmmError::Io {
            op: "duplicate handle of",
            path: spec.log.to_path_buf(),
            source: e,
        })?;
        let mut command = Command::new(spec.program);
        command
            .args(spec.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true);
        // SAFETY: getpid has no preconditions.
        let daemon = unsafe { libc::getpid() };
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (setpgid, prctl, getppid); it neither allocates nor
        // takes locks (io::Error::last_os_error/from_raw_os_error do not allocate).
        unsafe {
            command.pre_exec(move || {
                // Own process group: a kill reaches helpers the VMM forks (migration `exec:`).
                if libc::setpgid(0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // No VMM outlives the daemon, however the daemon dies.
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // The daemon may have died between fork and prctl.
                if libc::getppid() != daemon {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        if let Some(setup) = spec.child_setup {
            // SAFETY: the caller's closure runs in the forked child before exec; its contract
            // (ProcessSpec::child_setup) is the same as above: async-signal-safe calls only.
            unsafe {
                command.pre_exec(setup);
            }
        }

        let (reply, reply_rx) = oneshot::channel();
        let request = SpawnRequest {
            command,
            runtime: tokio::runtime::Handle::current(),
            reply,
        };
        let spawn_error = |e: io::Error| VmmError::Spawn {
            program: spec.program.to_path_buf(),
            source: e,
        };
        spawner()
            .lock()
            .send(request)
            .map_err(|_| spawn_error(io::Error::other("the VMM spawner thread is gone")))?;
        let mut child = reply_rx
            .await
            .map_err(|_| spawn_error(io::Error::other("the VMM spawner thread is gone")))?
            .map_err(spawn_error)?;
        let Some(pid) = child.id() else {
            // Exited and reaped already: cannot happen before we waited, but do not panic.
            let status = child.wait().await.ok();
            return Err(spawn_error(io::Error::other(format!(
                "exited at once ({status:?})"
            ))));
        };

        let (exit_tx, exit_rx) = watch::channel(None);
        let (kill_tx, kill_rx) = mpsc::unbounded_channel();
        tokio::spawn(wait_task(child, pid, exit_tx, kill_rx));
        let process = VmmProcess {
            pid,
            exit: exit_rx,
            kill: kill_tx,
        };
        if let Err(e) = write_atomic(spec.pid_file, format!("{pid}\n").as_bytes()) {
            process.kill_and_wait().await;
            return Err(e);
        }
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit, if the process has exited.
    pub fn exited(&self) -> Option<VmExit> {
        self.exit.borrow().clone()
    }

    /// Resolves when the process has exited (and been reaped).
    pub async fn wait(&self) -> VmExit {
        let mut rx = self.exit.clone();
        loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The waiter task is gone without publishing: its runtime shut down, and the
                // child was killed on drop.
                return rx.borrow().clone().unwrap_or(VmExit::Killed);
            }
        }
    }

    /// Asks for SIGKILL of the whole process group; returns at once.
    pub fn kill(&self) {
        let _ = self.kill.send(());
    }

    pub async fn kill_and_wait(&self) -> VmExit {
        self.kill();
        self.wait().await
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        // A VM nobody holds is a VM nobody can stop: kill it.
        self.kill();
    }
}

async fn wait_task(
    mut child: Child,
    pid: u32,
    exit: watch::Sender<Option<VmExit>>,
    mut kill: mpsc::UnboundedReceiver<()>,
) {
    let killed = AtomicBool::new(false);
    let mut kill_open = true;
    let status = loop {
        tokio::select! {
            biased;
            status = child.wait() => break status,
            req = kill.recv(), if kill_open => {
                if req.is_none() {
                    // Every handle is gone; Drop already asked for a kill, nothing to wait for.
                    kill_open = false;
                    continue;
                }
                // The child is not reaped yet (wait() above has not returned), so its pid,
                // which is also its process group id, still belongs to it.
                killed.store(true, Ordering::Release);
                let pgid = libc::pid_t::try_from(pid).unwrap_or(libc::pid_t::MAX);
                // SAFETY: sending a signal has no memory-safety implications.
                let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
                if rc != 0 {
                    // The group may be gone if the leader has not called setpgid yet; fall
                    // back to the leader itself.
                    let _ = child.start_kill();
                }
            }
        }
    };
    let result = match status {
        Ok(_) if killed.load(Ordering::Acquire) => VmExit::Killed,
        Ok(s) if s.success() => VmExit::PoweredOff,
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            VmExit::Failed {
                code: s.code(),
                signal: s.signal(),
            }
        }
        Err(e) => {
            tracing::warn!(pid, error = %e, "cannot wait for VMM process");
            VmExit::Failed {
                code: None,
                signal: None,
            }
        }
    };
    tracing::debug!(pid, exit = ?result, "VMM process exited");
    let _ = exit.send(Some(result));
}

fn open_log(path: &Path, program: &Path, args: &[String]) -> Result<File, VmmError> {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| VmmError::Io {
            op: "open",
            path: path.to_path_buf(),
            source: e,
        })?;
    let mut line: OsString = "--- aegis: starting ".into();
    line.push(program.as_os_str());
    for a in args {
        line.push(" ");
        line.push(a);
    }
    line.push("\n");
    use std::os::unix::ffi::OsStrExt;
    log.write_all(line.as_bytes()).map_err(|e| VmmError::Io {
        op: "write",
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(log)
}

/// Writes `bytes` to `path` via a temporary file in the same directory and a rename, so a
/// reader never sees a half-written file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), VmmError> {
    let tmp = tmp_path(path);
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| VmmError::Io {
            op,
            path: p,
            source,
        }
    };
    let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The last `max` bytes of a file, decoded lossily, starting at a line boundary when one is
/// near. Empty if the file cannot be read.
pub(crate) fn tail_file(path: &Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        if let Some(nl) = text.find('\n') {
            text.drain(..=nl);
        }
    }
    text
}

/// Removes a file, ignoring "not found".
pub(crate) fn remove_file_if_exists(path: &Path) -> Result<(), VmmError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VmmError::Io {
            op: "remove",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Files {
        log: PathBuf,
        pid: PathBuf,
    }

    fn files(dir: &Path) -> Files {
        Files {
            log: dir.join("log"),
            pid: dir.join("pid"),
        }
    }

    fn spec<'a>(f: &'a Files, args: &'a [String], program: &'a Path) -> ProcessSpec<'a> {
        ProcessSpec {
            program,
            args,
            log: &f.log,
            pid_file: &f.pid,
            child_setup: None,
        }
    }

    #[tokio::test]
    async fn exit_status_is_reported_to_every_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let args = vec![
            "-c".to_string(),
            "echo out; echo err >&2; exit 3".to_string(),
        ];
        let p = VmmProcess::spawn(spec(&files(dir.path()), &args, Path::new("/bin/sh")))
            .await
            .unwrap();
        let pid: u32 = std::fs::read_to_string(dir.path().join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(pid, p.pid());
        let (a, b) = tokio::join!(p.wait(), p.wait());
        let failed = VmExit::Failed {
            code: Some(3),
            signal: None,
        };
        assert_eq!(a, failed);
        assert_eq!(b, failed);
        assert_eq!(p.wait().await, failed);
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert!(log.starts_with("--- aegis: starting /bin/sh -c"), "{log}");
        assert!(log.contains("out\n") && log.contains("err\n"), "{log}");
    }

    #[tokio::test]
    async fn kill_reaches_the_whole_group_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child.pid");
        let script = format!("sleep 100 & echo $! > {}; wait", marker.display());
        let args = vec!["-c".to_string(), script];
        let p = VmmProcess::spawn(spec(&files(dir.path()), &args, Path::new("/bin/sh")))
            .await
            .unwrap();
        let child_pid = loop {
            if let Ok(s) = std::fs::read_to_string(&marker) {
                if let Ok(pid) = s.trim().parse::<i32>() {
                    break pid;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(p.kill_and_wait().await, VmExit::Killed);
        assert_eq!(p.kill_and_wait().await, VmExit::Killed);
        // The grandchild got SIGKILL too (it is reaped by init; give it a moment).
        let mut gone = false;
        for _ in 0..200 {
            let stat = std::fs::read_to_string(format!("/proc/{child_pid}/stat"));
            if stat.map_or(true, |s| s.contains(") Z ")) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(gone, "grandchild {child_pid} survived the group kill");
    }

    #[tokio::test]
    async fn clean_exit_is_powered_off() {
        let dir = tempfile::tempdir().unwrap();
        let args = vec!["-c".to_string(), "exit 0".to_string()];
        let p = VmmProcess::spawn(spec(&files(dir.path()), &args, Path::new("/bin/sh")))
            .await
            .unwrap();
        assert_eq!(p.wait().await, VmExit::PoweredOff);
        assert_eq!(p.exited(), Some(VmExit::PoweredOff));
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let r = VmmProcess::spawn(spec(
            &files(dir.path()),
            &[],
            Path::new("/nonexistent/qemu"),
        ))
        .await;
        assert!(matches!(r, Err(VmmError::Spawn { .. })));
    }

    #[test]
    fn tail_starts_at_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "aaaa\nbbbb\ncccc\n").unwrap();
        assert_eq!(tail_file(&p, 7), "cccc\n");
        assert_eq!(tail_file(&p, 100), "aaaa\nbbbb\ncccc\n");
        assert_eq!(tail_file(&dir.path().join("none"), 10), "");
    }
}
