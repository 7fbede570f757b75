//! A guest that breaks the protocol (ignores credit and opens 100,000 streams) is cut off:
//! aegisd kills its VM at once, its task fails or its instance records why, the VM next to
//! it is not disturbed, and aegisd's memory stays bounded. The fake backend plays the hostile
//! guest (`FakeBackend::flood_streams`); the session limits themselves are tested in
//! `crates/proto/tests/hostile_peer.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_api::{CreateInstance, CreateTask, InstanceState, PortProtocol, PortSpec, TaskState};
use aegis_testkit::daemon::{fixture, Fixture};
use aegis_testkit::net::{free_port, http_get_status as get};
use aegis_vmm::fake::{FLOOD_BYTES_PER_STREAM, FLOOD_STREAMS};
use aegisd::Daemon;

/// What the whole test process (daemon included) may grow by while a guest floods it with
/// 400 MB on 100,000 streams: the session holds at most 128 unclaimed streams × 4 KiB.
const RSS_BOUND: u64 = 64 << 20;

/// The reason a cut-off guest's task or instance reports.
const BREACH: &str = "the guest broke the protocol";

/// Peak RSS is process-wide: the tests of this file take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Resets the peak (VmHWM) to the current RSS and returns the RSS in bytes.
fn reset_peak_rss() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM via /proc/self/clear_refs");
    status_kib("VmRSS:") * 1024
}

fn peak_rss() -> u64 {
    status_kib("VmHWM:") * 1024
}

fn sh(script: &str) -> CreateTask {
    CreateTask {
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

fn web(name: &str, port: u16) -> CreateInstance {
    CreateInstance {
        name: Some(name.into()),
        command: ["python3", "-m", "http.server", &port.to_string()]
            .into_iter()
            .chain(["--bind", "127.0.0.1"])
            .map(String::from)
            .collect(),
        expose: vec![PortSpec {
            guest_port: port,
            host_port: None,
            protocol: PortProtocol::Http,
        }],
        ..Default::default()
    }
}

/// The VM that `owner` (a task or instance id) runs on, once it is recorded.
async fn vm_of(d: &Daemon, owner: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let vms = d.registry.list_vms().expect("list the VM records");
        if let Some(vm) = vms.into_iter().find(|v| v.owner == owner) {
            return vm.id;
        }
        assert!(Instant::now() < deadline, "no VM recorded for {owner}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the task's first line of output: its command runs.
async fn started(d: &Arc<Daemon>, id: &str) {
    let mut rx = d
        .tasks
        .output(d, id, true, (0, 0))
        .expect("follow the task");
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("the task never printed")
        .expect("the task ended before it printed");
}

async fn ended(d: &Arc<Daemon>, id: &str) -> aegis_api::Task {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = d.tasks.get(d, id).expect("get the task");
        if t.state.is_terminal() {
            return t;
        }
        assert!(Instant::now() < deadline, "task {id} still {:?}", t.state);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_task_guest_is_killed_and_its_neighbour_instance_keeps_serving() {
    let _serial = SERIAL.lock().await;
    let Fixture {
        daemon: d,
        fake,
        home: _home,
    } = fixture().await;
    let port = free_port();
    let inst = d
        .instances
        .create(&d, web("neighbour", port))
        .await
        .unwrap();
    let host_port = inst.endpoints[0].host_port;
    assert_eq!(get(host_port).await, 200);
    let neighbour_vm = vm_of(&d, &inst.id).await;

    let t = d
        .tasks
        .create(&d, sh("echo started; sleep 600"))
        .await
        .unwrap();
    started(&d, &t.id).await;
    let hostile_vm = vm_of(&d, &t.id).await;

    let before = reset_peak_rss();
    assert!(fake.flood_streams(&hostile_vm));
    let end = ended(&d, &t.id).await;
    let growth = peak_rss().saturating_sub(before);

    assert_eq!(end.state, TaskState::Failed);
    let why = end.error.unwrap_or_default();
    assert!(why.contains(BREACH), "task error: {why}");
    assert!(why.contains("streams"), "the violation is named: {why}");
    assert_eq!(
        fake.running(),
        vec![neighbour_vm],
        "only the hostile VM is gone"
    );
    assert_eq!(get(host_port).await, 200, "the neighbour still serves");
    let rt = d.instances.get("neighbour").unwrap();
    assert_eq!(rt.state(), InstanceState::Running);
    assert_eq!(rt.view().last_error, None);
    println!(
        "task guest flood: attempted {FLOOD_STREAMS} streams × {FLOOD_BYTES_PER_STREAM} B, \
         peak RSS growth {growth} B (bound {RSS_BOUND} B)"
    );
    assert!(growth < RSS_BOUND, "peak RSS grew by {growth} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_instance_guest_is_killed_with_the_reason_and_a_neighbour_task_finishes() {
    let _serial = SERIAL.lock().await;
    let Fixture {
        daemon: d,
        fake,
        home: _home,
    } = fixture().await;
    let port = free_port();
    let inst = d.instances.create(&d, web("hostile", port)).await.unwrap();
    let host_port = inst.endpoints[0].host_port;
    assert_eq!(get(host_port).await, 200);
    let hostile_vm = vm_of(&d, &inst.id).await;

    // The neighbour prints, waits for the test's go, and prints again: it runs through the
    // whole flood.
    let neighbour = d
        .tasks
        .create(
            &d,
            sh("echo started; while [ ! -e \"$HOME/go\" ]; do sleep 0.05; done; echo finished"),
        )
        .await
        .unwrap();
    started(&d, &neighbour.id).await;
    let neighbour_vm = vm_of(&d, &neighbour.id).await;

    let before = reset_peak_rss();
    assert!(fake.flood_streams(&hostile_vm));
    let rt = d.instances.get("hostile").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt.state() != InstanceState::Terminated {
        assert!(Instant::now() < deadline, "still {:?}", rt.state());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let growth = peak_rss().saturating_sub(before);
    let why = rt.view().last_error.unwrap_or_default();
    assert!(why.contains(BREACH), "instance last_error: {why}");
    assert!(why.contains("streams"), "the violation is named: {why}");
    assert_eq!(
        fake.running(),
        vec![neighbour_vm.clone()],
        "only the hostile VM is gone"
    );

    let root = d.config.home.run_dir().join(&neighbour_vm).join("root");
    std::fs::write(root.join("go"), b"").unwrap();
    let end = ended(&d, &neighbour.id).await;
    assert_eq!(end.state, TaskState::Exited, "{:?}", end.error);
    assert_eq!(end.exit_code, Some(0));
    println!(
        "instance guest flood: attempted {FLOOD_STREAMS} streams × {FLOOD_BYTES_PER_STREAM} B, \
         peak RSS growth {growth} B (bound {RSS_BOUND} B)"
    );
    assert!(growth < RSS_BOUND, "peak RSS grew by {growth} bytes");

    // The next connection wakes a fresh VM: a hostile guest costs its own VM, nothing more.
    assert_eq!(get(host_port).await, 200);
    assert_eq!(rt.state(), InstanceState::Running);
}
