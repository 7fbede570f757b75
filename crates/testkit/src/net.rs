//! Loopback helpers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A loopback TCP port that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// `GET /` on `127.0.0.1:port` with `Connection: close`, in a blocking thread; returns the
/// status code of the response, 0 when the answer is not HTTP. Panics when the port refuses
/// the connection or nothing answers within 30 s.
pub async fn http_get_status(port: u16) -> u16 {
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set a read timeout");
        write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap_or_else(|e| panic!("send GET to 127.0.0.1:{port}: {e}"));
        let mut r = String::new();
        s.read_to_string(&mut r)
            .unwrap_or_else(|e| panic!("read the answer of 127.0.0.1:{port}: {e}"));
        r.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    })
    .await
    .expect("the GET thread panicked")
}
