//! Exit codes, chosen to match docker and timeout(1) so scripts can tell them apart.

/// Aegis itself failed: daemon not running, bad arguments, VM failure.
pub const AEGIS_ERROR: i32 = 125;
/// The task ran out of time (as timeout(1)).
pub const TIMED_OUT: i32 = 124;
/// Interrupted by SIGINT (128 + 2).
pub const SIGINT: i32 = 130;
/// Killed: the task was cancelled by someone else (128 + SIGKILL, as `docker kill`).
pub const KILLED: i32 = 137;
/// Stopped by SIGTERM (128 + 15).
pub const SIGTERM: i32 = 143;
/// `aegis doctor` found a blocking problem; `aegis status` found no daemon.
pub const CHECK_FAILED: i32 = 1;

/// A task exit status as a process exit code (0..=255).
pub fn clamp(code: i32) -> i32 {
    if (0..=255).contains(&code) {
        code
    } else {
        AEGIS_ERROR
    }
}
