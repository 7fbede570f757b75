//! The probing factory: which backend runs VMs on this host.
//!
//! `auto` takes the fastest backend that can really boot a guest here, in this order:
//!
//! 1. Firecracker: hardware KVM and the binary present.
//! 2. QEMU: with KVM where hardware KVM is usable, else with TCG (works everywhere).
//!
//! libkrun is never chosen automatically on Linux (QEMU with KVM offers memory snapshots, it
//! does not); it is available by explicit choice. An explicit choice that cannot work here is
//! an error that says why, never a silent fallback.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;

use crate::backend::{Backend, VmmError};
use crate::capabilities::BackendKind;
use crate::host::{HostReport, KvmStatus, ToolStatus};
use crate::qemu::{Accel, QemuBackend, QemuConfig};

/// Which backend the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    #[default]
    Auto,
    Qemu,
    Firecracker,
    Libkrun,
    Fake,
}

impl BackendChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Qemu => "qemu",
            BackendChoice::Firecracker => "firecracker",
            BackendChoice::Libkrun => "libkrun",
            BackendChoice::Fake => "fake",
        }
    }
}

impl std::fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend '{0}': expected auto, qemu, firecracker, libkrun or fake")]
pub struct UnknownBackend(pub String);

impl FromStr for BackendChoice {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "qemu" => Ok(BackendChoice::Qemu),
            "firecracker" => Ok(BackendChoice::Firecracker),
            "libkrun" => Ok(BackendChoice::Libkrun),
            "fake" => Ok(BackendChoice::Fake),
            _ => Err(UnknownBackend(s.to_string())),
        }
    }
}

/// Overrides of what probing found. `Default` means "use the probe".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendOptions {
    /// QEMU binary to use instead of the probed one.
    pub qemu_binary: Option<PathBuf>,
    /// Accelerator for QEMU; default: KVM where hardware KVM is usable, else TCG.
    pub qemu_accel: Option<Accel>,
    /// Firecracker binary to use instead of the probed one.
    pub firecracker_binary: Option<PathBuf>,
    /// Most bytes kept of one VM's console log; default
    /// [`crate::console_log::DEFAULT_CONSOLE_LOG_BYTES`].
    pub console_log_bytes: Option<u64>,
}

/// Whether one backend can run here, and why (for `aegis doctor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assessment {
    pub backend: BackendKind,
    pub usable: bool,
    /// How it would run ("QEMU 7.2.22 with tcg"), or why it cannot.
    pub detail: String,
}

/// Backends `auto` considers, fastest first.
const AUTO_ORDER: [BackendKind; 2] = [BackendKind::Firecracker, BackendKind::Qemu];

/// Returns the backend to use.
pub fn select(
    choice: BackendChoice,
    report: &HostReport,
    opts: &BackendOptions,
) -> Result<Arc<dyn Backend>, VmmError> {
    let unavailable = |kind: BackendKind, why: String| VmmError::Unavailable {
        what: format!("the {kind} backend"),
        why,
    };
    let kind = match choice {
        BackendChoice::Auto => {
            let mut reasons = Vec::new();
            for kind in AUTO_ORDER {
                match build(kind, report, opts) {
                    Ok(b) => {
                        tracing::info!(backend = %kind, "auto-selected VMM backend");
                        return Ok(b);
                    }
                    Err(why) => {
                        tracing::debug!(backend = %kind, %why, "backend not usable");
                        reasons.push(format!("{kind}: {why}"));
                    }
                }
            }
            return Err(VmmError::Unavailable {
                what: "a VMM backend".into(),
                why: reasons.join("; "),
            });
        }
        BackendChoice::Qemu => BackendKind::Qemu,
        BackendChoice::Firecracker => BackendKind::Firecracker,
        BackendChoice::Libkrun => BackendKind::Libkrun,
        BackendChoice::Fake => BackendKind::Fake,
    };
    build(kind, report, opts).map_err(|why| match kind {
        BackendKind::Fake => VmmError::NotInBuild { backend: kind, why },
        _ => unavailable(kind, why),
    })
}

/// Every real backend, in `auto` order, with whether it can run here and why.
pub fn assess(report: &HostReport, opts: &BackendOptions) -> Vec<Assessment> {
    [
        BackendKind::Firecracker,
        BackendKind::Qemu,
        BackendKind::Libkrun,
    ]
    .into_iter()
    .map(|kind| match build(kind, report, opts) {
        Ok(b) => Assessment {
            backend: kind,
            usable: true,
            detail: describe(b.as_ref()),
        },
        Err(why) => Assessment {
            backend: kind,
            usable: false,
            detail: why,
        },
    })
    .collect()
}

fn describe(b: &dyn Backend) -> String {
    format!("usable, accelerator {}", b.capabilities().accelerator)
}

/// Builds one backend, or says why it cannot run here.
fn build(
    kind: BackendKind,
    report: &HostReport,
    opts: &BackendOptions,
) -> Result<Arc<dyn Backend>, String> {
    match kind {
        BackendKind::Qemu => qemu(report, opts),
        BackendKind::Firecracker => firecracker(report, opts),
        BackendKind::Libkrun => libkrun(report),
        BackendKind::Fake => fake(),
    }
}

