//! The part of an image's configuration that `docker run` honours.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Runtime configuration of an image (the `config` object of the OCI image configuration),
/// with the image's platform.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`: the program and its leading arguments.
    pub entrypoint: Vec<String>,
    /// `Cmd`: default arguments (or the command, without an entrypoint).
    pub cmd: Vec<String>,
    /// `Env`: `KEY=value` entries, in order.
    pub env: Vec<String>,
    /// `WorkingDir`: the working directory ("" means `/`).
    pub working_dir: String,
    /// `User`: `user`, `uid`, `user:group` or `uid:gid` ("" means root).
    pub user: String,
    /// `ExposedPorts`: e.g. `80/tcp`, sorted.
    pub exposed_ports: Vec<String>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// The image's operating system (e.g. `linux`).
    pub os: String,
    /// The image's architecture (e.g. `amd64`).
    pub architecture: String,
}

#[derive(Deserialize)]
struct RawImageConfig {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    config: Option<RawRuntimeConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRuntimeConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

impl ImageConfig {
    /// Parses an OCI / Docker image configuration document.
    pub fn from_json(bytes: &[u8]) -> std::result::Result<Self, serde_json::Error> {
        let raw: RawImageConfig = serde_json::from_slice(bytes)?;
        let c = raw.config.unwrap_or_default();
        Ok(ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
            labels: c.labels.unwrap_or_default(),
            os: raw.os,
            architecture: raw.architecture,
        })
    }

    /// The command `docker run IMAGE` would run: entrypoint followed by cmd.
    pub fn command(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_style_config() {
        let json = br#"{
            "architecture": "amd64", "os": "linux",
            "config": {
                "Entrypoint": ["/docker-entrypoint.sh"],
                "Cmd": ["nginx", "-g", "daemon off;"],
                "Env": ["PATH=/usr/bin:/bin", "NGINX_VERSION=1.27"],
                "WorkingDir": "/srv",
                "User": "101:101",
                "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
                "Labels": {"maintainer": "x"}
            },
            "rootfs": {"type": "layers", "diff_ids": []}
        }"#;
        let c = ImageConfig::from_json(json).unwrap();
        assert_eq!(c.entrypoint, ["/docker-entrypoint.sh"]);
        assert_eq!(c.cmd, ["nginx", "-g", "daemon off;"]);
        assert_eq!(c.env.len(), 2);
        assert_eq!(c.working_dir, "/srv");
        assert_eq!(c.user, "101:101");
        assert_eq!(c.exposed_ports, ["443/tcp", "80/tcp"]);
        assert_eq!(c.command()[0], "/docker-entrypoint.sh");
        assert_eq!((c.os.as_str(), c.architecture.as_str()), ("linux", "amd64"));
    }

    #[test]
    fn missing_and_null_fields_are_empty() {
        let c = ImageConfig::from_json(br#"{"config": {"Cmd": null, "Env": null}}"#).unwrap();
        assert_eq!(c, ImageConfig::default());
        let c = ImageConfig::from_json(br#"{}"#).unwrap();
        assert!(c.command().is_empty());
    }
}
