//! Read-only block images of OCI layers: each layer becomes one EROFS disk, once, that the
//! guest stacks with overlayfs (bottom layer first) under its scratch layer.
//!
//! A layer is unpacked on its own with its whiteouts translated into overlayfs' format (a 0/0
//! character device for `.wh.NAME`, `trusted.overlay.opaque=y` for `.wh..wh..opq`), so the
//! disk means exactly what the layer means wherever it sits in a stack. Several layers can
//! also be flattened into one disk (whiteouts applied), for images with more layers than a VM
//! has disk slots.
//!
//! The disk is made in a temporary file next to its final path and renamed into place: a
//! reader sees no disk or a complete one, never a half-written one (e.g. after a full disk).

use std::fs;
use std::path::{Path, PathBuf};

use aegis_oci::{LayerRecord, Store, UnpackOptions, Whiteouts};

use crate::erofs::erofs_from_dir;
use crate::error::{ImageError, IoContext, Result};

/// What one layer disk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerDiskKind {
    /// One layer, whiteouts in overlayfs format.
    Single,
    /// Several layers flattened bottom first, whiteouts applied.
    Flattened,
}

/// Builds the EROFS disk of `layers` (one layer, or several to flatten) at `out`. Returns the
/// disk's size in bytes. Needs root (device nodes, ownership, `trusted.*` xattrs).
pub fn build_layer_disk(
    store: &Store,
    layers: &[LayerRecord],
    kind: LayerDiskKind,
    out: &Path,
) -> Result<u64> {
    let dir = out.parent().unwrap_or(Path::new("."));
    crate::layout::create_dir_all(dir)?;
    let tree = tempfile::Builder::new()
        .prefix(".layer-tree-")
        .tempdir_in(dir)
        .ctx("create temporary directory in", dir)?;
    let options = UnpackOptions {
        whiteouts: match kind {
            LayerDiskKind::Single => Whiteouts::Overlay,
            LayerDiskKind::Flattened => Whiteouts::Apply,
        },
        ..UnpackOptions::default()
    };
    if kind == LayerDiskKind::Single && layers.len() != 1 {
        return Err(ImageError::io(
            "build a single-layer disk",
            out,
            std::io::Error::other(format!("{} layers given instead of one", layers.len())),
        ));
    }
    for layer in layers {
        store
            .unpack_layer_to(layer, tree.path(), &options)
            .map_err(|e| ImageError::Layer {
                digest: layer.digest.clone(),
                detail: e.to_string(),
            })?;
    }
    let tmp = tempfile::Builder::new()
        .prefix(".layer-")
        .suffix(".erofs")
        .tempfile_in(dir)
        .ctx("create temporary file in", dir)?;
    let size = erofs_from_dir(tree.path(), tmp.path())?;
    tmp.as_file().sync_all().ctx("sync", tmp.path())?;
    let mut perms = fs::metadata(tmp.path())
        .ctx("stat", tmp.path())?
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    fs::set_permissions(tmp.path(), perms).ctx("set permissions of", tmp.path())?;
    tmp.persist(out)
        .map_err(|e| ImageError::io("rename into place", out, e.error))?;
    Ok(size)
}

/// File name of the disk of one layer: `<hex of its digest>.erofs`.
pub fn layer_disk_name(digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    PathBuf::from(format!("{hex}.erofs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_digest_hex() {
        assert_eq!(layer_disk_name("sha256:abcd"), PathBuf::from("abcd.erofs"));
    }
}
