//! Task mode end to end: the real CLI, a real daemon, real microVMs under QEMU.

use aegis_tests::{code, sha256, stderr, stdout, TestDaemon};

#[test]
fn hello_from_a_microvm_on_the_projects_kernel() {
    let d = TestDaemon::start("qemu");
    let o = d.aegis(&[
        "run",
        "--image",
        "busybox",
        "--",
        "echo",
        "hello from aegis",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello from aegis\n");

    let o = d.aegis(&["run", "--image", "busybox", "--", "uname", "-r"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let guest = stdout(&o).trim().to_string();
    let host = std::process::Command::new("uname")
        .arg("-r")
        .output()
        .unwrap();
    let host = String::from_utf8_lossy(&host.stdout).trim().to_string();
    assert!(
        guest.starts_with("6.1."),
        "guest kernel {guest} is not the project's 6.1 kernel"
    );
    assert_ne!(guest, host, "the task ran on the host kernel");
    d.assert_no_leftovers();
}

#[test]
fn streams_stay_apart_and_the_exit_code_is_the_tasks() {
    let d = TestDaemon::start("qemu");
    let o = d.aegis(&[
        "run",
        "--image",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(code(&o), 3);
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");
    d.assert_no_leftovers();
}

#[test]
fn python_runs_on_the_debian_base_image() {
    let d = TestDaemon::start("qemu");
    // Debian is the default image.
    let o = d.aegis(&["run", "--", "python3", "-c", "print(6*7)"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "42\n");
    d.assert_no_leftovers();
}

#[test]
fn ten_megabytes_of_output_arrive_byte_exact() {
    let d = TestDaemon::start("qemu");
    let script = "head -c 10000000 /dev/urandom > /tmp/d && sha256sum /tmp/d >&2 && cat /tmp/d";
    let o = d.aegis(&[
        "run", "--image", "busybox", "--memory", "256", "--", "sh", "-c", script,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(o.stdout.len(), 10_000_000);
    let guest_hash = stderr(&o)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        sha256(&o.stdout),
        guest_hash,
        "stdout differs from what the guest wrote"
    );
    d.assert_no_leftovers();
}

#[test]
fn env_workdir_and_artifacts() {
    let d = TestDaemon::start("qemu");
    let o = d.aegis(&[
        "run",
        "--image",
        "busybox",
        "--env",
        "GREETING=hi there",
        "--workdir",
        "/tmp",
        "--artifact",
        "/out",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING\"; pwd; mkdir -p /out/sub && echo 42 > /out/sub/result.txt",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "hi there\n/tmp\n");
    let err = stderr(&o);
    let dir = err
        .lines()
        .find_map(|l| l.strip_prefix("aegis: artifacts copied to "))
        .unwrap_or_else(|| panic!("no artifacts line in: {err}"));
    let found = walk(std::path::Path::new(dir.trim()));
    let result = found
        .iter()
        .find(|p| p.ends_with("sub/result.txt"))
        .unwrap_or_else(|| panic!("result.txt not among {found:?}"));
    assert_eq!(std::fs::read_to_string(result).unwrap(), "42\n");
    d.assert_no_leftovers();
}

#[test]
fn artifacts_lose_setuid_bits_and_a_device_node_fails_the_task() {
    use std::os::unix::fs::PermissionsExt;
    let d = TestDaemon::start("qemu");
    let o = d.aegis(&[
        "run",
        "--image",
        "busybox",
        "--artifact",
        "/out",
        "--",
        "sh",
        "-c",
        "mkdir /out && cp /bin/busybox /out/su && chmod 4755 /out/su",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    let dir = err
        .lines()
        .find_map(|l| l.strip_prefix("aegis: artifacts copied to "))
        .unwrap_or_else(|| panic!("no artifacts line in: {err}"));
    let su = std::path::Path::new(dir.trim()).join("out/su");
    let mode = std::fs::metadata(&su).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "{} arrived with mode {mode:o}", su.display());

    let o = d.aegis(&[
        "run",
        "--image",
        "busybox",
        "--artifact",
        "/out",
        "--",
        "sh",
        "-c",
        "mkdir /out && echo a > /out/a && mknod /out/null c 1 3",
    ]);
    // The harness archives the device node as one; the host refuses it (as it would a
    // hostile guest's: crates/daemon/tests/artifacts_hostile.rs): the task fails naming it
    // and keeps nothing.
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("'out/null' is a device node"),
        "{}",
        stderr(&o)
    );
    let o = d.aegis(&["task", "ls", "--json"]);
    let tasks: Vec<aegis_api::Task> = serde_json::from_slice(&o.stdout).unwrap();
    let failed = tasks
        .iter()
        .find(|t| t.state == aegis_api::TaskState::Failed)
        .expect("the failed task is listed");
    assert_eq!(failed.artifacts_dir, None);
    d.assert_no_leftovers();
}

#[test]
fn task_records_are_listed_and_inspectable() {
    let d = TestDaemon::start("qemu");
    let o = d.aegis(&["run", "--image", "busybox", "--", "true"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = d.aegis(&["task", "ls", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let tasks: Vec<aegis_api::Task> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    assert_eq!(t.state, aegis_api::TaskState::Exited);
    assert_eq!(t.exit_code, Some(0));
    assert!(t
        .guest_kernel
        .as_deref()
        .unwrap_or_default()
        .starts_with("6.1."));
    let o = d.aegis(&["task", "inspect", &t.id]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let again: aegis_api::Task = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(&again, t);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
