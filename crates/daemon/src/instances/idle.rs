//! The idle timers: running -> paused after `pause_after` without activity, paused ->
//! terminated after `terminate_after` more.

use std::sync::Arc;
use std::time::Duration;

use aegis_api::{IdlePolicy, InstanceState};

use super::runtime::InstanceRuntime;

impl InstanceRuntime {
    /// Runs until the instance is deleted or the daemon stops.
    pub async fn idle_loop(self: Arc<Self>) {
        let mut state = self.state.subscribe();
        let mut conns = self.activity.subscribe();
        loop {
            let current = *state.borrow_and_update();
            let wait = match current {
                InstanceState::Running => {
                    // A running exec pins the VM whatever the policy: no pause mid-command.
                    let idle = if self.execs.running() > 0 {
                        None
                    } else if self.target.idle_policy == IdlePolicy::Idle
                        || self.activity.open_connections() == 0
                    {
                        Some(self.activity.idle_for())
                    } else {
                        None
                    };
                    match idle {
                        Some(idle) if idle >= self.pause_after() => {
                            tracing::info!(instance = %self.id, "idle: pausing");
                            if let Err(e) = self.pause().await {
                                // Retried shortly (a connection being opened, a slow QMP).
                                tracing::debug!(error = %e, "idle pause deferred");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            continue;
                        }
                        Some(idle) => Some(self.pause_after() - idle),
                        None if self.target.idle_policy == IdlePolicy::Idle => {
                            Some(self.pause_after())
                        }
                        None => None,
                    }
                }
                InstanceState::Paused => {
                    let paused_for = self.activity.idle_for().saturating_sub(self.pause_after());
                    if paused_for >= self.terminate_after() {
                        tracing::info!(instance = %self.id, "idle: terminating");
                        self.terminate().await;
                        continue;
                    }
                    Some(self.terminate_after() - paused_for)
                }
                InstanceState::Booting | InstanceState::Terminated | InstanceState::Error => None,
            };
            let sleep = async {
                match wait {
                    // Re-check at least every second: activity may move the deadline.
                    Some(w) => tokio::time::sleep(w.min(Duration::from_secs(1))).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = state.changed() => if r.is_err() { return },
                r = conns.changed() => if r.is_err() { return },
                _ = sleep => {}
            }
        }
    }
}
