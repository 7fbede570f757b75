//! The Aegis guest agent.
//!
//! [`Agent`] serves the host<->guest protocol of `aegis-proto` over one byte stream: it runs
//! processes and pumps their stdio, forwards TCP connections to guest ports, sends files as tar
//! archives and shuts the guest down. It is used in two places:
//!
//! - the `aegis-harness` binary, PID 1 of every microVM (`AgentConfig::pid1 = true`), which
//!   mounts the guest's disks, switches root and then serves the virtio-serial or vsock channel;
//! - the fake VMM backend, which runs the agent in-process on the host over a
//!   `tokio::io::duplex` (`pid1 = false`) so the daemon can be tested without a VM.
//!
//! One file per concern: [`agent`] (session loop and message dispatch), `reaper` (SIGCHLD and
//! `waitpid`), `command` (turning a `ProcessSpec` into a `std::process::Command`), `process`
//! (a running process and its stdio pumps), `pty` (one on a pseudo-terminal), `forward` (`Connect`), `archive` (`ReadPath`), `clock` (`SetClock`),
//! `session_io` (the channel wrapper that lets a finished session be cut off cleanly) and
//! `paths` (guest paths under the agent's root).

pub mod agent;
mod archive;
mod clock;
mod command;
mod files;
mod forward;
mod paths;
mod process;
mod pty;
mod reaper;
mod session_io;
mod user;
mod watch;

pub use agent::{Agent, AgentConfig, SessionEnd};
