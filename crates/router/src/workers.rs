//! Thread-per-core serving. On tokio's work-stealing runtime every proxied request pays for
//! its readiness events funnelling through one shared epoll and for tasks hopping between
//! workers; measured here (bench/router), that costs about a quarter of the throughput of a
//! proxy like haproxy whose threads each own their connections. [`Workers`] is that model:
//! threads that each run a current-thread runtime. A listener still accepts on the caller's
//! runtime and hands each connection to one worker, round-robin; from then on the
//! connection, its requests and its upstream connection live on that thread.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

/// A pool of router threads, each running a current-thread tokio runtime. Create one per
/// process and share it between listeners; dropping the last reference stops the threads
/// (and drops whatever connections they still serve).
///
/// [`crate::Upstream`] methods are then called on these threads: they must not assume the
/// daemon's runtime. Spawn long-running work on a `Handle` captured beforehand (a
/// [`crate::WakeGate`] created on the daemon's runtime runs its wakes there).
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `threads` worker threads (at least one).
    pub fn new(threads: usize) -> io::Result<Arc<Workers>> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let (tx, rx) = std::sync::mpsc::channel();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("aegis-router-{i}"))
                .spawn(move || {
                    let rt = match Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(stop.cancelled());
                })?;
            let handle = rx
                .recv()
                .map_err(|_| io::Error::other("a router worker thread died at start"))??;
            handles.push(handle);
        }
        Ok(Arc::new(Workers {
            handles,
            next: AtomicUsize::new(0),
            stop,
        }))
    }

    /// One worker per available CPU.
    pub fn per_core() -> io::Result<Arc<Workers>> {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Number of worker threads.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Runs `fut` on the next worker.
    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        drop(self.handles[i].spawn(fut));
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.handles.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn futures_run_on_the_worker_threads_round_robin() {
        let workers = Workers::new(2).unwrap();
        assert_eq!(workers.len(), 2);
        let mut names = Vec::new();
        for _ in 0..4 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            workers.spawn(async move {
                let _ = tx.send(std::thread::current().name().map(str::to_owned));
            });
            names.push(rx.await.unwrap().unwrap());
        }
        assert_eq!(
            names,
            [
                "aegis-router-0",
                "aegis-router-1",
                "aegis-router-0",
                "aegis-router-1"
            ]
        );
    }
}
