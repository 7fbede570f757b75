//! Serve mode end to end: real VMs behind the router, real clients (HTTP, TCP, gRPC via
//! python3-grpcio, WebSocket via python3-websockets), wake-on-connect and scale to zero.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use aegis_api::{Instance, InstanceState};
use aegis_tests::{code, stderr, stdout, TestDaemon};

/// Creates an instance with `aegis run --detach` and returns it.
fn serve(d: &TestDaemon, args: &[&str]) -> Instance {
    let mut full = vec!["run", "--detach"];
    full.extend_from_slice(args);
    let o = d.aegis(&full);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    inspect(d, stdout(&o).trim())
}

fn inspect(d: &TestDaemon, id: &str) -> Instance {
    let o = d.aegis(&["instance", "inspect", id]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn wait_state(d: &TestDaemon, id: &str, want: InstanceState, within: Duration) -> Instance {
    let deadline = Instant::now() + within;
    loop {
        let i = inspect(d, id);
        if i.state == want {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "instance never became {want:?}: {i:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A plain HTTP/1.1 GET; returns (status, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {resp:?}")))?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn port(i: &Instance, guest: u16) -> u16 {
    i.endpoints
        .iter()
        .find(|e| e.guest_port == guest)
        .expect("endpoint")
        .host_port
}

#[test]
fn http_wakes_from_cold_paused_and_terminated() {
    let d = TestDaemon::start("qemu");
    let i = serve(
        &d,
        &[
            "--name",
            "web",
            "--expose",
            "8000:http",
            "--pause-after",
            "2s",
            "--terminate-after",
            "3s",
            "--",
            "python3",
            "-m",
            "http.server",
            "8000",
        ],
    );
    assert_eq!(
        i.state,
        InstanceState::Terminated,
        "nothing runs until a connection arrives"
    );
    let p = port(&i, 8000);
    // Cold: the first request boots the VM and is held until the app listens.
    let (status, body) = http_get(p, "/").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("Directory listing"), "{body}");
    // Idle: paused, RAM kept; the next request resumes it.
    wait_state(&d, "web", InstanceState::Paused, Duration::from_secs(30));
    assert_eq!(http_get(p, "/").unwrap().0, 200);
    let i = inspect(&d, "web");
    assert!(i.stats.resumes >= 1, "{:?}", i.stats);
    // Longer idle: terminated; the next request brings it back (snapshot restore or cold boot).
    wait_state(
        &d,
        "web",
        InstanceState::Terminated,
        Duration::from_secs(60),
    );
    assert_eq!(
        d.vmm_processes().len(),
        0,
        "a terminated instance has no VMM process"
    );
    assert_eq!(http_get(p, "/after-the-wake").unwrap().0, 404);
    let i = inspect(&d, "web");
    assert_eq!(
        i.stats.cold_boots + i.stats.snapshot_restores,
        2,
        "{:?}",
        i.stats
    );
    // The app's output after the wake reaches the instance log, also when the VM was
    // restored from a memory snapshot (its app re-attached to the new session).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // http.server logs requests on stderr.
        let logs = stderr(&d.aegis(&["instance", "logs", "web"]));
        if logs.contains("/after-the-wake") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line of the request after the wake ({:?}): {logs}",
            i.stats
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The shared router port routes by Host name.
    let status: aegis_api::Status =
        serde_json::from_slice(&d.aegis(&["status", "--json"]).stdout).unwrap();
    let shared: u16 = status
        .router_addr
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", shared)).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: web.localhost:{shared}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200"),
        "{resp}"
    );
    let o = d.aegis(&["instance", "rm", "web"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    d.assert_no_leftovers();
}

const TCP_ECHO: &str = r#"import socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(('0.0.0.0', 7000), H).serve_forever()
"#;

#[test]
fn tcp_client_connecting_to_a_terminated_instance_gets_its_echo() {
    let d = TestDaemon::start("qemu");
    let i = serve(
        &d,
        &["--expose", "7000:tcp", "--", "python3", "-c", TCP_ECHO],
    );
    assert_eq!(i.state, InstanceState::Terminated);
    let mut s = TcpStream::connect(("127.0.0.1", port(&i, 7000))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(b"hello through a sleeping VM\n").unwrap();
    let mut buf = [0u8; 28];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello through a sleeping VM\n");
}

/// `python3 -m http.server` with a listen backlog of 128 instead of 5: fifty simultaneous
/// connections would otherwise overflow the app's own accept queue, inside the guest.
const BUSY_HTTP: &str = r#"import http.server
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 128
S(('0.0.0.0', 8000), http.server.SimpleHTTPRequestHandler).serve_forever()
"#;

#[test]
fn fifty_concurrent_clients_cause_one_wake() {
    let d = TestDaemon::start("qemu");
    let i = serve(
        &d,
        &["--expose", "8000:http", "--", "python3", "-c", BUSY_HTTP],
    );
    let p = port(&i, 8000);
    let clients: Vec<_> = (0..50)
        .map(|_| std::thread::spawn(move || http_get(p, "/")))
        .collect();
    let statuses: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().unwrap().map(|r| r.0).ok())
        .collect();
    assert!(statuses.iter().all(|s| *s == Some(200)), "{statuses:?}");
    let i = inspect(&d, &i.id);
    assert_eq!(
        i.stats.cold_boots + i.stats.snapshot_restores,
        1,
        "one wake: {:?}",
        i.stats
    );
}

const SLOW_HTTP: &str = r#"import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == '/slow':
            sys.stderr.write('slow request in flight\n')
            sys.stderr.flush()
            time.sleep(30)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'ok')
