//! The daemon's path, without a VM: the upstream is a stream over a host<->guest session
//! (`aegis_proto::io::StreamIo`), and a stand-in harness on the guest side of the session
//! dials the app on loopback (`HostMessage::Connect`). This is also the reference for the
//! daemon's `Upstream` implementation.
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aegis_proto::io::StreamIo;
use aegis_proto::{GuestMessage, HostMessage, Session, Side, StreamId};
use aegis_router::{
    ActivityGuard, ActivityTracker, ConnectError, Io, Protocol, Upstream, WakeError,
};
use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

type Pending = Arc<Mutex<HashMap<StreamId, oneshot::Sender<Result<(), String>>>>>;

/// An instance reached through its session.
struct SessionUpstream {
    session: Session,
    pending: Pending,
    activity: Arc<ActivityTracker>,
}

impl SessionUpstream {
    fn start(session: Session, mut control: mpsc::Receiver<GuestMessage>) -> Arc<Self> {
        let pending: Pending = Arc::default();
        let p = pending.clone();
        tokio::spawn(async move {
            while let Some(msg) = control.recv().await {
                let (stream, result) = match msg {
                    GuestMessage::Connected { stream } => (stream, Ok(())),
                    GuestMessage::ConnectFailed { stream, error } => (stream, Err(error)),
                    _ => continue,
                };
                if let Some(tx) = p.lock().unwrap().remove(&stream) {
                    let _ = tx.send(result);
                }
            }
            // Session gone: fail whoever still waits.
            p.lock().unwrap().clear();
        });
        Arc::new(SessionUpstream {
            session,
            pending,
            activity: ActivityTracker::new(),
        })
    }
}

#[async_trait]
impl Upstream for SessionUpstream {
    fn is_ready(&self) -> bool {
        !self.session.is_closed()
    }

    async fn ensure_ready(&self) -> Result<(), WakeError> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(WakeError::Gone)
        }
    }

    async fn connect(&self, guest_port: u16) -> Result<Box<dyn Io>, ConnectError> {
        let stream = self.session.open_stream();
        let id = stream.id();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let sent = self
            .session
            .send(HostMessage::Connect {
                stream: id,
                port: guest_port,
            })
            .await;
        if sent.is_err() {
            self.pending.lock().unwrap().remove(&id);
            return Err(ConnectError::NotRunning);
        }
        match rx.await {
            Ok(Ok(())) => Ok(Box::new(StreamIo::from(stream))),
            Ok(Err(error)) if error.contains("refused") => {
                Err(ConnectError::Refused { port: guest_port })
            }
            Ok(Err(error)) => Err(ConnectError::Failed {
                port: guest_port,
                source: error.into(),
            }),
            Err(_) => Err(ConnectError::NotRunning),
        }
    }

    fn connection_opened(&self) -> ActivityGuard {
        self.activity.guard()
    }

    fn touch(&self) {
        self.activity.touch();
    }
}

/// The guest side: what the harness does for `Connect`.
fn fake_harness(guest: Session, mut control: mpsc::Receiver<HostMessage>) {
    tokio::spawn(async move {
        while let Some(msg) = control.recv().await {
            let HostMessage::Connect { stream, port } = msg else {
                continue;
            };
            let guest = guest.clone();
            tokio::spawn(async move {
                match TcpStream::connect(("127.0.0.1", port)).await {
                    Ok(mut tcp) => {
                        let mut io = StreamIo::from(guest.stream(stream));
                        let _ = guest.send(GuestMessage::Connected { stream }).await;
                        let _ = tokio::io::copy_bidirectional(&mut io, &mut tcp).await;
                    }
                    Err(e) => {
                        let _ = guest
                            .send(GuestMessage::ConnectFailed {
                                stream,
                                error: e.to_string(),
                            })
                            .await;
                    }
                }
            });
        }
    });
}

/// A session pair over an in-memory pipe; dropping the returned handle's pipe end kills
/// the "VM".
fn instance() -> (Arc<SessionUpstream>, Session) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (host, host_rx) = Session::start::<GuestMessage, _>(a, Side::Host);
    let (guest, guest_rx) = Session::start::<HostMessage, _>(b, Side::Guest);
    fake_harness(guest.clone(), guest_rx);
    (SessionUpstream::start(host, host_rx), guest)
}

#[tokio::test]
async fn http_through_the_session() {
    bounded(async move {
        init_tracing();
        let app = http_app().await;
        let (up, _guest) = instance();
        let router = Router::port_dyn(
            up.clone(),
            route(app.port, Protocol::Http, Duration::from_secs(5)),
        )
        .await;
        let mut client = h1_client(router.addr).await;
        for _ in 0..3 {
            let resp = client
                .send_request(get(router.addr, "/").body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(body_string(resp).await, "hello from the app");
        }
        let body = Bytes::from(vec![b'z'; 1_000_000]);
        let req = hyper::Request::post(format!("http://{}/echo", router.addr))
            .header("host", "app")
            .body(Full::new(body.clone()))
            .unwrap();
        let resp = client.send_request(req).await.unwrap();
        assert_eq!(body_string(resp).await.len(), body.len());
        assert_eq!(up.activity.open_connections(), 1);
    })
    .await;
}

#[tokio::test]
async fn tcp_through_the_session() {
    bounded(async move {
        let app = echo_app().await;
        let (up, _guest) = instance();
        let router = Router::port_dyn(
            up.clone(),
            route(app.port, Protocol::Tcp, Duration::from_secs(5)),
        )
        .await;
        let c = TcpStream::connect(router.addr).await.unwrap();
        let (mut r, mut w) = c.into_split();
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got == data);
    })
    .await;
}

#[tokio::test]
async fn a_refused_guest_port_is_502() {
    bounded(async move {
        let closed_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (up, _guest) = instance();
        let router = Router::port_dyn(
            up,
            route(closed_port, Protocol::Http, Duration::from_secs(5)),
        )
        .await;
        let mut client = h1_client(router.addr).await;
        let resp = client
            .send_request(get(router.addr, "/").body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 502);
        assert!(body_string(resp).await.contains("nothing accepts"));
    })
    .await;
}

#[tokio::test]
async fn a_vm_killed_mid_request_is_502() {
    bounded(async move {
        let app = http_app().await;
        let (up, guest) = instance();
        let router = Router::port_dyn(
            up.clone(),
            route(app.port, Protocol::Http, Duration::from_secs(5)),
        )
        .await;
        let mut client = h1_client(router.addr).await;
        let addr = router.addr;
        let pending = tokio::spawn(async move {
            let resp = client
                .send_request(get(addr, "/hang").body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap();
            resp.status()
        });
        // The request is in the app's hands, through the session, before the VM dies.
        eventually(Duration::from_secs(10), || app.hanging() == 1).await;
        // kill -9 of the VM: its end of the channel is gone.
        guest.close();
        let status = tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, 502);
    })
    .await;
}
