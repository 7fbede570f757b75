//! Logging in to a registry without letting the login travel further than it must.
//!
//! oci-client would send a login to whatever token service a registry's challenge names, over
//! any scheme, following redirects. So when a pull has a login, the challenge is answered here:
//! the login goes only to the registry itself (HTTP basic) or to its token service when that is
//! HTTPS (or plain HTTP on loopback), never along a redirect; oci-client then gets the token.
//! A registry that asks for no auth never sees the login.

use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::credentials::Login;
use crate::error::{Error, Result};
use crate::reference::Reference;

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
    Other(String),
}

/// Parses the challenges of a `WWW-Authenticate` value (`Bearer realm="…",service="…"`).
pub(crate) fn parse_challenges(value: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let end = rest.find([' ', ',']).unwrap_or(rest.len());
        let scheme = &rest[..end];
        rest = rest[end..].trim_start_matches([' ', ',']);
        let mut params: Vec<(String, String)> = Vec::new();
        // Parameters are `key=value` or `key="quoted"`; a word without `=` starts the next
        // challenge.
        while let Some(eq) = rest.find('=') {
            let key = &rest[..eq];
            if key.is_empty() || key.contains([' ', ',']) {
                break;
            }
            let after = &rest[eq + 1..];
            let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut close = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => {
                            close = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[close.min(quoted.len())..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            };
            params.push((key.to_ascii_lowercase(), value));
            rest = remainder.trim_start_matches([' ', ',']);
        }
        let param = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        out.push(if scheme.eq_ignore_ascii_case("basic") {
            Challenge::Basic
        } else if scheme.eq_ignore_ascii_case("bearer") {
            match param("realm") {
                Some(realm) => Challenge::Bearer {
                    realm,
                    service: param("service"),
                },
                None => Challenge::Other("Bearer without a realm".into()),
            }
        } else {
            Challenge::Other(scheme.to_string())
        });
        if scheme.is_empty() {
            break;
        }
    }
    out
}

