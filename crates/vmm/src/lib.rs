//! VMM backends of Aegis.
//!
//! Every backend implements [`Backend`] (boot, restore) and hands out [`Vm`]s (channel, pause,
//! resume, snapshot, wait, kill). What a backend can do is stated up front in
//! [`Capabilities`]; the lifecycle code asks, never assumes, so a backend without memory
//! snapshots degrades to a cold boot from disk layers: slower, never wrong.

pub mod backend;
pub mod capabilities;
pub mod spec;

pub use backend::{Backend, Channel, Vm, VmExit, VmmError};
pub use capabilities::{BackendKind, Capabilities};
pub use spec::{Disk, SnapshotRef, VmSpec};
