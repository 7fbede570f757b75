//! Durable task output: one file per stream, appended as bytes arrive, plus a watch channel
//! so followers learn of new bytes. The files are the truth: a client can read any range at
//! any time (byte cursors), during the task or long after, across daemon restarts.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aegis_api::StreamName;
use parking_lot::Mutex;
use tokio::sync::watch;

/// Bytes written so far to each stream, and whether writing is over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputState {
    pub stdout: u64,
    pub stderr: u64,
    pub done: bool,
}

impl OutputState {
    pub fn len(&self, stream: StreamName) -> u64 {
        match stream {
            StreamName::Stdout => self.stdout,
            StreamName::Stderr => self.stderr,
        }
    }
}

pub fn stream_path(dir: &Path, stream: StreamName) -> PathBuf {
    dir.join(match stream {
        StreamName::Stdout => "stdout",
        StreamName::Stderr => "stderr",
    })
}

/// The writer side, owned by a running task.
pub struct OutputLog {
    files: Mutex<(File, File)>,
    state: watch::Sender<OutputState>,
}

impl OutputLog {
    /// Opens the log in `dir` for appending, creating it if needed.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let open = |s| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(stream_path(dir, s))
        };
        let files = (open(StreamName::Stdout)?, open(StreamName::Stderr)?);
        // An instance's log is opened again after a daemon restart: what it already holds
        // counts, or readers would see the old bytes in place of the new ones.
        let state = OutputState {
            stdout: files.0.metadata()?.len(),
            stderr: files.1.metadata()?.len(),
            done: false,
        };
        Ok(OutputLog {
            files: Mutex::new(files),
            state: watch::channel(state).0,
        })
    }

    /// Appends `bytes` to `stream`. Small synchronous writes to a local file: cheaper than a
    /// hop to the blocking pool, and ordering is trivially preserved.
    pub fn append(&self, stream: StreamName, bytes: &[u8]) -> std::io::Result<()> {
        let mut files = self.files.lock();
        let file = match stream {
            StreamName::Stdout => &mut files.0,
            StreamName::Stderr => &mut files.1,
        };
        file.write_all(bytes)?;
        self.state.send_modify(|s| match stream {
            StreamName::Stdout => s.stdout += bytes.len() as u64,
            StreamName::Stderr => s.stderr += bytes.len() as u64,
        });
        Ok(())
    }

    pub fn finish(&self) {
        self.state.send_modify(|s| s.done = true);
    }

    pub fn state(&self) -> OutputState {
        *self.state.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<OutputState> {
        self.state.subscribe()
    }
}

/// Largest chunk of one stream in one output event.
const EVENT_CHUNK: usize = 64 * 1024;

/// The NDJSON output feed of the log in `dir` from `offsets`. With `watch` (a live writer) and
/// `follow`, it waits for new bytes until the writer is done, then sends `end()` (if any).
pub fn feed(
    dir: PathBuf,
    mut watch: Option<watch::Receiver<OutputState>>,
    follow: bool,
    mut offsets: (u64, u64),
    end: Box<dyn FnOnce() -> Option<aegis_api::OutputEvent> + Send>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::sync::mpsc::Receiver<bytes::Bytes> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let state = match &mut watch {
                Some(w) => *w.borrow_and_update(),
                None => final_state(&dir),
            };
            let mut sent_any = false;
            for (stream, offset) in [
                (StreamName::Stdout, &mut offsets.0),
                (StreamName::Stderr, &mut offsets.1),
            ] {
                while *offset < state.len(stream) {
                    let want = (state.len(stream) - *offset).min(EVENT_CHUNK as u64) as usize;
                    let chunk = match read_chunk(&dir, stream, *offset, want) {
                        Ok(c) if !c.is_empty() => c,
                        _ => break,
                    };
                    let event = aegis_api::OutputEvent::output(stream, *offset, &chunk);
                    *offset += chunk.len() as u64;
                    if tx.send(ndjson(&event)).await.is_err() {
                        return; // the client went away
                    }
                    sent_any = true;
                }
            }
            if sent_any {
                continue;
            }
            if !follow || state.done {
                break;
            }
            match &mut watch {
                Some(w) => {
                    tokio::select! {
                        changed = w.changed() => if changed.is_err() {
                            // The writer is gone: the files are final now.
                            watch = None;
                        },
                        // The daemon stops: end the feed (the client resumes by offset).
                        _ = stop.cancelled() => return,
                    }
                }
                None => break,
            }
        }
        if follow {
            if let Some(event) = end() {
                let _ = tx.send(ndjson(&event)).await;
            }
        }
    });
    rx
}

fn ndjson(event: &aegis_api::OutputEvent) -> bytes::Bytes {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    line.into()
}

/// Reads up to `max` bytes of `stream` from `offset`.
pub fn read_chunk(
    dir: &Path,
    stream: StreamName,
    offset: u64,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let mut f = match File::open(stream_path(dir, stream)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(max);
    f.take(max as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Sizes of the stream files of an ended task.
pub fn final_state(dir: &Path) -> OutputState {
    let len = |s| {
        fs::metadata(stream_path(dir, s))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    OutputState {
        stdout: len(StreamName::Stdout),
        stderr: len(StreamName::Stderr),
        done: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_log_counts_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        OutputLog::create(dir.path())
            .unwrap()
            .append(StreamName::Stdout, b"before ")
            .unwrap();
        // As after a daemon restart: the new writer appends after the old bytes.
        let log = OutputLog::create(dir.path()).unwrap();
        assert_eq!((log.state().stdout, log.state().stderr), (7, 0));
        log.append(StreamName::Stdout, b"after").unwrap();
        assert_eq!(log.state().stdout, 12);
        assert_eq!(
            read_chunk(dir.path(), StreamName::Stdout, 0, 100).unwrap(),
            b"before after"
        );
    }

    #[test]
    fn appends_are_readable_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = OutputLog::create(dir.path()).unwrap();
        let mut rx = log.subscribe();
        log.append(StreamName::Stdout, b"hello ").unwrap();
        log.append(StreamName::Stdout, b"world").unwrap();
        log.append(StreamName::Stderr, b"oops").unwrap();
        assert!(rx.has_changed().unwrap());
        let s = *rx.borrow_and_update();
        assert_eq!((s.stdout, s.stderr, s.done), (11, 4, false));
        assert_eq!(
            read_chunk(dir.path(), StreamName::Stdout, 6, 100).unwrap(),
            b"world"
        );
        assert_eq!(
            read_chunk(dir.path(), StreamName::Stdout, 0, 5).unwrap(),
            b"hello"
        );
        assert_eq!(
            read_chunk(dir.path(), StreamName::Stderr, 4, 5).unwrap(),
            b""
        );
        log.finish();
        assert!(log.state().done);
        assert_eq!(
            final_state(dir.path()),
            OutputState {
                stdout: 11,
                stderr: 4,
                done: true
            }
        );
    }
}
