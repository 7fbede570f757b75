//! One file per command.

pub mod app;
pub mod doctor;
pub mod down;
pub mod image;
pub mod instance;
pub mod lifecycle;
pub mod run;
pub mod setup;
pub mod status;
pub mod task;
pub mod up;
pub mod workspace;
