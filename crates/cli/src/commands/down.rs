//! `aegis down`: stop the daemon and every VM it runs.

use std::time::{Duration, Instant};

use aegis_client::Error;

use crate::context::Context;
use crate::daemon;

const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const TERM_TIMEOUT: Duration = Duration::from_secs(5);

/// Stop the Aegis daemon; every running task is cancelled.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Asks aegisd to shut down (it stops every VM) and waits until its process is gone, at most
30s; then it sends SIGTERM. Does nothing if the daemon is not running.

Example:
  aegis down")]
pub struct Args {}

pub async fn run(ctx: &Context, _args: Args) -> anyhow::Result<i32> {
    let client = ctx.client();
    let status = match client.status().await {
        Ok(status) => status,
        Err(Error::DaemonNotRunning { .. }) => {
            println!("aegisd is not running");
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    // The daemon that answered knows its pid best; its pid file says the same unless it is
    // stale or unreadable.
    let pid = i32::try_from(status.pid)
        .ok()
        .filter(|&p| p > 0)
        .or_else(|| daemon::read_pid(&ctx.home().pid_file()))
        .unwrap_or(0);
    match client.shutdown().await {
        Ok(()) => {}
        // It went away between the two requests: nothing left to ask.
        Err(e) if e.is_transient() => {}
        Err(e) => return Err(e.into()),
    }
    if pid <= 0 || wait_gone(pid, STOP_TIMEOUT).await {
        println!("aegisd stopped (pid {pid})");
        return Ok(0);
    }
    eprintln!(
        "aegis: aegisd (pid {pid}) did not stop within {}s of the shutdown request; sending SIGTERM",
        STOP_TIMEOUT.as_secs()
    );
    let _ = daemon::terminate(pid);
    if wait_gone(pid, TERM_TIMEOUT).await {
        println!("aegisd stopped (pid {pid})");
        return Ok(0);
    }
    anyhow::bail!(
        "aegisd (pid {pid}) is still running after a shutdown request and SIGTERM; see {} and \
         stop it with `kill -9 {pid}`",
        ctx.home().log_file().display()
    )
}

async fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while daemon::process_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}
