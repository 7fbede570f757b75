//! Copying a sparse file (a VM's scratch disk: 4 GiB, mostly holes) without filling its holes.
//!
//! Only the data extents the file system reports (`SEEK_DATA`/`SEEK_HOLE`) are read, and
//! all-zero blocks inside them are skipped, so the copy uses no more disk than the original.
//! The copy is written under a temporary name and renamed into place: a reader never sees a
//! half-written file under the final name.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Copy unit; all-zero chunks of this size are left as holes.
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SparseCopyError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Copies `from` to `to` keeping holes; `to` is replaced atomically.
pub fn sparse_copy(from: &Path, to: &Path) -> Result<(), SparseCopyError> {
    let read = |source| SparseCopyError::Read {
        path: from.to_path_buf(),
        source,
    };
    let tmp = temp_name(to);
    let write = |source| SparseCopyError::Write {
        path: tmp.clone(),
        source,
    };
    let src = File::open(from).map_err(read)?;
    let len = src.metadata().map_err(read)?.len();
    let _ = std::fs::remove_file(&tmp);
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write)?;
    let copied = (|| {
        dst.set_len(len).map_err(write)?;
        let mut buf = vec![0u8; CHUNK];
        let mut pos = 0;
        while pos < len {
            let Some((start, end)) = next_extent(&src, pos, len).map_err(read)? else {
                break;
            };
            copy_extent(&src, &dst, start, end, &mut buf, &read, &write)?;
            pos = end;
        }
        dst.sync_all().map_err(write)
    })();
    if let Err(e) = copied.and_then(|()| std::fs::rename(&tmp, to).map_err(write)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

fn temp_name(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(".copying");
    to.with_file_name(name)
}

/// The next data extent `[start, end)` at or after `pos`, or `None` if only holes remain. A
/// file system without `SEEK_DATA` reports the whole rest of the file as data.
fn next_extent(file: &File, pos: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let start = match seek(file, pos, libc::SEEK_DATA) {
        Ok(s) => s,
        // ENXIO: no data after `pos`.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(Some((pos, len))),
        Err(e) => return Err(e),
    };
    if start >= len {
        return Ok(None);
    }
    let end = seek(file, start, libc::SEEK_HOLE)?.min(len);
    Ok(Some((start, end)))
}

fn seek(file: &File, pos: u64, whence: libc::c_int) -> io::Result<u64> {
    let offset =
        libc::off_t::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek on a descriptor `file` owns for the duration of the call; it only moves the
    // file offset (every read and write here is positional, so the offset is not relied on).
    let r = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as u64)
}

fn copy_extent(
    src: &File,
    dst: &File,
    start: u64,
    end: u64,
    buf: &mut [u8],
    read: &dyn Fn(io::Error) -> SparseCopyError,
    write: &dyn Fn(io::Error) -> SparseCopyError,
) -> Result<(), SparseCopyError> {
    let mut pos = start;
    while pos < end {
        let want = usize::try_from(end - pos).map_or(buf.len(), |n| n.min(buf.len()));
        let n = src.read_at(&mut buf[..want], pos).map_err(read)?;
        if n == 0 {
            // The source shrank while being copied: what is left stays a hole.
            break;
        }
        let chunk = &buf[..n];
        if chunk.iter().any(|b| *b != 0) {
            dst.write_all_at(chunk, pos).map_err(write)?;
        }
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn data_is_copied_and_holes_stay_holes() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("disk");
        let to = dir.path().join("copy");
        let f = File::create(&from).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(&[7u8; 3 * CHUNK / 2], 40 << 20).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        drop(f);
        // A stale temporary from an interrupted copy is replaced, not an error.
        std::fs::write(temp_name(&to), b"stale").unwrap();

        sparse_copy(&from, &to).unwrap();

        assert_eq!(std::fs::read(&from).unwrap(), std::fs::read(&to).unwrap());
        let allocated = std::fs::metadata(&to).unwrap().blocks() * 512;
        assert!(
            allocated < 8 << 20,
            "the copy of a 64 MiB file with 1.5 MiB of data allocates {allocated} bytes"
        );
        assert!(!temp_name(&to).exists());
    }

    #[test]
    fn a_missing_source_names_it_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("copy");
        let e = sparse_copy(&dir.path().join("absent"), &to).unwrap_err();
        assert!(e.to_string().contains("absent"), "{e}");
        assert!(!to.exists() && !temp_name(&to).exists());
    }
}
