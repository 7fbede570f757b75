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
}

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
        })
    }

    /// Per-VM private directories: [`AegisHome::run_dir`], kept here for the callers that
    /// reach it through the config.
    pub fn run_dir(&self) -> PathBuf {
        self.home.run_dir()
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
