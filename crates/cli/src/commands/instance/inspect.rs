//! `aegis instance inspect`.

use crate::context::Context;

/// Print an instance as JSON (state, ServeTarget, endpoints, activity, wake counters).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  aegis instance inspect web | jq -r .state
  aegis instance inspect inst-1a2b3c | jq -r '.endpoints[0].url'")]
pub struct Args {
    /// The instance id or name.
    id: String,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let instance = ctx.client().get_instance(&args.id).await?;
    println!("{}", serde_json::to_string_pretty(&instance)?);
    Ok(0)
}
