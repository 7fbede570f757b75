//! The instance's memory snapshot cache: taken once, when a cold-booted VM is first ready
//! (its RAM plus a copy of its scratch disk, which must match that RAM); checked before a
//! restore; dropped when a restore fails, the release switches or the instance is removed.
//! Losing it only costs the next wake a cold boot.

use std::time::Instant;

use aegis_vmm::{SnapshotRef, VmmError};

use super::lifecycle::Live;
use super::runtime::InstanceRuntime;
use crate::daemon::Daemon;
use crate::sparse_copy::SparseCopyError;
use crate::vm::SCRATCH_FILE;

/// Why a snapshot could not be taken (logged: it only costs later wakes a cold boot).
#[derive(Debug, thiserror::Error)]
enum SnapshotFailure {
    #[error("cannot pause the VM")]
    Pause(#[source] VmmError),
    #[error("cannot save the VM")]
    Save(#[source] VmmError),
    #[error("cannot copy the scratch disk")]
    Copy(#[source] SparseCopyError),
    #[error("the scratch disk copy panicked")]
    CopyPanicked,
    #[error("cannot resume the VM after saving it")]
    Resume(#[source] VmmError),
}

/// A cached memory snapshot of the instance's freshly booted, ready state.
#[derive(Clone)]
pub(super) struct CachedSnapshot {
    pub snap: SnapshotRef,
    /// The app release whose layers the snapshot was taken on (apps only).
    pub release: Option<u32>,
}

impl InstanceRuntime {
    /// The snapshot a wake of `release` may restore. One taken on another release is deleted:
    /// it holds other layers' state, and restoring it would be wrong.
    pub(super) fn usable_snapshot(
        &self,
        daemon: &Daemon,
        release: Option<u32>,
    ) -> Option<CachedSnapshot> {
        let cached = self.snapshot.lock().clone()?;
        if cached.release != release {
            self.drop_snapshot();
            return None;
        }
        daemon
            .backend
            .capabilities()
            .memory_snapshot
            .then_some(cached)
    }

    /// Whether a freshly cold-booted VM should be saved. Workspace data must never be in a
    /// memory snapshot (and virtio-fs cannot be migrated): an instance with a workspace
    /// cold-boots after each terminate.
    pub(super) fn should_snapshot(&self, daemon: &Daemon) -> bool {
        let wanted = daemon.backend.capabilities().memory_snapshot
            && self.snapshot.lock().is_none()
            && self.target.workspace.is_none();
        // A snapshot is a cache: under the free-disk reserve it is skipped, not an error.
        if let (true, Err(e)) = (
            wanted,
            crate::quotas::check_free_disk(daemon, "take a snapshot"),
        ) {
            tracing::warn!(instance = %self.id, error = %e, "no memory snapshot");
            return false;
        }
        wanted
    }

    /// Saves the freshly booted, ready VM of `release` as a memory snapshot (plus a copy of
    /// its scratch disk). Failure only costs future wakes a cold boot.
    pub(super) async fn take_snapshot(&self, daemon: &Daemon, live: &Live, release: Option<u32>) {
        let dir = daemon.config.home.instance_snapshot_dir(&self.id);
        let tmp = dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        if let Err(e) = crate::daemon::create_private_dir(&tmp) {
            tracing::warn!(error = %e, "cannot create snapshot directory");
            return;
        }
        let started = Instant::now();
        let result = async {
            live.gvm.vm.pause().await.map_err(SnapshotFailure::Pause)?;
            let saved = live
                .gvm
                .vm
                .snapshot(&tmp)
                .await
                .map_err(SnapshotFailure::Save);
            let copied = match &saved {
                Ok(_) => {
                    let from = live.run_dir.join(SCRATCH_FILE);
                    let to = tmp.join(SCRATCH_FILE);
                    tokio::task::spawn_blocking(move || crate::sparse_copy::sparse_copy(&from, &to))
                        .await
                        .map_err(|_| SnapshotFailure::CopyPanicked)
                        .and_then(|r| r.map_err(SnapshotFailure::Copy))
                }
                Err(_) => Ok(()),
            };
            live.gvm
                .vm
                .resume()
                .await
                .map_err(SnapshotFailure::Resume)?;
            saved?;
            copied
        }
        .await;
        match result {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&dir);
                if let Err(e) = std::fs::rename(&tmp, &dir) {
                    tracing::warn!(error = %e, "cannot install snapshot");
                    return;
                }
                *self.snapshot.lock() = Some(CachedSnapshot {
                    snap: SnapshotRef { dir },
                    release,
                });
                tracing::info!(instance = %self.id, ms = started.elapsed().as_millis() as u64, "memory snapshot cached");
            }
            Err(e) => {
                tracing::warn!(instance = %self.id, error = %super::error_chain(&e), "memory snapshot failed; wakes will boot cold");
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
    }

    pub(super) fn drop_snapshot(&self) {
        if let Some(c) = self.snapshot.lock().take() {
            let _ = std::fs::remove_dir_all(&c.snap.dir);
        }
    }
}
