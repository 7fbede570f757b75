//! `aegis instance lease`: hold an activity lease while this command runs, and
//! `aegis instance leases`: list the live ones.

use std::process::ExitStatus;
use std::time::Duration;

use aegis_api::{CreateLease, Lease};
use aegis_client::Client;
use anyhow::{bail, Context as _};
use tokio::signal::unix::{signal, SignalKind};

use crate::context::Context;
use crate::render;

/// Keep an instance awake while this command runs: hold a lease, renew it, release it on exit.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Creates a lease on the instance (waking it if it is paused or terminated), renews it every
--renew-every, and releases it when this command ends: when COMMAND exits (its exit code is
returned), or, without a COMMAND, on Ctrl-C or SIGTERM. While any lease is live the idle timers
neither pause nor terminate the instance; if this process dies without releasing, the lease
expires after --ttl. A lease lost to a daemon restart is created again at the next renewal.

Examples:
  aegis instance lease web -- ./run-benchmark.sh
  aegis instance lease --ttl 5m --holder nightly web & LEASE=$!
  ...work against the instance...
  kill $LEASE   # releases the lease")]
pub struct Args {
    /// The instance id or name.
    instance: String,
    /// How long the lease lives if it is not renewed (1s to 24h).
    #[arg(long, default_value = "60s", value_parser = parse_secs)]
    ttl: u64,
    /// How often to renew it; a third of --ttl by default. Must be shorter than --ttl.
    #[arg(long, value_parser = parse_secs)]
    renew_every: Option<u64>,
    /// A label shown by `aegis instance inspect` (default: aegis-cli:<pid>).
    #[arg(long)]
    holder: Option<String>,
    /// Print the lease as JSON on stdout once it is held.
    #[arg(long)]
    json: bool,
    /// A command to run while the lease is held; its exit code becomes this command's.
    #[arg(last = true)]
    command: Vec<String>,
}

/// List the live leases of an instance.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Columns: ID HOLDER TTL EXPIRES-IN. With --json, the array of `GET /v1/instances/{id}/leases`.

Examples:
  aegis instance leases web
  aegis instance leases web --json | jq -r '.[].holder'")]
pub struct ListArgs {
    /// The instance id or name.
    instance: String,
    /// Print the leases as a JSON array.
    #[arg(long)]
    json: bool,
}

fn parse_secs(s: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration ({e}); write e.g. 30s, 5m or 1h"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("'{s}' is shorter than 1s"));
    }
    Ok(d.as_secs())
}

/// The renewal period: `renew_every`, or a third of the TTL (at least 1 s).
fn renew_period(ttl: u64, renew_every: Option<u64>) -> anyhow::Result<Duration> {
    let every = renew_every.unwrap_or((ttl / 3).max(1));
    if every >= ttl {
        bail!(
            "--renew-every {every}s is not shorter than --ttl {ttl}s: the lease would expire between renewals; renew more often"
        );
    }
    Ok(Duration::from_secs(every))
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let period = renew_period(args.ttl, args.renew_every)?;
    let client = ctx.client();
    let request = CreateLease {
        ttl_secs: i64::try_from(args.ttl).unwrap_or(i64::MAX),
        holder: Some(
            args.holder
                .clone()
                .unwrap_or_else(|| format!("aegis-cli:{}", std::process::id())),
        ),
    };
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut lease = client
        .create_lease(&args.instance, &request)
        .await
        .with_context(|| format!("cannot lease instance {}", args.instance))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&lease)?);
    }
    eprintln!(
        "aegis: holding lease {} on {} (ttl {}s, renewed every {}s)",
        lease.id,
        args.instance,
        args.ttl,
        period.as_secs()
    );
    let mut child = match args.command.split_first() {
        Some((program, rest)) => Some(
            tokio::process::Command::new(program)
                .args(rest)
                .spawn()
                .with_context(|| format!("cannot run {program}"))?,
        ),
        None => None,
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut gone = false;
    let code = loop {
        tokio::select! {
            status = wait(&mut child) => break exit_code(status?),
            // With a command, the terminal's Ctrl-C reaches it too: wait for it to end.
            _ = sigint.recv(), if child.is_none() => break 130,
            _ = sigterm.recv() => match &child {
                Some(c) => forward_sigterm(c),
                None => break 143,
            },
            _ = ticks.tick(), if !gone => match renew(client, &args.instance, &request, &lease).await {
                Renewed::Held(held) => lease = held,
                Renewed::InstanceGone => {
                    gone = true;
                    if child.is_none() {
                        break 125;
                    }
                }
            },
        }
    };
    if gone {
        return Ok(code);
    }
    match client.release_lease(&args.instance, &lease.id).await {
        Ok(()) => {}
        // Gone already (expired, instance removed, daemon restarted): nothing holds it.
        Err(e) if e.is_not_found() => {}
        Err(e) => eprintln!(
            "aegis: cannot release lease {} ({e}); it expires by itself within {}s",
            lease.id, args.ttl
        ),
    }
    Ok(code)
}

