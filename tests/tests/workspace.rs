//! Workspaces with real microVMs: host-path workspaces, read-only ones enforced by the host,
//! no device nodes from a guest, persistence across VMs, concurrent writers on a shared
//! workspace, isolation and deletion rules; and nothing left behind (no QEMU, no virtiofsd)
//! after any of it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aegis_tests::{code, stderr, stdout, virtiofsd_processes, wait_task_end, TestDaemon};

const TASK_WITHIN: Duration = Duration::from_secs(300);

fn leftovers(d: &TestDaemon, dirs: &[&std::path::Path]) {
    d.assert_no_leftovers();
    for dir in dirs {
        assert!(
            virtiofsd_processes(dir).is_empty(),
            "virtiofsd still serving {}",
            dir.display()
        );
    }
}

fn workspace_json(d: &TestDaemon, name: &str) -> serde_json::Value {
    let o = d.aegis(&["workspace", "inspect", name, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

/// `run --workspace ./dir`: the command reads a host file and writes one back.
#[test]
fn a_host_directory_is_seen_and_edited_in_place() {
    let d = TestDaemon::start("qemu");
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("project");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("input.txt"), "from the host\n").unwrap();
    let o = d
        .aegis_cmd(&[
            "run",
            "--image",
            "busybox",
            "--workspace",
            "./project",
            "--",
            "sh",
            "-c",
            "cat /workspace/input.txt && echo from the guest > /workspace/output.txt",
        ])
        .current_dir(parent.path())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "from the host\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("output.txt")).unwrap(),
        "from the guest\n"
    );
    // Not a registered workspace.
    let o = d.aegis(&["workspace", "ls", "--json"]);
    assert_eq!(stdout(&o).trim(), "[]");
    // Clear errors for what cannot be shared.
    let o = d.aegis(&["run", "--workspace", "./no-such-dir", "--", "true"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("no-such-dir"), "{}", stderr(&o));
    leftovers(&d, &[&dir]);
}

/// `run --workspace ./dir:ro`: the guest reads the directory, and every change it tries
/// fails, even after it remounts its `/workspace` read-write (so it is the host that
/// refuses); the host's files are unchanged. A read-write run then cannot create a device
/// node there (virtiofsd has no CAP_MKNOD) but can create a FIFO.
#[test]
fn a_read_only_workspace_is_read_only_on_the_host() {
    let d = TestDaemon::start("qemu");
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("src");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("input.txt"), "from the host\n").unwrap();
    let script = "cat /workspace/input.txt; \
        try() { if \"$@\" 2>/dev/null; then echo \"$1: changed\"; else echo \"$1: refused\"; fi; }; \
        try touch /workspace/new; \
        mount -o remount,rw /workspace && echo remounted; \
        try sh -c 'echo evil > /workspace/input.txt'; \
        try rm /workspace/input.txt; \
        try mkdir /workspace/dir; \
        try chmod 777 /workspace/input.txt; \
        cat /workspace/input.txt";
    let o = d
        .aegis_cmd(&[
            "run",
            "--image",
            "busybox",
            "--workspace",
            "./src:ro",
            "--",
            "sh",
            "-c",
            script,
        ])
        .current_dir(parent.path())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(
        out,
        "from the host\n\
         touch: refused\n\
         remounted\n\
         sh: refused\n\
         rm: refused\n\
         mkdir: refused\n\
         chmod: refused\n\
         from the host\n",
        "{}",
        stderr(&o)
    );
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["input.txt"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("input.txt")).unwrap(),
        "from the host\n"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("input.txt"))
            .unwrap()
            .permissions(),
    );
    assert_ne!(mode & 0o777, 0o777);

    // Read-write: a device node (the host's first disk) is refused, a FIFO is fine.
    let o = d
        .aegis_cmd(&[
            "run",
            "--image",
            "busybox",
            "--workspace",
            "./src",
            "--",
            "sh",
            "-c",
            "if mknod /workspace/disk b 8 0 2>/dev/null; then echo node; else echo no node; fi; \
             mkfifo /workspace/fifo && echo fifo",
        ])
        .current_dir(parent.path())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "no node\nfifo\n");
    assert!(!dir.join("disk").exists());
    assert!(std::fs::symlink_metadata(dir.join("fifo")).is_ok());
    leftovers(&d, &[&dir]);
}

