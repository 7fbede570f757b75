//! The runner of one task: boot, run, stream, collect, terminate. Whatever happens, the VM is
//! gone, its run directory removed and the task's final state recorded when this returns.
//!
//! `timeout_secs` bounds the whole task from its acceptance (the runner starts right after):
//! boot, command, artifact copy and shutdown. One exception: a boot under way is allowed to
//! finish (at most [`vm::BOOT_TIMEOUT`]) so that its VM is torn down rather than dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use aegis_api::{CreateTask, StreamName, Task, TaskState};
use aegis_proto::session::RecvHalf;
use aegis_proto::{ExitStatus, GuestMessage, HostMessage, ProcessSpec, SpawnError};

use super::artifacts::{self, CollectError};
use super::LiveTask;
use crate::daemon::Daemon;
use crate::guest::BootAssets;
use crate::ids;
use crate::vm::{self, describe_exit, GuestVm, LaunchSpec};

/// How a task ended, before it is written down.
enum Ending {
    Exited(ExitStatus),
    SpawnFailed(SpawnError),
    TimedOut(u64),
    Cancelled(String),
    Failed(String),
}

/// The process id the host gives the task's command (one command per task VM).
const TASK_PROC: u64 = 1;

/// How long a VM holding durable state gets to power off cleanly.
const POLITE_SHUTDOWN: Duration = Duration::from_secs(5);

/// When the task's time is up: `timeout_secs` after acceptance, or never.
struct Deadline {
    at: Option<Instant>,
    secs: u64,
}

impl Deadline {
    fn after(secs: Option<u64>) -> Self {
        // The API refuses absurd timeouts; should one get here anyway, a deadline past the
        // clock's range is no deadline, never an overflow panic.
        let at = secs.and_then(|s| Instant::now().checked_add(Duration::from_secs(s)));
        Deadline {
            at,
            secs: secs.unwrap_or_default(),
        }
    }

    async fn reached(&self) {
        match self.at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// `grace`, shortened to what is left before the deadline.
    fn within(&self, grace: Duration) -> Duration {
        match self.at {
            Some(at) => grace.min(at.saturating_duration_since(Instant::now())),
            None => grace,
        }
    }
}

/// Resolves with how the task ends early: cancelled, or out of time.
async fn interrupted(live: &LiveTask, deadline: &Deadline) -> Ending {
    tokio::select! {
        _ = live.cancel.cancelled() => Ending::Cancelled(cancel_reason(live)),
        _ = deadline.reached() => Ending::TimedOut(deadline.secs),
    }
}

pub(super) async fn run(
    daemon: Arc<Daemon>,
    mut task: Task,
    req: CreateTask,
    assets: BootAssets,
    live: Arc<LiveTask>,
) {
    let deadline = Deadline::after(req.timeout_secs);
    let vm_id = ids::new_id("vm");
    let run_dir = daemon.config.home.vm_run_dir(&vm_id);

    // The workspace is checked again here: it may have changed since the request.
    let shares = match crate::workspaces::shares(&daemon.config, task.workspace.as_deref()) {
        Ok(shares) => shares,
        Err(e) => {
            let ending = Ending::Failed(format!("cannot boot the microVM: {}", e.error.message));
            finish(&daemon, &mut task, &live, ending).await;
            return;
        }
    };
    // Boot in a task of its own: a cancellation or the deadline must not drop a half-booted VM
    // on the floor.
    let spec = LaunchSpec {
        vm_id: vm_id.clone(),
        run_dir: run_dir.clone(),
        assets,
        shares,
        vcpus: task.vcpus,
        memory_mib: task.memory_mib,
    };
    let backend = daemon.backend.clone();
    let mut boot = tokio::spawn(async move { vm::launch(backend.as_ref(), spec).await });
    let (launched, early) = tokio::select! {
        r = &mut boot => (r, None),
        // Cancelled or out of time during boot: let the boot finish, then tear it down below.
        e = interrupted(&live, &deadline) => (boot.await, Some(e)),
    };
    let mut gvm = match launched {
        Ok(Ok(gvm)) => Some(gvm),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "boot failed");
            cleanup(&daemon, &vm_id, &run_dir, None).await;
            let ending = Ending::Failed(format!("cannot boot the microVM: {e}"));
            finish(&daemon, &mut task, &live, ending).await;
            return;
        }
        Err(e) => {
            cleanup(&daemon, &vm_id, &run_dir, None).await;
            finish(
                &daemon,
                &mut task,
                &live,
                Ending::Failed(format!("boot task failed: {e}")),
            )
            .await;
            return;
        }
    };

    if let Some(g) = &gvm {
        vm::record(&daemon, &vm_id, &task.id, &run_dir, g.vm.pid());
    }

    let ending = match (early, gvm.as_mut()) {
        (Some(e), _) => e,
        (None, _) if live.cancel.is_cancelled() => Ending::Cancelled(cancel_reason(&live)),
        (None, None) => Ending::Failed("the microVM vanished after boot".into()),
        (None, Some(g)) => {
            task.state = TaskState::Running;
            task.started_at = Some(ids::now());
            task.guest_kernel = Some(g.kernel_release.clone());
            save(&daemon, &task);
            let stop = interrupted(&live, &deadline);
            tokio::pin!(stop);
            let ran = tokio::select! {
                e = execute(g, &req, &live) => e,
                e = &mut stop => e,
            };
            match ran {
                Ending::Exited(status) if !req.artifacts.is_empty() => {
                    match copy_artifacts(g, &req, &daemon, &mut task, &mut stop).await {
                        Ok(()) => Ending::Exited(status),
                        Err(e) => e,
                    }
                }
                other => other,
            }
        }
    };
    // A guest that broke the protocol was cut off: that, not the VM's exit it caused, is why
    // the task ended (unless the client had already cancelled it).
    let breach = gvm.as_ref().and_then(|g| vm::protocol_breach(&g.session));
    let ending = match (ending, breach) {
        (Ending::Cancelled(why), _) => Ending::Cancelled(why),
        (_, Some(breach)) => Ending::Failed(breach),
        (ending, None) => ending,
    };
    // The VM is gone before the task is reported ended: a client that saw the end never
    // finds a VMM process, socket or scratch disk of it.
    // Polite (stop processes, sync, power off) only where the VM holds durable state: its
    // scratch disk is thrown away, so without a workspace there is nothing to flush and the
    // ~100 ms of a clean power-off under TCG buy nothing.
    let polite =
        matches!(ending, Ending::Exited(_) | Ending::SpawnFailed(_)) && task.workspace.is_some();
    let grace = if polite {
        deadline.within(POLITE_SHUTDOWN)
    } else {
        Duration::ZERO
    };
    cleanup(&daemon, &vm_id, &run_dir, gvm.map(|g| (g, grace))).await;
    finish(&daemon, &mut task, &live, ending).await;
}

