//! Boots a real microVM under QEMU (TCG on hosts without usable KVM) with the real kernel,
//! busybox image and harness, and checks the backend end to end: the guest says Hello over
//! the channel, pause holds the guest, a snapshot restores into a guest whose processes kept
//! their state. Prints the measured numbers (run with `--nocapture`).
//!
//! Needs the guest artefacts (see `docs/GUEST.md`):
//! - kernel: `$AEGIS_TEST_KERNEL`, else the cached kernel (`aegis_image::find_kernel`);
//! - initramfs: `$AEGIS_TEST_INITRAMFS`, else one made from the static harness at
//!   `$AEGIS_TEST_HARNESS` or `target/x86_64-unknown-linux-gnu/harness/aegis-harness`;
//! - root image: `$AEGIS_TEST_ROOTFS`, else the cached `busybox` image.
//!
//! Missing artefacts fail the test with instructions, unless `AEGIS_SKIP_VM_TESTS=1`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aegis_proto::{ExitStatus, GuestMessage, HostMessage, Session, Side, Stream, PROTOCOL_VERSION};
use aegis_testkit::guest;
use aegis_vmm::{select, BackendChoice, BackendOptions, Disk, SnapshotRef, Vm, VmExit, VmSpec};
use tokio::sync::mpsc;

const HELLO_TIMEOUT: Duration = Duration::from_secs(120);
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/c; sleep 0.1; done";

