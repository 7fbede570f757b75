//! Workspaces: durable directories mounted at `/workspace` in guests (docs/WORKSPACES.md).
//!
//! - A named workspace is a row in the registry and a directory `<home>/workspaces/<name>/`
//!   (mode 0700). `run --workspace NAME` with an unknown name creates it, isolated.
//! - A host-path workspace is an existing absolute directory outside the Aegis home and the
//!   system directories; it has no row and no holder bookkeeping (the user owns it). It is
//!   checked again before every boot ([`host_path`]).
//! - Either can be mounted read-only (`NAME:ro`, `/dir:ro`): the host enforces it
//!   (virtiofsd sees a read-only bind of the directory), not only the guest's mount.
//! - Holders: a task holds its workspace while it runs, an instance for its whole life (it
//!   can wake at any time). An isolated workspace has at most one holder, a shared one any
//!   number. A held workspace cannot be deleted. Holders live in memory: tasks die with the
//!   daemon, and instances are reloaded at start-up, which rebuilds their holds.
//!
//! The mechanism is a backend share ([`aegis_vmm::Share`], virtio-fs under QEMU) with the tag
//! [`WORKSPACE_TAG`]; the harness mounts it because of `aegis.workspace=<tag>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aegis_api::{ApiError, CreateWorkspace, ErrorCode, Workspace, WorkspaceMode, WorkspaceSpec};
use aegis_registry::WorkspaceRecord;
use aegis_vmm::Share;
use parking_lot::Mutex;

use crate::api::{bad, internal};
use crate::config::Config;
use crate::daemon::Daemon;
use crate::ids;

pub mod host_path;

/// The virtio-fs tag of the workspace share.
pub const WORKSPACE_TAG: &str = "aegis-workspace";
/// Longest workspace name.
pub const MAX_NAME_LEN: usize = 63;

/// What a task or instance asked to mount, after checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRef {
    pub source: WorkspaceSource,
    pub read_only: bool,
}

/// Where a workspace's data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceSource {
    Named(String),
    /// Canonical absolute host directory.
    HostPath(PathBuf),
}

impl WorkspaceRef {
    /// How it is recorded on the task or instance: the name or the canonical path, with
    /// `:ro` when read-only.
    pub fn as_request(&self) -> String {
        let target = match &self.source {
            WorkspaceSource::Named(n) => n.clone(),
            WorkspaceSource::HostPath(p) => p.display().to_string(),
        };
        WorkspaceSpec {
            target,
            read_only: self.read_only,
        }
        .to_request()
    }
}

/// The workspace name in a recorded request, or None for a host-path workspace.
fn recorded_name(recorded: &str) -> Option<String> {
    let spec = WorkspaceSpec::parse(recorded);
    (!spec.target.starts_with('/')).then_some(spec.target)
}

/// Who holds which named workspace.
#[derive(Default)]
pub struct WorkspaceManager {
    /// name -> holder ids (task or instance ids). Also serialises create/acquire/delete.
    holders: Mutex<BTreeMap<String, Vec<String>>>,
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no workspace '{name}'; list workspaces with `aegis workspace ls`"),
    )
}

/// `[a-z0-9][a-z0-9_.-]{0,62}`.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let mut bytes = name.bytes();
    let ok = name.len() <= MAX_NAME_LEN
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "invalid workspace name '{name}': use 1-{MAX_NAME_LEN} characters of lowercase \
             letters, digits, '_', '.' and '-', starting with a letter or digit (or pass an \
             absolute host directory)"
        )))
    }
}

/// The data directory of named workspace `name`.
pub fn data_dir(config: &Config, name: &str) -> PathBuf {
    config.home.workspace_dir(name)
}

/// Checks what a request names: `TARGET[:ro]`, where TARGET is a workspace name or an
/// absolute host directory that [`host_path::check_new`] allows.
pub fn parse(config: &Config, value: &str) -> Result<WorkspaceRef, ApiError> {
    let spec = WorkspaceSpec::parse(value);
    let source = if spec.target.starts_with('/') {
        WorkspaceSource::HostPath(host_path::check_new(config, &spec.target)?)
    } else {
        validate_name(&spec.target)?;
        WorkspaceSource::Named(spec.target)
    };
    Ok(WorkspaceRef {
        source,
        read_only: spec.read_only,
    })
}

