use std::sync::Arc;

use aegis_api::{App, AppServed, CreateApp, PublishRelease, Release, ServeApp};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::{parse_body, Error, Path};
use crate::daemon::Daemon;

pub async fn create(
    State(d): State<Arc<Daemon>>,
    body: Bytes,
) -> Result<(StatusCode, Json<App>), Error> {
    let req: CreateApp = parse_body(&body)?;
    Ok((StatusCode::CREATED, Json(d.apps.create(&d, req).await?)))
}

pub async fn list(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<App>>, Error> {
    Ok(Json(d.apps.list(&d)?))
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> Result<Json<App>, Error> {
    Ok(Json(d.apps.get(&d, &name)?))
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    d.apps.remove(&d, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn publish(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Release>), Error> {
    let req: PublishRelease = parse_body(&body)?;
    crate::quotas::check_free_disk(&d, "publish a release")?;
    Ok((
        StatusCode::CREATED,
        Json(d.apps.publish(&d, &name, req).await?),
    ))
}

pub async fn releases(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<Release>>, Error> {
    Ok(Json(d.apps.releases(&d, &name)?))
}

pub async fn serve(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<AppServed>, Error> {
    let req: ServeApp = if body.is_empty() {
        ServeApp::default()
    } else {
        parse_body(&body)?
    };
    Ok(Json(d.apps.serve(&d, &name, req).await?))
}
