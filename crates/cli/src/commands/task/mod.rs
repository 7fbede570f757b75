//! `aegis task`: list, inspect, follow, cancel and remove tasks.

mod cancel;
mod inspect;
mod logs;
mod ls;
mod rm;

use crate::context::Context;

const AFTER_HELP: &str = "\
Examples:
  aegis task ls
  aegis task logs --follow task-1a2b3c
  aegis task inspect task-1a2b3c | jq .exit_code
  aegis task cancel task-1a2b3c
  aegis task rm --force $(aegis task ls --json | jq -r '.[].id')";

/// List, inspect, follow, cancel and remove tasks.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    #[command(alias = "list")]
    Ls(ls::Args),
    Inspect(inspect::Args),
    Logs(logs::Args),
    Cancel(cancel::Args),
    #[command(alias = "remove")]
    Rm(rm::Args),
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    match args.command {
        Command::Ls(a) => ls::run(ctx, a).await,
        Command::Inspect(a) => inspect::run(ctx, a).await,
        Command::Logs(a) => logs::run(ctx, a).await,
        Command::Cancel(a) => cancel::run(ctx, a).await,
        Command::Rm(a) => rm::run(ctx, a).await,
    }
}
