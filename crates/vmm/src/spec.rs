//! What to boot.

use std::path::PathBuf;

/// One block device given to the guest. The harness finds disks by `serial`, never by order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    pub read_only: bool,
    /// Up to 20 ASCII bytes (virtio-blk limit), e.g. `aegis-root`, `aegis-scratch`.
    pub serial: String,
}

/// Everything a backend needs to boot one microVM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Aegis instance id; also names the VMM process for reconciliation.
    pub id: String,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// Extra kernel arguments (`aegis.*`); the backend adds console/clock arguments itself.
    pub kernel_args: Vec<String>,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disks: Vec<Disk>,
    /// Private directory of this VM: API/QMP/channel sockets, console log, pid file. Created by
    /// the caller (mode 0700); the backend removes nothing outside it.
    pub run_dir: PathBuf,
}

/// A saved memory snapshot: a cache, never canonical state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    pub dir: PathBuf,
}
