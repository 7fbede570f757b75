//! Host probing: what this machine can really run, and why.
//!
//! [`probe`] gathers facts once (a few file reads and one `qemu --version`); [`HostReport`]
//! holds them as typed data for [`crate::select`], and [`HostReport::findings`] turns them into
//! explanations and fix hints for `aegis doctor`.
//!
//! The subtle case is `/dev/kvm` provided by `kvm_pvm` (software nested virtualization): the
//! device exists and opens, yet no stock guest kernel boots on it. It must be detected, not
//! discovered by a guest dying with "KVM internal error ... emulation failure".

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

pub use findings::{Finding, Level};

mod findings;

/// Environment variable naming the QEMU binary (else `qemu-system-x86_64` on `PATH`).
pub const QEMU_ENV: &str = "AEGIS_QEMU";
/// Environment variable naming the Firecracker binary (else `firecracker` on `PATH`).
pub const FIRECRACKER_ENV: &str = "AEGIS_FIRECRACKER";
/// The QEMU binary looked up on `PATH`.
pub const QEMU_PROGRAM: &str = "qemu-system-x86_64";
/// The Firecracker binary looked up on `PATH`.
pub const FIRECRACKER_PROGRAM: &str = "firecracker";
/// Oldest QEMU whose microvm machine has every option Aegis passes (tested on 7.2).
pub const QEMU_MIN_VERSION: (u32, u32) = (6, 0);

const DEV_KVM: &str = "/dev/kvm";
const PVM_MODULE: &str = "/sys/module/kvm_pvm";
const DEV_VHOST_VSOCK: &str = "/dev/vhost-vsock";

/// What `/dev/kvm` is on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KvmStatus {
    /// No `/dev/kvm`.
    Absent,
    /// `/dev/kvm` is provided by `kvm_pvm`: software nested virtualization on which only
    /// PVM-patched guest kernels run.
    Pvm,
    /// Hardware virtualization (`vmx` or `svm`), and `/dev/kvm` opens read-write.
    Hardware { extension: VirtExtension },
    /// `/dev/kvm` exists but this user cannot open it.
    NotOpenable { error: String },
    /// `/dev/kvm` opens, but the CPU advertises neither `vmx` nor `svm` and it is not PVM:
    /// an unknown kind of KVM that Aegis does not trust to boot guests.
    Unrecognised,
}

impl KvmStatus {
    /// Whether stock guest kernels boot under KVM here.
    pub fn is_usable(&self) -> bool {
        matches!(self, KvmStatus::Hardware { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VirtExtension {
    /// Intel VT-x.
    Vmx,
    /// AMD-V.
    Svm,
}

/// Whether an external program was found and works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ToolStatus {
    Found {
        path: PathBuf,
        /// Its version, when it reports one.
        version: Option<String>,
    },
    NotFound {
        /// Where it was looked for, for the error message.
        searched: String,
    },
    /// Found but does not run, or is too old.
    Unusable { path: PathBuf, error: String },
}

impl ToolStatus {
    /// The path of a usable tool.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ToolStatus::Found { path, .. } => Some(path),
            _ => None,
        }
    }

    pub fn version(&self) -> Option<&str> {
        match self {
            ToolStatus::Found { version, .. } => version.as_deref(),
            _ => None,
        }
    }
}

/// Everything Aegis needs to know about the host to choose and drive a VMM backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostReport {
    pub kvm: KvmStatus,
    /// `/dev/vhost-vsock` exists (QEMU could offer virtio-vsock).
    pub vhost_vsock: bool,
    pub qemu: ToolStatus,
    pub firecracker: ToolStatus,
    /// The virtiofsd that serves shared directories (workspaces) to QEMU guests.
    pub virtiofsd: ToolStatus,
    /// Host TSC frequency in kHz ("cpu MHz" of /proc/cpuinfo x 1000). Guests under TCG need
    /// it as `tsc_early_khz=`, else they cannot calibrate their clock and hang.
    pub tsc_khz: Option<u64>,
    /// CPUs this process may run on.
    pub cores: u32,
    /// Total host memory.
    pub memory_mib: u64,
}

/// Probes this host. Never fails: whatever cannot be determined is reported as such.
pub fn probe() -> HostReport {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let facts = HostFacts {
        cpu: parse_cpuinfo(&cpuinfo),
        memory_mib: parse_meminfo_total_mib(&meminfo).unwrap_or(0),
        dev_kvm: probe_dev_kvm(),
        pvm_module: Path::new(PVM_MODULE).exists(),
        vhost_vsock: Path::new(DEV_VHOST_VSOCK).exists(),
        qemu: probe_qemu(),
        firecracker: probe_firecracker(),
        virtiofsd: probe_virtiofsd(),
        cores,
    };
    HostReport::from_facts(facts)
}

