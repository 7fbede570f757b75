//! One pull's conversation with a registry: the oci-client, its auth, and the mapping of
//! its errors to ours.

use std::io;
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};

use crate::credentials::{CredentialSource, Login, ENV_REGISTRY, ENV_USERNAME};
use crate::error::{Error, Result};
use crate::login;
use crate::reference::Reference;

/// A token got with a login is renewed before each blob once it is this old: registries grant
/// them for a few minutes (Docker Hub: 5), and a pull of many large layers outlasts one.
const TOKEN_RENEWAL: Duration = Duration::from_secs(45);

/// Per-pull registry state.
pub(crate) struct Session {
    pub(crate) reference: Reference,
    pub(crate) oref: oci_client::Reference,
    pub(crate) client: Client,
    pub(crate) auth: RegistryAuth,
    login: Option<Login>,
    http: reqwest::Client,
    authenticated_at: Instant,
    /// An `AEGIS_REGISTRY_USERNAME` login was ignored for naming no registry.
    unscoped_env: bool,
}

impl Session {
    /// Opens the session: finds the login for the reference's registry (if any), answers the
    /// registry's challenge with it, and authorises oci-client.
    pub(crate) async fn open(
        reference: &Reference,
        credentials: &CredentialSource,
    ) -> Result<Self> {
        let resolved = credentials.resolve(reference.registry())?;
        let protocol = if reference.is_loopback_registry() {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(300)),
            ..ClientConfig::default()
        });
        let http = login::http_client();
        let auth = match &resolved.login {
            Some(l) => login::authenticate(&http, reference, l).await?,
            None => RegistryAuth::Anonymous,
        };
        let session = Session {
            reference: reference.clone(),
            oref: reference.to_oci(),
            client,
            auth,
            login: resolved.login,
            http,
            authenticated_at: Instant::now(),
            unscoped_env: resolved.unscoped_env,
        };
        session
            .client
            .auth(&session.oref, &session.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| session.map_err(e))?;
        Ok(session)
    }

    /// Renews a bearer token got with a login once it is [`TOKEN_RENEWAL`] old.
    pub(crate) async fn renew(&mut self) -> Result<()> {
        let Some(login) = &self.login else {
            return Ok(());
        };
        if !matches!(self.auth, RegistryAuth::Bearer(_))
            || self.authenticated_at.elapsed() < TOKEN_RENEWAL
        {
            return Ok(());
        }
        self.auth = login::authenticate(&self.http, &self.reference, login).await?;
        self.authenticated_at = Instant::now();
        self.client
            .auth(&self.oref, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(())
    }

    pub(crate) fn mismatch(&self, what: &'static str, expected: &str, actual: &str) -> Error {
        Error::DigestMismatch {
            reference: self.reference.to_string(),
            what,
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }

    fn unauthorized_detail(&self, detail: String) -> String {
        if self.unscoped_env && self.login.is_none() {
            format!("{detail}; {ENV_USERNAME} is set but not used: set {ENV_REGISTRY}={} to send it to this registry", self.reference.registry())
        } else {
            detail
        }
    }

    pub(crate) fn map_err(&self, e: OciDistributionError) -> Error {
        let reference = self.reference.to_string();
        let registry = self.reference.registry().to_string();
        let detail = e.to_string();
        match &e {
            OciDistributionError::RequestError(re) if re.is_connect() || re.is_timeout() => {
                Error::Unreachable {
                    reference,
                    registry,
                    detail: error_chain(re),
                }
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let messages = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    Error::NotFound {
                        reference,
                        registry,
                        detail: messages,
                    }
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    Error::Unauthorized {
                        reference,
                        registry,
                        detail: self.unauthorized_detail(messages),
                    }
                } else {
                    Error::Registry {
                        reference,
                        registry,
                        detail: messages,
                    }
                }
            }
            OciDistributionError::ServerError { code: 404, .. }
            | OciDistributionError::ImageManifestNotFoundError(_) => Error::NotFound {
                reference,
                registry,
                detail,
            },
            OciDistributionError::ServerError {
                code: 401 | 403, ..
            }
            | OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => Error::Unauthorized {
                reference,
                registry,
                detail: self.unauthorized_detail(detail),
            },
            OciDistributionError::DigestError(_) => Error::DigestMismatch {
                reference,
                what: "manifest",
                expected: "the digest the registry announced".into(),
                actual: detail,
            },
            OciDistributionError::RequestError(re) => Error::Registry {
                reference,
                registry,
                detail: error_chain(re),
            },
            _ => Error::Registry {
                reference,
                registry,
                detail,
            },
        }
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

pub(crate) fn is_digest_error(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>())
}
