//! A hostile peer on the other end of a real socketpair: it writes raw frames and ignores
//! every rule of the protocol. The session must hold a bounded amount of memory and end with a
//! [`Violation`] that names what the peer did.
//!
//! Memory is measured two ways: the session's own counters (`peak_queued_bytes`, exact) and
//! the process's peak RSS (`VmHWM`, reset through `/proc/self/clear_refs` before each case).
//! The tests of this file take one lock so the RSS of one case is not charged to another.

use std::future::Future;
use std::time::Duration;

use aegis_proto::frame::{Frame, MAX_DATA};
use aegis_proto::session::{DEFAULT_MAX_PEER_STREAMS, INITIAL_WINDOW};
use aegis_proto::{GuestMessage, HostMessage, Session, SessionError, Side, Violation};
use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Growth of peak RSS allowed while a hostile peer pushes hundreds of megabytes at a session.
/// The session itself may hold at most `max(1 claimed stream, 128 peer streams * 4 KiB)` here;
/// the rest is allocator and runtime slack.
const RSS_BOUND: u64 = 64 * 1024 * 1024;

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing happened within 60 s"),
    }
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"));
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable {line}"))
}

/// Resets the peak-RSS mark and returns the current RSS in bytes.
fn reset_peak_rss() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM via /proc/self/clear_refs");
    status_kib("VmRSS:") * 1024
}

fn peak_rss() -> u64 {
    status_kib("VmHWM:") * 1024
}

fn data_frame(stream: u32, len: usize) -> Bytes {
    let mut buf = BytesMut::new();
    Frame::<()>::Data {
        stream,
        data: Bytes::from(vec![0x5a; len]),
    }
    .encode(&mut buf)
    .unwrap();
    buf.freeze()
}

/// Starts a session on one end of a socketpair and hands the other end to the hostile peer;
/// what the session writes is read and thrown away so it never blocks on the peer.
fn hostile_pair<In: DeserializeOwned + Send + 'static>(
    side: Side,
) -> (Session, tokio::sync::mpsc::Receiver<In>, OwnedWriteHalf) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let (session, control) = Session::start::<In, _>(ours, side);
    let (mut rd, wr) = theirs.into_split();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    (session, control, wr)
}

/// Writes `frames` until the session hangs up; returns the bytes that went out.
async fn flood(wr: &mut OwnedWriteHalf, frames: impl Iterator<Item = Bytes>) -> u64 {
    let mut sent = 0;
    for f in frames {
        if wr.write_all(&f).await.is_err() {
            break;
        }
        sent += f.len() as u64;
    }
    sent
}

