//! `/v1/instances/{id}/exec` and `/v1/execs/{id}/...`: commands run in an instance's VM.
//! See docs/EXEC.md for the shape: create, then follow the output feed, upload stdin and
//! read the exit code, each its own request.

use std::sync::Arc;

use aegis_api::{CreateExec, Exec};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use futures::StreamExt;
use serde::Deserialize;

use super::tasks::{ndjson_response, OutputQuery};
use super::{bad, parse_body, Error, Path, Query};
use crate::daemon::Daemon;

pub async fn create(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Exec>), Error> {
    let req: CreateExec = parse_body(&body)?;
    let exec = d.instances.create_exec(&id, req).await?;
    Ok((StatusCode::CREATED, Json(exec)))
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Result<Json<Exec>, Error> {
    Ok(Json(d.instances.exec(&d, &id)?.view()))
}

pub async fn output(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<OutputQuery>,
) -> Result<Response, Error> {
    let exec = d.instances.exec(&d, &id)?;
    let rx = exec.output(
        q.follow,
        (q.stdout_offset, q.stderr_offset),
        d.shutdown.clone(),
    );
    Ok(ndjson_response(rx))
}

/// The request body, as it arrives, is the process's stdin; its end (or the client going
/// away) closes it. The guest's flow-control window bounds what is buffered.
pub async fn stdin(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, Error> {
    let exec = d.instances.exec(&d, &id)?;
    let mut tx = exec.take_stdin()?;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let Ok(chunk) = chunk else { break };
        if tx.send(chunk).await.is_err() {
            // The process or its VM is gone: nothing reads stdin any more.
            return Ok(StatusCode::NO_CONTENT);
        }
    }
    let _ = tx.finish().await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SignalQuery {
    /// The signal's number, e.g. 2 for SIGINT, 15 for SIGTERM (required: a 400 without it).
    #[serde(default)]
    signal: Option<i32>,
}

pub async fn signal(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<SignalQuery>,
) -> Result<StatusCode, Error> {
    let Some(signal) = q.signal else {
        return Err(bad("give the signal number as `?signal=N` (e.g. 2 for SIGINT)").into());
    };
    d.instances.exec(&d, &id)?.signal(signal).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResizeQuery {
    /// Terminal rows, 1 ..= 4096.
    rows: u16,
    /// Terminal columns, 1 ..= 4096.
    cols: u16,
}

pub async fn resize(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<ResizeQuery>,
) -> Result<StatusCode, Error> {
    let size = aegis_api::TtySize {
        rows: q.rows,
        cols: q.cols,
    };
    d.instances.exec(&d, &id)?.resize(size).await?;
    Ok(StatusCode::NO_CONTENT)
}
