use std::sync::Arc;

use aegis_api::{CreateInstance, Instance};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;

use super::tasks::{ndjson_response, OutputQuery};
use super::{parse_body, Error, Path, Query};
use crate::daemon::Daemon;

pub async fn create(
    State(d): State<Arc<Daemon>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Instance>), Error> {
    let req: CreateInstance = parse_body(&body)?;
    Ok((
        StatusCode::CREATED,
        Json(d.instances.create(&d, req).await?),
    ))
}

pub async fn list(State(d): State<Arc<Daemon>>) -> Json<Vec<Instance>> {
    Json(d.instances.list())
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Result<Json<Instance>, Error> {
    Ok(Json(d.instances.get(&id)?.view()))
}

pub async fn pause(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Result<Json<Instance>, Error> {
    Ok(Json(d.instances.pause(&id).await?))
}

pub async fn resume(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Result<Json<Instance>, Error> {
    Ok(Json(d.instances.resume(&id).await?))
}

pub async fn stop(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Result<Json<Instance>, Error> {
    Ok(Json(d.instances.stop(&id).await?))
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    d.instances.delete(&d, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn logs(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<OutputQuery>,
) -> Result<Response, Error> {
    let rx = d
        .instances
        .logs(&d, &id, q.follow, (q.stdout_offset, q.stderr_offset))?;
    Ok(ndjson_response(rx))
}
