//! Ordered, transactional schema migrations.

use std::path::Path;

use rusqlite::Connection;

use crate::{RegistryError, Result};

/// Every migration, in order. Never edit a released one: add a new file.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_initial",
        include_str!("../migrations/0001_initial.sql"),
    ),
    (
        "0002_instances",
        include_str!("../migrations/0002_instances.sql"),
    ),
    (
        "0003_workspaces",
        include_str!("../migrations/0003_workspaces.sql"),
    ),
    ("0004_apps", include_str!("../migrations/0004_apps.sql")),
    ("0005_execs", include_str!("../migrations/0005_execs.sql")),
];

pub(crate) fn apply(conn: &mut Connection, path: &Path) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')))",
    )?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(RegistryError::TooNew {
            path: path.to_owned(),
            found: current,
            known,
        });
    }
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .map_err(|source| RegistryError::Migration { name, source })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
            rusqlite::params![i as i64 + 1, name],
        )?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        drop(crate::Registry::open(&db).unwrap());
        drop(crate::Registry::open(&db).unwrap());
        let conn = Connection::open(&db).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, MIGRATIONS.len() as i64);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        drop(crate::Registry::open(&db).unwrap());
        let conn = Connection::open(&db).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (99, 'future')",
            [],
        )
        .unwrap();
        drop(conn);
        let err = crate::Registry::open(&db).err().unwrap();
        assert!(
            matches!(err, RegistryError::TooNew { found: 99, .. }),
            "{err}"
        );
    }
}
