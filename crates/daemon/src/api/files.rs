//! `/v1/instances/{id}/files/...`: stat, list, read (tar) and write (tar) guest paths.

use std::collections::HashMap;
use std::sync::Arc;

use aegis_api::{ApiError, ErrorCode, FileInfo};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{bad, Error, Path, Query};
use crate::daemon::Daemon;

type Params = Query<HashMap<String, String>>;

/// The `path` query parameter, the one every files call takes.
fn path_param(q: &HashMap<String, String>) -> Result<&str, ApiError> {
    if let Some(unknown) = q.keys().find(|k| *k != "path") {
        return Err(bad(format!(
            "unknown query parameter '{unknown}'; files calls take only ?path=/guest/path"
        )));
    }
    q.get("path").map(String::as_str).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "missing ?path=: name an absolute guest path, e.g. ?path=/workspace",
        )
    })
}

pub async fn stat(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Json<FileInfo>, Error> {
    Ok(Json(
        d.instances.stat_path(&id, path_param(&q)?, false).await?,
    ))
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Json<FileInfo>, Error> {
    Ok(Json(
        d.instances.stat_path(&id, path_param(&q)?, true).await?,
    ))
}

pub async fn read_archive(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Response, Error> {
    let body = d.instances.read_archive(&id, path_param(&q)?).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(body),
    )
        .into_response())
}

pub async fn write_archive(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Params,
    body: Body,
) -> Result<StatusCode, Error> {
    let path = path_param(&q)?;
    d.instances
        .write_archive(&id, path, body.into_data_stream())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn watch(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Response, Error> {
    let events = d.instances.watch_path(&id, path_param(&q)?).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(events),
    )
        .into_response())
}
