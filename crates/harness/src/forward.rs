//! `Connect`: a TCP connection to a guest port, spliced with a session stream.
//!
//! Half-close aware in both directions: the host's EOF shuts down the write side of the TCP
//! connection (the server sees EOF and may still answer), and the server's EOF finishes the
//! stream. An error on either side (a reset stream, a TCP reset) aborts both.

use std::time::Duration;

use aegis_proto::session::{RecvHalf, SendHalf};
use aegis_proto::{GuestMessage, Session, StreamId};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// A guest service that does not accept within this long is reported as unreachable. Long on
/// purpose: a burst of connections overflows a small listen backlog and the kernel retries
/// SYNs for seconds; the host bounds the wait with the instance's wake timeout anyway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
const CHUNK: usize = 64 * 1024;

/// Handles `Connect { stream, port }` (in its own task).
pub(crate) async fn connect(session: Session, stream: StreamId, port: u16) {
    // Claim the stream first so bytes the host sends early are queued, not lost.
    let (from_host, mut to_host) = session.stream(stream).into_split();
    let addr = (std::net::Ipv4Addr::LOCALHOST, port);
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return failed(&session, to_host, stream, format!("127.0.0.1:{port}: {e}")).await
        }
        Err(_) => {
            let error = format!(
                "127.0.0.1:{port}: no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            );
            return failed(&session, to_host, stream, error).await;
        }
    };
    let _ = tcp.set_nodelay(true);
    if session
        .send(GuestMessage::Connected { stream })
        .await
        .is_err()
    {
        return;
    }
    let (tcp_r, tcp_w) = tcp.into_split();
    let aborted = {
        let up = host_to_tcp(from_host, tcp_w);
        let down = tcp_to_host(tcp_r, &mut to_host);
        tokio::pin!(up, down);
        tokio::select! {
            ok = &mut up => !ok || !down.await,
            ok = &mut down => !ok || !up.await,
        }
    };
    if aborted {
        to_host.reset().await;
    }
}

async fn failed(session: &Session, mut to_host: SendHalf, stream: StreamId, error: String) {
    tracing::debug!(stream, %error, "connect failed");
    let _ = session
        .send(GuestMessage::ConnectFailed { stream, error })
        .await;
    to_host.reset().await;
}

/// Host -> service. False on an abnormal end.
async fn host_to_tcp(mut from_host: RecvHalf, mut tcp: OwnedWriteHalf) -> bool {
    loop {
        match from_host.recv().await {
            Ok(Some(data)) => {
                if tcp.write_all(&data).await.is_err() {
                    return false;
                }
            }
            Ok(None) => {
                let _ = tcp.shutdown().await;
                return true;
            }
            Err(_) => return false,
        }
    }
}

/// Service -> host. False on an abnormal end.
async fn tcp_to_host(mut tcp: OwnedReadHalf, to_host: &mut SendHalf) -> bool {
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        buf.reserve(CHUNK);
        match tcp.read_buf(&mut buf).await {
            Ok(0) => return to_host.finish().await.is_ok(),
            Ok(_) => {
                if to_host.send(buf.split().freeze()).await.is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}
