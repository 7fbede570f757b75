//! The guest artefacts a VM boots from: kernel, initramfs (harness), and images. Resolved per
//! boot, so `aegis setup` can build them while the daemon runs.

use std::path::PathBuf;

use aegis_api::{ApiError, ErrorCode};
use aegis_image::Layout;
use parking_lot::Mutex;

use crate::config::Config;

pub struct GuestAssets {
    layout: Layout,
    harness: PathBuf,
    /// Initramfs built for the harness binary seen last (rebuilt when it changes).
    initramfs: Mutex<Option<PathBuf>>,
    /// Fixed artefacts, for backends that boot nothing real (the fake backend in tests).
    fixed: Option<BootAssets>,
}

/// Paths one boot needs.
#[derive(Debug, Clone)]
pub struct BootAssets {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// Read-only disk layers, bottom first: one for a built-in image, one per OCI layer.
    pub layers: Vec<PathBuf>,
}

impl GuestAssets {
    pub fn new(config: &Config) -> Self {
        GuestAssets {
            layout: config.home.clone(),
            harness: config.harness_binary(),
            initramfs: Mutex::new(None),
            fixed: None,
        }
    }

    /// Always resolves to `assets` (any image name is accepted): for the fake backend.
    pub fn fixed(config: &Config, assets: BootAssets) -> Self {
        GuestAssets {
            fixed: Some(assets),
            ..GuestAssets::new(config)
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Checks that `image` exists (404 if unknown, 503 if not built yet).
    pub fn rootfs(&self, image: &str) -> Result<PathBuf, ApiError> {
        aegis_image::image_path(&self.layout, image).map_err(|e| {
            let code = if matches!(e, aegis_image::ImageError::UnknownImage { .. }) {
                ErrorCode::NotFound
            } else {
                ErrorCode::Unavailable
            };
            ApiError::new(code, e.to_string())
        })
    }

    /// Everything needed to boot the built-in image `image`, or a 503 that says what to build.
    pub fn resolve(&self, image: &str) -> Result<BootAssets, ApiError> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.clone());
        }
        let rootfs = self.rootfs(image)?;
        self.boot_assets(vec![rootfs])
    }

    /// Whether `name` is one of the images Aegis builds itself (`busybox`, `debian`).
    pub fn is_builtin(name: &str) -> bool {
        aegis_image::BaseImage::from_name(name).is_ok()
    }

    /// Kernel and initramfs to boot the given disk layers (bottom first).
    pub fn boot_assets(&self, layers: Vec<PathBuf>) -> Result<BootAssets, ApiError> {
        if let Some(fixed) = &self.fixed {
            return Ok(BootAssets {
                layers,
                ..fixed.clone()
            });
        }
        let kernel = aegis_image::find_kernel(&self.layout).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unavailable,
                "no guest kernel is built for this Aegis version; run `aegis setup` \
                 (or point AEGIS_KERNEL at a vmlinux)",
            )
        })?;
        Ok(BootAssets {
            kernel,
            initramfs: self.initramfs()?,
            layers,
        })
    }

    fn initramfs(&self) -> Result<PathBuf, ApiError> {
        if !self.harness.is_file() {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the guest harness {} is missing; build it with `scripts/build.sh` \
                     or set AEGIS_HARNESS",
                    self.harness.display()
                ),
            ));
        }
        if aegis_image::is_dynamically_linked(&self.harness) {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the guest harness {} is dynamically linked and cannot be PID 1 of a guest; \
                     build the static one with `scripts/build.sh` or set AEGIS_HARNESS",
                    self.harness.display()
                ),
            ));
        }
        let mut cached = self.initramfs.lock();
        // ensure_initramfs is content-addressed: cheap when nothing changed.
        let path = aegis_image::ensure_initramfs(&self.layout, &self.harness).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot build the initramfs: {e}"),
            )
        })?;
        *cached = Some(path.clone());
        Ok(path)
    }
}
