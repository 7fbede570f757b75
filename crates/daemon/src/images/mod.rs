//! OCI images in the daemon: the content-addressed store (`<home>/images`), one read-only
//! EROFS disk per layer (`<home>/layers`), what a VM boots from an image reference, and
//! garbage collection that never removes what something still references.
//!
//! Disk layers are canonical state. A layer's blob, verified by its digest, is what is kept;
//! its disk is derived from it: made once, named by the digest, never changed afterwards,
//! shared by every image, release and VM that stacks it, and made again from the blob if it
//! is ever removed.

mod config;
pub mod pull;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use aegis_api::{AegisHome, ApiError, ErrorCode, ImageInfo, ImageKind};
use aegis_image::LayerDiskKind;
use aegis_oci::{Image, LayerRecord, Store};
use sha2::{Digest, Sha256};

use crate::api::internal;
use crate::daemon::Daemon;
use crate::guest::{BootAssets, GuestAssets};

pub use config::{apply_config, apply_config_to, ProcessDefaults};

/// Most disks an image's layers may take in one VM. The QEMU microvm machine has 24
/// virtio-mmio slots; the scratch disk, the guest channel and workspace shares need some.
/// An image with more layers has its bottom layers flattened into one disk.
pub const MAX_LAYER_DISKS: usize = 16;

/// What a VM boots: its disk layers and, for an OCI image, the image's run configuration.
#[derive(Debug, Clone)]
pub struct Root {
    pub assets: BootAssets,
    pub config: Option<aegis_oci::ImageConfig>,
}

pub struct Images {
    store: Store,
    disks: PathBuf,
    /// Held (shared) while something is being made that GC must not see half-done: a disk
    /// build, a pull, a publish between writing its blob and recording its release. GC holds
    /// it exclusively.
    gc: tokio::sync::RwLock<()>,
    /// Disk builds are CPU- and disk-bound: at most one per host core at a time.
    build_slots: tokio::sync::Semaphore,
    /// One lock per disk being made, so that two requests for the same layer build it once.
    building: parking_lot::Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

/// How the disks of an image's layers are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DiskPlan {
    Single(LayerRecord),
    Flattened(Vec<LayerRecord>),
}

impl DiskPlan {
    fn file_name(&self) -> PathBuf {
        match self {
            DiskPlan::Single(layer) => aegis_image::layer_disk_name(&layer.digest),
            DiskPlan::Flattened(layers) => {
                let mut h = Sha256::new();
                for l in layers {
                    h.update(l.digest.as_bytes());
                    h.update(b"\n");
                }
                PathBuf::from(format!("flat-{:x}.erofs", h.finalize()))
            }
        }
    }
}

fn plan(layers: &[LayerRecord]) -> Vec<DiskPlan> {
    if layers.len() <= MAX_LAYER_DISKS {
        return layers.iter().cloned().map(DiskPlan::Single).collect();
    }
    let flat = layers.len() - (MAX_LAYER_DISKS - 1);
    std::iter::once(DiskPlan::Flattened(layers[..flat].to_vec()))
        .chain(layers[flat..].iter().cloned().map(DiskPlan::Single))
        .collect()
}

/// Maps a store error to an API error a user can act on.
pub fn store_error(e: aegis_oci::Error) -> ApiError {
    use aegis_oci::Error as E;
    let code = match &e {
        E::InvalidReference { .. } => ErrorCode::InvalidRequest,
        E::NotFound { .. } | E::ImageNotInStore { .. } => ErrorCode::NotFound,
        E::Unreachable { .. } | E::Unauthorized { .. } | E::CredentialsFile { .. } => {
            ErrorCode::Unavailable
        }
        E::DigestMismatch { .. }
        | E::Unsupported { .. }
        | E::NoPlatform { .. }
        | E::UnsafeLogin { .. }
        | E::BlobOverLimit { .. }
        | E::BlobOverDeclared { .. }
        | E::LayerOverLimit { .. } => ErrorCode::InvalidRequest,
        _ => ErrorCode::Internal,
    };
    ApiError::new(code, e.to_string())
}

impl Images {
    /// Opens the image store under `home` with the default [`aegis_oci::Limits`].
    pub fn open(home: &AegisHome) -> anyhow::Result<Images> {
        Images::open_with(home, aegis_oci::Limits::default())
    }

