//! Apps and releases end to end, with real VMs: an image pushed to a real local registry and
//! pulled, two releases published from a directory, served through the router, switched and
//! rolled back; what an instance writes to its root file system is gone after terminate; a
//! switch drops the memory snapshot and the next request cold-boots the other release.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use aegis_api::{App, Instance, Release, Status};
use aegis_testkit::registry::{busybox_layer, LocalRegistry, OciImage};
use aegis_tests::{code, stderr, stdout, TestDaemon};

fn ok(d: &TestDaemon, args: &[&str]) -> String {
    let o = d.aegis(args);
    assert_eq!(code(&o), 0, "aegis {args:?}: {}\n{}", stderr(&o), d.log());
    format!("{}{}", stdout(&o), stderr(&o))
}

fn json<T: serde::de::DeserializeOwned>(d: &TestDaemon, args: &[&str]) -> T {
    let o = d.aegis(args);
    assert_eq!(code(&o), 0, "aegis {args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// GET through the shared router port with `Host: <host>`; (status, body).
fn get(router: &str, host: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(router).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn instance(d: &TestDaemon) -> Instance {
    json(d, &["instance", "inspect", "site"])
}

fn write_site(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir.join("www/cgi-bin")).unwrap();
    std::fs::write(dir.join("www/index.html"), format!("{text}\n")).unwrap();
    let cgi = |name: &str, body: &str| {
        let p = dir.join("www/cgi-bin").join(name);
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho 'Content-Type: text/plain'\necho\n{body}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    cgi(
        "mark",
        "mkdir -p /var && echo written > /var/marker && echo marked",
    );
    cgi(
        "check",
        "if [ -e /var/marker ]; then echo present; else echo absent; fi",
    );
}

#[test]
fn publish_serve_switch_rollback_and_terminate_discards_writes() {
    let registry = LocalRegistry::start();
    let image = OciImage::new(
        vec![busybox_layer()],
        serde_json::json!({"Cmd": ["sh"], "ExposedPorts": {"8080/tcp": {}}}),
    );
    let reference = registry.push(&image, "apps/busybox", "1");
    let d = TestDaemon::start("qemu");
    let router = json::<Status>(&d, &["status", "--json"]).router_addr;

    // The image must be pulled first.
    let o = d.aegis(&[
        "app", "create", "site", "--image", &reference, "--", "httpd",
    ]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("aegis image pull"), "{}", stderr(&o));
    ok(&d, &["image", "pull", &reference]);
    ok(
        &d,
        &[
            "app",
            "create",
            "site",
            "--image",
            &reference,
            "--expose",
            "8080:http",
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/app/www",
        ],
    );
    let o = d.aegis(&["app", "create", "site", "--image", &reference]);
    assert_ne!(code(&o), 0, "duplicate names are refused");

    // Two releases from a directory; a missing directory stores nothing.
    let src = tempfile::tempdir().unwrap();
    let o = d.aegis(&[
        "app",
        "publish",
        "site",
        "--from",
        &src.path().join("missing").display().to_string(),
    ]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("missing"), "{}", stderr(&o));
    write_site(src.path(), "release 1");
    let from = src.path().display().to_string();
    let started = Instant::now();
    let r1: Release = json(
        &d,
        &[
            "app", "publish", "site", "--from", &from, "--label", "v1", "--json",
        ],
    );
    eprintln!(
        "measured: publish of release 1 took {:?}",
        started.elapsed()
    );
    write_site(src.path(), "release 2");
    let r2: Release = json(
        &d,
        &[
            "app", "publish", "site", "--from", &from, "--label", "v2", "--json",
        ],
    );
    assert_eq!((r1.number, r2.number), (1, 2));
    assert_eq!(r1.layers.len(), 2);
    assert_eq!(r1.layers[0], r2.layers[0], "the image layer is shared");
    assert_ne!(r1.layers[1].digest, r2.layers[1].digest);
    let releases: Vec<Release> = json(&d, &["app", "releases", "site", "--json"]);
    assert_eq!(releases, vec![r1.clone(), r2.clone()]);

    // Serve release 1 through the router.
    let out = ok(&d, &["app", "serve", "site", "--release", "1"]);
    assert!(out.contains("serves release 1"), "{out}");
    let started = Instant::now();
    let (status, body) = get(&router, "site", "/");
    eprintln!(
        "measured: first request to release 1 (cold boot of 2 layers) took {:?}",
        started.elapsed()
    );
    assert_eq!((status, body.trim()), (200, "release 1"), "{}", d.log());

    // A write to the root file system after ready lives until the VM terminates.
    let (_, marked) = get(&router, "site", "/cgi-bin/mark");
    // CGI answers are chunked: look for the words.
    assert!(marked.contains("marked"), "{marked}\n{}", d.log());
    assert!(get(&router, "site", "/cgi-bin/check").1.contains("present"));
    ok(&d, &["stop", "site"]);
    let (_, check) = get(&router, "site", "/cgi-bin/check");
    assert!(
        check.contains("absent"),
        "the scratch layer is discarded on terminate: {check}"
    );

    // Switching: the VM is terminated, the snapshot dropped, release 2 boots cold.
    let before = instance(&d);
    let snapshot_dir = d.home.path().join("snapshots").join(&before.id);
    eprintln!(
        "measured: snapshot cached before the switch: {}",
        before.snapshot_cached
    );
    if before.snapshot_cached {
        assert!(snapshot_dir.exists());
    }
    let out = ok(&d, &["app", "serve", "site", "--release", "2"]);
    assert!(out.contains("was release 1"), "{out}");
    let switched = instance(&d);
    assert_eq!(switched.id, before.id);
    assert!(
        !switched.snapshot_cached,
        "the old release's snapshot is dropped"
    );
    assert!(!snapshot_dir.exists());
    assert!(d.vmm_processes().is_empty(), "the old release's VM is gone");
    let started = Instant::now();
    assert_eq!(get(&router, "site", "/").1.trim(), "release 2");
    eprintln!(
        "measured: first request after switching to release 2 took {:?}",
        started.elapsed()
    );
    let after = instance(&d);
    assert_eq!(
        after.stats.snapshot_restores, before.stats.snapshot_restores,
        "never restored another release's snapshot"
    );
    assert_eq!(after.stats.cold_boots, before.stats.cold_boots + 1);

    // Rollback: release 1 again.
    let out = ok(&d, &["app", "rollback", "site"]);
    assert!(out.contains("serves release 1"), "{out}");
    assert_eq!(get(&router, "site", "/").1.trim(), "release 1");
    let app: App = json(&d, &["app", "inspect", "site", "--json"]);
    assert_eq!(app.latest_release, Some(2));
    assert_eq!(app.serving.map(|s| s.release), Some(1));
    let apps: Vec<App> = json(&d, &["app", "ls", "--json"]);
    assert_eq!(apps.len(), 1);

    // Removal: instance, VM and releases go; nothing is left running.
    ok(&d, &["app", "rm", "site"]);
    assert_ne!(code(&d.aegis(&["instance", "inspect", "site"])), 0);
    assert_ne!(code(&d.aegis(&["app", "inspect", "site"])), 0);
    d.assert_no_leftovers();
}

#[test]
fn an_apps_workspace_outlives_terminate_and_release_switches() {
    let registry = LocalRegistry::start();
    let image = OciImage::new(vec![busybox_layer()], serde_json::json!({"Cmd": ["sh"]}));
    let reference = registry.push(&image, "apps/busybox", "ws");
    let d = TestDaemon::start("qemu");
    let router = json::<Status>(&d, &["status", "--json"]).router_addr;
    ok(&d, &["image", "pull", &reference]);
    ok(
        &d,
        &[
            "app",
            "create",
            "notes",
            "--image",
            &reference,
            "--expose",
            "8080:http",
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/app/www",
        ],
    );
    let src = tempfile::tempdir().unwrap();
    write_site(src.path(), "release 1");
    // The CGI script also appends to the workspace.
    let cgi = src.path().join("www/cgi-bin/note");
    std::fs::write(
        &cgi,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho note >> /workspace/notes\nwc -l < /workspace/notes\n",
    )
    .unwrap();
    std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755)).unwrap();
    let from = src.path().display().to_string();
    ok(&d, &["app", "publish", "notes", "--from", &from]);
    ok(&d, &["app", "publish", "notes", "--from", &from]);

    ok(
        &d,
        &[
            "app",
            "serve",
            "notes",
            "--release",
            "1",
            "--workspace",
            "notes-data",
        ],
    );
    assert!(get(&router, "notes", "/cgi-bin/note").1.contains('1'));
    assert!(get(&router, "notes", "/cgi-bin/mark").1.contains("marked"));
    // Terminate: the root file system's write is gone, the workspace's stays.
    ok(&d, &["stop", "notes"]);
    assert!(get(&router, "notes", "/cgi-bin/check").1.contains("absent"));
    assert!(get(&router, "notes", "/cgi-bin/note").1.contains('2'));
    // A release switch keeps the workspace; changing it is refused.
    ok(&d, &["app", "serve", "notes", "--release", "2"]);
    assert!(get(&router, "notes", "/cgi-bin/note").1.contains('3'));
    let o = d.aegis(&["app", "serve", "notes", "--workspace", "other"]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("notes-data"), "{}", stderr(&o));
    // The workspace is held while the app's instance exists.
    assert_ne!(code(&d.aegis(&["workspace", "rm", "notes-data"])), 0);
    ok(&d, &["app", "rm", "notes"]);
    let ws: serde_json::Value = json(&d, &["workspace", "inspect", "notes-data", "--json"]);
    let notes =
        std::fs::read_to_string(Path::new(ws["path"].as_str().unwrap()).join("notes")).unwrap();
    assert_eq!(notes.lines().count(), 3);
    ok(&d, &["workspace", "rm", "notes-data"]);
    d.assert_no_leftovers();
}
