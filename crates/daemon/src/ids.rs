//! Identifiers and timestamps.

use std::time::SystemTime;

use rand::Rng;

/// `prefix-` + 12 random hex digits, e.g. `task-3f9a1c2b7d4e`.
pub fn new_id(prefix: &str) -> String {
    let n: u64 = rand::thread_rng().gen::<u64>() & 0xffff_ffff_ffff;
    format!("{prefix}-{n:012x}")
}

/// Now, RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = super::new_id("task");
        let b = super::new_id("task");
        assert!(a.starts_with("task-") && a.len() == 17, "{a}");
        assert_ne!(a, b);
    }
}
