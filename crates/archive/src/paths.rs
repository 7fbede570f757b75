//! Name checks for the entries of an untrusted archive. `tar`'s `unpack_in` already refuses
//! `..` and absolute names and never writes through a symlink an earlier entry made; these
//! are the checks it leaves to its caller: where a link points.

use std::path::{Component, Path};

/// Whether the relative path `p` stays inside its root once its `..` components are applied
/// (`a/../b` does, `a/../../b` and any absolute path do not).
pub fn stays_inside(p: &Path) -> bool {
    let mut depth: i64 = 0;
    for c in p.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Whether the link entry `path` -> `target` points inside the archive's root: a symlink's
/// target is resolved from the link's own directory, a hard link's from the root.
pub fn link_stays_inside(path: &Path, target: &Path, hard: bool) -> bool {
    let base = match (hard, path.parent()) {
        (false, Some(dir)) => dir,
        _ => Path::new(""),
    };
    !target.is_absolute() && stays_inside(&base.join(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_and_out() {
        assert!(stays_inside(Path::new("a/b")));
        assert!(stays_inside(Path::new("./a/../b")));
        assert!(!stays_inside(Path::new("a/../../b")));
        assert!(!stays_inside(Path::new("/etc")));
    }

    #[test]
    fn links_resolve_from_their_directory_or_the_root() {
        let p = Path::new("d/link");
        assert!(link_stays_inside(p, Path::new("../x"), false));
        assert!(!link_stays_inside(p, Path::new("../x"), true));
        assert!(!link_stays_inside(p, Path::new("../../x"), false));
        assert!(!link_stays_inside(p, Path::new("/etc/passwd"), false));
        assert!(link_stays_inside(p, Path::new("d/x"), true));
    }
}
