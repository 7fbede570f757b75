//! Registry logins, each scoped to the one registry host it belongs to.
//!
//! Logins come from a credentials file in the shape of Docker's `config.json`
//! (`{"auths": {"host[:port]": {"auth": "<base64 of user:password>"}}}`, or `username` and
//! `password` fields instead of `auth`) and from the `AEGIS_REGISTRY_*` environment variables,
//! which name their host in [`ENV_REGISTRY`]. A login is only ever offered to the registry its
//! key names: see `docs/IMAGES.md` for where it may then travel.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::reference::DEFAULT_REGISTRY;

/// Environment variable holding the registry user name for basic auth (with [`ENV_PASSWORD`]
/// and [`ENV_REGISTRY`]).
pub const ENV_USERNAME: &str = "AEGIS_REGISTRY_USERNAME";
/// Environment variable holding the registry password or token for basic auth.
pub const ENV_PASSWORD: &str = "AEGIS_REGISTRY_PASSWORD";
/// Environment variable naming the one registry (`host[:port]`) the `AEGIS_REGISTRY_USERNAME`
/// login belongs to. Without it that login is sent nowhere.
pub const ENV_REGISTRY: &str = "AEGIS_REGISTRY_HOST";
/// Environment variable pointing at a credentials file to use instead of the store's default.
pub const ENV_AUTH_FILE: &str = "AEGIS_REGISTRY_AUTH_FILE";

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Logins by registry, keyed the way references name registries (`host[:port]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    logins: BTreeMap<String, Login>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    /// Parses a credentials file in the Docker `config.json` shape. Keys may be written as
    /// Docker writes them (`https://index.docker.io/v1/` is `docker.io`). Entries without a
    /// login (e.g. those a credential helper keeps) are skipped.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Credentials, String> {
        let config: DockerConfig = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut out = Credentials::default();
        for (key, entry) in config.auths {
            let registry = normalize_registry(&key);
            if registry.is_empty() {
                return Err(format!("the key {key:?} names no registry"));
            }
            let login = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => decode_auth(&auth)
                    .map_err(|reason| format!("the `auth` of {key:?} {reason}"))?,
                (_, Some(username), Some(password)) if !username.is_empty() => {
                    Login { username, password }
                }
                _ => {
                    tracing::warn!(registry = %key, "credentials entry without a login (credential helpers are not supported): skipped");
                    continue;
                }
            };
            out.logins.insert(registry, login);
        }
        Ok(out)
    }

    /// Reads the credentials file at `path`; a missing file holds no logins.
    pub fn load(path: &Path) -> Result<Credentials> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Credentials::default()),
            Err(e) => {
                return Err(Error::CredentialsFile {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })
            }
        };
        warn_if_readable_by_others(path);
        Credentials::parse(&bytes).map_err(|detail| Error::CredentialsFile {
            path: path.to_path_buf(),
            detail,
        })
    }

    /// Adds (or replaces) the login of `registry` (`host[:port]`).
    pub fn insert(&mut self, registry: &str, login: Login) {
        self.logins.insert(normalize_registry(registry), login);
    }

    /// The login for exactly this registry (`host[:port]`, as [`crate::Reference::registry`]
    /// gives it), if any. `localhost:5000` and `127.0.0.1:5000` are different registries.
    pub fn for_registry(&self, registry: &str) -> Option<&Login> {
        self.logins.get(&normalize_registry(registry))
    }

    /// Whether there is no login at all.
    pub fn is_empty(&self) -> bool {
        self.logins.is_empty()
    }
}

/// Where logins come from at each pull: a credentials file and the environment.
#[derive(Debug, Clone, Default)]
pub(crate) struct CredentialSource {
    /// The store's credentials file, used unless [`ENV_AUTH_FILE`] names another.
    pub(crate) file: Option<PathBuf>,
}

/// The logins of a pull, and whether an environment login was ignored for naming no host.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) login: Option<Login>,
    pub(crate) unscoped_env: bool,
}

impl CredentialSource {
    /// The login for `registry`, read afresh (so edits apply without a restart).
    pub(crate) fn resolve(&self, registry: &str) -> Result<Resolved> {
        self.resolve_with(registry, |k| std::env::var(k).ok())
    }