fn cancel_reason(live: &LiveTask) -> String {
    live.reason.lock().clone().unwrap_or_default()
}

/// Runs the command in a booted VM. The caller bounds it in time.
async fn execute(g: &mut GuestVm, req: &CreateTask, live: &Arc<LiveTask>) -> Ending {
    let stdout = g.session.open_stream();
    let stderr = g.session.open_stream();
    // Fed once the guest has the process (and so knows the stream).
    let mut stdin = live
        .stdin
        .take_command_end()
        .map(|uploaded| (uploaded, g.session.open_stream()));
    let spawn = HostMessage::Spawn {
        id: TASK_PROC,
        spec: ProcessSpec {
            argv: req.command.clone(),
            env: req
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cwd: req.workdir.clone(),
            user: req.user.clone(),
        },
        stdin: stdin.as_ref().map(|(_, s)| s.id()),
        stdout: stdout.id(),
        stderr: stderr.id(),
    };
    let pumps = [
        tokio::spawn(pump(
            stdout.into_split().0,
            StreamName::Stdout,
            live.clone(),
        )),
        tokio::spawn(pump(
            stderr.into_split().0,
            StreamName::Stderr,
            live.clone(),
        )),
    ];
    if let Err(e) = g.session.send(spawn).await {
        return Ending::Failed(format!("cannot start the command: {e}"));
    }

    let status = loop {
        tokio::select! {
            ev = g.events.recv() => match ev {
                Some(GuestMessage::Spawned { .. }) => {
                    if let Some((uploaded, stream)) = stdin.take() {
                        tokio::spawn(super::stdin::forward(uploaded, stream.into_split().1));
                    }
                }
                Some(GuestMessage::SpawnFailed { error, .. }) => return Ending::SpawnFailed(error),
                Some(GuestMessage::Exited { status, .. }) => break status,
                Some(other) => tracing::debug!(?other, "unexpected guest message"),
                None => {
                    let exit = tokio::time::timeout(Duration::from_secs(2), g.vm.wait()).await;
                    let what = match exit {
                        Ok(e) => describe_exit(&e),
                        Err(_) => "guest channel closed".into(),
                    };
                    return Ending::Failed(vm_died(&what, &g.vm.console_tail()));
                }
            },
            exit = g.vm.wait() => {
                return Ending::Failed(vm_died(&describe_exit(&exit), &g.vm.console_tail()));
            }
        }
    };
    // The guest closes both streams before it reports Exited; drain what is still queued.
    for p in pumps {
        match tokio::time::timeout(Duration::from_secs(10), p).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Ending::Failed(format!("cannot store task output: {e}")),
            _ => tracing::warn!("output stream did not end after the command exited"),
        }
    }
    Ending::Exited(status)
}

