//! Turning a [`ProcessSpec`] into a `std::process::Command`, and spawn failures into
//! [`SpawnError`]s a user can act on.
//!
//! The program is resolved here, like a shell would (`argv[0]` containing a `/` is a path,
//! anything else is looked up in `$PATH` of the final environment), so that "not found" and
//! "not executable" are told apart and named before anything is forked.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aegis_proto::{ProcessSpec, SpawnError, SpawnErrorKind};

use crate::paths::under_root;

/// `$PATH` when neither the base environment nor the request sets one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A command ready to spawn, minus its stdio.
pub(crate) struct Prepared {
    pub command: Command,
    /// The program as the user named it, for messages.
    pub program: String,
}

fn error(kind: SpawnErrorKind, message: String) -> SpawnError {
    SpawnError { kind, message }
}

/// Builds the command for `spec`: environment `base_env` then `spec.env` (later wins), working
/// directory `spec.cwd` (default `/`) under `root`, its own session and process group.
pub(crate) fn prepare(
    spec: &ProcessSpec,
    base_env: &[(String, String)],
    root: &Path,
) -> Result<Prepared, SpawnError> {
    let Some(program) = spec.argv.first() else {
        return Err(error(
            SpawnErrorKind::Invalid,
            "cannot run a process with an empty argv".into(),
        ));
    };
    if let Some(bad) = spec.argv.iter().find(|a| a.contains('\0')) {
        return Err(error(
            SpawnErrorKind::Invalid,
            format!("argument {bad:?} of `{program}` contains a NUL byte"),
        ));
    }
    let env: Vec<&(String, String)> = base_env.iter().chain(spec.env.iter()).collect();
    if let Some((k, _)) = env
        .iter()
        .find(|(k, v)| k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0'))
    {
        return Err(error(
            SpawnErrorKind::Invalid,
            format!("invalid environment variable {k:?} for `{program}`"),
        ));
    }
    let guest_cwd = spec.cwd.as_deref().unwrap_or("/");
    let cwd = under_root(root, guest_cwd);
    if !cwd.is_dir() {
        return Err(error(
            SpawnErrorKind::Invalid,
            format!("cannot run `{program}`: working directory {guest_cwd} does not exist"),
        ));
    }
    let path_var = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    let resolved = resolve(program, path_var, &cwd)?;
    let identity = match &spec.user {
        Some(user) => Some(crate::user::resolve(user, root).map_err(|m| {
            error(
                SpawnErrorKind::Invalid,
                format!("cannot run `{program}`: {m}"),
            )
        })?),
        None => None,
    };

    let mut command = Command::new(resolved);
    command
        .arg0(program)
        .args(&spec.argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cwd)
        .stdin(Stdio::null());
    if let Some(id) = identity {
        // std sets the gid, drops supplementary groups, then sets the uid, in the child.
        command.uid(id.uid).gid(id.gid);
        if let Some(home) = id.home.filter(|_| !env.iter().any(|(k, _)| k == "HOME")) {
            command.env("HOME", home);
        }
    }
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2),
    // which is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            // The process leads its own session and process group, so a Signal reaches its
            // whole tree and it does not share the agent's controlling terminal.
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(Prepared {
        command,
        program: program.clone(),
    })
}

/// Finds the file to execute for `program`.
fn resolve(program: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, SpawnError> {
    if program.contains('/') {
        let path = cwd.join(program);
        return match executable(&path) {
            Found::Yes => Ok(path),
            Found::NotExecutable => Err(error(
                SpawnErrorKind::PermissionDenied,
                format!("cannot run `{program}`: permission denied"),
            )),
            Found::No => Err(error(
                SpawnErrorKind::NotFound,
                format!("cannot run `{program}`: no such file"),
            )),
        };
    }
    let mut denied = None;
    for dir in path_var.split(':') {
        // An empty entry means the working directory, as in a shell.
        let dir = if dir.is_empty() { cwd } else { Path::new(dir) };
        let candidate = dir.join(program);
        match executable(&candidate) {
            Found::Yes => return Ok(candidate),
            Found::NotExecutable => {
                denied.get_or_insert(candidate);
            }
            Found::No => {}
        }
    }
    match denied {
        Some(path) => Err(error(
            SpawnErrorKind::PermissionDenied,
            format!(
                "cannot run `{program}`: {} is not executable",
                path.display()
            ),
        )),
        None => Err(error(
            SpawnErrorKind::NotFound,
            format!("cannot run `{program}`: command not found in PATH ({path_var})"),
        )),
    }
}

enum Found {
    Yes,
    NotExecutable,
    No,
}

fn executable(path: &Path) -> Found {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Found::Yes,
        Ok(m) if m.is_file() => Found::NotExecutable,
        _ => Found::No,
    }
}

/// The [`SpawnError`] for a failed `spawn()` of `program`.
pub(crate) fn spawn_error(program: &str, e: &io::Error) -> SpawnError {
    let kind = match e.kind() {
        io::ErrorKind::NotFound => SpawnErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => SpawnErrorKind::PermissionDenied,
        io::ErrorKind::InvalidInput => SpawnErrorKind::Invalid,
        _ => SpawnErrorKind::Other,
    };
    error(kind, format!("cannot run `{program}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str]) -> ProcessSpec {
        ProcessSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            cwd: None,
            user: None,
        }
    }

    fn kind(r: Result<Prepared, SpawnError>) -> SpawnErrorKind {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.kind,
        }
    }

    #[test]
    fn classifies_failures_before_forking() {
        let base = vec![("PATH".to_string(), "/usr/bin:/bin".to_string())];
        let root = Path::new("/");
        assert_eq!(
            kind(prepare(&spec(&[]), &base, root)),
            SpawnErrorKind::Invalid
        );
        assert_eq!(
            kind(prepare(&spec(&["no-such-program-xyz"]), &base, root)),
            SpawnErrorKind::NotFound
        );
        let plain = tempfile::NamedTempFile::new().unwrap();
        let plain = plain.path().to_str().unwrap();
        assert_eq!(
            kind(prepare(&spec(&[plain]), &base, root)),
            SpawnErrorKind::PermissionDenied
        );
        let mut s = spec(&["true"]);
        s.cwd = Some("/no/such/dir".into());
        assert_eq!(kind(prepare(&s, &base, root)), SpawnErrorKind::Invalid);
        assert!(prepare(&spec(&["true"]), &base, root).is_ok());
    }

    #[test]
    fn request_path_wins_over_base_path() {
        let base = vec![("PATH".to_string(), "/nonexistent".to_string())];
        let mut s = spec(&["true"]);
        assert_eq!(
            kind(prepare(&s, &base, Path::new("/"))),
            SpawnErrorKind::NotFound
        );
        s.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
        assert!(prepare(&s, &base, Path::new("/")).is_ok());
    }
}
