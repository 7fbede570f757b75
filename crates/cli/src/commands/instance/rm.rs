//! `aegis instance rm`.

use crate::context::Context;

/// Remove instances: their VMs, listeners, snapshots and logs.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Works in any state: a running VM is killed and its connections are closed. Prints each
removed id; exits 125 if any could not be removed (the others still are).

Examples:
  aegis instance rm web
  aegis instance rm $(aegis instance ls --json | jq -r '.[].id')")]
pub struct Args {
    /// The instance ids or names.
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let client = ctx.client();
    Ok(crate::commands::remove_each("instance", &args.ids, |id| client.delete_instance(id)).await)
}
