//! Which host directories may become a guest's `/workspace` (docs/WORKSPACES.md, "Threat
//! model"). A directory is checked when a task or instance asks for it and again before every
//! boot: in between it can be removed, or replaced by a symlink to somewhere else (by any
//! host user who can write its parent, or by a guest whose workspace is that parent).
//!
//! Refused: anything that is not a real directory, the Aegis home with everything inside it
//! and every directory containing it (a guest must never see the daemon's state, keys,
//! workspaces of others or caches), and system directories ([`SYSTEM_TREES`],
//! [`SYSTEM_DIRS`]).

use std::path::{Path, PathBuf};

use aegis_api::{ApiError, ErrorCode};

use crate::config::Config;

/// Never shared, nor anything inside them: the kernel's interfaces, devices, the host's
/// programs, libraries, boot files, configuration and runtime state. A guest writing there
/// (virtiofsd writes as root) would own the host.
pub const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr",
];

/// Never shared themselves (a directory inside them may be): they hold everyone's files.
pub const SYSTEM_DIRS: &[&str] = &[
    "/", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var",
];

fn bad(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

/// The Aegis home as the kernel resolves it (the configured path if it cannot be resolved).
pub fn canonical_home(config: &Config) -> PathBuf {
    std::fs::canonicalize(&config.home).unwrap_or_else(|_| config.home.root().to_path_buf())
}

/// The home, if canonical directory `dir` is it, is inside it or contains it.
pub fn overlapping_home(config: &Config, dir: &Path) -> Option<PathBuf> {
    let home = canonical_home(config);
    (dir.starts_with(&home) || home.starts_with(dir)).then_some(home)
}

/// Why canonical directory `dir` may not be shared, if it may not.
fn refusal(config: &Config, dir: &Path) -> Option<String> {
    if let Some(home) = overlapping_home(config, dir) {
        return Some(format!(
            "workspace directory {} overlaps the Aegis home {} (it is the home, inside it or \
             one of its parents); use a named workspace (`--workspace NAME`) or a directory \
             elsewhere",
            dir.display(),
            home.display()
        ));
    }
    if let Some(tree) = SYSTEM_TREES.iter().find(|t| dir.starts_with(t)) {
        return Some(format!(
            "workspace directory {} is a system directory (under {tree}), which a guest must \
             never write to; copy what the task needs into a directory of its own",
            dir.display()
        ));
    }
    if SYSTEM_DIRS.iter().any(|d| dir == Path::new(d)) {
        return Some(format!(
            "workspace directory {} holds files of the whole system or of every user; share \
             a directory inside it instead",
            dir.display()
        ));
    }
    None
}

/// Checks a host directory named by a request (absolute, symlinks allowed) and returns its
/// canonical path, which is what gets recorded and shared.
pub fn check_new(config: &Config, spec: &str) -> Result<PathBuf, ApiError> {
    let canonical = std::fs::canonicalize(spec).map_err(|e| {
        bad(format!(
            "workspace directory {spec} cannot be used: {e}; pass an existing directory"
        ))
    })?;
    if !canonical.is_dir() {
        return Err(bad(format!(
            "workspace {spec} is not a directory; pass a directory (or a workspace name)"
        )));
    }
    if let Some(why) = refusal(config, &canonical) {
        return Err(bad(why));
    }
    if canonical.to_str().is_none() {
        return Err(bad(format!(
            "workspace directory {} is not valid UTF-8; rename it",
            canonical.display()
        )));
    }
    Ok(canonical)
}

/// Checks, before a boot, a directory that [`check_new`] accepted earlier: it must still be
/// the same real directory (no component replaced by a symlink) and still be allowed.
pub fn recheck(config: &Config, recorded: &Path) -> Result<(), ApiError> {
    let shown = recorded.display();
    let meta = std::fs::symlink_metadata(recorded).map_err(|e| {
        bad(format!(
            "workspace directory {shown} cannot be used any more: {e}; recreate it, or remove \
             this instance and create it with another workspace"
        ))
    })?;
    if meta.file_type().is_symlink() {
        return Err(bad(format!(
            "workspace directory {shown} has been replaced by a symbolic link since it was \
             accepted; it is not shared. Put the real directory back (or remove the instance)"
        )));
    }
    if !meta.is_dir() {
        return Err(bad(format!(
            "workspace {shown} is no longer a directory; it is not shared"
        )));
    }
    let canonical = std::fs::canonicalize(recorded).map_err(|e| {
        bad(format!(
            "workspace directory {shown} cannot be resolved: {e}"
        ))
    })?;
    if canonical != recorded {
        return Err(bad(format!(
            "workspace directory {shown} now resolves to {} (one of its parents has been \
             replaced by a symbolic link); it is not shared",
            canonical.display()
        )));
    }
    match refusal(config, recorded) {
        Some(why) => Err(bad(why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(home: &Path) -> Config {
        Config::new(home.to_path_buf(), "fake").unwrap()
    }

    fn refused(config: &Config, dir: &str, why: &str) {
        let e = check_new(config, dir).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidRequest);
        assert!(e.error.message.contains(why), "{dir}: {e}");
    }

    #[test]
    fn new_directories() {
        let home = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let config = config(home.path());
        let p = other.path().to_str().unwrap();
        assert_eq!(
            check_new(&config, p).unwrap(),
            std::fs::canonicalize(p).unwrap()
        );
        refused(&config, &format!("{p}/missing"), "existing directory");
        let file = other.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        refused(&config, file.to_str().unwrap(), "not a directory");
        let inside = home.path().join("workspaces");
        std::fs::create_dir_all(&inside).unwrap();
        for overlapping in [inside.to_str().unwrap(), home.path().to_str().unwrap(), "/"] {
            refused(&config, overlapping, "overlaps the Aegis home");
        }
        // A symlink to the home is the home.
        let link = other.path().join("link");
        std::os::unix::fs::symlink(home.path(), &link).unwrap();
        refused(&config, link.to_str().unwrap(), "overlaps the Aegis home");
        for system in ["/etc", "/usr/bin", "/proc/self", "/dev", "/boot"] {
            if Path::new(system).is_dir() {
                refused(&config, system, "system directory");
            }
        }
        for shared_by_all in ["/var", "/home", "/opt"] {
            if Path::new(shared_by_all).is_dir() {
                refused(&config, shared_by_all, "of every user");
            }
        }
    }

    #[test]
    fn swapped_directories_are_refused_at_the_next_use() {
        let home = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let config = config(home.path());
        let dir = other.path().join("ws");
        std::fs::create_dir(&dir).unwrap();
        let accepted = check_new(&config, dir.to_str().unwrap()).unwrap();
        recheck(&config, &accepted).unwrap();

        // Replaced by a symlink to the home.
        std::fs::rename(&accepted, other.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(home.path(), &accepted).unwrap();
        let e = recheck(&config, &accepted).unwrap_err();
        assert!(e.error.message.contains("symbolic link"), "{e}");
        std::fs::remove_file(&accepted).unwrap();

        // Gone, then a file.
        let e = recheck(&config, &accepted).unwrap_err();
        assert!(e.error.message.contains("cannot be used any more"), "{e}");
        std::fs::write(&accepted, b"x").unwrap();
        let e = recheck(&config, &accepted).unwrap_err();
        assert!(e.error.message.contains("no longer a directory"), "{e}");
        std::fs::remove_file(&accepted).unwrap();

        // A parent replaced by a symlink.
        let parent = other.path().join("p");
        std::fs::create_dir_all(parent.join("ws")).unwrap();
        let accepted = check_new(&config, parent.join("ws").to_str().unwrap()).unwrap();
        std::fs::rename(&parent, other.path().join("p-real")).unwrap();
        std::fs::create_dir_all(other.path().join("elsewhere/ws")).unwrap();
        std::os::unix::fs::symlink(other.path().join("elsewhere"), &parent).unwrap();
        let e = recheck(&config, &accepted).unwrap_err();
        assert!(e.error.message.contains("now resolves to"), "{e}");
    }
}
