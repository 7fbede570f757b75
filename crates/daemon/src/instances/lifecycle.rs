//! The transitions of an instance: wake (resume, or bring a new VM up), pause, terminate,
//! switch release, and a VM that stops on its own.
//!
//! The slot lock is held only for short steps. A wake bringing a VM up holds `boot` instead
//! and can be cancelled: stop, pause and delete cancel it, then wait (briefly) until its VM
//! is killed and removed, so a guest that never opens its port cannot pin its controls.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_api::InstanceState;
use aegis_router::WakeError;
use tokio_util::sync::CancellationToken;

use super::connector::Connector;
use super::error::{PauseRefused, WakeFailure};
use super::runtime::InstanceRuntime;
use crate::daemon::Daemon;
use crate::vm::{self, GuestVm};
use aegis_api::error_chain;

/// A VM that currently backs the instance.
pub(super) struct Live {
    pub gvm: GuestVm,
    pub connector: Arc<Connector>,
    pub vm_id: String,
    pub run_dir: PathBuf,
    /// Fires when this VM is replaced or torn down, ending its helper tasks.
    pub retired: CancellationToken,
}

impl Live {
    /// Hands the session's events to a connector (after the server was started).
    pub fn new(mut gvm: GuestVm, vm_id: String, run_dir: PathBuf, owner: &str) -> Live {
        let events = std::mem::replace(&mut gvm.events, tokio::sync::mpsc::channel(1).1);
        let connector = Connector::start(gvm.session.clone(), events, owner.to_string());
        Live {
            gvm,
            connector,
            vm_id,
            run_dir,
            retired: CancellationToken::new(),
        }
    }
}

/// Kills a VM and removes every trace of it.
pub(super) async fn retire(daemon: &Daemon, live: Live) {
    live.retired.cancel();
    live.gvm.shutdown(Duration::ZERO).await;
    vm::forget(daemon, &live.vm_id, &live.run_dir);
}

impl InstanceRuntime {
    /// Makes the app reachable: resume, restore or cold boot as needed. Single flight.
    pub async fn ensure_ready(self: &Arc<Self>) -> Result<(), WakeError> {
        if self.is_ready() {
            return Ok(());
        }
        let this = self.clone();
        self.gate
            .run(move || async move { this.wake().await })
            .await
    }

    async fn wake(self: Arc<Self>) -> Result<(), WakeError> {
        if self.shutdown.is_cancelled() {
            return Err(WakeError::Gone);
        }
        if let Some(why) = &self.unservable {
            return Err(WakeError::failed(WakeFailure::Unservable(why.clone())));
        }
        let daemon = self.daemon()?;
        // Published before anything else, so a stop arriving from here on cancels this wake.
        let cancel = self.shutdown.child_token();
        *self.waking.lock() = Some(cancel.clone());
        let _boot = self.boot.lock().await;
        let result = match self.resume_or_clear(&daemon, &cancel).await {
            Some(resumed) => resumed,
            None => {
                let brought_up = self.bring_up(&daemon, &cancel).await;
                self.install(&daemon, brought_up, &cancel).await
            }
        };
        self.waking.lock().take();
        result
    }

    /// Resumes a paused VM (`Some(Ok)`), or clears the slot for a new VM and marks the
    /// instance booting (`None`).
    async fn resume_or_clear(
        &self,
        daemon: &Daemon,
        cancel: &CancellationToken,
    ) -> Option<Result<(), WakeError>> {
        let mut slot = self.slot.lock().await;
        if cancel.is_cancelled() {
            return Some(Err(WakeError::failed(WakeFailure::Cancelled)));
        }
        if let Some(live) = slot.as_ref() {
            match self.state() {
                InstanceState::Running => return Some(Ok(())),
                InstanceState::Paused => {
                    let started = Instant::now();
                    match live.gvm.vm.resume().await {
                        Ok(()) => {
                            let _ = vm::send_clock(&live.gvm.session).await;
                            self.stats.lock().resumes += 1;
                            // The wake is activity: the idle timer starts now, not at the
                            // connection that asked for it.
                            self.activity.touch();
                            self.set_state(InstanceState::Running);
                            tracing::info!(instance = %self.id, ms = started.elapsed().as_millis() as u64, "resumed");
                            return Some(Ok(()));
                        }
                        Err(e) => {
                            tracing::warn!(instance = %self.id, error = %e, "resume failed; replacing the VM");
                            self.note_error(format!("resume failed: {e}"));
                        }
                    }
                }
                _ => {}
            }
        }
        // No usable VM: tear down whatever is left and bring up a new one.
        self.connector.lock().take();
        if let Some(old) = slot.take() {
            retire(daemon, old).await;
            self.set_state(InstanceState::Terminated);
        }
        let what = format!("instance {}", self.name);
        let admitted = crate::quotas::check_free_disk(daemon, &format!("start a VM for {what}"))
            .and_then(|()| {
                daemon
                    .admission
                    .admit_vm(daemon, &what, Some(&self.id), || {
                        self.set_state(InstanceState::Booting)
                    })
            });
        match admitted {
            Ok(()) => None,
            Err(refused) => {
                self.note_error(refused.to_string());
                Some(Err(WakeError::failed(WakeFailure::Refused(refused))))
            }
        }
    }

