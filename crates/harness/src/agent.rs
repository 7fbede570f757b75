//! The agent: serves host sessions and owns the processes they start.
//!
//! An [`Agent`] outlives its sessions. When the host goes away (a daemon restart, a VM
//! restored from a snapshot) the processes keep running and the next [`Agent::serve`] call
//! serves the next host on the same agent.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aegis_proto::{GuestMessage, HostMessage, Session, Side, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::process::{self, Processes, StdioStreams};
use crate::reaper::Reaper;
use crate::session_io::{self, BoxedChannel, IoControl};
use crate::{archive, clock, command, files, forward, watch};

/// How long processes get between SIGTERM and SIGKILL on `Shutdown`.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for killed processes to be reported.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How long `ShuttingDown` may take to reach the channel.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// True when running as PID 1 in a guest: reap every orphan with waitpid(-1). False in-process
    /// on a host (fake backend): only ever wait for our own children's pids.
    pub pid1: bool,
    /// Base environment of spawned processes (PATH, HOME, TERM...), before the request's env.
    pub base_env: Vec<(String, String)>,
    /// Reported in GuestMessage::Hello.
    pub kernel_release: String,
    /// Directory that guest absolute paths are relative to for ReadPath and cwd; "/" in a guest,
    /// a temp dir for the fake backend. (Processes are NOT chrooted; this is only for ReadPath/cwd.)
    pub root: PathBuf,
}

/// Why [`Agent::serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The host asked for `Shutdown`; every process has been stopped and `ShuttingDown` sent.
    Shutdown,
    /// The connection ended; processes keep running.
    Disconnected,
}

/// How one session ended.
enum Outcome {
    End(SessionEnd),
    /// A second host Hello: serve a new session on the same channel.
    NewHost,
}

/// The guest agent. Owns running processes; outlives one session (the host may reconnect).
pub struct Agent {
    inner: Arc<Inner>,
}

struct Inner {
    config: AgentConfig,
    boot_id: String,
    reaper: Arc<Reaper>,
    procs: Arc<Processes>,
    ptys: Arc<crate::pty::Ptys>,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Agent {
        Agent {
            inner: Arc::new(Inner {
                reaper: Reaper::new(config.pid1),
                boot_id: new_boot_id(),
                procs: Arc::default(),
                ptys: Arc::default(),
                config,
            }),
        }
    }

