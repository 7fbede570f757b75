//! A create request that can never run (vCPUs, memory or a duration out of range) gets its 400
//! before the image is looked up: not the image's 404/503 ("build it with `aegis setup`"),
//! which would send the client to fix the wrong thing. Found by tests/tests/schemathesis.rs
//! (a `CreateTask` with `vcpus: 2147483648` answered 503 on a daemon with no image built).

use aegis_api::{CreateInstance, CreateTask, ErrorCode};
use aegis_testkit::daemon::fixture;

const NO_SUCH_IMAGE: &str = "no-such-image-anywhere";

#[tokio::test]
async fn a_task_that_can_never_run_is_rejected_before_its_image_is_looked_up() {
    let f = fixture().await;
    for (what, req) in [
        (
            "vcpus",
            CreateTask {
                vcpus: Some(u32::MAX),
                ..Default::default()
            },
        ),
        (
            "memory",
            CreateTask {
                memory_mib: Some(1),
                ..Default::default()
            },
        ),
        (
            "timeout_secs",
            CreateTask {
                timeout_secs: Some(u64::MAX),
                ..Default::default()
            },
        ),
    ] {
        let req = CreateTask {
            command: vec!["true".into()],
            image: Some(NO_SUCH_IMAGE.into()),
            ..req
        };
        let e = f.daemon.tasks.create(&f.daemon, req).await.expect_err(what);
        assert_eq!(e.error.code, ErrorCode::InvalidRequest, "{what}: {e:?}");
        assert!(!e.error.message.contains(NO_SUCH_IMAGE), "{what}: {e:?}");
    }
    assert!(f.daemon.registry.list_tasks().unwrap().is_empty());
}

#[tokio::test]
async fn an_instance_that_can_never_run_is_rejected_before_its_image_is_looked_up() {
    let f = fixture().await;
    for (what, req) in [
        (
            "vcpus",
            CreateInstance {
                vcpus: Some(0),
                ..Default::default()
            },
        ),
        (
            "wake_timeout_secs",
            CreateInstance {
                wake_timeout_secs: Some(1 << 63),
                ..Default::default()
            },
        ),
    ] {
        let req = CreateInstance {
            command: vec!["true".into()],
            image: Some(NO_SUCH_IMAGE.into()),
            ..req
        };
        let e = f
            .daemon
            .instances
            .create(&f.daemon, req)
            .await
            .expect_err(what);
        assert_eq!(e.error.code, ErrorCode::InvalidRequest, "{what}: {e:?}");
        assert!(!e.error.message.contains(NO_SUCH_IMAGE), "{what}: {e:?}");
    }
    assert!(f.daemon.instances.list().is_empty());
}
