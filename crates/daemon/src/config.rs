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
    /// Quotas and size caps, from the configuration file ([`crate::config_file`]) over the
    /// defaults. `limits.max_artifact_bytes` is the most bytes of artifact archives one task
    /// may copy back from its guest; a task may ask for less.
    pub limits: aegis_api::Limits,
    /// The configuration file the limits came from (or would have: it is optional), named in
    /// every refusal so that the user knows where to raise a limit.
    pub config_file: PathBuf,
}

/// Default cap on one task's artifacts (`[limits] max_artifact_bytes`): 1 GiB.
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// The default shared router address.
pub const DEFAULT_ROUTER_ADDR: &str = "127.0.0.1:8099";

impl Config {
    pub fn new(home: impl Into<AegisHome>, backend: &str) -> anyhow::Result<Self> {
        let backend = backend
            .parse::<BackendChoice>()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let home: AegisHome = home.into();
        Ok(Config {
            config_file: home.config_file(),
            home,
            backend,
            router_addr: DEFAULT_ROUTER_ADDR.parse()?,
            limits: crate::config_file::default_limits(),
        })
    }

    /// The OCI pull and unpack caps of [`Self::limits`].
    pub fn oci_limits(&self) -> aegis_oci::Limits {
        aegis_oci::Limits {
            max_blob_bytes: self.limits.max_blob_bytes,
            max_layer_unpacked_bytes: self.limits.max_layer_unpacked_bytes,
        }
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
