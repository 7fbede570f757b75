//! `aegis task inspect`.

use crate::context::Context;

/// Print a task as JSON (state, exit code, error, timestamps, output sizes, artifacts).
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  aegis task inspect task-1a2b3c | jq -r .state")]
pub struct Args {
    /// The task id.
    id: String,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let task = ctx.client().get_task(&args.id).await?;
    println!("{}", serde_json::to_string_pretty(&task)?);
    Ok(0)
}
