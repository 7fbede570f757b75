//! Image references, normalised the way `docker pull` does.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The registry used when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed, normalised image reference: `registry/repository[:tag][@sha256:digest]`.
///
/// `alpine` is `docker.io/library/alpine:latest`; `localhost:5000/x/y:t` is on registry
/// `localhost:5000`. A reference with a digest is pulled by digest (the tag, if any, is kept
/// only as a label).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalises a reference.
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.len() > 4096 {
            return Err(bad("it is too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(|r| bad(&r))?;
                (rest, Some(digest.to_string()))
            }
            None => (s, None),
        };
        // A tag is a ':' after the last '/' (a ':' before it is a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                validate_tag(tag).map_err(|r| bad(&r))?;
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(bad("the repository name is empty"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        validate_registry(&registry).map_err(|r| bad(&r))?;
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_string(),
            _ => registry,
        };
        validate_repository(&repository).map_err(|r| bad(&r))?;
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host (and port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository, e.g. `library/alpine`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (`latest` when the reference named neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The registry's host without the port.
    pub fn host(&self) -> &str {
        if let Some(rest) = self.registry.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        self.registry.split(':').next().unwrap_or(&self.registry)
    }

    /// Whether the registry is on loopback and is therefore spoken to over plain HTTP.
    pub fn is_loopback_registry(&self) -> bool {
        matches!(self.host(), "localhost" | "127.0.0.1" | "::1")
    }

    /// A file-name-safe, reversible form of the canonical reference (used for image records).
    pub fn escaped(&self) -> String {
        let mut out = String::new();
        for b in self.to_string().bytes() {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_' {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    pub(crate) fn to_oci(&self) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone(),
                digest.clone(),
            ),
            (_, Some(digest)) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                digest.clone(),
            ),
            (tag, None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

/// Checks `sha256:<64 lowercase hex>`; returns the hex part.
pub(crate) fn validate_digest(digest: &str) -> std::result::Result<&str, String> {
    let Some((algo, hex)) = digest.split_once(':') else {
        return Err(format!(
            "digest {digest:?} has no algorithm (expected sha256:<64 hex>)"
        ));
    };
    if algo != "sha256" {
        return Err(format!(
            "digest algorithm {algo:?} is not supported (only sha256)"
        ));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "digest {digest:?} is not sha256 followed by 64 lowercase hex digits"
        ));
    }
    Ok(hex)
}

fn validate_tag(tag: &str) -> std::result::Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} is invalid (letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-')"
        ))
    }
}

fn validate_registry(registry: &str) -> std::result::Result<(), String> {
    let ok = !registry.is_empty()
        && registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "registry {registry:?} is not a host name with an optional port"
        ))
    }
}

fn validate_repository(repository: &str) -> std::result::Result<(), String> {
    for component in repository.split('/') {
        let bytes = component.as_bytes();
        let ok = !bytes.is_empty()
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
        if !ok {
            return Err(format!(
                "repository {repository:?} is invalid (lowercase letters, digits and '.', '_', '-' between them, components separated by '/')"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_short_names_get_library_prefix_and_latest() {
        let r = p("alpine");
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        let r = p("alpine:3.21");
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("docker.io", "library/alpine", Some("3.21"))
        );
        assert_eq!(p("user/app:v1").to_string(), "docker.io/user/app:v1");
        assert_eq!(
            p("docker.io/alpine").to_string(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            p("index.docker.io/library/alpine:3").to_string(),
            "docker.io/library/alpine:3"
        );
        assert!(!r.is_loopback_registry());
    }

    #[test]
    fn registry_with_port_and_nested_repository() {
        let r = p("localhost:5000/x/y:tag");
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "x/y");
        assert_eq!(r.tag(), Some("tag"));
        assert_eq!(r.host(), "localhost");
        assert!(r.is_loopback_registry());
        let r = p("127.0.0.1:5000/test/img");
        assert_eq!(r.tag(), Some("latest"));
        assert!(r.is_loopback_registry());
        let r = p("ghcr.io/org/app:1.0");
        assert_eq!(r.registry(), "ghcr.io");
        assert!(!r.is_loopback_registry());
        // A port-less registry name without a dot is a Docker Hub user.
        assert_eq!(p("myuser/app").registry(), "docker.io");
    }

    #[test]
    fn digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = p(&format!("alpine@{d}"));
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(r.tag(), None);
        assert_eq!(r.to_string(), format!("docker.io/library/alpine@{d}"));
        let r = p(&format!("localhost:5000/a:t@{d}"));
        assert_eq!((r.tag(), r.digest()), (Some("t"), Some(d.as_str())));
    }

    #[test]
    fn invalid_references_are_rejected_with_reasons() {
        for bad in [
            "",
            "Alpine",
            "alpine:",
            "alpine:-x",
            "alpine@sha256:abc",
            "alpine@md5:0123",
            "a//b",
            "/alpine",
            "alpine/",
            "bad host!/x",
            &format!("alpine@sha256:{}", "A".repeat(64)),
        ] {
            let err = Reference::parse(bad).expect_err(bad);
            assert!(
                matches!(err, Error::InvalidReference { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("invalid image reference"), "{err}");
        }
    }

    #[test]
    fn escaped_names_are_file_safe_and_distinct() {
        let a = p("localhost:5000/x/y:tag").escaped();
        let b = p("localhost:5000/x_y:tag").escaped();
        assert!(!a.contains('/') && !a.contains(':'), "{a}");
        assert_ne!(a, b);
        assert_eq!(a, "localhost%3A5000%2Fx%2Fy%3Atag");
    }
}
