//! The activity holders of an instance: everything that keeps it awake besides the router's
//! traffic. Two kinds of hold:
//!
//! - a [`HolderGuard`] (from [`ActivityHolders::hold`]) lasts until it is dropped: a running
//!   exec or PTY registers one for its whole life, so no idle pause lands mid-command;
//! - a lease lasts until it is released or its TTL runs out (see `leases`).
//!
//! While anything is held the idle timers neither pause nor terminate the instance; the end
//! of a hold counts as activity, so the idle timer starts again from there. Open connections
//! are counted here too, per guest port, but only for `awake_because`: the router's
//! [`aegis_router::ActivityTracker`] decides what they mean for the idle policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aegis_api::{ActivityHolder, Lease, PortConnections, PortProtocol};
use parking_lot::Mutex;
use tokio::sync::watch;

/// How much of a holder's label `awake_because` shows.
pub const MAX_LABEL_CHARS: usize = 120;

/// A lease in the table.
#[derive(Debug, Clone)]
pub(super) struct LeaseEntry {
    pub holder: Option<String>,
    pub ttl: Duration,
    pub created_at: SystemTime,
    pub expires: Instant,
}

struct Held {
    kind: String,
    label: String,
    since: Instant,
}

#[derive(Default)]
struct Table {
    held: BTreeMap<u64, Held>,
    leases: BTreeMap<String, LeaseEntry>,
    connections: HashMap<(u16, PortProtocol), u64>,
    /// When the last hold ended (a guard dropped, a lease released or expired).
    last_end: Option<Instant>,
}

impl Table {
    /// Forgets expired leases; their end is their expiry, not the moment they are noticed.
    fn prune(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(l) = self.leases.remove(&id) {
                self.ended_at(l.expires);
            }
        }
    }

    fn ended_at(&mut self, at: Instant) {
        self.last_end = Some(self.last_end.map_or(at, |e| e.max(at)));
    }
}

/// The registry of one instance. Execs and PTYs call [`ActivityHolders::hold`].
pub struct ActivityHolders {
    table: Mutex<Table>,
    next: AtomicU64,
    /// Bumped on every hold, release and renewal, so the idle loop re-reads at once.
    changed: watch::Sender<u64>,
}

/// Keeps the instance awake until dropped.
#[must_use = "dropping the guard ends the hold at once"]
pub struct HolderGuard {
    holders: Arc<ActivityHolders>,
    key: u64,
}

impl Drop for HolderGuard {
    fn drop(&mut self) {
        let mut t = self.holders.table.lock();
        t.held.remove(&self.key);
        t.ended_at(Instant::now());
        drop(t);
        self.holders.bump();
    }
}

