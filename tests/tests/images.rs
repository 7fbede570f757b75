//! OCI images end to end: a real registry (`docker-registry` on loopback), images pushed with
//! a real tool (`skopeo`), pulled by `aegis image pull`, booted by `aegis run --image` on
//! real microVMs.

use std::path::{Path, PathBuf};

use aegis_testkit::registry::{busybox_layer, test_image, LayerBuilder, LocalRegistry, OciImage};
use aegis_tests::{code, stderr, stdout, SmallDisk, TestDaemon};

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn image_refs(d: &TestDaemon) -> Vec<String> {
    let o = d.aegis(&["image", "ls", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    json(&o)
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap().to_string())
        .collect()
}

/// Files (not directories) under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn pull_then_run_an_oci_image_with_its_config_and_whiteouts() {
    let registry = LocalRegistry::start();
    let reference = registry.push(&test_image(), "test/app", "v1");
    let d = TestDaemon::start("qemu");

    let o = d.aegis(&["image", "pull", &reference]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), reference);
    let o = d.aegis(&["image", "inspect", &reference, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let info = json(&o);
    assert_eq!(info["layers"], 3);
    assert_eq!(info["kind"], "oci");
    assert_eq!(info["working_dir"], "/srv");
    // One read-only disk per layer, made at pull time.
    let disks = files_under(&d.home.path().join("layers"));
    assert_eq!(disks.len(), 3, "{disks:?}");

    // No command: the image's Cmd runs.
    let o = d.aegis(&["run", "--image", &reference]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "motd from layer 2\n");

    // The whiteout of layer 3 hides a file of layer 2; Env and WorkingDir apply.
    let o = d.aegis(&[
        "run",
        "--image",
        &reference,
        "--",
        "sh",
        "-c",
        "test -e /etc/removed.txt && echo removed-present; cat /etc/added.txt; \
         echo \"$GREETING\"; pwd; id -u; cat /srv/www/index.html; ls /srv/old",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "added by layer 3\nhello-from-image\n/srv\n0\nhello from an OCI image\nc.txt\n"
    );

    // --user resolves names in the image's /etc/passwd; --workdir and -e override the image.
    let o = d.aegis(&[
        "run",
        "--image",
        &reference,
        "--user",
        "app",
        "-w",
        "/tmp",
        "-e",
        "GREETING=override",
        "--",
        "sh",
        "-c",
        "id -u; id -g; pwd; echo $GREETING",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "1000\n1000\n/tmp\noverride\n");
    let o = d.aegis(&[
        "run", "--image", &reference, "--user", "ghost", "--", "true",
    ]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("/etc/passwd"), "{}", stderr(&o));

    // Writes go to the VM's own scratch layer: the next VM sees the image as published.
    let o = d.aegis(&[
        "run",
        "--image",
        &reference,
        "--",
        "sh",
        "-c",
        "echo x > /etc/motd",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = d.aegis(&["run", "--image", &reference]);
    assert_eq!(stdout(&o), "motd from layer 2\n");
    d.assert_no_leftovers();
}

#[test]
fn run_pulls_a_missing_image_and_rm_respects_users() {
    let registry = LocalRegistry::start();
    let reference = registry.push(&test_image(), "test/auto", "latest");
    let d = TestDaemon::start("qemu");
    assert!(!image_refs(&d).contains(&reference));

    // Like `docker run`: pulled on first use.
    let o = d.aegis(&["run", "--image", &reference, "--", "cat", "/etc/added.txt"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "added by layer 3\n");
    assert!(stderr(&o).contains("pulling"), "{}", stderr(&o));
    assert!(image_refs(&d).contains(&reference));

    // An instance of the image holds it: rm is refused and nothing is deleted.
    let o = d.aegis(&[
        "run", "-d", "--name", "holder", "--image", &reference, "--expose", "8080", "--", "httpd",
        "-f", "-p", "8080", "-h", "/srv/www",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = d.aegis(&["image", "rm", &reference]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("instance holder"), "{}", stderr(&o));
    assert!(image_refs(&d).contains(&reference));
    let blobs_before = files_under(&d.home.path().join("images/blobs")).len();
    assert!(blobs_before >= 5, "{blobs_before}");

    let o = d.aegis(&["instance", "rm", "holder"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = d.aegis(&["image", "rm", &reference]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!image_refs(&d).contains(&reference));
    // Nothing else referenced its blobs or disks: all gone.
    assert!(files_under(&d.home.path().join("images/blobs")).is_empty());
    assert!(files_under(&d.home.path().join("layers")).is_empty());
    d.assert_no_leftovers();
}

#[test]
fn bad_references_and_registries_fail_clearly_and_store_nothing() {
    let registry = LocalRegistry::start();
    let d = TestDaemon::start("fake");

    let unknown = format!("{}/test/nothing:v1", registry.addr());
    let o = d.aegis(&["image", "pull", &unknown]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("test/nothing"), "{}", stderr(&o));

    let reference = registry.push(&test_image(), "test/app", "v1");
    let unknown_tag = format!("{}/test/app:v9", registry.addr());
    let o = d.aegis(&["image", "pull", &unknown_tag]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("v9"), "{}", stderr(&o));

    // Nothing listens on port 1.
    let o = d.aegis(&["image", "pull", "127.0.0.1:1/test/app:v1"]);
    assert_eq!(code(&o), 125);
    assert!(
        stderr(&o).to_lowercase().contains("reach") || stderr(&o).contains("connect"),
        "{}",
        stderr(&o)
    );

    let o = d.aegis(&["image", "pull", "UPPER/case"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("UPPER/case"), "{}", stderr(&o));

    // A layer corrupted in the registry is rejected by its digest and never stored.
    let corrupted = registry.corrupt_biggest_blob();
    let o = d.aegis(&["image", "pull", &reference]);
    assert_eq!(code(&o), 125);
    assert!(
        stderr(&o).contains("digest") && stderr(&o).contains(&corrupted[7..19]),
        "{}",
        stderr(&o)
    );
    let stored: Vec<String> = files_under(&d.home.path().join("images/blobs"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(!stored.contains(&corrupted[7..].to_string()), "{stored:?}");
    assert!(files_under(&d.home.path().join("images/tmp")).is_empty());
    assert!(image_refs(&d).iter().all(|r| !r.contains("test/")));
}

#[test]
fn layers_that_escape_the_root_are_refused() {
    let registry = LocalRegistry::start();
    let d = TestDaemon::start("fake");
    let marker = format!("aegis-escape-{}", std::process::id());

    let dotdot = LayerBuilder::new()
        .file(&format!("../../tmp/{marker}"), 0o644, b"escaped\n")
        .build();
    let symlink = LayerBuilder::new()
        .symlink("esc", "/tmp")
        .file(&format!("esc/{marker}"), 0o644, b"escaped\n")
        .build();
    for (name, layer) in [("dotdot", dotdot), ("symlink", symlink)] {
        let image = OciImage::new(vec![busybox_layer(), layer], serde_json::json!({}));
        let reference = registry.push(&image, &format!("evil/{name}"), "v1");
        let o = d.aegis(&["image", "pull", &reference]);
        if name == "dotdot" {
            // Refused outright.
            assert_eq!(code(&o), 125, "{name}");
            assert!(stderr(&o).contains(".."), "{name}: {}", stderr(&o));
            assert!(!image_refs(&d).contains(&reference), "{name}");
        } else {
            // Followed inside the image's own root, as in the guest: harmless.
            assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        }
        assert!(
            !Path::new("/tmp").join(&marker).exists(),
            "{name}: a layer wrote outside its root"
        );
    }
}

#[test]
fn a_full_disk_during_pull_leaves_nothing_half_written() {
    let registry = LocalRegistry::start();
    let reference = registry.push(&test_image(), "test/app", "v1");
    // The blob store fills up while downloading; then, with room for blobs, the layer
    // disks do not fit.
    for (dir, size) in [("images", "600k"), ("layers", "1m")] {
        let mut disk = None;
        let mut d = TestDaemon::start_prepared("fake", |home| {
            disk = Some(SmallDisk::mount(&home.join(dir), size));
        });
        let o = d.aegis(&["image", "pull", &reference]);
        assert_eq!(code(&o), 125, "{dir}: {}", stdout(&o));
        assert!(
            stderr(&o).contains("space") || stderr(&o).contains("No space"),
            "{dir}: {}",
            stderr(&o)
        );
        assert!(!image_refs(&d).contains(&reference), "{dir}");
        assert!(
            files_under(&d.home.path().join("images/tmp")).is_empty(),
            "{dir}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(d.home.path().join("layers"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(leftovers.is_empty(), "{dir}: {leftovers:?}");
        // The daemon stops, then the small disk goes, then the home: a mount point left in
        // the home would keep its directory from being removed.
        d.stop();
        drop(disk);
        drop(d);
    }
}
