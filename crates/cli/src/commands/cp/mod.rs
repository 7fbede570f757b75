//! `aegis cp SRC DST`: files between the host and an instance, either way, like `docker cp`.

mod archive;

use std::path::{Path, PathBuf};
use std::time::Duration;

use aegis_api::FileKind;
use aegis_archive::ChunkReader;
use aegis_client::{Client, Error as ClientError};
use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::context::Context;

pub const HELP: &str = "\
One side is INSTANCE:/absolute/path (an instance id or name, and a path inside its VM), the
other a host path, or `-` for a tar stream on stdin or stdout. Directories are copied
recursively; modes and mtimes are kept (setuid/setgid bits are dropped on the host). A paused
or terminated instance is woken first. Paths inside the instance are resolved by the guest;
writes into /workspace land in the instance's workspace.

Like docker cp: if DST is an existing directory, SRC is copied into it under its own name;
otherwise SRC is copied as DST (whose parent must exist). Entries arrive whole or not at all:
the guest unpacks an upload beside its destination and renames it into place.

From a guest, nothing is ever written outside DST: `..` entries, links out and writes through
symlinks are refused; device nodes are skipped with a warning, fifos are made.

Examples:
  aegis cp ./src web:/srv/app           # host directory into the instance
  aegis cp web:/var/log/app.log .       # a guest file into the current directory
  tar -C build -c . | aegis cp - web:/srv/app
  aegis cp web:/etc - | tar -t          # a tar stream on stdout";

/// How long the head of a file call may take: it includes waking the instance.
const WAKE_TIMEOUT: Duration = Duration::from_secs(300);
/// Chunks of a local archive waiting for the upload.
const QUEUED_CHUNKS: usize = 4;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to copy: INSTANCE:/path, a host path, or `-` (a tar stream on stdin).
    src: String,
    /// Where to: INSTANCE:/path, a host path, or `-` (a tar stream on stdout).
    dst: String,
}

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Operand {
    Guest { instance: String, path: String },
    Host(PathBuf),
    Stdio,
}

impl Operand {
    /// `NAME:/path` is a guest path; a host path with a colon is written `./a:b`, as with
    /// docker cp.
    fn parse(s: &str) -> Operand {
        if s == "-" {
            return Operand::Stdio;
        }
        match s.split_once(':') {
            Some((instance, path)) if !instance.is_empty() && !instance.contains('/') => {
                Operand::Guest {
                    instance: instance.to_string(),
                    path: path.to_string(),
                }
            }
            _ => Operand::Host(PathBuf::from(s)),
        }
    }
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let client = Client::from_home(ctx.home()).with_timeout(WAKE_TIMEOUT);
    match (Operand::parse(&args.src), Operand::parse(&args.dst)) {
        (Operand::Guest { instance, path }, Operand::Stdio) => {
            to_stdout(&client, &instance, &path).await?
        }
        (Operand::Guest { instance, path }, Operand::Host(dst)) => {
            to_host(&client, &instance, &path, &dst).await?
        }
        (Operand::Stdio, Operand::Guest { instance, path }) => {
            from_stdin(&client, &instance, &path).await?
        }
        (Operand::Host(src), Operand::Guest { instance, path }) => {
            from_host(&client, &src, &instance, &path).await?
        }
        (Operand::Guest { .. }, Operand::Guest { .. }) => {
            bail!("copying between two instances is not supported; copy through the host")
        }
        _ => bail!("one side of `aegis cp` must be INSTANCE:/path; use cp(1) between host paths"),
    }
    Ok(0)
}

async fn to_stdout(client: &Client, instance: &str, path: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut archive = client.read_archive(instance, path).await?;
    // A blocking write: a slow reader of stdout throttles the download, which is the point.
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = archive.next().await {
        out.write_all(&chunk?).context("cannot write to stdout")?;
    }
    out.flush().context("cannot write to stdout")?;
    Ok(())
}

