//! `aegis up`: start the daemon in the background.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aegis_client::{Client, Error};
use anyhow::Context as _;

use crate::context::Context;
use crate::daemon;
use crate::exit;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(50);
const TAIL_LINES: usize = 20;

const AFTER_HELP: &str = "\
Starts aegisd detached from this terminal, with its output appended to <home>/aegisd.log,
and waits until it answers (at most 30s). Does nothing if it is already running.

aegisd is looked for in $AEGIS_DAEMON, then beside the aegis executable, then on PATH.

The shared HTTP router (apps by Host name) listens on 127.0.0.1:8099 unless --router-addr
(or $AEGIS_ROUTER_ADDR) says otherwise. It has no authentication: an address other than
loopback lets everyone who reaches it use every served app, and `aegis up` warns about it.

Examples:
  aegis up
  aegis up --backend qemu
  aegis up --router-addr 127.0.0.1:8080
  AEGIS_HOME=/tmp/aegis-test aegis up --backend fake   (test builds of aegisd only)";

/// Start the Aegis daemon (aegisd) in the background.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// VMM backend; "auto" picks the fastest one that can boot guests on this host (see
    /// `aegis doctor`).
    #[arg(long, value_name = "BACKEND", value_parser = ["auto", "qemu", "firecracker", "libkrun", "fake"])]
    backend: Option<String>,
    /// Address of the shared HTTP router (default 127.0.0.1:8099, or $AEGIS_ROUTER_ADDR).
    /// It has no authentication: keep it on loopback unless something guards it.
    #[arg(long, value_name = "IP:PORT")]
    router_addr: Option<std::net::SocketAddr>,
}

/// The warning to print when the router listens where other hosts can reach it.
fn router_warning(router_addr: &str) -> Option<String> {
    let addr: std::net::SocketAddr = router_addr.parse().ok()?;
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "aegis: WARNING: the shared HTTP router listens on {addr}, which is not a loopback \
             address, and it has no authentication: anyone who can reach it can use every app \
             served by name and wake its VMs. Restart with `aegis down && aegis up \
             --router-addr 127.0.0.1:{}` unless access to it is controlled (docs/ROUTER.md)",
            addr.port()
        )
    })
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    match ctx.client().status().await {
        Ok(status) => {
            println!(
                "aegisd is already running (pid {}, backend {})",
                status.pid, status.backend
            );
            if let Some(warning) = router_warning(&status.router_addr) {
                eprintln!("{warning}");
            }
            if let Some(wanted) = args
                .router_addr
                .filter(|a| a.to_string() != status.router_addr && a.port() != 0)
            {
                eprintln!(
                    "aegis: the running daemon's router listens on {}, not {wanted}; run \
                     `aegis down` first to change it",
                    status.router_addr
                );
            }
            if let Some(wanted) = args
                .backend
                .filter(|b| *b != "auto" && *b != status.backend)
            {
                eprintln!(
                    "aegis: the running daemon uses backend {}, not {wanted}; run `aegis down` \
                     first to change it",
                    status.backend
                );
            }
            return Ok(0);
        }
        Err(Error::DaemonNotRunning { .. }) => {}
        Err(e) => return Err(e.into()),
    }

    let program = daemon::find_executable("aegisd", "AEGIS_DAEMON").map_err(anyhow::Error::msg)?;
    let home = ctx.home();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)
        .with_context(|| format!("cannot create the Aegis home {}", home.display()))?;
    let log_path = ctx.home().log_file();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);

    let mut command = Command::new(&program);
    command.arg("--home").arg(home.root());
    if let Some(backend) = &args.backend {
        command.arg("--backend").arg(backend);
    }
    if let Some(addr) = &args.router_addr {
        command.arg("--router-addr").arg(addr.to_string());
    }
    command
        // Its log is a file: escape codes would only clutter it.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .context("cannot duplicate the log file handle")?,
        )
        .stderr(log);
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2),
    // which is async-signal-safe; it allocates nothing and touches no shared state.
    unsafe {
        command.pre_exec(|| {
            // A session of its own: no controlling terminal, no SIGHUP or Ctrl-C from ours.
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let pid = child.id();

    let probe =
        Client::new(ctx.client().socket().to_path_buf()).with_timeout(Duration::from_secs(2));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(status) = probe.status().await {
            println!(
                "aegisd started (pid {}, backend {})",
                status.pid, status.backend
            );
            if let Some(warning) = router_warning(&status.router_addr) {
                eprintln!("{warning}");
            }
            return Ok(0);
        }
        if let Some(how) = child
            .try_wait()
            .context("cannot watch the aegisd process")?
        {
            eprintln!(
                "aegis: aegisd exited during start-up ({how}); last lines of {}:",
                log_path.display()
            );
            print_tail(&log_path, log_start);
            return Ok(exit::AEGIS_ERROR);
        }
        if Instant::now() >= deadline {
            let _ = daemon::terminate(i32::try_from(pid).unwrap_or(i32::MAX));
            eprintln!(
                "aegis: aegisd (pid {pid}) did not answer on {} within {}s and was stopped; \
                 last lines of {}:",
                probe.socket().display(),
                READY_TIMEOUT.as_secs(),
                log_path.display()
            );
            print_tail(&log_path, log_start);
            return Ok(exit::AEGIS_ERROR);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn print_tail(log: &std::path::Path, from: u64) {
    let tail = daemon::log_tail(log, from, TAIL_LINES);
    if tail.is_empty() {
        eprintln!("  (nothing)");
    }
    for line in tail {
        eprintln!("  {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_router_beyond_loopback_is_warned_about() {
        for quiet in ["127.0.0.1:8099", "[::1]:8099", "127.0.0.2:80", ""] {
            assert_eq!(router_warning(quiet), None, "{quiet}");
        }
        for loud in ["0.0.0.0:8099", "192.168.1.5:80", "[::]:8099"] {
            let w = router_warning(loud).expect(loud);
            assert!(w.contains("no authentication") && w.contains(loud), "{w}");
        }
    }
}
