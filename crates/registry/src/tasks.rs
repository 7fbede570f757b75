//! Task records.

use aegis_api::{Task, TaskState};
use rusqlite::{params, OptionalExtension, Row};

use crate::{Registry, RegistryError, Result};

const COLUMNS: &str = "id, state, command, image, vcpus, memory_mib, timeout_secs, exit_code, \
     error, created_at, started_at, ended_at, stdout_bytes, stderr_bytes, artifacts_dir, \
     guest_kernel, workspace";

fn from_row(row: &Row<'_>) -> rusqlite::Result<std::result::Result<Task, RegistryError>> {
    let id: String = row.get(0)?;
    let state: String = row.get(1)?;
    let command: String = row.get(2)?;
    let state = match state.parse::<TaskState>() {
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
    Ok(Ok(Task {
        id,
        state,
        command,
        image: row.get(3)?,
        vcpus: row.get(4)?,
        memory_mib: row.get(5)?,
        timeout_secs: row.get(6)?,
        exit_code: row.get(7)?,
        error: row.get(8)?,
        created_at: row.get(9)?,
        started_at: row.get(10)?,
        ended_at: row.get(11)?,
        stdout_bytes: row.get(12)?,
        stderr_bytes: row.get(13)?,
        artifacts_dir: row.get(14)?,
        guest_kernel: row.get(15)?,
        workspace: row.get(16)?,
    }))
}

impl Registry {
    pub fn insert_task(&self, t: &Task) -> Result<()> {
        let command = serde_json::to_string(&t.command).unwrap_or_else(|_| "[]".into());
        self.conn().execute(
            &format!("INSERT INTO tasks ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"),
            params![
                t.id,
                t.state.as_str(),
                command,
                t.image,
                t.vcpus,
                t.memory_mib,
                t.timeout_secs,
                t.exit_code,
                t.error,
                t.created_at,
                t.started_at,
                t.ended_at,
                t.stdout_bytes,
                t.stderr_bytes,
                t.artifacts_dir,
                t.guest_kernel,
                t.workspace,
            ],
        )?;
        Ok(())
    }

    /// Writes every mutable field of `t` in one statement.
    pub fn update_task(&self, t: &Task) -> Result<()> {
        self.conn().execute(
            "UPDATE tasks SET state = ?2, exit_code = ?3, error = ?4, started_at = ?5, \
             ended_at = ?6, stdout_bytes = ?7, stderr_bytes = ?8, artifacts_dir = ?9, \
             guest_kernel = ?10 WHERE id = ?1",
            params![
                t.id,
                t.state.as_str(),
                t.exit_code,
                t.error,
                t.started_at,
                t.ended_at,
                t.stdout_bytes,
                t.stderr_bytes,
                t.artifacts_dir,
                t.guest_kernel,
            ],
        )?;
        Ok(())
    }

    pub fn get_task(&self, id: &str) -> Result<Option<Task>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?;
        row.transpose()
    }

    /// All tasks, newest first.
    pub fn list_tasks(&self) -> Result<Vec<Task>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM tasks ORDER BY created_at DESC, id"
        ))?;
        let rows = stmt.query_map([], from_row)?;
        rows.map(|r| r?).collect()
    }

    /// Returns whether a row was deleted.
    pub fn delete_task(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM tasks WHERE id = ?1", [id])?
            > 0)
    }

    /// Marks every task that was still booting or running as failed with `reason`; returns
    /// their ids. Used at start-up: their VMs died with the previous daemon.
    pub fn fail_unfinished_tasks(&self, reason: &str, now: &str) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let ids: Vec<String> = {
            let mut stmt =
                tx.prepare("SELECT id FROM tasks WHERE state IN ('booting', 'running')")?;
            let ids = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            ids
        };
        tx.execute(
            "UPDATE tasks SET state = 'failed', error = ?1, ended_at = ?2 \
             WHERE state IN ('booting', 'running')",
            params![reason, now],
        )?;
        tx.commit()?;
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn task(id: &str, created: &str) -> Task {
        Task {
            id: id.into(),
            state: TaskState::Booting,
            command: vec!["echo".into(), "hi there".into()],
            image: "busybox".into(),
            vcpus: 1,
            memory_mib: 256,
            timeout_secs: Some(5),
            exit_code: None,
            error: None,
            created_at: created.into(),
            started_at: None,
            ended_at: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
            artifacts_dir: None,
            guest_kernel: None,
            workspace: Some("data".into()),
        }
    }

    #[test]
    fn crud() {
        let r = Registry::in_memory().unwrap();
        let mut t = task("t1", "2026-01-01T00:00:00Z");
        r.insert_task(&t).unwrap();
        assert_eq!(r.get_task("t1").unwrap().unwrap(), t);
        t.state = TaskState::Exited;
        t.exit_code = Some(3);
        t.stdout_bytes = 10_000_000;
        t.guest_kernel = Some("6.1.0-aegis".into());
        r.update_task(&t).unwrap();
        assert_eq!(r.get_task("t1").unwrap().unwrap(), t);
        r.insert_task(&task("t2", "2026-01-02T00:00:00Z")).unwrap();
        let ids: Vec<_> = r.list_tasks().unwrap().into_iter().map(|t| t.id).collect();
        assert_eq!(ids, ["t2", "t1"]);
        assert!(r.delete_task("t1").unwrap());
        assert!(!r.delete_task("t1").unwrap());
        assert!(r.get_task("t1").unwrap().is_none());
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let r = Registry::in_memory().unwrap();
        r.insert_task(&task("t1", "x")).unwrap();
        assert!(r.insert_task(&task("t1", "x")).is_err());
    }

    #[test]
    fn unfinished_tasks_fail_on_restart() {
        let r = Registry::in_memory().unwrap();
        r.insert_task(&task("a", "1")).unwrap();
        let mut done = task("b", "2");
        done.state = TaskState::Exited;
        r.insert_task(&done).unwrap();
        let failed = r.fail_unfinished_tasks("daemon restarted", "now").unwrap();
        assert_eq!(failed, ["a"]);
        let a = r.get_task("a").unwrap().unwrap();
        assert_eq!(a.state, TaskState::Failed);
        assert_eq!(a.error.as_deref(), Some("daemon restarted"));
        assert_eq!(r.get_task("b").unwrap().unwrap().state, TaskState::Exited);
    }

    #[test]
    fn corrupt_rows_are_reported_not_panicked_on() {
        let r = Registry::in_memory().unwrap();
        r.insert_task(&task("t1", "x")).unwrap();
        r.conn()
            .execute("UPDATE tasks SET state = 'bogus'", [])
            .unwrap();
        assert!(matches!(
            r.get_task("t1"),
            Err(RegistryError::Corrupt { .. })
        ));
    }
}
