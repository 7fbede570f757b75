//! A running process: spawning it, pumping its stdio, reporting its exit.
//!
//! Output is pumped byte-exact with no size or line limits; back-pressure is the session's
//! flow control (a host that reads slowly makes the pipe fill and the process block, as with
//! any pipe). When the process exits, its stdout and stderr are drained until EOF, but at most
//! [`DRAIN_AFTER_EXIT`] longer: a background grandchild that inherited them would otherwise
//! keep the streams open forever. Then the streams are finished and only then `Exited` is
//! sent, so the host has seen all output when it learns the exit status.
//!
//! If the session ends while a process runs, the process keeps running; its output is read
//! (so it never blocks on a full pipe) and kept, up to [`DETACHED_BACKLOG`] per stream (the
//! oldest bytes go first), until a host re-attaches it to streams of a new session
//! (`Attach`: a daemon that restarted, a VM restored from a snapshot); then the backlog is
//! sent first. Its exit is reported on whichever session is current when it exits (a host
//! that reconnects learns how its process ended).

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use aegis_proto::session::{RecvHalf, SendHalf};
use aegis_proto::{ExitStatus, GuestMessage, ProcId, Session, SpawnError, StreamId};
use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch, Notify};

use crate::command::{self, Prepared};
use crate::reaper::Reaper;

/// How long output pipes are drained after the process exited.
pub(crate) const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// Read size of the output pumps (one session data frame).
const CHUNK: usize = 64 * 1024;
/// Capacity asked for process pipes.
const PIPE_SIZE: libc::c_int = 256 * 1024;
/// Output kept per stream while no host is attached.
pub(crate) const DETACHED_BACKLOG: usize = 1 << 20;

/// A running process.
struct Entry {
    /// Also the process group id: every process leads its own group.
    pid: libc::pid_t,
    /// Where its output pumps take new streams from: stdout, then stderr unless merged.
    routes: Vec<mpsc::UnboundedSender<SendHalf>>,
}

/// The processes an agent runs, by host-chosen id.
#[derive(Default)]
pub(crate) struct Processes {
    table: Mutex<HashMap<ProcId, Entry>>,
    changed: Notify,
    /// The session being served now, for exits of processes whose own session is gone.
    current: Mutex<Option<Session>>,
}

impl Processes {
    pub(crate) fn pid(&self, id: ProcId) -> Option<libc::pid_t> {
        self.table.lock().get(&id).map(|e| e.pid)
    }

    /// Sends the further output of process `id` on streams `stdout` and `stderr` of
    /// `session` (one stream when the process's stdout and stderr are one pipe).
    pub(crate) fn attach(
        &self,
        session: &Session,
        id: ProcId,
        stdout: StreamId,
        stderr: StreamId,
    ) -> Result<(), String> {
        let table = self.table.lock();
        let entry = table
            .get(&id)
            .ok_or_else(|| format!("no running process has id {id}"))?;
        for (route, sid) in entry.routes.iter().zip([stdout, stderr]) {
            // A pump that already ended (the process closed that output) has nothing to
            // send: its stream simply stays empty.
            let _ = route.send(session.stream(sid).send);
        }
        Ok(())
    }

    /// Records the session being served (or none between sessions).
    pub(crate) fn set_current(&self, session: Option<Session>) {
        *self.current.lock() = session;
    }

    /// Where to report an exit: the process's own session if it is still open, else the
    /// current one.
    fn report_to(&self, own: &Session) -> Option<Session> {
        if !own.is_closed() {
            return Some(own.clone());
        }
        self.current.lock().clone().filter(|s| !s.is_closed())
    }

    pub(crate) fn pids(&self) -> Vec<libc::pid_t> {
        self.table.lock().values().map(|e| e.pid).collect()
    }