impl ActivityHolders {
    pub fn new() -> Arc<Self> {
        Arc::new(ActivityHolders {
            table: Mutex::new(Table::default()),
            next: AtomicU64::new(1),
            changed: watch::Sender::new(0),
        })
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Holds the instance awake until the guard is dropped. `kind` is a short word (`exec`,
    /// `pty`, `files`, `watch`), `label` says which one (a command, a path); both are shown
    /// in `awake_because`, the label cut to [`MAX_LABEL_CHARS`] (it comes from a client).
    pub fn hold(self: &Arc<Self>, kind: &str, label: impl Into<String>) -> HolderGuard {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let mut label = label.into();
        if let Some((cut, _)) = label.char_indices().nth(MAX_LABEL_CHARS) {
            label.truncate(cut);
            label.push_str("...");
        }
        self.table.lock().held.insert(
            key,
            Held {
                kind: kind.to_string(),
                label,
                since: Instant::now(),
            },
        );
        self.bump();
        HolderGuard {
            holders: self.clone(),
            key,
        }
    }

    /// Whether anything holds the instance awake now (a guard, or a lease not yet expired).
    pub fn any_live(&self) -> bool {
        let mut t = self.table.lock();
        t.prune(Instant::now());
        !t.held.is_empty() || !t.leases.is_empty()
    }

    /// How long ago the last hold ended (`Duration::MAX` if none ever did).
    pub fn since_last_end(&self) -> Duration {
        let mut t = self.table.lock();
        t.prune(Instant::now());
        t.last_end.map_or(Duration::MAX, |e| e.elapsed())
    }

    /// Changes on every hold, release and renewal.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The guards held now, oldest first.
    pub fn holders(&self) -> Vec<ActivityHolder> {
        let t = self.table.lock();
        t.held
            .values()
            .map(|h| ActivityHolder {
                kind: h.kind.clone(),
                label: h.label.clone(),
                held_for_ms: millis(h.since.elapsed()),
            })
            .collect()
    }

    pub(super) fn insert_lease(&self, id: String, lease: LeaseEntry) {
        self.table.lock().leases.insert(id, lease);
        self.bump();
    }

    /// Renews a live lease to `ttl` from now (its own TTL if `None`); `None` if there is no
    /// such live lease.
    pub(super) fn renew_lease(&self, id: &str, ttl: Option<Duration>) -> Option<LeaseEntry> {
        let mut t = self.table.lock();
        t.prune(Instant::now());
        let lease = t.leases.get_mut(id)?;
        if let Some(ttl) = ttl {
            lease.ttl = ttl;
        }
        lease.expires = Instant::now() + lease.ttl;
        let renewed = lease.clone();
        drop(t);
        self.bump();
        Some(renewed)
    }

    /// Releases a live lease; false if there is no such live lease.
    pub(super) fn release_lease(&self, id: &str) -> bool {
        let mut t = self.table.lock();
        t.prune(Instant::now());
        let found = t.leases.remove(id).is_some();
        if found {
            t.ended_at(Instant::now());
        }
        drop(t);
        self.bump();
        found
    }

    /// The live leases, by id.
    pub(super) fn leases(&self) -> Vec<(String, LeaseEntry)> {
        let mut t = self.table.lock();
        t.prune(Instant::now());
        t.leases
            .iter()
            .map(|(id, l)| (id.clone(), l.clone()))
            .collect()
    }

    /// Counts one open connection to `port` until the returned closure runs.
    pub(super) fn connection_opened(
        self: &Arc<Self>,
        port: u16,
        protocol: PortProtocol,
    ) -> impl FnOnce() + Send + Sync + 'static {
        *self
            .table
            .lock()
            .connections
            .entry((port, protocol))
            .or_default() += 1;
        let me = self.clone();
        move || {
            let mut t = me.table.lock();
            if let Some(n) = t.connections.get_mut(&(port, protocol)) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    t.connections.remove(&(port, protocol));
                }
            }
        }
    }

    /// Open connections by guest port, lowest port first.
    pub fn connections(&self) -> Vec<PortConnections> {
        let t = self.table.lock();
        let mut v: Vec<_> = t
            .connections
            .iter()
            .map(|(&(guest_port, protocol), &open)| PortConnections {
                guest_port,
                protocol,
                open,
            })
            .collect();
        v.sort_by_key(|c| c.guest_port);
        v
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The API view of a lease of instance `instance`.
pub(super) fn lease_view(instance: &str, id: &str, l: &LeaseEntry) -> Lease {
    let left = l.expires.saturating_duration_since(Instant::now());
    Lease {
        id: id.to_string(),
        instance: instance.to_string(),
        holder: l.holder.clone(),
        ttl_secs: l.ttl.as_secs(),
        created_at: humantime::format_rfc3339_millis(l.created_at).to_string(),
        expires_at: humantime::format_rfc3339_millis(SystemTime::now() + left).to_string(),
        expires_in_ms: millis(left),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(ttl: Duration) -> LeaseEntry {
        LeaseEntry {
            holder: None,
            ttl,
            created_at: SystemTime::now(),
            expires: Instant::now() + ttl,
        }
    }

    #[test]
    fn a_guard_holds_until_dropped_and_its_end_is_recorded() {
        let h = ActivityHolders::new();
        assert!(!h.any_live());
        assert_eq!(h.since_last_end(), Duration::MAX);
        let g = h.hold("exec", "exec-1 sleep 10");
        assert!(h.any_live());
        assert_eq!(h.holders()[0].kind, "exec");
        drop(g);
        assert!(!h.any_live());
        assert!(h.since_last_end() < Duration::MAX);
    }

    #[test]
    fn a_long_label_is_cut_on_a_char_boundary() {
        let h = ActivityHolders::new();
        let _g = h.hold("files", "é".repeat(500));
        let label = &h.holders()[0].label;
        assert_eq!(label.chars().count(), MAX_LABEL_CHARS + 3);
        assert!(label.ends_with("..."));
    }

    #[test]
    fn an_expired_lease_stops_counting_and_ends_at_its_expiry() {
        let h = ActivityHolders::new();
        let mut l = lease(Duration::from_secs(60));
        l.expires = Instant::now() - Duration::from_secs(5);
        h.insert_lease("lease-old".into(), l);
        assert!(!h.any_live(), "expired");
        assert!(h.leases().is_empty());
        assert!(
            h.since_last_end() >= Duration::from_secs(5),
            "the end is the expiry, not when it was noticed"
        );
        assert!(h.renew_lease("lease-old", None).is_none());
        assert!(!h.release_lease("lease-old"));
    }

    #[test]
    fn renew_and_release() {
        let h = ActivityHolders::new();
        h.insert_lease("lease-a".into(), lease(Duration::from_secs(1)));
        let r = h
            .renew_lease("lease-a", Some(Duration::from_secs(100)))
            .unwrap();
        assert_eq!(r.ttl, Duration::from_secs(100));
        assert!(r.expires > Instant::now() + Duration::from_secs(50));
        assert!(h.any_live());
        assert!(h.release_lease("lease-a"));
        assert!(!h.any_live());
    }

    #[test]
    fn connections_are_counted_per_port() {
        let h = ActivityHolders::new();
        let a = h.connection_opened(80, PortProtocol::Http);
        let b = h.connection_opened(80, PortProtocol::Http);
        let c = h.connection_opened(5432, PortProtocol::Tcp);
        let v = h.connections();
        assert_eq!((v[0].guest_port, v[0].open), (80, 2));
        assert_eq!((v[1].guest_port, v[1].protocol), (5432, PortProtocol::Tcp));
        a();
        b();
        c();
        assert!(h.connections().is_empty());
        assert!(!h.any_live(), "connections are not holds");
    }
}