enum Renewed {
    Held(Lease),
    /// The instance was removed: there is nothing left to keep awake.
    InstanceGone,
}

/// Renews `lease`; creates a new one if the daemon lost it (a restart), and keeps the old one
/// on a transient error (the next tick retries; the TTL leaves room for a few).
async fn renew(client: &Client, instance: &str, request: &CreateLease, lease: &Lease) -> Renewed {
    match client.renew_lease(instance, &lease.id, None).await {
        Ok(renewed) => Renewed::Held(renewed),
        Err(e) if e.is_not_found() => {
            eprintln!("aegis: lease {} is gone ({e}); taking a new one", lease.id);
            match client.create_lease(instance, request).await {
                Ok(new) => Renewed::Held(new),
                Err(e) if e.is_not_found() => {
                    eprintln!("aegis: {e}; no longer leasing it");
                    Renewed::InstanceGone
                }
                Err(e) => {
                    eprintln!("aegis: cannot lease instance {instance} again ({e}); retrying");
                    Renewed::Held(lease.clone())
                }
            }
        }
        Err(e) => {
            eprintln!("aegis: cannot renew lease {} ({e}); retrying", lease.id);
            Renewed::Held(lease.clone())
        }
    }
}

async fn wait(child: &mut Option<tokio::process::Child>) -> anyhow::Result<ExitStatus> {
    match child {
        Some(c) => c.wait().await.context("cannot wait for the command"),
        None => std::future::pending().await,
    }
}

fn forward_sigterm(child: &tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped) and a valid
        // signal number; it touches no memory of ours.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// The command's exit code; 128 + the signal for one killed by a signal (as a shell reports).
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(125)
}

pub async fn list(ctx: &Context, args: ListArgs) -> anyhow::Result<i32> {
    let leases = ctx.client().list_leases(&args.instance).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&leases)?);
    } else {
        print!("{}", table(&leases));
    }
    Ok(0)
}

fn table(leases: &[Lease]) -> String {
    let rows: Vec<Vec<String>> = leases
        .iter()
        .map(|l| {
            vec![
                l.id.clone(),
                l.holder.clone().unwrap_or_else(|| "-".into()),
                format!("{}s", l.ttl_secs),
                format!("{}s", l.expires_in_ms.div_ceil(1000)),
            ]
        })
        .collect();
    render::table(&["ID", "HOLDER", "TTL", "EXPIRES-IN"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_renewal_periods() {
        assert_eq!(parse_secs("90s"), Ok(90));
        assert_eq!(parse_secs("5m"), Ok(300));
        assert!(parse_secs("500ms").unwrap_err().contains("shorter than 1s"));
        assert!(parse_secs("soon").unwrap_err().contains("not a duration"));
        assert_eq!(renew_period(60, None).unwrap(), Duration::from_secs(20));
        assert_eq!(renew_period(2, None).unwrap(), Duration::from_secs(1));
        assert_eq!(renew_period(60, Some(5)).unwrap(), Duration::from_secs(5));
        let e = renew_period(1, None).unwrap_err().to_string();
        assert!(e.contains("not shorter than --ttl 1s"), "{e}");
    }
}
