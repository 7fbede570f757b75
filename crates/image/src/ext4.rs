//! ext4 filesystems in plain files: read-only root images made from a directory tree, and
//! empty per-instance scratch disks. No loop mounts, no root needed for the tool itself.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::cmd::{self, Tool};
use crate::error::{ImageError, IoContext, Result};
use crate::layout::create_dir_all;

const MKFS: Tool = Tool::new("mkfs.ext4", "create ext4 disk images", "e2fsprogs");

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;
const INODE_SIZE: u64 = 256;

/// Identifies the mkfs options of [`ext4_from_dir`]; part of every image recipe hash.
pub(crate) const IMAGE_FORMAT: &str = "ext4 4k-blocks no-journal no-resize-inode v1";

/// Smallest scratch disk we create: below this ext4's own metadata and journal dominate.
pub const MIN_SCRATCH_BYTES: u64 = 16 * MIB;

/// Filesystem label of scratch disks (the harness can find them by it).
pub const SCRATCH_LABEL: &str = "aegis-scratch";

/// Create an empty ext4 scratch disk of `size_bytes` at `path` (a sparse file; it occupies
/// ~2 MB until the guest writes to it). Written to a temporary file and renamed into place,
/// so `path` never holds a half-formatted disk. Replaces an existing file at `path`.
///
/// `mkfs.ext4` with lazy inode-table and journal init takes ~10 ms for any size here, and
/// because discarding a file punches holes (reads back zeros) mkfs marks the inode tables as
/// already zeroed, so the guest kernel's lazy-init thread has nothing to do either.
pub fn create_scratch_disk(path: &Path, size_bytes: u64) -> Result<()> {
    if size_bytes < MIN_SCRATCH_BYTES {
        return Err(ImageError::InvalidScratchSize {
            path: path.to_path_buf(),
            size_bytes,
            reason: "a scratch disk needs at least 16 MiB",
        });
    }
    let mkfs = MKFS.find()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dir_all(dir)?;
    let tmp = tempfile::Builder::new()
        .prefix(".scratch-")
        .tempfile_in(dir)
        .ctx("create temporary file in", dir)?;
    tmp.as_file()
        .set_len(size_bytes)
        .ctx("size scratch disk", tmp.path())?;
    cmd::run(
        Command::new(mkfs)
            .args(["-q", "-F", "-m", "0", "-L", SCRATCH_LABEL])
            .args([
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
            ])
            .arg(tmp.path()),
        "Check that the disk holding the Aegis home has free space.",
    )?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o600))
        .ctx("set permissions of", tmp.path())?;
    tmp.persist(path)
        .map_err(|e| ImageError::io("rename into place", path, e.error))?;
    Ok(())
}

/// Space and inodes a directory tree needs in ext4 (4 KiB blocks), not following symlinks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TreeUsage {
    pub bytes: u64,
    pub inodes: u64,
}

pub(crate) fn tree_usage(root: &Path) -> Result<TreeUsage> {
    let mut usage = TreeUsage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        usage.inodes += 1;
        usage.bytes += BLOCK;
        for entry in fs::read_dir(&dir).ctx("read directory", &dir)? {
            let entry = entry.ctx("read directory", &dir)?;
            let meta = entry.path().symlink_metadata().ctx("stat", entry.path())?;
            if meta.is_dir() {
                stack.push(entry.path());
                continue;
            }
            usage.inodes += 1;
            // Regular files take whole blocks; symlinks of 60+ bytes need one block; device
            // nodes, fifos and short symlinks live in the inode. Hard links are counted once
            // per name, which only overestimates.
            if meta.is_file() || (meta.file_type().is_symlink() && meta.len() >= 60) {
                usage.bytes += meta.len().max(1).div_ceil(BLOCK) * BLOCK;
            }
        }
    }
    Ok(usage)
}

