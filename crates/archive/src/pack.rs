//! A file or directory packed as a tar archive under the name the other side will see.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Packing failed at `path` (a file, or the output when the other side stopped reading:
/// `BrokenPipe`).
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct PackError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Packs `source` as `name` into `out` and returns `out`, flushed. Directories are walked in
/// name order; symlinks are archived as links and never followed, so nothing outside the tree
/// is read; modes, owners and mtimes are kept; device nodes and fifos are archived as such
/// (what the reader keeps of them is its decision). Sockets cannot be archived: each is
/// passed to `skipped` and left out.
pub fn pack<W: Write>(
    source: &Path,
    name: &Path,
    out: W,
    skipped: &mut dyn FnMut(&Path),
) -> Result<W, PackError> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    append(&mut tar, source, name, skipped)?;
    let at = |source| PackError {
        path: name.to_path_buf(),
        source,
    };
    let mut out = tar.into_inner().map_err(at)?;
    out.flush().map_err(at)?;
    Ok(out)
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    source: &Path,
    name: &Path,
    skipped: &mut dyn FnMut(&Path),
) -> Result<(), PackError> {
    let at = |e| PackError {
        path: source.to_path_buf(),
        source: e,
    };
    let meta = fs::symlink_metadata(source).map_err(at)?;
    let kind = meta.file_type();
    if kind.is_socket() {
        skipped(source);
        return Ok(());
    }
    if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
        return append_special(tar, &meta, name).map_err(at);
    }
    tar.append_path_with_name(source, name).map_err(at)?;
    if kind.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(source)
            .map_err(at)?
            .collect::<Result<_, _>>()
            .map_err(at)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            append(tar, &entry.path(), &name.join(entry.file_name()), skipped)?;
        }
    }
    Ok(())
}

/// Appends a device node or fifo as `name`. tar 0.4's own `append_path_with_name` names these
/// entries after the source path instead of `name`, which it then refuses as absolute.
fn append_special<W: Write>(
    tar: &mut tar::Builder<W>,
    meta: &fs::Metadata,
    name: &Path,
) -> io::Result<()> {
    let kind = meta.file_type();
    let entry_type = if kind.is_fifo() {
        tar::EntryType::Fifo
    } else if kind.is_char_device() {
        tar::EntryType::Char
    } else {
        tar::EntryType::Block
    };
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    header.set_entry_type(entry_type);
    header.set_size(0);
    header.set_device_major(libc::major(meta.rdev()))?;
    header.set_device_minor(libc::minor(meta.rdev()))?;
    tar.append_data(&mut header, name, io::empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entries(bytes: &[u8]) -> Vec<(String, tar::EntryType, u32)> {
        tar::Archive::new(bytes)
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.mode().unwrap() & 0o7777,
                )
            })
            .collect()
    }

    #[test]
    fn a_tree_is_named_from_its_archive_name_in_order_with_fifos_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("b")).unwrap();
        fs::write(src.join("b/x"), b"data").unwrap();
        fs::set_permissions(src.join("b/x"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("a-link")).unwrap();
        let fifo = std::ffi::CString::new(src.join("pipe").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();

        let mut left_out = Vec::new();
        let bytes = pack(&src, Path::new("copy"), Vec::new(), &mut |p| {
            left_out.push(p.to_path_buf())
        })
        .unwrap();
        drop(sock);
        assert_eq!(left_out, [src.join("sock")]);
        let got = entries(&bytes);
        let names: Vec<_> = got.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["copy", "copy/a-link", "copy/b", "copy/b/x", "copy/pipe"]
        );
        assert_eq!(got[1].1, tar::EntryType::Symlink, "links are not followed");
        assert_eq!((got[3].1, got[3].2), (tar::EntryType::Regular, 0o640));
        assert_eq!((got[4].1, got[4].2), (tar::EntryType::Fifo, 0o600));
    }

    #[test]
    fn a_missing_source_names_itself() {
        let e = pack(
            Path::new("/nonexistent/aegis"),
            Path::new("x"),
            Vec::new(),
            &mut |_| {},
        )
        .unwrap_err();
        assert_eq!(e.path, Path::new("/nonexistent/aegis"));
        assert_eq!(e.source.kind(), io::ErrorKind::NotFound);
    }
}