#[cfg(any(test, feature = "fake"))]
fn fake() -> Result<Arc<dyn Backend>, String> {
    Ok(Arc::new(crate::fake::FakeBackend::new()))
}

/// Release builds leave the fake backend out: it runs guest commands on the host.
#[cfg(not(any(test, feature = "fake")))]
fn fake() -> Result<Arc<dyn Backend>, String> {
    Err(
        "it needs the `fake` cargo feature, which release builds leave out because it runs \
         guest commands as host processes with no isolation; use a test build of aegisd \
         (`scripts/build.sh` without --release, or `cargo build -p aegisd --features fake`)"
            .into(),
    )
}

/// Why stock guest kernels cannot run under KVM here, or `None` if they can.
fn kvm_unusable(report: &HostReport) -> Option<String> {
    match &report.kvm {
        KvmStatus::Hardware { .. } => None,
        KvmStatus::Absent => Some("there is no /dev/kvm".into()),
        KvmStatus::Pvm => Some(
            "/dev/kvm is PVM (software nested virtualization): stock guest kernels die with \
             \"KVM internal error ... emulation failure\" (see `aegis doctor`)"
                .into(),
        ),
        KvmStatus::NotOpenable { error } => Some(format!("/dev/kvm cannot be opened: {error}")),
        KvmStatus::Unrecognised => {
            Some("/dev/kvm is not backed by VT-x/AMD-V (no vmx/svm CPU flag)".into())
        }
    }
}

fn qemu(report: &HostReport, opts: &BackendOptions) -> Result<Arc<dyn Backend>, String> {
    let (binary, version) = match &opts.qemu_binary {
        Some(path) => match crate::host::qemu_status(path) {
            ToolStatus::Found { path, version } => (path, version),
            ToolStatus::Unusable { error, .. } => {
                return Err(format!("QEMU at {} is unusable: {error}", path.display()))
            }
            ToolStatus::NotFound { searched } => return Err(format!("QEMU not found: {searched}")),
        },
        None => match &report.qemu {
            ToolStatus::Found { path, version } => (path.clone(), version.clone()),
            ToolStatus::NotFound { searched } => {
                return Err(format!(
                    "QEMU not found ({searched}); install qemu-system-x86"
                ))
            }
            ToolStatus::Unusable { path, error } => {
                return Err(format!("QEMU at {} is unusable: {error}", path.display()))
            }
        },
    };
    let version = version.ok_or_else(|| "QEMU did not report its version".to_string())?;
    let accel = match opts.qemu_accel {
        None if report.kvm.is_usable() => Accel::Kvm,
        None => Accel::Tcg,
        Some(Accel::Tcg) => Accel::Tcg,
        Some(Accel::Kvm) => match &report.kvm {
            // Trust the user where Aegis merely could not confirm hardware virtualization.
            KvmStatus::Hardware { .. } | KvmStatus::Unrecognised => Accel::Kvm,
            _ => {
                let why = kvm_unusable(report).unwrap_or_default();
                return Err(format!(
                    "the kvm accelerator cannot boot guests here: {why}"
                ));
            }
        },
    };
    Ok(Arc::new(QemuBackend::new(QemuConfig {
        binary,
        version,
        accel,
        tsc_khz: report.tsc_khz,
        max_vcpus: report.cores,
        virtiofsd: report.virtiofsd.path().map(std::path::Path::to_path_buf),
        console_log_bytes: opts
            .console_log_bytes
            .unwrap_or(crate::console_log::DEFAULT_CONSOLE_LOG_BYTES),
    })))
}

fn firecracker(report: &HostReport, opts: &BackendOptions) -> Result<Arc<dyn Backend>, String> {
    if let Some(why) = kvm_unusable(report) {
        return Err(format!("Firecracker needs hardware KVM, but {why}"));
    }
    let binary = match (&opts.firecracker_binary, &report.firecracker) {
        (Some(path), _) => path.clone(),
        (None, ToolStatus::Found { path, .. }) => path.clone(),
        (None, ToolStatus::NotFound { searched }) => {
            return Err(format!("Firecracker not found ({searched})"))
        }
        (None, ToolStatus::Unusable { path, error }) => {
            return Err(format!(
                "Firecracker at {} is unusable: {error}",
                path.display()
            ))
        }
    };
    // The Firecracker backend (`firecracker.rs`) plugs in here:
    // `Ok(Arc::new(FirecrackerBackend::new(FirecrackerConfig { binary, .. })))`.
    Err(format!(
        "the Firecracker backend is not built into this version of Aegis yet (found {})",
        binary.display()
    ))
}

