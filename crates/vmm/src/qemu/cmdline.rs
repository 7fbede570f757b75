//! The QEMU command line, built from a [`VmSpec`] by a pure function.
//!
//! ```text
//! qemu-system-x86_64 -name aegis-<id>,debug-threads=off
//!   -M microvm,x-option-roms=off,isa-serial=on,rtc=on[,memory-backend=mem]
//!   -accel tcg|kvm -cpu max|host -smp N -m MiB
//!   -nodefaults -no-user-config -nographic -no-reboot
//!   [with shares: -object memory-backend-memfd,id=mem,size=MiB,share=on
//!                 -global virtio-mmio.force-legacy=false]
//!   -kernel K -initrd I -append "console=ttyS0 reboot=t panic=-1 quiet [tsc_early_khz=..] ..."
//!   -chardev socket,id=con0,path=<run>/console.sock -serial chardev:con0
//!   per disk: -drive file=P,if=none,id=dN,format=raw,readonly=on|off,cache=writeback
//!             -device virtio-blk-device,drive=dN,serial=S
//!   per share: -chardev socket,id=fsN,path=<run>/fsN.sock
//!              -device vhost-user-fs-device,chardev=fsN,tag=T
//!   -device virtio-serial-device -chardev socket,id=ch0,path=<run>/channel.sock,server=on,wait=off
//!   -device virtserialport,chardev=ch0,name=aegis.0
//!   -chardev socket,id=qmp,path=<run>/qmp.sock,server=on,wait=off -mon chardev=qmp,mode=control
//!   [-incoming defer]
//! ```
//!
//! `-name aegis-<id>` is how the daemon recognises its VMMs in `/proc/<pid>/cmdline` when it
//! reconciles after a restart. A shared directory (virtio-fs) needs guest RAM that
//! virtiofsd can map, hence the memfd backend with `share=on` whenever there is one, and modern
//! (version 2) virtio-mmio transports: libvhost-user refuses legacy virtio devices, which is
//! what microvm's transports default to. The serial console goes to a socket aegis listens on
//! (QEMU connects as a client), never to a file: the pump behind it bounds the console log
//! ([`crate::console_log`]). Paths inside comma-separated option values have their commas
//! doubled (QEMU's escape); other paths are separate arguments and need no escaping.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Accel, QemuConfig};
use crate::backend::VmmError;
use crate::spec::VmSpec;

use super::virtiofsd::SharePaths;

/// Name of the virtio-serial port the harness looks for (`/sys/class/virtio-ports/*/name`).
pub const CHANNEL_PORT_NAME: &str = "aegis.0";
/// Kernel argument telling the harness where its channel is.
pub const CHANNEL_KERNEL_ARG: &str = "aegis.channel=vport:aegis.0";
/// x86 `COMMAND_LINE_SIZE` is 2048; QEMU's microvm appends `virtio_mmio.device=` entries.
const MAX_KERNEL_CMDLINE: usize = 1536;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Files QEMU creates or uses in the VM's run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    pub console: PathBuf,
    /// Where the console pump listens for QEMU's serial chardev.
    pub console_socket: PathBuf,
    pub channel: PathBuf,
    pub qmp: PathBuf,
    pub log: PathBuf,
    pub pid: PathBuf,
}

impl RunPaths {
    pub fn new(run_dir: &Path) -> RunPaths {
        RunPaths {
            console: run_dir.join("console.log"),
            console_socket: run_dir.join("console.sock"),
            channel: run_dir.join("channel.sock"),
            qmp: run_dir.join("qmp.sock"),
            log: run_dir.join("vmm.log"),
            pid: run_dir.join("vmm.pid"),
        }
    }
}

/// How the VM starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Boot the kernel.
    Boot,
    /// Wait for `migrate-incoming` (restore from a snapshot).
    Incoming,
}

/// The kernel command line: console and clock arguments, the channel, then the spec's own.
pub fn kernel_cmdline(accel: Accel, tsc_khz: Option<u64>, spec: &VmSpec) -> String {
    let mut args = vec![
        "console=ttyS0".to_string(),
        "reboot=t".into(),
        "panic=-1".into(),
        "quiet".into(),
    ];
    if accel == Accel::Tcg {
        // Under TCG the guest cannot calibrate its TSC and hangs without this.
        if let Some(khz) = tsc_khz {
            args.push(format!("tsc_early_khz={khz}"));
        }
    }
    args.push(CHANNEL_KERNEL_ARG.into());
    args.extend(spec.kernel_args.iter().cloned());
    args.join(" ")
}

