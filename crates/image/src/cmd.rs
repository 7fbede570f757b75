//! Running the host tools that build guest artefacts (make, tar, mkfs.ext4, debootstrap).

use std::collections::VecDeque;
use std::env;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use crate::error::{ImageError, Result};

/// How many trailing output lines an error keeps.
const TAIL_LINES: usize = 25;

/// A host tool: its executable name, why we need it and the Debian package that ships it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    pub name: &'static str,
    pub purpose: &'static str,
    pub package: &'static str,
}

impl Tool {
    pub const fn new(name: &'static str, purpose: &'static str, package: &'static str) -> Self {
        Tool {
            name,
            purpose,
            package,
        }
    }

    /// The absolute path of the tool, or [`ImageError::ToolMissing`].
    ///
    /// Looks in PATH and then in the sbin directories, which a non-login root shell or a
    /// service manager may leave out of PATH (mkfs.ext4 and debootstrap live there).
    pub fn find(&self) -> Result<PathBuf> {
        find_executable(self.name).ok_or(ImageError::ToolMissing {
            tool: self.name,
            purpose: self.purpose,
            package: self.package,
        })
    }
}

pub(crate) fn find_executable(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `program arg arg ...` for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_string_lossy()
        .into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(arg));
    }
    s
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,^+@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Run to completion, capturing output; fail with the tail of stderr.
pub(crate) fn run(cmd: &mut Command, hint: &str) -> Result<()> {
    run_streaming(cmd, hint, |_| {})
}

/// Run to completion, handing every output line (stdout and stderr, in arrival order) to
/// `on_line`; fail with the tail of stderr (or of all output when stderr was empty).
pub(crate) fn run_streaming(
    cmd: &mut Command,
    hint: &str,
    mut on_line: impl FnMut(&str),
) -> Result<()> {
    let command = describe(cmd);
    tracing::debug!(%command, "running");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ImageError::Spawn {
            command: command.clone(),
            source,
        })?;

    let (tx, rx) = mpsc::channel::<(bool, String)>();
    let readers = [
        child.stdout.take().map(|s| forward(s, false, tx.clone())),
        child.stderr.take().map(|s| forward(s, true, tx)),
    ];

    let mut err_tail = Tail::default();
    let mut all_tail = Tail::default();
    for (is_stderr, line) in rx {
        on_line(&line);
        if is_stderr {
            err_tail.push(&line);
        }
        all_tail.push(&line);
    }
    for reader in readers.into_iter().flatten() {
        let _ = reader.join();
    }
    let status = child.wait().map_err(|source| ImageError::Spawn {
        command: command.clone(),
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    let tail = if err_tail.is_empty() {
        all_tail
    } else {
        err_tail
    };
    Err(ImageError::CommandFailed {
        command,
        status: status.to_string(),
        stderr_tail: tail.joined(),
        hint: hint.to_string(),
    })
}

fn forward(
    stream: impl Read + Send + 'static,
    is_stderr: bool,
    tx: mpsc::Sender<(bool, String)>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    if tx.send((is_stderr, line)).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

#[derive(Default)]
struct Tail(VecDeque<String>);

impl Tail {
    fn push(&mut self, line: &str) {
        if self.0.len() == TAIL_LINES {
            self.0.pop_front();
        }
        self.0.push_back(line.to_string());
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|l| l.trim().is_empty())
    }

    fn joined(&self) -> String {
        self.0
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_command_status_and_stderr_tail() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo boom >&2; exit 3"]);
        let err = run(&mut cmd, "do something").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("sh -c 'echo out; echo boom >&2; exit 3'"),
            "{msg}"
        );
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("boom") && !msg.contains("out\n"), "{msg}");
        assert!(msg.ends_with("do something"), "{msg}");
    }

    #[test]
    fn streaming_sees_every_line() {
        let mut lines = Vec::new();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "for i in 1 2 3; do echo $i; done; echo e >&2"]);
        run_streaming(&mut cmd, "", |l| lines.push(l.to_string())).unwrap();
        lines.sort();
        assert_eq!(lines, ["1", "2", "3", "e"]);
    }

    #[test]
    fn missing_tool_names_the_package() {
        let err = Tool::new("aegis-no-such-tool", "test things", "aegis-pkg")
            .find()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`aegis-no-such-tool` was not found on PATH; it is needed to test things. \
             Install it with `apt-get install aegis-pkg`"
        );
    }

    #[test]
    fn sbin_tools_are_found_even_off_path() {
        // sh is everywhere; this checks the lookup itself works.
        assert!(find_executable("sh").is_some());
    }
}
