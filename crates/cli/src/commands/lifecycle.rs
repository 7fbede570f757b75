//! `aegis pause|resume|stop` (and the same under `aegis instance`): move an instance's VM
//! to another state now instead of waiting for its timers or its next connection.

use aegis_api::Instance;

use crate::context::Context;

pub const PAUSE_HELP: &str = "\
The VM's vCPUs are stopped and its RAM kept; open connections stay open. The next connection
(or `aegis resume`) resumes it in milliseconds. Prints `<id> paused`.

Example:
  aegis pause web";

pub const RESUME_HELP: &str = "\
A paused VM is resumed; a terminated one is restored from its memory snapshot or booted.
Prints the new state, `<id> running`.

Example:
  aegis resume web";

pub const STOP_HELP: &str = "\
The VM is terminated and its RAM released, but the instance and its ports stay: the next
connection wakes it again (from its memory snapshot when one is cached). To remove the
instance, use `aegis instance rm`. Prints `<id> terminated`.

Example:
  aegis stop web";

/// What to do to the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Stop,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The instance id or name.
    id: String,
}

pub async fn run(ctx: &Context, args: Args, action: Action) -> anyhow::Result<i32> {
    let client = ctx.client();
    let instance: Instance = match action {
        Action::Pause => client.pause_instance(&args.id).await?,
        Action::Resume => client.resume_instance(&args.id).await?,
        Action::Stop => client.stop_instance(&args.id).await?,
    };
    println!("{} {}", instance.id, instance.state.as_str());
    Ok(0)
}
