//! `aegis instance logs`.

use aegis_api::OutputEvent;

use crate::commands::run::stream_logs;
use crate::context::Context;
use crate::sink::Sink;

/// Print an instance's output (stdout to stdout, stderr to stderr), byte for byte.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The output of the served process is kept across pauses, terminations and wakes. Without
--follow, prints what was written so far and returns. With --follow, keeps printing for as
long as the instance exists (surviving a restart of the connection) and returns when it is
removed; Ctrl-C stops following without touching the instance.

Examples:
  aegis instance logs web
  aegis instance logs --follow web 2>/dev/null   # stdout only")]
pub struct Args {
    /// Keep printing new output until the instance is removed.
    #[arg(short, long)]
    follow: bool,
    /// The instance id or name.
    id: String,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    if args.follow {
        stream_logs(ctx.client(), &args.id, false).await?;
        eprintln!("aegis: instance {} was removed", args.id);
        return Ok(0);
    }
    let mut feed = ctx.client().instance_logs(&args.id, false, 0, 0).await?;
    let mut sink = Sink::default();
    while let Some(event) = feed.next_event().await? {
        if let OutputEvent::Output { stream, .. } = &event {
            let data = event.bytes().ok_or_else(|| {
                anyhow::anyhow!(
                    "aegisd sent output of instance {} that is not base64",
                    args.id
                )
            })?;
            sink.write(*stream, &data)?;
        }
    }
    Ok(0)
}
