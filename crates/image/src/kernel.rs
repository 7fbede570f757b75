//! The guest kernel: built from Debian's `linux-source-6.1` with the project's own config
//! fragment, cached by a hash of everything that goes into it.
//!
//! Recipe: `make tinyconfig`, enable every option of `guest/kernel/aegis.config` with
//! `scripts/config`, `make olddefconfig`, check that every option is still `=y`, then
//! `make vmlinux`. The result is an uncompressed ELF `vmlinux` with a PVH entry point, which
//! QEMU (`-kernel`), Firecracker and libkrun all boot directly.

use std::collections::HashSet;
use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::cmd::{self, Tool};
use crate::error::{ImageError, IoContext, Result};
use crate::layout::{create_dir_all, write_atomic, DirLock, Layout};
use crate::progress::{Progress, Steps};

/// The config fragment, compiled in so that the cache hash is of the recipe this binary uses.
pub const KERNEL_CONFIG_FRAGMENT: &str = include_str!("../../../guest/kernel/aegis.config");

/// Bump when the build steps change in a way that changes the resulting kernel.
const KERNEL_RECIPE_VERSION: &str = "aegis-kernel-recipe-1";

/// Where Debian's `linux-source-6.1` package puts the source tarball.
pub const DEFAULT_KERNEL_SOURCE: &str = "/usr/src/linux-source-6.1.tar.xz";
const KERNEL_SOURCE_PACKAGE: &str = "linux-source-6.1";

/// Env var naming a user-supplied kernel (uncompressed ELF vmlinux) used instead of ours.
pub const KERNEL_ENV: &str = "AEGIS_KERNEL";
/// Env var naming another kernel source tarball to build from.
pub const KERNEL_SOURCE_ENV: &str = "AEGIS_KERNEL_SOURCE";

/// Kbuild steps of a build of this config (counted on the reference machine); the first
/// build's progress bar is measured against it, later ones against the recorded count.
const ESTIMATED_BUILD_STEPS: u64 = 1_980;

const VMLINUX: &str = "vmlinux";
const BUILD_INFO: &str = "build-info";
const STEPS_RECORD: &str = "build-steps";

/// The `CONFIG_*` names the fragment enables, in file order.
pub fn config_options() -> Vec<&'static str> {
    parse_fragment(KERNEL_CONFIG_FRAGMENT)
}

fn parse_fragment(fragment: &str) -> Vec<&str> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_suffix("=y"))
        .collect()
}

/// The kernel source the build uses: a tarball and a version string that identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSource {
    /// The `.tar.xz` to extract.
    pub tarball: PathBuf,
    /// Debian package version for the packaged tarball, else the file name and size;
    /// "absent" when the tarball does not exist.
    pub version: String,
}

/// The kernel source in use: `$AEGIS_KERNEL_SOURCE` or [`DEFAULT_KERNEL_SOURCE`].
pub fn kernel_source() -> &'static KernelSource {
    static SOURCE: OnceLock<KernelSource> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let tarball = env::var_os(KERNEL_SOURCE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_KERNEL_SOURCE));
        let version = source_version(&tarball);
        KernelSource { tarball, version }
    })
}

fn source_version(tarball: &Path) -> String {
    let Ok(meta) = fs::metadata(tarball) else {
        return "absent".into();
    };
    if tarball == Path::new(DEFAULT_KERNEL_SOURCE) {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Version}", KERNEL_SOURCE_PACKAGE])
            .output();
        if let Ok(out) = out {
            let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !v.is_empty() {
                return format!("{KERNEL_SOURCE_PACKAGE} {v}");
            }
        }
    }
    let name = tarball.file_name().unwrap_or_default().to_string_lossy();
    format!("{name} {} bytes", meta.len())
}

/// The cache key of the kernel this binary would build: sha256 over the config fragment,
/// the kernel source version and the recipe version; the first 16 hex digits.
pub fn kernel_config_hash() -> String {
    config_hash(KERNEL_CONFIG_FRAGMENT, &kernel_source().version)
}

fn config_hash(fragment: &str, source_version: &str) -> String {
    let mut h = Sha256::new();
    for part in [fragment, source_version, KERNEL_RECIPE_VERSION] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex(&h.finalize())[..16].to_string()
}

