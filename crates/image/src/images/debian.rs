//! The Debian image: `debootstrap --variant=minbase` of bookworm with the full python3 standard
//! library (servers like `python3 -m http.server` need more than python3-minimal), gRPC and
//! WebSocket libraries for serve-mode apps, and CA certificates; apt caches removed.

use std::env;
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::cmd::{self, Tool};
use crate::error::{ImageError, IoContext, Result};
use crate::progress::{Progress, Steps};

use super::is_root;

/// Bump when the steps below change.
const RECIPE_VERSION: &str = "aegis-debian-recipe-2";
const SUITE: &str = "bookworm";
const VARIANT: &str = "minbase";
const INCLUDE: &str = "python3,python3-grpcio,python3-websockets,ca-certificates";

/// Env var overriding the Debian mirror debootstrap downloads from.
pub const DEBIAN_MIRROR_ENV: &str = "AEGIS_DEBIAN_MIRROR";
/// The mirror used when neither the env var nor apt's own sources name one.
pub const DEFAULT_DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// `I:` lines of a minbase+python debootstrap run, for the first progress bar.
const ESTIMATED_STEPS: u64 = 300;
const STEPS_RECORD: &str = "build-steps";

const DEBOOTSTRAP: Tool = Tool::new("debootstrap", "build the debian base image", "debootstrap");

pub(super) fn recipe(part: &mut dyn FnMut(&[u8])) {
    // The mirror is not part of the recipe: every mirror serves the same packages.
    for p in [RECIPE_VERSION, SUITE, VARIANT, INCLUDE] {
        part(p.as_bytes());
    }
}

/// The mirror to bootstrap from: `$AEGIS_DEBIAN_MIRROR`, else the mirror apt on this host
/// uses for bookworm (so the build goes wherever apt is allowed to go), else
/// [`DEFAULT_DEBIAN_MIRROR`].
pub fn debian_mirror() -> String {
    if let Some(m) = env::var(DEBIAN_MIRROR_ENV).ok().filter(|m| !m.is_empty()) {
        return m;
    }
    apt_mirror(Path::new("/etc/apt")).unwrap_or_else(|| DEFAULT_DEBIAN_MIRROR.to_string())
}

/// The first http(s) URI that apt uses for the plain `bookworm` suite, from
/// `sources.list.d/*.sources` (deb822) or `sources.list` / `*.list` (one-line).
fn apt_mirror(etc_apt: &Path) -> Option<String> {
    let mut files = vec![etc_apt.join("sources.list")];
    if let Ok(dir) = fs::read_dir(etc_apt.join("sources.list.d")) {
        let mut more: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    files.iter().find_map(|f| {
        let text = fs::read_to_string(f).ok()?;
        if f.extension().is_some_and(|e| e == "sources") {
            deb822_mirror(&text)
        } else {
            one_line_mirror(&text)
        }
    })
}

fn deb822_mirror(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
        };
        let is_deb = field("Types")?.split_whitespace().any(|t| t == "deb");
        let has_suite = field("Suites")?.split_whitespace().any(|s| s == SUITE);
        let enabled = field("Enabled").is_none_or(|e| e != "no");
        if !(is_deb && has_suite && enabled) {
            return None;
        }
        field("URIs")?
            .split_whitespace()
            .find(|u| u.starts_with("http://") || u.starts_with("https://"))
            .map(|u| u.trim_end_matches('/').to_string())
    })
}

fn one_line_mirror(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace().filter(|w| !w.starts_with('['));
        if words.next()? != "deb" {
            return None;
        }
        // Skip a `[arch=...]` option block that spans several words.
        let mut uri = words.next()?;
        while !uri.contains("://") {
            uri = words.next()?;
        }
        let suite = words.next()?;
        (suite == SUITE && (uri.starts_with("http://") || uri.starts_with("https://")))
            .then(|| uri.trim_end_matches('/').to_string())
    })
}

