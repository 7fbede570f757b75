//! Exec: a process run in an instance's VM next to its server. The instance is woken first
//! (as a connection would wake it); while the process runs it counts as activity, so the
//! idle timer never pauses the VM mid-command. Output goes to a durable log per exec with
//! byte offsets per stream (the task output machinery), so a client that loses its feed
//! resumes where it was; stdin is fed from an upload. Each exec is recorded in the registry
//! when it starts and when it ends ([`super::exec_record`]), so its state and output outlive
//! aegisd.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use aegis_api::{ApiError, CreateExec, ErrorCode, Exec, ExecState, StreamName};
use aegis_proto::session::{RecvHalf, SendHalf};
use aegis_proto::{GuestMessage, HostMessage, ProcId, ProcessSpec, StreamId};
use aegis_router::ActivityGuard;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::activity_holders::HolderGuard;
use super::connector::Connector;
use super::error::LifecycleError;
use super::runtime::InstanceRuntime;
use super::InstanceManager;
use crate::api::{bad, internal};
use crate::daemon::Daemon;
use crate::ids;
use crate::tasks::output::{self, OutputLog};

/// Process ids of execs; the served process has id 1, so execs start far above it.
static NEXT_PROC: AtomicU64 = AtomicU64::new(1 << 32);

/// How long the guest may take to answer a `Spawn`.
const SPAWN_ANSWER: Duration = Duration::from_secs(60);
/// How long the output streams may take to end after the process exited.
const DRAIN: Duration = Duration::from_secs(10);

/// How an exec ended.
#[derive(Debug, Clone)]
pub(super) struct Ending {
    pub(super) state: ExecState,
    pub(super) exit_code: Option<i32>,
    pub(super) error: Option<String>,
    /// When, RFC 3339 (the registry's `ended_at`).
    pub(super) at: String,
}

/// The execs of one instance started by this aegisd (older ones are known from the registry).
#[derive(Default)]
pub struct ExecTable {
    execs: Mutex<HashMap<String, Arc<ExecRun>>>,
}

impl ExecTable {
    pub(super) fn get(&self, id: &str) -> Option<Arc<ExecRun>> {
        self.execs.lock().get(id).cloned()
    }
}

/// One exec: started by this aegisd, or (after a restart) rebuilt from its record, ended,
/// with no log writer, stdin or connector.
pub struct ExecRun {
    pub(super) id: String,
    pub(super) instance: String,
    pub(super) command: Vec<String>,
    pub(super) created_at: String,
    pub(super) proc_id: ProcId,
    pub(super) dir: PathBuf,
    /// The writer of the output files; `None` for a recorded exec, whose files are final.
    pub(super) log: Option<Arc<OutputLog>>,
    pub(super) end: Mutex<Option<Ending>>,
    /// The process's stdin until an upload takes it.
    pub(super) stdin: Mutex<Option<SendHalf>>,
    pub(super) connector: Mutex<Option<Arc<Connector>>>,
    pub(super) tty: bool,
    /// Where the registry is, to record the end; empty for a recorded exec.
    pub(super) daemon: Weak<Daemon>,
}

impl ExecRun {
    pub fn view(&self) -> Exec {
        let (state, exit_code, error) = match self.end.lock().clone() {
            Some(e) => (e.state, e.exit_code, e.error),
            None => (ExecState::Running, None, None),
        };
        let written = match &self.log {
            Some(log) => log.state(),
            None => output::final_state(&self.dir),
        };
        Exec {
            id: self.id.clone(),
            instance: self.instance.clone(),
            command: self.command.clone(),
            state,
            exit_code,
            error,
            stdout_bytes: written.stdout,
            stderr_bytes: written.stderr,
            created_at: self.created_at.clone(),
        }
    }

    /// Ends the exec, once: the first end wins, in memory and in the registry.
    fn end(&self, state: ExecState, exit_code: Option<i32>, error: Option<String>) {
        let first = {
            let mut end = self.end.lock();
            match *end {
                Some(_) => None,
                None => {
                    let ending = Ending {
                        state,
                        exit_code,
                        error,
                        at: ids::now(),
                    };
                    *end = Some(ending.clone());
                    Some(ending)
                }
            }
        };
        if let Some(log) = &self.log {
            log.finish();
        }
        self.connector.lock().take();
        if let Some(ending) = first {
            self.record_end(&ending);
        }
    }

