//! OCI images for Aegis.
//!
//! * [`Reference`] parses image references the way `docker pull` does
//!   (`alpine:3.21` is `docker.io/library/alpine:3.21`).
//! * [`Store`] is a content-addressed blob store on disk: [`Store::pull`] fetches an image from any
//!   OCI / Docker v2 registry, verifying every blob's sha256 while streaming it to a temporary file
//!   (a corrupted blob is rejected and never stored); [`Store::unpack`] applies the layers in order
//!   into a directory, honouring whiteouts and refusing path traversal; [`Store::list`] and
//!   [`Store::remove`] manage the pulled images.
//! * [`ImageConfig`] is the part of the image configuration that `docker run` honours.
//!
//! See `docs/IMAGES.md`.

mod config;
mod dir_layer;
mod error;
mod progress;
mod reference;
mod store;
mod unpack;

pub use config::ImageConfig;
pub use dir_layer::DIR_LAYER_MEDIA_TYPE;
pub use error::{Error, Result};
pub use progress::{NoProgress, Progress};
pub use reference::{Reference, DEFAULT_REGISTRY};
pub use store::{Image, LayerRecord, Store, ENV_PASSWORD, ENV_USERNAME};
pub use unpack::{unpack_layer, UnpackOptions, Whiteouts, OVERLAY_OPAQUE_XATTR};
