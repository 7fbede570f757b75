//! The limits a daemon enforces, as `GET /v1/status` reports them. The daemon reads them from
//! its `config.toml` (docs/CONFIG.md lists every key and its default); each field here is named
//! like its key in the `[limits]` table.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The effective limits of a daemon: its configuration file over the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Limits {
    /// Most VMs alive at once: running tasks plus instances with a VM (running or paused).
    pub max_live_vms: u32,
    /// Most instances that may exist, whether they have a VM or not.
    pub max_instances: u32,
    /// Most ports one instance may expose.
    pub max_exposed_ports: u32,
    /// Size at which one stream of an instance's log is rotated, in bytes.
    pub instance_log_bytes: u64,
    /// Rotated files kept per stream of an instance's log (older ones are deleted).
    pub instance_log_rotated_files: u32,
    /// Most bytes stored of one stream (stdout or stderr) of one task; the rest is dropped
    /// and the stored output ends with a line that says so.
    pub task_output_bytes: u64,
    /// Most bytes kept of one VM's console log.
    pub console_log_bytes: u64,
    /// The largest OCI blob a pull downloads, compressed.
    pub max_blob_bytes: u64,
    /// The most one OCI layer may unpack to.
    pub max_layer_unpacked_bytes: u64,
    /// The daemon's cap on one task's artifacts.
    pub max_artifact_bytes: u64,
    /// Free disk space under the Aegis home below which new VMs, pulls, publishes and
    /// snapshots are refused.
    pub free_disk_reserve_bytes: u64,
}

/// A size for people, as limits and their errors state it: `10 GiB`, `1.5 MiB` (rounded down
/// to a tenth), `512 bytes`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= size {
            let whole = bytes / size;
            let tenth = (bytes % size) * 10 / size;
            return if tenth == 0 {
                format!("{whole} {unit}")
            } else {
                format!("{whole}.{tenth} {unit}")
            };
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(1 << 30), "1 GiB");
        assert_eq!(human_bytes(3 << 19), "1.5 MiB");
        assert_eq!(human_bytes((1 << 40) - 1), "1023.9 GiB");
    }
}
