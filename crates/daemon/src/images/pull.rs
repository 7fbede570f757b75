//! `POST /v1/images/pull`: pull into the store, make the layer disks, and stream progress as
//! NDJSON [`PullEvent`]s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_api::{PullEvent, PullImage};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::daemon::Daemon;

/// Progress lines are sent at most this often (plus on every change of message).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

fn line(event: &PullEvent) -> Bytes {
    let mut v = serde_json::to_vec(event).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Reports pull progress into the response stream, throttled. A slow client loses
/// intermediate progress lines, never the final one.
struct StreamProgress {
    tx: mpsc::Sender<Bytes>,
    state: Mutex<State>,
}

struct State {
    message: String,
    done: u64,
    total: Option<u64>,
    last_sent: Option<Instant>,
}

impl StreamProgress {
    fn emit(&self, force: bool) {
        let mut s = self.state.lock();
        if !force && s.last_sent.is_some_and(|t| t.elapsed() < PROGRESS_INTERVAL) {
            return;
        }
        s.last_sent = Some(Instant::now());
        let _ = self.tx.try_send(line(&PullEvent::Progress {
            message: s.message.clone(),
            done: s.done,
            total: s.total,
        }));
    }
}

impl aegis_oci::Progress for StreamProgress {
    fn set_message(&self, message: &str) {
        {
            let mut s = self.state.lock();
            s.message = message.to_string();
        }
        self.emit(true);
    }
    fn set_length(&self, length: u64) {
        self.state.lock().total = Some(length);
        self.emit(true);
    }
    fn inc(&self, delta: u64) {
        self.state.lock().done += delta;
        self.emit(false);
    }
    fn finish(&self) {
        self.emit(true);
    }
}

/// Starts the pull of `req.reference`; the returned stream ends with `done` or `error`. The
/// pull goes on if the client goes away (what it stores is complete or absent either way).
pub fn start(daemon: Arc<Daemon>, req: PullImage) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let progress = StreamProgress {
            tx: tx.clone(),
            state: Mutex::new(State {
                message: format!("Resolving {}", req.reference),
                done: 0,
                total: None,
                last_sent: None,
            }),
        };
        let result = async {
            let _gc = daemon.images.hold_gc().await;
            let image = daemon
                .images
                .store()
                .pull(&req.reference, &progress)
                .await
                .map_err(super::store_error)?;
            drop(_gc);
            let layers = image.layers.len();
            let _ = tx
                .send(line(&PullEvent::Progress {
                    message: format!("Making disks of {layers} layers"),
                    done: 0,
                    total: Some(layers as u64),
                }))
                .await;
            if let Err(e) = daemon.images.layer_disks(&image.layers).await {
                // An image that cannot become disks (an unsafe layer entry, a full disk) is
                // not kept: nothing can boot it, and listing it would claim otherwise.
                forget(&daemon, &image.reference).await;
                return Err(e);
            }
            tracing::info!(image = %image.reference, layers, "image pulled");
            Ok::<_, aegis_api::ApiError>(image)
        }
        .await;
        let event = match result {
            Ok(image) => PullEvent::Done {
                image: super::info(&image, vec![]),
            },
            Err(e) => {
                tracing::warn!(reference = %req.reference, error = %e, "pull failed");
                PullEvent::Error { error: e.error }
            }
        };
        let _ = tx.send(line(&event)).await;
    });
    rx
}

/// Removes a just-pulled image whose disks could not be made, with the blobs nothing else uses.
async fn forget(daemon: &Arc<Daemon>, reference: &str) {
    if let Err(e) = daemon.images.remove_image(daemon, reference).await {
        tracing::warn!(image = reference, error = %e, "cannot remove the unusable image");
    }
}