/// The guest path `path` copied to the host path `dst`.
async fn to_host(client: &Client, instance: &str, path: &str, dst: &Path) -> anyhow::Result<()> {
    // Where the copy lands: into an existing directory under its own name, else as `dst`.
    let (dir, name) = if dst.is_dir() {
        (dst.to_path_buf(), None)
    } else {
        let name = dst
            .file_name()
            .ok_or_else(|| anyhow!("{} names no file to copy to", dst.display()))?;
        let parent = match dst.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            bail!("{} does not exist; create it first", parent.display());
        }
        (parent, Some(name.to_os_string()))
    };
    let staging = Staging::create(&dir)?;
    let mut archive = client.read_archive(instance, path).await?;
    let (tx, rx) = mpsc::channel::<Option<Bytes>>(QUEUED_CHUNKS);
    let unpacker = {
        let into = staging.0.clone();
        tokio::task::spawn_blocking(move || archive::unpack(ChunkReader::new(rx), &into))
    };
    let mut received = Ok(());
    while let Some(chunk) = archive.next().await {
        match chunk {
            Ok(chunk) => {
                if tx.send(Some(chunk)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                received = Err(e);
                break;
            }
        }
    }
    if received.is_ok() {
        let _ = tx.send(None).await;
    }
    drop(tx);
    let unpacked = unpacker.await.context("the unpacking thread failed")?;
    received.with_context(|| format!("cannot copy {instance}:{path}"))?;
    let skipped = unpacked?;
    for device in &skipped.devices {
        eprintln!("aegis: skipped device node {device}");
    }
    // The archive holds one top-level entry, named from the guest path's last component;
    // the guest's root arrives as `./...`, i.e. the staging directory itself.
    let (top, top_name) = if path.trim_matches('/').is_empty() {
        (staging.0.clone(), None)
    } else {
        let first = std::fs::read_dir(&staging.0)
            .context("cannot read the copy")?
            .next()
            .transpose()
            .context("cannot read the copy")?;
        let Some(first) = first else {
            bail!("{instance}:{path} arrived empty");
        };
        (first.path(), Some(first.file_name()))
    };
    let target = match name.or(top_name) {
        Some(name) => dir.join(name),
        None => dir.clone(),
    };
    place(&top, &target).with_context(|| format!("cannot put the copy at {}", target.display()))?;
    Ok(())
}

/// Moves `src` to `dst`: a rename, except that a directory landing on an existing directory
/// is merged into it entry by entry (as `docker cp` does).
fn place(src: &Path, dst: &Path) -> std::io::Result<()> {
    let src_meta = std::fs::symlink_metadata(src)?;
    if src_meta.is_dir() {
        if let Ok(dst_meta) = std::fs::symlink_metadata(dst) {
            if dst_meta.is_dir() {
                for entry in std::fs::read_dir(src)? {
                    let entry = entry?;
                    place(&entry.path(), &dst.join(entry.file_name()))?;
                }
                return std::fs::set_permissions(dst, src_meta.permissions());
            }
        }
    }
    std::fs::rename(src, dst)
}

/// A hidden directory beside the destination (same file system: the last step is a rename),
/// removed with whatever is left in it.
struct Staging(PathBuf);

impl Staging {
    fn create(dir: &Path) -> anyhow::Result<Staging> {
        let staging = dir.join(format!(".aegis-cp-{}", std::process::id()));
        std::fs::create_dir(&staging)
            .with_context(|| format!("cannot create {}", staging.display()))?;
        Ok(Staging(staging))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Gone already when the copy was the staging directory itself (a guest's `/`).
        match std::fs::remove_dir_all(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                eprintln!("aegis: cannot remove {}: {e}", self.0.display())
            }
            _ => {}
        }
    }
}

async fn from_stdin(client: &Client, instance: &str, path: &str) -> anyhow::Result<()> {
    let stdin = stdin_chunks();
    client.write_archive(instance, path, stdin).await?;
    Ok(())
}