struct Artefacts {
    kernel: PathBuf,
    initramfs: PathBuf,
    rootfs: PathBuf,
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
fn artefacts() -> Result<Artefacts, String> {
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
struct Guest {
    session: Session,
    events: mpsc::Receiver<GuestMessage>,
    boot_id: String,
    next_id: u64,
    /// Streams of background processes, kept open.
    keep: Vec<Stream>,
}

impl Guest {
    /// Starts a session on the VM's channel and waits for the harness's Hello. Process ids
    /// start at `next_id`: the guest's processes outlive a session (and a snapshot), so a new
    /// session must not reuse the ids of processes that may still run.
    async fn hello(vm: &dyn Vm, next_id: u64) -> Guest {
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

    async fn spawn(&mut self, argv: &[&str]) -> (u64, Stream, Stream) {
        let id = self.next_id;
        self.next_id += 1;
        let (out, err) = guest::spawn(&self.session, id, guest::process(argv)).await;
        (id, out, err)
    }

    /// Starts a process that runs on in the background.
    async fn start(&mut self, argv: &[&str]) {
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
    async fn run(&mut self, argv: &[&str]) -> (String, String, ExitStatus) {
        match tokio::time::timeout(Duration::from_secs(60), self.run_inner(argv)).await {
            Ok(r) => r,
            Err(_) => panic!("{argv:?} did not finish within 60 s"),
        }
    }

    async fn run_inner(&mut self, argv: &[&str]) -> (String, String, ExitStatus) {
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

    async fn counter(&mut self) -> u64 {
        let (out, err, status) = self.run(&["cat", "/tmp/c"]).await;
        assert_eq!(status, ExitStatus::Code(0), "cat /tmp/c: {err}");
        out.trim().parse().expect("counter value")
    }

    /// Round trip of one Ping; None if no Pong came within `within`.
    async fn ping(&mut self, nonce: u64, within: Duration) -> Option<Duration> {
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

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_boot_pause_snapshot_restore() {
    let art = match artefacts() {
        Ok(a) => a,
        Err(missing) => {
            if std::env::var("AEGIS_SKIP_VM_TESTS").as_deref() == Ok("1") {
                println!("skipping VM test (AEGIS_SKIP_VM_TESTS=1); missing:\n  {missing}");
                return;
            }
            panic!("guest artefacts missing (set AEGIS_SKIP_VM_TESTS=1 to skip):\n  {missing}");
        }
    };
    let report = aegis_vmm::probe();
    let backend = select(BackendChoice::Qemu, &report, &BackendOptions::default())
        .expect("the qemu backend must be usable on this host");
    let accel = backend.capabilities().accelerator;
    let run = tempfile::Builder::new()
        .prefix("aegis-vmm-")
        .tempdir()
        .expect("temp dir");
    let scratch = run.path().join("scratch.ext4");
    aegis_image::create_scratch_disk(&scratch, 64 << 20).expect("scratch disk");
    let spec = VmSpec {
        id: "qemu-boot-test".into(),
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
        run_dir: run.path().to_path_buf(),
    };

    // Boot to Hello.
    let t = Instant::now();
    let vm = backend.boot(&spec).await.expect("boot");
    let vmm_up = t.elapsed();
    let mut guest = Guest::hello(vm.as_ref(), 1).await;
    let boot_to_hello = t.elapsed();
    let (out, _, status) = guest.run(&["sh", "-c", "echo hi from $(uname -r)"]).await;
    assert_eq!(status, ExitStatus::Code(0));
    assert!(out.starts_with("hi from "), "{out:?}");

    // A process whose state must survive pause and snapshot/restore.
    guest.start(&["sh", "-c", COUNTER]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_pause = guest.counter().await;
    assert!(before_pause >= 1);

    // Pause holds the guest: no answer while paused, the held Ping is answered on resume.
    let t = Instant::now();
    vm.pause().await.expect("pause");
    let pause_latency = t.elapsed();
    assert_eq!(
        guest.ping(1, Duration::from_millis(500)).await,
        None,
        "a paused guest answered"
    );
    let t = Instant::now();
    vm.resume().await.expect("resume");
    let resume_latency = t.elapsed();
    let wait = async {
        loop {
            match guest.events.recv().await {
                Some(GuestMessage::Pong { nonce: 1 }) => return,
                Some(_) => {}
                None => panic!("session ended"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the Ping held during the pause is answered after resume");
    let resume_to_pong = t.elapsed();
    let rtt = guest
        .ping(2, Duration::from_secs(10))
        .await
        .expect("ping after resume");

    // Snapshot of the paused VM.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_snapshot = guest.counter().await;
    assert!(at_snapshot > before_pause, "the counter runs");
    vm.pause().await.expect("pause before snapshot");
    let snap_dir = run.path().join("snapshot");
    let t = Instant::now();
    let snap = vm.snapshot(&snap_dir).await.expect("snapshot");
    let snapshot_time = t.elapsed();
    let snapshot_bytes = std::fs::metadata(snap_dir.join("memory"))
        .expect("memory file")
        .len();
    assert!(snap_dir.join("meta.json").is_file());
    assert!(!snap_dir.join("memory.tmp").exists());
    // The lifecycle kills the VM after a snapshot (resuming would make the scratch disk
    // diverge from the saved memory).
    let old_boot_id = guest.boot_id.clone();
    let next_id = guest.next_id;
    drop(guest);
    vm.kill().await.expect("kill");
    assert_eq!(vm.wait().await, VmExit::Killed);
    assert!(!run.path().join("qmp.sock").exists() && !run.path().join("vmm.pid").exists());
    drop(vm);

    // Restore: same boot, the counter continues from where it was.
    let t = Instant::now();
    let vm = backend
        .restore(
            &spec,
            &SnapshotRef {
                dir: snap.dir.clone(),
            },
        )
        .await
        .expect("restore");
    let restore_running = t.elapsed();
    let mut guest = Guest::hello(vm.as_ref(), next_id).await;
    let restore_to_hello = t.elapsed();
    assert_eq!(
        guest.boot_id, old_boot_id,
        "a restore continues the same boot"
    );
    let after_restore = guest.counter().await;
    assert!(
        after_restore >= at_snapshot && after_restore < at_snapshot + 100,
        "counter {after_restore} after restore, {at_snapshot} at snapshot: state was not kept"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = guest.counter().await;
    assert!(later > after_restore, "the restored process runs on");

    // A snapshot restores any number of times; a mismatched spec is refused.
    let mut other = spec.clone();
    other.memory_mib = 512;
    assert!(matches!(
        backend.restore(&other, &snap).await.err(),
        Some(aegis_vmm::VmmError::Snapshot { .. })
    ));

    // Clean power-off.
    guest
        .session
        .send(HostMessage::Shutdown)
        .await
        .expect("send Shutdown");
    let exit = tokio::time::timeout(Duration::from_secs(60), vm.wait())
        .await
        .expect("the guest powers off");
    assert_eq!(exit, VmExit::PoweredOff, "console:\n{}", vm.console_tail());
    vm.kill().await.expect("kill after exit");

    println!("--- qemu backend, accelerator {accel}, 1 vCPU, 256 MiB ---");
    println!("VMM up (QMP answers):      {}", ms(vmm_up));
    println!("boot to Hello:             {}", ms(boot_to_hello));
    println!("pause (QMP stop):          {}", ms(pause_latency));
    println!("resume (QMP cont):         {}", ms(resume_latency));
    println!("resume to held Pong:       {}", ms(resume_to_pong));
    println!("ping round trip:           {}", ms(rtt));
    println!(
        "snapshot:                  {} ({:.1} MB memory file)",
        ms(snapshot_time),
        snapshot_bytes as f64 / 1e6
    );
    println!("restore to running:        {}", ms(restore_running));
    println!("restore to Hello:          {}", ms(restore_to_hello));
    println!(
        "counter: {before_pause} before pause, {at_snapshot} at snapshot, {after_restore} after \
         restore, {later} later"
    );
}
