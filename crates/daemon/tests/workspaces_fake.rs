//! Workspace binding rules against the fake backend (no VM): creation on first use, isolated
//! versus shared holders, deletion refused while held, holds of instances surviving a daemon
//! restart, the share each VM is booted with (read-only or not), and host directories checked
//! again at every boot. Real VMs: `tests/tests/workspace.rs`.

use std::sync::Arc;
use std::time::Duration;

use aegis_api::{
    CreateInstance, CreateTask, CreateWorkspace, ErrorCode, InstanceState, PortProtocol, PortSpec,
    TaskState, WorkspaceMode,
};
use aegis_testkit::daemon::start;
use aegis_vmm::FakeBackend;
use aegisd::Daemon;

fn task(cmd: &[&str], workspace: &str) -> CreateTask {
    CreateTask {
        command: cmd.iter().map(|s| s.to_string()).collect(),
        workspace: Some(workspace.into()),
        ..Default::default()
    }
}

async fn wait_end(d: &Arc<Daemon>, id: &str) -> aegis_api::Task {
    for _ in 0..600 {
        let t = d.tasks.get(d, id).unwrap();
        if t.state.is_terminal() {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("task {id} did not end");
}

#[tokio::test]
async fn isolated_holders_deletion_and_auto_create() {
    let home = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeBackend::new());
    let d = start(home.path(), &fake).await;

    // Unknown name: created isolated on first use.
    let t1 = d
        .tasks
        .create(&d, task(&["sleep", "30"], "data"))
        .await
        .unwrap();
    assert_eq!(t1.workspace.as_deref(), Some("data"));
    let ws = d.workspaces.get(&d, "data").unwrap();
    assert_eq!(ws.mode, WorkspaceMode::Isolated);
    assert_eq!(ws.used_by, std::slice::from_ref(&t1.id));
    assert!(home.path().join("workspaces/data").is_dir());

    // A second holder of an isolated workspace: 409 naming the holder, suggesting shared.
    let e = d
        .tasks
        .create(&d, task(&["true"], "data"))
        .await
        .unwrap_err();
    assert_eq!(e.error.code, ErrorCode::Conflict);
    assert!(
        e.error.message.contains(&t1.id) && e.error.message.contains("shared"),
        "{e}"
    );
    // Deleting it while held: 409 naming the holder.
    let e = d.workspaces.delete(&d, "data").unwrap_err();
    assert_eq!(e.error.code, ErrorCode::Conflict);
    assert!(e.error.message.contains(&t1.id), "{e}");

    // The VM got the share, with the data directory.
    for _ in 0..100 {
        if !fake.running().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let vm = fake.running().pop().expect("a VM");
    let shares = fake.shares(&vm);
    assert_eq!(shares.len(), 1);
    assert_eq!(shares[0].tag, aegisd::workspaces::WORKSPACE_TAG);
    assert_eq!(shares[0].host_path, home.path().join("workspaces/data"));

    // Once the task ended, the workspace is free: another task, then deletion.
    d.tasks.cancel(&d, &t1.id).unwrap();
    assert_eq!(wait_end(&d, &t1.id).await.state, TaskState::Cancelled);
    assert!(d.workspaces.get(&d, "data").unwrap().used_by.is_empty());
    let t2 = d.tasks.create(&d, task(&["true"], "data")).await.unwrap();
    wait_end(&d, &t2.id).await;
    d.workspaces.delete(&d, "data").unwrap();
    assert!(!home.path().join("workspaces/data").exists());
    let e = d.workspaces.get(&d, "data").unwrap_err();
    assert_eq!(e.error.code, ErrorCode::NotFound);

    // Bad names are 400s.
    let e = d
        .tasks
        .create(&d, task(&["true"], "Bad/Name"))
        .await
        .unwrap_err();
    assert_eq!(e.error.code, ErrorCode::InvalidRequest);
    let e = d
        .workspaces
        .create(
            &d,
            &CreateWorkspace {
                name: "-x".into(),
                mode: WorkspaceMode::Shared,
            },
        )
        .unwrap_err();
    assert_eq!(e.error.code, ErrorCode::InvalidRequest);
    // A host path inside the Aegis home is refused.
    let inside = home.path().join("tasks");
    let e = d
        .tasks
        .create(&d, task(&["true"], inside.to_str().unwrap()))
        .await
        .unwrap_err();
    assert!(e.error.message.contains("overlaps the Aegis home"), "{e}");
}

#[tokio::test]
async fn shared_workspaces_take_many_holders() {
    let home = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeBackend::new());
    let d = start(home.path(), &fake).await;
    let req = CreateWorkspace {
        name: "team".into(),
        mode: WorkspaceMode::Shared,
    };
    d.workspaces.create(&d, &req).unwrap();
    let e = d.workspaces.create(&d, &req).unwrap_err();
    assert_eq!(e.error.code, ErrorCode::Conflict);
    let a = d
        .tasks
        .create(&d, task(&["sleep", "30"], "team"))
        .await
        .unwrap();
    let b = d
        .tasks
        .create(&d, task(&["sleep", "30"], "team"))
        .await
        .unwrap();
    let mut used = d.workspaces.get(&d, "team").unwrap().used_by;
    used.sort();
    let mut want = vec![a.id.clone(), b.id.clone()];
    want.sort();
    assert_eq!(used, want);
    for t in [&a, &b] {
        d.tasks.cancel(&d, &t.id).unwrap();
        wait_end(&d, &t.id).await;
    }
    assert!(d.workspaces.get(&d, "team").unwrap().used_by.is_empty());
}

#[tokio::test]
async fn an_instance_holds_its_workspace_for_life_and_across_restarts() {
    let home = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeBackend::new());
    let inst = CreateInstance {
        command: vec!["sleep".into(), "30".into()],
        expose: vec![PortSpec {
            guest_port: 8000,
            host_port: None,
            protocol: PortProtocol::Http,
        }],
        workspace: Some("site".into()),
        ..Default::default()
    };
    let id = {
        let d = start(home.path(), &fake).await;
        let i = d.instances.create(&d, inst.clone()).await.unwrap();
        assert_eq!(
            d.workspaces.get(&d, "site").unwrap().used_by,
            std::slice::from_ref(&i.id)
        );
        // Terminated (no VM) yet still holding it: it can wake at any time.
        let e = d
            .tasks
            .create(&d, task(&["true"], "site"))
            .await
            .unwrap_err();
        assert_eq!(e.error.code, ErrorCode::Conflict);
        d.instances.shutdown(Duration::from_secs(5)).await;
        d.shutdown.cancel();
        i.id
    };
    // Let the old listeners close so the reload can bind the same host port.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A new daemon on the same home rebuilds the hold from the recorded instance.
    let d = start(home.path(), &fake).await;
    d.instances.reload(&d).await;
    assert_eq!(
        d.workspaces.get(&d, "site").unwrap().used_by,
        std::slice::from_ref(&id)
    );
    let e = d.workspaces.delete(&d, "site").unwrap_err();
    assert_eq!(e.error.code, ErrorCode::Conflict);
    d.instances.delete(&d, &id).await.unwrap();
    assert!(d.workspaces.get(&d, "site").unwrap().used_by.is_empty());
    d.workspaces.delete(&d, "site").unwrap();
}

