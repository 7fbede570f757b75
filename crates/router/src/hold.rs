//! Hold while the upstream is not ready, fail after a deadline: linkerd2-proxy's fail-fast
//! layer, with a wake instead of a wait for endpoints.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Chain, ProxyError};
use crate::upstream::Upstream;

/// Returns once `upstream` is ready, waking it if needed, or fails after `deadline`.
pub(crate) async fn until_ready(
    upstream: &dyn Upstream,
    deadline: Duration,
) -> Result<(), ProxyError> {
    if upstream.is_ready() {
        return Ok(());
    }
    match tokio::time::timeout(deadline, upstream.ensure_ready()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ProxyError::Wake(e)),
        Err(_) => Err(ProxyError::WakeTimeout(deadline)),
    }
}

/// Starts a wake without waiting for it (a loading page was served instead).
pub(crate) fn wake_in_background(upstream: Arc<dyn Upstream>, deadline: Duration) {
    if upstream.is_ready() {
        return;
    }
    tokio::spawn(async move {
        if let Err(e) = until_ready(&*upstream, deadline).await {
            tracing::warn!(error = %Chain(&e), "background wake failed");
        }
    });
}
