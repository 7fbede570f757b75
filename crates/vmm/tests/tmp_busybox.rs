// TEMPORARY dev check with a busybox echo init; deleted before hand-off.
use aegis_vmm::*;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_echo() {
    let report = probe();
    let b = select(BackendChoice::Qemu, &report, &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::copy("/tmp/vmmx/disk.img", &disk).unwrap();
    let spec = VmSpec {
        id: "bb1".into(),
        kernel: "/root/.aegis/cache/kernel/70e7afad0c1e6145/vmlinux".into(),
        initramfs: "/tmp/vmmx/init.cpio".into(),
        kernel_args: vec![],
        vcpus: 1,
        memory_mib: 256,
        disks: vec![Disk {
            path: disk,
            read_only: false,
            serial: "aegis-scratch".into(),
        }],
        run_dir: dir.path().to_path_buf(),
    };
    let t = Instant::now();
    let vm = b.boot(&spec).await.unwrap();
    println!("boot returned {:?} pid {:?}", t.elapsed(), vm.pid());
    let ch = vm.connect().await.unwrap();
    let mut ch = BufReader::new(ch);
    let mut line = String::new();
    ch.read_line(&mut line).await.unwrap();
    println!("{line:?} at {:?}", t.elapsed());
    ch.get_mut().write_all(b"count\n").await.unwrap();
    line.clear();
    ch.read_line(&mut line).await.unwrap();
    println!("{line:?}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let t = Instant::now();
    vm.pause().await.unwrap();
    println!("pause {:?}", t.elapsed());
    let t = Instant::now();
    vm.resume().await.unwrap();
    println!("resume {:?}", t.elapsed());
    let snap = dir.path().join("snap");
    let t = Instant::now();
    vm.snapshot(&snap).await.unwrap();
    println!(
        "snapshot {:?} size {}",
        t.elapsed(),
        std::fs::metadata(snap.join("memory")).unwrap().len()
    );
    println!(
        "{}",
        std::fs::read_to_string(snap.join("meta.json")).unwrap()
    );
    drop(ch);
    vm.kill().await.unwrap();
    assert_eq!(vm.wait().await, VmExit::Killed);
    let t = Instant::now();
    let vm = b
        .restore(&spec, &SnapshotRef { dir: snap.clone() })
        .await
        .unwrap();
    println!("restore {:?}", t.elapsed());
    let ch = vm.connect().await.unwrap();
    let mut ch = BufReader::new(ch);
    ch.get_mut().write_all(b"x\n").await.unwrap();
    line.clear();
    ch.read_line(&mut line).await.unwrap();
    println!("{line:?} at {:?}", t.elapsed());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    ch.get_mut().write_all(b"x\n").await.unwrap();
    line.clear();
    ch.read_line(&mut line).await.unwrap();
    println!("{line:?}");
    ch.get_mut().write_all(b"poweroff\n").await.unwrap();
    println!("exit {:?}", vm.wait().await);
    println!("console: {}", vm.console_tail());
    vm.kill().await.unwrap();
    println!(
        "{:?}",
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
}