/// Copies the task's artifacts back under the smaller of the daemon's and the task's caps,
/// unless `stop` (cancel, deadline) ends it first. Whatever ends it, nothing partial is left
/// when this returns.
async fn copy_artifacts(
    g: &mut GuestVm,
    req: &CreateTask,
    daemon: &Daemon,
    task: &mut Task,
    stop: &mut (impl Future<Output = Ending> + Unpin),
) -> Result<(), Ending> {
    let dir = daemon.tasks.task_dir(daemon, &task.id).join("artifacts");
    let daemon_cap = daemon.config.limits.max_artifact_bytes;
    let cap = req
        .max_artifact_bytes
        .map_or(daemon_cap, |c| c.min(daemon_cap));
    let copied = artifacts::collect(&g.session, &mut g.events, &req.artifacts, &dir, cap, stop);
    match copied.await {
        Ok(()) => {
            task.artifacts_dir = Some(dir.display().to_string());
            Ok(())
        }
        Err(CollectError::Stopped(ending)) => Err(ending),
        Err(CollectError::Failed { path, error }) => Err(Ending::Failed(match path {
            Some(path) => format!("cannot copy artifact {path} from the guest: {error}"),
            None => format!("cannot copy the artifacts from the guest: {error}"),
        })),
    }
}

fn vm_died(what: &str, console: &str) -> String {
    let tail: Vec<&str> = console
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!(
        "the microVM stopped while the task was running ({what}); last console lines: {}",
        if tail.is_empty() {
            "(none)".to_string()
        } else {
            tail.join(" | ")
        }
    )
}

/// Copies one stream of the guest process into the task's output log.
async fn pump(mut rx: RecvHalf, stream: StreamName, live: Arc<LiveTask>) -> std::io::Result<()> {
    loop {
        match rx.recv().await {
            Ok(Some(bytes)) => live.output.append(stream, &bytes)?,
            Ok(None) => return Ok(()),
            // The session died: the runner reports why; nothing more will come.
            Err(_) => return Ok(()),
        }
    }
}

/// Records the final state. Output is marked done only after the record is final, so a
/// follower's `End` event carries the final task.
async fn finish(daemon: &Daemon, task: &mut Task, live: &LiveTask, ending: Ending) {
    let state = live.output.state();
    task.stdout_bytes = state.stdout;
    task.stderr_bytes = state.stderr;
    task.ended_at = Some(ids::now());
    match ending {
        Ending::Exited(status) => {
            task.state = TaskState::Exited;
            task.exit_code = Some(status.shell_code());
        }
        Ending::SpawnFailed(e) => {
            task.state = TaskState::Failed;
            task.exit_code = Some(e.kind.shell_exit_code());
            task.error = Some(format!(
                "cannot run '{}' in image '{}': {}",
                task.command.first().map(String::as_str).unwrap_or_default(),
                task.image,
                e.message
            ));
        }
        Ending::TimedOut(secs) => {
            task.state = TaskState::TimedOut;
            task.error = Some(format!(
                "task {} timed out after {secs} s and was killed (boot, command and artifact \
                 copy all count)",
                task.id
            ));
        }
        Ending::Cancelled(reason) => {
            task.state = TaskState::Cancelled;
            task.error = Some(reason);
        }
        Ending::Failed(e) => {
            task.state = TaskState::Failed;
            task.error = Some(e);
        }
    }
    tracing::info!(state = task.state.as_str(), exit_code = ?task.exit_code, "task ended");
    save(daemon, task);
    // The VM is gone: the next holder of an isolated workspace cannot overlap with it.
    daemon
        .workspaces
        .release(task.workspace.as_deref(), &task.id);
    live.output.finish();
    daemon.tasks.finished(&task.id);
}

fn save(daemon: &Daemon, task: &Task) {
    if let Err(e) = daemon.registry.update_task(task) {
        tracing::error!(error = %e, "cannot record task state");
    }
}

/// Stops the VM (politely after a normal exit) and removes every trace of it.
async fn cleanup(
    daemon: &Daemon,
    vm_id: &str,
    run_dir: &std::path::Path,
    gvm: Option<(GuestVm, Duration)>,
) {
    if let Some((g, grace)) = gvm {
        g.shutdown(grace).await;
    }
    vm::forget(daemon, vm_id, run_dir);
}