    /// Records a process started elsewhere (a terminal's, `pty`), for `Signal` and shutdown.
    pub(crate) fn track(&self, id: ProcId, pid: libc::pid_t) {
        self.table.lock().insert(
            id,
            Entry {
                pid,
                routes: Vec::new(),
            },
        );
    }

    pub(crate) fn remove(&self, id: ProcId) {
        self.table.lock().remove(&id);
        self.changed.notify_waiters();
    }

    /// Sends `signal` to the process group of every process.
    pub(crate) fn signal_all(&self, signal: libc::c_int) {
        for pid in self.pids() {
            signal_group(pid, signal);
        }
    }

    /// Resolves once no process is left (its exit reported, or given up on).
    pub(crate) async fn all_gone(&self) {
        loop {
            let notified = self.changed.notified();
            if self.table.lock().is_empty() {
                return;
            }
            notified.await;
        }
    }
}

/// `kill(-pgid, signal)`; a group that no longer exists is not an error.
pub(crate) fn signal_group(pgid: libc::pid_t, signal: libc::c_int) -> bool {
    // SAFETY: kill(2) takes plain integers; a negative pid addresses a process group.
    let r = unsafe { libc::kill(-pgid, signal) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pgid, signal, error = %e, "cannot signal process group");
        }
        return false;
    }
    true
}

/// Where the process's stdio goes, as named by the host's `Spawn`.
pub(crate) struct StdioStreams {
    pub stdin: Option<StreamId>,
    pub stdout: StreamId,
    pub stderr: StreamId,
}

