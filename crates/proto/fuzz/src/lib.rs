//! What the protocol fuzz targets share: one runtime, and a session fed arbitrary bytes by a
//! peer that follows none of the rules.

use std::sync::OnceLock;

use aegis_proto::session::INITIAL_WINDOW;
use aegis_proto::{Session, SessionConfig, Side};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

/// Streams the owner claims in every run: two of each parity, so frames for claimed and for
/// unclaimed streams, of both sides' ids, are all reachable.
const CLAIMED: [u32; 4] = [1, 2, 3, 4];
/// A small limit so the fuzzer reaches the stream-limit violation with short inputs.
const MAX_PEER_STREAMS: usize = 8;

/// One single-threaded runtime for the whole process: inputs run one after another.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Runs a session of `side` whose peer sends `input` and then hangs up, with an owner that
/// reads its control messages and its streams. Checks what must hold for any input: the run
/// ends (a hang is reported by libFuzzer's timeout), and the session never queued more than
/// its streams' windows allow.
pub fn session<In>(side: Side, input: &[u8])
where
    In: DeserializeOwned + Send + 'static,
{
    runtime().block_on(async {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let config = SessionConfig {
            max_peer_streams: MAX_PEER_STREAMS,
        };
        let (session, mut control) = Session::start_with::<In, _>(ours, side, config);
        let owners: Vec<_> = CLAIMED
            .iter()
            .map(|&id| {
                let (mut rx, mut tx) = session.stream(id).into_split();
                tokio::spawn(async move {
                    let _ = tx.send(Bytes::from_static(b"from the owner")).await;
                    while let Ok(Some(_)) = rx.recv().await {}
                })
            })
            .collect();
        let (mut rd, mut wr) = tokio::io::split(theirs);
        let peer = async {
            let _ = wr.write_all(input).await;
            let _ = wr.shutdown().await;
        };
        let drain = async {
            let mut buf = vec![0u8; 16 * 1024];
            while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
        };
        let inbox = async { while control.recv().await.is_some() {} };
        tokio::join!(peer, drain, inbox);
        session.close();
        for owner in owners {
            owner.await.expect("stream owner task");
        }
        let stats = session.stats();
        let bound = (CLAIMED.len() + MAX_PEER_STREAMS) as u64 * u64::from(INITIAL_WINDOW);
        assert!(
            stats.peak_queued_bytes <= bound,
            "queued {} bytes, bound {bound}",
            stats.peak_queued_bytes
        );
    });
}
