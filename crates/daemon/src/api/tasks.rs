use std::sync::Arc;

use aegis_api::{CreateTask, Task};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{parse_body, Error, Path, Query};
use crate::daemon::Daemon;

pub async fn create(
    State(d): State<Arc<Daemon>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Task>), Error> {
    let req: CreateTask = parse_body(&body)?;
    let task = d.tasks.create(&d, req).await?;
    Ok((StatusCode::CREATED, Json(task)))
}

pub async fn list(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<Task>>, Error> {
    d.registry.list_tasks().map(Json).map_err(|e| {
        Error(aegis_api::ApiError::new(
            aegis_api::ErrorCode::Internal,
            e.to_string(),
        ))
    })
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Result<Json<Task>, Error> {
    Ok(Json(d.tasks.get(&d, &id)?))
}

pub async fn cancel(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Result<Json<Task>, Error> {
    Ok(Json(d.tasks.cancel(&d, &id)?))
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    d.tasks.delete(&d, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The query of every output feed (task and exec output, instance logs). The doc comments are
/// the parameters' descriptions in the OpenAPI document.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// Keep the response open and send new output as it comes, until the feed ends (the task
    /// or exec ended and all its output was sent: one `end` event closes it).
    #[serde(default)]
    pub follow: bool,
    /// Byte offset in stdout to start from: a client that lost its connection resumes
    /// exactly where it stopped.
    #[serde(default)]
    pub stdout_offset: u64,
    /// Byte offset in stderr to start from.
    #[serde(default)]
    pub stderr_offset: u64,
}

pub async fn output(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<OutputQuery>,
) -> Result<Response, Error> {
    let rx = d
        .tasks
        .output(&d, &id, q.follow, (q.stdout_offset, q.stderr_offset))?;
    Ok(ndjson_response(rx))
}

/// Streams NDJSON lines as they are produced.
pub fn ndjson_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The request body, as it arrives, is the task's stdin; its end (or the client going away)
/// is the command's EOF.
pub async fn stdin(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, Error> {
    use futures::StreamExt;
    let tx = d.tasks.stdin(&id)?;
    let mut chunks = body.into_data_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        if tx.send(chunk).await.is_err() {
            break; // the task has ended: nothing reads its stdin any more
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
