//! The floor under `aegis exec`: boots one microVM (QEMU, the busybox image) and times N
//! round trips of a raw session `Spawn` of `true`, from the Spawn frame to its `Exited`,
//! with no aegisd, API or CLI in between. `bench/exec` runs it beside `aegis exec` in the
//! same run. Prints one JSON line: `{"n": N, "boot_s": ..., "samples_ms": [...]}`.
//!
//!   cargo run --release -p aegis-vmm --example spawn_rtt -- [N]      (default 20)
//!
//! Needs the guest artefacts the QEMU boot test needs (`tests/common/mod.rs`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use aegis_proto::ExitStatus;
use aegis_vmm::{select, BackendChoice, BackendOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 20,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: spawn_rtt [N]   (N: a positive number of round trips)");
            std::process::exit(2);
        }
    };
    let art = common::artefacts().unwrap_or_else(|missing| {
        eprintln!("guest artefacts missing:\n  {missing}");
        std::process::exit(1);
    });
    let report = aegis_vmm::probe();
    let backend =
        select(BackendChoice::Qemu, &report, &BackendOptions::default()).unwrap_or_else(|e| {
            eprintln!("the qemu backend is not usable here: {e}");
            std::process::exit(1);
        });
    let run = tempfile::Builder::new()
        .prefix("aegis-spawn-rtt-")
        .tempdir()
        .expect("temp dir");
    let spec = common::small_vm(art, "spawn-rtt", run.path());
    let t = Instant::now();
    let vm = backend.boot(&spec).await.expect("boot");
    let mut guest = common::Guest::hello(vm.as_ref(), 1).await;
    let boot_s = t.elapsed().as_secs_f64();
    // One unmeasured round trip: the first exec of `true` pages it in.
    guest.run(&["true"]).await;
    let mut samples_ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (_, err, status) = guest.run(&["true"]).await;
        samples_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, ExitStatus::Code(0), "true failed: {err}");
    }
    let _ = vm.kill().await;
    println!(
        "{}",
        serde_json::json!({"n": n, "boot_s": boot_s, "samples_ms": samples_ms})
    );
}
