//! Activity reporting: open connections and recent traffic, which the daemon's idle timers
//! read. The router only reports; it never decides to pause.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Held for the life of one client connection (or one upgraded socket); dropping it reports
/// the connection closed.
#[must_use = "dropping the guard reports the connection closed"]
pub struct ActivityGuard {
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl ActivityGuard {
    /// A guard that runs `on_drop` when the connection closes.
    pub fn new(on_drop: impl FnOnce() + Send + Sync + 'static) -> Self {
        ActivityGuard {
            on_drop: Some(Box::new(on_drop)),
        }
    }

    /// A guard that reports nothing.
    pub fn noop() -> Self {
        ActivityGuard { on_drop: None }
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

impl std::fmt::Debug for ActivityGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActivityGuard")
    }
}

/// A ready-made activity record for one instance: what an [`crate::Upstream`] implementation
/// returns from `connection_opened` and updates from `touch`.
///
/// - `on` idle policy: the instance is idle when [`open_connections`](Self::open_connections)
///   is zero; start the idle timer when [`subscribe`](Self::subscribe) reports zero.
/// - `idle` policy: the instance is idle when [`idle_for`](Self::idle_for) exceeds the
///   cooldown, whatever the number of open connections.
pub struct ActivityTracker {
    open: watch::Sender<usize>,
    /// Milliseconds since `clock_epoch()` of the last activity.
    last_ms: AtomicU64,
}

fn clock_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(clock_epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl ActivityTracker {
    pub fn new() -> Arc<Self> {
        Arc::new(ActivityTracker {
            open: watch::Sender::new(0),
            last_ms: AtomicU64::new(now_ms()),
        })
    }

    /// Counts one more open connection until the guard is dropped. Opening and closing are
    /// activity.
    pub fn guard(self: &Arc<Self>) -> ActivityGuard {
        self.touch();
        self.open.send_modify(|n| *n += 1);
        let me = self.clone();
        ActivityGuard::new(move || {
            me.touch();
            me.open.send_modify(|n| *n = n.saturating_sub(1));
        })
    }

    /// Records traffic now.
    pub fn touch(&self) {
        self.last_ms.fetch_max(now_ms(), Ordering::Relaxed);
    }

    pub fn open_connections(&self) -> usize {
        *self.open.borrow()
    }

    /// When the last activity (open, close or traffic) happened.
    pub fn last_activity(&self) -> Instant {
        clock_epoch() + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// How long there has been no activity.
    pub fn idle_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    /// The number of open connections, updated on every open and close.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.open.subscribe()
    }
}

/// How often one connection reports traffic: often enough for idle timers measured in
/// seconds, rarely enough to cost nothing on a busy connection.
pub(crate) const TOUCH_PERIOD: Duration = Duration::from_secs(1);

/// Rate-limits `touch` for one connection.
pub(crate) struct Throttle {
    last_ms: AtomicU64,
}

impl Throttle {
    pub(crate) fn new() -> Self {
        Throttle {
            last_ms: AtomicU64::new(0),
        }
    }

    /// True at most once per [`TOUCH_PERIOD`].
    pub(crate) fn fire(&self) -> bool {
        let now = now_ms() + 1; // never 0, so the first call always fires
        let last = self.last_ms.load(Ordering::Relaxed);
        let period = TOUCH_PERIOD.as_millis() as u64;
        if last != 0 && now.saturating_sub(last) < period {
            return false;
        }
        self.last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_up_and_back_to_zero() {
        let t = ActivityTracker::new();
        let mut rx = t.subscribe();
        let a = t.guard();
        let b = t.guard();
        assert_eq!(t.open_connections(), 2);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 2);
        drop(a);
        drop(b);
        assert_eq!(t.open_connections(), 0);
        assert_eq!(*rx.borrow_and_update(), 0);
    }

    #[test]
    fn touch_resets_idle_time() {
        let t = ActivityTracker::new();
        let created = t.last_activity();
        // Only lower bounds on elapsed time: they hold however slow the machine is.
        std::thread::sleep(Duration::from_millis(30));
        let idle = t.idle_for();
        assert!(idle >= Duration::from_millis(30), "{idle:?}");
        t.touch();
        let touched = t.last_activity();
        assert!(
            touched >= created + Duration::from_millis(30),
            "touch did not move the last activity: {created:?} -> {touched:?}"
        );
        assert!(touched <= Instant::now());
        // Idle time now counts from the touch, not from the creation.
        assert!(t.idle_for() <= touched.elapsed() + Duration::from_millis(1));
    }

    #[test]
    fn throttle_fires_once_per_period() {
        let th = Throttle::new();
        assert!(th.fire());
        assert!(!th.fire());
        assert!(!th.fire());
    }

    #[test]
    fn a_guard_reports_its_close_exactly_once_and_noop_reports_nothing() {
        use std::sync::atomic::AtomicUsize;
        let closes = Arc::new(AtomicUsize::new(0));
        let guard = ActivityGuard::new({
            let closes = closes.clone();
            move || {
                closes.fetch_add(1, Ordering::SeqCst);
            }
        });
        assert_eq!(
            closes.load(Ordering::SeqCst),
            0,
            "reported before the close"
        );
        drop(guard);
        assert_eq!(closes.load(Ordering::SeqCst), 1);

        let noop = ActivityGuard::noop();
        assert!(noop.on_drop.is_none());
        drop(noop);
        // A noop guard held by a tracked connection leaves the count alone.
        let t = ActivityTracker::new();
        let _open = t.guard();
        drop(ActivityGuard::noop());
        assert_eq!(t.open_connections(), 1);
    }
}