/// The backend shares for a recorded workspace request (none without one), checked again:
/// called before every boot of a task or instance, possibly long after [`parse`] accepted the
/// request, and the directory may have changed since.
pub fn shares(config: &Config, recorded: Option<&str>) -> Result<Vec<Share>, ApiError> {
    let Some(recorded) = recorded else {
        return Ok(vec![]);
    };
    let spec = WorkspaceSpec::parse(recorded);
    let host_path = if spec.target.starts_with('/') {
        let dir = PathBuf::from(&spec.target);
        host_path::recheck(config, &dir)?;
        dir
    } else {
        named_data_dir(config, &spec.target)?
    };
    Ok(vec![Share {
        tag: WORKSPACE_TAG.into(),
        host_path,
        read_only: spec.read_only,
    }])
}

/// The data directory of named workspace `name`, recreated empty if it has been removed
/// behind our back (rather than failing every boot), refused if it is not a real directory.
fn named_data_dir(config: &Config, name: &str) -> Result<PathBuf, ApiError> {
    validate_name(name)?;
    let dir = data_dir(config, name);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        Ok(_) => Err(internal(format!(
            "the data of workspace '{name}' at {} is not a directory (a symbolic link or a \
             file was put there); it is not shared. Remove it, then use the workspace again",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::daemon::create_private_dir(&dir).map_err(|e| {
                internal(format!("cannot create workspace '{name}' directory: {e:#}"))
            })?;
            Ok(dir)
        }
        Err(e) => Err(internal(format!(
            "cannot use workspace '{name}' at {}: {e}",
            dir.display()
        ))),
    }
}

/// Checks the `workspace` of a task or instance request: the name or directory must be
/// usable and the backend must be able to share directories.
pub fn check_request(
    daemon: &Daemon,
    requested: Option<&str>,
) -> Result<Option<WorkspaceRef>, ApiError> {
    let Some(spec) = requested else {
        return Ok(None);
    };
    let ws = parse(&daemon.config, spec)?;
    if !daemon.backend.capabilities().shared_directories {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!(
                "the {} backend cannot share a directory with the guest on this host, so \
                 --workspace is unavailable; install qemu-system-common (virtiofsd) and see \
                 `aegis doctor`",
                daemon.backend.kind()
            ),
        ));
    }
    Ok(Some(ws))
}

