//! The initramfs that carries the guest harness (PID 1) into every VM.
//!
//! Contents, uncompressed cpio "newc":
//!
//! ```text
//! dev/            0755
//! dev/console     char 5:1, 0600   (so PID 1 has stdio before devtmpfs is mounted)
//! proc/ sys/ mnt/ 0755             (mount points the harness uses before pivoting)
//! init            0755             the static harness binary
//! ```

use std::fs;
use std::io::BufWriter;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cpio::CpioWriter;
use crate::error::{ImageError, IoContext, Result};
use crate::kernel::hex;
use crate::layout::{create_dir_all, DirLock, Layout};

/// Bump when the archive layout changes, so cached archives are rebuilt.
const INITRAMFS_FORMAT: &str = "aegis-initramfs-1";
const FILE_NAME: &str = "initramfs.cpio";

/// Write the initramfs for `harness_binary` to `out` (atomically: temp file, then rename).
pub fn write_initramfs(harness_binary: &Path, out: &Path) -> Result<()> {
    let harness = read_harness(harness_binary)?;
    write_archive(&harness, out)
}

fn read_harness(path: &Path) -> Result<Vec<u8>> {
    if !path.is_file() {
        return Err(ImageError::HarnessMissing {
            path: path.to_path_buf(),
        });
    }
    fs::read(path).ctx("read guest harness", path)
}

fn write_archive(harness: &[u8], out: &Path) -> Result<()> {
    let dir = out.parent().unwrap_or(Path::new("."));
    create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir).ctx("create temporary file in", dir)?;
    let write = |file: &fs::File| -> std::io::Result<()> {
        let mut w = CpioWriter::new(BufWriter::new(file));
        for d in ["dev", "proc", "sys", "mnt"] {
            w.dir(d, 0o755)?;
        }
        w.char_dev("dev/console", 0o600, 5, 1)?;
        w.file("init", 0o755, harness)?;
        w.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    };
    write(tmp.as_file()).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => ImageError::Cpio {
            name: "init".into(),
            reason: "the harness binary is larger than 4 GiB",
        },
        _ => ImageError::io("write initramfs", tmp.path(), e),
    })?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
        .ctx("set permissions of", tmp.path())?;
    tmp.persist(out)
        .map_err(|e| ImageError::io("rename into place", out, e.error))?;
    Ok(())
}

/// The cached initramfs for `harness_binary`, built if missing:
/// `cache/initramfs/<hash>/initramfs.cpio`, `<hash>` = sha256 of the harness binary and the
/// archive layout version, first 16 hex digits.
pub fn ensure_initramfs(layout: &Layout, harness_binary: &Path) -> Result<PathBuf> {
    let harness = read_harness(harness_binary)?;
    let out = layout
        .initramfs_cache_dir()
        .join(initramfs_hash(&harness))
        .join(FILE_NAME);
    if out.is_file() {
        return Ok(out);
    }
    let _lock = DirLock::acquire(&layout.initramfs_cache_dir(), || {})?;
    if !out.is_file() {
        write_archive(&harness, &out)?;
    }
    Ok(out)
}

fn initramfs_hash(harness: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(INITRAMFS_FORMAT.as_bytes());
    h.update([0]);
    h.update(harness);
    hex(&h.finalize())[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::{parse, S_IFCHR, S_IFDIR, S_IFREG};

    #[test]
    fn archive_has_init_console_and_mount_points() {
        let dir = tempfile::tempdir().unwrap();
        let harness = dir.path().join("harness");
        fs::write(&harness, b"\x7fELF fake harness").unwrap();
        let out = dir.path().join("out/initramfs.cpio");
        write_initramfs(&harness, &out).unwrap();

        let entries = parse(&fs::read(&out).unwrap()).unwrap();
        let get = |n: &str| entries.iter().find(|e| e.name == n).expect(n);
        for d in ["dev", "proc", "sys", "mnt"] {
            assert_eq!(get(d).mode, S_IFDIR | 0o755);
        }
        assert_eq!(get("dev/console").mode, S_IFCHR | 0o600);
        assert_eq!(get("dev/console").rdev, (5, 1));
        assert_eq!(get("init").mode, S_IFREG | 0o755);
        assert_eq!(get("init").data, b"\x7fELF fake harness");
        // Parents come before children, as the kernel's unpacker needs.
        let pos = |n: &str| entries.iter().position(|e| e.name == n).unwrap();
        assert!(pos("dev") < pos("dev/console"));
    }

    #[test]
    fn ensure_caches_by_harness_content() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let harness = dir.path().join("harness");
        fs::write(&harness, b"v1").unwrap();
        let a = ensure_initramfs(&layout, &harness).unwrap();
        assert!(a.starts_with(layout.initramfs_cache_dir()));
        assert_eq!(ensure_initramfs(&layout, &harness).unwrap(), a);
        fs::write(&harness, b"v2").unwrap();
        let b = ensure_initramfs(&layout, &harness).unwrap();
        assert_ne!(a, b);
        assert!(a.is_file() && b.is_file());
    }

    #[test]
    fn missing_harness_says_how_to_build_it() {
        let err = write_initramfs(Path::new("/nonexistent/harness"), Path::new("/tmp/x"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/harness") && err.contains("cargo build"),
            "{err}"
        );
    }
}