    /// Opens the image store under `home`: pulls and unpacks are bounded by `limits`, and
    /// registry logins come from [`AegisHome::registry_auth_file`] (see docs/IMAGES.md).
    pub fn open_with(home: &AegisHome, limits: aegis_oci::Limits) -> anyhow::Result<Images> {
        let store = Store::open(home.image_store_dir())?
            .with_limits(limits)
            .with_credentials_file(home.registry_auth_file());
        let disks = home.layer_disks_dir();
        crate::daemon::create_private_dir(&disks)?;
        Ok(Images {
            store,
            disks,
            gc: tokio::sync::RwLock::new(()),
            build_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
            building: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Holds off garbage collection while the guard lives (see [`Images::collect_garbage`]).
    pub async fn hold_gc(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.gc.read().await
    }

    /// The stored image for `reference`, or a 404 that says how to pull it.
    pub fn get(&self, reference: &str) -> Result<Image, ApiError> {
        self.store.get(reference).map_err(|e| match e {
            aegis_oci::Error::ImageNotInStore { reference, .. } => ApiError::new(
                ErrorCode::NotFound,
                format!("image {reference} is not pulled; run `aegis image pull {reference}`"),
            ),
            e => store_error(e),
        })
    }

    /// The read-only disks of `layers` (bottom first), made now for those not made yet,
    /// several at a time.
    pub async fn layer_disks(
        self: &Arc<Self>,
        layers: &[LayerRecord],
    ) -> Result<Vec<PathBuf>, ApiError> {
        let _gc = self.gc.read().await;
        let builds = plan(layers).into_iter().map(|disk| self.ensure_disk(disk));
        // Every build ends before this returns, failed or not: none is left running when
        // the caller reacts to an error (e.g. GC after a failed pull).
        futures::future::join_all(builds)
            .await
            .into_iter()
            .collect()
    }

    /// The path of `disk`, built first if it does not exist yet.
    async fn ensure_disk(self: &Arc<Self>, disk: DiskPlan) -> Result<PathBuf, ApiError> {
        let path = self.disks.join(disk.file_name());
        if path.is_file() {
            return Ok(path);
        }
        let same_disk = self
            .building
            .lock()
            .entry(path.clone())
            .or_default()
            .clone();
        let _same_disk = same_disk.lock().await;
        if !path.is_file() {
            let _slot = self
                .build_slots
                .acquire()
                .await
                .map_err(|e| internal(format!("disk build slots closed: {e}")))?;
            let this = self.clone();
            let out = path.clone();
            let started = std::time::Instant::now();
            let built = tokio::task::spawn_blocking(move || {
                let (layers, kind) = match &disk {
                    DiskPlan::Single(l) => (vec![l.clone()], LayerDiskKind::Single),
                    DiskPlan::Flattened(ls) => (ls.clone(), LayerDiskKind::Flattened),
                };
                aegis_image::build_layer_disk(&this.store, &layers, kind, &out)
            })
            .await
            .map_err(|e| internal(format!("layer disk build panicked: {e}")))?;
            self.building.lock().remove(&path);
            let size = built.map_err(|e| {
                ApiError::new(
                    ErrorCode::Internal,
                    format!("{e}. Check free space under {}", self.disks.display()),
                )
            })?;
            tracing::info!(disk = %path.display(), size, ms = started.elapsed().as_millis() as u64, "layer disk made");
        }
        Ok(path)
    }

    /// Removes the image record of `reference`, then collects garbage. One exclusive step:
    /// no publish can pin the image's layers between the check of what releases keep and
    /// the deletion.
    pub async fn remove_image(
        self: &Arc<Self>,
        daemon: &Daemon,
        reference: &str,
    ) -> Result<u64, ApiError> {
        let _gc = self.gc.write().await;
        let keep = external_roots(daemon)?;
        self.store
            .remove_keeping(reference, &keep)
            .map_err(store_error)?;
        self.collect_locked(keep).await
    }

    /// Collects garbage: blobs that no image record and no release references, and the disks
    /// no stored image needs. Returns the bytes freed.
    pub async fn collect_garbage(self: &Arc<Self>, daemon: &Daemon) -> Result<u64, ApiError> {
        let _gc = self.gc.write().await;
        // Read under the lock: a publish (which holds it shared) cannot add a release now.
        let keep = external_roots(daemon)?;
        self.collect_locked(keep).await
    }

    async fn collect_locked(self: &Arc<Self>, keep: HashSet<String>) -> Result<u64, ApiError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut freed = this.store.collect_garbage(&keep).map_err(store_error)?;
            // Disks still wanted: every plan of every stored image, and of the kept layers.
            let mut wanted: HashSet<PathBuf> = HashSet::new();
            for image in this.store.list().map_err(store_error)? {
                wanted.extend(plan(&image.layers).iter().map(DiskPlan::file_name));
            }
            for digest in &keep {
                wanted.insert(aegis_image::layer_disk_name(digest));
            }
            let entries = std::fs::read_dir(&this.disks)
                .map_err(|e| internal(format!("cannot list {}: {e}", this.disks.display())))?;
            // A disk is derived from blobs: one removed here while a VM still has it open
            // stays readable to that VM, and is made again from the kept blobs when needed
            // (a release's flattened disk, for one).
            // No build runs while GC holds its lock: leftovers of interrupted builds (`.layer-*`)
            // go too.
            for entry in entries.flatten() {
                let name = PathBuf::from(entry.file_name());
                if wanted.contains(&name) {
                    continue;
                }
                let meta = entry.metadata();
                let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
                let removed = if meta.is_ok_and(|m| m.is_dir()) {
                    std::fs::remove_dir_all(entry.path())
                } else {
                    std::fs::remove_file(entry.path())
                };
                if removed.is_ok() {
                    freed += size;
                }
            }
            Ok(freed)
        })
        .await
        .map_err(|e| internal(format!("garbage collection panicked: {e}")))?
    }
}

