//! Durable task output: one file per stream, appended as bytes arrive, plus a watch channel
//! so followers learn of new bytes. The files are the truth: a client can read any range at
//! any time (byte cursors), during the task or long after, across daemon restarts. Disk use is
//! bounded ([`Bound`]): a task's streams are capped, an instance's rotated.

use std::fs;
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

use super::log_files::{end_on_disk, read_at, StreamFile};
pub use super::log_files::{stream_path, Bound};

/// The writer side, owned by a running task or an instance.
pub struct OutputLog {
    files: Mutex<(StreamFile, StreamFile)>,
    state: watch::Sender<OutputState>,
}

impl OutputLog {
    /// Opens the log in `dir` (creating it), carrying on after what is there already.
    pub fn create(dir: &Path, bound: Bound) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let files = (
            StreamFile::open(dir, StreamName::Stdout, bound)?,
            StreamFile::open(dir, StreamName::Stderr, bound)?,
        );
        let state = OutputState {
            stdout: files.0.end(),
            stderr: files.1.end(),
            done: false,
        };
        Ok(OutputLog {
            files: Mutex::new(files),
            state: watch::channel(state).0,
        })
    }

    /// Appends `bytes` to `stream`, within the log's bound. Small synchronous writes to a
    /// local file: cheaper than a hop to the blocking pool, and ordering is trivially
    /// preserved.
    pub fn append(&self, stream: StreamName, bytes: &[u8]) -> std::io::Result<()> {
        let mut files = self.files.lock();
        let file = match stream {
            StreamName::Stdout => &mut files.0,
            StreamName::Stderr => &mut files.1,
        };
        let end = file.end() + file.append(bytes)?;
        self.state.send_modify(|s| match stream {
            StreamName::Stdout => s.stdout = end,
            StreamName::Stderr => s.stderr = end,
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
                    let (at, chunk) = match read_at(&dir, stream, *offset, want) {
                        Ok((at, c)) if !c.is_empty() => (at, c),
                        _ => break,
                    };
                    let event = aegis_api::OutputEvent::output(stream, at, &chunk);
                    *offset = at + chunk.len() as u64;
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

/// Reads up to `max` bytes of `stream` from `offset` (bytes rotated away are skipped).
pub fn read_chunk(
    dir: &Path,
    stream: StreamName,
    offset: u64,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    read_at(dir, stream, offset, max).map(|(_, bytes)| bytes)
}

/// Where the streams of an ended task end.
pub fn final_state(dir: &Path) -> OutputState {
    OutputState {
        stdout: end_on_disk(dir, StreamName::Stdout),
        stderr: end_on_disk(dir, StreamName::Stderr),
        done: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_log_counts_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let bound = Bound::Rotate {
            file_bytes: 1 << 20,
            keep: 1,
        };
        OutputLog::create(dir.path(), bound)
            .unwrap()
            .append(StreamName::Stdout, b"before ")
            .unwrap();
        // As after a daemon restart: the new writer appends after the old bytes.
        let log = OutputLog::create(dir.path(), bound).unwrap();
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
        let log = OutputLog::create(dir.path(), Bound::Cap { bytes: 1 << 20 }).unwrap();
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
