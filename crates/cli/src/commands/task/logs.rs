//! `aegis task logs`.

use aegis_api::OutputEvent;

use crate::commands::run::stream_output;
use crate::context::Context;
use crate::sink::Sink;

/// Print a task's output (stdout to stdout, stderr to stderr), byte for byte.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Without --follow, prints what the task wrote so far and returns. With --follow, keeps
printing until the task ends (and survives a restart of the connection); Ctrl-C stops
following without touching the task.

Examples:
  aegis task logs task-1a2b3c
  aegis task logs --follow task-1a2b3c 2>/dev/null   # stdout only")]
pub struct Args {
    /// Keep printing new output until the task ends.
    #[arg(short, long)]
    follow: bool,
    /// The task id.
    id: String,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    if args.follow {
        stream_output(ctx.client(), &args.id).await?;
        return Ok(0);
    }
    let mut feed = ctx.client().task_output(&args.id, false, 0, 0).await?;
    let mut sink = Sink::default();
    while let Some(event) = feed.next_event().await? {
        if let OutputEvent::Output { stream, .. } = &event {
            let data = event.bytes().ok_or_else(|| {
                anyhow::anyhow!("aegisd sent output of task {} that is not base64", args.id)
            })?;
            sink.write(*stream, &data)?;
        }
    }
    Ok(0)
}
