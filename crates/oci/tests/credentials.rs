//! Registry logins against a registry that records what it receives: a login goes to its own
//! registry only, never along a redirect, and never over plain HTTP off loopback.

mod common;

use std::fs;
use std::path::Path;

use aegis_oci::{Error, NoProgress, Store};
use base64::Engine;
use common::{FakeRegistry, Reply, TestImage};

const BASIC_UP: &str = "Basic dTpw"; // base64("u:p")

fn store_with_login(dir: &Path, registry: &str) -> Store {
    let file = dir.join("auth.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("u:p");
    fs::write(
        &file,
        format!(r#"{{"auths": {{"{registry}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    Store::open(dir.join("store"))
        .unwrap()
        .with_credentials_file(file)
}

/// A registry that wants HTTP basic `u:p` and sends blob downloads to a "CDN": itself under
/// another host name (`localhost` instead of `127.0.0.1`).
fn basic_auth_registry_with_cdn() -> FakeRegistry {
    let image = TestImage::new(None);
    FakeRegistry::start(move |req, addr| {
        if let Some(digest) = req.path.strip_prefix("/cdn/") {
            return image
                .serve(&format!("/v2/test/img/blobs/{digest}"))
                .unwrap_or(Reply::status(404));
        }
        if req.authorization.as_deref() != Some(BASIC_UP) {
            return Reply::status(401).header("WWW-Authenticate", r#"Basic realm="test""#);
        }
        if req.path == "/v2/" {
            return Reply::ok(b"{}".to_vec());
        }
        if let Some(digest) = req.path.strip_prefix("/v2/test/img/blobs/") {
            let cdn = format!("http://localhost:{}/cdn/{digest}", addr.port());
            return Reply::status(307).header("Location", &cdn);
        }
        image.serve(&req.path).unwrap_or(Reply::status(404))
    })
}

#[tokio::test]
async fn login_goes_to_its_registry_but_not_across_a_redirect_to_another_host() {
    let registry = basic_auth_registry_with_cdn();
    let work = tempfile::tempdir().unwrap();
    let store = store_with_login(work.path(), &registry.addr.to_string());
    let reference = format!("{}/test/img:v1", registry.addr);
    let image = store.pull(&reference, &NoProgress).await.unwrap();
    assert!(store.has_blob(&image.layers[0].digest));

    let requests = registry.requests();
    let manifest = requests
        .iter()
        .find(|r| r.path == "/v2/test/img/manifests/v1" && r.authorization.is_some())
        .expect("the manifest was fetched with the login");
    assert_eq!(manifest.authorization.as_deref(), Some(BASIC_UP));
    let cdn: Vec<_> = requests
        .iter()
        .filter(|r| r.path.starts_with("/cdn/"))
        .collect();
    assert_eq!(
        cdn.len(),
        2,
        "config and layer were downloaded from the CDN: {requests:?}"
    );
    for r in cdn {
        assert!(r.host.starts_with("localhost:"), "{r:?}");
        assert_eq!(
            r.authorization, None,
            "the login followed the redirect: {r:?}"
        );
    }
}

#[tokio::test]
async fn login_for_another_registry_is_never_sent() {
    let registry = basic_auth_registry_with_cdn();
    let work = tempfile::tempdir().unwrap();
    // Same host, another port; and the same port under another name: neither is this registry.
    for other in [
        format!("127.0.0.1:{}", registry.addr.port() + 1),
        format!("localhost:{}", registry.addr.port()),
    ] {
        let store = store_with_login(work.path(), &other);
        let reference = format!("{}/test/img:v1", registry.addr);
        let err = store.pull(&reference, &NoProgress).await.unwrap_err();
        assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
        assert!(err.to_string().contains("credentials file"), "{err}");
    }
    let requests = registry.requests();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| r.authorization.is_none()),
        "a login was sent: {requests:?}"
    );
}

#[tokio::test]
async fn bearer_token_service_gets_the_login_and_the_registry_only_the_token() {
    let image = TestImage::new(None);
    let registry = FakeRegistry::start(move |req, addr| {
        if req.path.starts_with("/token?") {
            return if req.authorization.as_deref() == Some(BASIC_UP)
                && req.path.contains("scope=repository%3Atest%2Fimg%3Apull")
            {
                Reply::ok(br#"{"token": "tok-123"}"#.to_vec())
            } else {
                Reply::status(401)
            };
        }
        if req.authorization.as_deref() != Some("Bearer tok-123") {
            let realm = format!(
                r#"Bearer realm="http://127.0.0.1:{}/token",service="fake""#,
                addr.port()
            );
            return Reply::status(401).header("WWW-Authenticate", &realm);
        }
        if req.path == "/v2/" {
            return Reply::ok(b"{}".to_vec());
        }
        image.serve(&req.path).unwrap_or(Reply::status(404))
    });
    let work = tempfile::tempdir().unwrap();
    let store = store_with_login(work.path(), &registry.addr.to_string());
    let reference = format!("{}/test/img:v1", registry.addr);
    store.pull(&reference, &NoProgress).await.unwrap();

    let requests = registry.requests();
    assert!(requests
        .iter()
        .any(|r| r.path.starts_with("/token?") && r.authorization.as_deref() == Some(BASIC_UP)));
    for r in requests
        .iter()
        .filter(|r| r.path.starts_with("/v2/test/img/"))
    {
        assert_eq!(r.authorization.as_deref(), Some("Bearer tok-123"), "{r:?}");
    }
    assert!(
        requests
            .iter()
            .filter(|r| !r.path.starts_with("/token?"))
            .all(|r| r.authorization.as_deref() != Some(BASIC_UP)),
        "the login went to the registry, not only to its token service: {requests:?}"
    );
}

/// A registry whose challenge names `realm` as its token service.
fn registry_with_realm(realm: &'static str) -> FakeRegistry {
    FakeRegistry::start(move |req, addr| {
        let realm = realm.replace("PORT", &addr.port().to_string());
        match req.path.as_str() {
            p if p.starts_with("/token?") => Reply::status(302).header(
                "Location",
                &format!("http://localhost:{}/elsewhere", addr.port()),
            ),
            _ => {
                Reply::status(401).header("WWW-Authenticate", &format!(r#"Bearer realm="{realm}""#))
            }
        }
    })
}

#[tokio::test]
async fn login_is_refused_to_a_plain_http_token_service_off_loopback() {
    let registry = registry_with_realm("http://auth.example.com/token");
    let work = tempfile::tempdir().unwrap();
    let store = store_with_login(work.path(), &registry.addr.to_string());
    let err = store
        .pull(&format!("{}/test/img:v1", registry.addr), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnsafeLogin { .. }), "{err:?}");
    assert!(err.to_string().contains("is not HTTPS"), "{err}");
    assert!(registry
        .requests()
        .iter()
        .all(|r| r.authorization.is_none()));
}

#[tokio::test]
async fn login_does_not_follow_a_token_service_redirect() {
    let registry = registry_with_realm("http://127.0.0.1:PORT/token");
    let work = tempfile::tempdir().unwrap();
    let store = store_with_login(work.path(), &registry.addr.to_string());
    let err = store
        .pull(&format!("{}/test/img:v1", registry.addr), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnsafeLogin { .. }), "{err:?}");
    assert!(err.to_string().contains("redirect"), "{err}");
    let requests = registry.requests();
    assert!(requests.iter().any(|r| r.path.starts_with("/token?")));
    assert!(
        requests.iter().all(|r| r.path != "/elsewhere"),
        "the redirect was followed: {requests:?}"
    );
}
