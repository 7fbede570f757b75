//! `/v1/instances/{id}/leases` and `/v1/instances/{id}/awake`: activity leases and what keeps
//! an instance awake.

use std::sync::Arc;

use aegis_api::{AwakeBecause, CreateLease, Lease, RenewLease};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::{parse_body, Error, Path};
use crate::daemon::Daemon;

/// `POST`: creates a lease and wakes the instance; answers once it runs.
pub async fn create(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Lease>), Error> {
    let req: CreateLease = parse_body(&body)?;
    Ok((
        StatusCode::CREATED,
        Json(d.instances.create_lease(&id, req).await?),
    ))
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Lease>>, Error> {
    Ok(Json(d.instances.leases(&id)?))
}

/// `POST .../renew` (or `PUT` on the lease): an empty body renews for the lease's own TTL.
pub async fn renew(
    State(d): State<Arc<Daemon>>,
    Path((id, lease)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Lease>, Error> {
    let req: RenewLease = if body.iter().all(u8::is_ascii_whitespace) {
        RenewLease::default()
    } else {
        parse_body(&body)?
    };
    Ok(Json(d.instances.renew_lease(&id, &lease, req)?))
}

pub async fn release(
    State(d): State<Arc<Daemon>>,
    Path((id, lease)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    d.instances.release_lease(&id, &lease)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn awake(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Result<Json<AwakeBecause>, Error> {
    Ok(Json(d.instances.awake_because(&id)?))
}
