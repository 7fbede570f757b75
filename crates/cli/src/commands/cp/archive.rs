//! The host side of `aegis cp`: a host path packed as a tar stream for the guest, and a tar
//! stream from the guest unpacked under a destination it can never leave.
//!
//! The guest is untrusted. Entries named with `..` or an absolute path are refused, and so is
//! any entry that would be written through a symlink (`unpack_in` checks every parent against
//! the destination), a hard link to a file outside, and device nodes (skipped with a warning,
//! as an unprivileged `docker cp` does; fifos are made). Symlinks themselves are kept as they
//! are, absolute ones too: they are data, and nothing is ever written through them. Setuid
//! and setgid bits are dropped; the other mode bits are kept.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use aegis_archive::{stays_inside, ChunkWriter};
use bytes::Bytes;
use tokio::sync::mpsc;

/// What a host-side unpack did not keep.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Device nodes, by archive name.
    pub devices: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("archive entry '{0}' would land outside the destination; refused, nothing kept")]
    Escape(String),
    #[error("cannot unpack into {dir}: {source}")]
    Io { dir: String, source: io::Error },
}

/// Unpacks `archive` into the directory `dest`, which must exist.
pub fn unpack(archive: impl Read, dest: &Path) -> Result<Skipped, UnpackError> {
    let io = |source| UnpackError::Io {
        dir: dest.display().to_string(),
        source,
    };
    let mut skipped = Skipped::default();
    let mut ar = tar::Archive::new(archive);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(true);
    for entry in ar.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let path = entry.path().map_err(io)?.into_owned();
        let name = path.display().to_string();
        if !stays_inside(&path) {
            return Err(UnpackError::Escape(name));
        }
        use tar::EntryType::*;
        match entry.header().entry_type() {
            Char | Block => {
                skipped.devices.push(name);
                continue;
            }
            Fifo => {
                // tar would make a regular file of it.
                let mode = entry.header().mode().map_err(io)? & 0o777;
                make_fifo(dest, &path, mode).map_err(|e| match e {
                    FifoError::Escape => UnpackError::Escape(name),
                    FifoError::Io(source) => io(source),
                })?;
                continue;
            }
            Link => {
                let target = entry.link_name().map_err(io)?.unwrap_or_default();
                if !stays_inside(&target) {
                    return Err(UnpackError::Escape(name));
                }
            }
            _ => {}
        }
        if !entry.unpack_in(dest).map_err(io)? {
            return Err(UnpackError::Escape(name));
        }
        drop_setid_bits(&dest.join(&path)).map_err(io)?;
    }
    Ok(skipped)
}

enum FifoError {
    Escape,
    Io(io::Error),
}

/// Makes the fifo `path` under `dest`, whose parent must already be inside `dest` (not reached
/// through a symlink out of it).
fn make_fifo(dest: &Path, path: &Path, mode: u32) -> Result<(), FifoError> {
    let full = dest.join(path);
    let parent = full.parent().ok_or(FifoError::Escape)?;
    let inside = fs::canonicalize(parent)
        .and_then(|p| Ok(p.starts_with(fs::canonicalize(dest)?)))
        .map_err(FifoError::Io)?;
    if !inside {
        return Err(FifoError::Escape);
    }
    match fs::remove_file(&full) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(FifoError::Io(e)),
        _ => {}
    }
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(full.as_os_str().as_bytes())
        .map_err(|e| FifoError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(c.as_ptr(), mode) } != 0 {
        return Err(FifoError::Io(io::Error::last_os_error()));
    }
    Ok(())
}

fn drop_setid_bits(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(path)?;
    let mode = meta.permissions().mode();
    if meta.file_type().is_symlink() || mode & 0o6000 == 0 {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode & !0o6000))
}

/// Packs the host path `source` as `name` (recursively, links kept as links) into chunks
/// sent on `tx`, for a blocking thread. Sockets cannot be archived and are skipped.
pub fn pack(source: &Path, name: &Path, tx: mpsc::Sender<io::Result<Bytes>>) -> io::Result<()> {
    let skipped = &mut |p: &Path| eprintln!("aegis: skipping socket {}", p.display());
    aegis_archive::pack(source, name, ChunkWriter::new(tx), skipped)
        .map(drop)
        .map_err(|e| io::Error::new(e.source.kind(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn header(kind: tar::EntryType, path: &str, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        // set_path refuses `..`: write the raw name so that hostile archives can be built.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        h
    }

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    #[test]
    fn dot_dot_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let a = archive(|b| {
            let h = header(tar::EntryType::Regular, "../evil", 1, 0o644);
            b.append(&h, &b"x"[..]).unwrap();
        });
        assert!(matches!(unpack(&a[..], &dest), Err(UnpackError::Escape(_))));
        assert!(!dir.path().join("evil").exists());
    }

    #[test]
    fn nothing_is_written_through_an_absolute_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let dest = dir.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let a = archive(|b| {
            let mut h = header(tar::EntryType::Symlink, "link", 0, 0o777);
            b.append_link(&mut h, "link", &outside).unwrap();
            let h = header(tar::EntryType::Regular, "link/planted", 1, 0o644);
            b.append(&h, &b"x"[..]).unwrap();
        });
        assert!(unpack(&a[..], &dest).is_err());
        assert!(
            !outside.join("planted").exists(),
            "written outside the destination"
        );
    }

    #[test]
    fn hard_links_out_of_the_destination_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(|b| {
            let mut h = header(tar::EntryType::Link, "l", 0, 0o644);
            b.append_link(&mut h, "l", "../../etc/passwd").unwrap();
        });
        assert!(matches!(
            unpack(&a[..], dir.path()),
            Err(UnpackError::Escape(_))
        ));
    }

    #[test]
    fn modes_are_kept_but_setid_bits_and_devices_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(|b| {
            let h = header(tar::EntryType::Regular, "run", 2, 0o4755);
            b.append(&h, &b"#!"[..]).unwrap();
            let h = header(tar::EntryType::Char, "null", 0, 0o666);
            b.append(&h, &[][..]).unwrap();
        });
        let skipped = unpack(&a[..], dir.path()).unwrap();
        assert_eq!(skipped.devices, ["null"]);
        let mode = fs::metadata(dir.path().join("run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert!(!dir.path().join("null").exists());
    }

    #[test]
    fn a_packed_tree_with_a_fifo_unpacks_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/x"), b"data").unwrap();
        fs::set_permissions(src.join("sub/x"), fs::Permissions::from_mode(0o640)).unwrap();
        let fifo = std::ffi::CString::new(src.join("pipe").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let (tx, mut rx) = mpsc::channel(1024);
        pack(&src, Path::new("copy"), tx).unwrap();
        let mut bytes = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        let dest = dir.path().join("dest");
        fs::create_dir(&dest).unwrap();
        unpack(&bytes[..], &dest).unwrap();
        assert_eq!(fs::read(dest.join("copy/sub/x")).unwrap(), b"data");
        let mode = fs::metadata(dest.join("copy/sub/x"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        use std::os::unix::fs::FileTypeExt;
        let pipe = fs::symlink_metadata(dest.join("copy/pipe")).unwrap();
        assert!(pipe.file_type().is_fifo());
    }
}
