//! Schemathesis against a live daemon: the real `aegisd --backend fake` in a temp home, its
//! unix socket bridged to a loopback TCP port (schemathesis speaks TCP only), the committed
//! `api/openapi.json` as the contract.
//!
//! Two runs, both bounded (examples per operation, per-request timeout, a deadline on the
//! whole process):
//!
//! - read-only: every `GET` route, positive and negative data. The daemon is empty, so every
//!   id is unknown (404) and no feed or watch can start streaming.
//! - validation: every `POST`/`PUT`/`DELETE` route except `/v1/shutdown` and the tar upload
//!   `PUT .../files/archive` (schemathesis cannot generate tar), negative data only
//!   (bodies, path and query parameters that violate the document), so nothing real is
//!   created: a valid `CreateTask` would run a host process on the fake backend.
//!
//! Checks: no 5xx, every status and content type is one the document lists for the route,
//! every body matches the schema documented for that status (errors: `ApiError`), and in the
//! validation run invalid data is never accepted (2xx). Afterwards the daemon must still
//! answer and hold nothing (no task, instance, workspace, app or image was created). The
//! daemon gets an empty cache of its own, not the shared one, so no fuzzed request can touch
//! an image other tests use.
//!
//! A missing schemathesis fails the test rather than skipping it. `scripts/deps.sh` installs
//! it into the venv at [`VENV_PYTHON`]; `AEGIS_PYTHON` names another interpreter that has
//! it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_testkit::python::{test_tools_python, VENV_PYTHON};
use aegis_tests::TestDaemon;

/// Deadline on one schemathesis process; beyond it the run is killed and the test fails
/// (a hang in the daemon must not hang the suite).
const RUN_DEADLINE: Duration = Duration::from_secs(150);

/// Bridges `127.0.0.1:<port>` to a unix socket, one pair of copying threads per connection.
/// Stops accepting on drop.
struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(socket: PathBuf) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback relay");
        let port = listener.local_addr().expect("relay address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let acceptor = std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(tcp) = tcp else { continue };
                let Ok(unix) = UnixStream::connect(&socket) else {
                    // The daemon is gone: the client sees a reset, schemathesis reports it.
                    continue;
                };
                std::thread::spawn(move || pump_both(tcp, unix));
            }
        });
        Relay {
            port,
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor blocked in accept().
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn pump_both(tcp: TcpStream, unix: UnixStream) {
    let (Ok(tcp2), Ok(unix2)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        pump(
            tcp2,
            unix2,
            |t| t.shutdown(Shutdown::Read),
            |u| u.shutdown(Shutdown::Write),
        )
    });
    pump(
        unix,
        tcp,
        |u| u.shutdown(Shutdown::Read),
        |t| t.shutdown(Shutdown::Write),
    );
    let _ = up.join();
}

/// Copies `from` to `to` until EOF or an error, then half-closes both directions it used.
fn pump<R: Read, W: Write>(
    mut from: R,
    mut to: W,
    close_from: impl FnOnce(&R) -> std::io::Result<()>,
    close_to: impl FnOnce(&W) -> std::io::Result<()>,
) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = close_from(&from);
    let _ = close_to(&to);
}

/// Runs `schemathesis run` with `args` against `base`, under [`RUN_DEADLINE`]; returns
/// whether it passed and its output.
fn schemathesis(python: &str, base: &str, workdir: &Path, args: &[&str]) -> (bool, String) {
    let document = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/openapi.json");
    let out_path = workdir.join(format!("out-{}.txt", args.join("_").len()));
    let out = std::fs::File::create(&out_path).expect("output file");
    let mut child = Command::new(python)
        .args(["-m", "schemathesis.cli", "run", document, "--url", base])
        .args([
            // Bounded: a few examples per operation, no stateful phase (it chains real
            // creations), a timeout per request, one fixed seed so a failure reproduces.
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--request-timeout",
            "10",
            "--seed",
            "20261203",
            // One worker: hypothesis's lambda descriptions call `ast.parse`, which is not
            // thread-safe on Python 3.11 ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--no-color",
            "--suppress-health-check",
            "all",
        ])
        .args(args)
        .current_dir(workdir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("output file"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("run {python} -m schemathesis.cli: {e}"));
    let deadline = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for schemathesis") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        Some(s) => (s.success(), output),
        None => (
            false,
            format!(
                "schemathesis did not finish within {RUN_DEADLINE:?} (a hanging request?)\n{output}"
            ),
        ),
    }
}

/// The SUMMARY section of a schemathesis run's output (shown with `--nocapture`).
fn summary(out: &str) -> &str {
    out.find("SUMMARY").map_or(out, |i| &out[i..])
}

#[test]
fn schemathesis_finds_no_5xx_and_no_undocumented_response() {
    let python = test_tools_python();
    let probe = Command::new(&python)
        .args(["-c", "import schemathesis"])
        .output();
    let installed = probe.as_ref().is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "schemathesis is not installed for {python}: run scripts/deps.sh (it installs it into \
         {VENV_PYTHON}), or `pip install schemathesis` and set AEGIS_PYTHON to that \
         interpreter ({probe:?})"
    );

    // A cache of its own, not the shared one: the fuzzed DELETE /v1/images/{reference} must
    // never reach an image other tests use.
    let daemon = TestDaemon::start_prepared("fake", |home| {
        let cache = home.join("cache");
        std::fs::remove_file(&cache).expect("unlink the shared cache");
        std::fs::create_dir(&cache).expect("private cache");
    });
    let relay = Relay::start(daemon.socket());
    let base = format!("http://127.0.0.1:{}", relay.port);
    let workdir = tempfile::Builder::new()
        .prefix("aegis-schemathesis-")
        .tempdir()
        .expect("work dir");
    let checks = "not_a_server_error,status_code_conformance,content_type_conformance,\
                  response_schema_conformance";

    let (ok, out) = schemathesis(
        &python,
        &base,
        workdir.path(),
        &[
            "--include-method",
            "GET",
            "--mode",
            "all",
            "--checks",
            checks,
        ],
    );
    assert!(ok, "schemathesis, read-only routes:\n{out}");
    eprintln!("schemathesis, read-only routes:\n{}", summary(&out));

    let (ok, out) = schemathesis(
        &python,
        &base,
        workdir.path(),
        &[
            "--exclude-method",
            "GET",
            "--exclude-path",
            "/v1/shutdown",
            // A tar body schemathesis cannot generate ("Serialization not possible").
            "--exclude-operation-id",
            "write_archive",
            "--mode",
            "negative",
            "--checks",
            &format!("{checks},negative_data_rejection"),
        ],
    );
    assert!(ok, "schemathesis, validation of mutating routes:\n{out}");
    eprintln!(
        "schemathesis, validation of mutating routes:\n{}",
        summary(&out)
    );

    // Still up, and invalid data created nothing.
    let client = daemon.client();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        client.status().await.expect("the daemon still answers");
        assert!(client.list_tasks().await.expect("tasks").is_empty());
        assert!(client.list_instances().await.expect("instances").is_empty());
        assert!(client
            .list_workspaces()
            .await
            .expect("workspaces")
            .is_empty());
        assert!(client.list_apps().await.expect("apps").is_empty());
        assert!(client.list_images().await.expect("images").is_empty());
    });
    drop(relay);
}