/// Raw observations, separated from their interpretation so the latter is unit-tested.
#[derive(Debug, Clone)]
struct HostFacts {
    cpu: CpuInfo,
    memory_mib: u64,
    dev_kvm: DevKvm,
    pvm_module: bool,
    vhost_vsock: bool,
    qemu: ToolStatus,
    firecracker: ToolStatus,
    virtiofsd: ToolStatus,
    cores: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DevKvm {
    Absent,
    Openable,
    OpenFailed(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
struct CpuInfo {
    mhz: Option<f64>,
    vmx: bool,
    svm: bool,
}

impl HostReport {
    fn from_facts(f: HostFacts) -> HostReport {
        let extension = if f.cpu.vmx {
            Some(VirtExtension::Vmx)
        } else if f.cpu.svm {
            Some(VirtExtension::Svm)
        } else {
            None
        };
        // PVM first: even where the device opens, it cannot boot stock kernels.
        let kvm = match (&f.dev_kvm, f.pvm_module, extension) {
            (DevKvm::Absent, _, _) => KvmStatus::Absent,
            (_, true, _) => KvmStatus::Pvm,
            (DevKvm::OpenFailed(e), false, _) => KvmStatus::NotOpenable { error: e.clone() },
            (DevKvm::Openable, false, Some(extension)) => KvmStatus::Hardware { extension },
            (DevKvm::Openable, false, None) => KvmStatus::Unrecognised,
        };
        HostReport {
            kvm,
            vhost_vsock: f.vhost_vsock,
            qemu: f.qemu,
            firecracker: f.firecracker,
            virtiofsd: f.virtiofsd,
            tsc_khz: f
                .cpu
                .mhz
                .filter(|m| m.is_finite() && *m > 0.0)
                .map(|m| (m * 1000.0).round() as u64),
            cores: f.cores.max(1),
            memory_mib: f.memory_mib,
        }
    }
}

fn probe_dev_kvm() -> DevKvm {
    match fs::OpenOptions::new().read(true).write(true).open(DEV_KVM) {
        Ok(_) => DevKvm::Openable,
        Err(e) if e.kind() == ErrorKind::NotFound => DevKvm::Absent,
        Err(e) => DevKvm::OpenFailed(e.to_string()),
    }
}

fn probe_qemu() -> ToolStatus {
    match find_program(QEMU_ENV, QEMU_PROGRAM) {
        Some(path) => qemu_status(&path),
        None => ToolStatus::NotFound {
            searched: format!("${QEMU_ENV} unset, {QEMU_PROGRAM} not on PATH"),
        },
    }
}

/// Whether the QEMU binary at `path` runs and is recent enough (runs `path --version`).
pub fn qemu_status(path: &Path) -> ToolStatus {
    let path = path.to_path_buf();
    let output = match Command::new(&path).arg("--version").output() {
        Ok(o) => o,
        Err(e) => {
            return ToolStatus::Unusable {
                path,
                error: format!("cannot run it: {e}"),
            }
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    match parse_qemu_version(&text) {
        Some(v) if (v.0, v.1) >= QEMU_MIN_VERSION => ToolStatus::Found {
            path,
            version: Some(format!("{}.{}.{}", v.0, v.1, v.2)),
        },
        Some(v) => ToolStatus::Unusable {
            path,
            error: format!(
                "version {}.{}.{} is older than {}.{}",
                v.0, v.1, v.2, QEMU_MIN_VERSION.0, QEMU_MIN_VERSION.1
            ),
        },
        None => ToolStatus::Unusable {
            path,
            error: format!(
                "`--version` printed no QEMU version ({})",
                text.lines().next().unwrap_or("no output")
            ),
        },
    }
}

fn probe_firecracker() -> ToolStatus {
    let Some(path) = find_program(FIRECRACKER_ENV, FIRECRACKER_PROGRAM) else {
        return ToolStatus::NotFound {
            searched: format!("${FIRECRACKER_ENV} unset, {FIRECRACKER_PROGRAM} not on PATH"),
        };
    };
    match Command::new(&path).arg("--version").output() {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            ToolStatus::Found {
                version: parse_firecracker_version(&text),
                path,
            }
        }
        Ok(o) => ToolStatus::Unusable {
            path,
            error: format!("`--version` failed ({})", o.status),
        },
        Err(e) => ToolStatus::Unusable {
            path,
            error: format!("cannot run it: {e}"),
        },
    }
}

/// `$env` if set (even if it does not exist: the user asked for it), else `program` on `PATH`.
fn probe_virtiofsd() -> ToolStatus {
    match crate::qemu::virtiofsd::find() {
        Some(path) => ToolStatus::Found {
            path,
            version: None,
        },
        None => ToolStatus::NotFound {
            searched: format!(
                "looked for {}",
                crate::qemu::virtiofsd::CANDIDATES.join(", ")
            ),
        },
    }
}

fn find_program(env: &str, program: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "cpu MHz" if info.mhz.is_none() => info.mhz = value.trim().parse().ok(),
            "flags" => {
                for flag in value.split_whitespace() {
                    info.vmx |= flag == "vmx";
                    info.svm |= flag == "svm";
                }
            }
            _ => {}
        }
    }
    info
}

fn parse_meminfo_total_mib(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("MemTotal:")?;
        let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kib / 1024)
    })
}

