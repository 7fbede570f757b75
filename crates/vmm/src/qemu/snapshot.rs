//! The on-disk form of a QEMU memory snapshot and the checks before one is used.
//!
//! ```text
//! <dir>/memory      QEMU migration stream (RAM + device state), written via `exec:cat`
//! <dir>/meta.json   what machine it came from; written last, so its presence means complete
//! ```
//!
//! A snapshot is a cache. Anything unexpected (missing file, other QEMU version, other machine
//! shape) makes it unusable, never "probably fine": the caller deletes it and boots cold.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::VmmError;
use crate::capabilities::BackendKind;

pub const MEMORY_FILE: &str = "memory";
pub const META_FILE: &str = "meta.json";
/// Bumped when the layout of a snapshot directory changes.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotMeta {
    pub format: u32,
    pub backend: BackendKind,
    pub qemu_version: String,
    pub accelerator: String,
    /// [`super::cmdline::machine_fingerprint`] of the machine that was saved.
    pub machine_hash: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub disks: Vec<DiskMeta>,
    /// Size of the memory file, checked before use (a truncated file is refused).
    pub memory_bytes: u64,
    /// The VM it was taken from (informational: a snapshot may be restored under another id).
    pub vm_id: String,
    pub created_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskMeta {
    pub serial: String,
    pub read_only: bool,
}

pub fn memory_path(dir: &Path) -> PathBuf {
    dir.join(MEMORY_FILE)
}

pub fn meta_path(dir: &Path) -> PathBuf {
    dir.join(META_FILE)
}

impl SnapshotMeta {
    /// Why a VM described by `want` cannot be restored from this snapshot, if it cannot.
    /// `memory_bytes`, `vm_id` and `created_unix_ms` of `want` are ignored.
    pub fn mismatch(&self, want: &SnapshotMeta) -> Option<String> {
        if self.format != FORMAT {
            return Some(format!(
                "snapshot format {} (this Aegis reads {FORMAT})",
                self.format
            ));
        }
        if self.backend != want.backend {
            return Some(format!("taken by the {} backend", self.backend));
        }
        if self.qemu_version != want.qemu_version {
            return Some(format!(
                "taken with QEMU {}, this host runs {}",
                self.qemu_version, want.qemu_version
            ));
        }
        if self.accelerator != want.accelerator {
            return Some(format!(
                "taken under {}, this VM would run under {}",
                self.accelerator, want.accelerator
            ));
        }
        if self.memory_mib != want.memory_mib {
            return Some(format!(
                "taken with {} MiB of memory, the spec asks for {} MiB",
                self.memory_mib, want.memory_mib
            ));
        }
        if self.vcpus != want.vcpus {
            return Some(format!(
                "taken with {} vCPUs, the spec asks for {}",
                self.vcpus, want.vcpus
            ));
        }
        if self.disks != want.disks {
            return Some(format!(
                "taken with disks {:?}, the spec has {:?}",
                self.disks, want.disks
            ));
        }
        if self.machine_hash != want.machine_hash {
            return Some("the machine configuration differs".into());
        }
        None
    }
}

/// Reads and sanity-checks `<dir>/meta.json` and the memory file it describes.
pub fn read(dir: &Path) -> Result<SnapshotMeta, VmmError> {
    let unusable = |reason: String| VmmError::Snapshot {
        dir: dir.to_path_buf(),
        reason,
    };
    let meta_file = meta_path(dir);
    let text = std::fs::read(&meta_file).map_err(|e| {
        unusable(if e.kind() == std::io::ErrorKind::NotFound {
            format!("{META_FILE} is missing (incomplete or not a snapshot)")
        } else {
            format!("cannot read {}: {e}", meta_file.display())
        })
    })?;
    let meta: SnapshotMeta = serde_json::from_slice(&text)
        .map_err(|e| unusable(format!("{META_FILE} is malformed: {e}")))?;
    let memory = memory_path(dir);
    let len = std::fs::metadata(&memory)
        .map_err(|e| unusable(format!("cannot stat {}: {e}", memory.display())))?
        .len();
    if len != meta.memory_bytes {
        return Err(unusable(format!(
            "{MEMORY_FILE} is {len} bytes, {META_FILE} says {}",
            meta.memory_bytes
        )));
    }
    Ok(meta)
}

/// Writes `<dir>/meta.json` atomically; call it last, after the memory file is synced.
pub fn write(dir: &Path, meta: &SnapshotMeta) -> Result<(), VmmError> {
    let mut bytes = serde_json::to_vec_pretty(meta).map_err(|e| VmmError::Snapshot {
        dir: dir.to_path_buf(),
        reason: format!("cannot encode {META_FILE}: {e}"),
    })?;
    bytes.push(b'\n');
    crate::process::write_atomic(&meta_path(dir), &bytes)?;
    // Make the rename durable: a snapshot that vanishes after a host crash is fine, one whose
    // meta.json survives without its memory is not (both live in `dir`).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            format: FORMAT,
            backend: BackendKind::Qemu,
            qemu_version: "7.2.22".into(),
            accelerator: "tcg".into(),
            machine_hash: "abc".into(),
            memory_mib: 256,
            vcpus: 1,
            disks: vec![DiskMeta {
                serial: "aegis-root".into(),
                read_only: true,
            }],
            memory_bytes: 5,
            vm_id: "a".into(),
            created_unix_ms: 1,
        }
    }

    #[test]
    fn mismatches_are_explained() {
        let m = meta();
        let mut want = meta();
        want.vm_id = "b".into();
        want.memory_bytes = 0;
        assert_eq!(m.mismatch(&want), None);
        want.memory_mib = 512;
        assert!(m.mismatch(&want).unwrap().contains("256 MiB"));
        let mut want = meta();
        want.qemu_version = "8.0.0".into();
        assert!(m.mismatch(&want).unwrap().contains("QEMU 7.2.22"));
        let mut want = meta();
        want.machine_hash = "def".into();
        assert!(m.mismatch(&want).is_some());
    }

    #[test]
    fn round_trip_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            matches!(read(dir.path()), Err(VmmError::Snapshot { reason, .. }) if reason.contains("missing"))
        );
        std::fs::write(memory_path(dir.path()), b"12345").unwrap();
        write(dir.path(), &meta()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), meta());
        std::fs::write(memory_path(dir.path()), b"123").unwrap();
        assert!(
            matches!(read(dir.path()), Err(VmmError::Snapshot { reason, .. }) if reason.contains("3 bytes"))
        );
        std::fs::write(meta_path(dir.path()), b"{").unwrap();
        assert!(
            matches!(read(dir.path()), Err(VmmError::Snapshot { reason, .. }) if reason.contains("malformed"))
        );
    }
}
