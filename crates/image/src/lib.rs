//! Guest artefacts of Aegis: the guest kernel, the base root images, the initramfs that
//! carries the guest harness, and per-instance scratch disks.
//!
//! Everything is built on the host from Debian packages (no Docker, no loop mounts) and
//! cached under `<aegis home>/cache/` (see [`Layout`]), keyed by a hash of its recipe so a
//! changed recipe rebuilds and an unchanged one never does. See `docs/GUEST.md`.

mod cmd;
mod cpio;
mod erofs;
mod error;
mod ext4;
mod harness;
mod host;
mod images;
mod initramfs;
mod kernel;
mod layer_disk;
mod layout;
mod progress;

pub use error::{ImageError, Result};
pub use ext4::{create_scratch_disk, MIN_SCRATCH_BYTES, SCRATCH_LABEL};
pub use harness::{harness_path, is_dynamically_linked, HARNESS_ENV};
pub use host::host_tsc_khz;
pub use images::{
    build_image, debian_mirror, image_file, image_path, image_status, list_images, BaseImage,
    ImageInfo, ImageStatus, DEBIAN_MIRROR_ENV, DEFAULT_DEBIAN_MIRROR, ROOT_LABEL,
};
pub use initramfs::{ensure_initramfs, write_initramfs};
pub use kernel::{
    build_kernel, config_options, find_kernel, kernel_cache_path, kernel_config_hash, kernel_path,
    kernel_source, KernelSource, DEFAULT_KERNEL_SOURCE, KERNEL_CONFIG_FRAGMENT, KERNEL_ENV,
    KERNEL_SOURCE_ENV,
};
pub use layer_disk::{build_layer_disk, layer_disk_name, LayerDiskKind};
pub use layout::Layout;
pub use progress::{NoProgress, Progress};
