//! Pulling an image from a registry into the store, every blob verified and bounded while it
//! streams.

use std::fs;
use std::io::Write;

use aegis_api::human_bytes;
use futures::StreamExt;
use oci_client::manifest::OciDescriptor;
use sha2::{Digest, Sha256};

use crate::config::ImageConfig;
use crate::error::{Error, Result};
use crate::limits::MAX_CONFIG_BYTES;
use crate::manifest::{parse_image_manifest, platform_of_index};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::session::{is_digest_error, Session};
use crate::store::{Image, LayerRecord, Store};

const ACCEPTED_MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

impl Store {
    /// Pulls `reference` from its registry into the store, reporting to `progress`.
    ///
    /// Loopback registries (`localhost`, `127.0.0.1`, `::1`) are spoken to over plain HTTP,
    /// all others over HTTPS. Anonymous bearer-token auth is used unless the credentials file
    /// or the `AEGIS_REGISTRY_*` variables hold a login for exactly this registry. Blobs
    /// already stored are not fetched again; the store's [`crate::Limits`] bound each blob
    /// while it streams. The image record is written only once every blob is stored.
    pub async fn pull(&self, reference: &str, progress: &dyn Progress) -> Result<Image> {
        let result = self.pull_inner(reference, progress).await;
        progress.finish();
        result
    }

    async fn pull_inner(&self, reference: &str, progress: &dyn Progress) -> Result<Image> {
        let reference = Reference::parse(reference)?;
        let _lock = self.lock(false)?;
        progress.set_message(&format!("resolving {reference}"));
        let mut ctx = Session::open(&reference, &self.credentials).await?;
        let oref = reference.to_oci();

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
        let mut index_digest = None;
        let (manifest_bytes, manifest_digest) =
            match platform_of_index(&reference.to_string(), &top_digest, &bytes)? {
                Some(digest) => {
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
                }
                None => (bytes, top_digest),
            };
        let (manifest_media_type, manifest) =
            parse_image_manifest(&reference.to_string(), &manifest_digest, &manifest_bytes)?;

        // Refuse what the manifest itself declares too large before downloading anything.
        let config_cap = self.limits.max_blob_bytes.min(MAX_CONFIG_BYTES);
        for (desc, what, cap) in std::iter::once((&manifest.config, "config", config_cap)).chain(
            manifest
                .layers
                .iter()
                .map(|l| (l, "layer", self.limits.max_blob_bytes)),
        ) {
            if desc.size > 0 && desc.size as u64 > cap {
                return Err(over_limit(
                    &ctx,
                    desc,
                    what,
                    cap,
                    format!("{} declared", human_bytes(desc.size as u64)),
                ));
            }
        }
        let missing: u64 = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .filter(|d| !self.has_blob(&d.digest))
            .fold(0u64, |sum, d| sum.saturating_add(d.size.max(0) as u64));
        progress.set_length(missing);
        progress.set_message(&format!("{reference}: config"));
        self.fetch_blob(&mut ctx, &manifest.config, "config", config_cap, progress)
            .await?;
        let n = manifest.layers.len();
        for (i, layer) in manifest.layers.iter().enumerate() {
            progress.set_message(&format!(
                "{reference}: layer {}/{n} {}",
                i + 1,
                short(&layer.digest)
            ));
            self.fetch_blob(
                &mut ctx,
                layer,
                "layer",
                self.limits.max_blob_bytes,
                progress,
            )
            .await?;
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

    /// Stores an in-memory blob after checking its digest.
    fn write_blob(
        &self,
        digest: &str,
        bytes: &[u8],
        ctx: &Session,
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
    /// into `blobs/` only if it hashes to its digest. The download stops at the first byte past
    /// `cap` or past the size the manifest declares, and the temporary file is removed.
    async fn fetch_blob(
        &self,
        ctx: &mut Session,
        desc: &OciDescriptor,
        what: &'static str,
        cap: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        let path = self.blob_path(&desc.digest)?;
        if path.is_file() {
            return Ok(());
        }
        let tmp_dir = self.root().join("tmp");
        let mut tmp = tempfile::Builder::new()
            .prefix(".blob-")
            .tempfile_in(&tmp_dir)
            .map_err(|e| Error::io("create a temporary file in", &tmp_dir, e))?;
        ctx.renew().await?;
        let declared = u64::try_from(desc.size).ok();
        let over_declared = || Error::BlobOverDeclared {
            reference: ctx.reference.to_string(),
            what,
            digest: desc.digest.clone(),
            declared: declared.unwrap_or_default(),
        };
        let mut stream = ctx
            .client
            .pull_blob_stream(&ctx.oref, desc)
            .await
            .map_err(|e| ctx.map_err(e))?;
        if let Some(length) = stream.content_length {
            if declared.is_some_and(|d| length > d) {
                return Err(over_declared());
            }
            if length > cap {
                return Err(over_limit(
                    ctx,
                    desc,
                    what,
                    cap,
                    format!("{} announced", human_bytes(length)),
                ));
            }
        }
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
            received = received.saturating_add(chunk.len() as u64);
            if declared.is_some_and(|d| received > d) {
                return Err(over_declared());
            }
            if received > cap {
                return Err(over_limit(
                    ctx,
                    desc,
                    what,
                    cap,
                    format!("over {}", human_bytes(cap)),
                ));
            }
            hasher.update(&chunk);
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

fn over_limit(
    ctx: &Session,
    desc: &OciDescriptor,
    what: &'static str,
    cap: u64,
    size: String,
) -> Error {
    Error::BlobOverLimit {
        reference: ctx.reference.to_string(),
        what,
        digest: desc.digest.clone(),
        limit: cap,
        size,
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    // The digest comes from the manifest and is not validated yet: never slice mid-character.
    hex.get(..12).unwrap_or(hex)
}
