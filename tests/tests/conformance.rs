//! Conformance: one suite, run against every VMM backend that can boot on this host. A backend
//! that cannot boot here is skipped with the reason printed, never passed silently.

use aegis_tests::{code, stderr, stdout, TestDaemon};
use aegis_vmm::select::BackendChoice;

const BACKENDS: &[(&str, BackendChoice)] = &[
    ("qemu", BackendChoice::Qemu),
    ("firecracker", BackendChoice::Firecracker),
    ("libkrun", BackendChoice::Libkrun),
];

/// The backends that can boot here; prints why the others are skipped.
fn bootable() -> Vec<&'static str> {
    let report = aegis_vmm::host::probe();
    let mut out = vec![];
    for (name, choice) in BACKENDS {
        match aegis_vmm::select::select(*choice, &report, &Default::default()) {
            Ok(_) => out.push(*name),
            Err(e) => eprintln!("SKIP conformance on {name}: {e}"),
        }
    }
    assert!(
        !out.is_empty(),
        "no backend can boot on this host: conformance cannot run"
    );
    out
}

fn each_backend(check: impl Fn(&TestDaemon)) {
    for backend in bootable() {
        eprintln!("conformance on {backend}");
        let d = TestDaemon::start(backend);
        check(&d);
        d.assert_no_leftovers();
    }
}

#[test]
fn conformance_task_output_and_exit_code() {
    each_backend(|d| {
        let o = d.aegis(&[
            "run",
            "--image",
            "busybox",
            "--",
            "sh",
            "-c",
            "echo a; echo b >&2; exit 7",
        ]);
        assert_eq!(
            (code(&o), stdout(&o).as_str(), stderr(&o).as_str()),
            (7, "a\n", "b\n")
        );
    });
}

#[test]
fn conformance_status_reports_backend_and_capabilities() {
    each_backend(|d| {
        let o = d.aegis(&["status", "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let s: aegis_api::Status = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(s.backend, d.backend);
        assert!(!s.capabilities.accelerator.is_empty());
    });
}

#[test]
fn conformance_timeout_kills_the_vm() {
    each_backend(|d| {
        let o = d.aegis(&[
            "run",
            "--image",
            "busybox",
            "--timeout",
            "1",
            "--",
            "sleep",
            "600",
        ]);
        assert_eq!(code(&o), 124, "{}", stderr(&o));
    });
}

#[test]
fn conformance_serve_wakes_from_pause_and_from_terminated() {
    use std::io::{Read, Write};
    let get = |port: u16| -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
            .unwrap();
        write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    };
    each_backend(|d| {
        let o = d.aegis(&[
            "run",
            "--detach",
            "--name",
            "conf",
            "--expose",
            "8000:http",
            "--",
            "python3",
            "-m",
            "http.server",
            "8000",
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let inspect = || -> aegis_api::Instance {
            serde_json::from_slice(&d.aegis(&["instance", "inspect", "conf"]).stdout).unwrap()
        };
        let port = inspect().endpoints[0].host_port;
        assert!(get(port).contains(" 200 "));
        // Pause keeps RAM; the next request resumes.
        assert_eq!(code(&d.aegis(&["pause", "conf"])), 0);
        assert_eq!(inspect().state, aegis_api::InstanceState::Paused);
        assert!(get(port).contains(" 200 "));
        // Terminate; the next request restores a snapshot (if the backend can) or cold-boots.
        assert_eq!(code(&d.aegis(&["stop", "conf"])), 0);
        assert_eq!(inspect().state, aegis_api::InstanceState::Terminated);
        assert!(get(port).contains(" 200 "));
        let i = inspect();
        let caps: aegis_api::Status =
            serde_json::from_slice(&d.aegis(&["status", "--json"]).stdout).unwrap();
        if caps.capabilities.memory_snapshot {
            assert_eq!(i.stats.snapshot_restores, 1, "{:?}", i.stats);
        } else {
            assert_eq!(i.stats.cold_boots, 2, "{:?}", i.stats);
        }
        assert_eq!(code(&d.aegis(&["instance", "rm", "conf"])), 0);
    });
}

#[test]
fn conformance_oci_layers_and_workspaces() {
    let registry = aegis_testkit::registry::LocalRegistry::start();
    let reference = registry.push(
        &aegis_testkit::registry::test_image(),
        "conformance/app",
        "v1",
    );
    each_backend(|d| {
        let o = d.aegis(&["image", "pull", &reference]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        // Three disk layers stacked, the top one's whiteout honoured, the image's Env set.
        let o = d.aegis(&[
            "run",
            "--image",
            &reference,
            "--",
            "sh",
            "-c",
            "test -e /etc/removed.txt || echo whiteout; cat /etc/added.txt; echo $GREETING",
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(stdout(&o), "whiteout\nadded by layer 3\nhello-from-image\n");

        let o = d.aegis(&["status", "--json"]);
        let s: aegis_api::Status = serde_json::from_slice(&o.stdout).unwrap();
        if !s.capabilities.virtio_fs {
            eprintln!(
                "SKIP workspace conformance on {}: the backend cannot share host directories",
                d.backend
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.txt"), "from the host\n").unwrap();
        let ws = dir.path().display().to_string();
        let o = d.aegis(&[
            "run",
            "--image",
            "busybox",
            "--workspace",
            &ws,
            "--",
            "sh",
            "-c",
            "cat /workspace/in.txt; echo from the guest > /workspace/out.txt",
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(stdout(&o), "from the host\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
            "from the guest\n"
        );
    });
}
