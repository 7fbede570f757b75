//! Paths of instances, their leases and their files (`api/instances.rs`, `api/leases.rs`,
//! `api/files.rs`).

use aegis_api::{
    ApiError, AwakeBecause, CreateInstance, CreateLease, FileInfo, Instance, Lease, OutputEvent,
    RenewLease, WatchEvent,
};

use super::TarArchive;
use crate::api::tasks::OutputQuery;

/// Create an instance and boot it
#[utoipa::path(post, path = "/v1/instances", tag = "instances",
    request_body = CreateInstance,
    responses(
        (status = 201, description = "Created; its ports are listening.", body = Instance),
        (status = 400, description = "Malformed body or a value out of range.", body = ApiError),
        (status = 404, description = "An image, app or workspace it names does not exist.",
            body = ApiError),
        (status = 409, description = "The name or a host port is taken, or its workspace is \
            held in a conflicting mode.", body = ApiError),
        (status = 429, description = "The instance, live VM or exposed port limit is reached.",
            body = ApiError),
        (status = 500, description = "The daemon failed to create it.", body = ApiError),
        (status = 503, description = "The host cannot run VMs now (kernel, image or VMM \
            missing).", body = ApiError),
        (status = 507, description = "The host's free disk is below the configured reserve.",
            body = ApiError),
    ))]
pub(super) fn create_instance() {}

/// List instances
#[utoipa::path(get, path = "/v1/instances", tag = "instances",
    responses((status = 200, description = "Every instance.", body = [Instance])))]
pub(super) fn list_instances() {}

/// One instance
#[utoipa::path(get, path = "/v1/instances/{id}", tag = "instances",
    params(("id" = String, Path, description = "The instance's id or name.")),
    responses(
        (status = 200, description = "The instance.", body = Instance),
        (status = 404, description = "No such instance.", body = ApiError),
    ))]
pub(super) fn get_instance() {}

/// Remove an instance: stop its VM, free its ports and disk
#[utoipa::path(delete, path = "/v1/instances/{id}", tag = "instances",
    params(("id" = String, Path, description = "The instance's id or name.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 404, description = "No such instance.", body = ApiError),
        (status = 409, description = "An app serves through it: stop serving first.",
            body = ApiError),
        (status = 500, description = "Its files could not be removed.", body = ApiError),
    ))]
pub(super) fn delete_instance() {}

/// Pause an instance's VM
#[utoipa::path(post, path = "/v1/instances/{id}/pause", tag = "instances",
    params(("id" = String, Path, description = "The instance's id or name.")),
    responses(
        (status = 200, description = "The instance, paused.", body = Instance),
        (status = 404, description = "No such instance.", body = ApiError),
        (status = 409, description = "Not running.", body = ApiError),
        (status = 503, description = "The backend cannot pause VMs.", body = ApiError),
    ))]
pub(super) fn pause_instance() {}

/// Resume or boot an instance's VM
#[utoipa::path(post, path = "/v1/instances/{id}/resume", tag = "instances",
    params(("id" = String, Path, description = "The instance's id or name.")),
    responses(
        (status = 200, description = "The instance, running.", body = Instance),
        (status = 404, description = "No such instance.", body = ApiError),
        (status = 409, description = "Its state forbids it (e.g. being removed).",
            body = ApiError),
        (status = 429, description = "The live VM limit is reached.", body = ApiError),
        (status = 503, description = "The VM could not be started.", body = ApiError),
        (status = 507, description = "The host's free disk is below the configured reserve.",
            body = ApiError),
    ))]
pub(super) fn resume_instance() {}

/// Stop an instance's VM; the instance stays and wakes on the next connection
#[utoipa::path(post, path = "/v1/instances/{id}/stop", tag = "instances",
    params(("id" = String, Path, description = "The instance's id or name.")),
    responses(
        (status = 200, description = "The instance, stopped.", body = Instance),
        (status = 404, description = "No such instance.", body = ApiError),
        (status = 409, description = "Its state forbids it.", body = ApiError),
    ))]
pub(super) fn stop_instance() {}