/// Task 1 writes into a named workspace (created on first use), task 2, a new VM, reads it.
#[test]
fn a_named_workspace_outlives_its_vms() {
    let d = TestDaemon::start("qemu");
    let o = d.aegis(&[
        "run",
        "--image",
        "busybox",
        "--workspace",
        "notes",
        "--",
        "sh",
        "-c",
        "mkdir -p /workspace/sub && echo persisted > /workspace/sub/x",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ws = workspace_json(&d, "notes");
    assert_eq!(ws["mode"], "isolated");
    assert_eq!(ws["used_by"], serde_json::json!([]));
    assert_eq!(ws["size_bytes"], 10);
    let path = std::path::PathBuf::from(ws["path"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(path.join("sub/x")).unwrap(),
        "persisted\n"
    );
    let o = d.aegis(&[
        "run",
        "--image",
        "busybox",
        "--workspace",
        "notes",
        "--",
        "cat",
        "/workspace/sub/x",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "persisted\n");
    leftovers(&d, &[&path]);
    let o = d.aegis(&["workspace", "rm", "notes"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!path.exists());
}

/// Two VMs append 200 lines each to one file of a shared workspace at the same time: the
/// file ends with all 400 lines, none torn or lost.
#[test]
fn concurrent_appends_to_a_shared_workspace_lose_nothing() {
    let d = TestDaemon::start("qemu");
    let o = d.aegis(&["workspace", "create", "team", "--shared"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let padding = "x".repeat(60);
    // Each waits for the other to be up, so the appends really overlap.
    let script = |me: &str, other: &str| {
        format!(
            "touch /workspace/ready-{me}; \
             while [ ! -e /workspace/ready-{other} ]; do sleep 1; done; \
             i=1; while [ $i -le 200 ]; do \
               printf 'vm{me} %04d {padding}\\n' $i >> /workspace/log; i=$((i+1)); \
             done"
        )
    };
    let started = Instant::now();
    let mut ids = vec![];
    for (me, other) in [("A", "B"), ("B", "A")] {
        let o = d.aegis(&[
            "run",
            "-d",
            "--image",
            "busybox",
            "--workspace",
            "team",
            "--",
            "sh",
            "-c",
            &script(me, other),
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        ids.push(stdout(&o).trim().to_string());
    }
    let ws = workspace_json(&d, "team");
    assert_eq!(ws["mode"], "shared");
    for id in &ids {
        let t = wait_task_end(&d, id, TASK_WITHIN);
        assert_eq!(t.exit_code, Some(0), "{t:?}");
        assert_eq!(t.workspace.as_deref(), Some("team"));
    }
    eprintln!(
        "two VMs appended 400 lines in {:.1} s (boot included)",
        started.elapsed().as_secs_f64()
    );
    let path = std::path::PathBuf::from(ws["path"].as_str().unwrap());
    let log = std::fs::read_to_string(path.join("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 400, "{log}");
    let mut seen: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for line in &lines {
        let parts: Vec<&str> = line.split(' ').collect();
        assert!(
            parts.len() == 3
                && (parts[0] == "vmA" || parts[0] == "vmB")
                && parts[1].len() == 4
                && parts[2] == padding,
            "torn line {line:?}"
        );
        seen.entry(parts[0])
            .or_default()
            .push(parts[1].parse().unwrap());
    }
    for vm in ["vmA", "vmB"] {
        // Each VM's own lines are complete and in its order.
        assert_eq!(seen[vm], (1..=200).collect::<Vec<u32>>(), "{vm}");
    }
    leftovers(&d, &[&path]);
}

/// An isolated workspace held by a running task: a second task and `workspace rm` are
/// refused with 409s that say why; once the task ended, rm works.
#[test]
fn an_isolated_workspace_in_use_is_refused() {
    let d = TestDaemon::start("qemu");
    let o = d.aegis(&["workspace", "create", "solo"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = d.aegis(&[
        "run",
        "-d",
        "--image",
        "busybox",
        "--workspace",
        "solo",
        "--",
        "sleep",
        "600",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let holder = stdout(&o).trim().to_string();

    let o = d.aegis(&[
        "run",
        "--image",
        "busybox",
        "--workspace",
        "solo",
        "--",
        "true",
    ]);
    assert_eq!(code(&o), 125);
    let e = stderr(&o);
    assert!(
        e.contains("solo") && e.contains(&holder) && e.contains("shared"),
        "{e}"
    );
    assert_eq!(
        workspace_json(&d, "solo")["used_by"],
        serde_json::json!([holder])
    );

    let o = d.aegis(&["workspace", "rm", "solo"]);
    assert_eq!(code(&o), 125);
    let e = stderr(&o);
    assert!(e.contains("in use") && e.contains(&holder), "{e}");
    // The API says 409.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(d.client().delete_workspace("solo"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("in use"), "{err}");

    let o = d.aegis(&["task", "cancel", &holder]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    wait_task_end(&d, &holder, TASK_WITHIN);
    let o = d.aegis(&["workspace", "rm", "solo"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = d.aegis(&["workspace", "inspect", "solo"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("no workspace 'solo'"), "{}", stderr(&o));
    leftovers(&d, &[]);
}
