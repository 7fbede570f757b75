//! Exec records: what `GET /v1/execs/{id}` shows of an exec once aegisd no longer holds it in
//! memory (after a restart). The output is not here: it stays in the exec's files.

use aegis_api::ExecState;
use rusqlite::{params, OptionalExtension, Row};

use crate::{Registry, RegistryError, Result};

/// One exec, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRecord {
    pub id: String,
    /// The instance's id.
    pub instance: String,
    pub command: Vec<String>,
    /// Whether it ran on a pseudo-terminal (only such an exec can be resized).
    pub tty: bool,
    pub state: ExecState,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub created_at: String,
    pub ended_at: Option<String>,
}

const COLUMNS: &str = "id, instance, command, tty, state, exit_code, error, created_at, ended_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<std::result::Result<ExecRecord, RegistryError>> {
    let id: String = row.get(0)?;
    let command: String = row.get(2)?;
    let state: String = row.get(4)?;
    let state = match state.parse::<ExecState>() {
        Ok(s) => s,
        Err(detail) => return Ok(Err(RegistryError::Corrupt { id, detail })),
    };
    let command = match serde_json::from_str(&command) {
        Ok(c) => c,
        Err(e) => {
            return Ok(Err(RegistryError::Corrupt {
                id,
                detail: e.to_string(),
            }))
        }
    };
    Ok(Ok(ExecRecord {
        id,
        instance: row.get(1)?,
        command,
        tty: row.get(3)?,
        state,
        exit_code: row.get(5)?,
        error: row.get(6)?,
        created_at: row.get(7)?,
        ended_at: row.get(8)?,
    }))
}

impl Registry {
    /// Records an exec: a running one once the guest started it, or one that could not start
    /// with its end already set.
    pub fn insert_exec(&self, e: &ExecRecord) -> Result<()> {
        let command = serde_json::to_string(&e.command).map_err(|err| RegistryError::Corrupt {
            id: e.id.clone(),
            detail: format!("cannot encode the command: {err}"),
        })?;
        self.conn().execute(
            &format!("INSERT INTO execs ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
            params![
                e.id,
                e.instance,
                command,
                e.tty,
                e.state.as_str(),
                e.exit_code,
                e.error,
                e.created_at,
                e.ended_at,
            ],
        )?;
        Ok(())
    }

    /// Records the end of a running exec in one statement. Only a `running` row changes: the
    /// first end wins, as in memory, and an exec that start-up reconciliation already marked
    /// failed keeps that verdict. Returns whether a row changed.
    pub fn end_exec(
        &self,
        id: &str,
        state: ExecState,
        exit_code: Option<i32>,
        error: Option<&str>,
        ended_at: &str,
    ) -> Result<bool> {
        let changed = self.conn().execute(
            "UPDATE execs SET state = ?2, exit_code = ?3, error = ?4, ended_at = ?5 \
             WHERE id = ?1 AND state = 'running'",
            params![id, state.as_str(), exit_code, error, ended_at],
        )?;
        Ok(changed > 0)
    }

    pub fn get_exec(&self, id: &str) -> Result<Option<ExecRecord>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM execs WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?;
        row.transpose()
    }

