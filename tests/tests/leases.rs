//! An activity lease on a real VM: `aegis instance lease` wakes a terminated instance, keeps
//! it from pausing well past its `pause_after` while its command runs, and releasing it lets
//! the instance pause. The timers themselves are covered in seconds by
//! crates/daemon/tests/leases_fake.rs; this checks the whole path through QEMU.

use std::time::{Duration, Instant};

use aegis_api::{Instance, InstanceState};
use aegis_tests::{code, stderr, stdout, TestDaemon};

fn inspect(d: &TestDaemon, id: &str) -> (Instance, serde_json::Value) {
    let o = d.aegis(&["instance", "inspect", id]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    (
        serde_json::from_slice(&o.stdout).unwrap(),
        serde_json::from_slice(&o.stdout).unwrap(),
    )
}

#[test]
fn a_lease_wakes_a_vm_keeps_it_awake_past_pause_after_and_its_release_lets_it_pause() {
    let d = TestDaemon::start("qemu");
    let o = d.aegis(&[
        "run",
        "--detach",
        "--name",
        "web",
        "--expose",
        "8000:http",
        "--pause-after",
        "2s",
        "--wake-timeout",
        "10m",
        "--",
        "python3",
        "-m",
        "http.server",
        "8000",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert_eq!(inspect(&d, &id).0.state, InstanceState::Terminated);

    // The command runs once the lease is held (the VM is up); it outlasts pause_after three
    // times, then records the instance as the lease still holds it.
    let seen = d.home.path().join("under-lease.json");
    let script = format!(
        "sleep 6 && '{}' instance inspect {id} > '{}'",
        aegis_tests::bin("aegis").display(),
        seen.display()
    );
    let o = d.aegis(&[
        "instance", "lease", "--ttl", "30s", "--holder", "vm-test", &id, "--", "sh", "-c", &script,
    ]);
    assert_eq!(code(&o), 0, "{}\n{}", stderr(&o), d.log());
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
    let held: Instance = serde_json::from_value(raw.clone()).unwrap();
    assert_eq!(held.state, InstanceState::Running, "{raw}");
    assert_eq!(held.stats.cold_boots, 1, "the lease woke it: {raw}");
    assert_eq!(
        held.stats.pauses, 0,
        "no pause while the lease is held: {raw}"
    );
    assert_eq!(
        raw["awake_because"]["leases"][0]["holder"], "vm-test",
        "{raw}"
    );
    assert_eq!(
        raw["awake_because"]["timers"]["pauses_in_ms"],
        serde_json::Value::Null
    );
    let (_, after) = inspect(&d, &id);
    assert!(
        after["awake_because"]["leases"]
            .as_array()
            .unwrap()
            .is_empty(),
        "released on exit: {after}"
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (i, _) = inspect(&d, &id);
        if i.state == InstanceState::Paused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never paused after the release: {i:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
