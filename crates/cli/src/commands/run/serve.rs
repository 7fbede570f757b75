//! `aegis run --expose ...`: serve mode. The command becomes an instance (a ServeTarget plus
//! its state) instead of a task: aegisd listens on every exposed port at once, and the VM
//! boots when the first connection arrives, pauses and terminates when idle, and wakes again
//! on the next connection. Attached, `run` follows the server's output until Ctrl-C, which
//! removes the instance.

use aegis_api::Instance;
use aegis_client::{Client, FollowItem};
use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use super::Args;
use crate::context::Context;
use crate::exit;
use crate::render;
use crate::sink::Sink;

pub async fn run(ctx: &Context, args: &Args) -> anyhow::Result<i32> {
    let client = ctx.client();
    let request = args.instance_request();
    if args.detach {
        let instance = client.create_instance(&request).await?;
        for line in serving_lines(&instance) {
            eprintln!("aegis: {line}");
        }
        println!("{}", instance.id);
        return Ok(0);
    }

    // Installed before the instance exists, so an early Ctrl-C still removes it.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;

    let instance = client.create_instance(&request).await?;
    let id = instance.id.clone();
    for line in serving_lines(&instance) {
        eprintln!("aegis: {line}");
    }
    eprintln!(
        "aegis: instance {}; Ctrl-C to stop and remove it",
        label(&instance)
    );
    let interrupted = tokio::select! {
        result = stream_logs(client, &id, true) => {
            result?;
            eprintln!("aegis: instance {id} was removed");
            return Ok(0);
        }
        _ = sigint.recv() => exit::SIGINT,
        _ = sigterm.recv() => exit::SIGTERM,
    };
    match client.delete_instance(&id).await {
        Ok(()) => eprintln!("aegis: instance {id} removed"),
        Err(e) if e.is_not_found() => eprintln!("aegis: instance {id} was removed"),
        Err(e) => eprintln!(
            "aegis: cannot remove instance {id}: {e}; remove it with `aegis instance rm {id}`"
        ),
    }
    Ok(interrupted)
}

/// `<id> (<name>)`, or the id alone when the instance is named by its id.
fn label(instance: &Instance) -> String {
    if instance.name.is_empty() || instance.name == instance.id {
        instance.id.clone()
    } else {
        format!("{} ({})", instance.id, instance.name)
    }
}

/// `serving <proto> on <url> -> guest port <n>`, one per endpoint.
pub fn serving_lines(instance: &Instance) -> Vec<String> {
    instance
        .endpoints
        .iter()
        .map(|e| {
            format!(
                "serving {} on {} -> guest port {}",
                e.protocol.as_str(),
                e.url,
                e.guest_port
            )
        })
        .collect()
}

/// Copy the logs of instance `id` to our stdout/stderr, byte for byte, resuming after lost
/// connections, until the instance is deleted. `missing_is_gone`: an instance that does not
/// exist (404) even at the first request has been deleted already, rather than being an
/// error (for an instance we just created).
pub async fn stream_logs(client: &Client, id: &str, missing_is_gone: bool) -> anyhow::Result<()> {
    let mut follower = client.follow_instance_logs(id, 0, 0);
    let mut sink = Sink::default();
    loop {
        let item = match follower.next().await {
            Ok(item) => item,
            Err(e) if missing_is_gone && e.is_not_found() => return Ok(()),
            // A transient error here means the daemon stayed unreachable for the whole
            // reconnect window; anything else is the daemon's own answer.
            Err(e) if !e.is_transient() => return Err(e.into()),
            Err(e) => anyhow::bail!(
                "lost the logs of instance {id} ({}); it may still be serving: follow them with \
                 `aegis instance logs --follow {id}`, remove it with `aegis instance rm {id}`",
                render::chain(&e)
            ),
        };
        match item {
            Some(FollowItem::Output { stream, data }) => sink
                .write(stream, &data)
                .context("cannot write the instance's output")?,
            Some(FollowItem::Gone) | Some(FollowItem::End(_)) | None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_api::{CreateInstance, Endpoint, InstanceState, PortProtocol, WakeStats};

    #[test]
    fn one_line_per_endpoint() {
        let endpoint = |guest_port, host_port, protocol: PortProtocol, scheme| Endpoint {
            guest_port,
            host_port,
            protocol,
            url: format!("{scheme}://127.0.0.1:{host_port}"),
        };
        let instance = Instance {
            id: "inst-1".into(),
            name: "web".into(),
            state: InstanceState::Terminated,
            target: CreateInstance::default(),
            endpoints: vec![
                endpoint(8000, 41234, PortProtocol::Http, "http"),
                endpoint(5432, 41235, PortProtocol::Tcp, "tcp"),
            ],
            created_at: String::new(),
            last_active_at: String::new(),
            active_connections: 0,
            snapshot_cached: false,
            stats: WakeStats::default(),
            last_error: None,
            guest_kernel: None,
        };
        assert_eq!(label(&instance), "inst-1 (web)");
        let unnamed = Instance {
            name: "inst-1".into(),
            ..instance.clone()
        };
        assert_eq!(label(&unnamed), "inst-1");
        assert_eq!(
            serving_lines(&instance),
            [
                "serving http on http://127.0.0.1:41234 -> guest port 8000",
                "serving tcp on tcp://127.0.0.1:41235 -> guest port 5432"
            ]
        );
    }
}
