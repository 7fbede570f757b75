//! The host<->guest protocol of Aegis.
//!
//! One byte stream connects the daemon with the harness (PID 1) in every guest: a virtio-serial
//! port under QEMU, a vsock connection under Firecracker and libkrun. Over it runs a small
//! multiplexed session:
//!
//! - [`frame`]: the wire format. Length-prefixed frames; control frames carry one typed message,
//!   data frames carry raw bytes of one stream. No line-length limits: streams are bytes.
//! - [`message`]: the vocabulary. [`HostMessage`] (host -> guest) and [`GuestMessage`]
//!   (guest -> host) are the only things the two sides say to each other.
//! - [`session`]: the multiplexer shared by both sides. Many byte streams (process stdio,
//!   proxied connections, file transfers) share the one connection, each with its own
//!   credit-based flow control, so a slow reader of one stream never stalls another. The peer
//!   is not trusted: what it can make a session hold is bounded, and a peer that breaks the
//!   rules ends the session with a [`Violation`].
#![forbid(unsafe_code)]

pub mod frame;
pub mod io;
pub mod message;
pub mod session;

pub use frame::{Frame, FrameError, StreamId};
pub use message::{
    ExitStatus, FileKind, GuestMessage, HostMessage, PathError, PathErrorKind, PathInfo, ProcId,
    ProcessSpec, SpawnError, SpawnErrorKind, WatchEvent, WatchKind, PROTOCOL_VERSION,
};
pub use session::{Session, SessionConfig, SessionError, SessionStats, Side, Stream, Violation};
