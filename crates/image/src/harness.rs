//! Finding the guest harness binary and checking it can be PID 1 of a guest (fully static:
//! the initramfs has no dynamic loader).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Env var naming the harness binary explicitly.
pub const HARNESS_ENV: &str = "AEGIS_HARNESS";

/// The harness aegisd puts in guests: `$AEGIS_HARNESS`, else `aegis-harness` beside the
/// daemon executable in `exe_dir` (an installation), else — when `exe_dir` is a cargo target
/// directory — the static build of that source tree (`scripts/build.sh`).
/// `target/<profile>/aegis-harness` is never used: cargo rebuilds it dynamically linked.
pub fn harness_path(exe_dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os(HARNESS_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let installed = exe_dir.join("aegis-harness");
    if let Some(target) = exe_dir.parent() {
        if target.join("CACHEDIR.TAG").exists() || target.join(".rustc_info.json").exists() {
            return target.join("x86_64-unknown-linux-gnu/harness/aegis-harness");
        }
    }
    installed
}

/// Whether the ELF executable at `path` asks for a program interpreter (dynamic loader).
/// Files that are not 64-bit ELF, or cannot be read, are reported as not dynamic: the caller's
/// existence check or the guest reports those.
pub fn is_dynamically_linked(path: &Path) -> bool {
    let check = || -> std::io::Result<bool> {
        let mut f = std::fs::File::open(path)?;
        let mut eh = [0u8; 64];
        f.read_exact(&mut eh)?;
        if &eh[..4] != b"\x7fELF" || eh[4] != 2 {
            return Ok(false);
        }
        let le64 = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        let le16 = |b: &[u8]| u64::from(u16::from_le_bytes([b[0], b[1]]));
        let (phoff, phentsize, phnum) = (le64(&eh[32..40]), le16(&eh[54..56]), le16(&eh[56..58]));
        for i in 0..phnum {
            f.seek(SeekFrom::Start(phoff + i * phentsize))?;
            let mut ty = [0u8; 4];
            f.read_exact(&mut ty)?;
            const PT_INTERP: u32 = 3;
            if u32::from_le_bytes(ty) == PT_INTERP {
                return Ok(true);
            }
        }
        Ok(false)
    };
    check().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_dynamic_executables() {
        // This test binary is dynamically linked; /dev/null is no ELF at all.
        assert!(is_dynamically_linked(&std::env::current_exe().unwrap()));
        assert!(!is_dynamically_linked(Path::new("/dev/null")));
    }

    #[test]
    fn a_target_dir_points_at_the_static_build() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("CACHEDIR.TAG"), "").unwrap();
        std::fs::create_dir(t.path().join("debug")).unwrap();
        if std::env::var_os(HARNESS_ENV).is_none() {
            assert_eq!(
                harness_path(&t.path().join("debug")),
                t.path()
                    .join("x86_64-unknown-linux-gnu/harness/aegis-harness")
            );
            assert_eq!(
                harness_path(Path::new("/usr/local/bin")),
                Path::new("/usr/local/bin/aegis-harness")
            );
        }
    }
}
