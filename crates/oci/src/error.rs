//! Errors of the image store: each says what happened, to what, and what to do.

use std::io;
use std::path::PathBuf;

/// Result of image store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while pulling, storing or unpacking an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference could not be parsed.
    #[error("invalid image reference {reference:?}: {reason} (expected e.g. `alpine:3.21`, `registry:5000/team/app:tag` or `name@sha256:<64 hex>`)")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The registry does not know the repository, tag or digest.
    #[error("image {reference} not found in registry {registry}: {detail} (check the repository name and tag)")]
    NotFound {
        /// The canonical reference.
        reference: String,
        /// The registry host.
        registry: String,
        /// What the registry said.
        detail: String,
    },

    /// The registry could not be reached at all.
    #[error("cannot reach registry {registry} to pull {reference}: {detail} (check the registry address, port and network)")]
    Unreachable {
        /// The canonical reference.
        reference: String,
        /// The registry host.
        registry: String,
        /// The underlying error.
        detail: String,
    },

    /// The registry refused access.
    #[error("registry {registry} refused access to {reference}: {detail} (for a private image put a login for {registry} in the credentials file, see docs/IMAGES.md)")]
    Unauthorized {
        /// The canonical reference.
        reference: String,
        /// The registry host.
        registry: String,
        /// What the registry said.
        detail: String,
    },

    /// The registry answered with something unexpected.
    #[error("registry {registry} failed while pulling {reference}: {detail}")]
    Registry {
        /// The canonical reference.
        reference: String,
        /// The registry host.
        registry: String,
        /// The underlying error.
        detail: String,
    },

    /// A blob's content does not hash to its digest: it was rejected and not stored.
    #[error("digest mismatch for {what} {expected} of {reference}: the received content hashes to {actual}; it was rejected and not stored (the registry or a proxy served corrupted data; retry the pull, and check the registry's storage if it persists)")]
    DigestMismatch {
        /// The canonical reference.
        reference: String,
        /// What the blob is (manifest, config, layer).
        what: &'static str,
        /// The digest the manifest promised.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },

    /// A login could not be used safely, or the credentials file is unusable.
    #[error("will not send the credentials for registry {registry}: {reason}")]
    UnsafeLogin {
        /// The registry host the login belongs to.
        registry: String,
        /// Why sending them was refused.
        reason: String,
    },

    /// The credentials file cannot be read or parsed.
    #[error("cannot use the registry credentials file {path}: {detail} (expected the Docker `config.json` shape, `{{\"auths\": {{\"host[:port]\": {{\"auth\": \"<base64 of user:password>\"}}}}}}`)")]
    CredentialsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// A blob is larger than the store's blob size limit.
    #[error("{what} {digest} of {reference} is larger than the blob size limit of {} ({size}); nothing was stored (if the image is trusted, raise `max_blob_bytes` in the image limits)", aegis_api::human_bytes(*.limit))]
    BlobOverLimit {
        /// The canonical reference.
        reference: String,
        /// What the blob is (config, layer).
        what: &'static str,
        /// The blob digest.
        digest: String,
        /// The limit, in bytes.
        limit: u64,
        /// What is known of its size (declared, or at least received).
        size: String,
    },

    /// The registry sent more bytes for a blob than its manifest declares.
    #[error("registry sent more than the {declared} bytes the manifest declares for {what} {digest} of {reference}; the download was stopped and nothing was stored (the registry or a proxy is broken or hostile)")]
    BlobOverDeclared {
        /// The canonical reference.
        reference: String,
        /// What the blob is (config, layer).
        what: &'static str,
        /// The blob digest.
        digest: String,
        /// The size the manifest declares.
        declared: u64,
    },

    /// A layer unpacks to more than the unpacked-layer limit (e.g. a decompression bomb).
    #[error("layer {layer} unpacks to more than the limit of {} of uncompressed data; unpacking stopped and its partial output was removed (a decompression bomb, or a very large layer: if the image is trusted, raise `max_layer_unpacked_bytes` in the image limits)", aegis_api::human_bytes(*.limit))]
    LayerOverLimit {
        /// The layer digest (or a description).
        layer: String,
        /// The limit, in bytes.
        limit: u64,
    },

    /// A manifest list / OCI index has no linux/amd64 image.
    #[error("image {reference} has no linux/amd64 variant (platforms offered: {available}); Aegis guests are linux/amd64")]
    NoPlatform {
        /// The canonical reference.
        reference: String,
        /// The platforms the index offers.
        available: String,
    },

    /// A manifest, config or layer of a kind this store cannot handle.
    #[error("unsupported {what} in {reference}: {detail}")]
    Unsupported {
        /// The canonical reference.
        reference: String,
        /// What is unsupported (manifest, layer, config, digest algorithm).
        what: &'static str,
        /// The details.
        detail: String,
    },

    /// The image was never pulled into this store.
    #[error("image {reference} is not in the store at {store} (pull it first)")]
    ImageNotInStore {
        /// The canonical reference.
        reference: String,
        /// The store directory.
        store: PathBuf,
    },

    /// A blob an image record refers to is missing from the store.
    #[error("blob {digest} of image {reference} is missing from the store ({path}); remove the image and pull it again")]
    BlobMissing {
        /// The canonical reference.
        reference: String,
        /// The blob digest.
        digest: String,
        /// Where it should be.
        path: PathBuf,
    },

    /// A layer contains an entry that would write outside the destination or is otherwise unsafe.
    #[error("layer {layer} has an unsafe entry {entry:?}: {reason}; refusing to unpack it (the image is malicious or broken)")]
    UnsafeEntry {
        /// The layer digest (or a description of the layer).
        layer: String,
        /// The entry's path in the layer.
        entry: String,
        /// Why it is refused.
        reason: String,
    },

    /// A layer archive could not be read.
    #[error("layer {layer} is not a valid tar archive: {detail}")]
    BadLayer {
        /// The layer digest (or a description).
        layer: String,
        /// The underlying error.
        detail: String,
    },

    /// A JSON document in the store or from the registry could not be parsed.
    #[error("cannot parse {what} {path}: {detail}")]
    BadJson {
        /// What the document is.
        what: &'static str,
        /// Where it is (a path or a digest).
        path: String,
        /// The parse error.
        detail: String,
    },

    /// The directory a layer is built from cannot be used.
    #[error("cannot build a layer from {dir}: {detail}")]
    SourceDir {
        /// The directory (or the file in it) at fault.
        dir: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// A directory to build a layer from holds something a layer must not carry.
    #[error("cannot put {path} into a layer: it is a {kind}; only regular files, directories and symlinks can be published (remove it or move it out of the directory)")]
    UnsupportedFile {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: String,
    },

    /// The guest path a directory layer is placed under is not usable.
    #[error("invalid destination {dest:?} for a directory layer: {reason}")]
    BadDestination {
        /// The destination as given.
        dest: String,
        /// Why it was refused.
        reason: String,
    },

    /// A filesystem operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done (e.g. "create", "rename").
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
