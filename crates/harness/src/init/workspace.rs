//! The workspace: a host directory shared over virtio-fs (`aegis.workspace=TAG`), mounted at
//! `/workspace` after the root switch, so it sits above the overlay and none of its data
//! lands on the scratch disk. Its data lives on the host only (see docs/WORKSPACES.md).
//!
//! A read-only workspace (`aegis.workspace_ro`) is mounted read-only here so that programs
//! see `EROFS` at once; the boundary is the host's, which refuses every write whatever this
//! mount says.
//!
//! Mounting it is fatal when asked for and impossible: a task that expects its workspace
//! must never run against an empty directory of the overlay instead. At shutdown, after every
//! process is gone, it is synced and unmounted before the machine powers off.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::cmdline::BootArgs;
use super::error::{Context, InitError};
use super::sys;

/// Where the workspace appears in the guest.
pub const MOUNT_POINT: &str = "/workspace";

static MOUNTED: AtomicBool = AtomicBool::new(false);

/// Mounts the workspace share named by `aegis.workspace=TAG`, if any.
pub fn mount(args: &BootArgs) -> Result<(), InitError> {
    let Some(tag) = args.workspace.as_deref() else {
        return Ok(());
    };
    let target = Path::new(MOUNT_POINT);
    std::fs::create_dir_all(target).ctx("create the workspace mount point", target)?;
    // No suid binaries or device nodes from the host directory; executables are fine (a
    // workspace usually holds the scripts the task runs).
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    if args.workspace_read_only {
        flags |= libc::MS_RDONLY;
    }
    sys::mount(Some(tag), target, Some("virtiofs"), flags, None).map_err(|source| {
        InitError::Mount {
            fstype: "virtiofs".into(),
            source_desc: format!(
                "workspace share `{tag}` (the VMM must attach a vhost-user-fs device with \
                 tag={tag} and the kernel needs CONFIG_VIRTIO_FS)"
            ),
            target: target.into(),
            source,
        }
    })?;
    MOUNTED.store(true, Ordering::Release);
    let mode = if args.workspace_read_only {
        "read-only"
    } else {
        "read-write"
    };
    tracing::info!("workspace `{tag}` mounted at {MOUNT_POINT} ({mode})");
    Ok(())
}

/// Best effort, after every process is gone: flushes and unmounts the workspace. With
/// `cache=none` every write already reached the host when it returned; this makes sure
/// nothing is left in flight when the VMM stops.
pub fn shut_down() {
    if !MOUNTED.swap(false, Ordering::AcqRel) {
        return;
    }
    sys::sync();
    let target = Path::new(MOUNT_POINT);
    match sys::umount(target, 0) {
        Ok(()) => tracing::debug!("workspace unmounted"),
        Err(e) => {
            tracing::debug!("cannot unmount the workspace ({e}); detaching it");
            if let Err(e) = sys::umount(target, libc::MNT_DETACH) {
                tracing::warn!("cannot detach the workspace: {e}");
            }
        }
    }
}
