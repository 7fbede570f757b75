//! Where guest artefacts live on the host.

use std::env;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{ImageError, IoContext, Result};

/// The Aegis home directory, as far as guest artefacts are concerned.
///
/// ```text
/// <home>/cache/kernel/<hash>/vmlinux              guest kernel for config hash <hash>
/// <home>/cache/images/<name>/rootfs.ext4          base image (read-only, 0444)
/// <home>/cache/images/<name>/recipe.sha256        recipe hash the image was built from
/// <home>/cache/initramfs/<hash>/initramfs.cpio    harness initramfs for harness hash <hash>
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `aegis_home` (nothing is created yet).
    pub fn new(aegis_home: &Path) -> Self {
        Layout {
            root: aegis_home.to_path_buf(),
        }
    }

    /// The layout under `$AEGIS_HOME`, or `~/.aegis` when it is not set.
    pub fn from_env() -> Result<Self> {
        default_home().map(|home| Layout::new(&home))
    }

    /// The Aegis home directory.
    pub fn home(&self) -> &Path {
        &self.root
    }

    /// `<home>/cache`.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// `<home>/cache/kernel`.
    pub fn kernel_dir(&self) -> PathBuf {
        self.cache_dir().join("kernel")
    }

    /// `<home>/cache/images`.
    pub fn images_dir(&self) -> PathBuf {
        self.cache_dir().join("images")
    }

    /// `<home>/cache/initramfs`.
    pub fn initramfs_dir(&self) -> PathBuf {
        self.cache_dir().join("initramfs")
    }
}

/// `$AEGIS_HOME`, or `$HOME/.aegis`.
pub fn default_home() -> Result<PathBuf> {
    if let Some(home) = env::var_os("AEGIS_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".aegis"))
        .ok_or(ImageError::NoHome)
}

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
    fn cache_paths_hang_off_the_home() {
        let l = Layout::new(Path::new("/h"));
        assert_eq!(l.home(), Path::new("/h"));
        assert_eq!(l.kernel_dir(), Path::new("/h/cache/kernel"));
        assert_eq!(l.images_dir(), Path::new("/h/cache/images"));
        assert_eq!(l.initramfs_dir(), Path::new("/h/cache/initramfs"));
    }

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
