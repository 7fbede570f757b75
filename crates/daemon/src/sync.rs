//! Locking shared by the daemon's modules.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, tolerating poison: every critical section in aegisd is a short update that
/// leaves its data consistent, so a panic elsewhere must not take the daemon down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
