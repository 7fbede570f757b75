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
    /// The shared HTTP router port (Host routing). Port 0 picks a free one.
    pub router_addr: std::net::SocketAddr,
    /// Most bytes of artifact archives one task may copy back from its guest
    /// ([`DEFAULT_MAX_ARTIFACT_BYTES`] unless configured); a task may ask for less.
    pub max_artifact_bytes: u64,
}

/// Default cap on one task's artifacts: 1 GiB.
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// The default shared router address.
pub const DEFAULT_ROUTER_ADDR: &str = "127.0.0.1:8099";

impl Config {
    pub fn new(home: PathBuf, backend: &str) -> anyhow::Result<Self> {
        let backend = backend
            .parse::<BackendChoice>()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Config {
            home,
            backend,
            router_addr: DEFAULT_ROUTER_ADDR.parse()?,
            max_artifact_bytes: DEFAULT_MAX_ARTIFACT_BYTES,
        })
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
    /// Named workspaces' data, one directory each.
    pub fn workspaces_dir(&self) -> PathBuf {
        self.home.join("workspaces")
    }
    /// Per-task output and artifacts.
    pub fn tasks_dir(&self) -> PathBuf {
        self.home.join("tasks")
    }

    /// The guest harness binary (see [`aegis_image::harness_path`]).
    pub fn harness_binary(&self) -> PathBuf {
        let exe = beside_current_exe("aegisd");
        aegis_image::harness_path(exe.parent().unwrap_or(Path::new(".")))
    }
}

pub(crate) fn beside_current_exe(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default()
        .join(name)
}