/// `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)` -> (7, 2, 22).
pub(crate) fn parse_qemu_version(text: &str) -> Option<(u32, u32, u32)> {
    let rest = text.split("version ").nth(1)?;
    let word = rest.split_whitespace().next()?;
    let mut parts = word.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next()??;
    let micro = parts.next().flatten().unwrap_or(0);
    Some((major, minor, micro))
}

/// `Firecracker v1.16.0` -> `1.16.0`.
fn parse_firecracker_version(text: &str) -> Option<String> {
    let first = text.lines().next()?;
    let v = first.split_whitespace().find(|w| w.starts_with('v'))?;
    Some(v.trim_start_matches('v').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO_PVM: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu MHz\t\t: 2445.432\n\
        flags\t\t: fpu vme de pse tsc msr pae hypervisor lahf_lm\n\nprocessor\t: 1\n\
        cpu MHz\t\t: 2445.000\nflags\t\t: fpu vme hypervisor\n";
    const CPUINFO_VMX: &str =
        "processor\t: 0\ncpu MHz\t\t: 3000.000\nflags\t\t: fpu vme vmx ept tsc\n";

    pub(super) fn facts() -> HostFacts {
        HostFacts {
            cpu: parse_cpuinfo(CPUINFO_PVM),
            memory_mib: 24_000,
            dev_kvm: DevKvm::Openable,
            pvm_module: true,
            vhost_vsock: false,
            qemu: ToolStatus::Found {
                path: "/usr/bin/qemu-system-x86_64".into(),
                version: Some("7.2.22".into()),
            },
            firecracker: ToolStatus::NotFound {
                searched: "PATH".into(),
            },
            virtiofsd: ToolStatus::NotFound {
                searched: "nowhere".into(),
            },
            cores: 2,
        }
    }

    #[test]
    fn parses_cpuinfo() {
        let c = parse_cpuinfo(CPUINFO_PVM);
        assert_eq!(c.mhz, Some(2445.432));
        assert!(!c.vmx && !c.svm);
        let c = parse_cpuinfo(CPUINFO_VMX);
        assert!(c.vmx);
        // "vmx" must be a whole flag, not a substring.
        assert!(!parse_cpuinfo("flags : vmxfoo svmbar\n").vmx);
        assert_eq!(parse_cpuinfo("").mhz, None);
    }

    #[test]
    fn parses_meminfo() {
        let m = "MemTotal:       24590052 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_meminfo_total_mib(m), Some(24013));
        assert_eq!(parse_meminfo_total_mib("garbage"), None);
    }

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_qemu_version(
                "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"
            ),
            Some((7, 2, 22))
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 8.1\n"),
            Some((8, 1, 0))
        );
        assert_eq!(parse_qemu_version("nope"), None);
        assert_eq!(
            parse_firecracker_version("Firecracker v1.16.0\n\nsomething"),
            Some("1.16.0".into())
        );
    }

    #[test]
    fn classifies_kvm() {
        let mut f = facts();
        f.pvm_module = false;
        f.cpu = parse_cpuinfo(CPUINFO_VMX);
        assert_eq!(
            HostReport::from_facts(f.clone()).kvm,
            KvmStatus::Hardware {
                extension: VirtExtension::Vmx
            }
        );
        f.dev_kvm = DevKvm::OpenFailed("Permission denied (os error 13)".into());
        assert!(matches!(
            HostReport::from_facts(f.clone()).kvm,
            KvmStatus::NotOpenable { .. }
        ));
        f.dev_kvm = DevKvm::Absent;
        assert_eq!(HostReport::from_facts(f.clone()).kvm, KvmStatus::Absent);
        f.dev_kvm = DevKvm::Openable;
        f.cpu = parse_cpuinfo(CPUINFO_PVM);
        assert_eq!(HostReport::from_facts(f).kvm, KvmStatus::Unrecognised);
    }

    #[test]
    fn probing_this_host_does_not_panic() {
        let r = probe();
        assert!(r.cores >= 1);
        assert!(!r.findings().is_empty());
    }
}
