//! Base root images: read-only ext4 files built from a recipe, cached by recipe hash.
//!
//! ```text
//! cache/images/<name>/rootfs.ext4     0444, label aegis-root, no journal
//! cache/images/<name>/recipe.sha256   the recipe hash it was built from
//! ```
//!
//! Every image has the mount points the harness needs (`/proc /sys /dev /tmp /run
//! /workspace /root`) and placeholder `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` that
//! the harness overwrites in its writable overlay.

mod busybox;
mod debian;

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::error::{ImageError, IoContext, Result};
use crate::ext4;
use crate::kernel::hex;
use crate::layout::{create_dir_all, write_atomic, DirLock, Layout};
use crate::progress::Progress;

pub use debian::{debian_mirror, DEBIAN_MIRROR_ENV, DEFAULT_DEBIAN_MIRROR};

const ROOTFS: &str = "rootfs.ext4";
const RECIPE: &str = "recipe.sha256";
/// Filesystem label of base images.
pub const ROOT_LABEL: &str = "aegis-root";

/// The base images Aegis can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BaseImage {
    /// Static busybox and its applets: ~3 MB, builds in a second.
    Busybox,
    /// Debian bookworm minbase with python3-minimal and ca-certificates: ~250 MB.
    Debian,
}

impl BaseImage {
    /// Every base image, in the order `aegis setup` builds them.
    pub const ALL: [BaseImage; 2] = [BaseImage::Busybox, BaseImage::Debian];

    /// The name users type (`--image busybox`).
    pub fn name(self) -> &'static str {
        match self {
            BaseImage::Busybox => "busybox",
            BaseImage::Debian => "debian",
        }
    }

    /// One line for listings.
    pub fn description(self) -> &'static str {
        match self {
            BaseImage::Busybox => "static busybox userland (sh and coreutils applets)",
            BaseImage::Debian => "Debian 12 (bookworm) minbase + python3-minimal, ca-certificates",
        }
    }

    /// Look a name up, with the error users see for unknown names.
    pub fn from_name(name: &str) -> Result<Self> {
        BaseImage::ALL
            .into_iter()
            .find(|i| i.name() == name)
            .ok_or_else(|| ImageError::UnknownImage {
                name: name.to_string(),
                available: BaseImage::ALL.map(BaseImage::name).join(", "),
            })
    }

    /// The hash of everything that determines this image's content (full sha256 hex).
    pub fn recipe_hash(self) -> Result<String> {
        let mut h = Sha256::new();
        let mut part = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        part(self.name().as_bytes());
        part(ext4::IMAGE_FORMAT.as_bytes());
        for (path, content) in COMMON_FILES {
            part(path.as_bytes());
            part(content.as_bytes());
        }
        for dir in MOUNT_POINTS {
            part(dir.0.as_bytes());
        }
        match self {
            BaseImage::Busybox => busybox::recipe(&mut part)?,
            BaseImage::Debian => debian::recipe(&mut part),
        }
        Ok(hex(&h.finalize()))
    }
}

impl fmt::Display for BaseImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BaseImage {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self> {
        BaseImage::from_name(s)
    }
}

/// Whether an image is built and current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageStatus {
    /// Built from the current recipe.
    Ready,
    /// Built, but from an older recipe: usable, `aegis setup` rebuilds it.
    Stale,
    /// Not built.
    Missing,
}

/// One row of [`list_images`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Which image.
    pub image: BaseImage,
    /// Where its root filesystem is (or will be).
    pub path: PathBuf,
    /// Built / stale / missing.
    pub status: ImageStatus,
    /// Size of the image file, when built.
    pub size_bytes: Option<u64>,
}

/// `cache/images/<name>/rootfs.ext4`, whether or not it exists.
pub fn image_file(layout: &Layout, image: BaseImage) -> PathBuf {
    layout.base_images_dir().join(image.name()).join(ROOTFS)
}

/// The root filesystem of the image called `name`. Errors say whether the name is unknown
/// or the image is not built yet. A stale image (older recipe) is still returned.
pub fn image_path(layout: &Layout, name: &str) -> Result<PathBuf> {
    let image = BaseImage::from_name(name)?;
    let path = image_file(layout, image);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ImageError::ImageNotBuilt {
            name: name.to_string(),
            path,
        })
    }
}

/// Status of one image. An image whose recipe cannot be computed on this host (its build
/// tool is missing) but that exists counts as ready: it cannot be rebuilt here anyway.
pub fn image_status(layout: &Layout, image: BaseImage) -> ImageStatus {
    let path = image_file(layout, image);
    if !path.is_file() {
        return ImageStatus::Missing;
    }
    let recorded = fs::read_to_string(path.with_file_name(RECIPE)).unwrap_or_default();
    match image.recipe_hash() {
        Ok(current) if current != recorded.trim() => ImageStatus::Stale,
        _ => ImageStatus::Ready,
    }
}

/// All base images with their status.
pub fn list_images(layout: &Layout) -> Vec<ImageInfo> {
    BaseImage::ALL
        .into_iter()
        .map(|image| {
            let path = image_file(layout, image);
            let size_bytes = fs::metadata(&path).ok().map(|m| m.len());
            ImageInfo {
                image,
                status: image_status(layout, image),
                path,
                size_bytes,
            }
        })
        .collect()
}

