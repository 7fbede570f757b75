//! Finding and watching the daemon process and its companions on this host.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// An executable of Aegis: `$env` if set, else `name` beside the running `aegis`, else `name`
/// on `PATH`. `Err` lists where it was looked for.
pub fn find_executable(name: &str, env: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "{env} is set to {}, which is not an executable file",
                path.display()
            ))
        };
    }
    let mut searched = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        let beside = dir.join(name);
        if is_executable(&beside) {
            return Ok(beside);
        }
        searched.push(dir.display().to_string());
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(found) = std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
        {
            return Ok(found);
        }
    }
    searched.push("PATH".into());
    Err(format!(
        "cannot find {name} (looked in {}); build it with `scripts/build.sh --release` or set {env}",
        searched.join(" and ")
    ))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The pid recorded in a pid file, if it holds one.
pub fn read_pid(pid_file: &Path) -> Option<i32> {
    fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&pid: &i32| pid > 0)
}

/// Whether process `pid` exists and has not exited (signal 0 probes without signalling; a
/// zombie, which has exited but was not yet reaped by its parent, counts as gone).
pub fn process_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists and may be signalled;
    // it touches no memory.
    let rc = unsafe { libc::kill(pid, 0) };
    // EPERM: it exists but belongs to someone else.
    let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    // /proc/<pid>/stat: "pid (comm) S ..."; comm may contain spaces and parentheses.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Send `SIGTERM` to `pid`.
pub fn terminate(pid: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) only sends a signal; no memory is shared with the callee.
    if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The last `lines` lines of `path` written after byte `from`, for showing why a daemon
/// that was just started died.
pub fn log_tail(path: &Path, from: u64, lines: usize) -> Vec<String> {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let start = f
            .metadata()
            .map(|m| m.len().saturating_sub(64 * 1024).max(from))
            .unwrap_or(from);
        let mut bytes = Vec::new();
        if f.seek(SeekFrom::Start(start)).is_ok() && f.read_to_end(&mut bytes).is_ok() {
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_reads_only_what_was_written_since() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        fs::write(&log, "old 1\nold 2\n").unwrap();
        let from = fs::metadata(&log).unwrap().len();
        fs::write(&log, "old 1\nold 2\nnew 1\n\nnew 2\nnew 3\n").unwrap();
        assert_eq!(log_tail(&log, from, 2), ["new 2", "new 3"]);
        assert_eq!(log_tail(&log, from, 10), ["new 1", "new 2", "new 3"]);
        assert!(log_tail(&dir.path().join("none"), 0, 5).is_empty());
    }

    #[test]
    fn pid_files_and_liveness() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pid");
        assert_eq!(read_pid(&f), None);
        fs::write(&f, format!("{}\n", std::process::id())).unwrap();
        let me = read_pid(&f).unwrap();
        assert!(process_alive(me));
        fs::write(&f, "garbage").unwrap();
        assert_eq!(read_pid(&f), None);
    }

    #[test]
    fn an_explicit_env_path_must_be_executable() {
        // A variable name no other test touches, so setting it cannot race.
        let env = "AEGIS_TEST_FIND_EXECUTABLE";
        let err = find_executable("aegis-surely-absent-binary", env).unwrap_err();
        assert!(
            err.contains("cannot find aegis-surely-absent-binary"),
            "{err}"
        );
        assert!(err.contains(env), "{err}");
    }
}
