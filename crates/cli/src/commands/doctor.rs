//! `aegis doctor`: can this host run Aegis, and if not, what to do.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aegis_client::Error;
use aegis_image::{ImageError, ImageStatus, Layout};
use aegis_vmm::host::{self, Level};
use serde::Serialize;

use crate::context::Context;
use crate::daemon;
use crate::exit;
use crate::render;

/// Below this much free space in the Aegis home, `doctor` warns.
const MIN_FREE_BYTES: u64 = 5 << 30;

const AFTER_HELP: &str = "\
Checks, in order: virtualization (KVM and what kind), QEMU, Firecracker, the guest kernel, the
base images, the harness and daemon binaries, free disk space in the Aegis home, the daemon's
socket permissions, and the daemon itself. Each line reads `ok|warn|FAIL  <check>: <finding>`;
problems come with an explanation and a fix.

Exit status: 0 when nothing FAILs (warnings allowed), 1 otherwise.

Examples:
  aegis doctor
  aegis doctor --json | jq '.checks[] | select(.level != \"ok\")'";

/// Check that this host can run Aegis and say how to fix what is missing.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Print the checks as JSON: {"ok": bool, "checks": [{check, level, finding, explanation?, fix?}]}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Check {
    check: String,
    level: Verdict,
    finding: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    explanation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

impl Check {
    fn ok(check: &str, finding: impl Into<String>) -> Self {
        Check {
            check: check.into(),
            level: Verdict::Ok,
            finding: finding.into(),
            explanation: None,
            fix: None,
        }
    }

    fn problem(
        check: &str,
        level: Verdict,
        finding: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check {
            check: check.into(),
            level,
            finding: finding.into(),
            explanation: None,
            fix: Some(fix.into()),
        }
    }
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let layout = ctx.home();
    let mut checks = host_checks();
    checks.push(kernel_check(layout));
    checks.extend(image_checks(layout));
    let aegisd = daemon::find_executable("aegisd", "AEGIS_DAEMON");
    checks.push(harness_check(aegisd.as_ref().ok()));
    checks.push(match &aegisd {
        Ok(path) => Check::ok("aegisd", path.display().to_string()),
        Err(why) => Check::problem(
            "aegisd",
            Verdict::Fail,
            why.clone(),
            "build it with `scripts/build.sh --release`, or \
             set AEGIS_DAEMON to its path",
        ),
    });
    checks.push(disk_check(ctx.home().root()));
    checks.push(socket_check(ctx.client().socket()));
    checks.push(daemon_check(ctx).await);

    let failed = checks.iter().filter(|c| c.level == Verdict::Fail).count();
    let warned = checks.iter().filter(|c| c.level == Verdict::Warn).count();
    if args.json {
        let report = serde_json::json!({"ok": failed == 0, "checks": checks});
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text_report(&checks));
        println!();
        match (failed, warned) {
            (0, 0) => println!("no problems found"),
            (0, w) => println!("no blocking problems; {w} warning(s)"),
            (f, w) => println!("{f} problem(s) to fix before Aegis can run VMs; {w} warning(s)"),
        }
    }
    Ok(if failed == 0 { 0 } else { exit::CHECK_FAILED })
}

fn text_report(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<4}  {}: {}\n",
            c.level.label(),
            c.check,
            c.finding
        ));
        if c.level != Verdict::Ok {
            if let Some(explanation) = &c.explanation {
                for line in render::wrap(explanation, 88) {
                    out.push_str(&format!("      {line}\n"));
                }
            }
            if let Some(fix) = &c.fix {
                for (i, line) in render::wrap(fix, 83).into_iter().enumerate() {
                    let lead = if i == 0 { "fix: " } else { "     " };
                    out.push_str(&format!("      {lead}{line}\n"));
                }
            }
        }
    }
    out
}

/// KVM, QEMU, Firecracker, virtiofsd, vsock, TSC, CPUs, memory: explained by the VMM crate's
/// probe.
fn host_checks() -> Vec<Check> {
    let mut findings = host::probe().findings();
    // Keep the probe's topics in a stable, logical order rather than by severity.
    const ORDER: [&str; 8] = [
        "kvm",
        "qemu",
        "firecracker",
        "virtiofsd",
        "vsock",
        "tsc",
        "cpu",
        "memory",
    ];
    findings.sort_by_key(|f| {
        ORDER
            .iter()
            .position(|c| *c == f.check)
            .unwrap_or(ORDER.len())
    });
    findings
        .into_iter()
        .map(|f| Check {
            check: f.check.to_string(),
            level: match f.level {
                Level::Ok | Level::Info => Verdict::Ok,
                Level::Warning => Verdict::Warn,
                Level::Error => Verdict::Fail,
            },
            finding: f.summary,
            explanation: Some(f.explanation),
            fix: f.fix,
        })
        .collect()
}

