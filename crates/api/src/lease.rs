//! Activity leases and `awake_because`: what keeps an instance from pausing.
//!
//! A lease is a promise from a client ("I am still using this sandbox") that it renews before
//! its TTL runs out. While any lease of an instance is live the idle timers neither pause nor
//! terminate it. TTLs run on the host's clock, whatever the instance's state.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::PortProtocol;

/// Longest TTL a lease accepts: 24 hours. A lease is meant to be renewed; longer is a mistake.
pub const MAX_LEASE_TTL_SECS: i64 = 24 * 3600;
/// Longest holder label.
pub const MAX_LEASE_HOLDER_LEN: usize = 200;

/// `POST /v1/instances/{id}/leases`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLease {
    /// Seconds the lease lives unless renewed: 1 ..= [`MAX_LEASE_TTL_SECS`]. Signed so that a
    /// negative value gets a clear error rather than a parse failure.
    pub ttl_secs: i64,
    /// Who holds it (shown by `aegis instance inspect`), e.g. `agent-7` or a script name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

/// `POST /v1/instances/{id}/leases/{lease}/renew`: a new TTL counted from now (the lease's
/// own TTL when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewLease {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<i64>,
}

/// A live lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Lease {
    pub id: String,
    /// The instance id.
    pub instance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    pub ttl_secs: u64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; renewing moves it.
    pub expires_at: String,
    /// Milliseconds left until it expires.
    pub expires_in_ms: u64,
}

/// Checks a lease TTL: 1 ..= [`MAX_LEASE_TTL_SECS`] seconds.
pub fn check_lease_ttl(ttl_secs: i64) -> Result<u64, String> {
    if ttl_secs < 1 {
        return Err(format!(
            "ttl_secs {ttl_secs} is out of range: a lease lives 1 to {MAX_LEASE_TTL_SECS} seconds; renew it to keep it"
        ));
    }
    if ttl_secs > MAX_LEASE_TTL_SECS {
        return Err(format!(
            "ttl_secs {ttl_secs} is out of range: a lease lives at most {MAX_LEASE_TTL_SECS} seconds (24 hours); use a shorter TTL and renew it"
        ));
    }
    Ok(ttl_secs.unsigned_abs())
}

/// Checks a holder label: at most [`MAX_LEASE_HOLDER_LEN`] characters, no control characters.
pub fn check_lease_holder(holder: &str) -> Result<(), String> {
    if holder.chars().count() > MAX_LEASE_HOLDER_LEN {
        return Err(format!(
            "holder is longer than {MAX_LEASE_HOLDER_LEN} characters; use a short label"
        ));
    }
    if holder.chars().any(char::is_control) {
        return Err("holder contains control characters; use a printable label".into());
    }
    Ok(())
}

/// `GET /v1/instances/{id}/awake`: why the instance is (or stays) awake now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AwakeBecause {
    /// Open client connections through the router, by guest port.
    pub connections: Vec<PortConnections>,
    /// Running processes registered as activity (execs, PTYs).
    pub holders: Vec<ActivityHolder>,
    /// Live leases.
    pub leases: Vec<Lease>,
    pub timers: IdleTimers,
}

/// Open connections to one guest port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortConnections {
    pub guest_port: u16,
    pub protocol: PortProtocol,
    pub open: u64,
}

/// Something other than a connection or a lease that keeps the instance awake while it lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ActivityHolder {
    /// What kind of thing: `exec`, `pty`, ...
    pub kind: String,
    /// Which one, e.g. an exec id and its command.
    pub label: String,
    /// Milliseconds it has been held.
    pub held_for_ms: u64,
}

/// The idle timers as of now. `None` means the timer is not running (something keeps the
/// instance awake, or it is not in a state the timer applies to).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IdleTimers {
    /// Milliseconds until the idle timer pauses it (running instances).
    pub pauses_in_ms: Option<u64>,
    /// Milliseconds until the idle timer terminates it (running or paused instances).
    pub terminates_in_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_bounded() {
        assert_eq!(check_lease_ttl(1), Ok(1));
        assert_eq!(check_lease_ttl(MAX_LEASE_TTL_SECS), Ok(86400));
        for bad in [0, -1, i64::MIN, MAX_LEASE_TTL_SECS + 1, i64::MAX] {
            let e = check_lease_ttl(bad).unwrap_err();
            assert!(
                e.contains(&bad.to_string()) && e.contains("out of range"),
                "{e}"
            );
        }
    }

    #[test]
    fn holders_are_short_and_printable() {
        assert!(check_lease_holder("agent-7").is_ok());
        assert!(check_lease_holder(&"x".repeat(201)).is_err());
        assert!(check_lease_holder("a\nb").is_err());
    }
}