fn fragment_digest() -> String {
    hex(&Sha256::digest(KERNEL_CONFIG_FRAGMENT.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the kernel for the current config hash is (or will be) cached.
pub fn kernel_cache_path(layout: &Layout) -> PathBuf {
    layout
        .kernel_cache_dir()
        .join(kernel_config_hash())
        .join(VMLINUX)
}

/// The kernel to boot: `$AEGIS_KERNEL` if set (and it exists), else the cached kernel for
/// the current config hash. `None` when neither exists; [`kernel_path`] says why.
///
/// When the kernel source package is not installed (so its version, part of the hash, is
/// unknown), a cached kernel built from the same fragment and recipe is accepted.
pub fn find_kernel(layout: &Layout) -> Option<PathBuf> {
    kernel_path(layout).ok()
}

/// Like [`find_kernel`], with an error that tells the user what to do.
pub fn kernel_path(layout: &Layout) -> Result<PathBuf> {
    if let Some(user) = env::var_os(KERNEL_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(user);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(ImageError::UserKernelMissing { path })
        };
    }
    let cached = kernel_cache_path(layout);
    if cached.is_file() {
        return Ok(cached);
    }
    if kernel_source().version == "absent" {
        if let Some(found) = find_same_recipe(layout) {
            return Ok(found);
        }
    }
    Err(ImageError::KernelNotBuilt { path: cached })
}

fn find_same_recipe(layout: &Layout) -> Option<PathBuf> {
    let want = build_info_key();
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(layout.kernel_cache_dir())
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let info = fs::read_to_string(entry.path().join(BUILD_INFO)).ok()?;
            let vmlinux = entry.path().join(VMLINUX);
            let mtime = vmlinux.metadata().ok()?.modified().ok()?;
            info.lines().any(|l| l == want).then_some((mtime, vmlinux))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

fn build_info_key() -> String {
    format!(
        "recipe={KERNEL_RECIPE_VERSION} fragment={}",
        fragment_digest()
    )
}

const KERNEL_TOOLS: [Tool; 7] = [
    Tool::new("tar", "extract the kernel source", "tar"),
    Tool::new("xz", "extract the kernel source", "xz-utils"),
    Tool::new("make", "build the guest kernel", "make"),
    Tool::new("gcc", "build the guest kernel", "gcc"),
    Tool::new("flex", "build the guest kernel", "flex"),
    Tool::new("bison", "build the guest kernel", "bison"),
    Tool::new("bc", "build the guest kernel", "bc"),
];

/// Build the guest kernel for the current config hash, unless it is already cached, and
/// return the path of its `vmlinux`. Takes ~8 minutes on 2 cores and ~1.5 GB of temporary
/// disk under the cache (removed afterwards).
pub fn build_kernel(layout: &Layout, progress: &dyn Progress) -> Result<PathBuf> {
    let kernel_dir = layout.kernel_cache_dir();
    let _lock = DirLock::acquire(&kernel_dir, || {
        progress.set_message("Waiting for another kernel build to finish")
    })?;
    let dest = kernel_cache_path(layout);
    if dest.is_file() {
        progress.finish();
        return Ok(dest);
    }
    let source = kernel_source();
    if !source.tarball.is_file() {
        return Err(ImageError::KernelSourceMissing {
            path: source.tarball.clone(),
        });
    }
    for tool in &KERNEL_TOOLS {
        tool.find()?;
    }
    if !Path::new("/usr/include/gelf.h").exists() {
        // objtool (always on for x86_64) needs libelf; make fails late and obscurely without it.
        return Err(ImageError::ToolMissing {
            tool: "libelf headers (gelf.h)",
            purpose: "build the kernel's objtool",
            package: "libelf-dev",
        });
    }

    let started = Instant::now();
    let build = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&kernel_dir)
        .ctx("create build directory in", &kernel_dir)?;
    let src = build.path().join("linux");
    create_dir_all(&src)?;

    progress.set_message("Extracting kernel source");
    cmd::run(
        Command::new("tar")
            .arg("-xf")
            .arg(&source.tarball)
            .arg("-C")
            .arg(&src)
            .arg("--strip-components=1"),
        "Check that the kernel source tarball is intact (reinstall linux-source-6.1) and that the disk has ~1.5 GB free.",
    )?;

    progress.set_message("Configuring kernel");
    configure(&src)?;

    progress.set_message("Compiling kernel");
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut steps = Steps::start(
        progress,
        kernel_dir.join(STEPS_RECORD),
        ESTIMATED_BUILD_STEPS,
    );
    let mut make = Command::new("nice");
    make.args(["-n", "10", "make"])
        .arg(format!("-j{jobs}"))
        .arg(VMLINUX)
        .current_dir(&src);
    make_env(&mut make);
    cmd::run_streaming(
        &mut make,
        "The kernel build failed; the lines above are the end of its error output.",
        |line| {
            if is_kbuild_step(line) {
                steps.step();
            }
        },
    )?;
    let step_count = steps.count();
    steps.finish();

    let built = src.join(VMLINUX);
    if !built.is_file() {
        return Err(ImageError::KernelNotProduced { path: built });
    }
    let dest_dir = dest.parent().unwrap_or(&kernel_dir).to_path_buf();
    create_dir_all(&dest_dir)?;
    let config_copy = dest_dir.join("config");
    fs::copy(src.join(".config"), &config_copy).ctx("copy kernel .config to", &config_copy)?;
    let info = format!(
        "{}\nsource={}\nbuild_seconds={}\nbuild_steps={step_count}\n",
        build_info_key(),
        source.version,
        started.elapsed().as_secs(),
    );
    write_atomic(&dest_dir.join(BUILD_INFO), info.as_bytes())?;
    fs::set_permissions(&built, fs::Permissions::from_mode(0o644))
        .ctx("set permissions of", &built)?;
    // Same filesystem (the build tree lives under the cache), so this is an atomic rename:
    // readers see either no kernel or the complete one.
    fs::rename(&built, &dest).ctx("move the built kernel to", &dest)?;

    progress.set_message("Removing kernel build tree");
    let build_path = build.path().to_path_buf();
    build.close().ctx("remove build directory", build_path)?;
    progress.finish();
    tracing::info!(path = %dest.display(), secs = started.elapsed().as_secs(), "guest kernel built");
    Ok(dest)
}

fn make_env(cmd: &mut Command) {
    // A caller's make/cargo jobserver or cross-compilation settings must not leak in.
    for var in ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARCH", "CROSS_COMPILE"] {
        cmd.env_remove(var);
    }
    cmd.env("KBUILD_BUILD_USER", "aegis")
        .env("KBUILD_BUILD_HOST", "aegis");
}

fn configure(src: &Path) -> Result<()> {
    let hint = "The kernel configuration step failed; check the kernel source tree.";
    let mut tiny = Command::new("make");
    tiny.arg("tinyconfig").current_dir(src);
    make_env(&mut tiny);
    cmd::run(&mut tiny, hint)?;

    let options = config_options();
    let mut script = Command::new(src.join("scripts/config"));
    script.current_dir(src);
    for opt in &options {
        script
            .arg("--enable")
            .arg(opt.trim_start_matches("CONFIG_"));
    }
    cmd::run(&mut script, hint)?;

    let mut olddef = Command::new("make");
    olddef.arg("olddefconfig").current_dir(src);
    make_env(&mut olddef);
    cmd::run(&mut olddef, hint)?;

    let config_path = src.join(".config");
    let config = fs::read_to_string(&config_path).ctx("read", &config_path)?;
    let missing = options_not_set(&options, &config);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ImageError::KernelConfigRejected { missing })
    }
}