impl WorkspaceManager {
    /// `POST /v1/workspaces`.
    pub fn create(&self, daemon: &Daemon, req: &CreateWorkspace) -> Result<Workspace, ApiError> {
        validate_name(&req.name)?;
        let holders = self.holders.lock();
        if daemon
            .registry
            .get_workspace(&req.name)
            .map_err(|e| internal(e.to_string()))?
            .is_some()
        {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "workspace '{}' already exists; inspect it with `aegis workspace inspect {}`",
                    req.name, req.name
                ),
            ));
        }
        let record = self.insert(daemon, &req.name, req.mode)?;
        drop(holders);
        Ok(self.view(&daemon.config, record, 0))
    }

    /// Records and creates a workspace (the caller holds the `holders` lock).
    fn insert(
        &self,
        daemon: &Daemon,
        name: &str,
        mode: WorkspaceMode,
    ) -> Result<WorkspaceRecord, ApiError> {
        let dir = data_dir(&daemon.config, name);
        crate::daemon::create_private_dir(&dir)
            .map_err(|e| internal(format!("cannot create workspace '{name}': {e:#}")))?;
        let record = WorkspaceRecord {
            name: name.to_string(),
            mode,
            created_at: ids::now(),
        };
        match daemon.registry.insert_workspace(&record) {
            Ok(true) => {
                tracing::info!(workspace = name, mode = mode.as_str(), "workspace created");
                Ok(record)
            }
            Ok(false) => Err(ApiError::new(
                ErrorCode::Conflict,
                format!("workspace '{name}' already exists"),
            )),
            Err(e) => Err(internal(format!("cannot record workspace '{name}': {e}"))),
        }
    }

    /// `GET /v1/workspaces`. Sizes are summed on the calling thread: call from a blocking
    /// context.
    pub fn list(&self, daemon: &Daemon) -> Result<Vec<Workspace>, ApiError> {
        let records = daemon
            .registry
            .list_workspaces()
            .map_err(|e| internal(e.to_string()))?;
        Ok(records
            .into_iter()
            .map(|r| {
                let size = dir_size(&data_dir(&daemon.config, &r.name));
                self.view(&daemon.config, r, size)
            })
            .collect())
    }

    /// `GET /v1/workspaces/{name}` (blocking, like [`Self::list`]).
    pub fn get(&self, daemon: &Daemon, name: &str) -> Result<Workspace, ApiError> {
        let record = daemon
            .registry
            .get_workspace(name)
            .map_err(|e| internal(e.to_string()))?
            .ok_or_else(|| not_found(name))?;
        let size = dir_size(&data_dir(&daemon.config, name));
        Ok(self.view(&daemon.config, record, size))
    }

    fn view(&self, config: &Config, r: WorkspaceRecord, size_bytes: u64) -> Workspace {
        Workspace {
            path: data_dir(config, &r.name).display().to_string(),
            used_by: self.holders_of(&r.name),
            name: r.name,
            mode: r.mode,
            size_bytes,
            created_at: r.created_at,
        }
    }

    /// Ids holding workspace `name` now.
    pub fn holders_of(&self, name: &str) -> Vec<String> {
        self.holders.lock().get(name).cloned().unwrap_or_default()
    }

    /// `DELETE /v1/workspaces/{name}`: refused while held. The data is gone when this returns.
    pub fn delete(&self, daemon: &Daemon, name: &str) -> Result<(), ApiError> {
        let holders = self.holders.lock();
        let record = daemon
            .registry
            .get_workspace(name)
            .map_err(|e| internal(e.to_string()))?
            .ok_or_else(|| not_found(name))?;
        if let Some(h) = holders.get(name).filter(|h| !h.is_empty()) {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "workspace '{name}' is in use by {}; stop or delete {} first",
                    h.join(", "),
                    if h.len() == 1 { "it" } else { "them" }
                ),
            ));
        }
        // Move the data aside under the lock (a concurrent `run --workspace NAME` then gets a
        // fresh, empty workspace), delete it after.
        let dir = data_dir(&daemon.config, name);
        let doomed = daemon
            .config
            .home
            .workspaces_dir()
            .join(format!(".deleting-{name}-{}", ids::new_id("x")));
        let moved = match std::fs::rename(&dir, &doomed) {
            Ok(()) => Some(doomed),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(internal(format!(
                    "cannot delete workspace '{name}': cannot move {} aside: {e}",
                    dir.display()
                )))
            }
        };
        daemon
            .registry
            .delete_workspace(&record.name)
            .map_err(|e| internal(e.to_string()))?;
        drop(holders);
        if let Some(doomed) = moved {
            if let Err(e) = std::fs::remove_dir_all(&doomed) {
                tracing::warn!(dir = %doomed.display(), error = %e, "cannot remove deleted workspace data");
            }
        }
        tracing::info!(workspace = name, "workspace deleted");
        Ok(())
    }

    /// Takes workspace `ws` for `holder` (a task or instance id), creating a named workspace
    /// (isolated) on first use. Refused if it is isolated and someone else holds it.
    pub fn acquire(
        &self,
        daemon: &Daemon,
        ws: &WorkspaceRef,
        holder: &str,
    ) -> Result<(), ApiError> {
        let WorkspaceSource::Named(name) = &ws.source else {
            return Ok(());
        };
        let mut holders = self.holders.lock();
        let record = match daemon
            .registry
            .get_workspace(name)
            .map_err(|e| internal(e.to_string()))?
        {
            Some(r) => r,
            None => self.insert(daemon, name, WorkspaceMode::Isolated)?,
        };
        // The directory may have been removed behind our back: recreate it empty rather than
        // failing every boot.
        let dir = data_dir(&daemon.config, name);
        if !dir.is_dir() {
            crate::daemon::create_private_dir(&dir).map_err(|e| {
                internal(format!("cannot create workspace '{name}' directory: {e:#}"))
            })?;
        }
        let current = holders.entry(name.clone()).or_default();
        if record.mode == WorkspaceMode::Isolated && current.iter().any(|h| h != holder) {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "workspace '{name}' is isolated and in use by {}; wait until it ends, or \
                     use a shared workspace (`aegis workspace create NAME --shared`) for \
                     agents that work on the same files",
                    current.join(", ")
                ),
            ));
        }
        if !current.iter().any(|h| h == holder) {
            current.push(holder.to_string());
        }
        Ok(())
    }

    /// Records that `holder` holds the workspace of `recorded` (a recorded request) without
    /// checking the mode: instances reloaded at start-up already held it before the restart.
    pub fn restore_hold(&self, recorded: &str, holder: &str) {
        let Some(name) = recorded_name(recorded) else {
            return;
        };
        let mut holders = self.holders.lock();
        let current = holders.entry(name).or_default();
        if !current.iter().any(|h| h == holder) {
            current.push(holder.to_string());
        }
    }

    /// Gives up `holder`'s hold on the recorded workspace request, if any.
    pub fn release(&self, recorded: Option<&str>, holder: &str) {
        let Some(name) = recorded.and_then(recorded_name) else {
            return;
        };
        let mut holders = self.holders.lock();
        if let Some(current) = holders.get_mut(&name) {
            current.retain(|h| h != holder);
            if current.is_empty() {
                holders.remove(&name);
            }
        }
    }
}

