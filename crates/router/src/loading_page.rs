//! The page a browser gets while the app it navigated to wakes up: shown at once, it polls
//! the router (never the app) every 500 ms and reloads as soon as the app is ready.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::body::ProxyBody;
use crate::hold;
use crate::upstream::Upstream;

/// A request carrying this header is answered by the router itself: `204` with
/// `x-aegis-ready: 1` or `0`. It is what the loading page polls; it never reaches the app.
pub(crate) static PROBE: HeaderName = HeaderName::from_static("x-aegis-wake-probe");
pub(crate) static READY: HeaderName = HeaderName::from_static("x-aegis-ready");
/// Marks the loading page, so tools and tests can tell it from the app's own pages.
pub(crate) static LOADING: HeaderName = HeaderName::from_static("x-aegis-loading");

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Starting…</title>
<noscript><meta http-equiv="refresh" content="1"></noscript>
<style>
body{font-family:system-ui,sans-serif;display:flex;align-items:center;justify-content:center;height:100vh;margin:0;background:#f6f7f9;color:#333}
main{text-align:center}
.s{width:28px;height:28px;margin:0 auto 16px;border:3px solid #ccd;border-top-color:#446;border-radius:50%;animation:r 0.8s linear infinite}
@keyframes r{to{transform:rotate(360deg)}}
p{color:#777;font-size:14px}
</style>
</head>
<body>
<main><div class="s"></div><h1>Starting the app…</h1><p>It was asleep. This page reloads by itself as soon as the app answers.</p></main>
<script>
(function poll() {
  fetch(location.href, {method: "HEAD", cache: "no-store", headers: {"X-Aegis-Wake-Probe": "1"}})
    .then(function (r) {
      if (r.headers.get("x-aegis-ready") === "1") { location.reload(); } else { setTimeout(poll, 500); }
    })
    .catch(function () { setTimeout(poll, 500); });
})();
</script>
</body>
</html>
"#;

pub(crate) fn is_probe<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(&PROBE)
}

/// A browser navigating: `GET`/`HEAD` that accepts `text/html`.
pub(crate) fn wants_html<B>(req: &Request<B>) -> bool {
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.contains("text/html")))
}

pub(crate) fn page() -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from_static(PAGE.as_bytes())));
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(LOADING.clone(), HeaderValue::from_static("1"));
    resp
}

/// Answers a probe, starting the wake if the app is not ready.
pub(crate) fn probe(upstream: &Arc<dyn Upstream>, deadline: Duration) -> Response<ProxyBody> {
    let ready = upstream.is_ready();
    if !ready {
        hold::wake_in_background(upstream.clone(), deadline);
    }
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        READY.clone(),
        HeaderValue::from_static(if ready { "1" } else { "0" }),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, accept: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/");
        if let Some(a) = accept {
            b = b.header(header::ACCEPT, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn browsers_are_recognised() {
        let firefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(wants_html(&req(Method::GET, Some(firefox))));
        assert!(wants_html(&req(Method::HEAD, Some(firefox))));
        assert!(!wants_html(&req(Method::POST, Some(firefox))));
        assert!(!wants_html(&req(Method::GET, Some("*/*"))));
        assert!(!wants_html(&req(Method::GET, None)));
    }

    #[test]
    fn page_is_uncached_and_polls() {
        let resp = page();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
        assert!(PAGE.contains("setTimeout(poll, 500)"));
        assert!(PAGE.contains(r#"http-equiv="refresh""#));
    }
}
