//! `aegis status`: is the daemon running, and with what.

use aegis_api::Status;
use aegis_client::Error;

use crate::context::Context;
use crate::exit;

/// Show whether aegisd is running, its backend and capabilities.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Shows the shared router address, where the HTTP ports of instances are reached by name
(`curl -H 'Host: web' http://127.0.0.1:PORT/`), and the limits in force (the daemon's
config.toml over the defaults; docs/CONFIG.md names every key). Exits 0 when the daemon answers, 1 when it is not running. With --json, prints the daemon's
`GET /v1/status` object, or {\"status\": \"not_running\", \"socket\": ...}.

Examples:
  aegis status
  aegis status --json | jq -r .backend")]
pub struct Args {
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    match ctx.client().status().await {
        Ok(status) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", describe(&status));
            }
            Ok(0)
        }
        Err(Error::DaemonNotRunning { socket }) => {
            if args.json {
                let v = serde_json::json!({"status": "not_running", "socket": socket});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "aegisd: not running (no socket at {}); start it with `aegis up`",
                    socket.display()
                );
            }
            Ok(exit::CHECK_FAILED)
        }
        Err(e) => Err(e.into()),
    }
}

fn describe(s: &Status) -> String {
    let c = &s.capabilities;
    let yes = |b: bool| if b { "yes" } else { "no" };
    format!(
        "aegisd: {} (pid {}, version {})\n\
         home: {}\n\
         backend: {} (accelerator {})\n\
         capabilities: pause {}, memory snapshot {}, vsock {}, virtio-fs {}\n\
         tasks running: {}\n\
         instances: {}\n",
        s.status,
        s.pid,
        s.version,
        s.home,
        s.backend,
        c.accelerator,
        yes(c.pause),
        yes(c.memory_snapshot),
        yes(c.vsock),
        yes(c.virtio_fs),
        s.tasks_running,
        s.instances
    ) + &router_line(s)
        + &limits_lines(s)
}

/// The limits in force, each under its `config.toml` key, when the daemon says.
fn limits_lines(s: &Status) -> String {
    let Some(l) = &s.limits else {
        return String::new();
    };
    let b = crate::render::bytes;
    [
        "limits ([limits] in config.toml):".to_string(),
        format!(
            "  max_live_vms {}, max_instances {}, max_exposed_ports {}",
            l.max_live_vms, l.max_instances, l.max_exposed_ports
        ),
        format!(
            "  instance_log_bytes {} (+ {} rotated files), task_output_bytes {}, \
             console_log_bytes {}",
            b(l.instance_log_bytes),
            l.instance_log_rotated_files,
            b(l.task_output_bytes),
            b(l.console_log_bytes)
        ),
        format!(
            "  max_blob_bytes {}, max_layer_unpacked_bytes {}, max_artifact_bytes {}",
            b(l.max_blob_bytes),
            b(l.max_layer_unpacked_bytes),
            b(l.max_artifact_bytes)
        ),
        format!("  free_disk_reserve_bytes {}", b(l.free_disk_reserve_bytes)),
    ]
    .iter()
    .map(|line| format!("{line}\n"))
    .collect()
}

/// Where HTTP instances are reached by name, when the daemon says.
fn router_line(s: &Status) -> String {
    if s.router_addr.is_empty() {
        String::new()
    } else {
        format!(
            "router: http://{} (HTTP instances by `Host: <name>`)\n",
            s.router_addr
        )
    }
}
