//! Task mode: one command in one fresh microVM.
//!
//! `create` validates the request and records the task; a runner (see [`run`]) boots the VM,
//! streams output into the task's [`output`] log, copies [`artifacts`] back and terminates the
//! VM. Clients follow the output by byte offsets, live or after the fact.

pub mod artifacts;
mod log_files;
pub mod output;
mod run;
mod stdin;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aegis_api::{ApiError, CreateTask, ErrorCode, OutputEvent, Task, TaskState};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{bad, internal};
use crate::daemon::Daemon;
use crate::ids;
use crate::vm_request::{validate_vm, AsVmRequest, HostLimits};
use output::OutputLog;

/// A task whose runner is alive.
pub struct LiveTask {
    cancel: CancellationToken,
    reason: Mutex<Option<String>>,
    output: OutputLog,
    stdin: stdin::TaskStdin,
}

impl LiveTask {
    fn cancel(&self, reason: &str) {
        self.reason.lock().get_or_insert_with(|| reason.into());
        self.cancel.cancel();
    }
}

#[derive(Default)]
pub struct TaskManager {
    live: Mutex<HashMap<String, Arc<LiveTask>>>,
    runners: TaskTracker,
}

impl TaskManager {
    pub fn running(&self) -> usize {
        self.live.lock().len()
    }

    /// The uploading end of the stdin of running task `id` (`POST /v1/tasks/{id}/stdin`).
    pub fn stdin(&self, id: &str) -> Result<tokio::sync::mpsc::Sender<bytes::Bytes>, ApiError> {
        let live = self.live(id).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no running task '{id}' (it does not exist or has ended)"),
            )
        })?;
        live.stdin.take_upload(id)
    }

    fn live(&self, id: &str) -> Option<Arc<LiveTask>> {
        self.live.lock().get(id).cloned()
    }

    /// Validates `req`, records the task and starts its runner.
    pub async fn create(
        &self,
        daemon: &Arc<Daemon>,
        mut req: CreateTask,
    ) -> Result<Task, ApiError> {
        if daemon.shutdown.is_cancelled() {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "aegisd is shutting down",
            ));
        }
        // What no image configuration changes is checked before the image is looked up: a
        // request that can never run gets its 400, not a 503 asking to build the image.
        let limits = HostLimits::probe();
        crate::vm_request::validate_resources(req.memory_mib, req.vcpus, &limits)?;
        req.check_durations().map_err(bad)?;
        let image = req
            .image
            .clone()
            .unwrap_or_else(|| aegis_api::DEFAULT_IMAGE.to_string());
        let root = crate::images::resolve_root(daemon, &image).await?;
        if let Some(config) = &root.config {
            req.apply_image_config(config);
        }
        validate(&req, &limits)?;
        crate::quotas::check_free_disk(daemon, "start a task's VM")?;
        let assets = root.assets;
        let workspace = crate::workspaces::check_request(daemon, req.workspace.as_deref())?;
        let task = Task {
            id: ids::new_id("task"),
            state: TaskState::Booting,
            command: req.command.clone(),
            image,
            vcpus: req.vcpus.unwrap_or(aegis_api::DEFAULT_VCPUS),
            memory_mib: req.memory_mib.unwrap_or(aegis_api::DEFAULT_MEMORY_MIB),
            timeout_secs: req.timeout_secs,
            exit_code: None,
            error: None,
            created_at: ids::now(),
            started_at: None,
            ended_at: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
            artifacts_dir: None,
            guest_kernel: None,
            workspace: workspace.as_ref().map(|w| w.as_request()),
        };
        if let Some(ws) = &workspace {
            daemon.workspaces.acquire(daemon, ws, &task.id)?;
        }
        let release = || {
            daemon
                .workspaces
                .release(task.workspace.as_deref(), &task.id)
        };
        let dir = self.task_dir(daemon, &task.id);
        let bound = output::Bound::Cap {
            bytes: daemon.config.limits.task_output_bytes,
        };
        let output = OutputLog::create(&dir, bound).map_err(|e| {
            release();
            internal(format!(
                "cannot create the output directory {}: {e}",
                dir.display()
            ))
        })?;
        let live = Arc::new(LiveTask {
            cancel: CancellationToken::new(),
            reason: Mutex::new(None),
            output,
            stdin: stdin::TaskStdin::new(req.stdin),
        });
        // Counted as a live VM from here until its runner ends.
        let admitted = daemon.admission.admit_vm(daemon, "a task", None, || {
            self.live.lock().insert(task.id.clone(), live.clone());
        });
        if let Err(refused) = admitted.and_then(|()| {
            daemon.registry.insert_task(&task).map_err(|e| {
                self.finished(&task.id);
                internal(e.to_string())
            })
        }) {
            release();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(refused);
        }
        let span = tracing::info_span!("task", id = %task.id);
        self.runners.spawn(tracing::Instrument::instrument(
            run::run(daemon.clone(), task.clone(), req, assets, live),
            span,
        ));
        Ok(task)
    }

    /// `(id, image)` of every task that has not ended.
    pub fn live_images(&self, daemon: &Daemon) -> Vec<(String, String)> {
        let ids: Vec<String> = self.live.lock().keys().cloned().collect();
        ids.into_iter()
            .filter_map(|id| self.get(daemon, &id).ok())
            .map(|t| (t.id, t.image))
            .collect()
    }

    pub fn task_dir(&self, daemon: &Daemon, id: &str) -> PathBuf {
        daemon.config.home.task_dir(id)
    }

    pub fn get(&self, daemon: &Daemon, id: &str) -> Result<Task, ApiError> {
        daemon
            .registry
            .get_task(id)
            .map_err(|e| internal(e.to_string()))?
            .ok_or_else(|| not_found(id))
    }

    pub fn cancel(&self, daemon: &Daemon, id: &str) -> Result<Task, ApiError> {
        let task = self.get(daemon, id)?;
        match self.live(id) {
            Some(live) => {
                live.cancel("cancelled by a client");
                Ok(task)
            }
            None if task.state.is_terminal() => Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "task {id} already ended ({}); nothing to cancel",
                    task.state.as_str()
                ),
            )),
            None => Ok(task),
        }
    }

    pub fn delete(&self, daemon: &Daemon, id: &str) -> Result<(), ApiError> {
        let task = self.get(daemon, id)?;
        if !task.state.is_terminal() || self.live(id).is_some() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "task {id} is still {}; cancel it first",
                    task.state.as_str()
                ),
            ));
        }
        daemon
            .registry
            .delete_task(id)
            .map_err(|e| internal(e.to_string()))?;
        let dir = self.task_dir(daemon, id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove task directory");
            }
        }
        Ok(())
    }

    /// The output feed of task `id` from the given offsets: NDJSON lines. With `follow`, it
    /// waits for new bytes and ends with one `End` event once the task ended.
    pub fn output(
        &self,
        daemon: &Arc<Daemon>,
        id: &str,
        follow: bool,
        offsets: (u64, u64),
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, ApiError> {
        self.get(daemon, id)?;
        let dir = self.task_dir(daemon, id);
        let watch = self.live(id).map(|l| l.output.subscribe());
        let daemon_stop = daemon.shutdown.clone();
        let daemon = daemon.clone();
        let id = id.to_string();
        let end = Box::new(move || {
            let task = daemon.registry.get_task(&id).ok().flatten()?;
            Some(OutputEvent::End {
                task: Box::new(task),
            })
        });
        Ok(output::feed(dir, watch, follow, offsets, end, daemon_stop))
    }

    /// Cancels every running task and waits (bounded) for their VMs to be gone.
    pub async fn shutdown(&self, grace: Duration) {
        let live: Vec<_> = self.live.lock().values().cloned().collect();
        for t in live {
            t.cancel("aegisd is shutting down");
        }
        self.runners.close();
        if tokio::time::timeout(grace, self.runners.wait())
            .await
            .is_err()
        {
            tracing::error!("some task runners did not stop in time");
        }
    }

    fn finished(&self, id: &str) {
        self.live.lock().remove(id);
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no task '{id}'; list tasks with `aegis task ls`"),
    )
}

