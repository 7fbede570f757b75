//! Guest paths under the agent's root directory.
//!
//! In a guest the root is `/`; in the fake backend it is a temporary directory that stands in
//! for the guest's file system. Paths are normalised lexically: `..` never climbs above the
//! root, so a request cannot name a file outside it (symlinks inside the tree are not resolved
//! here; in a real guest there is nothing outside the root to escape to).

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

/// The components of `path` once `.` and `..` are resolved, `..` stopping at the root.
fn normalize(path: &str) -> Vec<&OsStr> {
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(p) => parts.push(p),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    parts
}

/// Maps the guest path `path` (absolute, or relative to `/`) to a path under `root`.
pub(crate) fn under_root(root: &Path, path: &str) -> PathBuf {
    let mut out = root.to_path_buf();
    out.extend(normalize(path));
    out
}

/// The name an archive of `path` starts with: its last component, or `.` for the root.
pub(crate) fn archive_name(path: &str) -> PathBuf {
    normalize(path)
        .last()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_under_root() {
        let root = Path::new("/r");
        assert_eq!(under_root(root, "/"), Path::new("/r"));
        assert_eq!(under_root(root, "/a/b"), Path::new("/r/a/b"));
        assert_eq!(under_root(root, "a/./b/"), Path::new("/r/a/b"));
        assert_eq!(under_root(root, "/../../etc"), Path::new("/r/etc"));
        assert_eq!(under_root(root, "/a/../b"), Path::new("/r/b"));
    }

    #[test]
    fn archive_names() {
        assert_eq!(archive_name("/"), Path::new("."));
        assert_eq!(archive_name("/etc/hostname"), Path::new("hostname"));
        assert_eq!(archive_name("/srv/app/"), Path::new("app"));
        assert_eq!(archive_name("/srv/.."), Path::new("."));
    }
}
