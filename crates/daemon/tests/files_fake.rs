//! Files of a live instance over the real HTTP API (an in-process daemon on the fake backend,
//! the guest agent in-process): write a directory in and read it back with its modes, stat
//! and list, wake a terminated or paused instance for a file call, and the bad input: unknown
//! instance, relative path, missing path, a hostile or cut-off archive that leaves nothing.
//! Real VMs cover the same in `tests/tests/files.rs`.

use std::io::Read;
use std::sync::Arc;

use aegis_api::{CreateInstance, FileKind, InstanceState, PortProtocol, PortSpec};
use aegis_client::{Client, Error};
use aegis_testkit::daemon::{fixture, Fixture};
use aegis_testkit::net::free_port;
use aegisd::Daemon;
use bytes::Bytes;
use futures::StreamExt;

struct Served {
    fx: Fixture,
    client: Client,
    _server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn serve() -> Served {
    let fx = fixture().await;
    let socket = fx.daemon.config.home.socket();
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    // The API alone: `Daemon::serve` would also reload recorded instances, racing the
    // instances a test creates.
    let app = aegisd::api::router(fx.daemon.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    Served {
        fx,
        client: Client::new(socket),
        _server: server,
    }
}

/// An instance whose app is a host process listening on a free loopback port.
async fn instance(d: &Arc<Daemon>, name: &str) {
    let port = free_port();
    let req = CreateInstance {
        name: Some(name.into()),
        command: vec![
            "python3".into(),
            "-m".into(),
            "http.server".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
        ],
        expose: vec![PortSpec {
            guest_port: port,
            host_port: None,
            protocol: PortProtocol::Tcp,
        }],
        ..Default::default()
    };
    let inst = d.instances.create(d, req).await.unwrap();
    assert_eq!(inst.state, InstanceState::Terminated);
}

fn entry(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_entry_type(if path.ends_with('/') {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    // set_path refuses `..`: write the raw name so that hostile archives can be built too.
    let name = &mut h.as_old_mut().name;
    name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn archive(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in entries {
        entry(&mut b, path, data, *mode);
    }
    b.into_inner().unwrap()
}

fn body(bytes: Vec<u8>) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    let chunks: Vec<_> = bytes
        .chunks(1000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks)
}

async fn read_all(client: &Client, id: &str, path: &str) -> Vec<u8> {
    let mut s = client.read_archive(id, path).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

fn status(e: Error) -> u16 {
    match e {
        Error::Api { status, .. } => status,
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_goes_in_and_comes_back_with_its_modes_waking_the_instance() {
    let s = serve().await;
    let d = &s.fx.daemon;
    instance(d, "box").await;
    let tar = archive(&[
        ("proj/", b"", 0o750),
        ("proj/run.sh", b"#!/bin/sh\necho hi\n", 0o755),
        ("proj/data.txt", b"42\n", 0o600),
    ]);
    s.client.write_archive("box", "/", body(tar)).await.unwrap();
    assert_eq!(
        d.instances.get("box").unwrap().state(),
        InstanceState::Running
    );
    assert_eq!(s.fx.fake.boots(), 1, "the write woke the instance");

    let info = s.client.stat_path("box", "/proj/run.sh").await.unwrap();
    assert_eq!(
        (info.kind, info.mode, info.size),
        (FileKind::File, 0o755, 18)
    );
    let list = s.client.list_path("box", "/proj").await.unwrap();
    let names: Vec<_> = list.entries.unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["data.txt", "run.sh"]);

    let back = read_all(&s.client, "box", "/proj").await;
    let mut ar = tar::Archive::new(&back[..]);
    let mut seen = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let mode = e.header().mode().unwrap() & 0o7777;
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        seen.push((path, mode, data));
    }
    assert_eq!(
        seen,
        [
            ("proj".to_string(), 0o750, vec![]),
            ("proj/data.txt".into(), 0o600, b"42\n".to_vec()),
            (
                "proj/run.sh".into(),
                0o755,
                b"#!/bin/sh\necho hi\n".to_vec()
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_into_a_paused_instance_resumes_it() {
    let s = serve().await;
    let d = &s.fx.daemon;
    instance(d, "p").await;
    d.instances.resume("p").await.unwrap();
    d.instances.pause("p").await.unwrap();
    assert_eq!(d.instances.get("p").unwrap().state(), InstanceState::Paused);
    let tar = archive(&[("f", b"x", 0o644)]);
    s.client.write_archive("p", "/", body(tar)).await.unwrap();
    let rt = d.instances.get("p").unwrap();
    assert_eq!(rt.state(), InstanceState::Running);
    assert_eq!(rt.view().stats.resumes, 1);
    assert_eq!(s.fx.fake.boots(), 1, "resumed, not booted again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_and_instances_get_clear_4xx() {
    let s = serve().await;
    instance(&s.fx.daemon, "b").await;
    let c = &s.client;

    let e = c.stat_path("nope", "/").await.unwrap_err();
    assert_eq!(status(e), 404);
    let e = c.read_archive("nope", "/").await.err().unwrap();
    assert_eq!(status(e), 404);

    for relative in ["etc", "./x", ""] {
        let e = c.stat_path("b", relative).await.unwrap_err();
        assert_eq!(status(e), 400, "{relative:?}");
    }
    let e = c
        .write_archive("b", "tmp", body(archive(&[("f", b"x", 0o644)])))
        .await
        .unwrap_err();
    assert_eq!(status(e), 400);

    let e = c.stat_path("b", "/no/such/file").await.unwrap_err();
    let Error::Api {
        status: code,
        error,
    } = e
    else {
        panic!("not an API error")
    };
    assert_eq!(code, 404);
    assert!(error.error.message.contains("/no/such/file"), "{error:?}");
    let e = c.read_archive("b", "/missing").await.err().unwrap();
    assert_eq!(status(e), 404);
    let e = c
        .write_archive("b", "/missing", body(archive(&[("f", b"x", 0o644)])))
        .await
        .unwrap_err();
    assert_eq!(status(e), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_or_cut_off_archives_leave_nothing() {
    let s = serve().await;
    instance(&s.fx.daemon, "h").await;
    let c = &s.client;
    c.write_archive("h", "/", body(archive(&[("in/", b"", 0o755)])))
        .await
        .unwrap();

    let hostile = archive(&[("ok", b"fine", 0o644), ("../../escaped", b"x", 0o644)]);
    let e = c
        .write_archive("h", "/in", body(hostile))
        .await
        .unwrap_err();
    assert_eq!(status(e), 400);
    let listed = c.list_path("h", "/in").await.unwrap().entries.unwrap();
    assert!(
        listed.is_empty(),
        "nothing of a refused archive lands: {listed:?}"
    );
    let root = c.list_path("h", "/").await.unwrap().entries.unwrap();
    assert!(root.iter().all(|e| e.name != "escaped"), "{root:?}");

    // The upload breaks off after the first entry, exactly at an entry boundary.
    let whole = archive(&[("a", &[1u8; 512], 0o644), ("b", &[2u8; 512], 0o644)]);
    let cut = futures::stream::iter(vec![
        Ok(Bytes::copy_from_slice(&whole[..1024])),
        Err(std::io::Error::other("client gave up")),
    ]);
    assert!(c.write_archive("h", "/in", cut).await.is_err());
    let listed = c.list_path("h", "/in").await.unwrap().entries.unwrap();
    assert!(listed.is_empty(), "no partial file: {listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_a_file_arrive_and_refuses_what_is_not_a_directory() {
    let s = serve().await;
    instance(&s.fx.daemon, "w").await;
    let c = &s.client;
    c.write_archive("w", "/", body(archive(&[("out/", b"", 0o755)])))
        .await
        .unwrap();
    let mut events = c.watch_path("w", "/out").await.unwrap();
    c.write_archive("w", "/out", body(archive(&[("result.json", b"{}", 0o644)])))
        .await
        .unwrap();
    let event = tokio::time::timeout(std::time::Duration::from_secs(30), events.next_event())
        .await
        .expect("no watch event within 30 s")
        .unwrap()
        .expect("the watch ended");
    assert_eq!(event.kind, aegis_api::WatchKind::MovedIn);
    assert_eq!(event.name, "result.json");
    assert!(!event.dir);
    // A watch holds the instance awake (a holder in awake_because) until its client goes.
    let rt = s.fx.daemon.instances.get("w").unwrap();
    let held = rt.holders.holders();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        (held[0].kind.as_str(), held[0].label.as_str()),
        ("watch", "watch /out")
    );
    drop(events);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !rt.holders.holders().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the watch outlived its client"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let e = c.watch_path("w", "/out/result.json").await.err().unwrap();
    assert_eq!(status(e), 400);
    let e = c.watch_path("w", "/nope").await.err().unwrap();
    assert_eq!(status(e), 404);
}