    /// The NDJSON output feed from `offsets`; with `follow` it ends once the exec has ended
    /// and all of its output was sent (at once for a recorded exec: it has ended).
    pub fn output(
        &self,
        follow: bool,
        offsets: (u64, u64),
        stop: tokio_util::sync::CancellationToken,
    ) -> mpsc::Receiver<Bytes> {
        output::feed(
            self.dir.clone(),
            self.log.as_ref().map(|log| log.subscribe()),
            follow,
            offsets,
            Box::new(|| None),
            stop,
        )
    }

    /// The process's stdin, once: the caller feeds it and finishes it (EOF).
    pub fn take_stdin(&self) -> Result<SendHalf, ApiError> {
        self.stdin.lock().take().ok_or_else(|| {
            if let Some(end) = self.end.lock().as_ref() {
                return ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "exec {} has ended ({}); it takes no more stdin",
                        self.id,
                        end.state.as_str()
                    ),
                );
            }
            ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "exec {} takes no more stdin: it was created without `stdin`, or its \
                     stdin was already uploaded",
                    self.id
                ),
            )
        })
    }

    /// Sets the size of the exec's terminal (its programs get SIGWINCH).
    pub async fn resize(&self, size: aegis_api::TtySize) -> Result<(), ApiError> {
        size.check().map_err(bad)?;
        if !self.tty {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "exec {} has no terminal to resize (create it with `tty`)",
                    self.id
                ),
            ));
        }
        let msg = HostMessage::Resize {
            id: self.proc_id,
            rows: size.rows,
            cols: size.cols,
        };
        self.send(msg).await
    }

    /// Sends `signal` to the process group of the exec.
    pub async fn signal(&self, signal: i32) -> Result<(), ApiError> {
        if !(1..=64).contains(&signal) {
            return Err(bad(format!(
                "signal {signal} is out of range: use a signal number from 1 to 64"
            )));
        }
        let msg = HostMessage::Signal {
            id: self.proc_id,
            signal,
        };
        self.send(msg).await
    }

    async fn send(&self, msg: HostMessage) -> Result<(), ApiError> {
        let connector = self.connector.lock().clone().ok_or_else(|| {
            ApiError::new(ErrorCode::Conflict, format!("exec {} has ended", self.id))
        })?;
        connector
            .session()
            .send(msg)
            .await
            .map_err(|e| internal(format!("cannot reach the guest of exec {}: {e}", self.id)))
    }
}

impl InstanceManager {
    /// Starts `req` in instance `key`, waking it first.
    pub async fn create_exec(&self, key: &str, req: CreateExec) -> Result<Exec, ApiError> {
        let rt = self.get(key)?;
        validate(&req)?;
        rt.exec(key, req).await
    }
}

/// Checks a `CreateExec` before anything is woken or started: a command, sane env names, a
/// terminal size in range.
pub fn validate(req: &CreateExec) -> Result<(), ApiError> {
    if req.command.first().is_none_or(|c| c.is_empty()) {
        return Err(bad(
            "an exec needs a command: give the program and its arguments after `--`",
        ));
    }
    if let Some(size) = req.tty {
        size.check().map_err(bad)?;
    }
    if let Some((k, _)) = req
        .env
        .iter()
        .find(|(k, _)| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return Err(bad(format!(
            "environment variable name '{k}' is invalid: use K=V with a non-empty K without '='"
        )));
    }
    Ok(())
}

/// Counts an exec being started for the idle timer: a pause now would leave the `Spawn`
/// unanswered (see `InstanceRuntime::connecting`).
struct Starting<'a>(&'a InstanceRuntime);

