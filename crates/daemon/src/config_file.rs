//! The daemon's configuration file: `<home>/config.toml` ([`AegisHome::config_file`]), or the
//! file `aegisd --config` names. Every key is optional and has a documented default
//! (docs/CONFIG.md); a key the daemon does not know is refused, naming the key and the file,
//! so that a typo never silently leaves a limit at its default.
//!
//! [`AegisHome::config_file`]: aegis_api::AegisHome::config_file

use std::fmt;
use std::path::{Path, PathBuf};

use aegis_api::Limits;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Default [`Limits::max_live_vms`].
pub const DEFAULT_MAX_LIVE_VMS: u32 = 32;
/// Default [`Limits::max_instances`].
pub const DEFAULT_MAX_INSTANCES: u32 = 128;
/// Default [`Limits::max_exposed_ports`].
pub const DEFAULT_MAX_EXPOSED_PORTS: u32 = 16;
/// Default [`Limits::instance_log_bytes`]: 16 MiB.
pub const DEFAULT_INSTANCE_LOG_BYTES: u64 = 16 << 20;
/// Default [`Limits::instance_log_rotated_files`].
pub const DEFAULT_INSTANCE_LOG_ROTATED_FILES: u32 = 2;
/// Default [`Limits::task_output_bytes`]: 256 MiB per stream.
pub const DEFAULT_TASK_OUTPUT_BYTES: u64 = 256 << 20;
/// Default [`Limits::console_log_bytes`]: 1 MiB.
pub const DEFAULT_CONSOLE_LOG_BYTES: u64 = 1 << 20;
/// Default [`Limits::free_disk_reserve_bytes`]: 1 GiB.
pub const DEFAULT_FREE_DISK_RESERVE_BYTES: u64 = 1 << 30;

/// The limits in force when the file sets none.
pub fn default_limits() -> Limits {
    Limits {
        max_live_vms: DEFAULT_MAX_LIVE_VMS,
        max_instances: DEFAULT_MAX_INSTANCES,
        max_exposed_ports: DEFAULT_MAX_EXPOSED_PORTS,
        instance_log_bytes: DEFAULT_INSTANCE_LOG_BYTES,
        instance_log_rotated_files: DEFAULT_INSTANCE_LOG_ROTATED_FILES,
        task_output_bytes: DEFAULT_TASK_OUTPUT_BYTES,
        console_log_bytes: DEFAULT_CONSOLE_LOG_BYTES,
        max_blob_bytes: aegis_oci::DEFAULT_MAX_BLOB_BYTES,
        max_layer_unpacked_bytes: aegis_oci::DEFAULT_MAX_LAYER_UNPACKED_BYTES,
        max_artifact_bytes: crate::config::DEFAULT_MAX_ARTIFACT_BYTES,
        free_disk_reserve_bytes: DEFAULT_FREE_DISK_RESERVE_BYTES,
    }
}

/// Why the configuration file cannot be used. Each names the file; the daemon does not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "invalid configuration file {}: {message}(docs/CONFIG.md lists every key)",
        path.display()
    )]
    Parse { path: PathBuf, message: String },
    #[error(
        "invalid configuration file {}: [limits] {key} {message} (docs/CONFIG.md)",
        path.display()
    )]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: &'static str,
    },
}

/// The file's shape. Unknown tables and keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    limits: FileLimits,
}

/// `[limits]`: each key as in [`Limits`]; sizes are bytes or a string with a unit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_live_vms: Option<u32>,
    max_instances: Option<u32>,
    max_exposed_ports: Option<u32>,
    instance_log_bytes: Option<Size>,
    instance_log_rotated_files: Option<u32>,
    task_output_bytes: Option<Size>,
    console_log_bytes: Option<Size>,
    max_blob_bytes: Option<Size>,
    max_layer_unpacked_bytes: Option<Size>,
    max_artifact_bytes: Option<Size>,
    free_disk_reserve_bytes: Option<Size>,
}

/// Reads the limits from `path`. A missing file means the defaults, unless the user named it
/// (`required`: `aegisd --config FILE`), when it is an error.
pub fn load(path: &Path, required: bool) -> Result<Limits, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(default_limits()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses the text of the file at `path` (named in errors) into the effective limits.
pub fn parse(path: &Path, text: &str) -> Result<Limits, ConfigError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let f = file.limits;
    let d = default_limits();
    let size = |v: Option<Size>, default: u64| v.map_or(default, |s| s.0);
    let limits = Limits {
        max_live_vms: f.max_live_vms.unwrap_or(d.max_live_vms),
        max_instances: f.max_instances.unwrap_or(d.max_instances),
        max_exposed_ports: f.max_exposed_ports.unwrap_or(d.max_exposed_ports),
        instance_log_bytes: size(f.instance_log_bytes, d.instance_log_bytes),
        instance_log_rotated_files: f
            .instance_log_rotated_files
            .unwrap_or(d.instance_log_rotated_files),
        task_output_bytes: size(f.task_output_bytes, d.task_output_bytes),
        console_log_bytes: size(f.console_log_bytes, d.console_log_bytes),
        max_blob_bytes: size(f.max_blob_bytes, d.max_blob_bytes),
        max_layer_unpacked_bytes: size(f.max_layer_unpacked_bytes, d.max_layer_unpacked_bytes),
        max_artifact_bytes: size(f.max_artifact_bytes, d.max_artifact_bytes),
        free_disk_reserve_bytes: size(f.free_disk_reserve_bytes, d.free_disk_reserve_bytes),
    };
    check(&limits).map_err(|(key, message)| ConfigError::Invalid {
        path: path.to_path_buf(),
        key,
        message,
    })?;
    Ok(limits)
}

