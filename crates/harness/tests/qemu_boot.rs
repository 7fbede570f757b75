//! End to end: the static harness as PID 1 of a real microVM under QEMU.
//!
//! Boots the kernel and busybox image of the Aegis home (`aegis setup` builds them), or
//! `AEGIS_TEST_KERNEL` (a vmlinux) and `AEGIS_TEST_IMAGE` (a base image); fails with
//! instructions when they are missing. The harness binary is `AEGIS_TEST_HARNESS`, default the static build:
//!
//! ```sh
//! RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile harness -p aegis-harness \
//!     --target x86_64-unknown-linux-gnu
//! AEGIS_TEST_KERNEL=~/.aegis/cache/kernel/<hash>/vmlinux \
//! AEGIS_TEST_IMAGE=~/.aegis/cache/images/busybox/rootfs.ext4 \
//!     cargo test -p aegis-harness --test qemu_boot -- --nocapture
//! ```
//!
//! It boots the guest with a scratch disk and a virtio-serial channel, then over the session:
//! Hello, SetClock, `uname -r`, `echo hi`, a look at the mounts, ReadPath, Connect to a guest
//! port, a disconnect and reconnect (same boot id, processes still running), and Shutdown,
//! after which QEMU must exit by itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aegis_proto::{ExitStatus, GuestMessage, HostMessage, ProcId, Session, Side, PROTOCOL_VERSION};
use aegis_testkit::guest;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

const BOOT_LIMIT: Duration = Duration::from_secs(60);
const STEP_LIMIT: Duration = Duration::from_secs(30);

struct Vm {
    qemu: Child,
    socket: PathBuf,
    scratch: PathBuf,
    console: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        if std::thread::panicking() {
            let console = std::fs::read_to_string(&self.console).unwrap_or_default();
            eprintln!("--- guest console ---\n{console}---");
        }
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).map(PathBuf::from)
}

fn boot(kernel: &Path, image: &Path, harness: &Path) -> Vm {
    let dir = tempfile::tempdir().unwrap();
    let initramfs = dir.path().join("initramfs.cpio");
    aegis_image::write_initramfs(harness, &initramfs).unwrap();
    let scratch = dir.path().join("scratch.ext4");
    aegis_image::create_scratch_disk(&scratch, 1 << 30).unwrap();
    let socket = dir.path().join("ch.sock");
    let console = dir.path().join("console.log");
    let khz = aegis_image::host_tsc_khz().expect("cpu MHz in /proc/cpuinfo");
    let debug = if std::env::var_os("AEGIS_TEST_DEBUG").is_some() {
        " aegis.debug"
    } else {
        ""
    };
    let qemu = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "microvm,x-option-roms=off,isa-serial=on,rtc=on",
            "-cpu",
            "max",
            "-m",
            "256",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-serial",
        ])
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(&initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet reboot=t tsc_early_khz={khz} aegis.channel=vport:aegis.0 \
             aegis.hostname=testbox{debug}"
        ))
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=root,format=raw,readonly=on",
            image.display()
        ))
        .args(["-device", "virtio-blk-device,drive=root,serial=aegis-root"])
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=scratch,format=raw",
            scratch.display()
        ))
        .args([
            "-device",
            "virtio-blk-device,drive=scratch,serial=aegis-scratch",
        ])
        .args(["-device", "virtio-serial-device", "-chardev"])
        .arg(format!(
            "socket,id=ch0,path={},server=on,wait=off",
            socket.display()
        ))
        .args(["-device", "virtserialport,chardev=ch0,name=aegis.0"])
        .stdin(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 on PATH");
    Vm {
        qemu,
        socket,
        scratch,
        console,
        _dir: dir,
    }
}

struct Host {
    session: Session,
    inbox: mpsc::Receiver<GuestMessage>,
    /// A second handle on the socket, to really close it (Session::close does not).
    raw: std::os::unix::net::UnixStream,
}