/// Starts process `id` and sends `Spawned`; then a task pumps its stdio and reports its exit
/// on `session`. On error nothing was started and the caller reports `SpawnFailed`.
pub(crate) async fn start(
    session: &Session,
    reaper: &Reaper,
    procs: &Arc<Processes>,
    id: ProcId,
    prepared: Prepared,
    streams: StdioStreams,
) -> Result<(), SpawnError> {
    let Prepared {
        mut command,
        program,
    } = prepared;
    if procs.table.lock().contains_key(&id) {
        return Err(SpawnError {
            kind: aegis_proto::SpawnErrorKind::Invalid,
            message: format!("cannot run `{program}`: process id {id} is already in use"),
        });
    }
    let io_err = |e: io::Error| command::spawn_error(&program, &e);
    // stdout == stderr asks for one interleaved stream (2>&1): one pipe for both.
    let merged = streams.stdout == streams.stderr;
    let (out_r, out_w) = pipe_pair().map_err(io_err)?;
    let err_pipe = if merged {
        None
    } else {
        Some(pipe_pair().map_err(io_err)?)
    };
    let in_pipe = match streams.stdin {
        Some(_) => Some(pipe_pair().map_err(io_err)?),
        None => None,
    };
    let (err_r, err_w) = match err_pipe {
        Some((r, w)) => (Some(r), w),
        None => (None, out_w.try_clone().map_err(io_err)?),
    };
    command
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w));
    let in_w = match in_pipe {
        Some((r, w)) => {
            command.stdin(Stdio::from(r));
            Some(w)
        }
        None => None,
    };

    let (pid, exited) = reaper
        .spawn_tracked(move || {
            let child = command.spawn()?;
            let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
            // Dropping the command closes our copies of the child's pipe ends, so EOF on
            // stdout/stderr means the child (and whatever inherited them) closed them.
            drop(command);
            Ok((pid, pid))
        })
        .map_err(io_err)?;
    let (out_route, out_routes) = mpsc::unbounded_channel();
    let mut routes = vec![out_route];
    let err_routes = if merged {
        None
    } else {
        let (tx, rx) = mpsc::unbounded_channel();
        routes.push(tx);
        Some(rx)
    };
    procs.table.lock().insert(id, Entry { pid, routes });

    let open = |fd: OwnedFd| pipe::Receiver::from_owned_fd(fd);
    let out_rx = open(out_r);
    let err_rx = err_r.map(open).transpose();
    let in_tx = in_w.map(pipe::Sender::from_owned_fd).transpose();
    let (out_rx, err_rx, in_tx) = match (out_rx, err_rx, in_tx) {
        (Ok(o), Ok(e), Ok(i)) => (o, e, i),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            // Cannot happen for fresh pipes; do not leave the process running unobserved.
            signal_group(pid, libc::SIGKILL);
            tracing::error!(id, error = %e, "cannot register the process's pipes");
            let procs = procs.clone();
            tokio::spawn(async move {
                let _ = exited.await;
                procs.remove(id);
            });
            return Err(io_err(e));
        }
    };

    let pid_u32 = u32::try_from(pid).unwrap_or_default();
    // Spawned goes out before any byte of output (the pumps start below).
    if let Err(e) = session
        .send(GuestMessage::Spawned { id, pid: pid_u32 })
        .await
    {
        tracing::debug!(id, error = %e, "spawn not reported: session gone");
    }

    // Claim each distinct stream once: stdin and stdout may share one bidirectional stream.
    let mut claimed: HashMap<StreamId, (Option<RecvHalf>, Option<SendHalf>)> = HashMap::new();
    for sid in [streams.stdout, streams.stderr]
        .into_iter()
        .chain(streams.stdin)
    {
        claimed.entry(sid).or_insert_with(|| {
            let s = session.stream(sid);
            (Some(s.recv), Some(s.send))
        });
    }
    let stdin_rx = streams
        .stdin
        .and_then(|sid| claimed.get_mut(&sid).and_then(|h| h.0.take()));
    let stdout_tx = claimed.get_mut(&streams.stdout).and_then(|h| h.1.take());
    let stderr_tx = if merged {
        None
    } else {
        claimed.get_mut(&streams.stderr).and_then(|h| h.1.take())
    };
    // Halves nobody uses (the receive side of an output stream, ...) are dropped here.
    drop(claimed);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut pumps = Vec::new();
    pumps.push(tokio::spawn(pump_output(
        out_rx,
        Output::new(stdout_tx, out_routes),
        stop_rx.clone(),
    )));
    if let (Some(err_rx), Some(err_routes)) = (err_rx, err_routes) {
        pumps.push(tokio::spawn(pump_output(
            err_rx,
            Output::new(stderr_tx, err_routes),
            stop_rx,
        )));
    }
    let stdin_pump = match (stdin_rx, in_tx) {
        (Some(rx), Some(tx)) => Some(tokio::spawn(pump_input(rx, tx))),
        _ => None,
    };

    let session = session.clone();
    let procs = procs.clone();
    tokio::spawn(async move {
        let status = exited.await.unwrap_or_else(|_| {
            tracing::warn!(id, "reaper gone before the process exited");
            ExitStatus::Signal(libc::SIGKILL)
        });
        tracing::debug!(id, pid, ?status, "process exited");
        let drained = async move {
            for p in pumps {
                let _ = p.await;
            }
        };
        tokio::pin!(drained);
        if tokio::time::timeout(DRAIN_AFTER_EXIT, &mut drained)
            .await
            .is_err()
        {
            tracing::debug!(id, "output still open after exit; finishing the streams");
            let _ = stop_tx.send(true);
            drained.await;
        }
        if let Some(p) = stdin_pump {
            p.abort();
        }
        match procs.report_to(&session) {
            Some(s) => {
                if let Err(e) = s.send(GuestMessage::Exited { id, status }).await {
                    tracing::debug!(id, error = %e, "exit not reported: session gone");
                }
            }
            None => tracing::debug!(id, ?status, "exit not reported: no host connected"),
        }
        procs.remove(id);
    });
    Ok(())
}

/// A pipe with both ends close-on-exec; the child's end is dup'ed onto its stdio by spawn.
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A larger pipe means fewer, larger reads and fewer wake-ups per megabyte, which counts
    // in an emulated guest. Best effort: the default (64 KiB) works too.
    // SAFETY: F_SETPIPE_SZ on a pipe we own, with an integer argument.
    unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    Ok((r, w))
}

