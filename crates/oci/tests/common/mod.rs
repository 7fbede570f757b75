//! A small registry for tests that records every request it receives (path, `Host` and
//! `Authorization` headers) and answers from a handler: the real parts are the client and the
//! store; this plays a registry that may be hostile.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Path and query.
    pub path: String,
    /// The `Host` header.
    pub host: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send no `Content-Length`: the body ends when the connection closes, so the client
    /// learns the size only by reading.
    pub no_length: bool,
}

impl Reply {
    pub fn ok(body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            headers: vec![],
            body,
            no_length: false,
        }
    }
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: vec![],
            no_length: false,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
}

type Handler = dyn Fn(&Request, SocketAddr) -> Reply + Send + Sync;

pub struct FakeRegistry {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
}

impl FakeRegistry {
    /// Serves on `127.0.0.1:<free port>`, one thread per connection, until the test ends.
    pub fn start(handler: impl Fn(&Request, SocketAddr) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread_log = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (handler, log) = (handler.clone(), thread_log.clone());
                std::thread::spawn(move || serve(stream, &*handler, &log, addr));
            }
        });
        FakeRegistry { addr, log }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Request>>, addr: SocketAddr) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let request = Request {
        path,
        host: headers.get("host").cloned().unwrap_or_default(),
        authorization: headers.get("authorization").cloned(),
    };
    log.lock().unwrap().push(request.clone());
    let reply = handler(&request, addr);
    let mut out = stream;
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    if !reply.no_length {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(&reply.body);
}

/// An image as a registry serves it: `test/img:v1`.
pub struct TestImage {
    pub manifest: Vec<u8>,
    pub blobs: HashMap<String, Vec<u8>>,
    pub layer_digest: String,
}

impl TestImage {
    /// One gzip layer holding `etc/hello`; `declared_layer_size` overrides the size the
    /// manifest declares for it.
    pub fn new(declared_layer_size: Option<u64>) -> TestImage {
        Self::with_layer(layer_tar_gz(b"hello\n"), declared_layer_size)
    }

    pub fn with_layer(layer: Vec<u8>, declared_layer_size: Option<u64>) -> TestImage {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap();
        let (cd, ld) = (sha256(&config), sha256(&layer));
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld,
                        "size": declared_layer_size.unwrap_or(layer.len() as u64)}]
        }))
        .unwrap();
        let blobs = HashMap::from([(cd, config), (ld.clone(), layer)]);
        TestImage {
            manifest,
            blobs,
            layer_digest: ld,
        }
    }

    /// Answers `/v2/test/img/manifests/v1` and `/v2/test/img/blobs/<digest>`; `None` for
    /// anything else.
    pub fn serve(&self, path: &str) -> Option<Reply> {
        if path == "/v2/test/img/manifests/v1" {
            return Some(
                Reply::ok(self.manifest.clone())
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                    .header("Docker-Content-Digest", &sha256(&self.manifest)),
            );
        }
        let digest = path.strip_prefix("/v2/test/img/blobs/")?;
        let blob = self.blobs.get(digest)?;
        Some(Reply::ok(blob.clone()).header("Docker-Content-Digest", digest))
    }
}

pub fn layer_tar_gz(content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(content.len() as u64);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, "etc/hello", content).unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}
