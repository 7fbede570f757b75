//! Activity leases and `awake_because`: `/v1/instances/{id}/leases`, `/v1/instances/{id}/awake`.

use std::time::Duration;

use aegis_api::{AwakeBecause, CreateLease, Lease, RenewLease};
use hyper::Method;

use crate::{encode_segment, Client, Error, Result};

/// How long creating a lease may take: it wakes the instance, which may boot it cold.
pub const LEASE_WAKE_TIMEOUT: Duration = Duration::from_secs(600);

fn leases_path(instance: &str, suffix: &str) -> String {
    format!("/v1/instances/{}/leases{suffix}", encode_segment(instance))
}

fn lease_path(instance: &str, lease: &str, suffix: &str) -> String {
    leases_path(instance, &format!("/{}{suffix}", encode_segment(lease)))
}

fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| Error::Protocol(format!("cannot encode the {what} request: {e}")))
}

impl Client {
    /// `POST /v1/instances/{id}/leases`: keeps the instance awake for `ttl_secs` unless
    /// renewed; wakes it and answers once it runs.
    pub async fn create_lease(&self, instance: &str, request: &CreateLease) -> Result<Lease> {
        let body = encode("lease", request)?;
        self.clone()
            .with_timeout(LEASE_WAKE_TIMEOUT)
            .call_json(Method::POST, &leases_path(instance, ""), Some(body))
            .await
    }

    /// `GET /v1/instances/{id}/leases`: the live leases.
    pub async fn list_leases(&self, instance: &str) -> Result<Vec<Lease>> {
        self.call_json(Method::GET, &leases_path(instance, ""), None)
            .await
    }

    /// `POST /v1/instances/{id}/leases/{lease}/renew`: a new TTL from now (the lease's own
    /// when `ttl_secs` is `None`). 404 once the lease expired, was released, or the daemon
    /// restarted.
    pub async fn renew_lease(
        &self,
        instance: &str,
        lease: &str,
        ttl_secs: Option<i64>,
    ) -> Result<Lease> {
        let body = encode("renew", &RenewLease { ttl_secs })?;
        self.call_json(
            Method::POST,
            &lease_path(instance, lease, "/renew"),
            Some(body),
        )
        .await
    }

    /// `DELETE /v1/instances/{id}/leases/{lease}`.
    pub async fn release_lease(&self, instance: &str, lease: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &lease_path(instance, lease, ""), None)
            .await
    }

    /// `GET /v1/instances/{id}/awake`: what keeps the instance awake now.
    pub async fn awake_because(&self, instance: &str) -> Result<AwakeBecause> {
        self.call_json(
            Method::GET,
            &format!("/v1/instances/{}/awake", encode_segment(instance)),
            None,
        )
        .await
    }
}
