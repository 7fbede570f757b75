//! The guest's file systems: from the initramfs to the overlay root and back down at
//! shutdown.
//!
//! ```text
//! initramfs /            /init (this binary), /dev/console, empty dev proc sys mnt
//!   /dev /proc /sys      devtmpfs, proc, sysfs
//!   /mnt/layers/0..N-1   disk layers, read-only (ext4, or erofs), bottom first
//!   /mnt/scratch         scratch disk (ext4, rw) with upper/ and work/; a tmpfs without one
//!   /mnt/root            overlay lower=/mnt/layers/N-1:...:0 upper=/mnt/scratch/upper
//! switch root            /dev /proc /sys moved into /mnt/root, /mnt/root moved onto /,
//!                        chroot: PID 1 stays PID 1 (no exec), the initramfs stays hidden
//! new /                  + devpts /dev/pts, tmpfs /dev/shm /tmp /run, cgroup2 /sys/fs/cgroup
//! ```

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::cmdline::BootArgs;
use super::disks::Disks;
use super::error::{Context, InitError};
use super::sys;

const LAYERS: &str = "/mnt/layers";
const SCRATCH: &str = "/mnt/scratch";
const NEW_ROOT: &str = "/mnt/root";

/// The layers under the overlay root, kept reachable after the switch (they are hidden
/// under it) so shutdown can make them clean.
pub struct Layers {
    lowers: Vec<OwnedFd>,
    scratch: OwnedFd,
    scratch_is_disk: bool,
}

fn mkdir(path: &Path) -> Result<(), InitError> {
    fs::create_dir_all(path).ctx("create directory", path)
}

fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), InitError> {
    sys::mount(Some(source), Path::new(target), Some(fstype), flags, data).map_err(|source_err| {
        InitError::Mount {
            fstype: fstype.into(),
            source_desc: source.into(),
            target: target.into(),
            source: source_err,
        }
    })
}

/// Whether something is mounted on `path` (it is on another device than its parent).
fn is_mountpoint(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(path), fs::metadata(path.join(".."))) {
        (Ok(here), Ok(parent)) => here.dev() != parent.dev() || here.ino() == parent.ino(),
        _ => false,
    }
}

