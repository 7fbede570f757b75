//! Where the daemon keeps things and which backend it uses.

use std::path::{Path, PathBuf};

use aegis_vmm::select::BackendChoice;

/// `$AEGIS_HOME`, else `~/.aegis`.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("AEGIS_HOME") {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    base.join(".aegis")
}

#[derive(Debug, Clone)]
pub struct Config {
    pub home: PathBuf,
    pub backend: BackendChoice,
}

impl Config {
    pub fn new(home: PathBuf, backend: &str) -> anyhow::Result<Self> {
        let backend = backend
            .parse::<BackendChoice>()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Config { home, backend })
    }

    pub fn socket(&self) -> PathBuf {
        self.home.join("aegisd.sock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.home.join("aegisd.pid")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.home.join("aegisd.lock")
    }
    pub fn db(&self) -> PathBuf {
        self.home.join("aegis.db")
    }
    /// Per-VM private directories (sockets, scratch disk, console log).
    pub fn run_dir(&self) -> PathBuf {
        self.home.join("run")
    }
    /// Per-task output and artifacts.
    pub fn tasks_dir(&self) -> PathBuf {
        self.home.join("tasks")
    }

    /// The guest harness binary: `$AEGIS_HARNESS`, else `aegis-harness` beside this executable.
    pub fn harness_binary(&self) -> PathBuf {
        if let Some(p) = std::env::var_os("AEGIS_HARNESS") {
            return PathBuf::from(p);
        }
        beside_current_exe("aegis-harness")
    }
}

pub(crate) fn beside_current_exe(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default()
        .join(name)
}