/// Apparent size of the files under `dir` (symlinks not followed); 0 if unreadable.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "0", "data", "my-ws_1.v2", &"a".repeat(63)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "A",
            "a/b",
            "a b",
            "..",
            &"a".repeat(64),
            "é",
        ] {
            let e = validate_name(bad).unwrap_err();
            assert!(e.error.message.contains("invalid workspace name"), "{bad}");
        }
    }

    #[test]
    fn requests() {
        let home = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let config = Config::new(home.path().to_path_buf(), "fake").unwrap();
        let p = other.path().to_str().unwrap();
        let canonical = std::fs::canonicalize(p).unwrap();
        let host = |read_only| WorkspaceRef {
            source: WorkspaceSource::HostPath(canonical.clone()),
            read_only,
        };
        assert_eq!(parse(&config, p).unwrap(), host(false));
        let ro = parse(&config, &format!("{p}:ro")).unwrap();
        assert_eq!(ro, host(true));
        assert_eq!(ro.as_request(), format!("{}:ro", canonical.display()));
        assert!(parse(&config, &format!("{p}/missing:ro")).is_err());
        let named = parse(&config, "data:ro").unwrap();
        assert_eq!(named.source, WorkspaceSource::Named("data".into()));
        assert!(named.read_only);
        assert_eq!(named.as_request(), "data:ro");
        assert_eq!(parse(&config, "data").unwrap().as_request(), "data");
        assert!(parse(&config, "Data").is_err());
        assert!(parse(&config, "data:rx").is_err());
        assert_eq!(recorded_name("data:ro").as_deref(), Some("data"));
        assert_eq!(recorded_name("/srv/x:ro"), None);
    }

    #[test]
    fn shares_point_at_the_data_and_say_read_only() {
        let home = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let config = Config::new(home.path().to_path_buf(), "fake").unwrap();
        assert!(shares(&config, None).unwrap().is_empty());
        // A named workspace whose directory is gone gets it back, empty.
        let s = shares(&config, Some("data")).unwrap();
        assert_eq!(s[0].host_path, home.path().join("workspaces/data"));
        assert!(s[0].host_path.is_dir());
        assert!(!s[0].read_only);
        assert!(shares(&config, Some("data:ro")).unwrap()[0].read_only);
        let dir = std::fs::canonicalize(other.path()).unwrap();
        let s = shares(&config, Some(&format!("{}:ro", dir.display()))).unwrap();
        assert_eq!(s[0].host_path, dir);
        assert_eq!(s[0].tag, WORKSPACE_TAG);
        assert!(s[0].read_only);
        // A named workspace's directory replaced by a symlink is not followed.
        let data = home.path().join("workspaces/data");
        std::fs::remove_dir(&data).unwrap();
        std::os::unix::fs::symlink("/", &data).unwrap();
        let e = shares(&config, Some("data")).unwrap_err();
        assert!(e.error.message.contains("not a directory"), "{e}");
    }

    #[test]
    fn sizes_add_up() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), [0u8; 10]).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/b"), [0u8; 5]).unwrap();
        assert_eq!(dir_size(d.path()), 15);
        assert_eq!(dir_size(&d.path().join("none")), 0);
    }
}