fn libkrun(report: &HostReport) -> Result<Arc<dyn Backend>, String> {
    if let Some(why) = kvm_unusable(report) {
        return Err(format!("libkrun needs hardware KVM, but {why}"));
    }
    // The libkrun backend (`libkrun.rs`, one worker process per VM) plugs in here.
    Err("the libkrun backend is not built into this version of Aegis yet".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::VirtExtension;

    fn report(kvm: KvmStatus, firecracker: bool) -> HostReport {
        HostReport {
            kvm,
            vhost_vsock: false,
            qemu: ToolStatus::Found {
                path: "/usr/bin/qemu-system-x86_64".into(),
                version: Some("7.2.22".into()),
            },
            firecracker: if firecracker {
                ToolStatus::Found {
                    path: "/usr/local/bin/firecracker".into(),
                    version: Some("1.16.0".into()),
                }
            } else {
                ToolStatus::NotFound {
                    searched: "PATH".into(),
                }
            },
            virtiofsd: ToolStatus::NotFound {
                searched: "nowhere".into(),
            },
            tsc_khz: Some(2_445_432),
            cores: 2,
            memory_mib: 24_000,
        }
    }

    fn hw() -> KvmStatus {
        KvmStatus::Hardware {
            extension: VirtExtension::Vmx,
        }
    }

    fn accel(b: &Arc<dyn Backend>) -> String {
        b.capabilities().accelerator
    }

    #[test]
    fn choices_parse() {
        assert_eq!("auto".parse(), Ok(BackendChoice::Auto));
        assert_eq!("QEMU".parse(), Ok(BackendChoice::Qemu));
        assert_eq!("firecracker".parse(), Ok(BackendChoice::Firecracker));
        assert_eq!("libkrun".parse(), Ok(BackendChoice::Libkrun));
        assert_eq!("fake".parse(), Ok(BackendChoice::Fake));
        let e = "xen".parse::<BackendChoice>().unwrap_err();
        assert!(e.to_string().contains("expected auto, qemu"));
        assert_eq!(BackendChoice::default(), BackendChoice::Auto);
        assert_eq!(BackendChoice::Libkrun.to_string(), "libkrun");
    }

    #[test]
    fn auto_on_pvm_is_qemu_tcg() {
        let r = report(KvmStatus::Pvm, true);
        let b = select(BackendChoice::Auto, &r, &Default::default()).unwrap();
        assert_eq!(b.kind(), BackendKind::Qemu);
        assert_eq!(accel(&b), "tcg");
    }

    #[test]
    fn auto_with_hardware_kvm_is_qemu_kvm_until_firecracker_exists() {
        let r = report(hw(), true);
        let b = select(BackendChoice::Auto, &r, &Default::default()).unwrap();
        // Firecracker would win here once its backend is built.
        assert_eq!(b.kind(), BackendKind::Qemu);
        assert_eq!(accel(&b), "kvm");
    }

    #[test]
    fn auto_without_qemu_or_kvm_fails_with_every_reason() {
        let mut r = report(KvmStatus::Absent, false);
        r.qemu = ToolStatus::NotFound {
            searched: "PATH".into(),
        };
        let e = select(BackendChoice::Auto, &r, &Default::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("firecracker: Firecracker needs hardware KVM"),
            "{e}"
        );
        assert!(e.contains("qemu: QEMU not found"), "{e}");
    }

    #[test]
    fn explicit_choices_that_cannot_work_say_why() {
        let r = report(KvmStatus::Pvm, true);
        let e = select(BackendChoice::Firecracker, &r, &Default::default())
            .err()
            .unwrap();
        assert!(
            matches!(&e, VmmError::Unavailable { why, .. } if why.contains("PVM")),
            "{e}"
        );
        let e = select(BackendChoice::Libkrun, &r, &Default::default())
            .err()
            .unwrap();
        assert!(matches!(&e, VmmError::Unavailable { .. }), "{e}");
        let opts = BackendOptions {
            qemu_accel: Some(Accel::Kvm),
            ..Default::default()
        };
        let e = select(BackendChoice::Qemu, &r, &opts).err().unwrap();
        assert!(e.to_string().contains("emulation failure"), "{e}");

        let r = report(hw(), true);
        let e = select(BackendChoice::Firecracker, &r, &Default::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("not built"), "{e}");
    }

    #[test]
    fn explicit_tcg_on_a_kvm_host() {
        let r = report(hw(), false);
        let opts = BackendOptions {
            qemu_accel: Some(Accel::Tcg),
            ..Default::default()
        };
        let b = select(BackendChoice::Qemu, &r, &opts).unwrap();
        assert_eq!(accel(&b), "tcg");
    }

    #[test]
    fn fake_is_available_in_test_builds() {
        let mut r = report(KvmStatus::Absent, false);
        r.qemu = ToolStatus::NotFound {
            searched: "PATH".into(),
        };
        let b = select(BackendChoice::Fake, &r, &Default::default()).unwrap();
        assert_eq!(b.kind(), BackendKind::Fake);
    }

    #[test]
    fn assessment_lists_every_real_backend() {
        let a = assess(&report(KvmStatus::Pvm, false), &Default::default());
        let kinds: Vec<_> = a.iter().map(|a| a.backend).collect();
        assert_eq!(
            kinds,
            [
                BackendKind::Firecracker,
                BackendKind::Qemu,
                BackendKind::Libkrun
            ]
        );
        assert!(!a[0].usable && a[1].usable && !a[2].usable);
        assert!(a[1].detail.contains("tcg"));
    }
}
