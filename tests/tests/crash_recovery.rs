//! `kill -9` of aegisd in the middle of work, then a restart: nothing the user made is lost
//! (instances, workspaces, releases, logs), no VMM or virtiofsd process is left behind, and
//! every instance is in a state that is true. Disk-full faults are in `disk_full.rs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use aegis_api::{Instance, InstanceState, Release, Workspace};
use aegis_testkit::registry::{busybox_layer, LayerBuilder, LocalRegistry, OciImage};
use aegis_tests::{code, stderr, stdout, virtiofsd_processes, TestDaemon};

fn ok(d: &TestDaemon, args: &[&str]) -> String {
    let o = d.aegis(args);
    assert_eq!(code(&o), 0, "aegis {args:?}: {}", stderr(&o));
    stdout(&o)
}

fn json<T: serde::de::DeserializeOwned>(d: &TestDaemon, args: &[&str]) -> T {
    let out = ok(d, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("aegis {args:?}: {e}: {out}"))
}

/// A plain HTTP/1.1 GET; the status code.
fn http_status(port: u16) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(180)))?;
    write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {resp:?}")))
}

/// Polls until `cond` holds; panics with `what` and the daemon's log after `within`.
fn wait_for(d: &TestDaemon, what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No VMM and no virtiofsd process of this daemon's home is alive.
fn assert_no_orphans(d: &TestDaemon) {
    wait_for(
        d,
        "orphan VMM or virtiofsd processes",
        Duration::from_secs(10),
        || d.vmm_processes().is_empty() && virtiofsd_processes(d.home.path()).is_empty(),
    );
}

#[test]
fn kill_9_during_a_wake_loses_nothing_and_leaves_no_process() {
    let mut d = TestDaemon::start("qemu");
    ok(&d, &["workspace", "create", "data"]);
    let id = ok(
        &d,
        &[
            "run",
            "--detach",
            "--name",
            "web",
            "--image",
            "busybox",
            "--workspace",
            "data",
            "--expose",
            "8000:http",
            "--",
            "sh",
            "-c",
            "echo boot >> /workspace/boots; echo booted; mkdir -p /tmp/www; echo hi > /tmp/www/index.html; exec httpd -f -p 8000 -h /tmp/www",
        ],
    );
    let i: Instance = json(&d, &["instance", "inspect", id.trim()]);
    let port = i.endpoints[0].host_port;

    // A whole wake first: a log line and a workspace write that must survive the crash.
    assert_eq!(http_status(port).unwrap(), 200);
    wait_for(
        &d,
        "the app's output never reached the log",
        Duration::from_secs(30),
        || ok(&d, &["instance", "logs", "web"]).contains("booted"),
    );
    ok(&d, &["instance", "stop", "web"]);
    let ws: Workspace = json(&d, &["workspace", "inspect", "data", "--json"]);
    let boots = Path::new(&ws.path).join("boots");
    assert_eq!(std::fs::read_to_string(&boots).unwrap(), "boot\n");

    // The second wake is cut short by kill -9 once its VMM (and virtiofsd) runs.
    let waker = std::thread::spawn(move || http_status(port));
    wait_for(
        &d,
        "the wake never started a VMM",
        Duration::from_secs(60),
        || !d.vmm_processes().is_empty(),
    );
    d.kill_hard();
    // The router went with the daemon: the held connection fails, it does not hang.
    assert!(
        waker.join().unwrap().is_err(),
        "a request answered by a dead daemon"
    );
    d.restart();

    assert_no_orphans(&d);
    let i: Instance = json(&d, &["instance", "inspect", "web"]);
    assert_eq!(i.state, InstanceState::Terminated, "no VM runs: {i:?}");
    let spaces: Vec<Workspace> = json(&d, &["workspace", "ls", "--json"]);
    assert_eq!(spaces.len(), 1, "{spaces:?}");
    let logs = ok(&d, &["instance", "logs", "web"]);
    assert!(
        logs.contains("booted"),
        "the log before the crash is lost: {logs:?}"
    );
    // The next request wakes it as if nothing happened.
    assert_eq!(http_status(port).unwrap(), 200);
    let lines = std::fs::read_to_string(&boots).unwrap();
    assert!(
        lines.starts_with("boot\n") && lines.lines().count() >= 2,
        "{lines:?}"
    );
    ok(&d, &["instance", "rm", "web"]);
    d.assert_no_leftovers();
    assert_no_orphans(&d);
}

/// An image whose one big layer takes a while to pull and unpack.
fn big_image() -> OciImage {
    // Incompressible, so that gzip does not make it small.
    let mut noise = vec![0u8; 48 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    OciImage::new(
        vec![
            busybox_layer(),
            LayerBuilder::new().file("noise", 0o644, &noise).build(),
        ],
        serde_json::json!({"Cmd": ["sh"]}),
    )
}

fn image_refs(d: &TestDaemon) -> Vec<String> {
    let images: Vec<serde_json::Value> = json(d, &["image", "ls", "--json"]);
    images
        .iter()
        .filter_map(|i| i["reference"].as_str().map(String::from))
        .collect()
}

#[test]
fn kill_9_during_a_pull_and_a_publish_keeps_the_stores_whole() {
    let registry = LocalRegistry::start();
    let small = registry.push(
        &OciImage::new(
            vec![busybox_layer()],
            serde_json::json!({"Cmd": ["sh"], "ExposedPorts": {"8080/tcp": {}}}),
        ),
        "test/small",
        "1",
    );
    let big = registry.push(&big_image(), "test/big", "1");
    let mut d = TestDaemon::start("fake");

    // A pull cut short: after the restart the image is either whole or absent, and a pull
    // again completes.
    let mut pull = d.aegis_cmd(&["image", "pull", &big]).spawn().unwrap();
    let store = d.home.path().join("images");
    wait_for(&d, "the pull never wrote", Duration::from_secs(60), || {
        std::fs::read_dir(store.join("tmp")).is_ok_and(|mut e| e.next().is_some())
    });
    d.kill_hard();
    let _ = pull.wait();
    d.restart();
    assert!(
        !image_refs(&d).contains(&big),
        "a half-pulled image is listed"
    );
    ok(&d, &["image", "pull", &big]);
    assert!(image_refs(&d).contains(&big));

    // A publish cut short: release 1 stays whole, the cut one is absent or whole, and the
    // next publish works.
    ok(&d, &["image", "pull", &small]);
    ok(
        &d,
        &["app", "create", "site", "--image", &small, "--", "true"],
    );
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("index.html"), "release 1").unwrap();
    let from = src.path().display().to_string();
    let r1: Release = json(&d, &["app", "publish", "site", "--from", &from, "--json"]);
    for i in 0..64 {
        std::fs::write(src.path().join(format!("blob{i}")), vec![i as u8; 1 << 20]).unwrap();
    }
    let mut publish = d
        .aegis_cmd(&["app", "publish", "site", "--from", &from])
        .spawn()
        .unwrap();
    wait_for(
        &d,
        "the publish never wrote",
        Duration::from_secs(60),
        || std::fs::read_dir(store.join("tmp")).is_ok_and(|mut e| e.next().is_some()),
    );
    d.kill_hard();
    let _ = publish.wait();
    d.restart();
    let releases: Vec<Release> = json(&d, &["app", "releases", "site", "--json"]);
    let kept = releases.iter().find(|r| r.number == r1.number);
    assert_eq!(
        kept.map(|r| (&r.manifest_digest, &r.layers)),
        Some((&r1.manifest_digest, &r1.layers)),
        "{releases:?}"
    );
    let r: Release = json(&d, &["app", "publish", "site", "--from", &from, "--json"]);
    assert!(r.number > r1.number, "{r:?}");
    let releases: Vec<Release> = json(&d, &["app", "releases", "site", "--json"]);
    assert!(
        releases.iter().any(|x| x.number == r.number),
        "{releases:?}"
    );
    // Whole: every layer of every release is in the store.
    for layer in releases.iter().flat_map(|r| &r.layers) {
        let hex = layer.digest.trim_start_matches("sha256:");
        let blob = store.join("blobs/sha256").join(hex);
        assert!(blob.is_file(), "release layer {} missing", layer.digest);
    }
    d.assert_no_leftovers();
}

#[test]
fn kill_9_during_a_snapshot_leaves_a_true_state_and_no_process() {
    let mut d = TestDaemon::start("qemu");
    let id = ok(
        &d,
        &[
            "run",
            "--detach",
            "--name",
            "snap",
            "--image",
            "busybox",
            "--expose",
            "8000:http",
            "--",
            "sh",
            "-c",
            "mkdir -p /tmp/www; echo hi > /tmp/www/index.html; exec httpd -f -p 8000 -h /tmp/www",
        ],
    );
    let i: Instance = json(&d, &["instance", "inspect", id.trim()]);
    let port = i.endpoints[0].host_port;
    // The first cold boot saves a memory snapshot once the app listens: the request is
    // answered only after it, so kill -9 lands while the snapshot is being written.
    let snapshot_tmp = d
        .home
        .path()
        .join("snapshots")
        .join(format!("{}.tmp", i.id));
    let waker = std::thread::spawn(move || http_status(port));
    wait_for(
        &d,
        "no snapshot was started",
        Duration::from_secs(120),
        || snapshot_tmp.exists(),
    );
    d.kill_hard();
    let _ = waker.join();
    d.restart();

    assert_no_orphans(&d);
    let i: Instance = json(&d, &["instance", "inspect", "snap"]);
    assert_eq!(i.state, InstanceState::Terminated, "no VM runs: {i:?}");
    assert!(
        !i.snapshot_cached,
        "a half-written snapshot is not offered: {i:?}"
    );
    // The next wake boots cold (and saves a whole snapshot this time).
    assert_eq!(http_status(port).unwrap(), 200);
    let i: Instance = json(&d, &["instance", "inspect", "snap"]);
    assert_eq!(i.state, InstanceState::Running, "{i:?}");
    ok(&d, &["instance", "rm", "snap"]);
    d.assert_no_leftovers();
    assert_no_orphans(&d);
}
