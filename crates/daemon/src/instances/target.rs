//! The ServeTarget: the rules a request must follow, and how its ports look to the router
//! and to clients.

use std::collections::BTreeSet;

use aegis_api::{ApiError, CreateInstance, PortProtocol};
use aegis_router::Protocol;

use crate::api::bad;
use crate::vm_request::{validate_vm, AsVmRequest, HostLimits};

/// Checks a ServeTarget.
pub fn validate(req: &CreateInstance, limits: &HostLimits) -> Result<(), ApiError> {
    validate_vm(&req.vm_request(), limits)?;
    if req.expose.is_empty() {
        return Err(bad(
            "an instance must expose at least one port, e.g. `--expose 8000:http`",
        ));
    }
    let mut guest = BTreeSet::new();
    let mut host = BTreeSet::new();
    for p in &req.expose {
        if p.guest_port == 0 {
            return Err(bad(
                "guest port 0 is not a port; name the port the app listens on",
            ));
        }
        if !guest.insert(p.guest_port) {
            return Err(bad(format!("guest port {} is exposed twice", p.guest_port)));
        }
        if let Some(h) = p.host_port.filter(|h| *h != 0) {
            if !host.insert(h) {
                return Err(bad(format!("host port {h} is used twice")));
            }
        }
    }
    if let Some(name) = &req.name {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-');
        if !ok {
            return Err(bad(format!(
                "invalid instance name '{name}': use 1-63 lowercase letters, digits and '-' \
                 (it becomes a host name on the router)"
            )));
        }
    }
    req.check_durations().map_err(bad)
}

pub(super) fn router_protocol(p: PortProtocol) -> Protocol {
    match p {
        PortProtocol::Http => Protocol::Http,
        PortProtocol::Tcp => Protocol::Tcp,
        PortProtocol::Grpc => Protocol::Grpc,
        PortProtocol::Websocket => Protocol::Websocket,
    }
}

pub(super) fn url(protocol: PortProtocol, port: u16) -> String {
    match protocol {
        PortProtocol::Http | PortProtocol::Grpc => format!("http://127.0.0.1:{port}"),
        PortProtocol::Websocket => format!("ws://127.0.0.1:{port}"),
        PortProtocol::Tcp => format!("tcp://127.0.0.1:{port}"),
    }
}
