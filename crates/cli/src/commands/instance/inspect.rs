//! `aegis instance inspect`.

use crate::context::Context;

/// Print an instance as JSON (state, ServeTarget, endpoints, activity, wake counters, and
/// what keeps it awake).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
`awake_because` says why the instance has not paused: open connections by guest port and
protocol, running execs and other holders, live leases, and the idle timers (`pauses_in_ms`,
`terminates_in_ms`; null while something keeps the instance awake or no timer applies).

Examples:
  aegis instance inspect web | jq -r .state
  aegis instance inspect web | jq .awake_because
  aegis instance inspect inst-1a2b3c | jq -r '.endpoints[0].url'")]
pub struct Args {
    /// The instance id or name.
    id: String,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let client = ctx.client();
    let instance = client.get_instance(&args.id).await?;
    let mut value = serde_json::to_value(&instance)?;
    // A daemon without `/awake` (older) still gets its instance printed.
    match client.awake_because(&instance.id).await {
        Ok(awake) => {
            if let Some(map) = value.as_object_mut() {
                map.insert("awake_because".into(), serde_json::to_value(awake)?);
            }
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(0)
}