impl<'a> Starting<'a> {
    fn new(rt: &'a InstanceRuntime) -> Self {
        rt.connecting.fetch_add(1, Ordering::AcqRel);
        Starting(rt)
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.0.connecting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Keeps the instance awake while the process runs: a holder in `awake_because` (kind
/// `exec`, or `pty` for a terminal), whose end counts as activity.
struct Running {
    _hold: HolderGuard,
    _activity: ActivityGuard,
}

impl Running {
    fn new(rt: &Arc<InstanceRuntime>, req: &CreateExec) -> Self {
        let kind = if req.tty.is_some() { "pty" } else { "exec" };
        Running {
            _hold: rt.holders.hold(kind, req.command.join(" ")),
            _activity: rt.activity.guard(),
        }
    }
}

impl InstanceRuntime {
    async fn exec(self: &Arc<Self>, key: &str, req: CreateExec) -> Result<Exec, ApiError> {
        if self.shutdown.is_cancelled() {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("instance {key} is being removed; it runs no more commands"),
            ));
        }
        // Held from before the wake: the idle timer must not pause the VM under the exec.
        let running = Running::new(self, &req);
        let starting = Starting::new(self);
        self.ensure_ready()
            .await
            .map_err(|error| LifecycleError::Wake { key, error })?;
        let connector = self.connector().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("instance {key} was stopped while the exec was starting; try again"),
            )
        })?;
        let id = ids::new_id("exec");
        let daemon = self
            .daemon
            .upgrade()
            .ok_or_else(|| internal("aegisd is shutting down"))?;
        let dir = super::exec_record::exec_dir(&daemon, &self.id, &id);
        // An exec's output is capped as a task's is: kept whole up to the cap, then cut.
        let bound = output::Bound::Cap {
            bytes: daemon.config.limits.task_output_bytes,
        };
        let log = OutputLog::create(&dir, bound)
            .map_err(|e| internal(format!("cannot create {}: {e}", dir.display())))?;
        let proc_id = NEXT_PROC.fetch_add(1, Ordering::Relaxed);
        let session = connector.session().clone();
        let stdout = session.open_stream();
        // A terminal has one output (the screen), and always an input: its end hangs up.
        let stderr = req.tty.is_none().then(|| session.open_stream());
        let stdin = (req.stdin || req.tty.is_some()).then(|| session.open_stream());
        let spec = ProcessSpec {
            argv: req.command.clone(),
            env: req.env.clone(),
            cwd: req.workdir.clone(),
            user: req.user.clone(),
        };
        let ids = (
            stdin.as_ref().map(|s| s.id()),
            stdout.id(),
            stderr.as_ref().map(|s| s.id()),
        );
        let spawn = spawn_message(proc_id, spec, req.tty, ids);
        let log = Arc::new(log);
        let run = Arc::new(ExecRun {
            id: id.clone(),
            instance: self.id.clone(),
            command: req.command,
            created_at: ids::now(),
            proc_id,
            dir,
            log: Some(log.clone()),
            end: Mutex::new(None),
            stdin: Mutex::new(stdin.map(|s| s.into_split().1)),
            connector: Mutex::new(Some(connector.clone())),
            tty: req.tty.is_some(),
            daemon: Arc::downgrade(&daemon),
        });
        // Not held across the guest's answer: an exec starting must not keep a daemon alive
        // that everything else has let go of.
        drop(daemon);
        let mut pumps = vec![tokio::spawn(pump(
            stdout.into_split().0,
            StreamName::Stdout,
            log.clone(),
        ))];
        if let Some(stderr) = stderr {
            pumps.push(tokio::spawn(pump(
                stderr.into_split().0,
                StreamName::Stderr,
                log,
            )));
        }
        let mut events = connector.watch(proc_id);
        self.execs.execs.lock().insert(id.clone(), run.clone());
        tracing::info!(instance = %self.id, exec = %id, argv = ?run.command, "exec");
        if let Err(e) = session.send(spawn).await {
            connector.unwatch(proc_id);
            run.end(
                ExecState::Failed,
                None,
                Some(format!("cannot reach the guest: {e}")),
            );
            run.record();
            return Err(internal(format!(
                "cannot start the exec in instance {key}: {e}"
            )));
        }
        let answer = tokio::time::timeout(SPAWN_ANSWER, async {
            tokio::select! {
                ev = events.recv() => ev,
                _ = session.closed() => None,
            }
        })
        .await;
        drop(starting);
        match answer {
            Ok(Some(GuestMessage::Spawned { .. })) => {
                // Recorded running before the watcher can record its end.
                run.record();
                tokio::spawn(watch_exit(run.clone(), connector, events, pumps, running));
            }
            Ok(Some(GuestMessage::SpawnFailed { error, .. })) => {
                connector.unwatch(proc_id);
                let code = error.kind.shell_exit_code();
                run.end(ExecState::Exited, Some(code), Some(error.message));
                run.record();
            }
            // The session ended (or, against the protocol, the process exited unannounced).
            Ok(_) => {
                connector.unwatch(proc_id);
                let why = "the instance's VM stopped before the command started".to_string();
                run.end(ExecState::Failed, None, Some(why.clone()));
                run.record();
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!("cannot exec in instance {key}: {why}"),
                ));
            }
            Err(_) => {
                connector.unwatch(proc_id);
                let why = format!(
                    "the guest did not answer within {} s",
                    SPAWN_ANSWER.as_secs()
                );
                run.end(ExecState::Failed, None, Some(why.clone()));
                run.record();
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!("cannot exec in instance {key}: {why}"),
                ));
            }
        }
        Ok(run.view())
    }
}

