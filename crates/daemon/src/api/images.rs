use std::sync::Arc;

use aegis_api::{ApiError, ErrorCode, ImageInfo, ImageKind, PullImage};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;

use super::tasks::ndjson_response;
use super::{parse_body, Error, Path};
use crate::daemon::Daemon;
use crate::images;

pub async fn pull(State(d): State<Arc<Daemon>>, body: Bytes) -> Result<Response, Error> {
    let req: PullImage = parse_body(&body)?;
    // Refuse a malformed reference before starting a stream.
    images::canonical(&req.reference)?;
    crate::quotas::check_free_disk(&d, "pull an image")?;
    Ok(ndjson_response(images::pull::start(d, req)))
}

/// Instances (any state: they can wake) and running tasks that boot `reference`.
fn users(d: &Daemon, reference: &str) -> Vec<String> {
    let same = |image: &str| images::canonical(image).is_ok_and(|c| c == reference);
    let mut users: Vec<String> = d
        .instances
        .list()
        .into_iter()
        .filter(|i| i.target.image.as_deref().is_some_and(same))
        .map(|i| format!("instance {}", i.name))
        .collect();
    users.extend(
        d.tasks
            .live_images(d)
            .into_iter()
            .filter(|(_, image)| same(image))
            .map(|(id, _)| format!("task {id}")),
    );
    users
}

fn builtin_infos(d: &Daemon) -> Vec<ImageInfo> {
    aegis_image::list_images(d.guest.layout())
        .into_iter()
        .filter(|i| !matches!(i.status, aegis_image::ImageStatus::Missing))
        .map(|i| ImageInfo {
            reference: i.image.name().to_string(),
            kind: ImageKind::Builtin,
            digest: None,
            size_bytes: i.size_bytes.unwrap_or(0),
            layers: 1,
            entrypoint: vec![],
            cmd: vec![],
            env: vec![],
            working_dir: String::new(),
            user: String::new(),
            exposed_ports: vec![],
            used_by: users(d, i.image.name()),
        })
        .collect()
}

pub async fn list(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<ImageInfo>>, Error> {
    let mut out = builtin_infos(&d);
    let stored = d.images.store().list().map_err(images::store_error)?;
    out.extend(
        stored
            .iter()
            .map(|image| images::info(image, users(&d, &image.reference))),
    );
    Ok(Json(out))
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    Path(reference): Path<String>,
) -> Result<Json<ImageInfo>, Error> {
    let canonical = images::canonical(&reference)?;
    if let Some(b) = builtin_infos(&d)
        .into_iter()
        .find(|i| i.reference == canonical)
    {
        return Ok(Json(b));
    }
    let image = d.images.get(&canonical)?;
    Ok(Json(images::info(&image, users(&d, &canonical))))
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    Path(reference): Path<String>,
) -> Result<StatusCode, Error> {
    let canonical = images::canonical(&reference)?;
    if crate::guest::GuestAssets::is_builtin(&canonical) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{canonical} is a built-in image; it is rebuilt by `aegis setup`, not removed"),
        )
        .into());
    }
    d.images.get(&canonical)?;
    let users = users(&d, &canonical);
    if !users.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "image {canonical} is used by {}; remove those first (`aegis instance rm`, or \
                 wait for the tasks to end)",
                users.join(", ")
            ),
        )
        .into());
    }
    let freed = d.images.remove_image(&d, &canonical).await?;
    tracing::info!(image = %canonical, freed, "image removed");
    Ok(StatusCode::NO_CONTENT)
}
