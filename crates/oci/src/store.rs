//! The content-addressed image store and the registry client.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ImageConfig;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::reference::{validate_digest, Reference};
use crate::unpack::{open_layer, unpack_layer, UnpackOptions};

/// Environment variable holding the registry user name for basic auth (with [`ENV_PASSWORD`]).
pub const ENV_USERNAME: &str = "AEGIS_REGISTRY_USERNAME";
/// Environment variable holding the registry password or token for basic auth.
pub const ENV_PASSWORD: &str = "AEGIS_REGISTRY_PASSWORD";

const ACCEPTED_MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// One layer of a stored image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// `sha256:<hex>` of the (compressed) layer blob.
    pub digest: String,
    /// The layer's media type (tar, tar+gzip or tar+zstd).
    pub media_type: String,
    /// Size of the blob in bytes.
    pub size: u64,
}

/// A pulled image, as recorded in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The canonical reference it was pulled as, e.g. `docker.io/library/alpine:3.21`.
    pub reference: String,
    /// Digest of the manifest list / OCI index the platform manifest was picked from, if any.
    pub index_digest: Option<String>,
    /// Digest of the (linux/amd64) image manifest.
    pub manifest_digest: String,
    /// Media type of that manifest.
    pub manifest_media_type: String,
    /// Digest of the image configuration blob.
    pub config_digest: String,
    /// The runtime configuration (entrypoint, cmd, env, ...).
    pub config: ImageConfig,
    /// The layers, bottom first.
    pub layers: Vec<LayerRecord>,
}

impl Image {
    /// Every blob this image references.
    pub fn blobs(&self) -> impl Iterator<Item = &str> {
        self.index_digest
            .iter()
            .map(String::as_str)
            .chain([self.manifest_digest.as_str(), self.config_digest.as_str()])
            .chain(self.layers.iter().map(|l| l.digest.as_str()))
    }

