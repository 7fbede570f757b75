//! `aegis exec` and task stdin end to end: the real CLI and daemon, on the fake backend for
//! the logic (commands run as host processes, fast) and on QEMU for a real guest (few tests:
//! they run on emulated CPUs).

use std::io::Write;
use std::process::{Output, Stdio};

use aegis_api::{Instance, InstanceState};
use aegis_tests::{code, stderr, stdout, TestDaemon};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// An instance named `name` serving Python's HTTP server (terminated until used).
fn serve(d: &TestDaemon, name: &str) -> Instance {
    let port = free_port().to_string();
    let o = d.aegis(&[
        "run",
        "--detach",
        "--name",
        name,
        "--expose",
        &port,
        "--",
        "python3",
        "-m",
        "http.server",
        &port,
        "--bind",
        "127.0.0.1",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    inspect(d, name)
}

fn inspect(d: &TestDaemon, id: &str) -> Instance {
    let o = d.aegis(&["instance", "inspect", id]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Runs `aegis ARGS` with `input` on its stdin (a pipe, closed after it).
fn with_stdin(d: &TestDaemon, args: &[&str], input: &[u8]) -> Output {
    let mut child = d
        .aegis_cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run aegis");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn exec_streams_exit_codes_and_bad_input_on_the_fake_backend() {
    let d = TestDaemon::start("fake");
    serve(&d, "web");

    let o = d.aegis(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(
        (code(&o), stdout(&o), stderr(&o)),
        (3, "out\n".into(), "err\n".into())
    );
    assert_eq!(inspect(&d, "web").state, InstanceState::Running, "woken");

    let o = d.aegis(&["exec", "-e", "A=1", "web", "--", "sh", "-c", "echo $A"]);
    assert_eq!((code(&o), stdout(&o)), (0, "1\n".into()), "{}", stderr(&o));

    let o = d.aegis(&["exec", "web", "--", "no-such-command-aegis"]);
    assert_eq!(code(&o), 127, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no-such-command-aegis"),
        "{}",
        stderr(&o)
    );

    let o = d.aegis(&["exec", "nope", "--", "true"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("no instance 'nope'"), "{}", stderr(&o));

    let o = with_stdin(&d, &["exec", "web", "--", "cat"], b"piped\0bytes");
    assert_eq!((code(&o), o.stdout.as_slice()), (0, &b"piped\0bytes"[..]));

    let o = d.aegis(&["instance", "rm", "web"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = d.aegis(&["exec", "web", "--", "true"]);
    assert_eq!(code(&o), 125, "exec into a removed instance");
}

#[test]
fn detached_exec_is_followed_by_its_logs() {
    let d = TestDaemon::start("fake");
    serve(&d, "web");
    let o = d.aegis(&[
        "exec",
        "--detach",
        "web",
        "--",
        "sh",
        "-c",
        "echo one; sleep 1; echo two",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert!(id.starts_with("exec-"), "{id}");
    let o = d.aegis(&["exec", "logs", "--follow", &id]);
    assert_eq!(
        (code(&o), stdout(&o)),
        (0, "one\ntwo\n".into()),
        "{}",
        stderr(&o)
    );
    let o = d.aegis(&["exec", "logs", &id]);
    assert_eq!(stdout(&o), "one\ntwo\n");
    let o = d.aegis(&["exec", "logs", "exec-000000000000"]);
    assert_eq!(code(&o), 125);
}

#[test]
fn run_forwards_piped_stdin_on_the_fake_backend() {
    let d = TestDaemon::start("fake");
    let o = with_stdin(&d, &["run", "--", "cat"], b"x");
    assert_eq!((code(&o), stdout(&o)), (0, "x".into()), "{}", stderr(&o));
    // Without stdin (a null device here) the command reads EOF at once.
    let o = d.aegis(&["run", "--", "cat"]);
    assert_eq!((code(&o), stdout(&o)), (0, String::new()), "{}", stderr(&o));
}

#[test]
fn exec_in_a_real_vm_running_and_paused() {
    let d = TestDaemon::start("qemu");
    serve(&d, "web");
    let o = d.aegis(&["exec", "-w", "/tmp", "web", "--", "sh", "-c", "pwd; exit 7"]);
    assert_eq!(
        (code(&o), stdout(&o)),
        (7, "/tmp\n".into()),
        "{}\n{}",
        stderr(&o),
        d.log()
    );

    let o = d.aegis(&["pause", "web"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = with_stdin(
        &d,
        &["exec", "web", "--", "sh", "-c", "cat; exit 0"],
        b"in the guest",
    );
    assert_eq!(
        (code(&o), stdout(&o)),
        (0, "in the guest".into()),
        "{}\n{}",
        stderr(&o),
        d.log()
    );
    let i = inspect(&d, "web");
    assert_eq!(i.state, InstanceState::Running);
    assert_eq!(i.stats.resumes, 1, "resumed from pause, not booted again");

    let o = d.aegis(&["exec", "web", "--", "no-such-command-aegis"]);
    assert_eq!(code(&o), 127, "{}", stderr(&o));
}

#[test]
fn run_forwards_piped_stdin_in_a_real_vm() {
    let d = TestDaemon::start("qemu");
    let o = with_stdin(&d, &["run", "--", "cat"], b"x");
    assert_eq!(
        (code(&o), stdout(&o)),
        (0, "x".into()),
        "{}\n{}",
        stderr(&o),
        d.log()
    );
}
