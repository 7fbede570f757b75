//! A task's stdin (`CreateTask::stdin`): a client uploads it (`POST /v1/tasks/{id}/stdin`)
//! from the moment the task exists, while the VM may still boot; the bytes wait in a small
//! channel until the command runs, then flow to its stdin stream. The end of the upload is
//! the command's EOF.

use aegis_api::{ApiError, ErrorCode};
use aegis_proto::session::SendHalf;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Chunks held between the upload and the guest: the rest waits in the client's socket.
const QUEUED_CHUNKS: usize = 4;

/// The two ends of a task's stdin, each taken once.
#[derive(Default)]
pub struct TaskStdin {
    upload: Mutex<Option<mpsc::Sender<Bytes>>>,
    command: Mutex<Option<mpsc::Receiver<Bytes>>>,
}

impl TaskStdin {
    /// With `wanted`, the command's stdin is kept open for an upload; else it reads EOF.
    pub fn new(wanted: bool) -> Self {
        if !wanted {
            return TaskStdin::default();
        }
        let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
        TaskStdin {
            upload: Mutex::new(Some(tx)),
            command: Mutex::new(Some(rx)),
        }
    }

    /// The uploading end, once.
    pub fn take_upload(&self, task: &str) -> Result<mpsc::Sender<Bytes>, ApiError> {
        self.upload.lock().take().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "task {task} takes no more stdin: it was created without `stdin`, or its \
                     stdin was already uploaded"
                ),
            )
        })
    }

    /// The end the runner feeds the command from; `None` when the task takes no stdin.
    pub fn take_command_end(&self) -> Option<mpsc::Receiver<Bytes>> {
        self.command.lock().take()
    }
}

/// Copies the uploaded bytes to the command's stdin stream, then ends it (EOF).
pub async fn forward(mut from: mpsc::Receiver<Bytes>, mut to: SendHalf) {
    while let Some(chunk) = from.recv().await {
        if to.send(chunk).await.is_err() {
            // The session is gone; the runner reports why.
            return;
        }
    }
    let _ = to.finish().await;
}