/// The argv (without the program) that runs `spec`. Expects a spec that passed
/// [`VmSpec::validate`]; checks what only QEMU cares about (UTF-8 paths, socket path length,
/// kernel command line length).
pub fn build(
    cfg: &QemuConfig,
    spec: &VmSpec,
    paths: &RunPaths,
    start: Start,
) -> Result<Vec<String>, VmmError> {
    let share_sockets: Vec<PathBuf> = (0..spec.shares.len())
        .map(|i| SharePaths::new(&spec.run_dir, i).socket)
        .collect();
    for sock in [&paths.channel, &paths.qmp, &paths.console_socket]
        .into_iter()
        .chain(&share_sockets)
    {
        if sock.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(VmmError::InvalidSpec(format!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter run \
                 directory",
                sock.display()
            )));
        }
    }
    let cmdline = kernel_cmdline(cfg.accel, cfg.tsc_khz, spec);
    if cmdline.len() > MAX_KERNEL_CMDLINE {
        return Err(VmmError::InvalidSpec(format!(
            "kernel command line is {} bytes, more than {MAX_KERNEL_CMDLINE}",
            cmdline.len()
        )));
    }
    let cpu = match cfg.accel {
        Accel::Tcg => "max",
        Accel::Kvm => "host",
    };
    let mut a: Vec<String> = Vec::with_capacity(64);
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["-name", &format!("aegis-{},debug-threads=off", spec.id)]);
    let shared_memory = !spec.shares.is_empty();
    if shared_memory {
        push(&[
            "-M",
            "microvm,x-option-roms=off,isa-serial=on,rtc=on,memory-backend=mem",
        ]);
        push(&[
            "-object",
            &format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                spec.memory_mib
            ),
        ]);
        push(&["-global", "virtio-mmio.force-legacy=false"]);
    } else {
        push(&["-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on"]);
    }
    push(&["-accel", cfg.accel.as_str()]);
    push(&["-cpu", cpu]);
    push(&["-smp", &spec.vcpus.to_string()]);
    push(&["-m", &format!("{}M", spec.memory_mib)]);
    push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    push(&["-kernel", utf8("kernel", &spec.kernel)?]);
    push(&["-initrd", utf8("initramfs", &spec.initramfs)?]);
    push(&["-append", &cmdline]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=con0,path={}",
            escape(utf8("console socket", &paths.console_socket)?)
        ),
    ]);
    push(&["-serial", "chardev:con0"]);
    for (i, disk) in spec.disks.iter().enumerate() {
        let mode = if disk.read_only {
            "readonly=on"
        } else {
            // The guest's fstrim/discard punches holes in the sparse scratch file.
            "readonly=off,discard=unmap"
        };
        push(&[
            "-drive",
            &format!(
                "file={},if=none,id=d{i},format=raw,{mode},cache=writeback",
                escape(utf8("disk", &disk.path)?)
            ),
        ]);
        push(&[
            "-device",
            &format!("virtio-blk-device,drive=d{i},serial={}", disk.serial),
        ]);
    }
    for (i, (share, socket)) in spec.shares.iter().zip(&share_sockets).enumerate() {
        push(&[
            "-chardev",
            &format!(
                "socket,id=fs{i},path={}",
                escape(utf8("virtiofsd socket", socket)?)
            ),
        ]);
        push(&[
            "-device",
            &format!("vhost-user-fs-device,chardev=fs{i},tag={}", share.tag),
        ]);
    }
    push(&["-device", "virtio-serial-device"]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=ch0,path={},server=on,wait=off",
            escape(utf8("channel socket", &paths.channel)?)
        ),
    ]);
    push(&[
        "-device",
        &format!("virtserialport,chardev=ch0,name={CHANNEL_PORT_NAME}"),
    ]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=qmp,path={},server=on,wait=off",
            escape(utf8("QMP socket", &paths.qmp)?)
        ),
    ]);
    push(&["-mon", "chardev=qmp,mode=control"]);
    if start == Start::Incoming {
        push(&["-incoming", "defer"]);
    }
    Ok(a)
}

/// A hash of everything that shapes the virtual machine (machine type, accelerator, CPU model,
/// vCPUs, memory, devices and their order, QEMU version), but not of paths, the id or kernel
/// arguments. A memory snapshot restores only into a machine with the same fingerprint.
pub fn machine_fingerprint(cfg: &QemuConfig, spec: &VmSpec) -> String {
    let mut shape = spec.clone();
    shape.id = "x".into();
    shape.kernel = "/kernel".into();
    shape.initramfs = "/initramfs".into();
    shape.kernel_args.clear();
    shape.run_dir = "/run".into();
    for (i, d) in shape.disks.iter_mut().enumerate() {
        d.path = format!("/disk{i}").into();
    }
    let mut cfg = cfg.clone();
    cfg.tsc_khz = None;
    let argv = build(&cfg, &shape, &RunPaths::new(&shape.run_dir), Start::Boot).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(cfg.version.as_bytes());
    for arg in argv {
        h.update([0]);
        h.update(arg.as_bytes());
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn utf8<'a>(what: &str, path: &'a Path) -> Result<&'a str, VmmError> {
    path.to_str().ok_or_else(|| {
        VmmError::InvalidSpec(format!("{what} path {} is not UTF-8", path.display()))
    })
}

