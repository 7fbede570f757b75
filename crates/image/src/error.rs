//! The one error type of this crate.
//!
//! Messages say what happened and to what; the `hint` parts say what to do. Underlying
//! I/O errors are kept as `source` (not repeated in the message) so callers print the
//! chain (`{:#}` with anyhow).

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while finding or building guest artefacts.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A filesystem operation failed.
    #[error("Cannot {action} {}", path.display())]
    Io {
        /// What we were doing, e.g. "create directory".
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A host tool this step needs is not installed.
    #[error("`{tool}` was not found on PATH; it is needed to {purpose}. Install it with `apt-get install {package}`")]
    ToolMissing {
        /// The executable name.
        tool: &'static str,
        /// What it is needed for.
        purpose: &'static str,
        /// The Debian package that ships it.
        package: &'static str,
    },

    /// A tool could not be started at all.
    #[error("Cannot run `{command}`")]
    Spawn {
        /// The command line (program and arguments).
        command: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A tool ran and failed.
    #[error(
        "`{command}` failed ({status}){}{}",
        tail_block(stderr_tail),
        hint_block(hint)
    )]
    CommandFailed {
        /// The command line (program and arguments).
        command: String,
        /// How it ended, e.g. "exit status: 2".
        status: String,
        /// The last lines it wrote to stderr (or stdout when stderr was empty).
        stderr_tail: String,
        /// What the user can do about it; may be empty.
        hint: String,
    },

    /// Building a guest artefact needs root (debootstrap, device nodes, file ownership).
    #[error("Building {what} needs root privileges; run `aegis setup` as root (e.g. with sudo)")]
    NeedsRoot {
        /// What was being built.
        what: String,
    },

    /// A binary that must run inside a guest without a C library is dynamically linked.
    #[error("{} is dynamically linked, but the guest image has no C library; install `{package}` (apt-get install {package})", path.display())]
    NotStatic {
        /// The binary.
        path: PathBuf,
        /// The Debian package with a static build.
        package: &'static str,
    },

    /// The kernel source tarball is not installed.
    #[error(
        "Kernel source {} not found; install it with `apt-get install linux-source-6.1`, \
         or set AEGIS_KERNEL to a vmlinux you built yourself",
        path.display()
    )]
    KernelSourceMissing {
        /// Where it was expected.
        path: PathBuf,
    },

    /// Some options of `guest/kernel/aegis.config` were dropped by `make olddefconfig`.
    #[error(
        "These kernel options did not stick after `make olddefconfig`: {}; \
         a dependency of theirs is missing from guest/kernel/aegis.config",
        missing.join(", ")
    )]
    KernelConfigRejected {
        /// The `CONFIG_*` names that are not `=y` in the final `.config`.
        missing: Vec<String>,
    },

    /// The kernel build finished but produced no `vmlinux`.
    #[error("The kernel build finished but {} does not exist", path.display())]
    KernelNotProduced {
        /// Where `vmlinux` was expected.
        path: PathBuf,
    },

    /// `AEGIS_KERNEL` points at a file that does not exist.
    #[error("AEGIS_KERNEL is set to {} but that file does not exist; point it at an uncompressed ELF vmlinux or unset it", path.display())]
    UserKernelMissing {
        /// The value of `AEGIS_KERNEL`.
        path: PathBuf,
    },

    /// No kernel is cached for the current configuration and none is configured.
    #[error("No guest kernel is built yet (expected {}); run `aegis setup` to build it, or set AEGIS_KERNEL to a vmlinux", path.display())]
    KernelNotBuilt {
        /// Where the kernel for the current configuration would be.
        path: PathBuf,
    },

    /// An image name that is not one of the base images.
    #[error(
        "unknown image '{name}': available images are {available}; build them with `aegis setup`"
    )]
    UnknownImage {
        /// The name that was asked for.
        name: String,
        /// Comma-separated list of the known names.
        available: String,
    },

    /// A known image that has not been built yet.
    #[error("image '{name}' is not built yet (expected {}); build it with `aegis setup`", path.display())]
    ImageNotBuilt {
        /// The image name.
        name: String,
        /// Where its root filesystem would be.
        path: PathBuf,
    },

    /// The guest harness binary to put into the initramfs does not exist.
    #[error("Guest harness binary {} not found; build it first (cargo build --profile harness -p aegis-harness)", path.display())]
    HarnessMissing {
        /// The path that was given.
        path: PathBuf,
    },

    /// An initramfs entry name or size that the cpio "newc" format cannot hold.
    #[error("Cannot put {name} into the initramfs: {reason}")]
    Cpio {
        /// The archive entry.
        name: String,
        /// Why.
        reason: &'static str,
    },

    /// An image layer could not be unpacked into its disk.
    #[error("Cannot make a disk of image layer {digest}: {detail}")]
    Layer {
        /// The layer's digest.
        digest: String,
        /// What went wrong (unsafe entry, missing blob, I/O).
        detail: String,
    },

    /// A scratch disk of zero bytes or of a size the filesystem cannot hold.
    #[error("Invalid scratch disk size {size_bytes} bytes for {}: {reason}", path.display())]
    InvalidScratchSize {
        /// The disk file.
        path: PathBuf,
        /// The requested size.
        size_bytes: u64,
        /// Why it is rejected.
        reason: &'static str,
    },
}

impl ImageError {
    /// Shorthand for [`ImageError::Io`].
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ImageError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

fn tail_block(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", tail.trim_end())
    }
}

fn hint_block(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!("\n{hint}")
    }
}

/// Result with [`ImageError`] as the default error.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Attach "what were we doing to which path" to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| ImageError::io(action, path, e))
    }
}