http.server.ThreadingHTTPServer(('0.0.0.0', 8000), H).serve_forever()
"#;

#[test]
fn a_vm_killed_while_serving_gives_502_then_wakes_fresh() {
    let d = TestDaemon::start("qemu");
    let i = serve(
        &d,
        &["--expose", "8000:http", "--", "python3", "-c", SLOW_HTTP],
    );
    let p = port(&i, 8000);
    assert_eq!(http_get(p, "/").unwrap().0, 200);
    let in_flight = std::thread::spawn(move || http_get(p, "/slow"));
    // The request is in the app's hands (it says so on stderr) before the VM dies.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = stderr(&d.aegis(&["instance", "logs", &i.id]));
        if logs.contains("slow request in flight") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the app never received /slow: {logs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let vmms = d.vmm_processes();
    assert_eq!(vmms.len(), 1, "{vmms:?}");
    // SAFETY: signalling the VMM process this test's daemon started.
    unsafe { libc::kill(vmms[0] as i32, libc::SIGKILL) };
    let (status, _) = in_flight.join().unwrap().unwrap();
    assert_eq!(status, 502, "an in-flight request gets a clean 502");
    wait_state(
        &d,
        &i.id,
        InstanceState::Terminated,
        Duration::from_secs(30),
    );
    assert_eq!(
        http_get(p, "/").unwrap().0,
        200,
        "the next request wakes a fresh VM"
    );
    let i = inspect(&d, &i.id);
    assert!(i
        .last_error
        .unwrap_or_default()
        .contains("stopped unexpectedly"));
}

/// Waits up to `within` for a child `aegis` command; kills it and fails if it is still running.
fn finishes_within(mut child: std::process::Child, within: Duration, what: &str) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`{what}` did not return within {} s", within.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn stop_and_rm_cancel_a_wake_whose_app_never_listens() {
    let d = TestDaemon::start("qemu");
    // The app runs but never listens: without cancellation, a wake waits 600 s for it.
    let i = serve(
        &d,
        &[
            "--expose",
            "8000:http",
            "--wake-timeout",
            "10m",
            "--",
            "sh",
            "-c",
            "echo app-started; exec sleep 100000",
        ],
    );
    for (n, control) in [&["stop"][..], &["instance", "rm"][..]]
        .into_iter()
        .enumerate()
    {
        let waking = d
            .aegis_cmd(&["resume", &i.id])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the VM booted and the app runs: the wake now waits for the port.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let logs = stdout(&d.aegis(&["instance", "logs", &i.id]));
            if logs.matches("app-started").count() > n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the app never started: {logs}\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(d.vmm_processes().len(), 1);
        let mut args = control.to_vec();
        args.push(&i.id);
        let acting = d
            .aegis_cmd(&args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Generous, far below the wake timeout: the point is that it does not wait for it.
        let what = control.join(" ");
        assert_eq!(finishes_within(acting, Duration::from_secs(60), &what), 0);
        assert_ne!(
            finishes_within(waking, Duration::from_secs(60), "resume"),
            0,
            "the cancelled wake is reported as failed"
        );
        d.assert_no_leftovers();
        if control == ["stop"] {
            let after = inspect(&d, &i.id);
            assert_eq!(after.state, InstanceState::Terminated);
            assert!(
                after.last_error.unwrap_or_default().contains("cancelled"),
                "last_error says the wake was cancelled"
            );
        }
    }
    let o = d.aegis(&["instance", "inspect", &i.id]);
    assert_ne!(code(&o), 0, "removed");
}

const GRPC_SERVER: &str = r#"import grpc, concurrent.futures, time
h = grpc.method_handlers_generic_handler('echo.Echo', {'Say': grpc.unary_unary_rpc_method_handler(lambda req, ctx: b'echo:' + req)})
s = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
s.add_generic_rpc_handlers((h,))
s.add_insecure_port('127.0.0.1:50051')
s.start()
s.wait_for_termination()
"#;

const GRPC_CLIENT: &str = r#"import grpc, sys
ch = grpc.insecure_channel('127.0.0.1:' + sys.argv[1])
say = ch.unary_unary('/echo.Echo/Say')
print(say(b'hi', timeout=120).decode())
"#;

#[test]
fn grpc_client_connecting_while_paused_is_answered() {
    let d = TestDaemon::start("qemu");
    let i = serve(
        &d,
        &[
            "--expose",
            "50051:grpc",
            "--pause-after",
            "1s",
            "--",
            "python3",
            "-c",
            GRPC_SERVER,
        ],
    );
    let p = port(&i, 50051).to_string();
    let call = || {
        Command::new("/usr/bin/python3")
            .args(["-c", GRPC_CLIENT, &p])
            .output()
            .unwrap()
    };
    let o = call();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "echo:hi\n");
    wait_state(&d, &i.id, InstanceState::Paused, Duration::from_secs(30));
    let o = call();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "echo:hi\n");
    assert!(inspect(&d, &i.id).stats.resumes >= 1);
}

