//! The host report explained for a human (`aegis doctor`): one [`Finding`] per topic, with
//! why it matters and what to do about it.

use serde::Serialize;

use super::{
    HostReport, KvmStatus, ToolStatus, VirtExtension, FIRECRACKER_ENV, QEMU_ENV, QEMU_MIN_VERSION,
    QEMU_PROGRAM,
};

/// Severity of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Info,
    Warning,
    /// Aegis cannot run VMs until this is fixed.
    Error,
}

/// One fact about the host, explained for a human (`aegis doctor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Short name of what was checked: `kvm`, `qemu`, `firecracker`, `virtiofsd`, `vsock`,
    /// `tsc`, `cpu`, `memory`.
    pub check: &'static str,
    pub level: Level,
    /// One line.
    pub summary: String,
    /// Why it matters.
    pub explanation: String,
    /// What to do about it, when anything can be done.
    pub fix: Option<String>,
}

impl HostReport {
    /// The report as explained findings, most important first.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out = vec![
            self.kvm_finding(),
            self.qemu_finding(),
            self.firecracker_finding(),
            self.virtiofsd_finding(),
            self.vsock_finding(),
            self.tsc_finding(),
            Finding {
                check: "cpu",
                level: Level::Ok,
                summary: format!("{} CPU core(s) available", self.cores),
                explanation: "A VM may have at most this many vCPUs.".into(),
                fix: None,
            },
            Finding {
                check: "memory",
                level: if self.memory_mib >= 1024 {
                    Level::Ok
                } else {
                    Level::Warning
                },
                summary: format!("{} MiB of memory", self.memory_mib),
                explanation: "Every running or paused VM holds its guest RAM on the host.".into(),
                fix: None,
            },
        ];
        out.sort_by_key(|f| std::cmp::Reverse(f.level));
        out
    }

    fn kvm_finding(&self) -> Finding {
        let tcg = "Aegis falls back to QEMU with TCG (software emulation): guests boot and run \
                   correctly, only slower (about 2 s to boot instead of a fraction of one).";
        match &self.kvm {
            KvmStatus::Hardware { extension } => Finding {
                check: "kvm",
                level: Level::Ok,
                summary: format!(
                    "hardware virtualization ({}) through /dev/kvm",
                    match extension {
                        VirtExtension::Vmx => "Intel VT-x",
                        VirtExtension::Svm => "AMD-V",
                    }
                ),
                explanation: "Firecracker, libkrun and QEMU with -accel kvm can boot guests \
                              at native speed."
                    .into(),
                fix: None,
            },
            KvmStatus::Pvm => Finding {
                check: "kvm",
                level: Level::Warning,
                summary: "/dev/kvm is PVM (kvm_pvm module): software nested virtualization, \
                          not hardware virtualization"
                    .into(),
                explanation: format!(
                    "The kvm_pvm module provides /dev/kvm on hosts without VT-x/AMD-V (typically \
                     a cloud VM). Only PVM-patched guest kernels can run on it: a stock guest \
                     kernel dies at once with \"KVM internal error. Suberror: 1 ... emulation \
                     failure\" (dmesg: \"kvm-pvm: INTERNAL_ERROR in batch emul\"). So no \
                     Aegis guest boots under KVM here: not with Firecracker, libkrun or QEMU \
                     -accel kvm. {tcg}"
                ),
                fix: Some(
                    "Nothing is needed to keep working with QEMU/TCG. For native speed run Aegis \
                     on bare metal or on a cloud VM with nested virtualization enabled (VT-x or \
                     AMD-V visible as vmx/svm in /proc/cpuinfo)."
                        .into(),
                ),
            },
            KvmStatus::Absent => Finding {
                check: "kvm",
                level: Level::Warning,
                summary: "no /dev/kvm".into(),
                explanation: format!("Without KVM no hardware-accelerated VMM can run. {tcg}"),
                fix: Some(
                    "Enable VT-x/AMD-V in the firmware (or nested virtualization for a cloud \
                     VM), then load the module: `modprobe kvm_intel` or `modprobe kvm_amd`."
                        .into(),
                ),
            },
            KvmStatus::NotOpenable { error } => Finding {
                check: "kvm",
                level: Level::Warning,
                summary: format!("/dev/kvm exists but cannot be opened: {error}"),
                explanation: format!("This user has no access to KVM. {tcg}"),
                fix: Some(
                    "Add the user to the group owning /dev/kvm (`sudo usermod -aG kvm $USER`, \
                     then log in again) or run aegisd as root."
                        .into(),
                ),
            },
            KvmStatus::Unrecognised => Finding {
                check: "kvm",
                level: Level::Warning,
                summary: "/dev/kvm opens, but the CPU advertises neither vmx nor svm".into(),
                explanation: format!(
                    "This is not hardware virtualization Aegis recognises, so it is not used \
                     automatically. {tcg}"
                ),
                fix: Some(
                    "If you know guests boot under this KVM, choose the backend explicitly \
                     (`--backend qemu` with the kvm accelerator)."
                        .into(),
                ),
            },
        }
    }

    fn qemu_finding(&self) -> Finding {
        match &self.qemu {
            ToolStatus::Found { path, version } => Finding {
                check: "qemu",
                level: Level::Ok,
                summary: format!(
                    "QEMU {} at {}",
                    version.as_deref().unwrap_or("(unknown version)"),
                    path.display()
                ),
                explanation: "The qemu backend (microvm machine) can boot guests.".into(),
                fix: None,
            },
            ToolStatus::NotFound { searched } => Finding {
                check: "qemu",
                level: if self.kvm.is_usable() {
                    Level::Warning
                } else {
                    Level::Error
                },
                summary: format!("QEMU not found ({searched})"),
                explanation: "QEMU is the backend that boots guests on every host, and the only \
                              one without hardware virtualization."
                    .into(),
                fix: Some(format!(
                    "Install it (`apt-get install qemu-system-x86`) or set {QEMU_ENV} to the \
                     path of {QEMU_PROGRAM}."
                )),
            },
            ToolStatus::Unusable { path, error } => Finding {
                check: "qemu",
                level: Level::Error,
                summary: format!("QEMU at {} is unusable: {error}", path.display()),
                explanation: "QEMU is the backend that boots guests on every host.".into(),
                fix: Some(format!(
                    "Install QEMU {}.{} or newer (`apt-get install qemu-system-x86`) or point \
                     {QEMU_ENV} at a working {QEMU_PROGRAM}.",
                    QEMU_MIN_VERSION.0, QEMU_MIN_VERSION.1
                )),
            },
        }
    }

    fn firecracker_finding(&self) -> Finding {
        let needs_kvm = if self.kvm.is_usable() {
            ""
        } else {
            " It needs hardware KVM, which this host lacks, so it would not be used anyway."
        };
        match &self.firecracker {
            ToolStatus::Found { path, version } => Finding {
                check: "firecracker",
                level: if self.kvm.is_usable() {
                    Level::Ok
                } else {
                    Level::Info
                },
                summary: format!(
                    "Firecracker {} at {}",
                    version.as_deref().unwrap_or("(unknown version)"),
                    path.display()
                ),
                explanation: format!("The fastest backend where hardware KVM exists.{needs_kvm}"),
                fix: None,
            },
            ToolStatus::NotFound { searched } => Finding {
                check: "firecracker",
                level: Level::Info,
                summary: format!("Firecracker not found ({searched})"),
                explanation: format!(
                    "Optional: with hardware KVM it boots and restores guests fastest.{needs_kvm}"
                ),
                fix: Some(format!(
                    "Build it (`cargo build --release -p firecracker` in its repository) and put \
                     it on PATH or set {FIRECRACKER_ENV}."
                )),
            },
            ToolStatus::Unusable { path, error } => Finding {
                check: "firecracker",
                level: Level::Warning,
                summary: format!("Firecracker at {} is unusable: {error}", path.display()),
                explanation: format!("It will not be used.{needs_kvm}"),
                fix: Some(format!("Point {FIRECRACKER_ENV} at a working binary.")),
            },
        }
    }

    fn virtiofsd_finding(&self) -> Finding {
        let explanation = "virtiofsd serves workspaces (`aegis run --workspace`) to QEMU guests; \
                           without it everything else works.";
        let fix = "Install qemu-system-common (Debian/Ubuntu; scripts/deps.sh does).";
        match &self.virtiofsd {
            ToolStatus::Found { path, .. } => Finding {
                check: "virtiofsd",
                level: Level::Ok,
                summary: path.display().to_string(),
                explanation: explanation.into(),
                fix: None,
            },
            ToolStatus::NotFound { searched } => Finding {
                check: "virtiofsd",
                level: Level::Warning,
                summary: format!(
                    "not found ({searched}): workspaces (`aegis run --workspace`) are unavailable"
                ),
                explanation: explanation.into(),
                fix: Some(fix.into()),
            },
            ToolStatus::Unusable { path, error } => Finding {
                check: "virtiofsd",
                level: Level::Warning,
                summary: format!("virtiofsd at {} is unusable: {error}", path.display()),
                explanation: explanation.into(),
                fix: Some(fix.into()),
            },
        }
    }

    fn vsock_finding(&self) -> Finding {
        Finding {
            check: "vsock",
            level: Level::Info,
            summary: if self.vhost_vsock {
                "/dev/vhost-vsock exists".into()
            } else {
                "no /dev/vhost-vsock".into()
            },
            explanation: "Under QEMU the host<->guest channel is virtio-serial on every host; \
                          vsock is used by Firecracker and libkrun, which implement it themselves."
                .into(),
            fix: None,
        }
    }

    fn tsc_finding(&self) -> Finding {
        match self.tsc_khz {
            Some(khz) => Finding {
                check: "tsc",
                level: Level::Ok,
                summary: format!("host TSC {khz} kHz"),
                explanation: "Passed to guests under TCG as tsc_early_khz= so they can \
                              calibrate their clock."
                    .into(),
                fix: None,
            },
            None => Finding {
                check: "tsc",
                level: if self.kvm.is_usable() {
                    Level::Info
                } else {
                    Level::Warning
                },
                summary: "host TSC frequency unknown (no \"cpu MHz\" in /proc/cpuinfo)".into(),
                explanation: "Under TCG a guest that cannot calibrate its clock may hang early in \
                              boot."
                    .into(),
                fix: Some("Pass tsc_early_khz=<kHz> in the VM's kernel arguments yourself.".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::facts;
    use super::*;

    #[test]
    fn pvm_wins_over_an_openable_device() {
        let r = HostReport::from_facts(facts());
        assert_eq!(r.kvm, KvmStatus::Pvm);
        assert!(!r.kvm.is_usable());
        assert_eq!(r.tsc_khz, Some(2_445_432));
        let f = r.findings();
        let kvm = f.iter().find(|f| f.check == "kvm").unwrap();
        assert!(kvm.explanation.contains("emulation failure"), "{kvm:?}");
        assert!(kvm.fix.is_some());
    }

    #[test]
    fn findings_put_errors_first() {
        let mut f = facts();
        f.qemu = ToolStatus::NotFound {
            searched: "PATH".into(),
        };
        let findings = HostReport::from_facts(f).findings();
        assert_eq!(findings[0].check, "qemu");
        assert_eq!(findings[0].level, Level::Error);
        assert!(findings[0].fix.as_deref().unwrap().contains("apt-get"));
    }

    #[test]
    fn a_missing_virtiofsd_is_a_warning_that_names_the_package() {
        let mut f = facts();
        f.virtiofsd = ToolStatus::NotFound {
            searched: "looked for /usr/lib/qemu/virtiofsd".into(),
        };
        let findings = HostReport::from_facts(f.clone()).findings();
        let v = findings.iter().find(|f| f.check == "virtiofsd").unwrap();
        assert_eq!(v.level, Level::Warning);
        assert!(v.summary.contains("/usr/lib/qemu/virtiofsd"), "{v:?}");
        assert!(v.fix.as_deref().unwrap().contains("qemu-system-common"));

        f.virtiofsd = ToolStatus::Found {
            path: "/usr/libexec/virtiofsd".into(),
            version: None,
        };
        let findings = HostReport::from_facts(f).findings();
        let v = findings.iter().find(|f| f.check == "virtiofsd").unwrap();
        assert_eq!(
            (v.level, v.summary.as_str()),
            (Level::Ok, "/usr/libexec/virtiofsd")
        );
    }
}
