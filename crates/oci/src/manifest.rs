//! Reading the manifest documents a registry sends: an index (or Docker manifest list) is
//! resolved to its linux/amd64 entry, and an image manifest is checked for what Aegis can
//! unpack. Everything here takes untrusted bytes and must only ever return an error.

use oci_client::manifest::{OciImageIndex, OciImageManifest};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The media type a document declares ("" when it declares none or is not JSON).
fn media_type_of(bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Versioned {
        #[serde(rename = "mediaType", default)]
        media_type: String,
    }
    serde_json::from_slice::<Versioned>(bytes)
        .map(|v| v.media_type)
        .unwrap_or_default()
}

fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        manifests: Option<serde_json::Value>,
    }
    media_type.contains("index") && media_type.contains("oci")
        || media_type.contains("manifest.list")
        || (media_type.is_empty()
            && serde_json::from_slice::<Probe>(bytes).is_ok_and(|p| p.manifests.is_some()))
}

fn is_supported_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar"
    )
}

fn parse_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    digest: &str,
    bytes: &[u8],
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::BadJson {
        what,
        path: digest.to_string(),
        detail: e.to_string(),
    })
}

/// If `bytes` is an index or manifest list, the digest of its linux/amd64 manifest (or
/// [`Error::NoPlatform`] listing what it offers); `None` if it is not an index.
pub(crate) fn platform_of_index(
    reference: &str,
    digest: &str,
    bytes: &[u8],
) -> Result<Option<String>> {
    if !is_index(&media_type_of(bytes), bytes) {
        return Ok(None);
    }
    let index: OciImageIndex = parse_json("manifest list", digest, bytes)?;
    let entry = index
        .manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .ok_or_else(|| Error::NoPlatform {
            reference: reference.to_string(),
            available: index
                .manifests
                .iter()
                .map(|m| {
                    m.platform
                        .as_ref()
                        .map_or("unknown".into(), |p| format!("{}/{}", p.os, p.architecture))
                })
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    Ok(Some(entry.digest.clone()))
}

/// Parses an image manifest and checks that Aegis can use it: not Docker schema 1, and only
/// tar, tar+gzip and tar+zstd layers. Returns its media type and the manifest.
pub(crate) fn parse_image_manifest(
    reference: &str,
    digest: &str,
    bytes: &[u8],
) -> Result<(String, OciImageManifest)> {
    let unsupported = |what, detail| Error::Unsupported {
        reference: reference.to_string(),
        what,
        detail,
    };
    let media_type = media_type_of(bytes);
    if media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
        return Err(unsupported(
            "manifest",
            format!("{media_type} (Docker schema 1) is obsolete; push the image again with a current tool"),
        ));
    }
    let manifest: OciImageManifest = parse_json("image manifest", digest, bytes)?;
    for layer in &manifest.layers {
        if !is_supported_layer(&layer.media_type) {
            return Err(unsupported(
                "layer",
                format!(
                    "{} has media type {:?} (expected a tar, tar+gzip or tar+zstd layer)",
                    layer.digest, layer.media_type
                ),
            ));
        }
    }
    Ok((media_type, manifest))
}