const WS_SERVER: &str = r#"import asyncio, websockets
async def echo(ws, path=None):
    async for m in ws:
        await ws.send(m)
async def main():
    async with websockets.serve(echo, '127.0.0.1', 8765):
        await asyncio.Future()
asyncio.run(main())
"#;

const WS_CLIENT: &str = r#"import asyncio, sys, websockets
async def main():
    async with websockets.connect('ws://127.0.0.1:' + sys.argv[1], open_timeout=120) as ws:
        await ws.send('ping over a waking VM')
        print(await ws.recv())
asyncio.run(main())
"#;

#[test]
fn websocket_opened_during_wake_echoes() {
    let d = TestDaemon::start("qemu");
    let i = serve(
        &d,
        &[
            "--expose",
            "8765:websocket",
            "--",
            "python3",
            "-c",
            WS_SERVER,
        ],
    );
    assert_eq!(i.state, InstanceState::Terminated);
    let p = port(&i, 8765).to_string();
    let o = Command::new("/usr/bin/python3")
        .args(["-c", WS_CLIENT, &p])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "ping over a waking VM\n");
}

#[test]
fn an_idle_connection_survives_pause_and_its_next_bytes_wake_the_vm() {
    let d = TestDaemon::start("qemu");
    let i = serve(
        &d,
        &[
            "--expose",
            "7000:tcp",
            "--idle-policy",
            "idle",
            "--pause-after",
            "1s",
            "--",
            "python3",
            "-c",
            TCP_ECHO,
        ],
    );
    let mut s = TcpStream::connect(("127.0.0.1", port(&i, 7000))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(b"before pause\n").unwrap();
    let mut buf = [0u8; 13];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"before pause\n");
    // The connection stays open but idle: under the `idle` policy it does not pin the VM.
    wait_state(&d, &i.id, InstanceState::Paused, Duration::from_secs(30));
    // Bytes sent to a paused VM are held, the VM resumes, nothing is lost.
    s.write_all(b"after resume\n").unwrap();
    let mut buf = [0u8; 13];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"after resume\n");
    assert!(inspect(&d, &i.id).stats.resumes >= 1);
}