/// Whether a URL may carry a login: HTTPS anywhere; plain HTTP only to loopback, and only for
/// a registry on loopback itself (a remote registry must not steer a login to a local port).
pub(crate) fn may_carry_login(url: &Url, registry_on_loopback: bool) -> bool {
    match url.scheme() {
        "https" => true,
        "http" if registry_on_loopback => url.host_str().is_some_and(|host| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
}

/// An HTTP client that never follows a redirect: a login must not follow one.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// Answers the registry's challenge with `login`; returns what oci-client should use.
pub(crate) async fn authenticate(
    http: &reqwest::Client,
    reference: &Reference,
    login: &Login,
) -> Result<RegistryAuth> {
    let registry = reference.registry().to_string();
    let host = reference.to_oci().resolve_registry().to_string();
    let scheme = if reference.is_loopback_registry() {
        "http"
    } else {
        "https"
    };
    let unsafe_login = |reason: String| Error::UnsafeLogin {
        registry: registry.clone(),
        reason,
    };
    let failed = |detail: String| Error::Registry {
        reference: reference.to_string(),
        registry: registry.clone(),
        detail,
    };
    let probe_url = format!("{scheme}://{host}/v2/");
    let probe = http
        .get(&probe_url)
        .send()
        .await
        .map_err(|e| Error::Unreachable {
            reference: reference.to_string(),
            registry: registry.clone(),
            detail: crate::session::error_chain(&e),
        })?;
    if probe.status().is_success() {
        // The registry asks for no auth: the login stays home.
        return Ok(RegistryAuth::Anonymous);
    }
    let challenges: Vec<Challenge> = probe
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect();
    if probe.status() != StatusCode::UNAUTHORIZED || challenges.is_empty() {
        return Err(failed(format!(
            "GET {probe_url} answered {} without an auth challenge",
            probe.status()
        )));
    }
    let bearer = challenges.iter().find_map(|c| match c {
        Challenge::Bearer { realm, service } => Some((realm.clone(), service.clone())),
        _ => None,
    });
    let Some((realm, service)) = bearer else {
        if challenges.contains(&Challenge::Basic) {
            return Ok(RegistryAuth::Basic(
                login.username.clone(),
                login.password.clone(),
            ));
        }
        return Err(failed(format!(
            "unsupported auth challenge {challenges:?} (Aegis speaks Basic and Bearer)"
        )));
    };
    let realm_url = Url::parse(&realm)
        .map_err(|e| failed(format!("the token service URL {realm:?} is invalid: {e}")))?;
    if !may_carry_login(&realm_url, reference.is_loopback_registry()) {
        return Err(unsafe_login(format!(
            "its token service {realm_url} is not HTTPS; a login is only sent over HTTPS (or plain HTTP from a loopback registry to a loopback token service)"
        )));
    }
    let mut query = vec![(
        "scope",
        format!("repository:{}:pull", reference.repository()),
    )];
    if let Some(service) = service {
        query.push(("service", service));
    }
    let response = http
        .get(realm_url.clone())
        .query(&query)
        .basic_auth(&login.username, Some(&login.password))
        .send()
        .await
        .map_err(|e| Error::Unreachable {
            reference: reference.to_string(),
            registry: registry.clone(),
            detail: format!(
                "token service {realm_url}: {}",
                crate::session::error_chain(&e)
            ),
        })?;
    let status = response.status();
    if status.is_redirection() {
        let to = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        return Err(unsafe_login(format!(
            "its token service {realm_url} redirected to {to}; a login never follows a redirect"
        )));
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let body = response.text().await.unwrap_or_default();
        return Err(Error::Unauthorized {
            reference: reference.to_string(),
            registry,
            detail: format!(
                "the token service {realm_url} refused the login of {:?} ({status}): {}",
                login.username,
                body.chars().take(200).collect::<String>()
            ),
        });
    }
    if !status.is_success() {
        return Err(failed(format!(
            "token service {realm_url} answered {status}"
        )));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| failed(format!("token service {realm_url}: {e}")))?;
    let token: TokenResponse = serde_json::from_slice(&bytes)
        .map_err(|e| failed(format!("token service {realm_url} sent no token: {e}")))?;
    match token.token.or(token.access_token) {
        Some(token) if !token.is_empty() => Ok(RegistryAuth::Bearer(token)),
        _ => Err(failed(format!(
            "token service {realm_url} sent an empty token"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_challenges() {
        assert_eq!(
            parse_challenges(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:x:pull""#
            ),
            [Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            }]
        );
        assert_eq!(
            parse_challenges(r#"Basic realm="Registry Realm""#),
            [Challenge::Basic]
        );
        assert_eq!(
            parse_challenges(r#"Basic realm="a, b", Bearer realm=https://t/x"#),
            [
                Challenge::Basic,
                Challenge::Bearer {
                    realm: "https://t/x".into(),
                    service: None
                }
            ]
        );
        assert_eq!(
            parse_challenges("Bearer service=x"),
            [Challenge::Other("Bearer without a realm".into())]
        );
        // Garbage never panics.
        for s in ["", "=", "\"", "Bearer realm=\"unterminated", ",,,", "a=b=c"] {
            let _ = parse_challenges(s);
        }
    }

    #[test]
    fn login_only_over_https_or_loopback_http() {
        for (url, ok) in [
            ("https://auth.example.com/token", true),
            ("http://127.0.0.1:5000/token", true),
            ("http://localhost/token", true),
            ("http://[::1]:8/token", true),
            ("http://auth.example.com/token", false),
            ("http://10.0.0.1/token", false),
            ("ftp://127.0.0.1/token", false),
        ] {
            let url = Url::parse(url).unwrap();
            assert_eq!(may_carry_login(&url, true), ok, "{url}");
            // A remote registry gets HTTPS only.
            assert_eq!(
                may_carry_login(&url, false),
                url.scheme() == "https",
                "{url}"
            );
        }
    }
}