/// Stdin as a stream of chunks, read on a blocking thread.
fn stdin_chunks() -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + Sync {
    use std::io::Read;
    let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut buf = vec![0u8; 64 * 1024];
            let chunk = match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    Ok(Bytes::from(buf))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    channel_stream(rx)
}

fn channel_stream<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + Sync {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// The host path `src` copied to the guest path `path`.
async fn from_host(client: &Client, src: &Path, instance: &str, path: &str) -> anyhow::Result<()> {
    std::fs::symlink_metadata(src).with_context(|| format!("cannot copy {}", src.display()))?;
    // Into an existing guest directory under the source's own name, else as `path`.
    let (dir, name) = match client.stat_path(instance, path).await {
        Ok(info) if info.kind == FileKind::Dir => {
            let name = match src.file_name() {
                Some(n) => PathBuf::from(n),
                // `.` or `..`: the directory's own name.
                None => std::fs::canonicalize(src)?
                    .file_name()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(".")),
            };
            (path.to_string(), name)
        }
        Ok(_) | Err(ClientError::Api { status: 404, .. }) => {
            let (parent, name) = split_guest(path)?;
            (parent, PathBuf::from(name))
        }
        Err(e) => return Err(e.into()),
    };
    let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
    let packer = {
        let src = src.to_path_buf();
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || {
            let r = archive::pack(&src, &name, tx.clone());
            if let Err(e) = &r {
                // The upload must end broken, never look like a whole archive.
                let _ = tx.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
            }
            r
        })
    };
    drop(tx);
    let uploaded = client
        .write_archive(instance, &dir, channel_stream(rx))
        .await;
    let packed = packer.await.context("the packing thread failed")?;
    match packed {
        // The upload ended first (the guest refused it, its disk is full...): its error is
        // the one that says why.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        packed => packed.with_context(|| format!("cannot read {}", src.display()))?,
    }
    uploaded?;
    Ok(())
}

/// `/a/b` -> (`/a`, `b`). The guest checks the path itself; this only splits it.
fn split_guest(path: &str) -> anyhow::Result<(String, String)> {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((parent, name)) if !name.is_empty() && name != "." && name != ".." => {
            let parent = if parent.is_empty() { "/" } else { parent };
            Ok((parent.to_string(), name.to_string()))
        }
        _ => bail!("guest path '{path}' names no file to copy to; give an absolute path"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands() {
        assert_eq!(Operand::parse("-"), Operand::Stdio);
        assert_eq!(
            Operand::parse("web:/srv/app"),
            Operand::Guest {
                instance: "web".into(),
                path: "/srv/app".into()
            }
        );
        assert_eq!(Operand::parse("./a:b"), Operand::Host("./a:b".into()));
        assert_eq!(Operand::parse("dir/x"), Operand::Host("dir/x".into()));
        assert_eq!(Operand::parse(":x"), Operand::Host(":x".into()));
    }

    #[test]
    fn guest_destinations_split_into_directory_and_name() {
        assert_eq!(split_guest("/a/b").unwrap(), ("/a".into(), "b".into()));
        assert_eq!(split_guest("/b/").unwrap(), ("/".into(), "b".into()));
        assert!(split_guest("/").is_err());
        assert!(split_guest("/a/..").is_err());
    }

    #[test]
    fn a_directory_lands_merged_into_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src/sub")).unwrap();
        std::fs::write(dir.path().join("src/sub/new"), b"n").unwrap();
        std::fs::create_dir_all(dir.path().join("dst/sub")).unwrap();
        std::fs::write(dir.path().join("dst/sub/old"), b"o").unwrap();
        place(&dir.path().join("src"), &dir.path().join("dst")).unwrap();
        assert!(dir.path().join("dst/sub/old").exists());
        assert!(dir.path().join("dst/sub/new").exists());
    }
}