fn kernel_check(layout: &Layout) -> Check {
    match aegis_image::kernel_path(layout) {
        Ok(path) if std::env::var_os(aegis_image::KERNEL_ENV).is_some_and(|v| !v.is_empty()) => {
            Check::ok(
                "kernel",
                format!("{} (from {})", path.display(), aegis_image::KERNEL_ENV),
            )
        }
        Ok(path) => Check::ok("kernel", path.display().to_string()),
        Err(ImageError::KernelNotBuilt { path }) => Check::problem(
            "kernel",
            Verdict::Fail,
            format!(
                "no guest kernel built for configuration {} (expected {})",
                aegis_image::kernel_config_hash(),
                path.display()
            ),
            "run `aegis setup --kernel-only` (several minutes), or set AEGIS_KERNEL to a vmlinux",
        ),
        Err(ImageError::UserKernelMissing { path }) => Check::problem(
            "kernel",
            Verdict::Fail,
            format!("AEGIS_KERNEL is {}, which does not exist", path.display()),
            "point AEGIS_KERNEL at an uncompressed ELF vmlinux, or unset it to use the kernel \
             `aegis setup` builds",
        ),
        Err(e) => Check::problem(
            "kernel",
            Verdict::Fail,
            e.to_string(),
            "run `aegis setup --kernel-only`",
        ),
    }
}

fn image_checks(layout: &Layout) -> Vec<Check> {
    aegis_image::list_images(layout)
        .into_iter()
        .map(|info| {
            let name = info.image.name();
            let check = format!("image {name}");
            let size = info.size_bytes.map(render::bytes).unwrap_or_default();
            match info.status {
                ImageStatus::Ready => Check::ok(&check, format!("built ({size})")),
                ImageStatus::Stale => Check::problem(
                    &check,
                    Verdict::Warn,
                    format!("built ({size}) from an older recipe; still usable"),
                    format!("rebuild it with `aegis setup --images-only --image {name}`"),
                ),
                ImageStatus::Missing => {
                    // Only the default image blocks `aegis run` without --image.
                    let (level, note) = if name == aegis_api::DEFAULT_IMAGE {
                        (Verdict::Fail, "; it is the default image of `aegis run`")
                    } else {
                        (Verdict::Warn, "")
                    };
                    Check::problem(
                        &check,
                        level,
                        format!("not built{note}"),
                        format!("build it with `aegis setup --images-only --image {name}`"),
                    )
                }
            }
        })
        .collect()
}

/// The harness the daemon will put in guests (the daemon's own lookup, see
/// `aegis_image::harness_path`), and whether it can be PID 1 (fully static).
fn harness_check(aegisd: Option<&PathBuf>) -> Check {
    let fix = "build it with `scripts/build.sh` (a static binary), or set AEGIS_HARNESS to one";
    let dir = aegisd
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .or_else(|| {
            std::env::current_exe()
                .ok()?
                .parent()
                .map(Path::to_path_buf)
        });
    let Some(dir) = dir else {
        return Check::problem(
            "harness",
            Verdict::Fail,
            "cannot tell where aegisd looks for it",
            fix,
        );
    };
    let path = aegis_image::harness_path(&dir);
    if !path.is_file() {
        return Check::problem(
            "harness",
            Verdict::Fail,
            format!("{} does not exist", path.display()),
            fix,
        );
    }
    if aegis_image::is_dynamically_linked(&path) {
        return Check::problem(
            "harness",
            Verdict::Fail,
            format!(
                "{} is dynamically linked and cannot be PID 1 of a guest",
                path.display()
            ),
            fix,
        );
    }
    Check::ok("harness", format!("{} (static)", path.display()))
}

fn disk_check(home: &Path) -> Check {
    // The home may not exist yet: measure the filesystem it will be created on.
    let existing = home
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match free_bytes(existing) {
        Ok(free) if free >= MIN_FREE_BYTES => Check::ok(
            "disk",
            format!("{} free under {}", render::bytes(free), existing.display()),
        ),
        Ok(free) => Check::problem(
            "disk",
            Verdict::Warn,
            format!(
                "only {} free under {} (less than {})",
                render::bytes(free),
                existing.display(),
                render::bytes(MIN_FREE_BYTES)
            ),
            "free some space or point AEGIS_HOME at a larger filesystem: the kernel build needs \
             ~1.5 GB, the debian image ~250 MB, and every VM a scratch disk",
        ),
        Err(e) => Check::problem(
            "disk",
            Verdict::Warn,
            format!(
                "cannot measure free space under {}: {e}",
                existing.display()
            ),
            "check that the Aegis home is readable",
        ),
    }
}

fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stats` points to writable memory
    // of the right type; statvfs(3) fills it in full when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let stats = unsafe { stats.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok(stats.f_bavail as u64 * stats.f_frsize as u64)
}

fn socket_check(socket: &Path) -> Check {
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::ok(
                "socket",
                format!("no socket at {} (daemon not running)", socket.display()),
            )
        }
        Err(e) => {
            return Check::problem(
                "socket",
                Verdict::Fail,
                format!("cannot inspect {}: {e}", socket.display()),
                "run aegis as the user that owns the Aegis home",
            )
        }
    };
    let restart = "restart the daemon (`aegis down; aegis up`) so it recreates the socket";
    if !meta.file_type().is_socket() {
        return Check::problem(
            "socket",
            Verdict::Fail,
            format!("{} exists but is not a socket", socket.display()),
            format!("remove it, then {restart}"),
        );
    }
    let mode = meta.permissions().mode() & 0o777;
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Check::problem(
            "socket",
            Verdict::Fail,
            format!(
                "{} belongs to uid {}, not to you (uid {me})",
                socket.display(),
                meta.uid()
            ),
            "run aegis as the user that started aegisd, or use a home of your own (--home or \
             AEGIS_HOME)",
        );
    }
    if mode != 0o600 {
        return Check::problem(
            "socket",
            Verdict::Fail,
            format!(
                "{} has mode {mode:04o}: other users could control the daemon",
                socket.display()
            ),
            restart,
        );
    }
    Check::ok("socket", format!("{} (mode 0600, yours)", socket.display()))
}

async fn daemon_check(ctx: &Context) -> Check {
    match ctx.client().status().await {
        Ok(s) => {
            let c = &s.capabilities;
            let yes = |b: bool| if b { "yes" } else { "no" };
            Check::ok(
                "daemon",
                format!(
                    "running (pid {}, version {}), backend {} on {}; pause {}, memory snapshot \
                     {}, vsock {}, virtio-fs {}",
                    s.pid,
                    s.version,
                    s.backend,
                    c.accelerator,
                    yes(c.pause),
                    yes(c.memory_snapshot),
                    yes(c.vsock),
                    yes(c.virtio_fs)
                ),
            )
        }
        Err(Error::DaemonNotRunning { .. }) => Check::problem(
            "daemon",
            Verdict::Warn,
            "not running",
            "start it with `aegis up`",
        ),
        Err(e) => Check::problem(
            "daemon",
            Verdict::Fail,
            format!("not reachable: {e}"),
            format!(
                "see {} and restart it (`aegis down; aegis up`)",
                ctx.home().log_file().display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_carry_their_fix_and_ok_lines_stay_short() {
        let mut warn = Check::problem("kvm", Verdict::Warn, "no /dev/kvm", "load the module");
        warn.explanation = Some("Without KVM guests run under TCG.".into());
        let mut ok = Check::ok("qemu", "QEMU 7.2.0");
        ok.explanation = Some("not shown".into());
        let text = text_report(&[ok, warn]);
        assert_eq!(
            text,
            "ok    qemu: QEMU 7.2.0\n\
             warn  kvm: no /dev/kvm\n      Without KVM guests run under TCG.\n      fix: load the module\n"
        );
    }

    #[test]
    fn the_socket_must_be_private_and_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aegisd.sock");
        assert_eq!(socket_check(&path).level, Verdict::Ok);
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let c = socket_check(&path);
        assert_eq!(c.level, Verdict::Fail);
        assert!(c.finding.contains("0666"), "{c:?}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(socket_check(&path).level, Verdict::Ok);
        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        assert_eq!(socket_check(&file).level, Verdict::Fail);
    }

    #[test]
    fn free_space_is_measured_on_the_nearest_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let c = disk_check(&dir.path().join("not/yet"));
        assert_ne!(c.level, Verdict::Fail);
        assert!(
            c.finding.contains(&dir.path().display().to_string()),
            "{c:?}"
        );
    }

    #[test]
    fn a_missing_kernel_fails_with_the_way_to_build_it() {
        let dir = tempfile::tempdir().unwrap();
        if std::env::var_os(aegis_image::KERNEL_ENV).is_some() {
            return; // The developer's own kernel is configured; nothing to learn here.
        }
        let c = kernel_check(&Layout::new(dir.path()));
        assert_eq!(c.level, Verdict::Fail);
        assert!(c.fix.unwrap().contains("aegis setup"));
        let images = image_checks(&Layout::new(dir.path()));
        assert!(images
            .iter()
            .any(|c| c.check == "image debian" && c.level == Verdict::Fail));
        assert!(images
            .iter()
            .any(|c| c.check == "image busybox" && c.level == Verdict::Warn));
    }
}
