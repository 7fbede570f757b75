//! Test support shared by the Aegis crates. A dev-dependency only: nothing here is built into
//! a binary.
//!
//! - [`fake_aegisd`]: a recording, scripted stand-in for aegisd on `<home>/aegisd.sock`, for
//!   the client and CLI tests (the daemon's own behaviour is tested in its crate), and
//!   [`api_values`], the API values such a script answers with.
//! - [`daemon`] (feature `daemon`): a real in-process aegisd on the fake backend.
//! - [`net`]: loopback helpers (a free port, one HTTP GET).
//! - [`guest`]: the host side of a guest session (open two streams and `Spawn`).
//! - [`registry`]: a real OCI registry on loopback and images built for it.
//! - [`python`]: the interpreter that has the Python test tools.
#![forbid(unsafe_code)]

pub mod api_values;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod fake_aegisd;
pub mod guest;
pub mod net;
pub mod python;
pub mod registry;