/// QEMU option values escape a comma by doubling it.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Disk;

    fn cfg(accel: Accel) -> QemuConfig {
        QemuConfig {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            version: "7.2.22".into(),
            accel,
            tsc_khz: Some(2_445_432),
            max_vcpus: 2,
            virtiofsd: None,
            console_log_bytes: crate::console_log::DEFAULT_CONSOLE_LOG_BYTES,
        }
    }

    fn spec() -> VmSpec {
        VmSpec {
            id: "i-123".into(),
            kernel: "/k/vmlinux".into(),
            initramfs: "/k/initramfs.cpio".into(),
            kernel_args: vec!["aegis.root=aegis-root".into()],
            vcpus: 2,
            memory_mib: 512,
            disks: vec![
                Disk {
                    path: "/img/rootfs.ext4".into(),
                    read_only: true,
                    serial: "aegis-root".into(),
                },
                Disk {
                    path: "/run/a,b/scratch.ext4".into(),
                    read_only: false,
                    serial: "aegis-scratch".into(),
                },
            ],
            shares: vec![],
            run_dir: "/run/vm".into(),
        }
    }

    /// The argv of `s` under `accel`, starting as `start`.
    fn argv_of(s: &VmSpec, accel: Accel, start: Start) -> Vec<String> {
        build(&cfg(accel), s, &RunPaths::new(&s.run_dir), start).unwrap()
    }

    fn after<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
        argv.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn tcg_command_line() {
        let s = spec();
        let argv = argv_of(&s, Accel::Tcg, Start::Boot);
        assert_eq!(after(&argv, "-name"), ["aegis-i-123,debug-threads=off"]);
        assert_eq!(
            after(&argv, "-M"),
            ["microvm,x-option-roms=off,isa-serial=on,rtc=on"]
        );
        assert_eq!(after(&argv, "-accel"), ["tcg"]);
        assert_eq!(after(&argv, "-cpu"), ["max"]);
        assert_eq!(after(&argv, "-smp"), ["2"]);
        assert_eq!(after(&argv, "-m"), ["512M"]);
        assert_eq!(after(&argv, "-kernel"), ["/k/vmlinux"]);
        assert_eq!(
            after(&argv, "-append"),
            [
                "console=ttyS0 reboot=t panic=-1 quiet tsc_early_khz=2445432 \
              aegis.channel=vport:aegis.0 aegis.root=aegis-root"
            ]
        );
        for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
            assert!(argv.iter().any(|a| a == flag), "{flag} missing");
        }
        assert_eq!(
            after(&argv, "-drive"),
            [
                "file=/img/rootfs.ext4,if=none,id=d0,format=raw,readonly=on,cache=writeback",
                "file=/run/a,,b/scratch.ext4,if=none,id=d1,format=raw,readonly=off,\
                 discard=unmap,cache=writeback",
            ]
        );
        assert_eq!(
            after(&argv, "-device"),
            [
                "virtio-blk-device,drive=d0,serial=aegis-root",
                "virtio-blk-device,drive=d1,serial=aegis-scratch",
                "virtio-serial-device",
                "virtserialport,chardev=ch0,name=aegis.0",
            ]
        );
        assert_eq!(
            after(&argv, "-chardev"),
            [
                "socket,id=con0,path=/run/vm/console.sock",
                "socket,id=ch0,path=/run/vm/channel.sock,server=on,wait=off",
                "socket,id=qmp,path=/run/vm/qmp.sock,server=on,wait=off",
            ]
        );
        assert_eq!(after(&argv, "-serial"), ["chardev:con0"]);
        assert_eq!(after(&argv, "-mon"), ["chardev=qmp,mode=control"]);
        assert!(after(&argv, "-incoming").is_empty());
    }

    #[test]
    fn shares_get_shared_memory_and_a_vhost_user_fs_device_each() {
        let mut s = spec();
        s.shares = vec![
            crate::spec::Share {
                tag: "aegis-workspace".into(),
                host_path: "/home/u/ws".into(),
                read_only: false,
            },
            crate::spec::Share {
                tag: "other".into(),
                host_path: "/data".into(),
                read_only: false,
            },
        ];
        let argv = argv_of(&s, Accel::Tcg, Start::Boot);
        assert_eq!(
            after(&argv, "-M"),
            ["microvm,x-option-roms=off,isa-serial=on,rtc=on,memory-backend=mem"]
        );
        assert_eq!(
            after(&argv, "-object"),
            ["memory-backend-memfd,id=mem,size=512M,share=on"]
        );
        assert_eq!(after(&argv, "-m"), ["512M"]);
        assert_eq!(after(&argv, "-global"), ["virtio-mmio.force-legacy=false"]);
        assert_eq!(
            after(&argv, "-device"),
            [
                "virtio-blk-device,drive=d0,serial=aegis-root",
                "virtio-blk-device,drive=d1,serial=aegis-scratch",
                "vhost-user-fs-device,chardev=fs0,tag=aegis-workspace",
                "vhost-user-fs-device,chardev=fs1,tag=other",
                "virtio-serial-device",
                "virtserialport,chardev=ch0,name=aegis.0",
            ]
        );
        assert_eq!(
            &after(&argv, "-chardev")[1..3],
            [
                "socket,id=fs0,path=/run/vm/fs0.sock",
                "socket,id=fs1,path=/run/vm/fs1.sock"
            ]
        );
        // The host path is virtiofsd's business, never QEMU's.
        assert!(!argv.iter().any(|a| a.contains("/home/u/ws")));
        // Without shares: private memory, no -object.
        let plain = spec();
        let argv = build(
            &cfg(Accel::Tcg),
            &plain,
            &RunPaths::new(&plain.run_dir),
            Start::Boot,
        )
        .unwrap();
        assert!(after(&argv, "-object").is_empty());
        assert!(after(&argv, "-global").is_empty());
    }

    #[test]
    fn kvm_uses_host_cpu_and_no_tsc_hint() {
        let s = spec();
        let argv = argv_of(&s, Accel::Kvm, Start::Boot);
        assert_eq!(after(&argv, "-accel"), ["kvm"]);
        assert_eq!(after(&argv, "-cpu"), ["host"]);
        assert!(!after(&argv, "-append")[0].contains("tsc_early_khz"));
    }

    #[test]
    fn incoming_defers_and_keeps_the_console_socket() {
        let s = spec();
        let argv = argv_of(&s, Accel::Tcg, Start::Incoming);
        assert_eq!(after(&argv, "-incoming"), ["defer"]);
        assert_eq!(
            after(&argv, "-chardev")[0],
            "socket,id=con0,path=/run/vm/console.sock"
        );
    }

    #[test]
    fn long_socket_paths_and_command_lines_are_refused() {
        let mut s = spec();
        s.run_dir = PathBuf::from("/").join("d".repeat(100));
        let r = build(
            &cfg(Accel::Tcg),
            &s,
            &RunPaths::new(&s.run_dir),
            Start::Boot,
        );
        assert!(matches!(r, Err(VmmError::InvalidSpec(m)) if m.contains("socket path")));
        let mut s = spec();
        s.kernel_args = vec!["x".repeat(2000)];
        let r = build(
            &cfg(Accel::Tcg),
            &s,
            &RunPaths::new(&s.run_dir),
            Start::Boot,
        );
        assert!(matches!(r, Err(VmmError::InvalidSpec(m)) if m.contains("command line")));
    }

    #[test]
    fn fingerprint_ignores_paths_but_not_shape() {
        let c = cfg(Accel::Tcg);
        let a = spec();
        let mut b = spec();
        b.id = "other".into();
        b.run_dir = "/elsewhere".into();
        b.kernel_args.push("aegis.debug=1".into());
        b.disks[1].path = "/x/y.ext4".into();
        assert_eq!(machine_fingerprint(&c, &a), machine_fingerprint(&c, &b));
        let mut c2 = c.clone();
        c2.tsc_khz = Some(1);
        assert_eq!(machine_fingerprint(&c, &a), machine_fingerprint(&c2, &a));

        let mut m = spec();
        m.memory_mib = 256;
        assert_ne!(machine_fingerprint(&c, &a), machine_fingerprint(&c, &m));
        let mut d = spec();
        d.disks[1].read_only = true;
        assert_ne!(machine_fingerprint(&c, &a), machine_fingerprint(&c, &d));
        let mut v = c.clone();
        v.version = "8.0.0".into();
        assert_ne!(machine_fingerprint(&c, &a), machine_fingerprint(&v, &a));
        assert_ne!(
            machine_fingerprint(&c, &a),
            machine_fingerprint(&cfg(Accel::Kvm), &a)
        );
    }
}
