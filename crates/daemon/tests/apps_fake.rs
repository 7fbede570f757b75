//! Apps and releases against the fake backend (the app a host process): create, publish,
//! numbering, serve, switch and roll back (the running VM is terminated, the next request
//! boots the other release), errors, removal. Real VMs: `tests/tests/apps.rs`.

use std::net::TcpStream;

use aegis_api::{
    CreateApp, ErrorCode, InstanceState, PortProtocol, PortSpec, PublishRelease, ServeApp,
};
use aegis_oci::{Image, ImageConfig, Reference, Store};
use aegis_testkit::daemon::{fixture, Fixture};
use aegis_testkit::net::{free_port, http_get_status as get};

const IMAGE: &str = "localhost:5000/site:1";

/// Records a one-layer image as if it had been pulled (its layer is a real blob).
fn plant_image(home: &std::path::Path, exposed: &[&str]) -> Image {
    let store = Store::open(home.join("images")).unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("bin")).unwrap();
    std::fs::write(src.path().join("bin/marker"), "base").unwrap();
    let layer = store.import_dir_layer(src.path(), "/base").unwrap();
    let reference = Reference::parse(IMAGE).unwrap();
    let image = Image {
        reference: reference.to_string(),
        index_digest: None,
        manifest_digest: format!("sha256:{}", "ab".repeat(32)),
        manifest_media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        config_digest: format!("sha256:{}", "cd".repeat(32)),
        config: ImageConfig {
            cmd: vec!["sh".into()],
            env: vec!["PATH=/usr/bin:/bin".into()],
            exposed_ports: exposed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        layers: vec![layer],
    };
    std::fs::write(
        home.join("images/images")
            .join(format!("{}.json", reference.escaped())),
        serde_json::to_vec(&image).unwrap(),
    )
    .unwrap();
    image
}

