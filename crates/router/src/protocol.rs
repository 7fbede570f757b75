//! The application protocols a ServeTarget port can declare. The protocol decides what the
//! router does while the instance wakes (see docs/ROUTER.md).

use std::fmt;
use std::str::FromStr;

/// How the router speaks to clients on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1. Browsers get a loading page during a wake, other clients are held.
    Http,
    /// Raw TCP. Connections are held silently during a wake, then spliced.
    Tcp,
    /// gRPC over HTTP/2 with prior knowledge (h2c). Requests are queued during a wake,
    /// honouring their `grpc-timeout`.
    Grpc,
    /// HTTP/1.1 whose clients open WebSockets. Like `Http`, but no loading page: an
    /// upgrade is held, then spliced.
    Websocket,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
            Protocol::Grpc => "grpc",
            Protocol::Websocket => "websocket",
        }
    }

    /// Whether requests on this protocol are HTTP (and may be routed by `Host`).
    pub fn is_http(self) -> bool {
        !matches!(self, Protocol::Tcp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?}: expected http, tcp, grpc or websocket")]
pub struct ParseProtocolError(pub String);

impl FromStr for Protocol {
    type Err = ParseProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Ok(Protocol::Http),
            "tcp" => Ok(Protocol::Tcp),
            "grpc" => Ok(Protocol::Grpc),
            "websocket" | "ws" => Ok(Protocol::Websocket),
            _ => Err(ParseProtocolError(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        for p in [
            Protocol::Http,
            Protocol::Tcp,
            Protocol::Grpc,
            Protocol::Websocket,
        ] {
            assert_eq!(p.as_str().parse::<Protocol>(), Ok(p));
            assert_eq!(p.to_string(), p.as_str());
        }
        assert_eq!("HTTP".parse::<Protocol>(), Ok(Protocol::Http));
        assert_eq!("ws".parse::<Protocol>(), Ok(Protocol::Websocket));
        let e = "udp".parse::<Protocol>().unwrap_err();
        assert!(e.to_string().contains("udp"), "{e}");
    }
}