async fn credit_is_ignored<In: DeserializeOwned + Send + 'static>(side: Side) {
    let _serial = SERIAL.lock().await;
    let before = reset_peak_rss();
    let (session, _control, mut wr) = hostile_pair::<In>(side);
    let stream = session.open_stream();
    let id = stream.id();
    // 256 MiB on one stream whose window is 256 KiB, without waiting for a single credit.
    const ATTEMPT: u64 = 256 * 1024 * 1024;
    let frame = data_frame(id, MAX_DATA);
    let frames = std::iter::repeat_n(frame, (ATTEMPT / MAX_DATA as u64) as usize);
    let sent = within("flood", flood(&mut wr, frames)).await;
    within("session ends", session.closed()).await;

    let violation = session.violation();
    assert!(
        matches!(violation, Some(Violation::CreditOverrun { stream, window, .. })
            if stream == id && window == INITIAL_WINDOW),
        "{violation:?}"
    );
    // The session hung up on the peer long before it could send everything.
    assert!(
        sent < ATTEMPT / 4,
        "the peer wrote {sent} bytes before the hang-up"
    );
    let stats = session.stats();
    assert!(
        stats.peak_queued_bytes <= u64::from(INITIAL_WINDOW),
        "queued beyond the window: {stats:?}"
    );
    // The local reader gets what fit in the window, then the reset.
    let mut recv = stream.recv;
    let mut read = 0u64;
    let end = loop {
        match within("read", recv.recv()).await {
            Ok(Some(b)) => read += b.len() as u64,
            other => break other,
        }
    };
    assert_eq!(end, Err(SessionError::Reset(id)));
    assert!(read <= u64::from(INITIAL_WINDOW));
    assert!(matches!(
        session.send(HostMessage::Ping { nonce: 1 }).await,
        Err(SessionError::Violation(Violation::CreditOverrun { .. }))
    ));
    let growth = peak_rss().saturating_sub(before);
    println!(
        "{side:?}: credit ignored: attempted {ATTEMPT} B, peer got {sent} B out, session peak \
         queued {} B, peak RSS growth {growth} B",
        stats.peak_queued_bytes
    );
    assert!(growth < RSS_BOUND, "peak RSS grew by {growth} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_cuts_off_a_guest_that_ignores_credit() {
    credit_is_ignored::<GuestMessage>(Side::Host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_cuts_off_a_host_that_ignores_credit() {
    credit_is_ignored::<HostMessage>(Side::Guest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_streams_end_the_session_not_the_host() {
    let _serial = SERIAL.lock().await;
    let before = reset_peak_rss();
    // A well-behaved VM next to the hostile one must not notice.
    let (a, b) = UnixStream::pair().expect("socketpair");
    let (good_host, mut good_events) = Session::start::<GuestMessage, _>(a, Side::Host);
    let (good_guest, _) = Session::start::<HostMessage, _>(b, Side::Guest);

    let (session, _control, mut wr) = hostile_pair::<GuestMessage>(Side::Host);
    const STREAMS: u32 = 100_000;
    const PER_STREAM: usize = 4096;
    let frames = (0..STREAMS).map(|i| data_frame(2 + 2 * i, PER_STREAM));
    let sent = within("flood", flood(&mut wr, frames)).await;
    within("session ends", session.closed()).await;

    assert_eq!(
        session.violation(),
        Some(Violation::TooManyStreams {
            limit: DEFAULT_MAX_PEER_STREAMS
        })
    );
    let stats = session.stats();
    let bound = (DEFAULT_MAX_PEER_STREAMS * PER_STREAM) as u64;
    assert!(stats.peak_queued_bytes <= bound, "{stats:?} > {bound}");
    // Streams nobody claimed are freed with the session.
    assert_eq!((stats.streams, stats.queued_bytes), (0, 0), "{stats:?}");
    let attempted = u64::from(STREAMS) * PER_STREAM as u64;
    assert!(sent < attempted / 4, "the peer wrote {sent} bytes");

    within(
        "good ping",
        good_guest.send(GuestMessage::Pong { nonce: 7 }),
    )
    .await
    .unwrap();
    assert_eq!(
        within("good pong", good_events.recv()).await,
        Some(GuestMessage::Pong { nonce: 7 })
    );
    assert!(!good_host.is_closed());
    let growth = peak_rss().saturating_sub(before);
    println!(
        "stream flood: attempted {STREAMS} streams / {attempted} B, peer got {sent} B out, \
         session peak queued {} B, peak RSS growth {growth} B",
        stats.peak_queued_bytes
    );
    assert!(growth < RSS_BOUND, "peak RSS grew by {growth} bytes");
}

#[tokio::test]
async fn an_oversize_data_frame_ends_the_session() {
    let (session, _control, mut wr) = hostile_pair::<GuestMessage>(Side::Host);
    let mut rx = session.stream(2).recv;
    // Hand-made: the encoder refuses to build this frame.
    let len = 1 + 4 + MAX_DATA + 1;
    let mut raw = Vec::with_capacity(4 + len);
    raw.extend_from_slice(&(len as u32).to_le_bytes());
    raw.push(1); // data
    raw.extend_from_slice(&2u32.to_le_bytes());
    raw.resize(4 + len, 0xee);
    let _ = wr.write_all(&raw).await;
    within("session ends", session.closed()).await;
    let violation = session.violation();
    assert!(
        matches!(&violation, Some(Violation::BadFrame(m)) if m.contains("data frame")),
        "{violation:?}"
    );
    // Nothing of the frame reached the stream.
    assert!(matches!(
        within("read", rx.recv()).await,
        Err(SessionError::Violation(Violation::BadFrame(_)))
    ));
}
