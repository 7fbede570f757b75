//! `aegis cp` and the files API against real VMs (QEMU): a directory in and out with its
//! modes, tar streams on stdin/stdout, a write waking a paused instance, a 64 MiB file both
//! ways by sha256, a write larger than the guest's free space, and the clear errors.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use aegis_api::{Instance, InstanceState};
use aegis_tests::{code, sha256, stderr, stdout, TestDaemon};

/// An instance serving HTTP on guest port 8000 after `setup` (a shell snippet) ran.
fn instance(d: &TestDaemon, name: &str, setup: &str) -> Instance {
    let script = format!("{setup} exec python3 -m http.server 8000 --bind 127.0.0.1");
    let o = d.aegis(&[
        "run",
        "--detach",
        "--name",
        name,
        "--expose",
        "8000:http",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    inspect(d, name)
}

fn inspect(d: &TestDaemon, id: &str) -> Instance {
    let o = d.aegis(&["instance", "inspect", id]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn cp(d: &TestDaemon, src: &str, dst: &str) {
    let o = d.aegis(&["cp", src, dst]);
    assert_eq!(
        code(&o),
        0,
        "aegis cp {src} {dst}: {}\n{}",
        stderr(&o),
        d.log()
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_directory_goes_in_and_out_with_its_modes() {
    let d = TestDaemon::start("qemu");
    instance(
        &d,
        "box",
        "mkdir /sp && echo x > /sp/f && mknod /sp/null c 1 3 && mkfifo /sp/pipe &&",
    );
    let host = tempfile::tempdir().unwrap();

    // Special files out of a guest: fifos are made, device nodes skipped with a warning.
    let special = host.path().join("special");
    let o = d.aegis(&["cp", "box:/sp", special.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("skipped device node sp/null"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(special.join("f")).unwrap(), b"x\n");
    assert!(!special.join("null").exists());
    use std::os::unix::fs::FileTypeExt;
    let pipe = std::fs::symlink_metadata(special.join("pipe")).unwrap();
    assert!(pipe.file_type().is_fifo());

    let src = host.path().join("proj");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(src.join("bin/run.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(src.join("secret"), b"s3cret\n").unwrap();
    std::fs::set_permissions(src.join("secret"), PermissionsExt::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("bin/run.sh", src.join("link")).unwrap();

    cp(&d, src.to_str().unwrap(), "box:/tmp");
    let back = host.path().join("back");
    cp(&d, "box:/tmp/proj", back.to_str().unwrap());
    assert_eq!(
        std::fs::read(back.join("bin/run.sh")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(mode(&back.join("bin/run.sh")), 0o755);
    assert_eq!(mode(&back.join("secret")), 0o600);
    assert_eq!(
        std::fs::read_link(back.join("link")).unwrap(),
        Path::new("bin/run.sh")
    );

    // `-`: a tar stream on stdout, listed by tar(1).
    let o = d
        .aegis_cmd(&["cp", "box:/tmp/proj", "-"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let listing = tar_list(&o.stdout);
    assert!(listing.contains("proj/bin/run.sh"), "{listing}");

    // A missing guest path is a clear 404; a relative one a 400 (exit 125 both).
    let o = d.aegis(&["cp", "box:/no/such", host.path().to_str().unwrap()]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("/no/such"), "{}", stderr(&o));
    let o = d.aegis(&["cp", "box:tmp", host.path().to_str().unwrap()]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("not absolute"), "{}", stderr(&o));
    let o = d.aegis(&["cp", "nope:/tmp", host.path().to_str().unwrap()]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("no instance 'nope'"), "{}", stderr(&o));

    // A write into a paused instance wakes it.
    let o = d.aegis(&["pause", "box"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(inspect(&d, "box").state, InstanceState::Paused);
    cp(&d, src.join("secret").to_str().unwrap(), "box:/tmp/again");
    let i = inspect(&d, "box");
    assert_eq!(i.state, InstanceState::Running);
    assert_eq!(i.stats.resumes, 1);
}

fn tar_list(archive: &[u8]) -> String {
    use std::io::Write;
    let mut tar = std::process::Command::new("tar")
        .arg("-t")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tar(1)");
    tar.stdin.take().unwrap().write_all(archive).unwrap();
    let o = tar.wait_with_output().unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn a_64_mib_file_streams_both_ways_intact() {
    let d = TestDaemon::start("qemu");
    instance(&d, "big", "");
    let host = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let src = host.path().join("blob");
    std::fs::write(&src, &data).unwrap();
    let started = Instant::now();
    cp(&d, src.to_str().unwrap(), "big:/tmp/blob");
    let inward = started.elapsed();
    let back = host.path().join("blob.back");
    let started = Instant::now();
    cp(&d, "big:/tmp/blob", back.to_str().unwrap());
    let outward = started.elapsed();
    assert_eq!(sha256(&std::fs::read(&back).unwrap()), sha256(&data));
    eprintln!("64 MiB in: {inward:?}, out: {outward:?}");
}

#[test]
fn a_write_larger_than_the_free_space_fails_and_leaves_nothing() {
    let d = TestDaemon::start("qemu");
    instance(
        &d,
        "full",
        "mkdir -p /small && mount -t tmpfs -o size=1m tmpfs /small &&",
    );
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("big");
    std::fs::write(&src, vec![7u8; 4 << 20]).unwrap();
    let o = d.aegis(&["cp", src.to_str().unwrap(), "full:/small/big"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("nothing was written"), "{}", stderr(&o));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listed = rt
        .block_on(d.client().list_path("full", "/small"))
        .unwrap()
        .entries
        .unwrap();
    assert!(listed.is_empty(), "no partial file: {listed:?}");
    // The space is free again: a small write succeeds.
    std::fs::write(&src, b"fits").unwrap();
    cp(&d, src.to_str().unwrap(), "full:/small/ok");
}

#[test]
fn docs_examples_run() {
    let d = TestDaemon::start("qemu");
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/FILES.md"))
            .unwrap();
    let script = doc
        .split("```bash\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a bash example in docs/FILES.md");
    let cwd = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        aegis_tests::bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(cwd.path())
        .env("PATH", path)
        .env("AEGIS_HOME", d.home.path())
        .output()
        .unwrap();
    assert_eq!(
        code(&o),
        0,
        "{script}\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains("index.html"), "{}", stdout(&o));
    assert_eq!(inspect(&d, "web").state, InstanceState::Running);
}

#[test]
fn a_watch_sees_a_file_appear() {
    let d = TestDaemon::start("qemu");
    instance(&d, "watched", "mkdir -p /out &&");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = d.client().with_timeout(std::time::Duration::from_secs(300));
    let mut events = rt.block_on(client.watch_path("watched", "/out")).unwrap();
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("result.json");
    std::fs::write(&src, b"{\"ok\":true}").unwrap();
    cp(&d, src.to_str().unwrap(), "watched:/out/");
    let event = rt
        .block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(120), events.next_event()).await
        })
        .expect("no watch event within 120 s")
        .unwrap()
        .expect("the watch ended");
    assert_eq!(event.kind, aegis_api::WatchKind::MovedIn);
    assert_eq!(event.name, "result.json");
}