    pub(crate) fn resolve_with(
        &self,
        registry: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Resolved> {
        let file = env(ENV_AUTH_FILE)
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
            .or_else(|| self.file.clone());
        let mut credentials = match &file {
            Some(path) => Credentials::load(path)?,
            None => Credentials::default(),
        };
        let mut unscoped_env = false;
        if let (Some(username), Some(password)) = (env(ENV_USERNAME), env(ENV_PASSWORD)) {
            if !username.is_empty() {
                match env(ENV_REGISTRY).filter(|h| !h.is_empty()) {
                    Some(host) => credentials.insert(&host, Login { username, password }),
                    None => unscoped_env = true,
                }
            }
        }
        Ok(Resolved {
            login: credentials.for_registry(registry).cloned(),
            unscoped_env,
        })
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `Registry:5000` → `registry:5000`.
fn normalize_registry(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_string(),
        _ => host,
    }
}

fn decode_auth(auth: &str) -> std::result::Result<Login, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| "is not base64".to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "is not UTF-8".to_string())?;
    let (username, password) = text
        .split_once(':')
        .ok_or_else(|| "is not `user:password`".to_string())?;
    if username.is_empty() {
        return Err("has an empty user name".into());
    }
    Ok(Login {
        username: username.to_string(),
        password: password.to_string(),
    })
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "the registry credentials file is readable by other users: chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn parses_docker_config_shapes() {
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "127.0.0.1:5000": {{"username": "u2", "password": "p:2"}},
                "ghcr.io": {{}}
            }}, "credsStore": "desktop"}}"#,
            b64("hub:secret:with:colons")
        );
        let c = Credentials::parse(json.as_bytes()).unwrap();
        let hub = c.for_registry("docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "secret:with:colons")
        );
        assert_eq!(c.for_registry("127.0.0.1:5000").unwrap().password, "p:2");
        assert!(
            c.for_registry("ghcr.io").is_none(),
            "helper entry has no login"
        );
        // Exact host and port: no login leaks to a neighbour.
        assert!(c.for_registry("127.0.0.1:5001").is_none());
        assert!(c.for_registry("localhost:5000").is_none());
        assert!(c.for_registry("127.0.0.1").is_none());
        assert!(
            !format!("{hub:?}").contains("secret"),
            "Debug shows the password"
        );
    }

    #[test]
    fn bad_entries_are_clear_errors() {
        let err = Credentials::parse(br#"{"auths": {"r.io": {"auth": "%%%"}}}"#).unwrap_err();
        assert!(err.contains("r.io") && err.contains("base64"), "{err}");
        let err = Credentials::parse(
            format!(
                r#"{{"auths": {{"r.io": {{"auth": "{}"}}}}}}"#,
                b64("nocolon")
            )
            .as_bytes(),
        )
        .unwrap_err();
        assert!(err.contains("user:password"), "{err}");
        assert!(Credentials::parse(b"[1]").is_err());
    }

    #[test]
    fn env_login_applies_only_to_its_named_host() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        fs::write(
            &file,
            format!(r#"{{"auths": {{"a.io": {{"auth": "{}"}}}}}}"#, b64("fa:fp")),
        )
        .unwrap();
        let source = CredentialSource {
            file: Some(file.clone()),
        };
        let env = |host: Option<&'static str>| {
            move |k: &str| match k {
                ENV_USERNAME => Some("eu".to_string()),
                ENV_PASSWORD => Some("ep".to_string()),
                ENV_REGISTRY => host.map(str::to_string),
                _ => None,
            }
        };
        let r = source.resolve_with("b.io", env(Some("b.io"))).unwrap();
        assert_eq!(r.login.unwrap().username, "eu");
        let r = source.resolve_with("a.io", env(Some("b.io"))).unwrap();
        assert_eq!(r.login.unwrap().username, "fa");
        let r = source.resolve_with("c.io", env(Some("b.io"))).unwrap();
        assert!(r.login.is_none());
        // Without a named host the environment login goes nowhere.
        let r = source.resolve_with("b.io", env(None)).unwrap();
        assert!(r.login.is_none() && r.unscoped_env);
        // A missing file holds no logins; an unreadable one is an error naming it.
        let missing = CredentialSource {
            file: Some(dir.path().join("nope.json")),
        };
        assert!(missing
            .resolve_with("a.io", |_| None)
            .unwrap()
            .login
            .is_none());
        fs::write(&file, "not json").unwrap();
        let err = source.resolve_with("a.io", |_| None).unwrap_err();
        assert!(err.to_string().contains("auth.json"), "{err}");
    }
}