/// Build `image` unless it is already built from the current recipe; return its path.
pub fn build_image(layout: &Layout, image: BaseImage, progress: &dyn Progress) -> Result<PathBuf> {
    let dir = layout.base_images_dir().join(image.name());
    let _lock = DirLock::acquire(&dir, || {
        progress.set_message(&format!("Waiting for another build of the {image} image"))
    })?;
    let dest = dir.join(ROOTFS);
    if image_status(layout, image) == ImageStatus::Ready {
        progress.finish();
        return Ok(dest);
    }
    let recipe = image.recipe_hash()?;
    let started = Instant::now();
    let build = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&dir)
        .ctx("create build directory in", &dir)?;
    let tree = build.path().join("root");
    create_dir_all(&tree)?;

    match image {
        BaseImage::Busybox => busybox::populate(&tree, progress)?,
        BaseImage::Debian => debian::populate(&tree, &dir, progress)?,
    }
    finish_tree(&tree)?;

    progress.set_message(&format!("Writing {} image", image.name()));
    let tmp_image = build.path().join(ROOTFS);
    ext4::ext4_from_dir(&tree, &tmp_image, ROOT_LABEL)?;
    fs::set_permissions(&tmp_image, fs::Permissions::from_mode(0o444))
        .ctx("set permissions of", &tmp_image)?;
    // Running VMs keep the old inode open; new VMs get the new image.
    fs::rename(&tmp_image, &dest).ctx("move the built image to", &dest)?;
    write_atomic(&dir.join(RECIPE), format!("{recipe}\n").as_bytes())?;

    progress.set_message(&format!("Removing {} build tree", image.name()));
    let build_path = build.path().to_path_buf();
    build.close().ctx("remove build directory", build_path)?;
    progress.finish();
    tracing::info!(image = image.name(), path = %dest.display(),
        secs = started.elapsed().as_secs_f32(), "base image built");
    Ok(dest)
}

/// Mount points and their modes. `/tmp` is sticky and world-writable, `/root` private.
const MOUNT_POINTS: [(&str, u32); 8] = [
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("workspace", 0o755),
    ("root", 0o700),
    ("mnt", 0o755),
];

/// Files every image gets. Host-specific values (hostname, DNS) are placeholders: the
/// harness writes the real ones at boot, so no host configuration leaks into an image.
const COMMON_FILES: [(&str, &str); 3] = [
    ("etc/hostname", "aegis\n"),
    (
        "etc/hosts",
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\taegis\n",
    ),
    (
        "etc/resolv.conf",
        "# Placeholder: the Aegis guest harness writes the resolver configuration at boot.\n",
    ),
];

fn finish_tree(tree: &Path) -> Result<()> {
    for (dir, mode) in MOUNT_POINTS {
        let path = tree.join(dir);
        create_dir_all(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .ctx("set permissions of", &path)?;
    }
    for (file, content) in COMMON_FILES {
        write_file(tree, file, content, 0o644)?;
    }
    Ok(())
}

/// Write `content` to `tree/rel`, replacing whatever is there (debootstrap leaves a copy of
/// the host's resolv.conf, possibly as a symlink).
pub(crate) fn write_file(tree: &Path, rel: &str, content: &str, mode: u32) -> Result<()> {
    let path = tree.join(rel);
    if let Some(parent) = path.parent() {
        create_dir_all(parent)?;
    }
    if path.symlink_metadata().is_ok() {
        fs::remove_file(&path).ctx("remove", &path)?;
    }
    fs::write(&path, content).ctx("write", &path)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).ctx("set permissions of", &path)
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for image in BaseImage::ALL {
            assert_eq!(BaseImage::from_name(image.name()).unwrap(), image);
            assert_eq!(image.to_string().parse::<BaseImage>().unwrap(), image);
        }
    }

    #[test]
    fn unknown_name_lists_the_choices() {
        let dir = tempfile::tempdir().unwrap();
        let err = image_path(&Layout::new(dir.path()), "alpine").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown image 'alpine': available images are busybox, debian; \
             build them with `aegis setup`"
        );
    }

    #[test]
    fn unbuilt_image_says_to_run_setup() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let err = image_path(&layout, "debian").unwrap_err().to_string();
        assert!(err.contains("image 'debian' is not built yet"), "{err}");
        assert!(err.contains("aegis setup"), "{err}");
        let rows = list_images(&layout);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.status == ImageStatus::Missing));
    }

    #[test]
    fn status_follows_the_recorded_recipe() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let image = BaseImage::Debian;
        let file = image_file(&layout, image);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, b"").unwrap();
        fs::write(file.with_file_name(RECIPE), "old\n").unwrap();
        assert_eq!(image_status(&layout, image), ImageStatus::Stale);
        let current = image.recipe_hash().unwrap();
        fs::write(file.with_file_name(RECIPE), format!("{current}\n")).unwrap();
        assert_eq!(image_status(&layout, image), ImageStatus::Ready);
        assert_eq!(image_path(&layout, "debian").unwrap(), file);
    }

    #[test]
    fn recipes_differ_between_images() {
        let d = BaseImage::Debian.recipe_hash().unwrap();
        assert_eq!(d.len(), 64);
        assert_eq!(d, BaseImage::Debian.recipe_hash().unwrap());
        if let Ok(b) = BaseImage::Busybox.recipe_hash() {
            assert_ne!(b, d);
        }
    }

    #[test]
    fn tree_gets_mount_points_and_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path();
        fs::create_dir_all(tree.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/host-resolv", tree.join("etc/resolv.conf")).unwrap();
        finish_tree(tree).unwrap();
        for (d, mode) in MOUNT_POINTS {
            let meta = fs::metadata(tree.join(d)).unwrap();
            assert!(meta.is_dir());
            assert_eq!(meta.permissions().mode() & 0o7777, mode, "{d}");
        }
        let resolv = tree.join("etc/resolv.conf");
        assert!(!resolv.symlink_metadata().unwrap().file_type().is_symlink());
        assert!(fs::read_to_string(resolv).unwrap().contains("Placeholder"));
    }
}
