//! Where the daemon keeps things and which backend it uses.

use std::path::{Path, PathBuf};

use aegis_api::AegisHome;
use aegis_vmm::select::BackendChoice;

#[derive(Debug, Clone)]
pub struct Config {
    /// The Aegis home: every file of the daemon is under it (see [`AegisHome`]).
    pub home: AegisHome,
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
    pub fn new(home: impl Into<AegisHome>, backend: &str) -> anyhow::Result<Self> {
        let backend = backend
            .parse::<BackendChoice>()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Config {
            home: home.into(),
            backend,
            router_addr: DEFAULT_ROUTER_ADDR.parse()?,
            max_artifact_bytes: DEFAULT_MAX_ARTIFACT_BYTES,
        })
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
