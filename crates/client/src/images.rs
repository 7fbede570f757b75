//! Images: `/v1/images/...`.

use aegis_api::{ImageInfo, PullEvent, PullImage};
use hyper::Method;

use crate::output::NdjsonStream;
use crate::{encode_segment, Client, Error, Result};

/// `/v1/images/<reference>`: each `/`-separated part of the reference percent-encoded.
fn image_path(reference: &str) -> String {
    let parts: Vec<String> = reference.split('/').map(encode_segment).collect();
    format!("/v1/images/{}", parts.join("/"))
}

impl Client {
    /// `POST /v1/images/pull`: the pull's progress, ending with [`PullEvent::Done`] or
    /// [`PullEvent::Error`].
    pub async fn pull_image(&self, reference: &str) -> Result<NdjsonStream<PullEvent>> {
        let body = serde_json::to_vec(&PullImage {
            reference: reference.to_string(),
        })
        .map_err(|e| Error::Protocol(format!("cannot encode the pull request: {e}")))?;
        let (body, conn) = self
            .open_stream_with(Method::POST, "/v1/images/pull", Some(body))
            .await?;
        Ok(NdjsonStream::new(body, conn, self.socket.clone()))
    }

    /// `GET /v1/images`: built-in and pulled images.
    pub async fn list_images(&self) -> Result<Vec<ImageInfo>> {
        self.call_json(Method::GET, "/v1/images", None).await
    }

    /// `GET /v1/images/{reference}`.
    pub async fn get_image(&self, reference: &str) -> Result<ImageInfo> {
        self.call_json(Method::GET, &image_path(reference), None)
            .await
    }

    /// `DELETE /v1/images/{reference}`: refused (409) while an instance or a running task
    /// uses the image.
    pub async fn delete_image(&self, reference: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &image_path(reference), None)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_keep_their_slashes() {
        assert_eq!(
            image_path("127.0.0.1:5000/test/app:v1"),
            "/v1/images/127.0.0.1%3A5000/test/app%3Av1"
        );
    }
}