/// Checks a request against the API's rules and this host's limits.
pub fn validate(req: &CreateTask, limits: &HostLimits) -> Result<(), ApiError> {
    validate_vm(&req.vm_request(), limits)?;
    req.check_durations().map_err(bad)?;
    if req.max_artifact_bytes == Some(0) {
        return Err(bad(
            "max_artifact_bytes must be at least 1; leave it out for the daemon's cap",
        ));
    }
    for a in &req.artifacts {
        if !a.starts_with('/') {
            return Err(bad(format!(
                "artifact path '{a}' must be absolute (a path inside the guest)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_api::StreamName;
    use output::OutputState;

    fn req(cmd: &[&str]) -> CreateTask {
        CreateTask {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn validation() {
        let l = HostLimits {
            cpus: 2,
            memory_mib: 4096,
        };
        assert!(validate(&req(&["echo"]), &l).is_ok());
        assert!(validate(&req(&[]), &l).is_err());
        assert!(validate(&req(&[""]), &l).is_err());
        let mut r = req(&["x"]);
        r.memory_mib = Some(0);
        let e = validate(&r, &l).unwrap_err();
        assert!(e.error.message.contains("too small"), "{e}");
        r.memory_mib = Some(1 << 30);
        assert!(validate(&r, &l)
            .unwrap_err()
            .error
            .message
            .contains("exceeds"));
        r.memory_mib = None;
        r.vcpus = Some(3);
        assert!(validate(&r, &l).is_err());
        r.vcpus = Some(2);
        r.timeout_secs = Some(0);
        assert!(validate(&r, &l).is_err());
        r.timeout_secs = None;
        r.artifacts = vec!["relative/path".into()];
        assert!(validate(&r, &l).is_err());
        r.artifacts = vec!["/out".into()];
        r.env.insert("A=B".into(), "x".into());
        assert!(validate(&r, &l).is_err());
    }

    #[test]
    fn output_state_len() {
        let s = OutputState {
            stdout: 1,
            stderr: 2,
            done: false,
        };
        assert_eq!(s.len(StreamName::Stderr), 2);
    }
}
