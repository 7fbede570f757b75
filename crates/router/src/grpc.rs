//! gRPC ports: HTTP/2 with prior knowledge (h2c) on both sides. While the app sleeps every
//! request is queued until it is ready, but never beyond its own `grpc-timeout`: a call whose
//! deadline passes first gets `DEADLINE_EXCEEDED`, a failed or overlong wake `UNAVAILABLE`,
//! both as trailers-only responses, which every gRPC client understands. The time spent
//! waiting is taken off the `grpc-timeout` forwarded to the app.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::ProxyBody;
use crate::conn::ConnCtx;
use crate::error::{Chain, ProxyError};
use crate::headers;
use crate::hold;

static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// gRPC status codes the router produces.
pub(crate) const DEADLINE_EXCEEDED: u32 = 4;
pub(crate) const UNAVAILABLE: u32 = 14;

/// Serves one client connection of a gRPC port.
pub(crate) async fn serve_connection(stream: TcpStream, ctx: Arc<ConnCtx>) {
    let shutdown = ctx.shutdown.clone();
    let svc_ctx = ctx.clone();
    let service = service_fn(move |req| {
        let ctx = svc_ctx.clone();
        async move { Ok::<_, Infallible>(handle(ctx, req).await) }
    });
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %ctx.client, error = %Chain(&e), "gRPC client connection failed");
    }
}

/// Handles one gRPC call for `ctx`'s target.
pub(crate) async fn handle(ctx: Arc<ConnCtx>, mut req: Request<Incoming>) -> Response<ProxyBody> {
    ctx.touch();
    let started = Instant::now();
    let timeout = req
        .headers()
        .get(&GRPC_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_timeout);
    let upstream = &ctx.target.upstream;
    if !upstream.is_ready() {
        let wake_deadline = ctx.target.route.wake.deadline;
        let (limit, client_limited) = match timeout {
            Some(t) if t <= wake_deadline => (t, true),
            _ => (wake_deadline, false),
        };
        match hold::until_ready(&**upstream, limit).await {
            Ok(()) => {}
            Err(ProxyError::WakeTimeout(_)) if client_limited => {
                return status(
                    DEADLINE_EXCEEDED,
                    "deadline exceeded while the app was waking up",
                );
            }
            Err(e) => {
                tracing::warn!(client = %ctx.client, error = %Chain(&e), "gRPC call not served");
                return status(UNAVAILABLE, &Chain(&e).to_string());
            }
        }
        if let Some(t) = timeout {
            match t.checked_sub(started.elapsed()) {
                Some(left) if !left.is_zero() => {
                    req.headers_mut()
                        .insert(GRPC_TIMEOUT.clone(), encode_timeout(left));
                }
                _ => {
                    return status(
                        DEADLINE_EXCEEDED,
                        "deadline exceeded while the app was waking up",
                    )
                }
            }
        }
    }
    prepare_request(&mut req, &ctx);
    match ctx.send_h2(req).await {
        Ok(resp) => resp.map(ProxyBody::Upstream),
        Err(e) => {
            tracing::warn!(client = %ctx.client, error = %Chain(&e), "gRPC upstream call failed");
            status(UNAVAILABLE, &Chain(&e).to_string())
        }
    }
}

fn prepare_request(req: &mut Request<Incoming>, ctx: &ConnCtx) {
    // A call that came over HTTP/1.1 (shared port) has no scheme/authority in its URI; the
    // HTTP/2 client needs both for its pseudo-headers.
    if req.uri().scheme().is_none() || req.uri().authority().is_none() {
        let authority = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("127.0.0.1:{}", ctx.target.route.guest_port));
        let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        if let Ok(uri) = format!("http://{authority}{pq}").parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    *req.version_mut() = Version::HTTP_2;
    req.headers_mut().remove(header::HOST);
    headers::strip_hop_by_hop(req.headers_mut(), false, true);
    headers::add_forwarded(req.headers_mut(), &ctx.forwarded_for);
}

/// A trailers-only gRPC response: status in the headers, no body.
pub(crate) fn status(code: u32, message: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    resp
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub(crate) fn parse_timeout(s: &str) -> Option<Duration> {
    let (digits, unit) = s.split_at(s.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Encodes a timeout in the finest unit that fits the 8-digit limit.
pub(crate) fn encode_timeout(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let s = if d.as_micros() <= MAX {
        format!("{}u", d.as_micros().max(1))
    } else if d.as_millis() <= MAX {
        format!("{}m", d.as_millis())
    } else {
        format!("{}S", d.as_secs().min(MAX as u64))
    };
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("99999999S"))
}

/// `grpc-message` is percent-encoded: printable ASCII except `%` stays as is.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse_timeout("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_timeout("123456789m"), None, "9 digits");
        assert_eq!(parse_timeout("m"), None);
        assert_eq!(parse_timeout("10x"), None);
        assert_eq!(parse_timeout("-1S"), None);
        assert_eq!(parse_timeout(""), None);
    }

    #[test]
    fn encodes_round_trip() {
        for d in [
            Duration::from_millis(50),
            Duration::from_secs(5),
            Duration::from_secs(4000),
            Duration::from_secs(400_000),
        ] {
            let v = encode_timeout(d);
            let back = parse_timeout(v.to_str().unwrap()).unwrap();
            assert!(
                back <= d && d - back < Duration::from_secs(1),
                "{d:?} -> {v:?}"
            );
        }
    }

    #[test]
    fn trailers_only_status() {
        let r = status(UNAVAILABLE, "app 100% down\n");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "app 100%25 down%0A");
        assert_eq!(r.headers()["content-type"], "application/grpc");
    }
}