    /// Serves one host session over `io` until the host asks for Shutdown (returns Shutdown after all
    /// processes were stopped: SIGTERM to each process group, 2 s grace, SIGKILL) or the connection
    /// ends (returns Disconnected; processes keep running).
    pub async fn serve<T: AsyncRead + AsyncWrite + Send + 'static>(&self, io: T) -> SessionEnd {
        self.inner.reaper.start();
        let mut channel: BoxedChannel = Box::pin(io);
        loop {
            let (io, control) = session_io::wrap_boxed(channel);
            let (session, mut inbox) = Session::start::<HostMessage, _>(io, Side::Guest);
            self.inner.procs.set_current(Some(session.clone()));
            let outcome = self.run_session(&session, &mut inbox, &control).await;
            if let Some(v) = session.violation() {
                // The session already ended itself; say why in the console log.
                tracing::warn!(violation = %v, "the host broke the protocol; session ended");
            }
            self.inner.procs.set_current(None);
            session.close();
            let end = match outcome {
                Outcome::NewHost => match control.take() {
                    Some(next) => {
                        tracing::info!("a new host said Hello: starting a new session");
                        channel = next;
                        continue;
                    }
                    None => SessionEnd::Disconnected,
                },
                Outcome::End(end) => end,
            };
            control.revoke();
            tracing::info!(?end, "host session ended");
            return end;
        }
    }

    /// Kills every process now (SIGKILL to each process group). Used by the fake backend's kill.
    pub fn kill_all(&self) {
        self.inner.procs.signal_all(libc::SIGKILL);
        if self.inner.config.pid1 {
            kill_everyone(libc::SIGKILL);
        }
    }

    fn hello(&self) -> GuestMessage {
        GuestMessage::Hello {
            protocol: PROTOCOL_VERSION,
            kernel_release: self.inner.config.kernel_release.clone(),
            boot_id: self.inner.boot_id.clone(),
        }
    }

    async fn run_session(
        &self,
        session: &Session,
        inbox: &mut mpsc::Receiver<HostMessage>,
        control: &IoControl,
    ) -> Outcome {
        if session.send(self.hello()).await.is_err() {
            return Outcome::End(SessionEnd::Disconnected);
        }
        let mut greeted = false;
        while let Some(msg) = inbox.recv().await {
            if let HostMessage::Hello { .. } = msg {
                // A host opens every connection with Hello. A second one on this session
                // means the old host left and a new one connected without the guest seeing
                // EOF (a virtio-serial reconnect is not always visible, a restored VM's never
                // is): its streams and requests are not the old host's.
                if std::mem::replace(&mut greeted, true) {
                    return Outcome::NewHost;
                }
            }
            if msg == HostMessage::Shutdown {
                tracing::info!("shutdown requested");
                self.stop_all().await;
                let mark = control.flushes();
                if session.send(GuestMessage::ShuttingDown).await.is_ok() {
                    let _ = tokio::time::timeout(FLUSH_WAIT, control.settled(mark)).await;
                }
                return Outcome::End(SessionEnd::Shutdown);
            }
            if self.handle(session, msg).await.is_err() {
                break;
            }
        }
        Outcome::End(SessionEnd::Disconnected)
    }

    /// Handles one message; long-running work goes to its own task. Err when the session is
    /// gone.
    async fn handle(
        &self,
        session: &Session,
        msg: HostMessage,
    ) -> Result<(), aegis_proto::SessionError> {
        let inner = &self.inner;
        match msg {
            HostMessage::Hello { protocol } => {
                if protocol != PROTOCOL_VERSION {
                    tracing::warn!(
                        host = protocol,
                        guest = PROTOCOL_VERSION,
                        "host speaks another protocol version; it should refuse this guest"
                    );
                }
                session.send(self.hello()).await?;
            }
            HostMessage::Ping { nonce } => session.send(GuestMessage::Pong { nonce }).await?,
            HostMessage::SetClock { unix_nanos } => {
                // In-process on a host the clock is the host's own: never touch it.
                if inner.config.pid1 {
                    if let Err(e) = clock::set_realtime(unix_nanos) {
                        tracing::warn!(error = %e, "cannot set the guest clock");
                    }
                }
            }
            HostMessage::Spawn {
                id,
                spec,
                stdin,
                stdout,
                stderr,
            } => {
                tracing::debug!(id, argv = ?spec.argv, "spawn");
                let started =
                    match command::prepare(&spec, &inner.config.base_env, &inner.config.root) {
                        Ok(prepared) => {
                            let streams = StdioStreams {
                                stdin,
                                stdout,
                                stderr,
                            };
                            process::start(
                                session,
                                &inner.reaper,
                                &inner.procs,
                                id,
                                prepared,
                                streams,
                            )
                            .await
                        }
                        Err(e) => Err(e),
                    };
                if let Err(error) = started {
                    tracing::debug!(id, %error.message, "spawn failed");
                    session
                        .send(GuestMessage::SpawnFailed { id, error })
                        .await?;
                }
            }
            HostMessage::SpawnPty {
                id,
                spec,
                rows,
                cols,
                stdin,
                output,
            } => {
                tracing::debug!(id, argv = ?spec.argv, rows, cols, "spawn on a terminal");
                let streams = crate::pty::PtyStreams {
                    rows,
                    cols,
                    stdin,
                    output,
                };
                let started =
                    match command::prepare(&spec, &inner.config.base_env, &inner.config.root) {
                        Ok(prepared) => {
                            crate::pty::start(
                                session,
                                &inner.reaper,
                                &inner.procs,
                                &inner.ptys,
                                id,
                                prepared,
                                streams,
                            )
                            .await
                        }
                        Err(e) => Err(e),
                    };
                if let Err(error) = started {
                    session
                        .send(GuestMessage::SpawnFailed { id, error })
                        .await?;
                }
            }
            HostMessage::Resize { id, rows, cols } => {
                if !inner.ptys.resize(id, rows, cols) {
                    tracing::debug!(id, "resize of a process without a terminal ignored");
                }
            }
            HostMessage::Signal { id, signal } => match inner.procs.pid(id) {
                Some(pid) => {
                    process::signal_group(pid, signal);
                }
                None => tracing::warn!(id, signal, "signal for an unknown process ignored"),
            },
            HostMessage::Connect { stream, port } => {
                tokio::spawn(forward::connect(session.clone(), stream, port));
            }
            HostMessage::ReadPath { stream, path } => {
                tokio::spawn(archive::read_path(
                    session.clone(),
                    inner.config.root.clone(),
                    stream,
                    path,
                ));
            }
            HostMessage::WritePath { stream, path } => {
                let root = inner.config.root.clone();
                tokio::spawn(files::write_path(session.clone(), root, stream, path));
            }
            HostMessage::StatPath { id, path, list } => {
                let root = inner.config.root.clone();
                tokio::spawn(files::stat_path(session.clone(), root, id, path, list));
            }
            HostMessage::WatchPath { stream, path } => {
                let root = inner.config.root.clone();
                tokio::spawn(watch::watch_path(session.clone(), root, stream, path));
            }
            HostMessage::Attach { id, stdout, stderr } => {
                let reply = match inner.procs.attach(session, id, stdout, stderr) {
                    Ok(()) => GuestMessage::Attached { id },
                    Err(error) => GuestMessage::AttachFailed { id, error },
                };
                session.send(reply).await?;
            }
            HostMessage::Shutdown => unreachable!("handled by run_session"),
        }
        Ok(())
    }

    /// SIGTERM to every process group, [`TERM_GRACE`] to exit, then SIGKILL.
    async fn stop_all(&self) {
        let procs = &self.inner.procs;
        procs.signal_all(libc::SIGTERM);
        if self.inner.config.pid1 {
            kill_everyone(libc::SIGTERM);
        }
        if tokio::time::timeout(TERM_GRACE, procs.all_gone())
            .await
            .is_ok()
        {
            return;
        }
        procs.signal_all(libc::SIGKILL);
        if self.inner.config.pid1 {
            kill_everyone(libc::SIGKILL);
        }
        if tokio::time::timeout(KILL_WAIT, procs.all_gone())
            .await
            .is_err()
        {
            tracing::warn!(
                "processes still not reported {} s after SIGKILL",
                KILL_WAIT.as_secs()
            );
        }
    }
}

/// `kill(-1, signal)`: every process but PID 1 itself. Only ever called as PID 1.
fn kill_everyone(signal: libc::c_int) {
    // SAFETY: kill(2) takes plain integers.
    unsafe { libc::kill(-1, signal) };
}

/// 128 random bits as a UUID-shaped string. Never blocks: early in boot the kernel's CRNG may
/// not be ready, and a boot id does not need to be unguessable.
fn new_boot_id() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_INSECURE) };
    if usize::try_from(n).ok() != Some(bytes.len()) {
        // Kernels before 5.6 lack GRND_INSECURE: fall back to std's per-process random keys.
        use std::hash::{BuildHasher, Hasher};
        for half in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default(),
            );
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests;
