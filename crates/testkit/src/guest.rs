//! The host side of a guest session, as the daemon drives it: open a process's output
//! streams, then `Spawn` it. The same steps serve the in-process agent, the fake backend and
//! a real guest under QEMU.

use aegis_proto::{HostMessage, ProcId, ProcessSpec, Session, Stream};

/// `argv` with no extra environment, in the default directory, as the default user.
pub fn process(argv: &[&str]) -> ProcessSpec {
    ProcessSpec {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: vec![],
        cwd: None,
        user: None,
    }
}

/// Opens a stdout and a stderr stream on `session` and sends `Spawn` of process `id` with
/// them; returns `(stdout, stderr)`. It does not wait for `Spawned`: callers that care read
/// their own control messages. Panics when the session cannot send.
pub async fn spawn(session: &Session, id: ProcId, spec: ProcessSpec) -> (Stream, Stream) {
    let (_, stdout, stderr) = send_spawn(session, id, spec, false).await;
    (stdout, stderr)
}

/// [`spawn`], with a stdin stream first when `stdin`: `(stdin, stdout, stderr)`.
pub async fn spawn_with_stdin(
    session: &Session,
    id: ProcId,
    spec: ProcessSpec,
    stdin: bool,
) -> (Option<Stream>, Stream, Stream) {
    send_spawn(session, id, spec, stdin).await
}

async fn send_spawn(
    session: &Session,
    id: ProcId,
    spec: ProcessSpec,
    with_stdin: bool,
) -> (Option<Stream>, Stream, Stream) {
    let stdin = with_stdin.then(|| session.open_stream());
    let stdout = session.open_stream();
    let stderr = session.open_stream();
    let argv0 = spec.argv.first().cloned().unwrap_or_default();
    session
        .send(HostMessage::Spawn {
            id,
            spec,
            stdin: stdin.as_ref().map(Stream::id),
            stdout: stdout.id(),
            stderr: stderr.id(),
        })
        .await
        .unwrap_or_else(|e| panic!("send Spawn of process {id} ({argv0}): {e}"));
    (stdin, stdout, stderr)
}
