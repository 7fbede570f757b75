//! The Python that has the project's Python test tools (openapi-spec-validator, schemathesis,
//! pytest and the SDK's dependencies).

use std::path::Path;

/// Where `scripts/deps.sh` installs the Python test tools: Debian 12 packages none of them and
/// its system Python refuses `pip install`, so they live in a venv of their own.
pub const VENV_PYTHON: &str = "/opt/aegis/python/bin/python3";

/// `AEGIS_PYTHON` if set, else [`VENV_PYTHON`] if it exists, else `python3` (whose missing
/// module then fails the caller's test with its install hint).
pub fn test_tools_python() -> String {
    if let Ok(p) = std::env::var("AEGIS_PYTHON") {
        return p;
    }
    if Path::new(VENV_PYTHON).exists() {
        return VENV_PYTHON.to_string();
    }
    "python3".to_string()
}