    /// The execs of `instance`, oldest first.
    pub fn list_execs(&self, instance: &str) -> Result<Vec<ExecRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM execs WHERE instance = ?1 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([instance], from_row)?;
        rows.map(|r| r?).collect()
    }

    /// Marks every exec still running as failed with `reason`; returns their ids. Used at
    /// start-up: their processes died with their VMs and the previous daemon.
    pub fn fail_running_execs(&self, reason: &str, now: &str) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let ids: Vec<String> = {
            let mut stmt =
                tx.prepare("SELECT id FROM execs WHERE state = 'running' ORDER BY id")?;
            let ids = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            ids
        };
        tx.execute(
            "UPDATE execs SET state = 'failed', error = ?1, ended_at = ?2 \
             WHERE state = 'running'",
            params![reason, now],
        )?;
        tx.commit()?;
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InstanceRecord;

    fn instance(r: &Registry, id: &str) {
        r.insert_instance(&InstanceRecord {
            id: id.into(),
            name: id.into(),
            target: Default::default(),
            endpoints: vec![],
            created_at: "2026-01-01T00:00:00Z".into(),
        })
        .unwrap();
    }

    fn exec(id: &str, instance: &str, created: &str) -> ExecRecord {
        ExecRecord {
            id: id.into(),
            instance: instance.into(),
            command: vec!["sh".into(), "-c".into(), "echo 'hi there'".into()],
            tty: false,
            state: ExecState::Running,
            exit_code: None,
            error: None,
            created_at: created.into(),
            ended_at: None,
        }
    }

    #[test]
    fn an_exec_is_recorded_and_its_end_written_once() {
        let r = Registry::in_memory().unwrap();
        instance(&r, "inst-1");
        let mut e = exec("exec-1", "inst-1", "2026-01-01T00:00:01Z");
        e.tty = true;
        r.insert_exec(&e).unwrap();
        assert_eq!(r.get_exec("exec-1").unwrap().unwrap(), e);
        assert!(r.insert_exec(&e).is_err(), "ids are unique");

        assert!(r
            .end_exec("exec-1", ExecState::Exited, Some(3), None, "end")
            .unwrap());
        // A second end (a late watcher) changes nothing: the first one wins.
        assert!(!r
            .end_exec("exec-1", ExecState::Failed, None, Some("late"), "later")
            .unwrap());
        let ended = r.get_exec("exec-1").unwrap().unwrap();
        assert_eq!(
            ended,
            ExecRecord {
                state: ExecState::Exited,
                exit_code: Some(3),
                ended_at: Some("end".into()),
                ..e
            }
        );
        assert!(!r
            .end_exec("exec-none", ExecState::Exited, Some(0), None, "x")
            .unwrap());
        assert!(r.get_exec("exec-none").unwrap().is_none());
    }

    #[test]
    fn an_exec_that_could_not_start_is_recorded_ended() {
        let r = Registry::in_memory().unwrap();
        instance(&r, "inst-1");
        let e = ExecRecord {
            state: ExecState::Exited,
            exit_code: Some(127),
            error: Some("no such command".into()),
            ended_at: Some("t".into()),
            ..exec("exec-1", "inst-1", "t")
        };
        r.insert_exec(&e).unwrap();
        assert_eq!(r.get_exec("exec-1").unwrap().unwrap(), e);
        assert!(r.fail_running_execs("restart", "now").unwrap().is_empty());
    }

    #[test]
    fn running_execs_fail_on_restart_and_ended_ones_keep_their_end() {
        let r = Registry::in_memory().unwrap();
        instance(&r, "inst-1");
        instance(&r, "inst-2");
        r.insert_exec(&exec("exec-a", "inst-1", "1")).unwrap();
        r.insert_exec(&exec("exec-b", "inst-2", "2")).unwrap();
        r.insert_exec(&exec("exec-c", "inst-1", "3")).unwrap();
        r.end_exec("exec-c", ExecState::Exited, Some(0), None, "4")
            .unwrap();
        let failed = r.fail_running_execs("aegisd restarted", "5").unwrap();
        assert_eq!(failed, ["exec-a", "exec-b"]);
        let a = r.get_exec("exec-a").unwrap().unwrap();
        assert_eq!(
            (
                a.state,
                a.exit_code,
                a.error.as_deref(),
                a.ended_at.as_deref()
            ),
            (ExecState::Failed, None, Some("aegisd restarted"), Some("5"))
        );
        let c = r.get_exec("exec-c").unwrap().unwrap();
        assert_eq!((c.state, c.exit_code), (ExecState::Exited, Some(0)));
        // The old daemon's watcher, late: the reconciled verdict stays.
        assert!(!r
            .end_exec("exec-a", ExecState::Exited, Some(0), None, "6")
            .unwrap());
        assert!(r.fail_running_execs("again", "7").unwrap().is_empty());
    }

    #[test]
    fn removing_an_instance_removes_its_execs_only() {
        let r = Registry::in_memory().unwrap();
        instance(&r, "inst-1");
        instance(&r, "inst-2");
        r.insert_exec(&exec("exec-a", "inst-1", "1")).unwrap();
        r.insert_exec(&exec("exec-b", "inst-2", "2")).unwrap();
        r.insert_exec(&exec("exec-c", "inst-1", "3")).unwrap();
        let ids = |i: &str| -> Vec<String> {
            r.list_execs(i).unwrap().into_iter().map(|e| e.id).collect()
        };
        assert_eq!(ids("inst-1"), ["exec-a", "exec-c"]);
        assert!(r.delete_instance("inst-1").unwrap());
        assert!(ids("inst-1").is_empty());
        assert!(r.get_exec("exec-a").unwrap().is_none());
        assert_eq!(ids("inst-2"), ["exec-b"]);
    }

    #[test]
    fn a_file_registry_cascades_and_refuses_execs_of_unknown_instances() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(&dir.path().join("a.db")).unwrap();
        assert!(
            r.insert_exec(&exec("exec-a", "inst-none", "1")).is_err(),
            "foreign keys are enforced on the daemon's database"
        );
        instance(&r, "inst-1");
        r.insert_exec(&exec("exec-a", "inst-1", "1")).unwrap();
        // A plain instance delete (no explicit exec delete) still takes its execs.
        r.conn()
            .execute("DELETE FROM instances WHERE id = 'inst-1'", [])
            .unwrap();
        assert!(r.get_exec("exec-a").unwrap().is_none());
    }

    #[test]
    fn corrupt_exec_rows_are_reported_not_panicked_on() {
        let r = Registry::in_memory().unwrap();
        instance(&r, "inst-1");
        r.insert_exec(&exec("exec-a", "inst-1", "1")).unwrap();
        r.conn()
            .execute("UPDATE execs SET state = 'bogus'", [])
            .unwrap();
        assert!(matches!(
            r.get_exec("exec-a"),
            Err(RegistryError::Corrupt { .. })
        ));
    }
}
