//! Opens connections to guest ports over a VM's session. One dispatcher task per session
//! routes the guest's `Connected`/`ConnectFailed` answers to whoever is waiting for them.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use aegis_proto::{GuestMessage, HostMessage, ProcId, Session, Stream, StreamId};
use tokio::sync::{mpsc, oneshot};

use super::files::FileReplies;

type Pending = Mutex<HashMap<StreamId, oneshot::Sender<Result<(), String>>>>;
/// Processes other than the server (execs) whose `Spawned`/`SpawnFailed`/`Exited` go to
/// their owner rather than to the log.
type Procs = Mutex<HashMap<ProcId, mpsc::UnboundedSender<GuestMessage>>>;

pub struct Connector {
    session: Session,
    pending: Arc<Pending>,
    procs: Arc<Procs>,
    /// Answers to file operations (`instances/files.rs`).
    pub(super) files: Arc<FileReplies>,
}

#[derive(Debug, thiserror::Error)]
pub enum GuestConnectError {
    #[error("nothing accepts connections on guest port {port}: {reason}")]
    Refused { port: u16, reason: String },
    #[error("the guest did not answer a connection to port {port} within {secs} s")]
    Timeout { port: u16, secs: u64 },
    #[error("the session with the guest is gone")]
    Closed,
}

impl Connector {
    /// Takes over the session's event stream.
    pub fn start(
        session: Session,
        mut events: mpsc::Receiver<GuestMessage>,
        owner: String,
    ) -> Arc<Self> {
        let pending: Arc<Pending> = Arc::default();
        let procs: Arc<Procs> = Arc::default();
        let p = pending.clone();
        let owned = procs.clone();
        let files: Arc<FileReplies> = Arc::default();
        let f = files.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let proc_id = match &ev {
                    GuestMessage::Spawned { id, .. }
                    | GuestMessage::SpawnFailed { id, .. }
                    | GuestMessage::Exited { id, .. } => Some(*id),
                    _ => None,
                };
                if let Some(tx) = proc_id.and_then(|id| owned.lock().get(&id).cloned()) {
                    let _ = tx.send(ev);
                    continue;
                }
                match ev {
                    GuestMessage::Connected { stream } => {
                        if let Some(tx) = p.lock().remove(&stream) {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    GuestMessage::ConnectFailed { stream, error } => {
                        if let Some(tx) = p.lock().remove(&stream) {
                            let _ = tx.send(Err(error));
                        }
                    }
                    GuestMessage::Exited { status, .. } => {
                        tracing::warn!(instance = %owner, ?status, "the served process exited");
                    }
                    other => {
                        if let Some(other) = f.deliver(other) {
                            tracing::debug!(instance = %owner, ?other, "guest event");
                        }
                    }
                }
            }
            // Session gone: everyone waiting fails now rather than at their timeout.
            p.lock().clear();
            owned.lock().clear();
            f.clear();
        });
        Arc::new(Connector {
            session,
            pending,
            procs,
            files,
        })
    }

    /// A stream spliced to `127.0.0.1:port` inside the guest.
    pub async fn connect(&self, port: u16, timeout: Duration) -> Result<Stream, GuestConnectError> {
        let stream = self.session.open_stream();
        let id = stream.id();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        if self
            .session
            .send(HostMessage::Connect { stream: id, port })
            .await
            .is_err()
        {
            self.pending.lock().remove(&id);
            return Err(GuestConnectError::Closed);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(stream),
            Ok(Ok(Err(reason))) => Err(GuestConnectError::Refused { port, reason }),
            Ok(Err(_)) => Err(GuestConnectError::Closed),
            Err(_) => {
                self.pending.lock().remove(&id);
                Err(GuestConnectError::Timeout {
                    port,
                    secs: timeout.as_secs(),
                })
            }
        }
    }

    /// Routes the events of process `id` to the returned receiver until [`Self::unwatch`];
    /// it ends when the session does.
    pub fn watch(&self, id: ProcId) -> mpsc::UnboundedReceiver<GuestMessage> {
        let (tx, rx) = mpsc::unbounded_channel();
        if !self.session.is_closed() {
            self.procs.lock().insert(id, tx);
        }
        rx
    }

    pub fn unwatch(&self, id: ProcId) {
        self.procs.lock().remove(&id);
    }

    pub fn session(&self) -> &Session {
        &self.session
    }
}
