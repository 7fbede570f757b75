//! The OpenAPI 3.1 document of the `/v1` API (`api/openapi.json`, served at
//! `GET /v1/openapi.json`).
//!
//! The schemas come from the `aegis-api` types (`#[derive(ToSchema)]`), so they follow the
//! serde attributes the daemon really uses. The operations are described by the
//! `#[utoipa::path]` stubs in this module's files, one file per area, next to nothing else:
//! the handlers stay as they are, and the tests below fail when a route of
//! [`super::ROUTES`] has no stub or the committed document is stale.

// The stub functions are never called: they exist for their `#[utoipa::path]` attributes.
#[allow(dead_code)]
mod apps;
#[allow(dead_code)]
mod instances;
#[allow(dead_code)]
mod runs;
#[allow(dead_code)]
mod system;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

/// The committed document, as `GET /v1/openapi.json` serves it. A unit test keeps it equal to
/// [`generate`]'s output, so serving the file serves what the types say.
pub const DOCUMENT: &str = include_str!("../../../../../api/openapi.json");

/// `GET /v1/openapi.json`.
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

/// The document as it is committed: pretty JSON, keys in a stable (sorted) order, one final
/// newline.
pub fn generate() -> Result<String, serde_json::Error> {
    let mut json = serde_json::to_string_pretty(&ApiDoc::openapi())?;
    json.push('\n');
    Ok(json)
}

/// An opaque byte stream in a request or response body (stdin uploads).
pub(crate) struct RawBytes;

impl PartialSchema for RawBytes {
    fn schema() -> RefOr<Schema> {
        binary("Raw bytes, streamed: the body is read as it arrives.")
    }
}

impl ToSchema for RawBytes {}

/// A POSIX tar stream (`files/archive`).
pub(crate) struct TarArchive;

impl PartialSchema for TarArchive {
    fn schema() -> RefOr<Schema> {
        binary(
            "A tar stream (ustar/pax): regular files, directories and symlinks with their \
             modes and modification times.",
        )
    }
}

impl ToSchema for TarArchive {}

fn binary(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
        .description(Some(description))
        .into()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Aegis daemon API",
        description = "The HTTP/JSON API of aegisd, version 1. aegisd serves it on the unix \
            socket `<home>/aegisd.sock` (mode 0600; home is `~/.aegis` unless `AEGIS_HOME` \
            says otherwise); there is no TCP listener, so the document names no server. Every \
            non-2xx answer has the body `{\"error\": {\"code\", \"message\"}}` (ApiError); \
            the code decides the HTTP status. Streams (`application/x-ndjson`) carry one JSON \
            object per line. See docs/API.md.",
        license(name = "Apache-2.0"),
    ),
    paths(
        system::status,
        system::shutdown,
        system::openapi_document,
        system::list_images,
        system::pull_image,
        system::get_image,
        system::delete_image,
        runs::create_task,
        runs::list_tasks,
        runs::get_task,
        runs::delete_task,
        runs::cancel_task,
        runs::task_output,
        runs::task_stdin,
        runs::create_exec,
        runs::get_exec,
        runs::exec_output,
        runs::exec_stdin,
        runs::exec_signal,
        runs::exec_resize,
        instances::create_instance,
        instances::list_instances,
        instances::get_instance,
        instances::delete_instance,
        instances::pause_instance,
        instances::resume_instance,
        instances::stop_instance,
        instances::instance_logs,
        instances::create_lease,
        instances::list_leases,
        instances::renew_lease_put,
        instances::release_lease,
        instances::renew_lease_post,
        instances::awake,
        instances::stat_file,
        instances::list_files,
        instances::watch_files,
        instances::read_archive,
        instances::write_archive,
        apps::create_app,
        apps::list_apps,
        apps::get_app,
        apps::delete_app,
        apps::publish_release,
        apps::list_releases,
        apps::serve_app,
        apps::create_workspace,
        apps::list_workspaces,
        apps::get_workspace,
        apps::delete_workspace,
    ),
    components(schemas(aegis_api::ErrorCode)),
    modifiers(&ErrorCodes, &UnsignedIntegers),
    tags(
        (name = "daemon", description = "The daemon itself: status, shutdown, this document."),
        (name = "images", description = "Built-in images and OCI images pulled from registries."),
        (name = "tasks", description = "A command in a fresh microVM, its output and artifacts."),
        (name = "instances", description = "Long-lived microVMs serving ports; they pause and wake."),
        (name = "leases", description = "Activity leases that keep an instance awake."),
        (name = "exec", description = "Processes run in an instance's VM (docs/EXEC.md)."),
        (name = "files", description = "Files of a live instance (docs/FILES.md)."),
        (name = "apps", description = "Apps, their releases and the instance serving each (docs/APPS.md)."),
        (name = "workspaces", description = "Named directories mounted at /workspace (docs/WORKSPACES.md)."),
    )
)]
pub struct ApiDoc;

