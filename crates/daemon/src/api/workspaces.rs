use std::sync::Arc;

use aegis_api::{ApiError, CreateWorkspace, ErrorCode, Workspace};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::{parse_body, Error, Path};
use crate::daemon::Daemon;

/// Runs blocking workspace work (directory walks, renames) off the async workers.
async fn blocking<T: Send + 'static>(
    d: &Arc<Daemon>,
    f: impl FnOnce(&Daemon) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, Error> {
    let d = d.clone();
    tokio::task::spawn_blocking(move || f(&d))
        .await
        .map_err(|e| {
            Error(ApiError::new(
                ErrorCode::Internal,
                format!("workspace request failed: {e}"),
            ))
        })?
        .map_err(Error)
}

pub async fn create(
    State(d): State<Arc<Daemon>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Workspace>), Error> {
    let req: CreateWorkspace = parse_body(&body)?;
    let ws = blocking(&d, move |d| d.workspaces.create(d, &req)).await?;
    Ok((StatusCode::CREATED, Json(ws)))
}

pub async fn list(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<Workspace>>, Error> {
    Ok(Json(blocking(&d, |d| d.workspaces.list(d)).await?))
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> Result<Json<Workspace>, Error> {
    Ok(Json(
        blocking(&d, move |d| d.workspaces.get(d, &name)).await?,
    ))
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    blocking(&d, move |d| d.workspaces.delete(d, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