/// Smallest log sizes that still hold a useful tail.
const MIN_LOG_BYTES: u64 = 4096;

/// Values that would make the daemon useless rather than safe.
fn check(l: &Limits) -> Result<(), (&'static str, &'static str)> {
    let at_least_one = [
        ("max_live_vms", u64::from(l.max_live_vms)),
        ("max_instances", u64::from(l.max_instances)),
        ("max_blob_bytes", l.max_blob_bytes),
        ("max_layer_unpacked_bytes", l.max_layer_unpacked_bytes),
        ("max_artifact_bytes", l.max_artifact_bytes),
    ];
    for (key, v) in at_least_one {
        if v == 0 {
            return Err((key, "must be at least 1"));
        }
    }
    let logs = [
        ("instance_log_bytes", l.instance_log_bytes),
        ("task_output_bytes", l.task_output_bytes),
        ("console_log_bytes", l.console_log_bytes),
    ];
    for (key, v) in logs {
        if v < MIN_LOG_BYTES {
            return Err((key, "must be at least 4 KiB (4096 bytes)"));
        }
    }
    Ok(())
}

/// A size in bytes: an integer (`1048576`) or a string with a binary unit (`"1 MiB"`,
/// `"512KiB"`, `"10 GiB"`; `K`, `M`, `G`, `T` mean the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Size(u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = Size;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a size: a number of bytes, or a string such as \"512 MiB\" or \"10 GiB\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
        Ok(Size(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
        u64::try_from(v)
            .map(Size)
            .map_err(|_| E::custom(format!("a size cannot be negative ({v})")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
        parse_size(v).map(Size).map_err(E::custom)
    }
}

/// `"512 MiB"` -> bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || {
        format!(
            "cannot read the size \"{text}\": write bytes, or a number and KiB, MiB, GiB or TiB"
        )
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("the size \"{text}\" is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Limits, ConfigError> {
        parse(Path::new("/h/config.toml"), text)
    }

    #[test]
    fn an_empty_file_means_the_defaults() {
        assert_eq!(p("").unwrap(), default_limits());
        assert_eq!(p("[limits]\n").unwrap(), default_limits());
    }

    #[test]
    fn a_missing_file_is_the_defaults_unless_it_was_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert_eq!(load(&path, false).unwrap(), default_limits());
        let err = load(&path, true).unwrap_err().to_string();
        assert!(err.contains("cannot read the configuration file"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn sizes_take_bytes_or_units() {
        let l = p(
            "[limits]\ninstance_log_bytes = 8192\ntask_output_bytes = \"3 MiB\"\n\
                   max_blob_bytes = \"2G\"\nfree_disk_reserve_bytes = 0\n",
        )
        .unwrap();
        assert_eq!(l.instance_log_bytes, 8192);
        assert_eq!(l.task_output_bytes, 3 << 20);
        assert_eq!(l.max_blob_bytes, 2 << 30);
        assert_eq!(l.free_disk_reserve_bytes, 0);
        for bad in ["\"12 parsecs\"", "\"MiB\"", "-5", "\"99999999999 TiB\""] {
            let err = p(&format!("[limits]\nmax_blob_bytes = {bad}\n")).unwrap_err();
            assert!(err.to_string().contains("max_blob_bytes"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_unknown_key_is_named_with_the_file() {
        for text in ["[limits]\nmax_vms = 3\n", "[limit]\n", "debug = true\n"] {
            let err = p(text).unwrap_err().to_string();
            assert!(err.contains("/h/config.toml"), "{err}");
            assert!(err.contains("unknown field"), "{err}");
        }
        let err = p("[limits]\nmax_vms = 3\n").unwrap_err().to_string();
        assert!(err.contains("max_vms"), "{err}");
    }

    #[test]
    fn useless_values_are_refused() {
        let err = p("[limits]\nmax_live_vms = 0\n").unwrap_err().to_string();
        assert!(err.contains("max_live_vms must be at least 1"), "{err}");
        let err = p("[limits]\nconsole_log_bytes = 100\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("console_log_bytes must be at least 4 KiB"),
            "{err}"
        );
    }

    #[test]
    fn oci_defaults_are_the_oci_crates_own() {
        let d = default_limits();
        let oci = aegis_oci::Limits::default();
        assert_eq!(d.max_blob_bytes, oci.max_blob_bytes);
        assert_eq!(d.max_layer_unpacked_bytes, oci.max_layer_unpacked_bytes);
    }
}
