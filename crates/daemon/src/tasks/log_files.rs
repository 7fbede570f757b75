//! One stream of an output log on disk, bounded: a task's stream is cut at a cap, an
//! instance's is rotated. Offsets are absolute (bytes the stream produced since the log was
//! created), so a follower resumes by offset across rotations; bytes rotated away are skipped
//! (the follower sees a gap in the offsets).
//!
//! ```text
//! <dir>/stdout        the current file
//! <dir>/stdout.1..N   rotated files, newest first (instances)
//! <dir>/stdout.base   absolute offset of the current file's first byte (absent: 0)
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aegis_api::StreamName;

/// How a stream's disk use is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Keep the first `bytes`, then one line saying the rest was dropped (tasks). The process
    /// keeps running: as with `docker run`, chatty output is not a failure.
    Cap { bytes: u64 },
    /// Start a new file every `file_bytes`, keeping `keep` rotated ones (instances, as
    /// Docker's `max-size` and `max-file`).
    Rotate { file_bytes: u64, keep: u32 },
}

pub fn stream_path(dir: &Path, stream: StreamName) -> PathBuf {
    dir.join(stream_name(stream))
}

fn stream_name(stream: StreamName) -> &'static str {
    match stream {
        StreamName::Stdout => "stdout",
        StreamName::Stderr => "stderr",
    }
}

fn rotated_path(dir: &Path, stream: StreamName, i: u32) -> PathBuf {
    dir.join(format!("{}.{i}", stream_name(stream)))
}

fn base_path(dir: &Path, stream: StreamName) -> PathBuf {
    dir.join(format!("{}.base", stream_name(stream)))
}

/// The writer of one stream.
pub struct StreamFile {
    dir: PathBuf,
    stream: StreamName,
    bound: Bound,
    file: File,
    /// Absolute offset of the current file's first byte.
    base: u64,
    /// Bytes in the current file.
    len: u64,
    /// A capped stream reached its cap: the rest is dropped.
    truncated: bool,
}

impl StreamFile {
    /// Opens the stream for appending, carrying on from what an earlier daemon wrote.
    pub fn open(dir: &Path, stream: StreamName, bound: Bound) -> std::io::Result<Self> {
        let path = stream_path(dir, stream);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        let len = file.metadata()?.len();
        let truncated = matches!(bound, Bound::Cap { bytes } if len >= bytes);
        Ok(StreamFile {
            dir: dir.to_path_buf(),
            stream,
            bound,
            file,
            base: read_base(dir, stream),
            len,
            truncated,
        })
    }

    /// The absolute offset after the last byte written.
    pub fn end(&self) -> u64 {
        self.base + self.len
    }

