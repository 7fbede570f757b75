//! A small QMP client: one JSON object per line over QEMU's control socket.
//!
//! ```text
//! <- {"QMP": {"version": {...}, "capabilities": [...]}}      greeting
//! -> {"execute": "qmp_capabilities", "id": 1}
//! <- {"return": {}, "id": 1}
//! -> {"execute": "stop", "id": 2}
//! <- {"timestamp": {...}, "event": "STOP"}                     events: logged, skipped
//! <- {"return": {}, "id": 2}
//! ```
//!
//! One command at a time; replies are matched by `id`, so a reply left over from a command
//! whose caller gave up is skipped rather than mistaken for the next one.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Longest QMP line accepted; QEMU's replies are far smaller.
const MAX_LINE: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QMP I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP connection closed by QEMU")]
    Closed,
    #[error("malformed QMP message: {0}")]
    Protocol(String),
    /// QEMU refused the command.
    #[error("{class}: {desc}")]
    Command { class: String, desc: String },
}

/// A QMP session in command mode.
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    line: Vec<u8>,
    version: Option<String>,
}

impl Qmp {
    /// Connects, reads the greeting and enters command mode (`qmp_capabilities`).
    pub async fn connect(path: &Path) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        Qmp::handshake(stream).await
    }

    /// Runs the greeting and capability negotiation on an already connected stream.
    pub async fn handshake(stream: UnixStream) -> Result<Qmp, QmpError> {
        let (read, writer) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(read),
            writer,
            next_id: 1,
            line: Vec::new(),
            version: None,
        };
        let greeting = qmp.read_message().await?;
        let Some(info) = greeting.get("QMP") else {
            return Err(QmpError::Protocol(format!(
                "expected a greeting, got {greeting}"
            )));
        };
        qmp.version = info.pointer("/version/qemu").and_then(|v| {
            Some(format!(
                "{}.{}.{}",
                v.get("major")?.as_u64()?,
                v.get("minor")?.as_u64()?,
                v.get("micro")?.as_u64()?
            ))
        });
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// `major.minor.micro` of the QEMU on the other end, from its greeting.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Executes `command` and returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        let mut bytes = serde_json::to_vec(&request)
            .map_err(|e| QmpError::Protocol(format!("cannot encode request: {e}")))?;
        bytes.push(b'\n');
        self.writer.write_all(&bytes).await?;
        loop {
            let msg = self.read_message().await?;
            if let Some(event) = msg.get("event") {
                tracing::debug!(event = %event, data = ?msg.get("data"), "QMP event");
                continue;
            }
            if msg.get("id").and_then(Value::as_u64) != Some(id) {
                tracing::debug!(reply = %msg, expected = id, "skipping stale QMP reply");
                continue;
            }
            if let Some(ret) = msg.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = msg.get("error") {
                let field = |k: &str| {
                    err.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .to_string()
                };
                return Err(QmpError::Command {
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            return Err(QmpError::Protocol(format!(
                "reply has neither return nor error: {msg}"
            )));
        }
    }

    async fn read_message(&mut self) -> Result<Value, QmpError> {
        loop {
            // The buffer persists across calls: a read interrupted by a dropped future resumes
            // where it stopped instead of losing half a line.
            let n = (&mut self.reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut self.line)
                .await?;
            if n == 0 && self.line.is_empty() {
                return Err(QmpError::Closed);
            }
            if self.line.last() != Some(&b'\n') {
                if n == 0 {
                    return Err(QmpError::Closed);
                }
                if self.line.len() as u64 >= MAX_LINE {
                    return Err(QmpError::Protocol("line too long".into()));
                }
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            return serde_json::from_slice(text).map_err(|e| {
                QmpError::Protocol(format!("{e}: {}", String::from_utf8_lossy(text)))
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    /// A fake QEMU: greets, then answers each request with what `reply` returns (one or more
    /// lines, each a JSON text; `{id}` is replaced by the request's id).
    async fn fake_qemu(
        path: &Path,
        reply: impl Fn(&Value) -> Vec<String> + Send + 'static,
    ) -> tokio::task::JoinHandle<Vec<Value>> {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            w.write_all(
                br#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}"#,
            )
            .await
            .unwrap();
            w.write_all(b"\r\n").await.unwrap();
            let mut lines = BufReader::new(r).lines();
            let mut seen = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let req: Value = serde_json::from_str(&line).unwrap();
                let id = req["id"].to_string();
                for out in reply(&req) {
                    w.write_all(out.replace("{id}", &id).as_bytes())
                        .await
                        .unwrap();
                    w.write_all(b"\r\n").await.unwrap();
                }
                seen.push(req);
            }
            seen
        })
    }

    #[tokio::test]
    async fn negotiates_and_executes_skipping_events() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let server = fake_qemu(&sock, |req| match req["execute"].as_str().unwrap() {
            "stop" => vec![
                r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#.into(),
                r#"{"return": {}, "id": {id}}"#.into(),
            ],
            "query-status" => {
                vec![r#"{"return": {"status": "paused", "running": false}, "id": {id}}"#.into()]
            }
            _ => vec![r#"{"return": {}, "id": {id}}"#.into()],
        })
        .await;
        let mut qmp = Qmp::connect(&sock).await.unwrap();
        assert_eq!(qmp.version(), Some("7.2.22"));
        assert_eq!(qmp.execute("stop", None).await.unwrap(), json!({}));
        let st = qmp.execute("query-status", None).await.unwrap();
        assert_eq!(st["status"], "paused");
        qmp.execute("migrate", Some(json!({"uri": "exec:cat > /x"})))
            .await
            .unwrap();
        drop(qmp);
        let seen = server.await.unwrap();
        assert_eq!(seen[0]["execute"], "qmp_capabilities");
        assert_eq!(seen[3]["arguments"]["uri"], "exec:cat > /x");
        // Ids are unique and increasing.
        let ids: Vec<u64> = seen.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn errors_are_typed_and_stale_replies_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let _server = fake_qemu(&sock, |req| match req["execute"].as_str().unwrap() {
            "cont" => vec![
                r#"{"return": {}, "id": 999}"#.into(),
                r#"{"error": {"class": "GenericError", "desc": "Migration is not finalized yet"}, "id": {id}}"#.into(),
            ],
            _ => vec![r#"{"return": {}, "id": {id}}"#.into()],
        })
        .await;
        let mut qmp = Qmp::connect(&sock).await.unwrap();
        match qmp.execute("cont", None).await {
            Err(QmpError::Command { class, desc }) => {
                assert_eq!(class, "GenericError");
                assert!(desc.contains("not finalized"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_greeting_is_a_protocol_error() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"{\"hello\": 1}\n").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        });
        assert!(matches!(
            Qmp::connect(&sock).await,
            Err(QmpError::Protocol(_))
        ));
        let missing = dir.path().join("none.sock");
        assert!(matches!(
            Qmp::connect(&missing).await,
            Err(QmpError::Connect { .. })
        ));
    }

    #[tokio::test]
    async fn eof_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"{\"QMP\": {}}\n").await.unwrap();
            let mut buf = [0u8; 256];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            s.write_all(b"{\"return\": {}, \"id\": 1}\n").await.unwrap();
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            // Close without answering (QEMU exiting).
        });
        let mut qmp = Qmp::connect(&sock).await.unwrap();
        assert!(matches!(
            qmp.execute("quit", None).await,
            Err(QmpError::Closed)
        ));
    }
}
