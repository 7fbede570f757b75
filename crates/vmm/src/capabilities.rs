//! What a backend can do, reported explicitly.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    Qemu,
    Firecracker,
    Libkrun,
    Fake,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Qemu => "qemu",
            BackendKind::Firecracker => "firecracker",
            BackendKind::Libkrun => "libkrun",
            BackendKind::Fake => "fake",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Capabilities of one backend on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Pause keeping RAM (QMP stop, Firecracker PATCH /vm, or SIGSTOP).
    pub pause: bool,
    /// Save guest RAM + device state to a file and restore it later.
    pub memory_snapshot: bool,
    /// The host<->guest channel is vsock (else virtio-serial).
    pub vsock: bool,
    /// The mechanism for shared directories is virtio-fs.
    pub virtio_fs: bool,
    /// Host directories can be shared with the guest (`VmSpec::shares`): workspaces.
    pub shared_directories: bool,
    /// Guest networking via a tap device.
    pub tap_network: bool,
    /// Accelerator in use ("kvm", "hvf", "tcg").
    pub accelerator: String,
}
