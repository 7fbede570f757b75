//! Apps and releases: `/v1/apps/...`.

use std::time::Duration;

use aegis_api::{App, AppServed, CreateApp, PublishRelease, Release, ServeApp};
use hyper::Method;

use crate::{encode_segment, Client, Error, Result};

/// How long publishing may take: building the layer of a large directory is disk-bound.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(600);

/// `/v1/apps/{name}{suffix}` with `name` percent-encoded.
fn app_path(name: &str, suffix: &str) -> String {
    format!("/v1/apps/{}{suffix}", encode_segment(name))
}

fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| Error::Protocol(format!("cannot encode the {what} request: {e}")))
}

impl Client {
    /// `POST /v1/apps`: bind a name to a pulled image.
    pub async fn create_app(&self, request: &CreateApp) -> Result<App> {
        let body = encode("app", request)?;
        self.call_json(Method::POST, "/v1/apps", Some(body)).await
    }

    /// `GET /v1/apps`.
    pub async fn list_apps(&self) -> Result<Vec<App>> {
        self.call_json(Method::GET, "/v1/apps", None).await
    }

    /// `GET /v1/apps/{name}`.
    pub async fn get_app(&self, name: &str) -> Result<App> {
        self.call_json(Method::GET, &app_path(name, ""), None).await
    }

    /// `DELETE /v1/apps/{name}`: stop and remove its instance, delete its releases.
    pub async fn delete_app(&self, name: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &app_path(name, ""), None)
            .await
    }

    /// `POST /v1/apps/{name}/releases`: publish the next release.
    pub async fn publish_release(&self, name: &str, request: &PublishRelease) -> Result<Release> {
        let body = encode("publish", request)?;
        self.clone()
            .with_timeout(PUBLISH_TIMEOUT)
            .call_json(Method::POST, &app_path(name, "/releases"), Some(body))
            .await
    }

    /// `GET /v1/apps/{name}/releases`, oldest first.
    pub async fn list_releases(&self, name: &str) -> Result<Vec<Release>> {
        self.call_json(Method::GET, &app_path(name, "/releases"), None)
            .await
    }

    /// `POST /v1/apps/{name}/serve`: serve a release (or switch to it).
    pub async fn serve_app(&self, name: &str, request: &ServeApp) -> Result<AppServed> {
        let body = encode("serve", request)?;
        self.call_json(Method::POST, &app_path(name, "/serve"), Some(body))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_their_segment() {
        assert_eq!(app_path("web", "/serve"), "/v1/apps/web/serve");
        assert_eq!(app_path("../tasks", ""), "/v1/apps/..%2Ftasks");
    }
}
