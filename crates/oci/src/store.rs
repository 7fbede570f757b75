//! The content-addressed image store: blobs, image records, removal and unpacking. Pulling
//! is in `pull.rs`.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ImageConfig;
use crate::credentials::CredentialSource;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::reference::{validate_digest, Reference};
use crate::unpack::{open_layer, unpack_layer, UnpackOptions};

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
    pub(crate) limits: Limits,
    pub(crate) credentials: CredentialSource,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        let root = dir.as_ref().to_path_buf();
        for sub in ["blobs/sha256", "images", "tmp"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(|e| Error::io("create store directory", &p, e))?;
        }
        Ok(Store {
            root,
            limits: Limits::default(),
            credentials: CredentialSource::default(),
        })
    }

    /// Applies `limits` to the pulls and unpacks of this store (instead of
    /// [`Limits::default`]).
    pub fn with_limits(mut self, limits: Limits) -> Store {
        self.limits = limits;
        self
    }

    /// Takes registry logins from the credentials file at `path` (Docker `config.json`
    /// shape, read at each pull; a missing file holds none), unless `AEGIS_REGISTRY_AUTH_FILE`
    /// names another file.
    pub fn with_credentials_file(mut self, path: impl Into<PathBuf>) -> Store {
        self.credentials.file = Some(path.into());
        self
    }

    /// The limits this store applies.
    pub fn limits(&self) -> &Limits {
        &self.limits
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

    pub(crate) fn record_path(&self, reference: &Reference) -> PathBuf {
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

    /// [`Store::unpack`] with explicit options (its `max_unpacked_bytes` is the store's
    /// [`Limits::max_layer_unpacked_bytes`]). On failure `dest` is removed if this call
    /// created it.
    pub fn unpack_with(&self, image: &Image, dest: &Path, options: &UnpackOptions) -> Result<()> {
        let options = self.capped(options);
        self.unpack_removing_on_failure(dest, |dest| {
            for layer in &image.layers {
                let path = self.blob_path(&layer.digest)?;
                if !path.is_file() {
                    return Err(Error::BlobMissing {
                        reference: image.reference.clone(),
                        digest: layer.digest.clone(),
                        path,
                    });
                }
                unpack_layer(open_layer(&path)?, dest, &layer.digest, &options)?;
            }
            Ok(())
        })
    }

    fn capped(&self, options: &UnpackOptions) -> UnpackOptions {
        UnpackOptions {
            max_unpacked_bytes: self.limits.max_layer_unpacked_bytes,
            ..options.clone()
        }
    }

    /// Runs `unpack` into `dest`, creating it if missing; if it fails, removes `dest` when
    /// it was created here (a partial tree must not pass for an unpacked image).
    fn unpack_removing_on_failure(
        &self,
        dest: &Path,
        unpack: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let created = !dest.exists();
        fs::create_dir_all(dest).map_err(|e| Error::io("create directory", dest, e))?;
        let result = unpack(dest);
        if result.is_err() && created {
            if let Err(e) = fs::remove_dir_all(dest) {
                tracing::warn!(dir = %dest.display(), error = %e, "cannot remove a partial unpack");
            }
        }
        result
    }

    /// Unpacks one stored layer on its own into `dest` (created if missing), e.g. with
    /// [`crate::Whiteouts::Overlay`] to make a disk that overlayfs stacks. The store's
    /// [`Limits::max_layer_unpacked_bytes`] applies; on failure `dest` is removed if this
    /// call created it.
    pub fn unpack_layer_to(
        &self,
        layer: &LayerRecord,
        dest: &Path,
        options: &UnpackOptions,
    ) -> Result<()> {
        let options = self.capped(options);
        let path = self.blob_path(&layer.digest)?;
        if !path.is_file() {
            return Err(Error::BlobMissing {
                reference: layer.digest.clone(),
                digest: layer.digest.clone(),
                path,
            });
        }
        self.unpack_removing_on_failure(dest, |dest| {
            unpack_layer(open_layer(&path)?, dest, &layer.digest, &options)
        })
    }

    /// Writes `bytes` to `path` through a temporary file and a rename.
    pub(crate) fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<()> {
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
}

fn parse_record(path: &Path, bytes: &[u8]) -> Result<Image> {
    serde_json::from_slice(bytes).map_err(|e| Error::BadJson {
        what: "image record",
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}