pub(super) fn populate(tree: &Path, image_dir: &Path, progress: &dyn Progress) -> Result<()> {
    if !is_root() {
        return Err(ImageError::NeedsRoot {
            what: "the debian image (debootstrap)".into(),
        });
    }
    let debootstrap = DEBOOTSTRAP.find()?;
    let mirror = debian_mirror();
    progress.set_message(&format!("Bootstrapping Debian {SUITE} from {mirror}"));
    let mut steps = Steps::start(progress, image_dir.join(STEPS_RECORD), ESTIMATED_STEPS);
    let mut cmd = Command::new(debootstrap);
    cmd.arg(format!("--variant={VARIANT}"))
        .arg(format!("--include={INCLUDE}"))
        .arg(SUITE)
        .arg(tree)
        .arg(&mirror);
    // The build tree is deleted on failure; keep debootstrap's own log where the user can
    // read it.
    let kept_log = image_dir.join("debootstrap.log");
    let hint = format!(
        "Check that {mirror} is reachable from this host (or set {DEBIAN_MIRROR_ENV} to a \
         Debian mirror that is); debootstrap's full log is in {}.",
        kept_log.display()
    );
    let result = cmd::run_streaming(&mut cmd, &hint, |line| {
        if line.starts_with("I: ") {
            steps.step();
        }
    });
    if result.is_err() {
        let _ = fs::copy(tree.join("debootstrap/debootstrap.log"), &kept_log);
    }
    result?;
    steps.finish();
    progress.set_message("Cleaning the Debian tree");
    clean(tree)
}

/// Drop what only apt needs at image-build time: downloaded .debs, package lists, caches.
fn clean(tree: &Path) -> Result<()> {
    for dir in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "var/cache/apt",
    ] {
        let dir = tree.join(dir);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let keep = name == "partial" || name == "lock" || name == "archives";
            if keep {
                continue;
            }
            if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path).ctx("remove", &path)?;
            } else {
                fs::remove_file(&path).ctx("remove", &path)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_sources_give_the_bookworm_mirror() {
        let text = "Types: deb\n# comment\nURIs: http://mirror.example/debian/\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://mirror.example/debian-security\n\
                    Suites: bookworm-security\n";
        assert_eq!(
            deb822_mirror(text).as_deref(),
            Some("http://mirror.example/debian")
        );
        let security_only = "Types: deb\nURIs: http://s.example/x\nSuites: bookworm-security\n";
        assert_eq!(deb822_mirror(security_only), None);
        let disabled = "Types: deb\nURIs: http://d.example/x\nSuites: bookworm\nEnabled: no\n";
        assert_eq!(deb822_mirror(disabled), None);
    }

    #[test]
    fn one_line_sources_give_the_bookworm_mirror() {
        let text = "# deb http://old.example/debian bookworm main\n\
                    deb-src http://src.example/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] https://m.example/debian bookworm main\n";
        assert_eq!(
            one_line_mirror(text).as_deref(),
            Some("https://m.example/debian")
        );
        assert_eq!(
            one_line_mirror("deb http://x.example/ubuntu jammy main\n"),
            None
        );
    }

    #[test]
    fn mirror_lookup_reads_an_apt_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        fs::write(
            dir.path().join("sources.list.d/other.list"),
            "deb https://packages.example.com/apt cloud-sdk-bookworm main\n",
        )
        .unwrap();
        assert_eq!(apt_mirror(dir.path()), None);
        fs::write(
            dir.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n",
        )
        .unwrap();
        assert_eq!(
            apt_mirror(dir.path()).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn clean_keeps_apt_working_directories() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        for d in [
            "var/cache/apt/archives/partial",
            "var/lib/apt/lists/partial",
        ] {
            fs::create_dir_all(t.join(d)).unwrap();
        }
        fs::write(t.join("var/cache/apt/archives/x.deb"), b"").unwrap();
        fs::write(t.join("var/cache/apt/pkgcache.bin"), b"").unwrap();
        fs::write(t.join("var/lib/apt/lists/lock"), b"").unwrap();
        fs::write(t.join("var/lib/apt/lists/deb_Packages"), b"").unwrap();
        clean(t).unwrap();
        assert!(!t.join("var/cache/apt/archives/x.deb").exists());
        assert!(!t.join("var/cache/apt/pkgcache.bin").exists());
        assert!(!t.join("var/lib/apt/lists/deb_Packages").exists());
        assert!(t.join("var/lib/apt/lists/lock").exists());
        assert!(t.join("var/cache/apt/archives/partial").is_dir());
    }
}