/// `Spawn`, or `SpawnPty` for a terminal, with the streams (stdin, stdout, stderr) opened
/// for it (a terminal has no stderr and always a stdin).
fn spawn_message(
    id: ProcId,
    spec: ProcessSpec,
    tty: Option<aegis_api::TtySize>,
    (stdin, stdout, stderr): (Option<StreamId>, StreamId, Option<StreamId>),
) -> HostMessage {
    match (tty, stdin, stderr) {
        (Some(size), Some(stdin), _) => HostMessage::SpawnPty {
            id,
            spec,
            rows: size.rows,
            cols: size.cols,
            stdin,
            output: stdout,
        },
        // Without a terminal there is a stderr; with one (never here) it would be merged.
        (_, stdin, stderr) => HostMessage::Spawn {
            id,
            spec,
            stdin,
            stdout,
            stderr: stderr.unwrap_or(stdout),
        },
    }
}

/// Waits for the process to exit (or its VM to go), lets its output drain, records the end.
async fn watch_exit(
    run: Arc<ExecRun>,
    connector: Arc<Connector>,
    mut events: mpsc::UnboundedReceiver<GuestMessage>,
    pumps: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    running: Running,
) {
    let session = connector.session().clone();
    let status = loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(GuestMessage::Exited { status, .. }) => break Some(status),
                Some(_) => continue,
                None => break None,
            },
            _ = session.closed() => break None,
        }
    };
    connector.unwatch(run.proc_id);
    drop(running);
    let Some(status) = status else {
        let why = if run
            .daemon
            .upgrade()
            .is_some_and(|d| d.shutdown.is_cancelled())
        {
            // Said as start-up reconciliation says it of an exec it finds running.
            "aegisd shut down while this exec ran; its process was stopped with its VM; the \
             output up to then is kept"
        } else {
            "the instance's VM stopped (stopped or removed) while the command ran"
        };
        run.end(ExecState::Failed, None, Some(why.into()));
        return;
    };
    // The guest ends both streams before it reports Exited; wait for what is still queued.
    for p in pumps {
        match tokio::time::timeout(DRAIN, p).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                let why = format!("cannot store the exec's output: {e}");
                run.end(ExecState::Failed, None, Some(why));
                return;
            }
            _ => tracing::warn!(exec = %run.id, "output stream did not end after the exit"),
        }
    }
    tracing::info!(exec = %run.id, ?status, "exec exited");
    run.end(ExecState::Exited, Some(status.shell_code()), None);
}

/// Copies one output stream of the process into the exec's log. The log is on disk: a slow
/// reader costs disk, not daemon memory, and never stalls the guest.
async fn pump(mut rx: RecvHalf, stream: StreamName, log: Arc<OutputLog>) -> std::io::Result<()> {
    loop {
        match rx.recv().await {
            Ok(Some(bytes)) => log.append(stream, &bytes)?,
            // The stream ended, or the session died (the watcher reports why).
            Ok(None) | Err(_) => return Ok(()),
        }
    }
}
