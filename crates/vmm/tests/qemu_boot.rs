//! Boots a real microVM under QEMU (TCG on hosts without usable KVM) with the real kernel,
//! busybox image and harness, and checks the backend end to end: the guest says Hello over
//! the channel, pause holds the guest, a snapshot restores into a guest whose processes kept
//! their state. Prints the measured numbers (run with `--nocapture`).
//!
//! Needs the guest artefacts (see `common/mod.rs` and `docs/GUEST.md`).
//!
//! Missing artefacts fail the test with instructions, unless `AEGIS_SKIP_VM_TESTS=1`.

mod common;

use std::time::{Duration, Instant};

use aegis_proto::{ExitStatus, GuestMessage, HostMessage};
use aegis_vmm::{select, BackendChoice, BackendOptions, SnapshotRef, VmExit};
use common::{artefacts, ms, Guest};

const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/c; sleep 0.1; done";

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
    let spec = common::small_vm(art, "qemu-boot-test", run.path());

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