/// The instance's server log (stdout and stderr of its command)
///
/// The same `output` events as a task's feed; it ends when the instance is removed or the
/// daemon stops.
#[utoipa::path(get, path = "/v1/instances/{id}/logs", tag = "instances",
    params(("id" = String, Path, description = "The instance's id or name."), OutputQuery),
    responses(
        (status = 200, description = "NDJSON: one `OutputEvent` JSON object per line.",
            content_type = "application/x-ndjson", body = OutputEvent),
        (status = 400, description = "An unknown or malformed query parameter.",
            body = ApiError),
        (status = 404, description = "No such instance.", body = ApiError),
    ))]
pub(super) fn instance_logs() {}

/// Take an activity lease: wakes the instance and keeps it awake until the lease expires
#[utoipa::path(post, path = "/v1/instances/{id}/leases", tag = "leases",
    params(("id" = String, Path, description = "The instance's id or name.")),
    request_body = CreateLease,
    responses(
        (status = 201, description = "The lease; the instance runs.", body = Lease),
        (status = 400, description = "Malformed body, TTL or holder.", body = ApiError),
        (status = 404, description = "No such instance.", body = ApiError),
        (status = 409, description = "The instance cannot be woken now.", body = ApiError),
        (status = 429, description = "Waking it would pass the live VM limit.",
            body = ApiError),
        (status = 503, description = "The VM could not be started.", body = ApiError),
        (status = 507, description = "Waking it needs disk the host does not have.",
            body = ApiError),
    ))]
pub(super) fn create_lease() {}

/// The instance's live leases
#[utoipa::path(get, path = "/v1/instances/{id}/leases", tag = "leases",
    params(("id" = String, Path, description = "The instance's id or name.")),
    responses(
        (status = 200, description = "Leases not yet expired.", body = [Lease]),
        (status = 404, description = "No such instance.", body = ApiError),
    ))]
pub(super) fn list_leases() {}

/// Renew a lease (an empty body renews for the lease's own TTL)
#[utoipa::path(put, path = "/v1/instances/{id}/leases/{lease}", tag = "leases",
    params(
        ("id" = String, Path, description = "The instance's id or name."),
        ("lease" = String, Path, description = "The lease's id."),
    ),
    request_body(content = Option<RenewLease>, description = "Optional: an empty body \
        renews for the lease's own TTL."),
    responses(
        (status = 200, description = "The renewed lease.", body = Lease),
        (status = 400, description = "Malformed body or TTL.", body = ApiError),
        (status = 404, description = "No such instance or lease (it may have expired).",
            body = ApiError),
    ))]
pub(super) fn renew_lease_put() {}

/// Release a lease
#[utoipa::path(delete, path = "/v1/instances/{id}/leases/{lease}", tag = "leases",
    params(
        ("id" = String, Path, description = "The instance's id or name."),
        ("lease" = String, Path, description = "The lease's id."),
    ),
    responses(
        (status = 204, description = "Released; the idle timers run again."),
        (status = 404, description = "No such instance or lease.", body = ApiError),
    ))]
pub(super) fn release_lease() {}

/// Renew a lease (the same as `PUT` on the lease)
#[utoipa::path(post, path = "/v1/instances/{id}/leases/{lease}/renew", tag = "leases",
    params(
        ("id" = String, Path, description = "The instance's id or name."),
        ("lease" = String, Path, description = "The lease's id."),
    ),
    request_body(content = Option<RenewLease>, description = "Optional: an empty body \
        renews for the lease's own TTL."),
    responses(
        (status = 200, description = "The renewed lease.", body = Lease),
        (status = 400, description = "Malformed body or TTL.", body = ApiError),
        (status = 404, description = "No such instance or lease (it may have expired).",
            body = ApiError),
    ))]
pub(super) fn renew_lease_post() {}

/// What keeps the instance awake: connections, holders, leases and its idle timers
#[utoipa::path(get, path = "/v1/instances/{id}/awake", tag = "leases",
    params(("id" = String, Path, description = "The instance's id or name.")),
    responses(
        (status = 200, description = "Why it is awake.", body = AwakeBecause),
        (status = 404, description = "No such instance.", body = ApiError),
    ))]
pub(super) fn awake() {}

// The files calls all take `?path=` and answer the same errors: the instance wakes for them.

