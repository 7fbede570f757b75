//! Upgraded connections (WebSocket, or any other `Upgrade`): once the app answers `101`,
//! both upgraded sides are spliced. The socket keeps its client connection's activity guard
//! for as long as it lives, so a long-lived socket pins the instance under the `on` policy.

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::conn::ConnCtx;
use crate::error::{Chain, ErrorSide};
use crate::listener::with_grace;
use crate::splice::splice;

pub(crate) fn splice_upgrade(ctx: Arc<ConnCtx>, client: OnUpgrade, upstream: OnUpgrade) {
    let tasks = ctx.tasks.clone();
    let shutdown = ctx.shutdown.clone();
    tasks.spawn(with_grace(shutdown, async move {
        let (client_io, upstream_io) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(client = %ctx.client, error = %Chain(&e), "upgrade failed");
                return;
            }
        };
        let upstream = ctx.target.upstream.clone();
        let deadline = ctx.target.route.wake.deadline;
        match splice(
            TokioIo::new(client_io),
            TokioIo::new(upstream_io),
            upstream,
            deadline,
        )
        .await
        {
            Ok(n) => tracing::debug!(
                client = %ctx.client,
                to_upstream = n.to_upstream,
                to_client = n.to_client,
                "upgraded connection closed"
            ),
            Err(e) if e.side() == ErrorSide::Downstream => {
                tracing::debug!(client = %ctx.client, error = %Chain(&e), "upgraded client failed")
            }
            Err(e) => {
                tracing::info!(client = %ctx.client, error = %Chain(&e), "upgraded upstream failed")
            }
        }
        // `ctx`, and with it the activity guard, is dropped here.
    }));
}