    /// Puts a VM brought up by a wake in the slot, unless the wake was cancelled meanwhile
    /// (then the VM is retired at once).
    async fn install(
        self: &Arc<Self>,
        daemon: &Daemon,
        brought_up: Result<Live, WakeFailure>,
        cancel: &CancellationToken,
    ) -> Result<(), WakeError> {
        let mut slot = self.slot.lock().await;
        let result = match brought_up {
            Ok(live) if cancel.is_cancelled() => {
                retire(daemon, live).await;
                Err(WakeFailure::Cancelled)
            }
            other => other,
        };
        match result {
            Ok(live) => {
                *self.guest_kernel.lock() = Some(live.gvm.kernel_release.clone());
                *self.connector.lock() = Some(live.connector.clone());
                self.watch_exit(&live);
                *slot = Some(live);
                self.activity.touch();
                self.set_state(InstanceState::Running);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(instance = %self.id, error = %error_chain(&e), "wake failed");
                self.note_error(error_chain(&e));
                self.set_state(InstanceState::Terminated);
                Err(WakeError::failed(e))
            }
        }
    }

    /// Cancels the wake in flight, if any, and waits until its VM is gone.
    async fn cancel_wake(&self) {
        let in_flight = self.waking.lock().take();
        if let Some(cancel) = in_flight {
            cancel.cancel();
            drop(self.boot.lock().await);
        }
    }

    /// Switches an app's instance to another release: the VM is terminated and the memory
    /// snapshot dropped (it holds the old release's state and must never restore into this
    /// one); the next connection boots the new release from its disk layers.
    pub async fn switch_release(&self, release: u32) {
        let slot = self.slot.lock().await;
        *self.release.lock() = Some(release);
        self.drop_snapshot();
        drop(slot);
        self.terminate().await;
    }

    /// Marks the instance terminated if its VM dies on its own (crash, kill -9, or killed for
    /// breaking the protocol): clients in flight get errors, the next connection wakes a
    /// fresh VM.
    fn watch_exit(self: &Arc<Self>, live: &Live) {
        let this = Arc::downgrade(self);
        let retired = live.retired.clone();
        let vm_id = live.vm_id.clone();
        // The VM handle stays in the slot; wait on it through the slot lock-free path.
        let vmm = live.gvm.vm.clone();
        let session = live.gvm.session.clone();
        tokio::spawn(async move {
            let exit = tokio::select! {
                e = vmm.wait() => e,
                _ = retired.cancelled() => return,
            };
            let Some(this) = this.upgrade() else { return };
            let Ok(daemon) = this.daemon() else { return };
            let mut slot = this.slot.lock().await;
            if slot.as_ref().is_some_and(|l| l.vm_id == vm_id) {
                tracing::warn!(instance = %this.id, exit = ?exit, "the VM stopped on its own");
                this.note_error(vm::protocol_breach(&session).unwrap_or_else(|| {
                    format!(
                        "the microVM stopped unexpectedly ({})",
                        vm::describe_exit(&exit)
                    )
                }));
                if let Some(old) = slot.take() {
                    retire(&daemon, old).await;
                }
                this.connector.lock().take();
                this.set_state(InstanceState::Terminated);
            }
        });
    }

    /// Pauses the VM if it runs (idle timer or `aegis pause`). A wake in flight is cancelled
    /// instead: there is nothing to pause yet, and the instance ends terminated.
    pub async fn pause(&self) -> Result<(), PauseRefused> {
        if self.state() == InstanceState::Booting && self.waking.lock().is_some() {
            self.terminate().await;
            return Ok(());
        }
        let slot = self.slot.lock().await;
        let Some(live) = slot.as_ref() else {
            return Err(PauseRefused::NoVm {
                id: self.id.clone(),
            });
        };
        if self.state() != InstanceState::Running {
            return Ok(());
        }
        if self.connecting.load(Ordering::Acquire) > 0 {
            return Err(PauseRefused::Connecting {
                id: self.id.clone(),
            });
        }
        // Clear readiness first: new connections now wait for a resume instead of racing it.
        self.ready.store(false, Ordering::Release);
        match live.gvm.vm.pause().await {
            Ok(()) => {
                self.stats.lock().pauses += 1;
                self.set_state(InstanceState::Paused);
                Ok(())
            }
            Err(source) => {
                self.ready.store(true, Ordering::Release);
                Err(PauseRefused::Vmm {
                    id: self.id.clone(),
                    source,
                })
            }
        }
    }

    /// Terminates the VM (idle timer, `aegis stop`, delete, daemon shutdown), cancelling a
    /// wake in flight. The target and its snapshot stay; the next connection wakes it.
    pub async fn terminate(&self) {
        self.cancel_wake().await;
        let mut slot = self.slot.lock().await;
        self.ready.store(false, Ordering::Release);
        self.connector.lock().take();
        if let Some(live) = slot.take() {
            if let Some(daemon) = self.daemon.upgrade() {
                retire(&daemon, live).await;
            }
            self.stats.lock().terminations += 1;
        }
        self.set_state(InstanceState::Terminated);
    }

    /// Deletes the snapshot too (instance removal).
    pub fn forget(&self) {
        self.drop_snapshot();
    }
}
