//! Leases and `awake_because`: the instance-level operations behind
//! `/v1/instances/{id}/leases` and `/v1/instances/{id}/awake`.
//!
//! Decisions (docs/SERVE.md, "Leases"):
//! - creating a lease wakes the instance and answers once it is running: a client that leases
//!   a sandbox is about to use it;
//! - renewing does not wake it: an explicit `aegis pause`/`stop` wins over a lease, and a
//!   renewing loop must not undo it;
//! - TTLs run on the host's clock whatever the instance's state;
//! - leases live in memory only: a daemon restart terminates every VM anyway, and a client
//!   whose renewal gets a 404 creates a new lease (as `aegis instance lease` does).

use std::time::{Duration, Instant, SystemTime};

use aegis_api::{
    check_lease_holder, check_lease_ttl, ApiError, AwakeBecause, CreateLease, ErrorCode, Lease,
    RenewLease,
};

use super::activity_holders::{lease_view, LeaseEntry};
use super::error::LifecycleError;
use super::runtime::InstanceRuntime;
use super::InstanceManager;
use crate::api::bad;
use crate::ids;

impl InstanceManager {
    /// Creates a lease and wakes the instance. A failed wake drops the lease again.
    pub async fn create_lease(&self, key: &str, req: CreateLease) -> Result<Lease, ApiError> {
        let ttl = Duration::from_secs(check_lease_ttl(req.ttl_secs).map_err(bad)?);
        if let Some(h) = &req.holder {
            check_lease_holder(h).map_err(bad)?;
        }
        let rt = self.get(key)?;
        let id = ids::new_id("lease");
        let entry = LeaseEntry {
            holder: req.holder,
            ttl,
            created_at: SystemTime::now(),
            expires: Instant::now() + ttl,
        };
        // Held before the wake, so no idle pause slips in between.
        rt.holders.insert_lease(id.clone(), entry.clone());
        if let Err(error) = rt.ensure_ready().await {
            rt.holders.release_lease(&id);
            return Err(LifecycleError::Wake { key, error }.into());
        }
        tracing::info!(instance = %rt.id, lease = %id, ttl_secs = ttl.as_secs(), "lease created");
        Ok(lease_view(&rt.id, &id, &entry))
    }

    pub fn renew_lease(&self, key: &str, lease: &str, req: RenewLease) -> Result<Lease, ApiError> {
        let ttl = match req.ttl_secs {
            Some(t) => Some(Duration::from_secs(check_lease_ttl(t).map_err(bad)?)),
            None => None,
        };
        let rt = self.get(key)?;
        let entry = rt
            .holders
            .renew_lease(lease, ttl)
            .ok_or_else(|| no_lease(&rt, lease))?;
        Ok(lease_view(&rt.id, lease, &entry))
    }

    pub fn release_lease(&self, key: &str, lease: &str) -> Result<(), ApiError> {
        let rt = self.get(key)?;
        if !rt.holders.release_lease(lease) {
            return Err(no_lease(&rt, lease));
        }
        tracing::info!(instance = %rt.id, lease = %lease, "lease released");
        Ok(())
    }

    pub fn leases(&self, key: &str) -> Result<Vec<Lease>, ApiError> {
        Ok(self.get(key)?.lease_views())
    }

    pub fn awake_because(&self, key: &str) -> Result<AwakeBecause, ApiError> {
        Ok(self.get(key)?.awake_because())
    }
}

fn no_lease(rt: &InstanceRuntime, lease: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "instance {} has no lease '{lease}' (released, expired, or lost in a daemon restart); create a new one",
            rt.name
        ),
    )
}

impl InstanceRuntime {
    fn lease_views(&self) -> Vec<Lease> {
        self.holders
            .leases()
            .iter()
            .map(|(id, l)| lease_view(&self.id, id, l))
            .collect()
    }

    /// What keeps the instance awake now, and when the idle timers fire otherwise.
    pub fn awake_because(&self) -> AwakeBecause {
        AwakeBecause {
            connections: self.holders.connections(),
            holders: self.holders.holders(),
            leases: self.lease_views(),
            timers: self.idle_timers().view(),
        }
    }
}
