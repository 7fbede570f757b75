//! OCI images for Aegis.
//!
//! * [`Reference`] parses image references the way `docker pull` does
//!   (`alpine:3.21` is `docker.io/library/alpine:3.21`).
//! * [`Store`] is a content-addressed blob store on disk: [`Store::pull`] fetches an image from any
//!   OCI / Docker v2 registry, verifying every blob's sha256 while streaming it to a temporary file
//!   (a corrupted blob is rejected and never stored); [`Store::unpack`] applies the layers in order
//!   into a directory, honouring whiteouts and refusing path traversal; [`Store::list`] and
//!   [`Store::remove`] manage the pulled images.
//! * [`Credentials`] are registry logins, each offered only to the registry it names;
//!   [`Limits`] bound blob downloads and layer unpacking while they stream.
//! * [`ImageConfig`] is the part of the image configuration that `docker run` honours.
//!
//! See `docs/IMAGES.md`.

mod config;
mod credentials;
mod dir_layer;
mod error;
mod limits;
mod login;
mod manifest;
mod progress;
mod pull;
mod reference;
mod session;
mod store;
mod unpack;

pub use config::ImageConfig;
pub use credentials::{
    Credentials, Login, ENV_AUTH_FILE, ENV_PASSWORD, ENV_REGISTRY, ENV_USERNAME,
};
pub use dir_layer::DIR_LAYER_MEDIA_TYPE;
pub use error::{Error, Result};
pub use limits::{Limits, DEFAULT_MAX_BLOB_BYTES, DEFAULT_MAX_LAYER_UNPACKED_BYTES};
pub use progress::{NoProgress, Progress};
pub use reference::{Reference, DEFAULT_REGISTRY};
pub use store::{Image, LayerRecord, Store};
pub use unpack::{unpack_layer, UnpackOptions, Whiteouts, OVERLAY_OPAQUE_XATTR};

/// Entry points for the fuzz targets in `crates/oci/fuzz`: each runs the code a pull or an
/// unpack runs on untrusted bytes. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// Reads `bytes` as the top-level document of a pull (index or image manifest).
    pub fn manifest(bytes: &[u8]) {
        let digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        if let Ok(None) = crate::manifest::platform_of_index("fuzz", digest, bytes) {
            let _ = crate::manifest::parse_image_manifest("fuzz", digest, bytes);
        }
    }

    /// Reads `bytes` as an image configuration.
    pub fn config(bytes: &[u8]) {
        let _ = crate::ImageConfig::from_json(bytes);
    }

    /// Reads `bytes` as a credentials file and, as text, as a `WWW-Authenticate` header.
    pub fn auth(bytes: &[u8]) {
        let _ = crate::Credentials::parse(bytes);
        if let Ok(text) = std::str::from_utf8(bytes) {
            let _ = crate::login::parse_challenges(text);
        }
    }

    /// Unpacks the layer blob at `path` (tar, tar+gzip or tar+zstd) into `root` as a pull's
    /// disk build would, capped at `cap` bytes of tar stream.
    pub fn unpack_file(
        path: &std::path::Path,
        root: &std::path::Path,
        overlay: bool,
        cap: u64,
    ) -> crate::Result<()> {
        let options = crate::UnpackOptions {
            preserve_ownership: false,
            whiteouts: if overlay {
                crate::Whiteouts::Overlay
            } else {
                crate::Whiteouts::Apply
            },
            max_unpacked_bytes: cap,
        };
        crate::unpack::unpack_layer(crate::unpack::open_layer(path)?, root, "fuzz", &options)
    }
}
