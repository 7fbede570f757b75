//! `aegis instance`: list, inspect, follow, lease, pause, resume, stop and remove serve-mode
//! instances.

mod inspect;
mod lease;
mod logs;
mod ls;
mod rm;

use crate::commands::lifecycle::{self, Action};
use crate::context::Context;

const AFTER_HELP: &str = "\
An instance is what `aegis run --expose ...` creates: a ServeTarget (command, exposed ports,
idle policy and timers) and its state: booting, running, paused (RAM kept, resumes in
milliseconds) or terminated (no VM; the next connection restores or boots it). An instance is
named by its id or its name.

Examples:
  aegis instance ls
  aegis instance logs --follow web
  aegis instance inspect web | jq .endpoints
  aegis instance inspect web | jq .awake_because
  aegis instance lease web -- ./work.sh
  aegis instance pause web; aegis instance resume web; aegis instance stop web
  aegis instance rm web";

/// List, inspect, follow, lease, pause, resume, stop and remove serve-mode instances.
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
    Lease(lease::Args),
    Leases(lease::ListArgs),
    Logs(logs::Args),
    /// Pause an instance's VM now: vCPUs stopped, RAM kept (same as `aegis pause`).
    #[command(after_help = lifecycle::PAUSE_HELP)]
    Pause(lifecycle::Args),
    /// Wake an instance now rather than on its next connection (same as `aegis resume`).
    #[command(after_help = lifecycle::RESUME_HELP)]
    Resume(lifecycle::Args),
    /// Terminate an instance's VM but keep the instance: the next connection wakes it
    /// (same as `aegis stop`).
    #[command(after_help = lifecycle::STOP_HELP)]
    Stop(lifecycle::Args),
    #[command(alias = "remove")]
    Rm(rm::Args),
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    match args.command {
        Command::Ls(a) => ls::run(ctx, a).await,
        Command::Inspect(a) => inspect::run(ctx, a).await,
        Command::Lease(a) => lease::run(ctx, a).await,
        Command::Leases(a) => lease::list(ctx, a).await,
        Command::Logs(a) => logs::run(ctx, a).await,
        Command::Pause(a) => lifecycle::run(ctx, a, Action::Pause).await,
        Command::Resume(a) => lifecycle::run(ctx, a, Action::Resume).await,
        Command::Stop(a) => lifecycle::run(ctx, a, Action::Stop).await,
        Command::Rm(a) => rm::run(ctx, a).await,
    }
}
