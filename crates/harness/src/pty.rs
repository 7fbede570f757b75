//! A process on a pseudo-terminal (`SpawnPty`): `openpty`, the slave as the process's
//! controlling terminal and stdio, the master pumped to and from two session streams.
//!
//! The end of the stdin stream means the host's client went away (a terminal never sends
//! EOF, Ctrl-D is a byte): the terminal is hung up, i.e. the process group gets SIGHUP, as
//! when an ssh connection drops. `Resize` sets the window size (the kernel sends SIGWINCH).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;

use aegis_proto::{ExitStatus, GuestMessage, ProcId, Session, SpawnError, StreamId};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::unix::AsyncFd;

use crate::command::{self, Prepared};
use crate::process::{signal_group, Processes, DRAIN_AFTER_EXIT};
use crate::reaper::Reaper;

/// Read size of the output pump.
const CHUNK: usize = 64 * 1024;

/// The terminals of running `SpawnPty` processes, for `Resize`.
#[derive(Default)]
pub(crate) struct Ptys(Mutex<HashMap<ProcId, Arc<AsyncFd<OwnedFd>>>>);

impl Ptys {
    /// Sets the window size of process `id`'s terminal; false if it has none (any more).
    pub(crate) fn resize(&self, id: ProcId, rows: u16, cols: u16) -> bool {
        let Some(master) = self.0.lock().get(&id).cloned() else {
            return false;
        };
        let ws = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, valid for the call.
        let r = unsafe { libc::ioctl(master.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        r == 0
    }
}

fn winsize(rows: u16, cols: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// A new terminal: (master, non-blocking; slave), both close-on-exec.
fn open(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    let ws = winsize(rows, cols);
    // SAFETY: openpty writes two descriptors; the name pointer may be null, the termios
    // pointer is null (defaults) and the winsize pointer is valid for the call.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded: both descriptors are open and owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for (fd, flags) in [(&master, libc::O_NONBLOCK), (&slave, 0)] {
        // SAFETY: fcntl on descriptors we own, with integer arguments.
        unsafe {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
            let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | flags);
        }
    }
    Ok((master, slave))
}

/// The streams of a `SpawnPty`.
pub(crate) struct PtyStreams {
    pub rows: u16,
    pub cols: u16,
    pub stdin: StreamId,
    pub output: StreamId,
}

/// Starts process `id` on a new terminal and sends `Spawned`; then tasks pump the terminal
/// and report the exit. On error nothing was started and the caller reports `SpawnFailed`.
pub(crate) async fn start(
    session: &Session,
    reaper: &Reaper,
    procs: &Arc<Processes>,
    ptys: &Arc<Ptys>,
    id: ProcId,
    prepared: Prepared,
    streams: PtyStreams,
) -> Result<(), SpawnError> {
    let Prepared {
        mut command,
        program,
    } = prepared;
    let io_err = |e: io::Error| command::spawn_error(&program, &e);
    if procs.pid(id).is_some() {
        return Err(command::spawn_error(
            &program,
            &io::Error::other(format!("process id {id} is already in use")),
        ));
    }
    let (master, slave) = open(streams.rows, streams.cols).map_err(io_err)?;
    command
        .stdin(Stdio::from(slave.try_clone().map_err(io_err)?))
        .stdout(Stdio::from(slave.try_clone().map_err(io_err)?))
        .stderr(Stdio::from(slave));
    // SAFETY: runs in the forked child after setsid (registered first by `prepare`) and only
    // calls ioctl(2), async-signal-safe, on the child's own stdin.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            // The terminal becomes the controlling terminal of the new session: Ctrl-C
            // typed into it signals the process's foreground group.
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (pid, exited) = reaper
        .spawn_tracked(move || {
            let child = command.spawn()?;
            let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
            // Our copies of the slave close here: EIO on the master means the process (and
            // whatever inherited the terminal) closed it.
            drop(command);
            Ok((pid, pid))
        })
        .map_err(io_err)?;
    procs.track(id, pid);
    // SAFETY: an OwnedFd always returns the descriptor it owns, which stays open until the
    // AsyncFd (its only owner) is dropped.
    let master = match unsafe { AsyncFd::register(master) } {
        Ok(m) => Arc::new(m),
        Err(e) => {
            let e = io::Error::other(e.to_string());
            signal_group(pid, libc::SIGKILL);
            let procs = procs.clone();
            tokio::spawn(async move {
                let _ = exited.await;
                procs.remove(id);
            });
            return Err(io_err(e));
        }
    };
    ptys.0.lock().insert(id, master.clone());
    let pid_u32 = u32::try_from(pid).unwrap_or_default();
    if let Err(e) = session
        .send(GuestMessage::Spawned { id, pid: pid_u32 })
        .await
    {
        tracing::debug!(id, error = %e, "spawn not reported: session gone");
    }

    let (stdin_rx, output_tx) = if streams.stdin == streams.output {
        let s = session.stream(streams.stdin);
        (s.recv, s.send)
    } else {
        (
            session.stream(streams.stdin).recv,
            session.stream(streams.output).send,
        )
    };
    let output = tokio::spawn(pump_output(master.clone(), output_tx));
    let input = tokio::spawn(pump_input(master, stdin_rx, pid));

    let (session, procs, ptys) = (session.clone(), procs.clone(), ptys.clone());
    tokio::spawn(async move {
        let status = exited.await.unwrap_or(ExitStatus::Signal(libc::SIGKILL));
        tracing::debug!(id, pid, ?status, "pty process exited");
        // A background child that kept the terminal open would hold the output forever.
        if tokio::time::timeout(DRAIN_AFTER_EXIT, output)
            .await
            .is_err()
        {
            tracing::debug!(id, "terminal still open after exit; finishing the stream");
        }
        input.abort();
        ptys.0.lock().remove(&id);
        if let Err(e) = session.send(GuestMessage::Exited { id, status }).await {
            tracing::debug!(id, error = %e, "exit not reported: session gone");
        }
        procs.remove(id);
    });
    Ok(())
}

/// Copies what the terminal shows to the output stream until the terminal closes (EIO).
async fn pump_output(
    master: Arc<AsyncFd<OwnedFd>>,
    mut tx: aegis_proto::session::SendHalf,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut ready = master.readable().await?;
        let read = ready.try_io(|fd| {
            // SAFETY: read(2) into a buffer we own, at most its length.
            let n =
                unsafe { libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            usize::try_from(n).map_err(|_| io::Error::last_os_error())
        });
        match read {
            Err(_would_block) => continue,
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    break;
                }
            }
            // EIO: every slave descriptor is closed.
            Ok(Err(_)) => break,
        }
    }
    let _ = tx.finish().await;
    Ok(())
}

/// Types the stdin stream into the terminal; its end hangs the terminal up.
async fn pump_input(
    master: Arc<AsyncFd<OwnedFd>>,
    mut rx: aegis_proto::session::RecvHalf,
    pid: libc::pid_t,
) {
    while let Ok(Some(data)) = rx.recv().await {
        let mut rest = &data[..];
        while !rest.is_empty() {
            let Ok(mut ready) = master.writable().await else {
                return;
            };
            let written = ready.try_io(|fd| {
                // SAFETY: write(2) from a slice we hold, at most its length.
                let n = unsafe {
                    libc::write(fd.get_ref().as_raw_fd(), rest.as_ptr().cast(), rest.len())
                };
                usize::try_from(n).map_err(|_| io::Error::last_os_error())
            });
            match written {
                Err(_would_block) => continue,
                Ok(Ok(n)) => rest = &rest[n..],
                Ok(Err(_)) => return,
            }
        }
    }
    tracing::debug!(pid, "terminal input ended: hanging up");
    signal_group(pid, libc::SIGHUP);
}
