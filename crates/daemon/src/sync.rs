//! The poison-tolerant lock of `instances/`, the one module still on `std::sync::Mutex`.
//!
//! Everywhere else aegisd uses `parking_lot::Mutex`, which has no poisoning. When
//! `instances/` moves to it too, this file goes.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, tolerating poison: every critical section in aegisd is a short update that
/// leaves its data consistent, so a panic elsewhere must not take the daemon down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
