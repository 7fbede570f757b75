//! Reaping child processes.
//!
//! The agent starts processes with `std::process::Command` and never waits on them through
//! std: one reaper per agent owns every `waitpid`. It wakes on SIGCHLD (and once a second,
//! in case a signal was coalesced before the listener existed) and
//!
//! - as PID 1 (`pid1 = true`) loops `waitpid(-1, WNOHANG)`: every zombie in the guest is
//!   reaped, orphans re-parented to PID 1 included; the statuses of tracked pids go to their
//!   waiters, the others are discarded;
//! - in-process on a host (`pid1 = false`) calls `waitpid(pid, WNOHANG)` for tracked pids
//!   only, so it never steals the children of the program that embeds it.
//!
//! A child that exits before it is registered must not be reaped as an orphan (its status
//! would be lost, and std's own `waitpid` after a failed `exec` would find no child):
//! [`Reaper::spawn_tracked`] spawns and registers under the lock the reaper takes to reap.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use aegis_proto::ExitStatus;
use parking_lot::Mutex;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How often the reaper looks for exited children without a SIGCHLD.
const SAFETY_NET: Duration = Duration::from_secs(1);

pub(crate) struct Reaper {
    pid1: bool,
    waiters: Mutex<HashMap<libc::pid_t, oneshot::Sender<ExitStatus>>>,
    started: AtomicBool,
}

impl Reaper {
    pub(crate) fn new(pid1: bool) -> Arc<Reaper> {
        Arc::new(Reaper {
            pid1,
            waiters: Mutex::new(HashMap::new()),
            started: AtomicBool::new(false),
        })
    }

    /// Starts the reaping task on the current tokio runtime (once).
    pub(crate) fn start(self: &Arc<Self>) {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(run(Arc::downgrade(self)));
        }
    }

    /// Runs `spawn` (which returns the child's pid along with its result) and registers the
    /// pid for its exit status, atomically with respect to reaping.
    pub(crate) fn spawn_tracked<T>(
        &self,
        spawn: impl FnOnce() -> io::Result<(T, libc::pid_t)>,
    ) -> io::Result<(T, oneshot::Receiver<ExitStatus>)> {
        let mut waiters = self.waiters.lock();
        let (value, pid) = spawn()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid, tx);
        drop(waiters);
        // A child that exited before the SIGCHLD listener existed is caught here or by the
        // next safety-net tick; doing it now keeps short processes fast.
        self.reap();
        Ok((value, rx))
    }

    /// Reaps whatever has exited.
    pub(crate) fn reap(&self) {
        let mut waiters = self.waiters.lock();
        if self.pid1 {
            loop {
                let mut status = 0;
                // SAFETY: waitpid writes only to `status`, a valid c_int on our stack.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid > 0 {
                    deliver(&mut waiters, pid, status);
                    continue;
                }
                if pid < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // 0: children left but none exited; -1 ECHILD: no children at all.
                break;
            }
        } else {
            let pids: Vec<libc::pid_t> = waiters.keys().copied().collect();
            for pid in pids {
                let mut status = 0;
                // SAFETY: as above; `pid` is a child this agent spawned and has not reaped.
                let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if r == pid {
                    deliver(&mut waiters, pid, status);
                } else if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                    // Someone else reaped it (the embedding program waited on all children):
                    // the status is lost, but the waiter must not hang.
                    tracing::warn!(pid, "child was reaped by someone else; exit status lost");
                    if let Some(tx) = waiters.remove(&pid) {
                        let _ = tx.send(ExitStatus::Signal(libc::SIGKILL));
                    }
                }
            }
        }
    }
}

fn deliver(
    waiters: &mut HashMap<libc::pid_t, oneshot::Sender<ExitStatus>>,
    pid: libc::pid_t,
    status: libc::c_int,
) {
    let Some(status) = decode(status) else {
        return;
    };
    match waiters.remove(&pid) {
        Some(tx) => {
            let _ = tx.send(status);
        }
        None => tracing::debug!(pid, ?status, "reaped an orphan"),
    }
}

/// The exit status of a terminated child; `None` for stop/continue reports.
fn decode(status: libc::c_int) -> Option<ExitStatus> {
    if libc::WIFEXITED(status) {
        Some(ExitStatus::Code(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(ExitStatus::Signal(libc::WTERMSIG(status)))
    } else {
        None
    }
}

async fn run(reaper: Weak<Reaper>) {
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGCHLD; polling for exited children");
            None
        }
    };
    let mut tick = tokio::time::interval(SAFETY_NET);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        match reaper.upgrade() {
            Some(r) => r.reap(),
            None => return,
        }
        tokio::select! {
            _ = async {
                match sigchld.as_mut() {
                    Some(s) => { s.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
            _ = tick.tick() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_wait_statuses() {
        // Encoded as the kernel does: exit code in bits 8-15, signal in bits 0-6.
        assert_eq!(decode(3 << 8), Some(ExitStatus::Code(3)));
        assert_eq!(
            decode(libc::SIGKILL),
            Some(ExitStatus::Signal(libc::SIGKILL))
        );
        assert_eq!(decode(0x137f), None); // stopped by SIGSTOP
    }
}
