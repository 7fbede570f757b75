//! A VM's serial console log with bounded disk use, whatever the guest prints.
//!
//! The VMM writes the console to a unix socket that [`ConsoleLog::listen`] bound first, not to
//! a file: a file the VMM appends to grows without end. The pump keeps `console.log` and
//! `console.log.1`, each at most half the cap: when `console.log` is full it becomes
//! `console.log.1` (replacing the older half) and a new one starts, so the newest output, the
//! part a boot failure needs, is always kept. [`tail`] reads across both.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;

/// Default cap of one VM's console log: 1 MiB.
pub const DEFAULT_CONSOLE_LOG_BYTES: u64 = 1 << 20;

/// The pump of one VM's console; stops when dropped (with the VM) or when the VMM closes it.
pub struct ConsoleLog {
    pump: tokio::task::JoinHandle<()>,
}

impl Drop for ConsoleLog {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl ConsoleLog {
    /// Binds `socket` for the VMM to connect its serial console to, and pumps what arrives
    /// into `log`, keeping at most `max_bytes` (plus one read) on disk. Must be called before
    /// the VMM starts: it connects while it parses its command line.
    pub fn listen(socket: &Path, log: &Path, max_bytes: u64) -> std::io::Result<ConsoleLog> {
        let listener = UnixListener::bind(socket)?;
        let mut file = HalvedFile::open(log, max_bytes / 2)?;
        let pump = tokio::spawn(async move {
            // One VMM, one connection.
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if let Err(e) = file.write(&buf[..n]) {
                            tracing::warn!(log = %file.path.display(), error = %e, "cannot write the console log");
                            return;
                        }
                    }
                }
            }
        });
        Ok(ConsoleLog { pump })
    }
}

/// `console.log` and its older half `console.log.1`.
struct HalvedFile {
    path: PathBuf,
    half: u64,
    file: File,
    len: u64,
}

impl HalvedFile {
    fn open(path: &Path, half: u64) -> std::io::Result<HalvedFile> {
        let file = open_append(path)?;
        let len = file.metadata()?.len();
        Ok(HalvedFile {
            path: path.to_path_buf(),
            half: half.max(1),
            file,
            len,
        })
    }

    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            if self.len >= self.half {
                std::fs::rename(&self.path, older(&self.path))?;
                self.file = open_append(&self.path)?;
                self.len = 0;
            }
            let n = (self.half - self.len).min(bytes.len() as u64) as usize;
            self.file.write_all(&bytes[..n])?;
            self.len += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn older(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The last `max` bytes of the console log at `path` (from its older half too when the
/// current one is short), starting at a line boundary.
pub fn tail(path: &Path, max: u64) -> String {
    let current = crate::process::tail_file(path, max);
    if current.len() as u64 >= max {
        return current;
    }
    let before = crate::process::tail_file(&older(path), max - current.len() as u64);
    before + &current
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_guest_printing_without_end_keeps_the_log_under_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, log) = (
            dir.path().join("console.sock"),
            dir.path().join("console.log"),
        );
        let cap = 64 * 1024;
        let console = ConsoleLog::listen(&socket, &log, cap).unwrap();
        let mut vmm = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let line = b"[ 1.000] guest says something rather long, again and again\n";
        for _ in 0..200_000 {
            vmm.write_all(line).await.unwrap();
        }
        vmm.write_all(b"the very last line\n").await.unwrap();
        drop(vmm);
        // The pump ends at the VMM's end of the stream.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !console.pump.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the pump never finished"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let used = size(&log) + size(&older(&log));
        assert!(used <= cap, "{used} bytes kept, cap {cap}");
        assert!(used >= cap / 2, "the newest half at least is kept: {used}");
        let t = tail(&log, 2048);
        assert!(t.ends_with("again and again\nthe very last line\n"), "{t}");
        assert!(t.len() <= 2048);
    }

    #[test]
    fn the_tail_spans_both_halves() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(older(&log), "old one\nold two\n").unwrap();
        std::fs::write(&log, "new\n").unwrap();
        assert_eq!(tail(&log, 1000), "old one\nold two\nnew\n");
        assert_eq!(tail(&log, 13), "old two\nnew\n");
    }
}
