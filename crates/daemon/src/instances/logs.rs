//! The served process's output: its stdout and stderr streams, pumped into the instance log
//! (the same log across every VM the instance runs in).

use aegis_api::StreamName;
use aegis_proto::session::RecvHalf;

use super::runtime::InstanceRuntime;

impl InstanceRuntime {
    /// Appends what arrives on `out` and `err` to the instance log until the streams end.
    pub(super) fn pump_logs(&self, out: RecvHalf, err: RecvHalf) {
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
