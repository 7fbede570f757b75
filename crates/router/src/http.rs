//! HTTP/1.1 ports (and WebSocket ports, which are HTTP until the upgrade). While the app
//! sleeps: a browser gets the loading page at once and the wake starts in the background;
//! any other request (including a WebSocket upgrade) is held until the app is ready, then
//! proxied, or answered `503` + `Retry-After` once the deadline passes. A failing app
//! answers `502`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::ProxyBody;
use crate::conn::{ConnCtx, LocalDriver};
use crate::error::{Chain, ErrorSide, ProxyError};
use crate::headers;
use crate::hold;
use crate::loading_page;
use crate::protocol::Protocol;
use crate::websocket;

/// Seconds a client told to come back (`503`) should wait.
pub(crate) const RETRY_AFTER_SECS: u32 = 5;

/// An HTTP/1.1 connection that starts no new request for this long is closed, so an idle
/// keep-alive connection (a browser keeps them for minutes) does not pin its instance.
/// The timer also bounds how long a client may take to send a request head.
pub(crate) const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(30);

/// Serves one client connection of an HTTP or WebSocket port.
pub(crate) async fn serve_connection(stream: TcpStream, ctx: Arc<ConnCtx>, driver: LocalDriver) {
    let shutdown = ctx.shutdown.clone();
    let svc_ctx = ctx.clone();
    let service = service_fn(move |req| {
        let ctx = svc_ctx.clone();
        async move { Ok::<_, Infallible>(handle(ctx, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(KEEP_ALIVE_IDLE)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let main = async {
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    };
    let result = driver.run(main, || ctx.release_upstream()).await;
    if let Err(e) = result {
        tracing::debug!(client = %ctx.client, error = %Chain(&e), "HTTP client connection failed");
    }
}

/// Handles one request for `ctx`'s target: wake behaviour, then forwarding.
pub(crate) async fn handle(ctx: Arc<ConnCtx>, req: Request<Incoming>) -> Response<ProxyBody> {
    ctx.touch();
    let upstream = &ctx.target.upstream;
    let route = ctx.target.route;
    if loading_page::is_probe(&req) {
        return loading_page::probe(upstream, route.wake.deadline);
    }
    if !upstream.is_ready() {
        let browser = route.protocol == Protocol::Http
            && route.wake.loading_page
            && !headers::is_upgrade(req.headers())
            && loading_page::wants_html(&req);
        if browser {
            hold::wake_in_background(upstream.clone(), route.wake.deadline);
            return loading_page::page();
        }
        if let Err(e) = hold::until_ready(&**upstream, route.wake.deadline).await {
            tracing::warn!(client = %ctx.client, guest_port = route.guest_port, error = %Chain(&e), "request not served");
            return error_response(&e);
        }
    }
    forward(ctx, req).await
}

async fn forward(ctx: Arc<ConnCtx>, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let upgrade = headers::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    prepare_request(&mut req, &ctx.forwarded_for, upgrade);
    let mut resp = match ctx.send_h1(req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(client = %ctx.client, guest_port = ctx.target.route.guest_port, error = %Chain(&e), "upstream request failed");
            return error_response(&e);
        }
    };
    let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if let (true, Some(client_upgrade)) = (switched, client_upgrade) {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        websocket::splice_upgrade(ctx.clone(), client_upgrade, upstream_upgrade);
    }
    headers::strip_hop_by_hop(resp.headers_mut(), switched, false);
    resp.map(ProxyBody::Upstream)
}

/// Makes a client request fit for the app's HTTP/1.1 connection.
fn prepare_request(req: &mut Request<Incoming>, forwarded_for: &HeaderValue, upgrade: bool) {
    // A request that arrived over HTTP/2 (shared port) or in absolute form carries its host
    // in the URI: move it to `Host` and send the origin form.
    if req.version() == Version::HTTP_2 || req.uri().authority().is_some() {
        if !req.headers().contains_key(header::HOST) {
            if let Some(v) = req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        let origin = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
        *req.uri_mut() = origin;
        if req.version() == Version::HTTP_2 {
            *req.version_mut() = Version::HTTP_11;
        }
    }
    headers::strip_hop_by_hop(req.headers_mut(), upgrade, false);
    headers::add_forwarded(req.headers_mut(), forwarded_for);
}

/// What a client sees when the router cannot serve its request.
pub(crate) fn error_response(e: &ProxyError) -> Response<ProxyBody> {
    let (status, text, kind) = match e {
        ProxyError::WakeTimeout(d) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "503 Service Unavailable: the app is waking up and was not ready within {} s. \
                 Retry in a few seconds.\n",
                d.as_secs_f32()
            ),
            "wake-timeout",
        ),
        ProxyError::Wake(_) => (
            StatusCode::BAD_GATEWAY,
            format!(
                "502 Bad Gateway: the app could not be started ({}).\n",
                Chain(e)
            ),
            "wake-failed",
        ),
        _ => (
            StatusCode::BAD_GATEWAY,
            format!("502 Bad Gateway: the app did not answer ({}).\n", Chain(e)),
            match e.side() {
                ErrorSide::Downstream => "downstream",
                _ => "upstream",
            },
        ),
    };
    let mut resp = Response::new(ProxyBody::full(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-aegis-error", HeaderValue::from_static(kind));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_503_with_retry_after() {
        let r = error_response(&ProxyError::WakeTimeout(Duration::from_secs(30)));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        assert_eq!(r.headers()["x-aegis-error"], "wake-timeout");
    }

    #[test]
    fn wake_and_upstream_failures_are_502() {
        let r = error_response(&ProxyError::Wake(crate::WakeError::Gone));
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        let r = error_response(&ProxyError::Connect(crate::ConnectError::Refused {
            port: 80,
        }));
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert!(!r.headers().contains_key(header::RETRY_AFTER));
    }
}
