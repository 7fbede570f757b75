//! The idle timers: running -> paused after `pause_after` without activity, paused ->
//! terminated after `terminate_after` more. Activity is the router's traffic and the end of
//! any hold (exec, lease: see [`super::activity_holders`]); while something is held, neither
//! timer runs. Time spent paused never counts toward `pause_after`: a resume is activity.

use std::sync::Arc;
use std::time::Duration;

use aegis_api::{IdlePolicy, InstanceState};

use super::activity_holders::millis;
use super::runtime::InstanceRuntime;

/// What the idle timers will do, as of now; `None`: that timer is not running.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Timers {
    pub pause_in: Option<Duration>,
    pub terminate_in: Option<Duration>,
}

impl Timers {
    pub fn view(self) -> aegis_api::IdleTimers {
        aegis_api::IdleTimers {
            pauses_in_ms: self.pause_in.map(millis),
            terminates_in_ms: self.terminate_in.map(millis),
        }
    }
}

impl InstanceRuntime {
    /// How long nothing has happened: no traffic, and no hold has ended.
    fn idle_for(&self) -> Duration {
        self.activity.idle_for().min(self.holders.since_last_end())
    }

    pub(super) fn idle_timers(&self) -> Timers {
        if self.holders.any_live() {
            return Timers::default();
        }
        match self.state() {
            InstanceState::Running => {
                // `on`: open connections keep it awake; `idle`: only traffic does.
                if self.target.idle_policy != IdlePolicy::Idle
                    && self.activity.open_connections() > 0
                {
                    return Timers::default();
                }
                let pause_in = self.pause_after().saturating_sub(self.idle_for());
                Timers {
                    pause_in: Some(pause_in),
                    terminate_in: Some(pause_in + self.terminate_after()),
                }
            }
            InstanceState::Paused => {
                let paused_for = self.idle_for().saturating_sub(self.pause_after());
                Timers {
                    pause_in: None,
                    terminate_in: Some(self.terminate_after().saturating_sub(paused_for)),
                }
            }
            InstanceState::Booting | InstanceState::Terminated | InstanceState::Error => {
                Timers::default()
            }
        }
    }

    /// Runs until the instance is deleted or the daemon stops.
    pub async fn idle_loop(self: Arc<Self>) {
        let mut state = self.state.subscribe();
        let mut conns = self.activity.subscribe();
        let mut holds = self.holders.subscribe();
        loop {
            let current = *state.borrow_and_update();
            let timers = self.idle_timers();
            let wait = match current {
                InstanceState::Running => match timers.pause_in {
                    // Re-checked last: an exec or lease may have started since the timers
                    // were read.
                    Some(left) if left.is_zero() && !self.holders.any_live() => {
                        tracing::info!(instance = %self.id, "idle: pausing");
                        if let Err(e) = self.pause().await {
                            // Retried shortly (a connection being opened, a slow QMP).
                            tracing::debug!(error = %e, "idle pause deferred");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        continue;
                    }
                    Some(left) => Some(left),
                    // Held: a lease may expire without any event.
                    None if self.holders.any_live() => Some(Duration::from_secs(1)),
                    None => None,
                },
                InstanceState::Paused => match timers.terminate_in {
                    Some(left) if left.is_zero() && !self.holders.any_live() => {
                        tracing::info!(instance = %self.id, "idle: terminating");
                        self.terminate().await;
                        continue;
                    }
                    Some(left) => Some(left),
                    None => Some(Duration::from_secs(1)),
                },
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
                r = holds.changed() => if r.is_err() { return },
                _ = sleep => {}
            }
        }
    }
}
