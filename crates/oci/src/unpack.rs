//! Applying image layers to a directory, safely.
//!
//! Every entry path is checked before anything is written: entries with `..` components and
//! absolute paths are refused. Parent directories are resolved one component at a time inside
//! the destination: a symlink met on the way is followed *within* the destination (an absolute
//! target is taken relative to the destination root, as it would be inside the guest, e.g.
//! `/var/run -> /run`), and one whose relative target climbs above the root is refused. The final
//! component is never followed: an existing file, symlink or directory there is replaced.

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::error::{Error, Result};
use crate::limits::CappedReader;

/// Prefix of a whiteout entry: `.wh.NAME` deletes `NAME` of the layers below.
const WHITEOUT_PREFIX: &str = ".wh.";
/// An opaque-directory marker: hides everything the layers below put in its directory.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// How many symlinks one path resolution may follow.
const MAX_SYMLINKS: usize = 40;

/// The overlayfs xattr that marks a directory opaque in a lower layer.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What whiteout entries (`.wh.NAME`, `.wh..wh..opq`) do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Whiteouts {
    /// Apply them: delete what lower layers put in the same directory tree. For flattening
    /// several layers into one tree.
    #[default]
    Apply,
    /// Translate them into overlayfs' own format, for one layer unpacked on its own that
    /// overlayfs will stack: `.wh.NAME` becomes a 0/0 character device `NAME`, and
    /// `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its directory. Needs root.
    Overlay,
}

/// How layers are applied.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Set the owner and group recorded in the layer (needs root). Defaults to whether the
    /// process runs as root.
    pub preserve_ownership: bool,
    pub whiteouts: Whiteouts,
    /// The most uncompressed tar stream one layer may be: unpacking stops with
    /// [`Error::LayerOverLimit`] past it. The [`crate::Store`] methods set it from the store's
    /// [`crate::Limits`]; defaults to [`crate::Limits::default`]'s.
    pub max_unpacked_bytes: u64,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        UnpackOptions {
            preserve_ownership: euid == 0,
            whiteouts: Whiteouts::Apply,
            max_unpacked_bytes: crate::limits::DEFAULT_MAX_LAYER_UNPACKED_BYTES,
        }
    }
}

/// Opens a layer blob, decompressing gzip or zstd (recognised by their magic bytes) or reading
/// a plain tar.
pub(crate) fn open_layer(path: &Path) -> Result<Box<dyn Read>> {
    let file = File::open(path).map_err(|e| Error::io("open layer blob", path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let head = reader
        .fill_buf()
        .map_err(|e| Error::io("read layer blob", path, e))?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(|e| Error::io("start zstd decoder for", path, e))?,
        )
    } else {
        Box::new(reader)
    })
}

/// Applies one (uncompressed) layer tar stream on top of `root`.
///
/// `layer` names the layer in errors (usually its digest). Past
/// [`UnpackOptions::max_unpacked_bytes`] it stops with [`Error::LayerOverLimit`], having removed
/// the file it was writing; what earlier entries wrote stays (callers unpack into a directory
/// of their own and remove it, as the [`crate::Store`] methods do).
pub fn unpack_layer<R: Read>(
    reader: R,
    root: &Path,
    layer: &str,
    options: &UnpackOptions,
) -> Result<()> {
    let (reader, tripped) = CappedReader::new(reader, options.max_unpacked_bytes);
    match unpack_capped(reader, root, layer, options) {
        Err(_) if tripped.get() => Err(Error::LayerOverLimit {
            layer: layer.to_string(),
            limit: options.max_unpacked_bytes,
        }),
        other => other,
    }
}