/// Like [`mount`], but a file system already mounted there is fine.
fn mount_once(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), InitError> {
    mkdir(Path::new(target))?;
    if is_mountpoint(Path::new(target)) {
        return Ok(());
    }
    match mount(source, target, fstype, flags, data) {
        Err(InitError::Mount { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
            Ok(())
        }
        r => r,
    }
}

/// /dev, /proc and /sys in the initramfs: needed to read the command line and find disks.
pub fn early() -> Result<(), InitError> {
    let nodev = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
    mount_once(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        libc::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mount_once("proc", "/proc", "proc", nodev, None)?;
    mount_once("sysfs", "/sys", "sysfs", nodev, None)?;
    Ok(())
}

fn open_path(path: &str) -> Result<OwnedFd, InitError> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(path)
        .map(OwnedFd::from)
        .ctx("open", path)
}

/// Mounts one read-only disk layer (ext4, else erofs) at `target`.
fn mount_layer(disk: &Path, target: &Path) -> Result<(), InitError> {
    mkdir(target)?;
    let source = disk.to_string_lossy();
    // overlayfs recognises whiteouts (0/0 character devices) by their inode, never opens
    // them: nodev is fine.
    let ro = libc::MS_RDONLY | libc::MS_NODEV;
    if let Err(ext4) = sys::mount(Some(&source), target, Some("ext4"), ro, None) {
        if let Err(erofs) = sys::mount(Some(&source), target, Some("erofs"), ro, None) {
            return Err(InitError::RootFs {
                disk: disk.to_path_buf(),
                ext4,
                erofs,
            });
        }
    }
    Ok(())
}

/// Mounts the disk layers and the scratch disk and assembles the overlay at /mnt/root.
pub fn assemble(disks: &Disks) -> Result<Layers, InitError> {
    let mut lower_dirs = Vec::with_capacity(disks.layers.len());
    for (i, disk) in disks.layers.iter().enumerate() {
        let target = Path::new(LAYERS).join(i.to_string());
        mount_layer(disk, &target)?;
        lower_dirs.push(target);
    }
    mkdir(Path::new(SCRATCH))?;
    let scratch_is_disk = match &disks.scratch {
        Some(disk) => {
            let disk = disk.to_string_lossy();
            mount(&disk, SCRATCH, "ext4", libc::MS_NODEV, None)?;
            true
        }
        None => {
            tracing::info!("no scratch disk: changes to / live in memory only");
            mount("tmpfs", SCRATCH, "tmpfs", libc::MS_NODEV, Some("mode=0755"))?;
            false
        }
    };
    let upper = Path::new(SCRATCH).join("upper");
    let work = Path::new(SCRATCH).join("work");
    mkdir(&upper)?;
    mkdir(&work)?;
    mkdir(Path::new(NEW_ROOT))?;
    // overlayfs lists lower directories top first.
    let lowerdir = lower_dirs
        .iter()
        .rev()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let options = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    mount("overlay", NEW_ROOT, "overlay", 0, Some(&options))?;
    let lowers = lower_dirs
        .iter()
        .map(|d| open_path(&d.to_string_lossy()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Layers {
        lowers,
        scratch: open_path(SCRATCH)?,
        scratch_is_disk,
    })
}

/// Makes /mnt/root the root of the file system while staying PID 1.
pub fn switch_root() -> Result<(), InitError> {
    let new_root = Path::new(NEW_ROOT);
    for dir in ["dev", "proc", "sys"] {
        let from = Path::new("/").join(dir);
        let to = new_root.join(dir);
        mkdir(&to)?;
        sys::mount(
            Some(&from.to_string_lossy()),
            &to,
            None,
            libc::MS_MOVE,
            None,
        )
        .ctx("move mount", from)?;
    }
    std::env::set_current_dir(new_root).ctx("change directory to", new_root)?;
    sys::mount(Some("."), Path::new("/"), None, libc::MS_MOVE, None)
        .ctx("move onto /", new_root)?;
    sys::chroot(Path::new(".")).ctx("chroot into", new_root)?;
    std::env::set_current_dir("/").ctx("change directory to", "/")?;
    Ok(())
}

/// The rest of a normal Linux file system tree. /proc, /sys and /dev are required; the
/// others are conveniences whose failure is logged.
pub fn finish_tree() -> Result<(), InitError> {
    let nodev = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
    mount_once("proc", "/proc", "proc", nodev, None)?;
    mount_once("sysfs", "/sys", "sysfs", nodev, None)?;
    mount_once(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        libc::MS_NOSUID,
        Some("mode=0755"),
    )?;
    let optional: [(&str, &str, &str, libc::c_ulong, &str); 5] = [
        (
            "devpts",
            "/dev/pts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ),
        (
            "shm",
            "/dev/shm",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=0755",
        ),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", nodev, "nsdelegate"),
    ];
    for (source, target, fstype, flags, data) in optional {
        if let Err(e) = mount_once(source, target, fstype, flags, Some(data)) {
            tracing::warn!("{e}");
        }
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                tracing::warn!("cannot create {link}: {e}");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes /etc/hostname and /etc/hosts for `args.hostname` (into the overlay's upper layer).
pub fn write_host_files(args: &BootArgs) {
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
        args.hostname
    );
    for (path, content) in [
        ("/etc/hostname", format!("{}\n", args.hostname)),
        ("/etc/hosts", hosts),
    ] {
        if let Err(e) = fs::write(path, content) {
            tracing::warn!("cannot write {path}: {e}");
        }
    }
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

impl Layers {
    /// Best effort, after every process is gone and `sync()`: makes the overlay and the
    /// scratch file system read-only (ext4 then commits its journal and is marked clean),
    /// then detaches the layers.
    pub fn shut_down(self) {
        let remount_ro = |target: &Path, what: &str| {
            let flags = libc::MS_REMOUNT | libc::MS_RDONLY;
            match sys::mount(None, target, None, flags, None) {
                Ok(()) => tracing::debug!("{what} remounted read-only"),
                Err(e) => tracing::debug!("cannot remount {what} read-only: {e}"),
            }
        };
        remount_ro(Path::new("/"), "the overlay root");
        if self.scratch_is_disk {
            remount_ro(&fd_path(&self.scratch), "the scratch disk");
        }
        let lowers = self.lowers.iter().map(|fd| (fd, "disk layer"));
        for (fd, what) in std::iter::once((&self.scratch, "scratch")).chain(lowers) {
            if let Err(e) = sys::umount(&fd_path(fd), libc::MNT_DETACH) {
                tracing::debug!("cannot unmount the {what}: {e}");
            }
        }
    }
}
