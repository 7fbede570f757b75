//! Single-flight wakes: however many connections arrive while an instance sleeps, it is
//! woken once and every one of them gets that wake's result.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::error::WakeError;

type Outcome = Option<Result<(), WakeError>>;

/// Runs at most one wake at a time; concurrent callers join the one in flight.
///
/// The wake runs in its own task, so it completes even if every caller gives up (a client's
/// deadline passing must not abandon a half-restored VM); the next caller after it finished
/// starts a new one. That task runs on the runtime the gate was created on (if it was created
/// on one), not on whichever router thread happened to call first.
pub struct WakeGate {
    in_flight: Arc<Mutex<Option<watch::Receiver<Outcome>>>>,
    runs: AtomicU64,
    runtime: Option<Handle>,
}

impl Default for WakeGate {
    fn default() -> Self {
        WakeGate {
            in_flight: Arc::default(),
            runs: AtomicU64::new(0),
            runtime: Handle::try_current().ok(),
        }
    }
}

impl WakeGate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Joins the wake in flight, or starts `wake()` if there is none, and returns its result.
    /// A gate created outside any runtime spawns the wake on the caller's runtime.
    pub async fn run<F, Fut>(&self, wake: F) -> Result<(), WakeError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), WakeError>> + Send + 'static,
    {
        let (mut rx, leader) = {
            let mut slot = self.in_flight.lock();
            // A sender dropped without a result (panic in `wake()`, runtime gone) leaves a
            // dead entry: start afresh.
            match slot.as_ref().filter(|rx| rx.has_changed().is_ok()) {
                Some(rx) => (rx.clone(), None),
                None => {
                    let (tx, rx) = watch::channel(None);
                    *slot = Some(rx.clone());
                    (rx, Some(tx))
                }
            }
        };
        if let Some(tx) = leader {
            self.runs.fetch_add(1, Ordering::Relaxed);
            let fut = wake();
            let slot = self.in_flight.clone();
            let mine = rx.clone();
            let task = async move {
                let result = AssertUnwindSafe(fut)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err(WakeError::failed("the wake panicked")));
                let mut slot = slot.lock();
                if slot.as_ref().is_some_and(|rx| rx.same_channel(&mine)) {
                    *slot = None;
                }
                // Under the lock: whoever joined this wake sees its result, whoever comes
                // after starts a new one.
                tx.send_replace(Some(result));
            };
            match &self.runtime {
                Some(runtime) => drop(runtime.spawn(task)),
                None => drop(tokio::spawn(task)),
            }
        }
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or(Ok(())),
            Err(_) => Err(WakeError::failed("the wake was abandoned")),
        };
        outcome
    }

    /// Whether a wake is in flight.
    pub fn is_waking(&self) -> bool {
        self.in_flight
            .lock()
            .as_ref()
            .is_some_and(|rx| rx.has_changed().is_ok())
    }

    /// How many wakes were started so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test]
    async fn fifty_concurrent_callers_share_one_execution() {
        let gate = Arc::new(WakeGate::new());
        let executions = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let gate = gate.clone();
            let executions = executions.clone();
            tasks.push(tokio::spawn(async move {
                gate.run(|| async move {
                    executions.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(())
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(executions.load(Ordering::SeqCst), 1);
        assert_eq!(gate.runs(), 1);
        assert!(!gate.is_waking());
    }

    #[tokio::test]
    async fn every_caller_gets_the_error_and_a_later_call_runs_again() {
        let gate = Arc::new(WakeGate::new());
        let (a, b) = tokio::join!(
            gate.run(|| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(WakeError::failed("boot failed"))
            }),
            gate.run(|| async { unreachable!("joins the first wake") }),
        );
        assert!(matches!(a, Err(WakeError::Failed(_))));
        assert!(matches!(b, Err(WakeError::Failed(_))));
        gate.run(|| async { Ok(()) }).await.unwrap();
        assert_eq!(gate.runs(), 2);
    }

    #[tokio::test]
    async fn the_wake_completes_when_every_caller_gives_up() {
        let gate = Arc::new(WakeGate::new());
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let r = tokio::time::timeout(
            Duration::from_millis(10),
            gate.run(|| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                d.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
        )
        .await;
        assert!(r.is_err(), "the caller timed out");
        assert!(gate.is_waking());
        // A caller arriving meanwhile joins the same wake.
        gate.run(|| async { unreachable!() }).await.unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 1);
        assert_eq!(gate.runs(), 1);
    }

    #[test]
    fn the_wake_runs_on_the_runtime_the_gate_was_created_on() {
        let home = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("home")
            .enable_all()
            .build()
            .unwrap();
        let gate = Arc::new(home.block_on(async { WakeGate::new() }));
        let caller = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ran_on = Arc::new(Mutex::new(None::<String>));
        let r = ran_on.clone();
        caller
            .block_on(gate.run(|| async move {
                *r.lock() = std::thread::current().name().map(str::to_owned);
                Ok(())
            }))
            .unwrap();
        assert_eq!(ran_on.lock().as_deref(), Some("home"));
    }

    #[tokio::test]
    async fn a_panicking_wake_is_an_error_not_a_hang() {
        let gate = WakeGate::new();
        let r = gate
            .run(|| async {
                if true {
                    panic!("boom");
                }
                Ok(())
            })
            .await;
        assert!(matches!(r, Err(WakeError::Failed(_))));
        gate.run(|| async { Ok(()) }).await.unwrap();
    }
}