/// Every blob digest referenced from outside the image store (releases of apps).
pub fn external_roots(daemon: &Daemon) -> Result<HashSet<String>, ApiError> {
    daemon
        .registry
        .release_blob_digests()
        .map_err(|e| internal(format!("cannot read the releases: {e}")))
}

/// What a VM of `image` boots: a built-in image's disk, or an OCI image's layer disks and
/// configuration.
pub async fn resolve_root(daemon: &Daemon, image: &str) -> Result<Root, ApiError> {
    if GuestAssets::is_builtin(image) {
        return Ok(Root {
            assets: daemon.guest.resolve(image)?,
            config: None,
        });
    }
    let record = daemon.images.get(image)?;
    let disks = daemon.images.layer_disks(&record.layers).await?;
    Ok(Root {
        assets: daemon.guest.boot_assets(disks)?,
        config: Some(record.config),
    })
}

/// An image's ExposedPorts (`8080/tcp`) as ports to serve: TCP ports as HTTP (the common
/// case; `--expose PORT:tcp` says otherwise), UDP ports are skipped (the router is TCP only).
pub fn exposed_ports(config: &aegis_oci::ImageConfig) -> Vec<aegis_api::PortSpec> {
    config
        .exposed_ports
        .iter()
        .filter_map(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
            (proto == "tcp").then_some(())?;
            Some(aegis_api::PortSpec {
                guest_port: port.parse().ok().filter(|p| *p != 0)?,
                host_port: None,
                protocol: aegis_api::PortProtocol::Http,
            })
        })
        .collect()
}

/// The API view of a stored OCI image.
pub fn info(image: &Image, used_by: Vec<String>) -> ImageInfo {
    let c = &image.config;
    ImageInfo {
        reference: image.reference.clone(),
        kind: ImageKind::Oci,
        digest: Some(image.manifest_digest.clone()),
        size_bytes: image.size(),
        layers: image.layers.len(),
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        env: c.env.clone(),
        working_dir: c.working_dir.clone(),
        user: c.user.clone(),
        exposed_ports: c.exposed_ports.clone(),
        used_by,
    }
}

/// The canonical form of `reference` (`alpine` -> `docker.io/library/alpine:latest`), or the
/// name itself for a built-in image.
pub fn canonical(reference: &str) -> Result<String, ApiError> {
    if GuestAssets::is_builtin(reference) {
        return Ok(reference.to_string());
    }
    aegis_oci::Reference::parse(reference)
        .map(|r| r.to_string())
        .map_err(store_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(i: usize) -> LayerRecord {
        LayerRecord {
            digest: format!("sha256:{i:064x}"),
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            size: 1,
        }
    }

    #[test]
    fn small_images_get_one_disk_per_layer() {
        let layers: Vec<_> = (0..5).map(layer).collect();
        let p = plan(&layers);
        assert_eq!(p.len(), 5);
        assert!(p.iter().all(|d| matches!(d, DiskPlan::Single(_))));
    }

    #[test]
    fn big_images_flatten_their_bottom_layers() {
        let layers: Vec<_> = (0..40).map(layer).collect();
        let p = plan(&layers);
        assert_eq!(p.len(), MAX_LAYER_DISKS);
        match &p[0] {
            DiskPlan::Flattened(ls) => assert_eq!(ls.len(), 40 - (MAX_LAYER_DISKS - 1)),
            other => panic!("{other:?}"),
        }
        // The top layers keep their own disks, in order.
        assert_eq!(p[MAX_LAYER_DISKS - 1], DiskPlan::Single(layer(39)));
        // The flattened disk is named by its layers, stably.
        assert_eq!(p[0].file_name(), plan(&layers)[0].file_name());
        assert!(p[0].file_name().to_string_lossy().starts_with("flat-"));
    }
}