fn options_not_set(options: &[&str], config: &str) -> Vec<String> {
    let set: HashSet<&str> = config
        .lines()
        .filter_map(|l| l.strip_suffix("=y"))
        .collect();
    options
        .iter()
        .filter(|o| !set.contains(*o))
        .map(|o| o.to_string())
        .collect()
}

/// Kbuild's quiet output is one `  TAG     target` line per step ("  CC      kernel/fork.o").
fn is_kbuild_step(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("  ") else {
        return false;
    };
    let tag_len = rest
        .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(rest.len());
    tag_len >= 2 && rest[tag_len..].starts_with(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_lists_the_options_the_guest_needs() {
        let opts = config_options();
        for needed in [
            "CONFIG_PVH",
            "CONFIG_VIRTIO_MMIO",
            "CONFIG_VIRTIO_BLK",
            "CONFIG_VIRTIO_CONSOLE",
            "CONFIG_VIRTIO_VSOCKETS",
            "CONFIG_EXT4_FS",
            "CONFIG_OVERLAY_FS",
            "CONFIG_DEVTMPFS_MOUNT",
            "CONFIG_BLK_DEV_INITRD",
            "CONFIG_SERIAL_8250_CONSOLE",
            "CONFIG_ACPI",
        ] {
            assert!(opts.contains(&needed), "{needed} missing from aegis.config");
        }
        assert!(!opts.contains(&"CONFIG_MODULES"));
        // Every non-comment line is a plain `CONFIG_X=y` the checker understands.
        for line in KERNEL_CONFIG_FRAGMENT.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name = line.strip_suffix("=y").expect(line);
            assert!(name.starts_with("CONFIG_"), "{line}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{line}"
            );
        }
        let unique: HashSet<_> = opts.iter().collect();
        assert_eq!(unique.len(), opts.len(), "duplicate option in aegis.config");
    }

    #[test]
    fn hash_changes_with_every_input() {
        let base = config_hash("CONFIG_A=y\n", "6.1.1");
        assert_eq!(base.len(), 16);
        assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(base, config_hash("CONFIG_A=y\n", "6.1.1"));
        assert_ne!(base, config_hash("CONFIG_B=y\n", "6.1.1"));
        assert_ne!(base, config_hash("CONFIG_A=y\n", "6.1.2"));
        // Length-prefixed parts: moving bytes between parts changes the hash.
        assert_ne!(config_hash("ab", "c"), config_hash("a", "bc"));
    }

    #[test]
    fn options_dropped_by_olddefconfig_are_reported() {
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\nCONFIG_AB=y\n";
        assert_eq!(
            options_not_set(&["CONFIG_A", "CONFIG_B", "CONFIG_C"], config),
            ["CONFIG_B", "CONFIG_C"]
        );
        let err = ImageError::KernelConfigRejected {
            missing: vec!["CONFIG_B".into(), "CONFIG_C".into()],
        };
        assert!(err.to_string().contains("CONFIG_B, CONFIG_C"));
    }

    #[test]
    fn kbuild_step_lines_are_recognised() {
        for step in [
            "  CC      kernel/fork.o",
            "  LD      vmlinux.o",
            "  AR      fs/built-in.a",
            "  HOSTCC  scripts/basic/fixdep",
            "  OBJCOPY arch/x86/boot/setup.bin",
        ] {
            assert!(is_kbuild_step(step), "{step}");
        }
        for other in [
            "make[1]: Entering directory",
            "kernel/fork.c:12: warning: unused",
            "  | ^~~~",
            "   CC x",
            "",
        ] {
            assert!(!is_kbuild_step(other), "{other}");
        }
    }

    #[test]
    fn user_kernel_env_wins_and_missing_one_is_explained() {
        // Env is process-global: keep every AEGIS_KERNEL manipulation in this one test.
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let vmlinux = dir.path().join("my-vmlinux");
        fs::write(&vmlinux, b"ELF").unwrap();

        env::set_var(KERNEL_ENV, &vmlinux);
        assert_eq!(find_kernel(&layout), Some(vmlinux.clone()));

        env::set_var(KERNEL_ENV, dir.path().join("nope"));
        assert_eq!(find_kernel(&layout), None);
        let err = kernel_path(&layout).unwrap_err().to_string();
        assert!(
            err.contains("AEGIS_KERNEL") && err.contains("nope"),
            "{err}"
        );

        env::remove_var(KERNEL_ENV);
        let err = kernel_path(&layout).unwrap_err().to_string();
        assert!(err.contains("aegis setup"), "{err}");
        assert!(err.contains(&kernel_config_hash()), "{err}");

        let cached = kernel_cache_path(&layout);
        fs::create_dir_all(cached.parent().unwrap()).unwrap();
        fs::write(&cached, b"ELF").unwrap();
        assert_eq!(find_kernel(&layout), Some(cached));
    }
}