    /// Total size of the layer blobs.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// A content-addressed store of image blobs and image records.
///
/// Layout: `blobs/sha256/<hex>` (each blob once, named by its verified digest),
/// `images/<escaped reference>.json` (one record per pulled reference), `tmp/` (partial
/// downloads, renamed into place only once verified).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        let root = dir.as_ref().to_path_buf();
        for sub in ["blobs/sha256", "images", "tmp"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(|e| Error::io("create store directory", &p, e))?;
        }
        Ok(Store { root })
    }

    /// Takes the store lock: shared while pulling (pulls run side by side), exclusive while
    /// removing (so a removal never deletes a blob a pull in progress has found already
    /// stored). Released when the returned file is dropped.
    pub(crate) fn lock(&self, exclusive: bool) -> Result<fs::File> {
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open store lock", &path, e))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // SAFETY: the descriptor is valid for the duration of the call; flock has no memory
        // effects.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), op) } != 0 {
            return Err(Error::io("lock", &path, io::Error::last_os_error()));
        }
        Ok(file)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with `digest` (`sha256:<hex>`) lives (whether or not it is there).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = validate_digest(digest).map_err(|reason| Error::Unsupported {
            reference: digest.to_string(),
            what: "digest",
            detail: reason,
        })?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    /// Whether the blob is stored.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    fn record_path(&self, reference: &Reference) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", reference.escaped()))
    }

    /// The stored image for `reference`.
    pub fn get(&self, reference: &str) -> Result<Image> {
        let reference = Reference::parse(reference)?;
        let path = self.record_path(&reference);
        match fs::read(&path) {
            Ok(bytes) => parse_record(&path, &bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::ImageNotInStore {
                reference: reference.to_string(),
                store: self.root.clone(),
            }),
            Err(e) => Err(Error::io("read image record", &path, e)),
        }
    }

    /// All stored images, sorted by reference.
    pub fn list(&self) -> Result<Vec<Image>> {
        let dir = self.root.join("images");
        let mut images = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
            let path = entry.map_err(|e| Error::io("list", &dir, e))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes =
                    fs::read(&path).map_err(|e| Error::io("read image record", &path, e))?;
                images.push(parse_record(&path, &bytes)?);
            }
        }
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(images)
    }

    /// Removes the image record for `reference` and every blob of it that no other image
    /// references. Returns the removed image.
    pub fn remove(&self, reference: &str) -> Result<Image> {
        self.remove_keeping(reference, &HashSet::new())
    }

    /// [`Store::remove`], also keeping the blobs in `keep` (referenced from outside the
    /// store, e.g. by releases).
    pub fn remove_keeping(&self, reference: &str, keep: &HashSet<String>) -> Result<Image> {
        let _lock = self.lock(true)?;
        let image = self.get(reference)?;
        let path = self.record_path(&Reference::parse(reference)?);
        fs::remove_file(&path).map_err(|e| Error::io("remove image record", &path, e))?;
        let still_used: HashSet<String> = self
            .list()?
            .iter()
            .flat_map(|i| i.blobs().map(str::to_string).collect::<Vec<_>>())
            .collect();
        for digest in image.blobs() {
            if still_used.contains(digest) || keep.contains(digest) {
                continue;
            }
            let blob = self.blob_path(digest)?;
            match fs::remove_file(&blob) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove blob", &blob, e)),
            }
        }
        Ok(image)
    }

    /// Deletes every blob that no image record references and that is not in `keep`, plus
    /// leftovers in `tmp/` of interrupted downloads. Returns the bytes freed. Waits for pulls
    /// in progress (they hold the store lock shared).
    pub fn collect_garbage(&self, keep: &HashSet<String>) -> Result<u64> {
        let _lock = self.lock(true)?;
        let used: HashSet<String> = self
            .list()?
            .iter()
            .flat_map(|i| i.blobs().map(str::to_string).collect::<Vec<_>>())
            .collect();
        let mut freed = 0;
        let dir = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if used.contains(&digest) || keep.contains(&digest) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(entry.path()) {
                Ok(()) => freed += size,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove blob", entry.path(), e)),
            }
        }
        let tmp = self.root.join("tmp");
        if let Ok(entries) = fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(freed)
    }

    /// Applies the image's layers, bottom first, into `dest` (created if missing; normally
    /// empty).
    pub fn unpack(&self, image: &Image, dest: &Path) -> Result<()> {
        self.unpack_with(image, dest, &UnpackOptions::default())
    }

    /// [`Store::unpack`] with explicit options.
    pub fn unpack_with(&self, image: &Image, dest: &Path, options: &UnpackOptions) -> Result<()> {
        fs::create_dir_all(dest).map_err(|e| Error::io("create directory", dest, e))?;
        for layer in &image.layers {
            let path = self.blob_path(&layer.digest)?;
            if !path.is_file() {
                return Err(Error::BlobMissing {
                    reference: image.reference.clone(),
                    digest: layer.digest.clone(),
                    path,
                });
            }
            unpack_layer(open_layer(&path)?, dest, &layer.digest, options)?;
        }
        Ok(())
    }

    /// Unpacks one stored layer on its own into `dest` (created if missing), e.g. with
    /// [`crate::Whiteouts::Overlay`] to make a disk that overlayfs stacks.
    pub fn unpack_layer_to(
        &self,
        layer: &LayerRecord,
        dest: &Path,
        options: &UnpackOptions,
    ) -> Result<()> {
        fs::create_dir_all(dest).map_err(|e| Error::io("create directory", dest, e))?;
        let path = self.blob_path(&layer.digest)?;
        if !path.is_file() {
            return Err(Error::BlobMissing {
                reference: layer.digest.clone(),
                digest: layer.digest.clone(),
                path,
            });
        }
        unpack_layer(open_layer(&path)?, dest, &layer.digest, options)
    }

    /// Pulls `reference` from its registry into the store, reporting to `progress`.
    ///
    /// Loopback registries (`localhost`, `127.0.0.1`, `::1`) are spoken to over plain HTTP,
    /// all others over HTTPS. Anonymous bearer-token auth is used unless
    /// `AEGIS_REGISTRY_USERNAME` and `AEGIS_REGISTRY_PASSWORD` are set. Blobs already stored
    /// are not fetched again. The image record is written only once every blob is stored.
    pub async fn pull(&self, reference: &str, progress: &dyn Progress) -> Result<Image> {
        let result = self.pull_inner(reference, progress).await;
        progress.finish();
        result
    }

    async fn pull_inner(&self, reference: &str, progress: &dyn Progress) -> Result<Image> {
        let reference = Reference::parse(reference)?;
        let _lock = self.lock(false)?;
        let ctx = PullCtx::new(&reference);
        let oref = reference.to_oci();

        progress.set_message(&format!("resolving {reference}"));
        ctx.client
            .auth(&oref, &ctx.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| ctx.map_err(e))?;

        let (bytes, _) = ctx
            .client
            .pull_manifest_raw(&oref, &ctx.auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| ctx.map_err(e))?;
        let top_digest = sha256_digest(&bytes);
        if let Some(expected) = reference.digest() {
            if expected != top_digest {
                return Err(ctx.mismatch("manifest", expected, &top_digest));
            }
        }
        let top_type = media_type_of(&bytes);
        let mut index_digest = None;
        let (manifest_bytes, manifest_digest) = if is_index(&top_type, &bytes) {
            let index: OciImageIndex = parse_json("manifest list", &top_digest, &bytes)?;
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
                            m.platform.as_ref().map_or("unknown".into(), |p| {
                                format!("{}/{}", p.os, p.architecture)
                            })
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let digest = entry.digest.clone();
            let (platform_bytes, _) = ctx
                .client
                .pull_manifest_raw(
                    &oref.clone_with_digest(digest.clone()),
                    &ctx.auth,
                    ACCEPTED_MANIFESTS,
                )
                .await
                .map_err(|e| ctx.map_err(e))?;
            let actual = sha256_digest(&platform_bytes);
            if actual != digest {
                return Err(ctx.mismatch("manifest", &digest, &actual));
            }
            self.write_blob(&top_digest, &bytes, &ctx, "manifest list")?;
            index_digest = Some(top_digest);
            (platform_bytes, digest)
        } else {
            (bytes, top_digest)
        };
        let manifest_media_type = media_type_of(&manifest_bytes);
        if manifest_media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
            return Err(ctx.unsupported(
                "manifest",
                format!("{manifest_media_type} (Docker schema 1) is obsolete; push the image again with a current tool"),
            ));
        }
        let manifest: OciImageManifest =
            parse_json("image manifest", &manifest_digest, &manifest_bytes)?;
        for layer in &manifest.layers {
            if !is_supported_layer(&layer.media_type) {
                return Err(ctx.unsupported(
                    "layer",
                    format!(
                        "{} has media type {:?} (expected a tar, tar+gzip or tar+zstd layer)",
                        layer.digest, layer.media_type
                    ),
                ));
            }
        }

        let missing: u64 = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .filter(|d| !self.has_blob(&d.digest))
            .map(|d| d.size.max(0) as u64)
            .sum();
        progress.set_length(missing);
        progress.set_message(&format!("{reference}: config"));
        self.fetch_blob(&ctx, &manifest.config, "config", progress)
            .await?;
        let n = manifest.layers.len();
        for (i, layer) in manifest.layers.iter().enumerate() {
            progress.set_message(&format!(
                "{reference}: layer {}/{n} {}",
                i + 1,
                short(&layer.digest)
            ));
            self.fetch_blob(&ctx, layer, "layer", progress).await?;
        }

        let config_path = self.blob_path(&manifest.config.digest)?;
        let config_bytes =
            fs::read(&config_path).map_err(|e| Error::io("read image config", &config_path, e))?;
        let config = ImageConfig::from_json(&config_bytes).map_err(|e| Error::BadJson {
            what: "image config",
            path: manifest.config.digest.clone(),
            detail: e.to_string(),
        })?;
        if !config.os.is_empty() && (config.os != "linux" || config.architecture != "amd64") {
            tracing::warn!(%reference, os = %config.os, arch = %config.architecture, "image is not linux/amd64");
        }
        self.write_blob(&manifest_digest, &manifest_bytes, &ctx, "manifest")?;

        let image = Image {
            reference: reference.to_string(),
            index_digest,
            manifest_digest,
            manifest_media_type: manifest_media_type.to_string(),
            config_digest: manifest.config.digest.clone(),
            config,
            layers: manifest
                .layers
                .iter()
                .map(|l| LayerRecord {
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                    size: l.size.max(0) as u64,
                })
                .collect(),
        };
        let record = serde_json::to_vec_pretty(&image).expect("an image record serialises");
        let path = self.record_path(&reference);
        self.write_atomically(&path, &record)?;
        Ok(image)
    }

    /// Writes `bytes` to `path` through a temporary file and a rename.
    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp_dir = self.root.join("tmp");
        let mut tmp = tempfile::Builder::new()
            .prefix(".record-")
            .tempfile_in(&tmp_dir)
            .map_err(|e| Error::io("create a temporary file in", &tmp_dir, e))?;
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| Error::io("write", tmp.path(), e))?;
        tmp.persist(path)
            .map_err(|e| Error::io("rename into place", path, e.error))?;
        Ok(())
    }

    /// Stores an in-memory blob after checking its digest.
    fn write_blob(
        &self,
        digest: &str,
        bytes: &[u8],
        ctx: &PullCtx,
        what: &'static str,
    ) -> Result<()> {
        let actual = sha256_digest(bytes);
        if actual != digest {
            return Err(ctx.mismatch(what, digest, &actual));
        }
        let path = self.blob_path(digest)?;
        if path.is_file() {
            return Ok(());
        }
        self.write_atomically(&path, bytes)
    }

    /// Streams a blob from the registry into a temporary file, hashing as it goes; renames it
    /// into `blobs/` only if it hashes to its digest.
    async fn fetch_blob(
        &self,
        ctx: &PullCtx,
        desc: &OciDescriptor,
        what: &'static str,
        progress: &dyn Progress,
    ) -> Result<()> {
        let path = self.blob_path(&desc.digest)?;
        if path.is_file() {
            return Ok(());
        }
        let tmp_dir = self.root.join("tmp");
        let mut tmp = tempfile::Builder::new()
            .prefix(".blob-")
            .tempfile_in(&tmp_dir)
            .map_err(|e| Error::io("create a temporary file in", &tmp_dir, e))?;
        let mut stream = ctx
            .client
            .pull_blob_stream(&ctx.oref, desc)
            .await
            .map_err(|e| ctx.map_err(e))?;
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                // oci-client's own verification fails at the end of the stream; our hash
                // (over the same bytes) reports the mismatch below.
                Err(e) if is_digest_error(&e) => break,
                Err(e) => {
                    return Err(Error::Registry {
                        reference: ctx.reference.to_string(),
                        registry: ctx.reference.registry().to_string(),
                        detail: format!("download of {what} {} failed: {e}", desc.digest),
                    })
                }
            };
            hasher.update(&chunk);
            received += chunk.len() as u64;
            tmp.write_all(&chunk)
                .map_err(|e| Error::io("write", tmp.path(), e))?;
            progress.inc(chunk.len() as u64);
        }
        let actual = format!("sha256:{:x}", hasher.finalize());
        if actual != desc.digest {
            // `tmp` is deleted when dropped: nothing of the blob is kept.
            return Err(ctx.mismatch(what, &desc.digest, &actual));
        }
        if desc.size >= 0 && received != desc.size as u64 {
            return Err(Error::Registry {
                reference: ctx.reference.to_string(),
                registry: ctx.reference.registry().to_string(),
                detail: format!(
                    "{what} {} is {received} bytes but the manifest says {}",
                    desc.digest, desc.size
                ),
            });
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io("sync", tmp.path(), e))?;
        tmp.persist(&path)
            .map_err(|e| Error::io("rename into place", &path, e.error))?;
        Ok(())
    }
}