async fn attach(socket: &Path) -> Host {
    let started = Instant::now();
    let stream = loop {
        match UnixStream::connect(socket).await {
            Ok(s) => break s,
            Err(_) if started.elapsed() < BOOT_LIMIT => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("cannot connect to {}: {e}", socket.display()),
        }
    };
    let std_stream = stream.into_std().unwrap();
    let raw = std_stream.try_clone().unwrap();
    let stream = UnixStream::from_std(std_stream).unwrap();
    let (session, inbox) = Session::start::<GuestMessage, _>(stream, Side::Host);
    Host {
        session,
        inbox,
        raw,
    }
}

impl Host {
    async fn next(&mut self, limit: Duration) -> GuestMessage {
        tokio::time::timeout(limit, self.inbox.recv())
            .await
            .expect("no message from the guest in time")
            .expect("session closed")
    }

    /// The next message that is not a Hello: the guest greets on its own when a session
    /// starts and answers every host Hello, so a host sees one or two per connection.
    async fn next_event(&mut self, limit: Duration) -> GuestMessage {
        loop {
            match self.next(limit).await {
                GuestMessage::Hello { .. } => continue,
                other => return other,
            }
        }
    }

    async fn hello(&mut self, limit: Duration) -> (String, String) {
        self.session
            .send(HostMessage::Hello {
                protocol: PROTOCOL_VERSION,
            })
            .await
            .unwrap();
        match self.next(limit).await {
            GuestMessage::Hello {
                protocol,
                kernel_release,
                boot_id,
            } => {
                assert_eq!(protocol, PROTOCOL_VERSION);
                (kernel_release, boot_id)
            }
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    async fn spawn(
        &mut self,
        id: ProcId,
        argv: &[&str],
    ) -> (aegis_proto::Stream, aegis_proto::Stream) {
        let (out, err) = guest::spawn(&self.session, id, guest::process(argv)).await;
        match self.next_event(STEP_LIMIT).await {
            GuestMessage::Spawned { id: got, .. } => assert_eq!(got, id),
            other => panic!("expected Spawned, got {other:?}"),
        }
        (out, err)
    }

    async fn run(&mut self, id: ProcId, argv: &[&str]) -> (String, String, ExitStatus) {
        let t = Instant::now();
        let (out, err) = self.spawn(id, argv).await;
        let (mut o, mut e) = (out.recv, err.recv);
        let (o, e) = tokio::join!(o.read_to_end(), e.read_to_end());
        let status = match self.next_event(STEP_LIMIT).await {
            GuestMessage::Exited { id: got, status } => {
                assert_eq!(got, id);
                status
            }
            other => panic!("expected Exited, got {other:?}"),
        };
        let (o, e) = (
            String::from_utf8_lossy(&o.unwrap()).into_owned(),
            String::from_utf8_lossy(&e.unwrap()).into_owned(),
        );
        println!("  {argv:?} -> {status:?} in {:.1} ms", ms(t.elapsed()));
        (o, e, status)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_serves_and_shuts_down() {
    // The guest artefacts of the Aegis home (or the env overrides); missing ones fail the test
    // with instructions: a real-VM test never passes without a VM.
    let layout = aegis_image::Layout::from_env().expect("Aegis home");
    let kernel = env_path("AEGIS_TEST_KERNEL")
        .or_else(|| aegis_image::find_kernel(&layout))
        .expect("no guest kernel: run `aegis setup` (or set AEGIS_TEST_KERNEL)");
    let image = env_path("AEGIS_TEST_IMAGE").unwrap_or_else(|| {
        aegis_image::image_path(&layout, "busybox")
            .expect("no busybox image: run `aegis setup` (or set AEGIS_TEST_IMAGE)")
    });
    let harness = env_path("AEGIS_TEST_HARNESS").unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/x86_64-unknown-linux-gnu/harness/aegis-harness")
    });
    assert!(
        harness.is_file(),
        "no static harness at {} (build it first, see this file's header)",
        harness.display()
    );

    let started = Instant::now();
    let mut vm = boot(&kernel, &image, &harness);
    let mut host = attach(&vm.socket).await;
    let first = match host.next(BOOT_LIMIT).await {
        GuestMessage::Hello { boot_id, .. } => boot_id,
        other => panic!("expected Hello, got {other:?}"),
    };
    let boot_time = started.elapsed();
    println!("QEMU start -> guest Hello: {:.0} ms", ms(boot_time));
    let t = Instant::now();
    let (release, boot_id) = host.hello(STEP_LIMIT).await;
    println!("Hello round trip: {:.2} ms", ms(t.elapsed()));
    assert_eq!(boot_id, first);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    host.session
        .send(HostMessage::SetClock {
            unix_nanos: now.as_nanos() as u64,
        })
        .await
        .unwrap();

    let (out, _, status) = host.run(1, &["uname", "-r"]).await;
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(out.trim(), release);
    println!("uname -r: {}", out.trim());
    let (out, _, status) = host.run(2, &["echo", "hi"]).await;
    assert_eq!((out.as_str(), status), ("hi\n", ExitStatus::Code(0)));
    let t = Instant::now();
    const LINE: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let cmd = format!("yes {LINE} | head -c 10000000");
    let (out, _, status) = host.run(30, &["sh", "-c", &cmd]).await;
    let expected: String = format!("{LINE}\n").repeat(10_000_000 / 63 + 1)[..10_000_000].into();
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(out.len(), expected.len());
    assert!(out == expected, "10 MB of output arrives byte-exact");
    println!(
        "10 MB stdout: {:.0} ms, {:.1} MB/s",
        ms(t.elapsed()),
        out.len() as f64 / t.elapsed().as_secs_f64() / 1e6
    );
    let (out, _, _) = host.run(3, &["date", "+%s"]).await;
    let guest_secs: u64 = out.trim().parse().unwrap();
    let host_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        guest_secs.abs_diff(host_secs) < 10,
        "guest clock {guest_secs}, host {host_secs}"
    );
    let (out, _, _) = host
        .run(4, &["sh", "-c", "hostname; cat /proc/mounts; ls -l /dev/virtio-ports; echo $$ $PPID; cat /proc/1/comm"])
        .await;
    println!("{out}");
    assert!(out.starts_with("testbox\n"), "{out}");
    assert!(out.contains("overlay / overlay"), "{out}");
    let _streams = guest::spawn(&host.session, 5, guest::process(&["no-such-program"])).await;
    match host.next_event(STEP_LIMIT).await {
        GuestMessage::SpawnFailed { error, .. } => {
            assert_eq!(error.kind, aegis_proto::SpawnErrorKind::NotFound);
            println!("  no-such-program -> {}", error.message);
        }
        other => panic!("expected SpawnFailed, got {other:?}"),
    }

    // A port in the guest, reached through the session (busybox nc, or python3 on Debian).
    const SERVER: &str = "if command -v python3 >/dev/null; then exec python3 -c '\
import socket\n\
s = socket.socket()\n\
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
s.bind((\"127.0.0.1\", 8080))\n\
s.listen(1)\n\
c, _ = s.accept()\n\
c.sendall(b\"hello-from-guest\\n\")\n\
c.close()'; else echo hello-from-guest | nc -l -p 8080 127.0.0.1; fi";
    let (server_out, _server_err) = host.spawn(6, &["sh", "-c", SERVER]).await;
    drop(server_out);
    let deadline = Instant::now() + STEP_LIMIT;
    let stream = loop {
        let stream = host.session.open_stream();
        host.session
            .send(HostMessage::Connect {
                stream: stream.id(),
                port: 8080,
            })
            .await
            .unwrap();
        match host.next_event(STEP_LIMIT).await {
            GuestMessage::Connected { .. } => break stream,
            GuestMessage::ConnectFailed { error, .. } if Instant::now() < deadline => {
                println!("  connect: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("expected Connected, got {other:?}"),
        }
    };
    let (mut rx, mut tx) = stream.into_split();
    tx.finish().await.unwrap();
    let got = tokio::time::timeout(STEP_LIMIT, rx.read_to_end())
        .await
        .unwrap()
        .unwrap();
    println!(
        "Connect 127.0.0.1:8080 -> {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(got, b"hello-from-guest\n");
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(2), host.inbox.recv())
        .await
        .ok()
        .flatten()
    {
        println!("  (also: {msg:?})");
    }

    // ReadPath of a small file.
    let stream = host.session.open_stream();
    host.session
        .send(HostMessage::ReadPath {
            stream: stream.id(),
            path: "/etc/hostname".into(),
        })
        .await
        .unwrap();
    let mut rx = stream.recv;
    let tar = rx.read_to_end().await.unwrap();
    assert!(matches!(
        host.next_event(STEP_LIMIT).await,
        GuestMessage::PathSent { error: None, .. }
    ));
    let mut archive = tar::Archive::new(&tar[..]);
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    let mut content = String::new();
    std::io::Read::read_to_string(&mut entry, &mut content).unwrap();
    assert_eq!(content, "testbox\n");

    // Disconnect with a process running; reconnect: same boot, process still there.
    let _sleeper = host.spawn(7, &["sleep", "1000"]).await;
    host.raw.shutdown(std::net::Shutdown::Both).unwrap();
    host.session.close();
    drop(host);
    let t = Instant::now();
    let mut host = attach(&vm.socket).await;
    // Like the daemon: say Hello and wait for the guest's (whether or not the guest noticed
    // the disconnect, exactly one Hello answers).
    let (_, again) = host.hello(STEP_LIMIT).await;
    println!("reconnect -> Hello: {:.1} ms", ms(t.elapsed()));
    assert_eq!(again, first, "same boot");
    let (out, _, _) = host
        .run(8, &["sh", "-c", "pidof sleep || ps | grep sleep"])
        .await;
    assert!(!out.trim().is_empty(), "sleep still running");
    let (out, _, _) = host.run(9, &["echo", "hi again"]).await;
    assert_eq!(out, "hi again\n");

    // A slow reconnect: the guest sees the port close (EOF), waits for the next host and
    // greets it on a new session.
    host.raw.shutdown(std::net::Shutdown::Both).unwrap();
    host.session.close();
    drop(host);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = Instant::now();
    let mut host = attach(&vm.socket).await;
    let (_, again) = host.hello(STEP_LIMIT).await;
    println!("slow reconnect -> Hello: {:.1} ms", ms(t.elapsed()));
    assert_eq!(again, first, "same boot");
    let (out, _, _) = host.run(10, &["echo", "hi a third time"]).await;
    assert_eq!(out, "hi a third time\n");

    // Shutdown: the sleeper is stopped, ShuttingDown arrives, QEMU exits on its own.
    let t = Instant::now();
    host.session.send(HostMessage::Shutdown).await.unwrap();
    loop {
        match host.next_event(STEP_LIMIT).await {
            GuestMessage::ShuttingDown => break,
            GuestMessage::Exited { id, status } => {
                println!("  exited during shutdown: {id} {status:?}")
            }
            other => println!("  during shutdown: {other:?}"),
        }
    }
    println!("Shutdown -> ShuttingDown: {:.0} ms", ms(t.elapsed()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = vm.qemu.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "QEMU did not exit after Shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "Shutdown -> QEMU exit: {:.0} ms ({status})",
        ms(t.elapsed())
    );
    let console = std::fs::read_to_string(&vm.console).unwrap_or_default();
    println!("--- guest console ---\n{console}---");
    assert!(status.success());
    // The guest remounted the scratch disk read-only before powering off: it is clean.
    let fsck = Command::new("e2fsck").arg("-n").arg(&vm.scratch).output();
    if let Ok(fsck) = fsck {
        let text = String::from_utf8_lossy(&fsck.stdout);
        println!("e2fsck -n scratch: {}", text.lines().last().unwrap_or(""));
        assert!(fsck.status.success(), "{text}");
    }
    assert!(!console.contains("FATAL"), "{console}");
    assert!(!console.contains("Kernel panic"), "{console}");
}
