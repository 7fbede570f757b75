//! API values for scripted answers of [`crate::fake_aegisd::FakeAegisd`]: a task, an
//! instance, error bodies and output-feed lines, as aegisd would send them.

use aegis_api::{
    ApiError, CreateInstance, Endpoint, ErrorCode, Instance, InstanceState, OutputEvent,
    PortProtocol, PortSpec, StreamName, Task, TaskState, WakeStats,
};

use crate::fake_aegisd::Reply;

/// Task `task-1` running `cmd` on the `debian` image, in `state`.
pub fn task(state: TaskState) -> Task {
    Task {
        id: "task-1".into(),
        state,
        command: vec!["cmd".into()],
        image: "debian".into(),
        vcpus: 1,
        memory_mib: 512,
        timeout_secs: None,
        exit_code: None,
        error: None,
        created_at: "2025-01-01T00:00:00Z".into(),
        started_at: None,
        ended_at: None,
        stdout_bytes: 0,
        stderr_bytes: 0,
        artifacts_dir: None,
        guest_kernel: None,
        workspace: None,
    }
}

/// Instance `inst-1` named `web`, serving guest port 8000 (http) on host port 41234 and
/// guest port 5432 (tcp) on 41235.
pub fn instance(state: InstanceState) -> Instance {
    Instance {
        id: "inst-1".into(),
        name: "web".into(),
        state,
        target: CreateInstance {
            command: vec!["cmd".into()],
            expose: vec![
                PortSpec {
                    guest_port: 8000,
                    host_port: None,
                    protocol: PortProtocol::Http,
                },
                PortSpec {
                    guest_port: 5432,
                    host_port: None,
                    protocol: PortProtocol::Tcp,
                },
            ],
            ..Default::default()
        },
        endpoints: vec![
            Endpoint {
                guest_port: 8000,
                host_port: 41234,
                protocol: PortProtocol::Http,
                url: "http://127.0.0.1:41234".into(),
            },
            Endpoint {
                guest_port: 5432,
                host_port: 41235,
                protocol: PortProtocol::Tcp,
                url: "tcp://127.0.0.1:41235".into(),
            },
        ],
        created_at: "2025-01-01T00:00:00Z".into(),
        last_active_at: "2025-01-01T00:00:00Z".into(),
        active_connections: 0,
        snapshot_cached: false,
        stats: WakeStats::default(),
        last_error: None,
        guest_kernel: None,
    }
}

/// `value` as a JSON body with `status`.
pub fn json(status: u16, value: &impl serde::Serialize) -> Reply {
    Reply::Body(
        status,
        serde_json::to_vec(value).expect("a test value serialises"),
    )
}

/// The daemon's 404 with `message`.
pub fn not_found(message: &str) -> Reply {
    json(404, &ApiError::new(ErrorCode::NotFound, message))
}

/// One NDJSON line of the output feed.
pub fn line(event: &OutputEvent) -> Vec<u8> {
    let mut l = serde_json::to_vec(event).expect("an output event serialises");
    l.push(b'\n');
    l
}

/// The feed line carrying `data` of `stream` at byte `offset`.
pub fn out(stream: StreamName, offset: u64, data: &[u8]) -> Vec<u8> {
    line(&OutputEvent::output(stream, offset, data))
}

/// The feed's last line: the task as it ended.
pub fn end(task: Task) -> Vec<u8> {
    line(&OutputEvent::End {
        task: Box::new(task),
    })
}

/// `(stdout_offset, stderr_offset)` of an output-feed request URI (0 when absent).
pub fn offsets(uri: &str) -> (u64, u64) {
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let get = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|e| panic!("{name}={v} in {uri}: {e}"))
            })
            .unwrap_or(0)
    };
    (get("stdout_offset"), get("stderr_offset"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_read_from_the_query_and_default_to_zero() {
        assert_eq!(
            offsets("/v1/tasks/t/output?follow=true&stdout_offset=12&stderr_offset=5"),
            (12, 5)
        );
        assert_eq!(offsets("/v1/tasks/t/output?stderr_offset=7"), (0, 7));
        assert_eq!(offsets("/v1/tasks/t/output"), (0, 0));
    }

    #[test]
    fn feed_lines_are_one_json_event_each() {
        let l = out(StreamName::Stderr, 3, b"hi");
        assert_eq!(l.last(), Some(&b'\n'));
        let event: OutputEvent = serde_json::from_slice(&l).unwrap();
        assert_eq!(event.bytes().unwrap(), b"hi");
        let l = end(task(TaskState::Exited));
        match serde_json::from_slice::<OutputEvent>(&l).unwrap() {
            OutputEvent::End { task } => assert_eq!(task.id, "task-1"),
            other => panic!("expected the end event, got {other:?}"),
        }
    }
}
