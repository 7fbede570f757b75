use std::future::Future;
use std::time::Duration;

use super::*;
use crate::message::{GuestMessage, HostMessage};

/// Every await that depends on the session working gets a deadline: a broken session fails
/// the test with a message instead of hanging it.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(30), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no progress within 30 s (the session is stuck)"),
    }
}

fn pair() -> (
    (Session, mpsc::Receiver<GuestMessage>),
    (Session, mpsc::Receiver<HostMessage>),
) {
    let (a, b) = tokio::io::duplex(16 * 1024);
    (
        Session::start(a, Side::Host),
        Session::start(b, Side::Guest),
    )
}

#[tokio::test]
async fn control_messages_flow_both_ways() {
    let ((host, mut host_rx), (guest, mut guest_rx)) = pair();
    within("host send", host.send(HostMessage::Ping { nonce: 42 }))
        .await
        .unwrap();
    assert_eq!(
        within("guest receive", guest_rx.recv()).await,
        Some(HostMessage::Ping { nonce: 42 })
    );
    within("guest send", guest.send(GuestMessage::Pong { nonce: 42 }))
        .await
        .unwrap();
    assert_eq!(
        within("host receive", host_rx.recv()).await,
        Some(GuestMessage::Pong { nonce: 42 })
    );
}

#[tokio::test]
async fn close_ends_the_connection_for_the_peer() {
    let ((host, _h), (_guest, mut guest_rx)) = pair();
    host.close();
    // The guest sees the end of the connection rather than waiting forever.
    assert_eq!(within("peer sees the close", guest_rx.recv()).await, None);
}

#[tokio::test]
async fn stream_ids_have_side_parity() {
    let ((host, _h), (guest, _g)) = pair();
    assert_eq!(host.open_stream().id() % 2, 1);
    assert_eq!(guest.open_stream().id() % 2, 0);
}

#[tokio::test]
async fn large_transfer_is_byte_exact_and_flow_controlled() {
    let ((host, _h), (guest, _g)) = pair();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut tx = guest.stream(11).send;
    let expected = data.clone();
    let writer = tokio::spawn(async move {
        tx.send(Bytes::from(data)).await.unwrap();
        tx.finish().await.unwrap();
    });
    let mut rx = host.stream(11).recv;
    let got = within("read the transfer", rx.read_to_end()).await.unwrap();
    within("writer ends", writer).await.unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
    // Everything read: nothing is left queued, and the window bounded what ever was.
    let stats = host.stats();
    assert_eq!(stats.queued_bytes, 0);
    assert!(
        stats.peak_queued_bytes <= u64::from(INITIAL_WINDOW),
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_stalled_stream_does_not_block_another() {
    let ((host, _h), (guest, _g)) = pair();
    // Stream 1: the host never reads it; its sender must block after one window.
    let mut stalled = guest.stream(1).send;
    let blocked = tokio::spawn(async move {
        stalled
            .send(Bytes::from(vec![0u8; 4 * INITIAL_WINDOW as usize]))
            .await
    });
    let _stalled_rx = host.stream(1);
    // Stream 3 still flows.
    let mut tx = guest.stream(3).send;
    within("send on stream 3", tx.send(Bytes::from_static(b"hello")))
        .await
        .unwrap();
    within("finish stream 3", tx.finish()).await.unwrap();
    let got = within("read stream 3", host.stream(3).recv.read_to_end())
        .await
        .unwrap();
    assert_eq!(got, b"hello");
    // Not a timing assertion: the stalled sender can never finish without credit, so this
    // only gives a wrongly unblocked sender the chance to show itself.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!blocked.is_finished(), "sender must wait for credit");
    blocked.abort();
}

#[tokio::test]
async fn a_dropped_reader_never_blocks_the_sender() {
    let ((host, _h), (guest, _g)) = pair();
    let mut tx = guest.stream(5).send;
    let (rx, _keep_send_half) = host.stream(5).into_split();
    drop(rx);
    within(
        "send into a dropped reader",
        tx.send(Bytes::from(vec![1u8; 4 * INITIAL_WINDOW as usize])),
    )
    .await
    .unwrap();
    within("finish", tx.finish()).await.unwrap();
}

#[tokio::test]
async fn an_abandoned_stream_resets_the_sender() {
    let ((host, _h), (guest, _g)) = pair();
    let mut tx = guest.stream(7).send;
    drop(host.stream(7));
    let r = within(
        "send into an abandoned stream",
        tx.send(Bytes::from(vec![1u8; 4 * INITIAL_WINDOW as usize])),
    )
    .await;
    assert_eq!(r, Err(SessionError::Reset(7)));
}

#[tokio::test]
async fn connection_loss_fails_streams_and_ends_control() {
    let (a, b) = tokio::io::duplex(1024);
    let (host, mut host_rx) = Session::start::<GuestMessage, _>(a, Side::Host);
    let mut rx = host.stream(2).recv;
    drop(b);
    assert_eq!(within("control ends", host_rx.recv()).await, None);
    assert_eq!(
        within("stream fails", rx.recv()).await,
        Err(SessionError::Closed)
    );
    within("session closes", host.closed()).await;
    assert!(host.send(HostMessage::Shutdown).await.is_err());
    assert_eq!(
        host.violation(),
        None,
        "a lost connection is not a violation"
    );
}

#[tokio::test]
async fn claiming_a_peer_stream_frees_its_slot() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let config = SessionConfig {
        max_peer_streams: 2,
    };
    let (host, _h) = Session::start_with::<GuestMessage, _>(a, Side::Host, config);
    let (guest, _g) = Session::start::<HostMessage, _>(b, Side::Guest);
    // Three streams the guest opens one after the other, each claimed by the host before the
    // next: the limit counts streams waiting to be claimed, not streams ever opened.
    for _ in 0..3 {
        let mut tx = guest.open_stream().send;
        within("send", tx.send(Bytes::from_static(b"x")))
            .await
            .unwrap();
        within("finish", tx.finish()).await.unwrap();
        let id = tx.id();
        // Wait until the frame created the stream on the host, then claim it.
        within("stream arrives", async {
            while host.stats().peer_streams == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        let got = within("read", host.stream(id).recv.read_to_end())
            .await
            .unwrap();
        assert_eq!(got, b"x");
        assert_eq!(host.stats().peer_streams, 0);
    }
    assert!(!host.is_closed());
    assert_eq!(host.violation(), None);
}

#[tokio::test]
async fn repeated_final_frames_do_not_grow_a_queue() {
    let ((host, mut host_rx), (guest, _g)) = pair();
    let mut rx = host.stream(9).recv;
    let mut tx = guest.stream(9).send;
    within("send", tx.send(Bytes::from_static(b"end")))
        .await
        .unwrap();
    within("finish", tx.finish()).await.unwrap();
    // A misbehaving peer repeats its EOF: only the first one may be queued.
    for _ in 0..1000 {
        let f = encode(&Frame::<()>::Eof { stream: 9 }).unwrap();
        within("raw eof", guest.shared.send_raw(f)).await.unwrap();
    }
    // Frames are dispatched in order: once this arrives, so have all the EOFs.
    within("pong", guest.send(GuestMessage::Pong { nonce: 1 }))
        .await
        .unwrap();
    assert_eq!(
        within("pong arrives", host_rx.recv()).await,
        Some(GuestMessage::Pong { nonce: 1 })
    );
    let got = within("read", rx.read_to_end()).await.unwrap();
    assert_eq!(got, b"end");
    assert_eq!(rx.state.incoming.lock().items.len(), 0);
}