/// Says on the `ErrorCode` schema which HTTP status each code comes with, from
/// [`aegis_api::ErrorCode::http_status`] itself, so the table cannot drift from the code.
struct ErrorCodes;

impl Modify for ErrorCodes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use aegis_api::ErrorCode::*;
        let Some(components) = doc.components.as_mut() else {
            return;
        };
        let Some(RefOr::T(schema)) = components.schemas.get_mut("ErrorCode") else {
            return;
        };
        let table: Vec<String> = [
            InvalidRequest,
            NotFound,
            Conflict,
            LimitReached,
            Internal,
            Unavailable,
            InsufficientStorage,
        ]
        .into_iter()
        .map(|code| {
            let name = serde_json::to_value(code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!("`{name}`: {}", code.http_status())
        })
        .collect();
        let text = format!(
            "Machine-readable error class; the HTTP status follows from it: {}.",
            table.join(", ")
        );
        if let Schema::Object(object) = schema {
            object.description = Some(text);
        }
    }
}

/// Gives each unsigned integer its real range. Without utoipa's `non_strict_integers` a `u32`
/// was `"format": "int32", "minimum": 0` (so 2^31 looked invalid, though the daemon takes it)
/// and a `u64` `int64` (so 2^63 did); with it, utoipa writes the formats `u-int16`, `u-int32`,
/// `u-int64`, which no tool knows. This modifier writes `uint16`/`uint32`/`uint64` with the
/// type's `maximum` instead, wherever a schema appears (components, parameters, bodies).
struct UnsignedIntegers;

impl Modify for UnsignedIntegers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = doc.components.as_mut() {
            components.schemas.values_mut().for_each(unsigned_in);
        }
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                for p in op.parameters.iter_mut().flatten() {
                    p.schema.iter_mut().for_each(unsigned_in);
                }
                if let Some(body) = op.request_body.as_mut() {
                    for c in body.content.values_mut() {
                        c.schema.iter_mut().for_each(unsigned_in);
                    }
                }
                for r in op.responses.responses.values_mut() {
                    if let RefOr::T(r) = r {
                        for c in r.content.values_mut() {
                            c.schema.iter_mut().for_each(unsigned_in);
                        }
                    }
                }
            }
        }
    }
}

fn unsigned_in(schema: &mut RefOr<Schema>) {
    use utoipa::openapi::schema::{AdditionalProperties, ArrayItems};
    let RefOr::T(schema) = schema else {
        return;
    };
    match schema {
        Schema::Object(o) => {
            let max = match o.format {
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt8)) => Some(("uint8", 255)),
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt16)) => {
                    Some(("uint16", usize::from(u16::MAX)))
                }
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt32)) => {
                    Some(("uint32", u32::MAX as usize))
                }
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt64)) => {
                    Some(("uint64", u64::MAX as usize))
                }
                _ => None,
            };
            if let Some((format, max)) = max {
                o.format = Some(SchemaFormat::Custom(format.to_string()));
                o.maximum = Some(utoipa::Number::UInt(max));
            }
            o.properties.values_mut().for_each(unsigned_in);
            if let Some(extra) = o.additional_properties.as_mut() {
                if let AdditionalProperties::RefOr(extra) = extra.as_mut() {
                    unsigned_in(extra);
                }
            }
        }
        Schema::Array(a) => {
            if let ArrayItems::RefOrSchema(items) = &mut a.items {
                unsigned_in(items);
            }
        }
        Schema::OneOf(o) => o.items.iter_mut().for_each(unsigned_in),
        Schema::AllOf(o) => o.items.iter_mut().for_each(unsigned_in),
        Schema::AnyOf(o) => o.items.iter_mut().for_each(unsigned_in),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
