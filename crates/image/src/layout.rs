//! Where guest artefacts live on the host.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use aegis_api::AegisHome;

use crate::error::{ImageError, IoContext, Result};

/// The Aegis home, through which every function of this crate finds the guest-artefact cache
/// ([`AegisHome::cache_dir`] and below):
///
/// ```text
/// <home>/cache/kernel/<hash>/vmlinux              guest kernel for config hash <hash>
/// <home>/cache/images/<name>/rootfs.ext4          base image (read-only, 0444)
/// <home>/cache/images/<name>/recipe.sha256        recipe hash the image was built from
/// <home>/cache/initramfs/<hash>/initramfs.cpio    harness initramfs for harness hash <hash>
/// ```
///
/// The name is kept for this crate's callers; the layout itself is defined once, in
/// `aegis-api`.
pub type Layout = AegisHome;

pub(crate) fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).ctx("create directory", path)
}

/// An exclusive advisory lock on `<dir>/.lock`, held until dropped, so that two `aegis
/// setup` runs (or a daemon and a CLI) never build the same artefact at once.
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Take the lock, calling `on_wait` first if another process holds it.
    pub fn acquire(dir: &Path, on_wait: impl FnOnce()) -> Result<Self> {
        create_dir_all(dir)?;
        let path = dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx("open lock file", &path)?;
        let mut on_wait = Some(on_wait);
        let mut op = libc::LOCK_EX | libc::LOCK_NB;
        loop {
            // SAFETY: flock on a file descriptor we own and keep open; no memory is shared.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(DirLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            match err.kind() {
                std::io::ErrorKind::Interrupted => {}
                std::io::ErrorKind::WouldBlock => {
                    if let Some(f) = on_wait.take() {
                        f();
                    }
                    op = libc::LOCK_EX;
                }
                _ => return Err(ImageError::io("lock", path, err)),
            }
        }
    }
}

/// Write `contents` to `path` atomically: a temporary file in the same directory, renamed.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir).ctx("create temporary file in", dir)?;
    fs::write(tmp.path(), contents).ctx("write", tmp.path())?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
        .ctx("set permissions of", tmp.path())?;
    tmp.persist(path)
        .map_err(|e| ImageError::io("rename into place", path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path().join("a")).unwrap().count(), 1);
    }

    #[test]
    fn second_holder_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), || panic!("nobody holds it yet")).unwrap();
        let path = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            // flock locks belong to the open file description, so a second open in the
            // same process contends like another process would.
            let _second = DirLock::acquire(&path, || tx.send(()).unwrap()).unwrap();
        });
        rx.recv().unwrap();
        drop(first);
        waiter.join().unwrap();
    }
}
