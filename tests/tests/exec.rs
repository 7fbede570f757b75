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

/// Drives `aegis ARGS` on a real pseudo-terminal (python3's `pty` and `termios`): the
/// terminal starts at 33x101, is resized to 40x120 once `first` appeared on it, then `keys`
/// are typed (`KILL`: aegis is killed instead). Prints the screen, then `exit=N
/// restored=True|False` (whether aegis left the terminal's modes as it found them); `exit=timeout`
/// if aegis had not ended 30 s after the screen went quiet.
const PTY_DRIVER: &str = r#"
import fcntl, os, select, struct, subprocess, sys, termios, time
aegis, first, keys, args = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode(), sys.argv[4:]
master, slave = os.openpty()
fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
before = termios.tcgetattr(slave)
def ctty():
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
p = subprocess.Popen([aegis, *args], stdin=slave, stdout=slave, stderr=slave, preexec_fn=ctty)
screen, typed, deadline = b"", False, time.time() + 120
while time.time() < deadline:
    r, _, _ = select.select([master], [], [], 0.1)
    if r:
        try:
            screen += os.read(master, 65536)
        except OSError:
            break
    if not typed and first in screen:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        time.sleep(0.5)
        if keys == b"KILL":
            p.kill()
        else:
            os.write(master, keys)
        typed = True
    if p.poll() is not None and not r:
        break
try:
    code = p.wait(timeout=30)
except subprocess.TimeoutExpired:
    p.kill()
    code = "timeout"
sys.stdout.write(screen.decode(errors="replace"))
print(f"\nexit={code} restored={termios.tcgetattr(slave) == before}")
"#;

fn on_a_terminal(d: &TestDaemon, first: &str, keys: &str, args: &[&str]) -> String {
    let aegis = aegis_tests::bin("aegis");
    let o = std::process::Command::new("python3")
        .args(["-c", PTY_DRIVER, aegis.to_str().unwrap(), first, keys])
        .args(args)
        .env("AEGIS_HOME", d.home.path())
        .env("TERM", "vt220")
        .output()
        .expect("run python3 (the Debian package python3)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    stdout(&o)
}

#[test]
fn exec_tty_on_a_real_terminal_on_the_fake_backend() {
    let d = TestDaemon::start("fake");
    serve(&d, "web");
    // The guest terminal has our size, follows a resize, echoes what is typed.
    // It is told what terminal it is on: our TERM (vt220 here), as over ssh.
    let script = "stty size; echo term:$TERM; read x; echo got:$x; stty size";
    let shown = on_a_terminal(
        &d,
        "33 101",
        "hello\r",
        &["exec", "-t", "web", "--", "sh", "-c", script],
    );
    assert!(shown.contains("33 101\r\n"), "{shown}");
    assert!(shown.contains("term:vt220\r\n"), "{shown}");
    assert!(shown.contains("got:hello\r\n40 120\r\n"), "{shown}");
    assert!(shown.contains("exit=0 restored=True"), "{shown}");

    // Ctrl-C reaches the guest process (exit 130), and the terminal is restored.
    let shown = on_a_terminal(
        &d,
        "ready",
        "\x03",
        &[
            "exec",
            "-t",
            "web",
            "--",
            "sh",
            "-c",
            "echo ready; exec sleep 30",
        ],
    );
    assert!(shown.contains("exit=130 restored=True"), "{shown}");

    // Without a terminal, -t is refused.
    let o = d.aegis(&["exec", "-t", "web", "--", "true"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("-t needs a terminal"), "{}", stderr(&o));
}

#[test]
fn a_killed_tty_client_hangs_up_the_guest_process_on_the_fake_backend() {
    let d = TestDaemon::start("fake");
    serve(&d, "web");
    let marker = d.home.path().join("hup");
    let script = format!(
        "trap 'echo HUP > {}; exit 5' HUP; echo ready; while :; do sleep 0.1; done",
        marker.display()
    );
    let shown = on_a_terminal(
        &d,
        "ready",
        "KILL",
        &["exec", "-t", "web", "--", "sh", "-c", &script],
    );
    assert!(shown.contains("exit=-9"), "{shown}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the guest process never got SIGHUP"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
