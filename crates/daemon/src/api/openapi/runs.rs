//! Paths of tasks and execs (`api/tasks.rs`, `api/exec.rs`).

use aegis_api::{ApiError, CreateExec, CreateTask, Exec, OutputEvent, Task};

use super::RawBytes;
use crate::api::exec::{ResizeQuery, SignalQuery};
use crate::api::tasks::OutputQuery;

/// Run a command in a fresh microVM
///
/// Answers once the task is accepted (state `booting`); follow `GET /v1/tasks/{id}/output`
/// for its output and end.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks",
    request_body = CreateTask,
    responses(
        (status = 201, description = "Accepted.", body = Task),
        (status = 400, description = "Malformed body or a value out of range.", body = ApiError),
        (status = 404, description = "An image or workspace it names does not exist.",
            body = ApiError),
        (status = 409, description = "Its workspace is held in a conflicting mode.",
            body = ApiError),
        (status = 429, description = "The live VM limit is reached.", body = ApiError),
        (status = 500, description = "The daemon failed to start it.", body = ApiError),
        (status = 503, description = "The host cannot run VMs now (kernel, image or VMM \
            missing).", body = ApiError),
        (status = 507, description = "The host's free disk is below the configured reserve.",
            body = ApiError),
    ))]
pub(super) fn create_task() {}

/// List tasks, running and ended
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks",
    responses(
        (status = 200, description = "Every task in the registry.", body = [Task]),
        (status = 500, description = "The registry could not be read.", body = ApiError),
    ))]
pub(super) fn list_tasks() {}

/// One task
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "The task's id.")),
    responses(
        (status = 200, description = "The task.", body = Task),
        (status = 404, description = "No such task.", body = ApiError),
    ))]
pub(super) fn get_task() {}

/// Remove an ended task with its output and artifacts
#[utoipa::path(delete, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "The task's id.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 404, description = "No such task.", body = ApiError),
        (status = 409, description = "The task is still running: cancel it first.",
            body = ApiError),
    ))]
pub(super) fn delete_task() {}

/// Cancel a task: its VM is killed and its state becomes `cancelled`
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks",
    params(("id" = String, Path, description = "The task's id.")),
    responses(
        (status = 200, description = "The task, cancelled.", body = Task),
        (status = 404, description = "No such task.", body = ApiError),
        (status = 409, description = "The task has already ended.", body = ApiError),
    ))]
pub(super) fn cancel_task() {}

/// The task's output feed
///
/// `output` events carry base64 bytes of one stream from a byte offset; with `follow` the
/// feed ends with one `end` event holding the final task.
#[utoipa::path(get, path = "/v1/tasks/{id}/output", tag = "tasks",
    params(("id" = String, Path, description = "The task's id."), OutputQuery),
    responses(
        (status = 200, description = "NDJSON: one `OutputEvent` JSON object per line.",
            content_type = "application/x-ndjson", body = OutputEvent),
        (status = 400, description = "An unknown or malformed query parameter.",
            body = ApiError),
        (status = 404, description = "No such task.", body = ApiError),
    ))]
pub(super) fn task_output() {}

/// Upload the task's stdin
///
/// The body, as it arrives, is the command's stdin; its end (or the client going away) is
/// the command's end-of-file. Only for a task created with `stdin: true`.
#[utoipa::path(post, path = "/v1/tasks/{id}/stdin", tag = "tasks",
    params(("id" = String, Path, description = "The task's id.")),
    request_body(content = RawBytes, content_type = "application/octet-stream"),
    responses(
        (status = 204, description = "The body was passed on (or the task ended meanwhile)."),
        (status = 404, description = "No such task, or it has no open stdin.", body = ApiError),
        (status = 409, description = "Its stdin is already being uploaded or has ended.",
            body = ApiError),
    ))]
pub(super) fn task_stdin() {}

/// Run a process in an instance's VM, waking the instance
#[utoipa::path(post, path = "/v1/instances/{id}/exec", tag = "exec",
    params(("id" = String, Path, description = "The instance's id or name.")),
    request_body = CreateExec,
    responses(
        (status = 201, description = "Started; follow `GET /v1/execs/{id}/output`.",
            body = Exec),
        (status = 400, description = "Malformed body or terminal size.", body = ApiError),
        (status = 404, description = "No such instance.", body = ApiError),
        (status = 409, description = "The instance cannot run it now (stopped, or being \
            removed).", body = ApiError),
        (status = 429, description = "Waking it would pass the live VM limit.",
            body = ApiError),
        (status = 503, description = "The guest cannot start processes now.", body = ApiError),
        (status = 507, description = "Waking it needs disk the host does not have.",
            body = ApiError),
    ))]
pub(super) fn create_exec() {}

/// One exec: state and exit code
#[utoipa::path(get, path = "/v1/execs/{id}", tag = "exec",
    params(("id" = String, Path, description = "The exec's id.")),
    responses(
        (status = 200, description = "The exec.", body = Exec),
        (status = 404, description = "No such exec.", body = ApiError),
    ))]
pub(super) fn get_exec() {}

/// The exec's output feed (the same events as a task's)
#[utoipa::path(get, path = "/v1/execs/{id}/output", tag = "exec",
    params(("id" = String, Path, description = "The exec's id."), OutputQuery),
    responses(
        (status = 200, description = "NDJSON: one `OutputEvent` JSON object per line.",
            content_type = "application/x-ndjson", body = OutputEvent),
        (status = 400, description = "An unknown or malformed query parameter.",
            body = ApiError),
        (status = 404, description = "No such exec.", body = ApiError),
    ))]
pub(super) fn exec_output() {}

/// Upload the exec's stdin
///
/// The body, as it arrives, is the process's stdin; its end closes it (on a terminal: hangs
/// it up). The guest's flow-control window bounds what is buffered.
#[utoipa::path(post, path = "/v1/execs/{id}/stdin", tag = "exec",
    params(("id" = String, Path, description = "The exec's id.")),
    request_body(content = RawBytes, content_type = "application/octet-stream"),
    responses(
        (status = 204, description = "The body was passed on (or the process ended \
            meanwhile)."),
        (status = 404, description = "No such exec.", body = ApiError),
        (status = 409, description = "No stdin to upload: not kept open, already taken, or \
            the exec has ended.", body = ApiError),
    ))]
pub(super) fn exec_stdin() {}

/// Send a signal to the exec's process
#[utoipa::path(post, path = "/v1/execs/{id}/signal", tag = "exec",
    params(("id" = String, Path, description = "The exec's id."), SignalQuery),
    responses(
        (status = 204, description = "Sent."),
        (status = 400, description = "No or a malformed `signal`.", body = ApiError),
        (status = 404, description = "No such exec.", body = ApiError),
        (status = 409, description = "The exec has ended.", body = ApiError),
        (status = 503, description = "The guest could not be reached.", body = ApiError),
    ))]
pub(super) fn exec_signal() {}

/// Resize the exec's terminal
#[utoipa::path(post, path = "/v1/execs/{id}/resize", tag = "exec",
    params(("id" = String, Path, description = "The exec's id."), ResizeQuery),
    responses(
        (status = 204, description = "Resized."),
        (status = 400, description = "Missing or out-of-range `rows`/`cols`.",
            body = ApiError),
        (status = 404, description = "No such exec.", body = ApiError),
        (status = 409, description = "The exec has ended or has no terminal.",
            body = ApiError),
        (status = 503, description = "The guest could not be reached.", body = ApiError),
    ))]
pub(super) fn exec_resize() {}