/// Per-pull registry state.
struct PullCtx {
    reference: Reference,
    oref: oci_client::Reference,
    client: Client,
    auth: RegistryAuth,
}

impl PullCtx {
    fn new(reference: &Reference) -> Self {
        let protocol = if reference.is_loopback_registry() {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            read_timeout: Some(std::time::Duration::from_secs(300)),
            ..ClientConfig::default()
        });
        let auth = match (std::env::var(ENV_USERNAME), std::env::var(ENV_PASSWORD)) {
            (Ok(user), Ok(password)) if !user.is_empty() => RegistryAuth::Basic(user, password),
            _ => RegistryAuth::Anonymous,
        };
        PullCtx {
            reference: reference.clone(),
            oref: reference.to_oci(),
            client,
            auth,
        }
    }

    fn mismatch(&self, what: &'static str, expected: &str, actual: &str) -> Error {
        Error::DigestMismatch {
            reference: self.reference.to_string(),
            what,
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }

    fn unsupported(&self, what: &'static str, detail: String) -> Error {
        Error::Unsupported {
            reference: self.reference.to_string(),
            what,
            detail,
        }
    }

    fn map_err(&self, e: OciDistributionError) -> Error {
        let reference = self.reference.to_string();
        let registry = self.reference.registry().to_string();
        let detail = e.to_string();
        match &e {
            OciDistributionError::RequestError(re) if re.is_connect() || re.is_timeout() => {
                Error::Unreachable {
                    reference,
                    registry,
                    detail: error_chain(re),
                }
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let messages = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    Error::NotFound {
                        reference,
                        registry,
                        detail: messages,
                    }
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    Error::Unauthorized {
                        reference,
                        registry,
                        detail: messages,
                    }
                } else {
                    Error::Registry {
                        reference,
                        registry,
                        detail: messages,
                    }
                }
            }
            OciDistributionError::ServerError { code: 404, .. }
            | OciDistributionError::ImageManifestNotFoundError(_) => Error::NotFound {
                reference,
                registry,
                detail,
            },
            OciDistributionError::ServerError {
                code: 401 | 403, ..
            }
            | OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => Error::Unauthorized {
                reference,
                registry,
                detail,
            },
            OciDistributionError::DigestError(_) => Error::DigestMismatch {
                reference,
                what: "manifest",
                expected: "the digest the registry announced".into(),
                actual: detail,
            },
            OciDistributionError::RequestError(re) => Error::Registry {
                reference,
                registry,
                detail: error_chain(re),
            },
            _ => Error::Registry {
                reference,
                registry,
                detail,
            },
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn is_digest_error(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>())
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

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

fn parse_record(path: &Path, bytes: &[u8]) -> Result<Image> {
    serde_json::from_slice(bytes).map_err(|e| Error::BadJson {
        what: "image record",
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}
