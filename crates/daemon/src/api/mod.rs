//! The HTTP/JSON API (`/v1`) on the unix socket. Handlers are thin: they parse, call the
//! daemon, and map errors to [`aegis_api::ApiError`] bodies.

mod apps;
mod exec;
mod files;
mod images;
mod instances;
mod leases;
mod status;
mod tasks;
mod workspaces;

use std::sync::Arc;

use aegis_api::{ApiError, ErrorCode};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::daemon::Daemon;

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v1/status", get(status::status))
        .route("/v1/shutdown", post(status::shutdown))
        .route("/v1/images", get(images::list))
        .route("/v1/images/pull", post(images::pull))
        .route(
            "/v1/images/{*reference}",
            get(images::get).delete(images::delete),
        )
        .route("/v1/tasks", post(tasks::create).get(tasks::list))
        .route("/v1/tasks/{id}", get(tasks::get).delete(tasks::delete))
        .route("/v1/tasks/{id}/cancel", post(tasks::cancel))
        .route("/v1/tasks/{id}/output", get(tasks::output))
        .route("/v1/tasks/{id}/stdin", post(tasks::stdin))
        .route(
            "/v1/instances",
            post(instances::create).get(instances::list),
        )
        .route(
            "/v1/instances/{id}",
            get(instances::get).delete(instances::delete),
        )
        .route("/v1/instances/{id}/pause", post(instances::pause))
        .route("/v1/instances/{id}/resume", post(instances::resume))
        .route("/v1/instances/{id}/stop", post(instances::stop))
        .route("/v1/instances/{id}/logs", get(instances::logs))
        .route(
            "/v1/instances/{id}/leases",
            post(leases::create).get(leases::list),
        )
        .route(
            "/v1/instances/{id}/leases/{lease}",
            put(leases::renew).delete(leases::release),
        )
        .route(
            "/v1/instances/{id}/leases/{lease}/renew",
            post(leases::renew),
        )
        .route("/v1/instances/{id}/awake", get(leases::awake))
        .route("/v1/instances/{id}/exec", post(exec::create))
        .route("/v1/execs/{id}", get(exec::get))
        .route("/v1/execs/{id}/output", get(exec::output))
        .route("/v1/execs/{id}/stdin", post(exec::stdin))
        .route("/v1/execs/{id}/signal", post(exec::signal))
        .route("/v1/execs/{id}/resize", post(exec::resize))
        .route("/v1/instances/{id}/files/stat", get(files::stat))
        .route("/v1/instances/{id}/files/list", get(files::list))
        .route("/v1/instances/{id}/files/watch", get(files::watch))
        .route(
            "/v1/instances/{id}/files/archive",
            get(files::read_archive).put(files::write_archive),
        )
        .route("/v1/apps", post(apps::create).get(apps::list))
        .route("/v1/apps/{name}", get(apps::get).delete(apps::delete))
        .route(
            "/v1/apps/{name}/releases",
            post(apps::publish).get(apps::releases),
        )
        .route("/v1/apps/{name}/serve", post(apps::serve))
        .route(
            "/v1/workspaces",
            post(workspaces::create).get(workspaces::list),
        )
        .route(
            "/v1/workspaces/{name}",
            get(workspaces::get).delete(workspaces::delete),
        )
        .fallback(|| async {
            Error(ApiError::new(
                ErrorCode::NotFound,
                "no such API route; see docs/API.md",
            ))
        })
        .with_state(daemon)
}

/// An API error as a response.
pub struct Error(pub ApiError);

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error(e)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.error.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

/// A 400: the request itself is wrong; `message` says what and how to fix it.
pub fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message.into())
}

/// A 500: the daemon failed at something; `message` says what, to what, and why.
pub fn internal(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Internal, message.into())
}

/// Parses a JSON body with an error message a human can act on.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| {
        Error(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("invalid request body: {e}"),
        ))
    })
}
