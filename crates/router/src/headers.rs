//! Header handling shared by the HTTP paths: hop-by-hop stripping, forwarding headers,
//! upgrades, and the app name in a `Host`.

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Whether the message asks for (or, in a 101, accepts) a protocol upgrade.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && has_token(headers, &header::CONNECTION, "upgrade")
}

/// Removes hop-by-hop headers, including those the `Connection` header names. With
/// `upgrade`, keeps `Upgrade` and `Connection: upgrade` so the upgrade passes through.
/// `keep_te_trailers` keeps `TE: trailers`, which gRPC needs end to end.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool, keep_te_trailers: bool) {
    if let Some(conn) = headers.get(header::CONNECTION) {
        if conn.as_bytes() != b"keep-alive" && conn.as_bytes() != b"close" {
            let named: Vec<HeaderName> = headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|s| s.split(','))
                .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
                .filter(|n| !(upgrade && n == header::UPGRADE))
                .collect();
            for n in named {
                headers.remove(n);
            }
        }
    }
    let te_trailers = keep_te_trailers && has_token(headers, &header::TE, "trailers");
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The value this proxy adds to `X-Forwarded-For` for `client`; computed once per connection.
pub(crate) fn forwarded_for(client: IpAddr) -> HeaderValue {
    HeaderValue::try_from(client.to_string()).expect("an IP address is a valid header value")
}

/// Appends the client (`forwarded_for`) to `X-Forwarded-For` and sets `X-Forwarded-Proto`
/// unless a proxy in front of us already did.
pub(crate) fn add_forwarded(headers: &mut HeaderMap, forwarded_for: &HeaderValue) {
    let value = match headers.get(&X_FORWARDED_FOR) {
        Some(prior) => {
            let mut v = Vec::with_capacity(prior.len() + 2 + forwarded_for.len());
            v.extend_from_slice(prior.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(forwarded_for.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        None => Some(forwarded_for.clone()),
    };
    if let Some(v) = value {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
}

/// The app name a request's host asks for: port, trailing dot and a `.localhost` suffix
/// removed, lower-cased. `None` for an empty host or an IP literal.
pub(crate) fn app_name(host: &str) -> Option<String> {
    let host = host.trim();
    if host.starts_with('[') {
        return None; // an IPv6 literal names no app
    }
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let name = host.strip_suffix(".localhost").unwrap_or(&host);
    if name.is_empty() || name == "localhost" || name.parse::<IpAddr>().is_ok() {
        return None;
    }
    Some(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("upgrade", "h2c"),
            ("host", "app"),
            ("content-length", "3"),
        ]);
        strip_hop_by_hop(&mut h, false, false);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        names.sort();
        assert_eq!(names, ["content-length", "host"]);
    }

    #[test]
    fn keeps_a_websocket_upgrade() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true, false);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");
    }

    #[test]
    fn keeps_te_trailers_for_grpc() {
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h, false, true);
        assert_eq!(h["te"], "trailers");
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h, false, false);
        assert!(!h.contains_key("te"));
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        add_forwarded(&mut h, &forwarded_for("127.0.0.1".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, &forwarded_for("::1".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn app_names_from_hosts() {
        assert_eq!(app_name("web.localhost:8099").as_deref(), Some("web"));
        assert_eq!(app_name("Web.LOCALHOST.").as_deref(), Some("web"));
        assert_eq!(app_name("web").as_deref(), Some("web"));
        assert_eq!(app_name("web:80").as_deref(), Some("web"));
        assert_eq!(app_name("a.b.localhost").as_deref(), Some("a.b"));
        assert_eq!(app_name("localhost:8099"), None);
        assert_eq!(app_name("127.0.0.1:8099"), None);
        assert_eq!(app_name("[::1]:8099"), None);
        assert_eq!(app_name(""), None);
    }
}
