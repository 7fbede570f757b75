//! The served process's output: its stdout and stderr streams, pumped into the instance log
//! (the same log across every VM the instance runs in).

use aegis_api::StreamName;
use aegis_proto::session::RecvHalf;
use aegis_proto::{Session, StreamId};

use super::runtime::InstanceRuntime;

impl InstanceRuntime {
    /// Opens the served process's stdout and stderr streams on `session`, pumped into the
    /// instance log; returns their ids for `Spawn` or `Attach`.
    pub(super) fn open_log_streams(&self, session: &Session) -> (StreamId, StreamId) {
        let stdout = session.open_stream();
        let stderr = session.open_stream();
        let ids = (stdout.id(), stderr.id());
        self.pump_logs(stdout.into_split().0, stderr.into_split().0);
        ids
    }

    /// Appends what arrives on `out` and `err` to the instance log until the streams end.
    fn pump_logs(&self, out: RecvHalf, err: RecvHalf) {
        for (mut rx, stream) in [(out, StreamName::Stdout), (err, StreamName::Stderr)] {
            let log = self.log.clone();
            let instance = self.id.clone();
            tokio::spawn(async move {
                while let Ok(Some(bytes)) = rx.recv().await {
                    if let Err(e) = log.append(stream, &bytes) {
                        tracing::warn!(%instance, error = %e, "cannot store instance output");
                        return;
                    }
                }
            });
        }
    }
}
