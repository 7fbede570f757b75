//! The quotas of `[limits]` (docs/CONFIG.md) that refuse work up front: live VMs, instances,
//! exposed ports and the free-disk reserve. Each refusal names the limit, its value and the
//! configuration key that raises it: 429 for a full quota (retry once something ends), 507
//! when the disk under the home is too full.
//!
//! Live VMs are counted, not reserved: a task counts from its acceptance until its runner
//! ends, an instance while it is booting, running or paused. Admission takes one lock, so
//! that two requests at once cannot both take the last place.

use aegis_api::{human_bytes, ApiError, ErrorCode, InstanceState};
use parking_lot::Mutex;

use crate::daemon::Daemon;

/// Serialises the check-and-take of a VM place (see the module documentation).
#[derive(Default)]
pub struct Admission(Mutex<()>);

impl Admission {
    /// Runs `take` (which makes the new VM count) if a VM place is free for `what`
    /// (`"task"`, `"instance web"`): fewer than `max_live_vms` tasks and instance VMs, not
    /// counting instance `except`'s own.
    pub fn admit_vm<T>(
        &self,
        daemon: &Daemon,
        what: &str,
        except: Option<&str>,
        take: impl FnOnce() -> T,
    ) -> Result<T, ApiError> {
        let _one_at_a_time = self.0.lock();
        let max = daemon.config.limits.max_live_vms;
        let live = live_vms(daemon, except);
        if live >= max as usize {
            return Err(ApiError::new(
                ErrorCode::LimitReached,
                format!(
                    "cannot start a VM for {what}: {live} VMs are live and the limit \
                     max_live_vms is {max}; wait for a task to end, stop or pause-and-stop an \
                     instance, or raise [limits] max_live_vms in {}",
                    config_file_hint(daemon)
                ),
            ));
        }
        Ok(take())
    }
}

/// Tasks not ended plus instances with a VM (booting, running, paused).
fn live_vms(daemon: &Daemon, except: Option<&str>) -> usize {
    let instances = daemon.instances.count(|rt| {
        Some(rt.id.as_str()) != except
            && matches!(
                rt.state(),
                InstanceState::Booting | InstanceState::Running | InstanceState::Paused
            )
    });
    daemon.tasks.running() + instances
}

/// Refuses a new instance when `max_instances` exist already.
pub fn check_instances(daemon: &Daemon) -> Result<(), ApiError> {
    let max = daemon.config.limits.max_instances;
    let have = daemon.instances.count(|_| true);
    if have >= max as usize {
        return Err(ApiError::new(
            ErrorCode::LimitReached,
            format!(
                "cannot create another instance: {have} exist and the limit max_instances is \
                 {max}; remove one with `aegis instance rm`, or raise [limits] max_instances \
                 in {}",
                config_file_hint(daemon)
            ),
        ));
    }
    Ok(())
}

/// Refuses an instance that exposes more than `max_exposed_ports` ports.
pub fn check_exposed_ports(daemon: &Daemon, ports: usize) -> Result<(), ApiError> {
    let max = daemon.config.limits.max_exposed_ports;
    if ports > max as usize {
        return Err(ApiError::new(
            ErrorCode::LimitReached,
            format!(
                "cannot expose {ports} ports: the limit max_exposed_ports is {max} per \
                 instance; expose fewer, or raise [limits] max_exposed_ports in {}",
                config_file_hint(daemon)
            ),
        ));
    }
    Ok(())
}

/// Refuses `doing` (`"start a VM"`, `"pull an image"`...) when the free space of the file
/// system holding the home is under `free_disk_reserve_bytes`. A reserve of 0 turns the check
/// off; a file system that cannot be measured is not a reason to refuse.
pub fn check_free_disk(daemon: &Daemon, doing: &str) -> Result<(), ApiError> {
    let reserve = daemon.config.limits.free_disk_reserve_bytes;
    if reserve == 0 {
        return Ok(());
    }
    let home = daemon.config.home.root();
    let free = match free_bytes(home) {
        Ok(free) => free,
        Err(e) => {
            tracing::warn!(home = %home.display(), error = %e, "cannot measure free disk space");
            return Ok(());
        }
    };
    if free < reserve {
        return Err(ApiError::new(
            ErrorCode::InsufficientStorage,
            format!(
                "cannot {doing}: {} is free under {} and the limit free_disk_reserve_bytes \
                 keeps {} free; free some disk (`aegis image rm`, `aegis task rm`), or lower \
                 [limits] free_disk_reserve_bytes in {}",
                human_bytes(free),
                home.display(),
                human_bytes(reserve),
                config_file_hint(daemon)
            ),
        ));
    }
    Ok(())
}

/// Bytes an unprivileged user may still write on the file system holding `path`.
pub fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `st` is writable memory of
    // the right type, and is read only after statvfs reported success (it filled it in).
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    // Both are u64 on 64-bit Linux, narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Where the user changes a limit: the file this daemon reads.
fn config_file_hint(daemon: &Daemon) -> String {
    daemon.config.config_file.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_home_file_system_has_some_free_space() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }
}
