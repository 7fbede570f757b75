//! What to boot.

use std::path::{Path, PathBuf};

use crate::backend::VmmError;

/// One block device given to the guest. The harness finds disks by `serial`, never by order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    pub read_only: bool,
    /// Up to 20 ASCII bytes (virtio-blk limit), e.g. `aegis-root`, `aegis-scratch`.
    pub serial: String,
}

/// A host directory shared with the guest (virtio-fs where the backend has it). The guest
/// mounts it by `tag`; its data lives on the host only, never in a disk image or snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Up to 36 ASCII bytes (virtio-fs tag limit), e.g. `aegis-workspace`.
    pub tag: String,
    pub host_path: PathBuf,
    pub read_only: bool,
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
    /// Host directories shared with the guest; empty for most VMs.
    pub shares: Vec<Share>,
    /// Private directory of this VM: API/QMP/channel sockets, console log, pid file. Created by
    /// the caller (mode 0700); the backend removes nothing outside it.
    pub run_dir: PathBuf,
}

/// A saved memory snapshot: a cache, never canonical state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    pub dir: PathBuf,
}

impl VmSpec {
    /// Smallest guest memory accepted: below this the kernel and harness barely fit.
    pub const MIN_MEMORY_MIB: u32 = 64;
    /// Longest virtio-blk serial.
    pub const MAX_SERIAL_LEN: usize = 20;
    /// Longest virtio-fs tag.
    pub const MAX_TAG_LEN: usize = 36;

    /// Checks what every backend needs before it starts anything: sane sizes, a usable id,
    /// existing absolute files, well-formed kernel arguments and disk serials. `max_vcpus` is
    /// the number of host cores.
    pub fn validate(&self, max_vcpus: u32) -> Result<(), VmmError> {
        let invalid = |msg: String| Err(VmmError::InvalidSpec(msg));
        if self.id.is_empty()
            || self.id.len() > 64
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return invalid(format!(
                "VM id '{}' must be 1-64 characters of [A-Za-z0-9._-]",
                self.id
            ));
        }
        if self.memory_mib < Self::MIN_MEMORY_MIB {
            return invalid(format!(
                "memory {} MiB is below the minimum of {} MiB",
                self.memory_mib,
                Self::MIN_MEMORY_MIB
            ));
        }
        if self.vcpus == 0 || self.vcpus > max_vcpus {
            return invalid(format!(
                "{} vCPUs requested; this host allows 1 to {max_vcpus}",
                self.vcpus
            ));
        }
        check_file("kernel", &self.kernel)?;
        check_file("initramfs", &self.initramfs)?;
        if !self.run_dir.is_absolute() || !self.run_dir.is_dir() {
            return invalid(format!(
                "run directory {} must be an existing absolute directory",
                self.run_dir.display()
            ));
        }
        for arg in &self.kernel_args {
            if arg.is_empty() || arg.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return invalid(format!(
                    "kernel argument {arg:?} must be non-empty and contain no whitespace"
                ));
            }
        }
        let mut serials = std::collections::HashSet::new();
        for disk in &self.disks {
            check_file("disk", &disk.path)?;
            let s = &disk.serial;
            if s.is_empty()
                || s.len() > Self::MAX_SERIAL_LEN
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return invalid(format!(
                    "disk serial '{s}' must be 1-{} characters of [A-Za-z0-9._-]",
                    Self::MAX_SERIAL_LEN
                ));
            }
            if !serials.insert(s.as_str()) {
                return invalid(format!("disk serial '{s}' is used twice"));
            }
        }
        let mut tags = std::collections::HashSet::new();
        for share in &self.shares {
            let t = &share.tag;
            if t.is_empty()
                || t.len() > Self::MAX_TAG_LEN
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return invalid(format!(
                    "share tag '{t}' must be 1-{} characters of [A-Za-z0-9._-]",
                    Self::MAX_TAG_LEN
                ));
            }
            if !tags.insert(t.as_str()) {
                return invalid(format!("share tag '{t}' is used twice"));
            }
            if !share.host_path.is_absolute() || !share.host_path.is_dir() {
                return invalid(format!(
                    "shared directory {} (tag '{t}') must be an existing absolute directory",
                    share.host_path.display()
                ));
            }
        }
        Ok(())
    }
}

fn check_file(what: &str, path: &Path) -> Result<(), VmmError> {
    if !path.is_absolute() {
        return Err(VmmError::InvalidSpec(format!(
            "{what} path {} must be absolute",
            path.display()
        )));
    }
    if !path.is_file() {
        return Err(VmmError::InvalidSpec(format!(
            "{what} {} does not exist or is not a file",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> VmSpec {
        let f = dir.join("f");
        std::fs::write(&f, b"x").unwrap();
        VmSpec {
            id: "vm-1".into(),
            kernel: f.clone(),
            initramfs: f.clone(),
            kernel_args: vec!["aegis.x=1".into()],
            vcpus: 1,
            memory_mib: 256,
            disks: vec![Disk {
                path: f,
                read_only: true,
                serial: "aegis-root".into(),
            }],
            shares: vec![],
            run_dir: dir.to_path_buf(),
        }
    }

    fn err(s: &VmSpec) -> String {
        match s.validate(2) {
            Err(VmmError::InvalidSpec(m)) => m,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn validation() {
        let dir = tempfile::tempdir().unwrap();
        let good = spec(dir.path());
        good.validate(2).unwrap();

        let mut s = good.clone();
        s.memory_mib = 32;
        assert!(err(&s).contains("minimum of 64"));
        let mut s = good.clone();
        s.vcpus = 3;
        assert!(err(&s).contains("1 to 2"));
        let mut s = good.clone();
        s.vcpus = 0;
        err(&s);
        let mut s = good.clone();
        s.kernel = dir.path().join("missing");
        assert!(err(&s).contains("does not exist"));
        let mut s = good.clone();
        s.initramfs = "relative".into();
        assert!(err(&s).contains("absolute"));
        let mut s = good.clone();
        s.id = "a,b".into();
        err(&s);
        let mut s = good.clone();
        s.kernel_args.push("a b".into());
        err(&s);
        let mut s = good.clone();
        s.disks[0].serial = "x".repeat(21);
        err(&s);
        let mut s = good.clone();
        s.disks.push(s.disks[0].clone());
        assert!(err(&s).contains("twice"));

        let share = Share {
            tag: "aegis-workspace".into(),
            host_path: dir.path().to_path_buf(),
            read_only: false,
        };
        let mut s = good.clone();
        s.shares.push(share.clone());
        s.validate(2).unwrap();
        s.shares.push(share.clone());
        assert!(err(&s).contains("used twice"));
        for bad in ["", "a b", "a/b", &"t".repeat(37)] {
            let mut s = good.clone();
            s.shares.push(Share {
                tag: bad.to_string(),
                ..share.clone()
            });
            assert!(err(&s).contains("share tag"), "{bad}");
        }
        for bad in [
            PathBuf::from("relative"),
            dir.path().join("missing"),
            dir.path().join("f"),
        ] {
            let mut s = good.clone();
            s.shares.push(Share {
                host_path: bad.clone(),
                ..share.clone()
            });
            assert!(err(&s).contains("existing absolute directory"), "{bad:?}");
        }
    }
}