/// Where one output pipe goes: a stream of the current session, or, while no host is
/// attached, a bounded backlog.
struct Output {
    tx: Option<SendHalf>,
    /// New streams from `Attach`.
    routes: mpsc::UnboundedReceiver<SendHalf>,
    backlog: BytesMut,
}

impl Output {
    fn new(tx: Option<SendHalf>, routes: mpsc::UnboundedReceiver<SendHalf>) -> Output {
        Output {
            tx,
            routes,
            backlog: BytesMut::new(),
        }
    }

    /// Sends `buf` (after any backlog) on the attached stream, or keeps it.
    async fn forward(&mut self, buf: &mut BytesMut) {
        self.backlog.extend_from_slice(&buf.split());
        if let Some(s) = self.tx.as_mut() {
            let data = self.backlog.split().freeze();
            if let Err(e) = s.send(data.clone()).await {
                // The host reset the stream or the session ended: keep the output for the
                // next host that attaches.
                tracing::debug!(error = %e, "output stream gone; keeping output until a host attaches");
                self.tx = None;
                self.backlog.extend_from_slice(&data);
            }
        }
        if self.backlog.len() > DETACHED_BACKLOG {
            let excess = self.backlog.len() - DETACHED_BACKLOG;
            let _ = self.backlog.split_to(excess);
        }
    }

    /// Takes the stream of a new `Attach` and sends the backlog on it.
    async fn attach(&mut self, tx: SendHalf) {
        if let Some(mut old) = self.tx.replace(tx) {
            let _ = old.finish().await;
        }
        let mut none = BytesMut::new();
        self.forward(&mut none).await;
    }
}

/// Copies the pipe to the output until EOF, or until `stop` is raised while the pipe is idle
/// (then whatever is already buffered in the pipe is still sent). Without an attached host
/// the pipe is still drained so the process never blocks on it.
async fn pump_output(mut pipe: pipe::Receiver, mut out: Output, mut stop: watch::Receiver<bool>) {
    enum Event {
        Attach(SendHalf),
        Read(io::Result<usize>),
        Stop,
    }
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        buf.reserve(CHUNK);
        let event = tokio::select! {
            biased;
            Some(tx) = out.routes.recv() => Event::Attach(tx),
            r = pipe.read_buf(&mut buf) => Event::Read(r),
            _ = stop.wait_for(|s| *s) => Event::Stop,
        };
        let read = match event {
            Event::Attach(tx) => {
                out.attach(tx).await;
                continue;
            }
            Event::Stop => {
                drain_ready(&pipe, &mut buf, &mut out).await;
                break;
            }
            Event::Read(r) => r,
        };
        match read {
            Ok(0) => break,
            Ok(_) => out.forward(&mut buf).await,
            Err(e) => {
                tracing::debug!(error = %e, "reading process output failed");
                break;
            }
        }
    }
    if let Some(mut tx) = out.tx {
        let _ = tx.finish().await;
    }
}

/// Sends what `pipe` holds right now, without waiting for more.
async fn drain_ready(pipe: &pipe::Receiver, buf: &mut BytesMut, out: &mut Output) {
    let mut chunk = vec![0u8; CHUNK];
    loop {
        match pipe.try_read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                out.forward(buf).await;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Feeds the stream into the process's stdin; closes stdin at the end of the stream.
async fn pump_input(mut rx: RecvHalf, mut pipe: pipe::Sender) {
    loop {
        match rx.recv().await {
            Ok(Some(data)) => {
                if let Err(e) = pipe.write_all(&data).await {
                    // The process closed its stdin (EPIPE): nothing more to deliver.
                    tracing::debug!(error = %e, "writing to stdin failed");
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "stdin stream ended abnormally");
                return;
            }
        }
    }
}
