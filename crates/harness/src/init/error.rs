//! Why the guest could not boot. Every variant names what failed and on which path; the
//! message is printed on the console before the guest powers off.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot mount {fstype} {source_desc} on {}: {source}", target.display())]
    Mount {
        fstype: String,
        source_desc: String,
        target: PathBuf,
        source: io::Error,
    },
    #[error("malformed kernel argument `{0}` (see docs/HARNESS.md for the aegis.* arguments)")]
    Cmdline(String),
    #[error(
        "no disk with virtio-blk serial `{serial}` in /sys/block/vd*/serial; \
         the VMM must attach the base image with serial={serial}"
    )]
    NoRootDisk { serial: String },
    #[error(
        "disk layer {index} (virtio-blk serial `{serial}`) is missing; the VMM must attach \
         every layer named by aegis.layers"
    )]
    NoLayerDisk { index: usize, serial: String },
    #[error("cannot mount the disk layer {}: neither ext4 nor erofs ({ext4}; {erofs})", disk.display())]
    RootFs {
        disk: PathBuf,
        ext4: io::Error,
        erofs: io::Error,
    },
    #[error("no virtio-serial port named `{0}` in /sys/class/virtio-ports after 10 s")]
    NoPort(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
}

/// `io::Result` -> `InitError::Io` with what was being done to which path.
pub trait Context<T> {
    fn ctx(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T, InitError>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T, InitError> {
        self.map_err(|source| InitError::Io {
            action,
            path: path.into(),
            source,
        })
    }
}
