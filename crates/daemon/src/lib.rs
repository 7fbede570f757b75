//! The Aegis daemon as a library: `aegisd` is a thin binary over [`run`], and tests start the
//! daemon in-process with a fake backend.

pub mod api;
pub mod apps;
pub mod config;
pub mod config_file;
pub mod daemon;
pub mod guest;
pub mod ids;
pub mod images;
pub mod instances;
pub mod quotas;
pub mod reconcile;
mod sparse_copy;
pub mod tasks;
pub mod vm;
pub mod vm_request;
pub mod workspaces;

pub use daemon::{run, Daemon};
