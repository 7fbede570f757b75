//! The embedded SQLite registry of `aegisd`: tasks, VMs, instances and their execs,
//! workspaces, apps and releases.
//!
//! Schema changes are SQL files under `migrations/`, applied in order inside one transaction
//! each and recorded in `schema_migrations`. Every state change is one statement or one
//! transaction, so a crash never leaves a half-updated record.
#![forbid(unsafe_code)]

mod apps;
mod execs;
mod instances;
mod migrate;
mod tasks;
mod vms;
mod workspaces;

use std::path::{Path, PathBuf};

use parking_lot::{Mutex, MutexGuard};
use rusqlite::Connection;

pub use apps::{AppRecord, NewRelease};
pub use execs::ExecRecord;
pub use instances::InstanceRecord;
pub use vms::VmRecord;
pub use workspaces::WorkspaceRecord;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot open the registry database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the registry {path} has schema version {found}, newer than this aegisd knows ({known}); \
         run a newer aegisd or move the database away"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("migration {name} failed: {source}")]
    Migration {
        name: &'static str,
        source: rusqlite::Error,
    },
    #[error("registry query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("corrupt registry row {id}: {detail}")]
    Corrupt { id: String, detail: String },
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// A handle on the registry. Queries are short; one connection behind a mutex is enough for a
/// single-host daemon and keeps SQLite's locking trivial.
pub struct Registry {
    conn: Mutex<Connection>,
}

impl Registry {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(|source| RegistryError::Open {
            path: path.to_owned(),
            source,
        })?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut conn = conn;
        migrate::apply(&mut conn, path)?;
        Ok(Registry {
            conn: Mutex::new(conn),
        })
    }

    /// An in-memory registry for tests.
    pub fn in_memory() -> Result<Self> {
        let mut conn = Connection::open_in_memory()?;
        migrate::apply(&mut conn, Path::new(":memory:"))?;
        Ok(Registry {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock()
    }
}
