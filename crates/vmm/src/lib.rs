//! VMM backends of Aegis.
//!
//! Every backend implements [`Backend`] (boot, restore) and hands out [`Vm`]s (channel, pause,
//! resume, snapshot, wait, kill). What a backend can do is stated up front in
//! [`Capabilities`]; the lifecycle code asks, never assumes, so a backend without memory
//! snapshots degrades to a cold boot from disk layers: slower, never wrong.
//!
//! - [`host`]: what this machine can run (KVM kind, QEMU, Firecracker), explained.
//! - [`select`]: the probing factory; `auto` picks the fastest backend that really boots here.
//! - [`qemu`]: QEMU `microvm` (KVM or TCG), QMP control, migration-based memory snapshots.
//! - `fake` (cargo feature `fake`): the real guest agent in-process, for fast daemon tests.
//!   It runs guest commands as host processes without isolation, so only test builds have
//!   it; elsewhere selecting it is an error that names the feature.
//!
//! See `docs/BACKENDS.md`.

pub mod backend;
pub mod capabilities;
pub mod console_log;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod host;
mod process;
pub mod qemu;
pub mod select;
pub mod spec;

pub use backend::{Backend, Channel, Vm, VmExit, VmmError};
pub use capabilities::{BackendKind, Capabilities};
#[cfg(any(test, feature = "fake"))]
pub use fake::FakeBackend;
pub use host::{probe, HostReport};
pub use select::{select, BackendChoice, BackendOptions};
pub use spec::{Disk, Share, SnapshotRef, VmSpec};
