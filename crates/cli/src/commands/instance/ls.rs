//! `aegis instance ls`.

use std::time::SystemTime;

use aegis_api::{Endpoint, Instance};

use crate::context::Context;
use crate::render;

/// List serve-mode instances, oldest first.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Columns: ID NAME STATE CONNS LAST-ACTIVE ENDPOINTS. STATE is booting, running, paused or
terminated; CONNS the connections open now; LAST-ACTIVE the last connection or traffic;
ENDPOINTS each exposed port as HOST-ADDRESS->GUEST-PORT/PROTOCOL. With --json, the array of
instance objects of `GET /v1/instances` (the fields of `aegis instance inspect`).

Examples:
  aegis instance ls
  aegis instance ls --json | jq -r '.[] | select(.state == \"paused\") | .name'")]
pub struct Args {
    /// Print the instances as a JSON array.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let instances = ctx.client().list_instances().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&instances)?);
    } else {
        print!("{}", table(&instances, SystemTime::now()));
    }
    Ok(0)
}

fn table(instances: &[Instance], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                i.name.clone(),
                i.state.as_str().to_string(),
                i.active_connections.to_string(),
                if i.last_active_at.is_empty() {
                    "-".to_string()
                } else {
                    render::age(&i.last_active_at, now)
                },
                endpoints(&i.endpoints),
            ]
        })
        .collect();
    render::table(
        &["ID", "NAME", "STATE", "CONNS", "LAST-ACTIVE", "ENDPOINTS"],
        &rows,
    )
}

/// `127.0.0.1:41234->8000/http, 127.0.0.1:41235->5432/tcp`, as `docker ps` shows ports.
fn endpoints(endpoints: &[Endpoint]) -> String {
    if endpoints.is_empty() {
        return "-".into();
    }
    endpoints
        .iter()
        .map(|e| {
            // The authority of the URL; the loopback address when it has none.
            let address = e
                .url
                .split_once("://")
                .map(|(_, rest)| rest.split('/').next().unwrap_or(rest).to_string())
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| format!("127.0.0.1:{}", e.host_port));
            format!("{address}->{}/{}", e.guest_port, e.protocol.as_str())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_api::{CreateInstance, InstanceState, PortProtocol, WakeStats};

    fn instance() -> Instance {
        Instance {
            id: "inst-1".into(),
            name: "web".into(),
            state: InstanceState::Paused,
            target: CreateInstance::default(),
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
                    url: "tcp://127.0.0.1:41235/".into(),
                },
            ],
            created_at: "2025-01-01T00:00:00Z".into(),
            last_active_at: "2025-01-01T00:00:30Z".into(),
            active_connections: 2,
            snapshot_cached: false,
            stats: WakeStats::default(),
            last_error: None,
            guest_kernel: None,
        }
    }

    #[test]
    fn a_row_per_instance() {
        let now = humantime::parse_rfc3339("2025-01-01T00:05:30Z").unwrap();
        let out = table(&[instance()], now);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["ID", "NAME", "STATE", "CONNS", "LAST-ACTIVE", "ENDPOINTS"]
        );
        assert_eq!(
            lines[1],
            "inst-1   web    paused   2       5m ago        \
             127.0.0.1:41234->8000/http, 127.0.0.1:41235->5432/tcp"
        );
        assert_eq!(table(&[], now).lines().count(), 1);
    }

    #[test]
    fn endpoints_without_a_url_or_at_all() {
        let mut e = instance().endpoints;
        e[0].url = String::new();
        assert_eq!(endpoints(&e[..1]), "127.0.0.1:41234->8000/http");
        assert_eq!(endpoints(&[]), "-");
        let mut never = instance();
        never.last_active_at = String::new();
        let now = humantime::parse_rfc3339("2025-01-01T00:05:30Z").unwrap();
        assert!(table(&[never], now).contains(" -  "));
    }
}