    /// Appends `bytes` within the bound; returns how far the end moved.
    pub fn append(&mut self, mut bytes: &[u8]) -> std::io::Result<u64> {
        let before = self.end();
        match self.bound {
            Bound::Cap { bytes: cap } => {
                if self.truncated {
                    return Ok(0);
                }
                let room = cap.saturating_sub(self.len);
                if (bytes.len() as u64) <= room {
                    self.write(bytes)?;
                } else {
                    self.write(&bytes[..room as usize])?;
                    let note = format!(
                        "\n[aegis: {} truncated at {cap} bytes: the rest of it was dropped; \
                         raise [limits] task_output_bytes in the daemon's config.toml]\n",
                        stream_name(self.stream)
                    );
                    self.write(note.as_bytes())?;
                    self.truncated = true;
                }
            }
            Bound::Rotate { file_bytes, keep } => {
                while !bytes.is_empty() {
                    if self.len >= file_bytes {
                        self.rotate(keep)?;
                    }
                    let room = (file_bytes - self.len).min(bytes.len() as u64) as usize;
                    self.write(&bytes[..room])?;
                    bytes = &bytes[room..];
                }
            }
        }
        Ok(self.end() - before)
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Current file -> `.1`, `.1` -> `.2`..., the oldest beyond `keep` deleted; then the
    /// new base is recorded and a new current file begins. A reader that opened a file
    /// before it was renamed still reads the same bytes.
    fn rotate(&mut self, keep: u32) -> std::io::Result<()> {
        let current = stream_path(&self.dir, self.stream);
        if keep == 0 {
            remove_if_present(&current)?;
        } else {
            remove_if_present(&rotated_path(&self.dir, self.stream, keep))?;
            for i in (1..keep).rev() {
                let from = rotated_path(&self.dir, self.stream, i);
                if from.exists() {
                    fs::rename(&from, rotated_path(&self.dir, self.stream, i + 1))?;
                }
            }
            fs::rename(&current, rotated_path(&self.dir, self.stream, 1))?;
        }
        let base = self.end();
        let tmp = base_path(&self.dir, self.stream).with_extension("base.tmp");
        fs::write(&tmp, base.to_string())?;
        fs::rename(&tmp, base_path(&self.dir, self.stream))?;
        self.file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&current)?;
        self.base = base;
        self.len = 0;
        Ok(())
    }
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn read_base(dir: &Path, stream: StreamName) -> u64 {
    fs::read_to_string(base_path(dir, stream))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The absolute end of a stream on disk (a log nobody writes now).
pub fn end_on_disk(dir: &Path, stream: StreamName) -> u64 {
    let len = fs::metadata(stream_path(dir, stream)).map_or(0, |m| m.len());
    read_base(dir, stream) + len
}

/// Reads up to `max` bytes of `stream` from absolute `offset`; returns where the bytes
/// start, which is past `offset` when the bytes there were rotated away.
pub fn read_at(
    dir: &Path,
    stream: StreamName,
    offset: u64,
    max: usize,
) -> std::io::Result<(u64, Vec<u8>)> {
    // A rotation between finding the file and reading it moves the base: read again.
    for _ in 0..4 {
        let base = read_base(dir, stream);
        let read = locate_and_read(dir, stream, base, offset, max)?;
        if read_base(dir, stream) == base {
            return Ok(read);
        }
    }
    Ok((offset, Vec::new()))
}

fn locate_and_read(
    dir: &Path,
    stream: StreamName,
    base: u64,
    offset: u64,
    max: usize,
) -> std::io::Result<(u64, Vec<u8>)> {
    if offset >= base {
        return read_file(&stream_path(dir, stream), offset, offset - base, max);
    }
    // Walk back through the rotated files (newest first) to the one holding `offset`.
    let mut start = base;
    let mut oldest = None;
    for i in 1.. {
        let path = rotated_path(dir, stream, i);
        let Ok(meta) = fs::metadata(&path) else { break };
        start = start.saturating_sub(meta.len());
        if offset >= start {
            return read_file(&path, offset, offset - start, max);
        }
        oldest = Some((path, start));
    }
    // Older than anything kept: go on from the oldest byte there is.
    match oldest {
        Some((path, start)) => read_file(&path, start, 0, max),
        None => read_file(&stream_path(dir, stream), base, 0, max),
    }
}

fn read_file(path: &Path, at: u64, pos: u64, max: usize) -> std::io::Result<(u64, Vec<u8>)> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((at, Vec::new())),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(pos))?;
    let mut buf = Vec::with_capacity(max.min(1 << 20));
    f.take(max as u64).read_to_end(&mut buf)?;
    Ok((at, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: StreamName = StreamName::Stdout;

    fn dir_bytes(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn a_capped_stream_keeps_its_head_and_says_what_it_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = StreamFile::open(dir.path(), OUT, Bound::Cap { bytes: 10 }).unwrap();
        f.append(b"0123456").unwrap();
        f.append(b"789abcdef").unwrap();
        let end = f.end();
        assert_eq!(f.append(b"more").unwrap(), 0);
        let (at, all) = read_at(dir.path(), OUT, 0, 1000).unwrap();
        assert_eq!(at, 0);
        let text = String::from_utf8(all).unwrap();
        assert!(
            text.starts_with("0123456789\n[aegis: stdout truncated at 10 bytes"),
            "{text}"
        );
        assert!(text.contains("task_output_bytes"), "{text}");
        assert_eq!(end_on_disk(dir.path(), OUT), end);
        // A daemon restarted over it does not write past the cap either.
        let mut again = StreamFile::open(dir.path(), OUT, Bound::Cap { bytes: 10 }).unwrap();
        assert_eq!(again.append(b"x").unwrap(), 0);
    }

    #[test]
    fn a_rotated_stream_stays_bounded_and_reads_by_absolute_offset() {
        let dir = tempfile::tempdir().unwrap();
        let bound = Bound::Rotate {
            file_bytes: 100,
            keep: 2,
        };
        let mut f = StreamFile::open(dir.path(), OUT, bound).unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(37) {
            f.append(chunk).unwrap();
        }
        assert_eq!(f.end(), 10_000);
        // Three files of at most 100 bytes, plus the base file.
        assert!(
            dir_bytes(dir.path()) <= 300 + 8,
            "{}",
            dir_bytes(dir.path())
        );
        assert!(!rotated_path(dir.path(), OUT, 3).exists());
        // The last 300 bytes are readable at their absolute offsets.
        for offset in [9_700u64, 9_750, 9_800, 9_950] {
            let (at, got) = read_at(dir.path(), OUT, offset, 20).unwrap();
            assert_eq!(at, offset);
            assert_eq!(got, &data[offset as usize..offset as usize + 20]);
        }
        // Older bytes were rotated away: the read skips to the oldest kept.
        let (at, got) = read_at(dir.path(), OUT, 5, 10).unwrap();
        assert_eq!(at, 9_700);
        assert_eq!(got, &data[9_700..9_710]);
        assert_eq!(end_on_disk(dir.path(), OUT), 10_000);
        // A restarted daemon carries on at the same offsets.
        let mut again = StreamFile::open(dir.path(), OUT, bound).unwrap();
        assert_eq!(again.end(), 10_000);
        again.append(b"z").unwrap();
        assert_eq!(
            read_at(dir.path(), OUT, 10_000, 5).unwrap(),
            (10_000, b"z".to_vec())
        );
    }
}
