use std::sync::Arc;

use aegis_api::{CapabilitiesInfo, Status};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::daemon::Daemon;

pub async fn status(State(d): State<Arc<Daemon>>) -> Json<Status> {
    let caps = d.backend.capabilities();
    Json(Status {
        status: "running".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        backend: d.backend.kind().to_string(),
        capabilities: CapabilitiesInfo {
            pause: caps.pause,
            memory_snapshot: caps.memory_snapshot,
            vsock: caps.vsock,
            virtio_fs: caps.virtio_fs,
            accelerator: caps.accelerator,
        },
        home: d.config.home.root().display().to_string(),
        tasks_running: d.tasks.running() as u32,
        router_addr: d
            .router_addr
            .get()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        instances: d.instances.list().len() as u32,
        builtin_images: aegis_image::BaseImage::ALL
            .iter()
            .map(|b| b.name().to_string())
            .collect(),
        limits: Some(d.config.limits.clone()),
    })
}

/// Stops every VM and exits (`aegis down`).
pub async fn shutdown(State(d): State<Arc<Daemon>>) -> StatusCode {
    tracing::info!("shutdown requested over the API");
    d.shutdown.cancel();
    StatusCode::ACCEPTED
}
