//! The runner of one task: boot, run, stream, collect, terminate. Whatever happens, the VM is
//! gone, its run directory removed and the task's final state recorded when this returns.

use std::sync::Arc;
use std::time::Duration;

use aegis_api::{CreateTask, StreamName, Task, TaskState};
use aegis_proto::session::RecvHalf;
use aegis_proto::{ExitStatus, GuestMessage, HostMessage, ProcessSpec, SpawnError};

use super::artifacts;
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

pub(super) async fn run(
    daemon: Arc<Daemon>,
    mut task: Task,
    req: CreateTask,
    assets: BootAssets,
    live: Arc<LiveTask>,
) {
    let vm_id = ids::new_id("vm");
    let run_dir = daemon.config.home.vm_run_dir(&vm_id);

    // Boot in a task of its own: a cancellation must not drop a half-booted VM on the floor.
    let spec = LaunchSpec {
        vm_id: vm_id.clone(),
        run_dir: run_dir.clone(),
        assets,
        shares: crate::workspaces::shares(&daemon.config, task.workspace.as_deref()),
        vcpus: task.vcpus,
        memory_mib: task.memory_mib,
    };
    let backend = daemon.backend.clone();
    let mut boot = tokio::spawn(async move { vm::launch(backend.as_ref(), spec).await });
    let launched = tokio::select! {
        r = &mut boot => Some(r),
        _ = live.cancel.cancelled() => None,
    };
    let launched = match launched {
        Some(r) => r,
        // Cancelled during boot: let the boot finish, then tear it down below.
        None => boot.await,
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

    let ending = match gvm.as_mut() {
        _ if live.cancel.is_cancelled() => Ending::Cancelled(cancel_reason(&live)),
        None => Ending::Failed("the microVM vanished after boot".into()),
        Some(g) => {
            task.state = TaskState::Running;
            task.started_at = Some(ids::now());
            task.guest_kernel = Some(g.kernel_release.clone());
            save(&daemon, &task);
            tokio::select! {
                e = execute(g, &req, &live, &daemon, &mut task) => e,
                _ = live.cancel.cancelled() => Ending::Cancelled(cancel_reason(&live)),
            }
        }
    };
    // The VM is gone before the task is reported ended: a client that saw the end never
    // finds a VMM process, socket or scratch disk of it.
    // Polite (stop processes, sync, power off) only where the VM holds durable state: its
    // scratch disk is thrown away, so without a workspace there is nothing to flush and the
    // ~100 ms of a clean power-off under TCG buy nothing.
    let polite =
        matches!(ending, Ending::Exited(_) | Ending::SpawnFailed(_)) && task.workspace.is_some();
    cleanup(&daemon, &vm_id, &run_dir, gvm.map(|g| (g, polite))).await;
    finish(&daemon, &mut task, &live, ending).await;
}

fn cancel_reason(live: &LiveTask) -> String {
    live.reason.lock().clone().unwrap_or_default()
}

/// Runs the command in a booted VM and collects its artifacts.
async fn execute(
    g: &mut GuestVm,
    req: &CreateTask,
    live: &Arc<LiveTask>,
    daemon: &Arc<Daemon>,
    task: &mut Task,
) -> Ending {
    let stdout = g.session.open_stream();
    let stderr = g.session.open_stream();
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
        stdin: None,
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

    // The timeout runs from the moment the command starts, not from boot.
    let mut deadline: Option<tokio::time::Instant> = None;
    let status = loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = g.events.recv() => match ev {
                Some(GuestMessage::Spawned { .. }) => {
                    deadline = req
                        .timeout_secs
                        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
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
            _ = sleep => return Ending::TimedOut(req.timeout_secs.unwrap_or_default()),
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
    if !req.artifacts.is_empty() {
        let dir = daemon.tasks.task_dir(daemon, &task.id).join("artifacts");
        for path in &req.artifacts {
            if let Err(e) = fetch_artifact(g, path, &dir).await {
                return Ending::Failed(format!("cannot copy artifact {path} from the guest: {e}"));
            }
        }
        task.artifacts_dir = Some(dir.display().to_string());
    }
    Ending::Exited(status)
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

/// Asks the guest for `path` as a tar stream and unpacks it under `dir`.
async fn fetch_artifact(g: &mut GuestVm, path: &str, dir: &std::path::Path) -> Result<(), String> {
    let stream = g.session.open_stream();
    let id = stream.id();
    let (mut rx, _tx) = stream.into_split();
    g.session
        .send(HostMessage::ReadPath {
            stream: id,
            path: path.to_string(),
        })
        .await
        .map_err(|e| e.to_string())?;
    let data = async {
        let mut data = Vec::new();
        while let Some(chunk) = rx.recv().await.map_err(|e| e.to_string())? {
            data.extend_from_slice(&chunk);
        }
        Ok::<_, String>(data)
    };
    let reply = async {
        loop {
            match g.events.recv().await {
                Some(GuestMessage::PathSent { stream, error }) if stream == id => return error,
                Some(_) => continue,
                None => return Some("the guest channel closed".to_string()),
            }
        }
    };
    let (data, error) = tokio::join!(data, reply);
    if let Some(e) = error {
        return Err(e);
    }
    let data = data?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || artifacts::unpack(&data, &dir))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
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
                "task {} timed out after {secs} s and was killed",
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
    gvm: Option<(GuestVm, bool)>,
) {
    if let Some((g, polite)) = gvm {
        let grace = if polite {
            Duration::from_secs(5)
        } else {
            Duration::ZERO
        };
        g.shutdown(grace).await;
    }
    vm::forget(daemon, vm_id, run_dir);
}
