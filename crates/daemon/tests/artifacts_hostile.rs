//! The host side of the artifact copy against a hostile guest, played by the test over a real
//! session: crafted tar streams, endless streams, a guest that never answers. Whatever the
//! guest does, the copy ends with a clear error and leaves nothing behind.

use std::path::Path;
use std::time::Duration;

use aegis_proto::{GuestMessage, HostMessage, Session, Side};
use aegisd::tasks::artifacts::{collect, ArtifactError, CollectError};
use bytes::Bytes;
use tokio::sync::mpsc;

/// What the played guest sends for each `ReadPath`.
#[derive(Clone)]
enum Reply {
    Archive(Vec<u8>),
    /// `head`, then zeros for ever.
    Endless(Vec<u8>),
    Nothing,
}

/// A host session whose peer is a guest that answers every `ReadPath` with `reply`.
fn guest(reply: Reply) -> (Session, mpsc::Receiver<GuestMessage>) {
    let (host_io, guest_io) = tokio::io::duplex(1 << 16);
    let host = Session::start::<GuestMessage, _>(host_io, Side::Host);
    let (session, mut requests) = Session::start::<HostMessage, _>(guest_io, Side::Guest);
    tokio::spawn(async move {
        while let Some(msg) = requests.recv().await {
            let HostMessage::ReadPath { stream, .. } = msg else {
                continue;
            };
            let (head, endless) = match &reply {
                Reply::Archive(a) => (a.clone(), false),
                Reply::Endless(h) => (h.clone(), true),
                Reply::Nothing => continue,
            };
            let (_rx, mut tx) = session.stream(stream).into_split();
            for chunk in head.chunks(64 * 1024) {
                if tx.send(Bytes::copy_from_slice(chunk)).await.is_err() {
                    return;
                }
            }
            if endless {
                // Until the host stops reading, which resets the stream.
                while tx.send(Bytes::from(vec![0u8; 64 * 1024])).await.is_ok() {}
                continue;
            }
            let _ = tx.finish().await;
            let _ = session
                .send(GuestMessage::PathSent {
                    stream,
                    error: None,
                })
                .await;
        }
    });
    host
}

fn header(path: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_path(path).unwrap();
    h.set_cksum();
    h
}

fn archive(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data) in entries {
        b.append(&header(path, *kind, data.len() as u64), *data)
            .unwrap();
    }
    b.into_inner().unwrap()
}

/// Neither the artifacts nor their staging directory exist.
fn nothing_left(dest: &Path) {
    assert!(!dest.exists(), "{} exists", dest.display());
    let partial = dest.with_extension("partial");
    assert!(!partial.exists(), "{} exists", partial.display());
}

fn never() -> std::future::Pending<()> {
    std::future::pending()
}

#[tokio::test]
async fn whole_archives_arrive_and_nothing_is_staged() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("artifacts");
    let a = archive(&[("out/a.txt", tar::EntryType::Regular, b"hello")]);
    let (session, mut events) = guest(Reply::Archive(a));
    let paths = ["/out".to_string(), "/again".to_string()];
    collect(&session, &mut events, &paths, &dest, 1 << 20, &mut never())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(dest.join("out/a.txt")).unwrap(),
        b"hello".to_vec()
    );
    assert!(!dest.with_extension("partial").exists());
}

#[tokio::test]
async fn a_device_node_after_a_file_is_refused_and_nothing_is_kept() {
    for kind in [
        tar::EntryType::Char,
        tar::EntryType::Block,
        tar::EntryType::Fifo,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("artifacts");
        let a = archive(&[
            ("out/a.txt", tar::EntryType::Regular, b"first"),
            ("out/null", kind, b""),
        ]);
        let (session, mut events) = guest(Reply::Archive(a));
        let paths = ["/out".to_string()];
        let err = collect(&session, &mut events, &paths, &dest, 1 << 20, &mut never())
            .await
            .unwrap_err();
        match err {
            CollectError::Failed {
                path,
                error: ArtifactError::Special(entry),
            } => {
                assert_eq!(path.as_deref(), Some("/out"));
                assert_eq!(entry, "out/null");
            }
            other => panic!("{kind:?}: {other:?}"),
        }
        nothing_left(&dest);
    }
}

#[tokio::test]
async fn an_endless_stream_stops_at_the_cap_and_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("artifacts");
    // A header announcing a 1 TiB file, then zeros for as long as the host reads.
    let head = header("out/big", tar::EntryType::Regular, 1 << 40);
    let (session, mut events) = guest(Reply::Endless(head.as_bytes().to_vec()));
    let paths = ["/out".to_string()];
    let cap = 4 << 20;
    let err = collect(&session, &mut events, &paths, &dest, cap, &mut never())
        .await
        .unwrap_err();
    match &err {
        CollectError::Failed {
            error: e @ ArtifactError::TooLarge { cap: c },
            ..
        } => {
            assert_eq!(*c, cap);
            assert!(e.to_string().contains("cap of 4194304 bytes"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    nothing_left(&dest);
}

#[tokio::test]
async fn a_guest_that_never_answers_is_stopped_and_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("artifacts");
    let (session, mut events) = guest(Reply::Nothing);
    let paths = ["/out".to_string()];
    let mut stop = Box::pin(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        "deadline"
    });
    let err = collect(&session, &mut events, &paths, &dest, 1 << 20, &mut stop)
        .await
        .unwrap_err();
    assert!(matches!(err, CollectError::Stopped("deadline")), "{err:?}");
    nothing_left(&dest);
}