fn server(port: u16) -> Vec<String> {
    [
        "python3",
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_publish_serve_switch_rollback_remove() {
    let Fixture {
        daemon: d,
        fake,
        home,
    } = fixture().await;
    let image = plant_image(home.path(), &["8080/tcp"]);
    let port = free_port();

    // Creating: unknown images, bad names and duplicates are refused.
    let e = d
        .apps
        .create(
            &d,
            CreateApp {
                name: "site".into(),
                image: "localhost:5000/other:1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.error.code, ErrorCode::NotFound);
    assert!(e.error.message.contains("aegis image pull"), "{e}");
    let e = d
        .apps
        .create(
            &d,
            CreateApp {
                name: "Bad!".into(),
                image: IMAGE.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.error.code, ErrorCode::InvalidRequest);

    // Without --expose the image's ExposedPorts are served.
    let from_image = d
        .apps
        .create(
            &d,
            CreateApp {
                name: "fromimage".into(),
                image: IMAGE.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(from_image.expose[0].guest_port, 8080);
    assert_eq!(from_image.image, "localhost:5000/site:1");

    let app = d
        .apps
        .create(
            &d,
            CreateApp {
                name: "site".into(),
                image: IMAGE.into(),
                expose: vec![PortSpec {
                    guest_port: port,
                    host_port: None,
                    protocol: PortProtocol::Http,
                }],
                command: server(port),
            },
        )
        .await
        .unwrap();
    assert_eq!(app.latest_release, None);
    let e = d
        .apps
        .create(
            &d,
            CreateApp {
                name: "site".into(),
                image: IMAGE.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.error.code, ErrorCode::Conflict);

    // Nothing to serve before a release exists.
    let e = d
        .apps
        .serve(&d, "site", ServeApp::default())
        .await
        .unwrap_err();
    assert_eq!(e.error.code, ErrorCode::Conflict);
    assert!(e.error.message.contains("aegis app publish"), "{e}");

    // Publishing: a missing --from is a 400 and stores nothing.
    let blobs = || {
        std::fs::read_dir(home.path().join("images/blobs/sha256"))
            .unwrap()
            .count()
    };
    let before = blobs();
    let e = d
        .apps
        .publish(
            &d,
            "site",
            PublishRelease {
                from: Some(home.path().join("no-such-dir").display().to_string()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.error.code, ErrorCode::InvalidRequest);
    assert!(e.error.message.contains("no-such-dir"), "{e}");
    assert_eq!(blobs(), before);
    // The Aegis home (or a directory holding it) is never published: a 400, nothing stored.
    for overlapping in [home.path(), home.path().parent().unwrap()] {
        let e = d
            .apps
            .publish(
                &d,
                "site",
                PublishRelease {
                    from: Some(overlapping.display().to_string()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidRequest);
        assert!(e.error.message.contains("overlaps the Aegis home"), "{e}");
    }
    assert_eq!(blobs(), before);
    assert!(d.apps.releases(&d, "site").unwrap().is_empty());

    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "release 1").unwrap();
    let publish = |label: &str| PublishRelease {
        from: Some(www.path().display().to_string()),
        dest: None,
        label: Some(label.into()),
    };
    let r1 = d.apps.publish(&d, "site", publish("v1")).await.unwrap();
    std::fs::write(www.path().join("index.html"), "release 2").unwrap();
    let r2 = d.apps.publish(&d, "site", publish("v2")).await.unwrap();
    assert_eq!((r1.number, r2.number), (1, 2));
    assert_eq!(r1.layers.len(), 2, "the image's layer + the directory's");
    assert_eq!(r1.layers[0], r2.layers[0].clone());
    assert_eq!(r1.layers[0].digest, image.layers[0].digest);
    assert_ne!(r1.layers[1].digest, r2.layers[1].digest);
    assert_eq!(r1.manifest_digest, image.manifest_digest);
    assert_eq!(r1.config.command(), server(port), "the app's command");
    let pinned = d.registry.release_blob_digests().unwrap();
    assert!(r1
        .layers
        .iter()
        .chain(&r2.layers)
        .all(|l| pinned.contains(&l.digest)));

    // Serve the newest: an instance bound to the app, scaled to zero.
    let served = d.apps.serve(&d, "site", ServeApp::default()).await.unwrap();
    assert_eq!(served.release, 2);
    assert_eq!(served.previous_release, None);
    assert_eq!(served.instance.state, InstanceState::Terminated);
    assert_eq!(served.instance.target.app.as_deref(), Some("site"));
    assert_eq!(fake.boots(), 0);
    let host_port = served.instance.endpoints[0].host_port;
    assert_eq!(get(host_port).await, 200);
    assert_eq!(fake.boots(), 1);
    assert_eq!(fake.running().len(), 1);

    // Switch to release 1: the running VM is terminated, the next request boots again.
    let switched = d
        .apps
        .serve(
            &d,
            "site",
            ServeApp {
                release: Some(1),
                rollback: false,
                workspace: None,
            },
        )
        .await
        .unwrap();
    assert_eq!((switched.release, switched.previous_release), (1, Some(2)));
    assert_eq!(switched.instance.id, served.instance.id, "same instance");
    assert_eq!(
        switched.instance.endpoints, served.instance.endpoints,
        "same ports"
    );
    assert_eq!(switched.instance.state, InstanceState::Terminated);
    assert!(!switched.instance.snapshot_cached);
    assert!(fake.running().is_empty(), "the old release's VM is gone");
    assert_eq!(switched.instance.target.release, Some(1));
    assert_eq!(get(host_port).await, 200);
    assert_eq!(fake.boots(), 2, "the next request booted release 1");

    // Serving the release already served changes nothing.
    let same = d
        .apps
        .serve(
            &d,
            "site",
            ServeApp {
                release: Some(1),
                rollback: false,
                workspace: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(same.previous_release, None);
    assert_eq!(fake.running().len(), 1, "still running");

    // Rollback from release 1: there is nothing before it.
    let e = d
        .apps
        .serve(
            &d,
            "site",
            ServeApp {
                release: None,
                rollback: true,
                workspace: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.error.code, ErrorCode::Conflict);
    d.apps
        .serve(
            &d,
            "site",
            ServeApp {
                release: Some(2),
                rollback: false,
                workspace: None,
            },
        )
        .await
        .unwrap();
    let back = d
        .apps
        .serve(
            &d,
            "site",
            ServeApp {
                release: None,
                rollback: true,
                workspace: None,
            },
        )
        .await
        .unwrap();
    assert_eq!((back.release, back.previous_release), (1, Some(2)));
    let e = d
        .apps
        .serve(
            &d,
            "site",
            ServeApp {
                release: Some(9),
                rollback: false,
                workspace: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.error.code, ErrorCode::NotFound);

    // The switch is recorded: a restarted daemon serves release 1.
    let records = d.registry.list_instances().unwrap();
    let rec = records.iter().find(|r| r.name == "site").unwrap();
    assert_eq!(rec.target.release, Some(1));

    // The view and the list.
    let view = d.apps.get(&d, "site").unwrap();
    assert_eq!(view.latest_release, Some(2));
    assert_eq!(view.serving.as_ref().map(|s| s.release), Some(1));
    let names: Vec<_> = d
        .apps
        .list(&d)
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["fromimage", "site"]);

    // Removal: instance, VM and releases go; the port is released.
    d.apps.remove(&d, "site").await.unwrap();
    assert!(d.instances.get("site").is_err());
    assert!(fake.running().is_empty());
    assert!(d.registry.releases("site").unwrap().is_empty());
    assert!(TcpStream::connect(("127.0.0.1", host_port)).is_err());
    let e = d.apps.get(&d, "site").unwrap_err();
    assert_eq!(e.error.code, ErrorCode::NotFound);
}
