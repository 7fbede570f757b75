//! `aegis task rm`.

use crate::context::Context;
use crate::exit;

/// Remove ended tasks with their output and artifacts.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
A task that is still booting or running is refused unless --force is given, which cancels
it first. Prints each removed id.

Examples:
  aegis task rm task-1a2b3c task-4d5e6f
  aegis task rm --force task-1a2b3c")]
pub struct Args {
    /// Cancel tasks that are still running, then remove them.
    #[arg(short, long)]
    force: bool,
    /// The task ids.
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let client = ctx.client();
    let mut code = 0;
    for id in &args.ids {
        let result = async {
            if args.force {
                let task = client.get_task(id).await?;
                if !task.state.is_terminal() {
                    client.cancel_task(id).await?;
                }
            }
            client.delete_task(id).await
        }
        .await;
        match result {
            Ok(()) => println!("{id}"),
            Err(e) => {
                eprintln!("aegis: cannot remove task {id}: {e}");
                code = exit::AEGIS_ERROR;
            }
        }
    }
    Ok(code)
}