/// Image size and inode count for a tree: the data plus inode tables, with 15 % + 16 MiB of
/// room for ext4's own metadata (bitmaps, descriptors, extent blocks, directory growth).
pub(crate) fn image_geometry(usage: TreeUsage) -> (u64, u64) {
    let inodes = usage.inodes + usage.inodes / 4 + 256;
    let raw = usage.bytes + inodes * INODE_SIZE;
    let size = (raw + raw * 15 / 100 + 16 * MIB).div_ceil(MIB) * MIB;
    (size, inodes)
}

/// Make a journal-less ext4 image of `tree` at `out` (any previous file is replaced; the
/// caller renames into the final place). The image is meant to be mounted read-only.
pub(crate) fn ext4_from_dir(tree: &Path, out: &Path, label: &str) -> Result<u64> {
    let mkfs = MKFS.find()?;
    let (size, inodes) = image_geometry(tree_usage(tree)?);
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(out)
        .ctx("create", out)?;
    file.set_len(size).ctx("size image", out)?;
    drop(file);
    cmd::run(
        Command::new(mkfs)
            .args(["-q", "-F", "-b", "4096", "-m", "0", "-L", label])
            // Read-only images: no journal, never resized.
            .args(["-O", "^has_journal,^resize_inode"])
            .arg("-N")
            .arg(inodes.to_string())
            .args(["-E", "root_owner=0:0"])
            .arg("-d")
            .arg(tree)
            .arg(out),
        "Check that the disk holding the Aegis home has free space.",
    )?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_leaves_room() {
        let (size, inodes) = image_geometry(TreeUsage {
            bytes: 100 * MIB,
            inodes: 4000,
        });
        assert_eq!(size % MIB, 0);
        assert!(size >= 100 * MIB + 15 * MIB + 16 * MIB, "{size}");
        assert!(inodes >= 5000);
    }

    #[test]
    fn usage_counts_blocks_and_inodes() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/f"), vec![1u8; 5000]).unwrap();
        fs::write(dir.path().join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("short", dir.path().join("l")).unwrap();
        let u = tree_usage(dir.path()).unwrap();
        assert_eq!(u.inodes, 5); // root, d, d/f, empty, l
        assert_eq!(u.bytes, 2 * BLOCK + 2 * BLOCK + BLOCK);
    }

    #[test]
    fn scratch_disk_is_sparse_ext4() {
        if MKFS.find().is_err() {
            eprintln!("mkfs.ext4 not installed: skipping");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("scratch.ext4");
        create_scratch_disk(&disk, 1 << 30).unwrap();
        let meta = fs::metadata(&disk).unwrap();
        assert_eq!(meta.len(), 1 << 30);
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 < 64 * MIB,
            "not sparse: {}",
            meta.blocks()
        );
        let mut magic = [0u8; 2];
        use std::io::{Read, Seek, SeekFrom};
        let mut f = fs::File::open(&disk).unwrap();
        f.seek(SeekFrom::Start(1024 + 0x38)).unwrap();
        f.read_exact(&mut magic).unwrap();
        assert_eq!(u16::from_le_bytes(magic), 0xEF53);
        // Exactly one file left: the temporary was renamed, not copied.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn tiny_scratch_disk_is_refused() {
        let err = create_scratch_disk(Path::new("/tmp/x.ext4"), 4096)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("16 MiB") && err.contains("/tmp/x.ext4"),
            "{err}"
        );
    }

    #[test]
    fn image_from_tree_holds_the_files() {
        if MKFS.find().is_err() {
            eprintln!("mkfs.ext4 not installed: skipping");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("etc")).unwrap();
        fs::write(tree.join("etc/hostname"), "aegis\n").unwrap();
        let out = dir.path().join("img.ext4");
        let size = ext4_from_dir(&tree, &out, "aegis-test").unwrap();
        assert_eq!(fs::metadata(&out).unwrap().len(), size);
        if let Some(debugfs) = cmd::find_executable("debugfs") {
            let out = Command::new(debugfs)
                .args(["-R", "cat /etc/hostname"])
                .arg(&out)
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), "aegis\n");
        }
    }
}
