//! Paths of the daemon itself and of images (`api/status.rs`, `api/images.rs`).

use aegis_api::{ApiError, ImageInfo, PullEvent, PullImage, Status};

/// What this daemon is and what it can do
///
/// The version, backend and its capabilities, counts of running tasks and instances, and the
/// limits in force.
#[utoipa::path(get, path = "/v1/status", tag = "daemon",
    responses((status = 200, description = "The daemon answers.", body = Status)))]
pub(super) fn status() {}

/// Stop every VM and exit (`aegis down`)
///
/// Answers before the daemon has stopped; targets of instances stay recorded and come back on
/// the next start.
#[utoipa::path(post, path = "/v1/shutdown", tag = "daemon",
    responses((status = 202, description = "Shutdown started.")))]
pub(super) fn shutdown() {}

/// This document
#[utoipa::path(get, path = "/v1/openapi.json", tag = "daemon",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API \
        (`api/openapi.json` in the source tree).", content_type = "application/json",
        body = Object)))]
pub(super) fn openapi_document() {}

/// List images: the built-in ones that are built and every pulled OCI image
#[utoipa::path(get, path = "/v1/images", tag = "images",
    responses(
        (status = 200, description = "Every image.", body = [ImageInfo]),
        (status = 500, description = "The image store could not be read.", body = ApiError),
    ))]
pub(super) fn list_images() {}

/// Pull an OCI image from a registry
///
/// The answer is a progress stream: `progress` events, then exactly one `done` (the image is
/// stored and bootable) or `error` (nothing of the pull is used) event. Failures after the
/// stream has started arrive as that `error` event, not as an HTTP status.
#[utoipa::path(post, path = "/v1/images/pull", tag = "images",
    request_body = PullImage,
    responses(
        (status = 200, description = "NDJSON: one `PullEvent` JSON object per line.",
            content_type = "application/x-ndjson", body = PullEvent),
        (status = 400, description = "Malformed body or image reference.", body = ApiError),
        (status = 507, description = "The host's free disk is below the configured reserve.",
            body = ApiError),
    ))]
pub(super) fn pull_image() {}

/// One image
#[utoipa::path(get, path = "/v1/images/{reference}", tag = "images",
    params(("reference" = String, Path, description = "A built-in image name or an OCI \
        reference (`alpine:3.21`, `ghcr.io/org/app@sha256:...`); it may contain `/`, which \
        need not be escaped: the route takes the rest of the path.")),
    responses(
        (status = 200, description = "The image.", body = ImageInfo),
        (status = 400, description = "Malformed reference.", body = ApiError),
        (status = 404, description = "No such image.", body = ApiError),
        (status = 500, description = "The image store could not be read.", body = ApiError),
    ))]
pub(super) fn get_image() {}

/// Remove a pulled image
#[utoipa::path(delete, path = "/v1/images/{reference}", tag = "images",
    params(("reference" = String, Path, description = "An OCI reference; it may contain \
        `/`. Built-in images cannot be removed.")),
    responses(
        (status = 204, description = "Removed; its disk space is freed."),
        (status = 400, description = "Malformed reference, or a built-in image.",
            body = ApiError),
        (status = 404, description = "No such image.", body = ApiError),
        (status = 409, description = "An instance or a running task uses it.", body = ApiError),
        (status = 500, description = "The image could not be removed.", body = ApiError),
    ))]
pub(super) fn delete_image() {}
