//! The HTTP/JSON API (`/v1`) on the unix socket. Handlers are thin: they parse, call the
//! daemon, and map errors to [`aegis_api::ApiError`] bodies.

mod apps;
mod exec;
mod files;
mod images;
mod instances;
mod leases;
pub mod openapi;
mod status;
mod tasks;
mod workspaces;

use std::sync::Arc;

use aegis_api::{ApiError, ErrorCode};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::daemon::Daemon;

/// Declares every route once: `router` serves them and [`ROUTES`] lists them, so the tests can
/// check that the OpenAPI document (`openapi.rs`) describes each one and nothing else.
macro_rules! routes {
    ($($method:ident $path:literal => $handler:path,)*) => {
        /// Every route of the API as (method, path), in axum's path syntax.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        fn add_routes(router: Router<Arc<Daemon>>) -> Router<Arc<Daemon>> {
            // axum merges the methods of repeated paths into one route.
            router$(.route($path, on(MethodFilter::$method, $handler)))*
        }
    };
}

routes! {
    GET "/v1/status" => status::status,
    POST "/v1/shutdown" => status::shutdown,
    GET "/v1/openapi.json" => openapi::serve,
    GET "/v1/images" => images::list,
    POST "/v1/images/pull" => images::pull,
    GET "/v1/images/{*reference}" => images::get,
    DELETE "/v1/images/{*reference}" => images::delete,
    POST "/v1/tasks" => tasks::create,
    GET "/v1/tasks" => tasks::list,
    GET "/v1/tasks/{id}" => tasks::get,
    DELETE "/v1/tasks/{id}" => tasks::delete,
    POST "/v1/tasks/{id}/cancel" => tasks::cancel,
    GET "/v1/tasks/{id}/output" => tasks::output,
    POST "/v1/tasks/{id}/stdin" => tasks::stdin,
    POST "/v1/instances" => instances::create,
    GET "/v1/instances" => instances::list,
    GET "/v1/instances/{id}" => instances::get,
    DELETE "/v1/instances/{id}" => instances::delete,
    POST "/v1/instances/{id}/pause" => instances::pause,
    POST "/v1/instances/{id}/resume" => instances::resume,
    POST "/v1/instances/{id}/stop" => instances::stop,
    GET "/v1/instances/{id}/logs" => instances::logs,
    POST "/v1/instances/{id}/leases" => leases::create,
    GET "/v1/instances/{id}/leases" => leases::list,
    PUT "/v1/instances/{id}/leases/{lease}" => leases::renew,
    DELETE "/v1/instances/{id}/leases/{lease}" => leases::release,
    POST "/v1/instances/{id}/leases/{lease}/renew" => leases::renew,
    GET "/v1/instances/{id}/awake" => leases::awake,
    POST "/v1/instances/{id}/exec" => exec::create,
    GET "/v1/execs/{id}" => exec::get,
    GET "/v1/execs/{id}/output" => exec::output,
    POST "/v1/execs/{id}/stdin" => exec::stdin,
    POST "/v1/execs/{id}/signal" => exec::signal,
    POST "/v1/execs/{id}/resize" => exec::resize,
    GET "/v1/instances/{id}/files/stat" => files::stat,
    GET "/v1/instances/{id}/files/list" => files::list,
    GET "/v1/instances/{id}/files/watch" => files::watch,
    GET "/v1/instances/{id}/files/archive" => files::read_archive,
    PUT "/v1/instances/{id}/files/archive" => files::write_archive,
    POST "/v1/apps" => apps::create,
    GET "/v1/apps" => apps::list,
    GET "/v1/apps/{name}" => apps::get,
    DELETE "/v1/apps/{name}" => apps::delete,
    POST "/v1/apps/{name}/releases" => apps::publish,
    GET "/v1/apps/{name}/releases" => apps::releases,
    POST "/v1/apps/{name}/serve" => apps::serve,
    POST "/v1/workspaces" => workspaces::create,
    GET "/v1/workspaces" => workspaces::list,
    GET "/v1/workspaces/{name}" => workspaces::get,
    DELETE "/v1/workspaces/{name}" => workspaces::delete,
}

pub fn router(daemon: Arc<Daemon>) -> Router {
    add_routes(Router::new())
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

/// `axum::extract::Query`, whose rejection is an [`ApiError`] 400 (axum's own answers a
/// `text/plain` 400 that matches no documented response).
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(Error(bad(format!(
                "invalid query string: {}",
                e.body_text()
            )))),
        }
    }
}

/// `axum::extract::Path`, whose rejection is an [`ApiError`] (axum's own answers
/// `text/plain`, e.g. a 400 for a segment that is not UTF-8 once percent-decoded).
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => {
                let status = e.status().as_u16();
                let message = format!("invalid path: {}", e.body_text());
                Err(Error(if status < 500 {
                    bad(message)
                } else {
                    internal(message)
                }))
            }
        }
    }
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
