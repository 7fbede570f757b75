//! Execs in the registry: a row when an exec starts (or fails to), its end when it ends, and
//! the lookup that falls back to the row for an exec this aegisd did not start (it ran before
//! a restart). Such an exec has ended: start-up reconciliation failed the ones still running
//! (`crate::reconcile`). Its output is read from its files, which the previous aegisd wrote.

use std::path::PathBuf;
use std::sync::{Arc, Weak};

use aegis_api::{ApiError, ErrorCode, ExecState};
use aegis_registry::ExecRecord;
use parking_lot::Mutex;

use super::exec::{Ending, ExecRun};
use super::InstanceManager;
use crate::api::internal;
use crate::daemon::Daemon;

/// What start-up reconciliation says of an exec it finds running: its VM, and so its process,
/// died with the previous aegisd; its output files stay.
pub const RESTARTED: &str = "aegisd restarted while this exec ran; its process was stopped \
     with its VM; the output up to then is kept";

/// Where the output of exec `id` of `instance` is: inside the instance's directory, so it goes
/// with the instance.
pub(super) fn exec_dir(daemon: &Daemon, instance: &str, id: &str) -> PathBuf {
    daemon
        .config
        .home
        .instance_dir(instance)
        .join("execs")
        .join(id)
}

impl InstanceManager {
    /// The exec `id`: one this aegisd started, in whichever instance it runs, or else one of
    /// a previous aegisd from its record.
    pub fn exec(&self, daemon: &Daemon, id: &str) -> Result<Arc<ExecRun>, ApiError> {
        let instances: Vec<_> = self.instances.lock().values().cloned().collect();
        if let Some(run) = instances.iter().find_map(|rt| rt.execs.get(id)) {
            return Ok(run);
        }
        match daemon.registry.get_exec(id) {
            Ok(Some(record)) => Ok(Arc::new(ExecRun::recorded(daemon, record))),
            Ok(None) => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no exec '{id}' (execs are forgotten when their instance is removed)"),
            )),
            Err(e) => Err(internal(format!(
                "cannot read the record of exec {id}: {e}"
            ))),
        }
    }
}

impl ExecRun {
    /// An exec of a previous aegisd, from its record: ended, so it has no stdin, no guest to
    /// signal and no log writer (its files are final).
    fn recorded(daemon: &Daemon, r: ExecRecord) -> ExecRun {
        let end = r.state.is_ended().then(|| Ending {
            state: r.state,
            exit_code: r.exit_code,
            error: r.error,
            at: r.ended_at.unwrap_or_default(),
        });
        ExecRun {
            dir: exec_dir(daemon, &r.instance, &r.id),
            id: r.id,
            instance: r.instance,
            command: r.command,
            created_at: r.created_at,
            proc_id: 0,
            log: None,
            end: Mutex::new(end),
            stdin: Mutex::new(None),
            connector: Mutex::new(None),
            tty: r.tty,
            daemon: Weak::new(),
        }
    }

    /// Inserts the exec's row as it stands: running once the guest started it, or already
    /// ended when it could not start. Called once, before anything can end a running exec.
    pub(super) fn record(&self) {
        let Some(daemon) = self.daemon.upgrade() else {
            return;
        };
        let end = self.end.lock().clone();
        let record = ExecRecord {
            id: self.id.clone(),
            instance: self.instance.clone(),
            command: self.command.clone(),
            tty: self.tty,
            state: end.as_ref().map_or(ExecState::Running, |e| e.state),
            exit_code: end.as_ref().and_then(|e| e.exit_code),
            error: end.as_ref().and_then(|e| e.error.clone()),
            created_at: self.created_at.clone(),
            ended_at: end.map(|e| e.at),
        };
        if let Err(e) = daemon.registry.insert_exec(&record) {
            // The exec runs on (its output is on disk); only a restart would forget it. The
            // usual cause is benign: its instance was removed while it started (the row
            // would have gone with the instance's).
            tracing::error!(
                exec = %self.id, instance = %self.instance, error = %e,
                "cannot record the exec (was its instance just removed?): aegisd will forget \
                 it when it restarts"
            );
        }
    }

    /// Writes the end into the exec's row (a no-op before [`Self::record`]: the row is then
    /// inserted with its end).
    pub(super) fn record_end(&self, end: &Ending) {
        // Gone only when aegisd itself is: start-up reconciliation then ends the row.
        let Some(daemon) = self.daemon.upgrade() else {
            return;
        };
        let written = daemon.registry.end_exec(
            &self.id,
            end.state,
            end.exit_code,
            end.error.as_deref(),
            &end.at,
        );
        if let Err(e) = written {
            tracing::error!(
                exec = %self.id, error = %e,
                "cannot record the end of the exec: after a restart it will show as failed"
            );
        }
    }
}
