//! Unpacking artifacts the guest sent as tar archives. The guest is untrusted: entries that
//! would land outside the destination (`..`, absolute paths, links pointing out) are refused.

use std::path::{Component, Path};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact archive entry '{0}' escapes the artifacts directory; refused")]
    Escape(String),
    #[error("artifact archive entry '{0}' is a device or fifo; refused")]
    Special(String),
    #[error("cannot unpack artifacts into {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
}

fn is_contained(p: &Path) -> bool {
    p.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Unpacks `archive` into `dest`, refusing anything that could escape it.
pub fn unpack(archive: &[u8], dest: &Path) -> Result<(), ArtifactError> {
    let io = |source| ArtifactError::Io {
        dir: dest.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dest).map_err(io)?;
    let mut ar = tar::Archive::new(archive);
    ar.set_preserve_permissions(true);
    ar.set_overwrite(true);
    for entry in ar.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let path = entry.path().map_err(io)?.into_owned();
        let name = path.display().to_string();
        if !is_contained(&path) {
            return Err(ArtifactError::Escape(name));
        }
        use tar::EntryType::*;
        match entry.header().entry_type() {
            Symlink | Link => {
                let target = entry
                    .link_name()
                    .map_err(io)?
                    .unwrap_or_default()
                    .into_owned();
                // A link's target is resolved relative to the link's directory.
                let resolved = path.parent().unwrap_or(Path::new("")).join(&target);
                if target.is_absolute() || !stays_inside(&resolved) {
                    return Err(ArtifactError::Escape(name));
                }
            }
            Char | Block | Fifo => return Err(ArtifactError::Special(name)),
            _ => {}
        }
        // unpack_in re-checks containment against symlinks created by earlier entries.
        if !entry.unpack_in(dest).map_err(io)? {
            return Err(ArtifactError::Escape(name));
        }
    }
    Ok(())
}

/// Whether a relative path stays inside its root once `..` components are applied.
fn stays_inside(p: &Path) -> bool {
    let mut depth: i64 = 0;
    for c in p.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses `..`; write the raw name to build hostile archives.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, path, target).unwrap();
    }

    #[test]
    fn unpacks_plain_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(|b| file(b, "out/result.txt", b"42\n"));
        unpack(&a, dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("out/result.txt")).unwrap(),
            b"42\n"
        );
    }

    #[test]
    fn refuses_parent_traversal() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(|b| file(b, "../../etc/passwd", b"x"));
        assert!(matches!(
            unpack(&a, &dir.path().join("d")),
            Err(ArtifactError::Escape(_))
        ));
        assert!(!dir.path().join("etc").exists());
    }

    #[test]
    fn refuses_escaping_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        for target in ["/etc", "../../outside", "a/../../.."] {
            let a = archive(|b| link(b, "evil", target));
            assert!(
                matches!(unpack(&a, dir.path()), Err(ArtifactError::Escape(_))),
                "{target}"
            );
        }
        let ok = archive(|b| link(b, "sub/ok", "../sibling"));
        unpack(&ok, dir.path()).unwrap();
    }
}
