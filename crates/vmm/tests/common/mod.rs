//! What the QEMU boot test and the raw-spawn benchmark (`examples/spawn_rtt.rs`) share: finding
//! the guest artefacts, the spec of a small VM, and the host side of a guest session driven by
//! hand (Hello, Spawn, wait for Exited), with no aegisd in between.
//!
//! Artefacts (see `docs/GUEST.md`):
//! - kernel: `$AEGIS_TEST_KERNEL`, else the cached kernel (`aegis_image::find_kernel`);
//! - initramfs: `$AEGIS_TEST_INITRAMFS`, else one made from the static harness at
//!   `$AEGIS_TEST_HARNESS` or `target/x86_64-unknown-linux-gnu/harness/aegis-harness`;
//! - root image: `$AEGIS_TEST_ROOTFS`, else the cached `busybox` image.

// Each includer uses a different part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aegis_proto::{ExitStatus, GuestMessage, HostMessage, Session, Side, Stream, PROTOCOL_VERSION};
use aegis_testkit::guest;
use aegis_vmm::{Disk, Vm, VmSpec};
use tokio::sync::mpsc;

pub const HELLO_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Artefacts {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn harness_binary() -> PathBuf {
    if let Some(p) = env_path("AEGIS_TEST_HARNESS") {
        return p;
    }
    let target = env_path("CARGO_TARGET_DIR").unwrap_or_else(|| {
        // crates/vmm -> the workspace root.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2);
        root.unwrap_or(Path::new(".")).join("target")
    });
    target.join("x86_64-unknown-linux-gnu/harness/aegis-harness")
}

/// The artefacts, or what is missing and how to build it.
pub fn artefacts() -> Result<Artefacts, String> {
    let layout = aegis_image::Layout::from_env().map_err(|e| e.to_string())?;
    let mut missing = Vec::new();
    let kernel = env_path("AEGIS_TEST_KERNEL").or_else(|| aegis_image::find_kernel(&layout));
    if kernel.as_ref().is_none_or(|k| !k.is_file()) {
        missing.push(
            "kernel: run `scripts/build-guest.sh kernel` (~8 min) or set AEGIS_TEST_KERNEL"
                .to_string(),
        );
    }
    let rootfs =
        env_path("AEGIS_TEST_ROOTFS").or_else(|| aegis_image::image_path(&layout, "busybox").ok());
    if rootfs.as_ref().is_none_or(|r| !r.is_file()) {
        missing.push(
            "busybox image: run `scripts/build-guest.sh busybox` or set AEGIS_TEST_ROOTFS".into(),
        );
    }
    let initramfs = match env_path("AEGIS_TEST_INITRAMFS") {
        Some(p) if p.is_file() => Some(p),
        Some(p) => {
            missing.push(format!(
                "initramfs: AEGIS_TEST_INITRAMFS={} does not exist",
                p.display()
            ));
            None
        }
        None => {
            let harness = harness_binary();
            match aegis_image::ensure_initramfs(&layout, &harness) {
                Ok(p) => Some(p),
                Err(e) => {
                    missing.push(format!(
                        "initramfs ({e}): build the static harness with `RUSTFLAGS=\"-C \
                         target-feature=+crt-static\" cargo build --profile harness -p \
                         aegis-harness --target x86_64-unknown-linux-gnu`, or set \
                         AEGIS_TEST_HARNESS / AEGIS_TEST_INITRAMFS"
                    ));
                    None
                }
            }
        }
    };
    match (kernel, initramfs, rootfs) {
        (Some(kernel), Some(initramfs), Some(rootfs)) if missing.is_empty() => Ok(Artefacts {
            kernel,
            initramfs,
            rootfs,
        }),
        _ => Err(missing.join("\n  ")),
    }
}

/// The host side of a guest session, for one process at a time (plus background ones).
pub struct Guest {
    pub session: Session,
    pub events: mpsc::Receiver<GuestMessage>,
    pub boot_id: String,
    pub next_id: u64,
    /// Streams of background processes, kept open.
    pub keep: Vec<Stream>,
}

impl Guest {
    /// Starts a session on the VM's channel and waits for the harness's Hello. Process ids
    /// start at `next_id`: the guest's processes outlive a session (and a snapshot), so a new
    /// session must not reuse the ids of processes that may still run.
    pub async fn hello(vm: &dyn Vm, next_id: u64) -> Guest {
        let channel = vm.connect().await.expect("connect to the guest channel");
        let (session, mut events) = Session::start::<GuestMessage, _>(channel, Side::Host);
        session
            .send(HostMessage::Hello {
                protocol: PROTOCOL_VERSION,
            })
            .await
            .expect("send Hello");
        let wait = async {
            loop {
                match events.recv().await {
                    Some(GuestMessage::Hello {
                        protocol, boot_id, ..
                    }) => {
                        assert_eq!(protocol, PROTOCOL_VERSION);
                        return boot_id;
                    }
                    Some(_) => continue,
                    None => return String::new(),
                }
            }
        };
        let boot_id = tokio::select! {
            id = wait => id,
            exit = vm.wait() => panic!("VM exited before Hello: {exit:?}\n{}", vm.console_tail()),
            _ = tokio::time::sleep(HELLO_TIMEOUT) => {
                panic!("no Hello within {HELLO_TIMEOUT:?}; console:\n{}", vm.console_tail())
            }
        };
        assert!(
            !boot_id.is_empty(),
            "channel closed before Hello; console:\n{}",
            vm.console_tail()
        );
        Guest {
            session,
            events,
            boot_id,
            next_id,
            keep: Vec::new(),
        }
    }

    pub async fn spawn(&mut self, argv: &[&str]) -> (u64, Stream, Stream) {
        let id = self.next_id;
        self.next_id += 1;
        let (out, err) = guest::spawn(&self.session, id, guest::process(argv)).await;
        (id, out, err)
    }

    /// Starts a process that runs on in the background.
    pub async fn start(&mut self, argv: &[&str]) {
        let (id, out, err) = self.spawn(argv).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("{argv:?} not spawned within 60 s"));
            match msg.expect("session ended") {
                GuestMessage::Spawned { id: i, .. } if i == id => break,
                GuestMessage::SpawnFailed { id: i, error } if i == id => {
                    panic!("spawn {argv:?} failed: {error:?}")
                }
                _ => {}
            }
        }
        self.keep.push(out);
        self.keep.push(err);
    }

    /// Runs a process to completion: (stdout, stderr, status). Panics after a minute.
    pub async fn run(&mut self, argv: &[&str]) -> (String, String, ExitStatus) {
        match tokio::time::timeout(Duration::from_secs(60), self.run_inner(argv)).await {
            Ok(r) => r,
            Err(_) => panic!("{argv:?} did not finish within 60 s"),
        }
    }

    pub async fn run_inner(&mut self, argv: &[&str]) -> (String, String, ExitStatus) {
        let (id, out, err) = self.spawn(argv).await;
        let (mut out_rx, _out_tx) = out.into_split();
        let (mut err_rx, _err_tx) = err.into_split();
        let (stdout, stderr) = tokio::join!(out_rx.read_to_end(), err_rx.read_to_end());
        let status = loop {
            match self.events.recv().await.expect("session ended") {
                GuestMessage::Exited { id: i, status } if i == id => break status,
                GuestMessage::SpawnFailed { id: i, error } if i == id => {
                    panic!("spawn {argv:?} failed: {error:?}")
                }
                _ => {}
            }
        };
        (
            String::from_utf8_lossy(&stdout.unwrap_or_default()).into_owned(),
            String::from_utf8_lossy(&stderr.unwrap_or_default()).into_owned(),
            status,
        )
    }

    pub async fn counter(&mut self) -> u64 {
        let (out, err, status) = self.run(&["cat", "/tmp/c"]).await;
        assert_eq!(status, ExitStatus::Code(0), "cat /tmp/c: {err}");
        out.trim().parse().expect("counter value")
    }

    /// Round trip of one Ping; None if no Pong came within `within`.
    pub async fn ping(&mut self, nonce: u64, within: Duration) -> Option<Duration> {
        let t = Instant::now();
        self.session
            .send(HostMessage::Ping { nonce })
            .await
            .expect("send Ping");
        let wait = async {
            loop {
                match self.events.recv().await {
                    Some(GuestMessage::Pong { nonce: n }) if n == nonce => return,
                    Some(_) => {}
                    None => std::future::pending::<()>().await,
                }
            }
        };
        tokio::time::timeout(within, wait).await.ok()?;
        Some(t.elapsed())
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A one-vCPU, 256 MiB VM of `art` with a fresh 64 MiB scratch disk in `run_dir`.
pub fn small_vm(art: Artefacts, id: &str, run_dir: &Path) -> VmSpec {
    let scratch = run_dir.join("scratch.ext4");
    aegis_image::create_scratch_disk(&scratch, 64 << 20).expect("scratch disk");
    VmSpec {
        id: id.into(),
        kernel: art.kernel,
        initramfs: art.initramfs,
        kernel_args: vec![],
        vcpus: 1,
        memory_mib: 256,
        disks: vec![
            Disk {
                path: art.rootfs,
                read_only: true,
                serial: "aegis-root".into(),
            },
            Disk {
                path: scratch,
                read_only: false,
                serial: "aegis-scratch".into(),
            },
        ],
        shares: vec![],
        run_dir: run_dir.to_path_buf(),
    }
}