/// The share of the only running fake VM.
async fn running_share(fake: &FakeBackend) -> aegis_vmm::Share {
    for _ in 0..250 {
        if let Some(vm) = fake.running().pop() {
            return fake.shares(&vm).pop().expect("a share");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no VM booted");
}

#[tokio::test]
async fn read_only_workspaces_are_shared_read_only() {
    let home = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeBackend::new());
    let d = start(home.path(), &fake).await;

    // Named, read-only: recorded with its mode, held by name like any other use.
    let t = d
        .tasks
        .create(&d, task(&["sleep", "30"], "data:ro"))
        .await
        .unwrap();
    assert_eq!(t.workspace.as_deref(), Some("data:ro"));
    assert_eq!(
        d.workspaces.get(&d, "data").unwrap().used_by,
        std::slice::from_ref(&t.id)
    );
    let share = running_share(&fake).await;
    assert!(share.read_only);
    assert_eq!(share.host_path, home.path().join("workspaces/data"));
    d.tasks.cancel(&d, &t.id).unwrap();
    wait_end(&d, &t.id).await;
    assert!(d.workspaces.get(&d, "data").unwrap().used_by.is_empty());

    // A host directory, read-only.
    let dir = tempfile::tempdir().unwrap();
    let canonical = std::fs::canonicalize(dir.path()).unwrap();
    let t = d
        .tasks
        .create(
            &d,
            task(&["sleep", "30"], &format!("{}:ro", dir.path().display())),
        )
        .await
        .unwrap();
    assert_eq!(
        t.workspace.as_deref(),
        Some(format!("{}:ro", canonical.display()).as_str())
    );
    let share = running_share(&fake).await;
    assert!(share.read_only);
    assert_eq!(share.host_path, canonical);
    d.tasks.cancel(&d, &t.id).unwrap();
    wait_end(&d, &t.id).await;

    // Read-write stays the default.
    let t = d
        .tasks
        .create(&d, task(&["sleep", "30"], dir.path().to_str().unwrap()))
        .await
        .unwrap();
    assert!(!running_share(&fake).await.read_only);
    d.tasks.cancel(&d, &t.id).unwrap();
    wait_end(&d, &t.id).await;

    // Bad modes and system directories are 400s.
    for bad in ["data:rx", "/etc:ro", "/:ro"] {
        let e = d.tasks.create(&d, task(&["true"], bad)).await.unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidRequest, "{bad}: {e}");
    }
}

/// An instance's host directory is checked again before every boot: replaced by a symlink
/// (here to the Aegis home) it is not shared, the wake fails saying why, and no VM boots.
/// Put back, the next wake works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_directory_is_checked_again_at_every_boot() {
    let home = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeBackend::new());
    let d = start(home.path(), &fake).await;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("site");
    std::fs::create_dir(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let inst = CreateInstance {
        command: ["python3", "-m", "http.server", &port.to_string()]
            .iter()
            .chain(&["--bind", "127.0.0.1"])
            .map(|s| s.to_string())
            .collect(),
        expose: vec![PortSpec {
            guest_port: port,
            host_port: None,
            protocol: PortProtocol::Http,
        }],
        workspace: Some(dir.display().to_string()),
        ..Default::default()
    };
    let i = d.instances.create(&d, inst).await.unwrap();
    let rt = d.instances.get(&i.id).unwrap();
    rt.ensure_ready().await.unwrap();
    assert_eq!(fake.boots(), 1);
    d.instances.stop(&i.id).await.unwrap();

    std::fs::rename(&dir, parent.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(home.path(), &dir).unwrap();
    assert!(rt.ensure_ready().await.is_err());
    assert_eq!(fake.boots(), 1, "no VM may boot with a swapped directory");
    assert_eq!(rt.state(), InstanceState::Terminated);
    let why = rt.view().last_error.unwrap_or_default();
    assert!(why.contains("symbolic link"), "{why}");

    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(parent.path().join("moved"), &dir).unwrap();
    rt.ensure_ready().await.unwrap();
    assert_eq!(fake.boots(), 2);
    assert_eq!(
        running_share(&fake).await.host_path,
        std::fs::canonicalize(&dir).unwrap()
    );
    d.instances.delete(&d, &i.id).await.unwrap();
}
