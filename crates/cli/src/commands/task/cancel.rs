//! `aegis task cancel`.

use crate::context::Context;

/// Cancel a running task: its VM is killed and the task ends `cancelled`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  aegis task cancel task-1a2b3c")]
pub struct Args {
    /// The task id.
    id: String,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let task = ctx.client().cancel_task(&args.id).await?;
    println!("{} {}", task.id, task.state.as_str());
    Ok(0)
}
