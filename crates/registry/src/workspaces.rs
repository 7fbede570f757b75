//! Workspace records (named workspaces; host-path workspaces have none).

use aegis_api::WorkspaceMode;
use rusqlite::{params, OptionalExtension};

use crate::{Registry, RegistryError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRecord {
    pub name: String,
    pub mode: WorkspaceMode,
    pub created_at: String,
}

fn record(name: String, mode: String, created_at: String) -> Result<WorkspaceRecord> {
    let mode = mode
        .parse::<WorkspaceMode>()
        .map_err(|detail| RegistryError::Corrupt {
            id: name.clone(),
            detail,
        })?;
    Ok(WorkspaceRecord {
        name,
        mode,
        created_at,
    })
}

impl Registry {
    /// Inserts `w`; returns false (and changes nothing) if the name is taken.
    pub fn insert_workspace(&self, w: &WorkspaceRecord) -> Result<bool> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO workspaces (name, mode, created_at) VALUES (?1, ?2, ?3)",
            params![w.name, w.mode.as_str(), w.created_at],
        )?;
        Ok(n > 0)
    }

    pub fn get_workspace(&self, name: &str) -> Result<Option<WorkspaceRecord>> {
        let row = self
            .conn()
            .query_row(
                "SELECT name, mode, created_at FROM workspaces WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(n, m, c)| record(n, m, c)).transpose()
    }

    /// All workspaces, by name.
    pub fn list_workspaces(&self) -> Result<Vec<WorkspaceRecord>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, mode, created_at FROM workspaces ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        let mut out = vec![];
        for row in rows {
            let (n, m, c) = row?;
            out.push(record(n, m, c)?);
        }
        Ok(out)
    }

    /// Returns whether a row was deleted.
    pub fn delete_workspace(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM workspaces WHERE name = ?1", [name])?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crud() {
        let r = Registry::in_memory().unwrap();
        let w = WorkspaceRecord {
            name: "data".into(),
            mode: WorkspaceMode::Shared,
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        assert!(r.insert_workspace(&w).unwrap());
        assert!(!r.insert_workspace(&w).unwrap());
        assert_eq!(r.get_workspace("data").unwrap(), Some(w.clone()));
        let a = WorkspaceRecord {
            name: "a".into(),
            mode: WorkspaceMode::Isolated,
            ..w.clone()
        };
        r.insert_workspace(&a).unwrap();
        assert_eq!(r.list_workspaces().unwrap(), [a, w]);
        assert!(r.delete_workspace("data").unwrap());
        assert!(!r.delete_workspace("data").unwrap());
        assert_eq!(r.get_workspace("data").unwrap(), None);
    }
}
