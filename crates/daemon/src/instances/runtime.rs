//! One served instance: its target, what the API shows of it, and the state its lifecycle
//! keeps between transitions (the VM slot, the wake in flight, the snapshot cache, the log).
//! The transitions are in [`super::lifecycle`], bringing a VM up in [`super::wake`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use std::time::Duration;

use aegis_api::{CreateInstance, Endpoint, Instance, InstanceState, WakeStats};
use aegis_registry::InstanceRecord;
use aegis_router::{ActivityTracker, WakeError, WakeGate};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::activity_holders::ActivityHolders;
use super::connector::Connector;
use super::lifecycle::Live;
use super::snapshot_cache::CachedSnapshot;
use crate::daemon::Daemon;
use crate::tasks::output::OutputLog;

pub struct InstanceRuntime {
    pub id: String,
    pub name: String,
    pub target: CreateInstance,
    pub created_at: String,
    pub endpoints: Mutex<Vec<Endpoint>>,
    pub(super) daemon: Weak<Daemon>,
    pub(super) image: String,
    pub(super) state: watch::Sender<InstanceState>,
    pub(super) ready: AtomicBool,
    /// The VM backing the instance. Locked only for short steps, never across a boot: a wake
    /// that hangs must not keep stop, pause or delete waiting.
    pub(super) slot: tokio::sync::Mutex<Option<Live>>,
    /// Held by a wake for as long as it runs. Whoever cancels the wake takes it afterwards to
    /// wait until the wake's VM is killed and cleaned up.
    pub(super) boot: tokio::sync::Mutex<()>,
    /// Cancels the wake in flight (stop, pause, delete; a child of `shutdown`).
    pub(super) waking: Mutex<Option<CancellationToken>>,
    pub gate: WakeGate,
    pub activity: Arc<ActivityTracker>,
    /// Execs, PTYs and leases that keep the instance awake (see `activity_holders`).
    pub holders: Arc<ActivityHolders>,
    pub(super) stats: Mutex<WakeStats>,
    pub(super) last_error: Mutex<Option<String>>,
    pub(super) guest_kernel: Mutex<Option<String>>,
    pub(super) snapshot: Mutex<Option<CachedSnapshot>>,
    /// The current VM's connector, readable without the slot lock (hot path of every proxied
    /// connection).
    pub(super) connector: Mutex<Option<Arc<Connector>>>,
    pub log: Arc<OutputLog>,
    /// Cancelled when the instance is deleted or the daemon stops.
    pub shutdown: CancellationToken,
    /// Guest connections being opened right now: an idle pause waits for them (a paused guest
    /// would leave the router's connect hanging with no one to wake it).
    pub connecting: AtomicUsize,
    /// The router's accept loops of this instance's ports; they end after `shutdown`.
    pub listeners: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The app release served now (`target.release` until switched; see `switch_release`).
    pub(super) release: Mutex<Option<u32>>,
    /// The process of the release the current VM booted (apps), over the target's command.
    pub(super) release_process: Mutex<Option<crate::apps::ReleaseProcess>>,
    /// Why the instance cannot be served at all (a host port it could not bind again after a
    /// restart). Such an instance stays in the `error` state: listed, removable, never woken.
    pub(super) unservable: Option<String>,
    /// Commands run next to the server (`aegis exec`); a running one keeps the VM awake.
    pub execs: super::exec::ExecTable,
}

impl InstanceRuntime {
    /// A terminated instance for `record`, or one in the `error` state if `unservable` says
    /// why it cannot be served.
    pub fn new(
        daemon: &Arc<Daemon>,
        record: &InstanceRecord,
        log: Arc<OutputLog>,
        unservable: Option<String>,
    ) -> Arc<Self> {
        let target = record.target.clone();
        let image = target
            .image
            .clone()
            .unwrap_or_else(|| aegis_api::DEFAULT_IMAGE.into());
        let state = if unservable.is_some() {
            InstanceState::Error
        } else {
            InstanceState::Terminated
        };
        Arc::new(InstanceRuntime {
            release: Mutex::new(target.release),
            release_process: Mutex::new(None),
            id: record.id.clone(),
            name: record.name.clone(),
            target,
            created_at: record.created_at.clone(),
            endpoints: Mutex::new(record.endpoints.clone()),
            daemon: Arc::downgrade(daemon),
            image,
            state: watch::channel(state).0,
            ready: AtomicBool::new(false),
            slot: tokio::sync::Mutex::new(None),
            boot: tokio::sync::Mutex::new(()),
            waking: Mutex::new(None),
            gate: WakeGate::new(),
            activity: ActivityTracker::new(),
            holders: ActivityHolders::new(),
            stats: Mutex::new(WakeStats::default()),
            last_error: Mutex::new(unservable.clone()),
            guest_kernel: Mutex::new(None),
            snapshot: Mutex::new(None),
            connector: Mutex::new(None),
            log,
            shutdown: CancellationToken::new(),
            connecting: AtomicUsize::new(0),
            listeners: Mutex::new(Vec::new()),
            unservable,
            execs: Default::default(),
        })
    }

    pub fn state(&self) -> InstanceState {
        *self.state.borrow()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn connector(&self) -> Option<Arc<Connector>> {
        self.connector.lock().clone()
    }

    pub(super) fn set_state(&self, s: InstanceState) {
        // An unservable instance stays in `error`, whatever a stop or a delete does to it.
        let s = if self.unservable.is_some() {
            InstanceState::Error
        } else {
            s
        };
        self.ready
            .store(s == InstanceState::Running, Ordering::Release);
        self.state.send_replace(s);
        tracing::info!(instance = %self.id, state = s.as_str(), "instance state");
    }

    pub(super) fn daemon(&self) -> Result<Arc<Daemon>, WakeError> {
        self.daemon.upgrade().ok_or(WakeError::Gone)
    }

    pub(super) fn note_error(&self, e: String) {
        *self.last_error.lock() = Some(e);
    }

    pub(super) fn pause_after(&self) -> Duration {
        Duration::from_secs(
            self.target
                .pause_after_secs
                .unwrap_or(aegis_api::instance::DEFAULT_PAUSE_AFTER_SECS),
        )
    }

    pub(super) fn terminate_after(&self) -> Duration {
        Duration::from_secs(
            self.target
                .terminate_after_secs
                .unwrap_or(aegis_api::instance::DEFAULT_TERMINATE_AFTER_SECS),
        )
    }

    pub fn wake_timeout(&self) -> Duration {
        Duration::from_secs(
            self.target
                .wake_timeout_secs
                .unwrap_or(aegis_api::instance::DEFAULT_WAKE_TIMEOUT_SECS),
        )
    }

    /// The release served now (apps).
    pub fn release(&self) -> Option<u32> {
        *self.release.lock()
    }

    /// The API view.
    pub fn view(&self) -> Instance {
        let last = std::time::SystemTime::now() - self.activity.idle_for();
        Instance {
            id: self.id.clone(),
            name: self.name.clone(),
            state: self.state(),
            target: CreateInstance {
                release: self.release(),
                ..self.target.clone()
            },
            endpoints: self.endpoints.lock().clone(),
            created_at: self.created_at.clone(),
            last_active_at: humantime::format_rfc3339_millis(last).to_string(),
            active_connections: self.activity.open_connections() as u64,
            snapshot_cached: self.snapshot.lock().is_some(),
            stats: *self.stats.lock(),
            last_error: self.last_error.lock().clone(),
            guest_kernel: self.guest_kernel.lock().clone(),
        }
    }
}