/// `lstat` of a guest path
#[utoipa::path(get, path = "/v1/instances/{id}/files/stat", tag = "files",
    params(("id" = String, Path, description = "The instance's id or name."),
        ("path" = String, Query, description = "An absolute guest path.")),
    responses(
        (status = 200, description = "The path (symlinks not followed).", body = FileInfo),
        (status = 400, description = "Missing, relative or malformed `path`, or an unknown \
            query parameter.", body = ApiError),
        (status = 404, description = "No such instance or guest path.", body = ApiError),
        (status = 409, description = "The instance cannot be woken now.", body = ApiError),
        (status = 500, description = "The guest failed to answer.", body = ApiError),
        (status = 503, description = "The guest could not be reached.", body = ApiError),
    ))]
pub(super) fn stat_file() {}

/// A guest directory with its entries in name order
#[utoipa::path(get, path = "/v1/instances/{id}/files/list", tag = "files",
    params(("id" = String, Path, description = "The instance's id or name."),
        ("path" = String, Query, description = "An absolute guest directory.")),
    responses(
        (status = 200, description = "The directory, `entries` filled in.", body = FileInfo),
        (status = 400, description = "Missing, relative or malformed `path`, not a \
            directory, or an unknown query parameter.", body = ApiError),
        (status = 404, description = "No such instance or guest path.", body = ApiError),
        (status = 409, description = "The instance cannot be woken now.", body = ApiError),
        (status = 500, description = "The guest failed to answer.", body = ApiError),
        (status = 503, description = "The guest could not be reached.", body = ApiError),
    ))]
pub(super) fn list_files() {}

/// Watch a guest directory's entries
///
/// Holds the instance awake while the response is open; ends when the directory goes away.
#[utoipa::path(get, path = "/v1/instances/{id}/files/watch", tag = "files",
    params(("id" = String, Path, description = "The instance's id or name."),
        ("path" = String, Query, description = "An absolute guest directory.")),
    responses(
        (status = 200, description = "NDJSON: one `WatchEvent` JSON object per line.",
            content_type = "application/x-ndjson", body = WatchEvent),
        (status = 400, description = "Missing, relative or malformed `path`, not a \
            directory, or an unknown query parameter.", body = ApiError),
        (status = 404, description = "No such instance or guest path.", body = ApiError),
        (status = 409, description = "The instance cannot be woken now.", body = ApiError),
        (status = 503, description = "The guest could not be reached.", body = ApiError),
    ))]
pub(super) fn watch_files() {}

/// Read a guest file or directory tree as a tar stream
#[utoipa::path(get, path = "/v1/instances/{id}/files/archive", tag = "files",
    params(("id" = String, Path, description = "The instance's id or name."),
        ("path" = String, Query, description = "An absolute guest path: its last component \
            is the archive's top entry.")),
    responses(
        (status = 200, description = "A tar stream.", content_type = "application/x-tar",
            body = TarArchive),
        (status = 400, description = "Missing, relative or malformed `path`, or an unknown \
            query parameter.", body = ApiError),
        (status = 404, description = "No such instance or guest path.", body = ApiError),
        (status = 409, description = "The instance cannot be woken now.", body = ApiError),
        (status = 503, description = "The guest could not be reached.", body = ApiError),
    ))]
pub(super) fn read_archive() {}

/// Write a tar stream into a guest directory
#[utoipa::path(put, path = "/v1/instances/{id}/files/archive", tag = "files",
    params(("id" = String, Path, description = "The instance's id or name."),
        ("path" = String, Query, description = "An absolute guest directory to unpack \
            into.")),
    request_body(content = TarArchive, content_type = "application/x-tar"),
    responses(
        (status = 204, description = "Unpacked."),
        (status = 400, description = "Missing, relative or malformed `path`, a malformed \
            archive or an entry it refuses (device nodes, paths leaving the directory).",
            body = ApiError),
        (status = 404, description = "No such instance or guest directory.", body = ApiError),
        (status = 409, description = "The instance cannot be woken now.", body = ApiError),
        (status = 500, description = "The guest failed to write.", body = ApiError),
        (status = 503, description = "The guest could not be reached.", body = ApiError),
        (status = 507, description = "The guest's disk is full.", body = ApiError),
    ))]
pub(super) fn write_archive() {}
