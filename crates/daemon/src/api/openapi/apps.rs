//! Paths of apps and workspaces (`api/apps.rs`, `api/workspaces.rs`).

use aegis_api::{
    ApiError, App, AppServed, CreateApp, CreateWorkspace, PublishRelease, Release, ServeApp,
    Workspace,
};

/// Create an app (no release yet)
#[utoipa::path(post, path = "/v1/apps", tag = "apps",
    request_body = CreateApp,
    responses(
        (status = 201, description = "Created.", body = App),
        (status = 400, description = "Malformed body, name or port.", body = ApiError),
        (status = 409, description = "An app of that name exists.", body = ApiError),
        (status = 500, description = "The registry could not be written.", body = ApiError),
    ))]
pub(super) fn create_app() {}

/// List apps
#[utoipa::path(get, path = "/v1/apps", tag = "apps",
    responses(
        (status = 200, description = "Every app.", body = [App]),
        (status = 500, description = "The registry could not be read.", body = ApiError),
    ))]
pub(super) fn list_apps() {}

/// One app
#[utoipa::path(get, path = "/v1/apps/{name}", tag = "apps",
    params(("name" = String, Path, description = "The app's name.")),
    responses(
        (status = 200, description = "The app.", body = App),
        (status = 404, description = "No such app.", body = ApiError),
        (status = 500, description = "The registry could not be read.", body = ApiError),
    ))]
pub(super) fn get_app() {}

/// Remove an app, its releases and its serving instance
#[utoipa::path(delete, path = "/v1/apps/{name}", tag = "apps",
    params(("name" = String, Path, description = "The app's name.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 404, description = "No such app.", body = ApiError),
        (status = 409, description = "It is being published or served right now.",
            body = ApiError),
        (status = 500, description = "It could not be removed.", body = ApiError),
    ))]
pub(super) fn delete_app() {}

/// Publish a release: the app's image with a directory on top, as a new OCI image
#[utoipa::path(post, path = "/v1/apps/{name}/releases", tag = "apps",
    params(("name" = String, Path, description = "The app's name.")),
    request_body = PublishRelease,
    responses(
        (status = 201, description = "The new release.", body = Release),
        (status = 400, description = "Malformed body or paths.", body = ApiError),
        (status = 404, description = "No such app, or its base image or source is missing.",
            body = ApiError),
        (status = 409, description = "Another publish of the app is under way.",
            body = ApiError),
        (status = 500, description = "The release could not be stored.", body = ApiError),
        (status = 507, description = "The host's free disk is below the configured reserve.",
            body = ApiError),
    ))]
pub(super) fn publish_release() {}

/// The app's releases, oldest first
#[utoipa::path(get, path = "/v1/apps/{name}/releases", tag = "apps",
    params(("name" = String, Path, description = "The app's name.")),
    responses(
        (status = 200, description = "Every release.", body = [Release]),
        (status = 404, description = "No such app.", body = ApiError),
        (status = 500, description = "The registry could not be read.", body = ApiError),
    ))]
pub(super) fn list_releases() {}

/// Serve a release (the latest by default): its instance replaces the one serving
#[utoipa::path(post, path = "/v1/apps/{name}/serve", tag = "apps",
    params(("name" = String, Path, description = "The app's name.")),
    request_body(content = Option<ServeApp>, description = "Optional: an empty body serves \
        the latest release."),
    responses(
        (status = 200, description = "What serves now and what it replaced.", body = AppServed),
        (status = 400, description = "Malformed body.", body = ApiError),
        (status = 404, description = "No such app or release.", body = ApiError),
        (status = 409, description = "Nothing to roll back to, or the app is busy.",
            body = ApiError),
        (status = 429, description = "The instance or live VM limit is reached.",
            body = ApiError),
        (status = 500, description = "The daemon failed to start it.", body = ApiError),
        (status = 503, description = "The host cannot run VMs now.", body = ApiError),
        (status = 507, description = "The host's free disk is below the configured reserve.",
            body = ApiError),
    ))]
pub(super) fn serve_app() {}

/// Create a named workspace
#[utoipa::path(post, path = "/v1/workspaces", tag = "workspaces",
    request_body = CreateWorkspace,
    responses(
        (status = 201, description = "Created.", body = Workspace),
        (status = 400, description = "Malformed body or name.", body = ApiError),
        (status = 409, description = "A workspace of that name exists.", body = ApiError),
        (status = 500, description = "Its directory could not be made.", body = ApiError),
    ))]
pub(super) fn create_workspace() {}

/// List workspaces
#[utoipa::path(get, path = "/v1/workspaces", tag = "workspaces",
    responses(
        (status = 200, description = "Every workspace.", body = [Workspace]),
        (status = 500, description = "The workspaces could not be read.", body = ApiError),
    ))]
pub(super) fn list_workspaces() {}

/// One workspace, with its size and users
#[utoipa::path(get, path = "/v1/workspaces/{name}", tag = "workspaces",
    params(("name" = String, Path, description = "The workspace's name.")),
    responses(
        (status = 200, description = "The workspace.", body = Workspace),
        (status = 400, description = "Malformed name.", body = ApiError),
        (status = 404, description = "No such workspace.", body = ApiError),
        (status = 500, description = "It could not be read.", body = ApiError),
    ))]
pub(super) fn get_workspace() {}

/// Remove a workspace and its files
#[utoipa::path(delete, path = "/v1/workspaces/{name}", tag = "workspaces",
    params(("name" = String, Path, description = "The workspace's name.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 400, description = "Malformed name.", body = ApiError),
        (status = 404, description = "No such workspace.", body = ApiError),
        (status = 409, description = "A task or instance uses it.", body = ApiError),
        (status = 500, description = "Its files could not be removed.", body = ApiError),
    ))]
pub(super) fn delete_workspace() {}