fn unpack_capped<R: Read>(
    reader: R,
    root: &Path,
    layer: &str,
    options: &UnpackOptions,
) -> Result<()> {
    let mut unpacker = Unpacker {
        root: root.to_path_buf(),
        layer,
        options,
        touched: HashSet::new(),
        dirs: Vec::new(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| unpacker.bad(e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| unpacker.bad(e))?;
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish_dirs()
}

struct Unpacker<'a> {
    root: PathBuf,
    layer: &'a str,
    options: &'a UnpackOptions,
    /// Paths (relative to root) written by this layer, and all their ancestors.
    touched: HashSet<PathBuf>,
    /// Directories whose mode and mtime are applied once the layer is complete (so that a
    /// read-only directory can still receive its entries).
    dirs: Vec<(PathBuf, u32, u64)>,
}

/// Splits an entry path into its normal components, refusing `..` and absolute paths.
pub(crate) fn sanitize(path: &Path) -> std::result::Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => return Err("the path contains a `..` component".into()),
            Component::RootDir | Component::Prefix(_) => return Err("the path is absolute".into()),
        }
    }
    Ok(out)
}

impl Unpacker<'_> {
    fn bad(&self, e: io::Error) -> Error {
        Error::BadLayer {
            layer: self.layer.to_string(),
            detail: e.to_string(),
        }
    }

    fn unsafe_entry(&self, entry: &Path, reason: impl Into<String>) -> Error {
        Error::UnsafeEntry {
            layer: self.layer.to_string(),
            entry: entry.display().to_string(),
            reason: reason.into(),
        }
    }

    /// Resolves the directory `components` (relative to root) to a real directory inside root,
    /// following symlinks within root. Missing directories are created when `create`; otherwise
    /// `None` is returned for a missing one.
    fn resolve_dir(
        &self,
        components: &[OsString],
        entry: &Path,
        create: bool,
    ) -> Result<Option<PathBuf>> {
        let mut pending: VecDeque<OsString> = components.iter().cloned().collect();
        let mut current: Vec<OsString> = Vec::new();
        let mut followed = 0;
        while let Some(c) = pending.pop_front() {
            if c == ".." {
                if current.pop().is_none() {
                    return Err(self.unsafe_entry(
                        entry,
                        "a symlink on its path points outside the image root",
                    ));
                }
                continue;
            }
            if c == "." || c.is_empty() {
                continue;
            }
            let mut path = self.root.clone();
            path.extend(&current);
            path.push(&c);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => current.push(c),
                Ok(m) if m.file_type().is_symlink() => {
                    followed += 1;
                    if followed > MAX_SYMLINKS {
                        return Err(self.unsafe_entry(entry, "too many levels of symlinks"));
                    }
                    let target =
                        fs::read_link(&path).map_err(|e| Error::io("read symlink", &path, e))?;
                    if target.is_absolute() {
                        current.clear();
                    }
                    let mut resolved: Vec<OsString> = Vec::new();
                    for tc in target.components() {
                        match tc {
                            Component::Normal(n) => resolved.push(n.to_os_string()),
                            Component::ParentDir => resolved.push("..".into()),
                            _ => {}
                        }
                    }
                    for n in resolved.into_iter().rev() {
                        pending.push_front(n);
                    }
                }
                Ok(_) => {
                    return Err(self.unsafe_entry(
                        entry,
                        format!("its parent {} is not a directory", path.display()),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(None);
                    }
                    fs::create_dir(&path).map_err(|e| Error::io("create directory", &path, e))?;
                    current.push(c);
                }
                Err(e) => return Err(Error::io("inspect", &path, e)),
            }
        }
        let mut path = self.root.clone();
        path.extend(&current);
        Ok(Some(path))
    }

    fn mark_touched(&mut self, path: &Path) {
        if let Ok(rel) = path.strip_prefix(&self.root) {
            let mut p = rel.to_path_buf();
            while !p.as_os_str().is_empty() && self.touched.insert(p.clone()) {
                if !p.pop() {
                    break;
                }
            }
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_path = PathBuf::from(OsStr::from_bytes(&entry.path_bytes()).to_os_string());
        let components = sanitize(&raw_path).map_err(|r| self.unsafe_entry(&raw_path, r))?;
        let Some((name, parents)) = components.split_last() else {
            // The root directory itself ("./"): leave the destination's own metadata alone.
            return Ok(());
        };
        let name_str = name.to_string_lossy();

        if name_str == OPAQUE_MARKER {
            if let Some(dir) = self.resolve_dir(parents, &raw_path, true)? {
                self.mark_touched(&dir);
                match self.options.whiteouts {
                    Whiteouts::Apply => self.prune_opaque(&dir)?,
                    Whiteouts::Overlay => xattr::set(&dir, OVERLAY_OPAQUE_XATTR, b"y")
                        .map_err(|e| Error::io("mark opaque (overlayfs xattr)", &dir, e))?,
                }
            }
            return Ok(());
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(self.unsafe_entry(&raw_path, "malformed whiteout"));
            }
            let hidden = OsStr::from_bytes(&name.as_bytes()[WHITEOUT_PREFIX.len()..]);
            match self.options.whiteouts {
                Whiteouts::Apply => {
                    if let Some(dir) = self.resolve_dir(parents, &raw_path, false)? {
                        remove_any(&dir.join(hidden))?;
                    }
                }
                Whiteouts::Overlay => {
                    let dir = self
                        .resolve_dir(parents, &raw_path, true)?
                        .expect("resolve_dir with create always resolves");
                    let dest = dir.join(hidden);
                    remove_any(&dest)?;
                    mknod(&dest, libc::S_IFCHR, 0, 0)
                        .map_err(|e| Error::io("create overlayfs whiteout", &dest, e))?;
                    self.mark_touched(&dest);
                }
            }
            return Ok(());
        }

        let parent = self
            .resolve_dir(parents, &raw_path, true)?
            .expect("resolve_dir with create always resolves");
        let dest = parent.join(name);
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().map_err(|e| self.bad(e))? & 0o7777;
        let uid = header.uid().map_err(|e| self.bad(e))?;
        let gid = header.gid().map_err(|e| self.bad(e))?;
        let mtime = header.mtime().map_err(|e| self.bad(e))?;
        let xattrs = self.xattrs(entry)?;

        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&dest)?;
                        create_dir(&dest)?;
                    }
                    Err(_) => create_dir(&dest)?,
                }
                self.dirs.push((dest.clone(), mode, mtime));
            }
            EntryType::Regular | EntryType::Continuous => {
                remove_any(&dest)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&dest)
                    .map_err(|e| Error::io("create", &dest, e))?;
                if let Err(e) = io::copy(entry, &mut file) {
                    drop(file);
                    let _ = fs::remove_file(&dest);
                    return Err(Error::io("write", &dest, e));
                }
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| OsStr::from_bytes(&b).to_os_string())
                    .ok_or_else(|| self.unsafe_entry(&raw_path, "symlink without a target"))?;
                remove_any(&dest)?;
                std::os::unix::fs::symlink(&target, &dest)
                    .map_err(|e| Error::io("create symlink", &dest, e))?;
            }
            EntryType::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .map(|b| PathBuf::from(OsStr::from_bytes(&b)))
                    .ok_or_else(|| self.unsafe_entry(&raw_path, "hard link without a target"))?;
                let target_components = sanitize(&target_raw).map_err(|r| {
                    self.unsafe_entry(&raw_path, format!("hard link target {target_raw:?}: {r}"))
                })?;
                let Some((tname, tparents)) = target_components.split_last() else {
                    return Err(self.unsafe_entry(&raw_path, "hard link to the root"));
                };
                let target = self
                    .resolve_dir(tparents, &raw_path, false)?
                    .map(|d| d.join(tname))
                    .filter(|t| fs::symlink_metadata(t).is_ok_and(|m| !m.is_dir()))
                    .ok_or_else(|| {
                        self.unsafe_entry(
                            &raw_path,
                            format!("hard link target {target_raw:?} is not an existing file in the image"),
                        )
                    })?;
                if target != dest {
                    remove_any(&dest)?;
                    fs::hard_link(&target, &dest)
                        .map_err(|e| Error::io("create hard link", &dest, e))?;
                }
                self.mark_touched(&dest);
                // A hard link shares its target's inode and metadata.
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                if !self.options.preserve_ownership && kind != EntryType::Fifo {
                    tracing::warn!(entry = %raw_path.display(), "skipping device node: not running as root");
                    return Ok(());
                }
                remove_any(&dest)?;
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let fmt = match kind {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                mknod(&dest, fmt | mode, major, minor)
                    .map_err(|e| Error::io("create device node", &dest, e))?;
            }
            // PAX and GNU long-name headers are consumed by the tar reader; anything else
            // (sparse files, volume labels) is not part of an image.
            other => {
                tracing::warn!(entry = %raw_path.display(), kind = ?other, "skipping unsupported tar entry");
                return Ok(());
            }
        }
        self.mark_touched(&dest);

        if self.options.preserve_ownership {
            std::os::unix::fs::lchown(&dest, Some(uid as u32), Some(gid as u32))
                .map_err(|e| Error::io("set the owner of", &dest, e))?;
        }
        for (key, value) in xattrs {
            if let Err(e) = xattr::set(&dest, &key, &value) {
                // Filesystems without xattr support (or without the privilege for
                // `trusted.*`) lose the attribute; anything else is an error.
                match e.raw_os_error() {
                    Some(libc::ENOTSUP) | Some(libc::EPERM) => {
                        tracing::warn!(path = %dest.display(), key = ?key, error = %e, "cannot set xattr")
                    }
                    _ => return Err(Error::io("set an extended attribute on", &dest, e)),
                }
            }
        }
        if kind != EntryType::Symlink && kind != EntryType::Directory {
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("set the mode of", &dest, e))?;
        }
        if kind != EntryType::Directory {
            let t = filetime::FileTime::from_unix_time(mtime as i64, 0);
            filetime::set_symlink_file_times(&dest, t, t)
                .map_err(|e| Error::io("set the times of", &dest, e))?;
        }
        Ok(())
    }

    fn xattrs<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Vec<(OsString, Vec<u8>)>> {
        let mut out = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(|e| self.bad(e))? {
            for ext in exts {
                let ext = ext.map_err(|e| self.bad(e))?;
                if let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    out.push((
                        OsStr::from_bytes(key).to_os_string(),
                        ext.value_bytes().to_vec(),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Removes from `dir` everything the lower layers put there (keeping what this layer wrote).
    fn prune_opaque(&self, dir: &Path) -> Result<()> {
        let read = fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
        for child in read {
            let child = child.map_err(|e| Error::io("list", dir, e))?.path();
            let rel = child.strip_prefix(&self.root).unwrap_or(&child);
            if self.touched.contains(rel) {
                if fs::symlink_metadata(&child).is_ok_and(|m| m.is_dir()) {
                    self.prune_opaque(&child)?;
                }
            } else {
                remove_any(&child)?;
            }
        }
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<()> {
        // Deepest first, so that setting a parent's mtime comes after its children changed.
        self.dirs
            .sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
        for (dir, mode, mtime) in self.dirs.drain(..) {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("set the mode of", &dir, e))?;
            let t = filetime::FileTime::from_unix_time(mtime as i64, 0);
            filetime::set_file_times(&dir, t, t)
                .map_err(|e| Error::io("set the times of", &dir, e))?;
        }
        Ok(())
    }
}

/// `mknod(2)` without following a symlink at `path` (mknod never does).
fn mknod(path: &Path, mode: libc::mode_t, major: u32, minor: u32) -> io::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: c_path is a valid NUL-terminated string; mknod has no memory effects.
    let rc = unsafe { libc::mknod(c_path.as_ptr(), mode, libc::makedev(major, minor)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir(path).map_err(|e| Error::io("create directory", path, e))
}

/// Removes whatever is at `path` (without following a symlink there); nothing there is fine.
fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).map_err(|e| Error::io("remove directory", path, e))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| Error::io("remove", path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("inspect", path, e)),
    }
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
