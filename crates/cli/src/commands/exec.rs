//! `aegis exec`: run a command in an instance's VM next to its server, with its stdout,
//! stderr and exit code as `aegis run` gives them; `aegis exec logs` follows a detached one.

use aegis_api::{CreateExec, Exec, ExecState};
use aegis_client::{Client, ExecItem};
use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use crate::context::Context;
use crate::exit;
use crate::parse;
use crate::render;
use crate::sink::Sink;

const AFTER_HELP: &str = "\
The instance is woken first if it is paused or terminated (as a connection wakes it), and it
stays awake while the command runs. stdout and stderr arrive separately on aegis's own; stdin
is forwarded when it is not a terminal, or always with -i; its end is the command's EOF.
With -t the command runs on a terminal in the guest (sized as ours, resized with it) and our
terminal is in raw mode until aegis exits: keys, Ctrl-C included, go to the command.
Ctrl-C (SIGINT) and SIGTERM are passed on to the command; a second Ctrl-C leaves it running
and exits 130.

Exit codes: the command's own; 127 command not found, 126 not executable, 128+N killed by
signal N; 125 when aegis itself failed (no such instance, the VM stopped, daemon not running).

Examples:
  aegis exec web -- ls -l /srv
  printf 'print(6*7)' | aegis exec web -- python3 -
  aegis exec -it web -- bash
  aegis exec -e LOG=debug -w /srv -u nobody web -- ./check.sh
  id=$(aegis exec --detach web -- make test); aegis exec logs --follow \"$id\"

See docs/EXEC.md.";

#[derive(Debug, clap::Args)]
#[command(
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    #[command(subcommand)]
    logs: Option<Sub>,

    /// Forward stdin even when it is a terminal.
    #[arg(short = 'i', long)]
    interactive: bool,

    /// Run the command on a terminal in the guest (shells, editors, REPLs): our terminal is
    /// put in raw mode (Ctrl-C goes to the command) and its size follows ours. Needs a
    /// terminal on stdin; stdout and stderr arrive as one stream, the screen.
    #[arg(short = 't', long, conflicts_with = "detach")]
    tty: bool,

    /// Set an environment variable for the command; `KEY` alone passes this shell's value.
    /// Repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse::env_pair)]
    env: Vec<(String, String)>,

    /// Working directory of the command in the guest [default: /].
    #[arg(short = 'w', long, value_name = "DIR", value_parser = parse::guest_path)]
    workdir: Option<String>,

    /// Run the command as USER[:GROUP] (names from the guest's /etc/passwd, or numbers)
    /// [default: root].
    #[arg(short = 'u', long, value_name = "USER[:GROUP]")]
    user: Option<String>,

    /// Print the exec id and return at once; follow it with `aegis exec logs --follow ID`.
    #[arg(short = 'd', long, conflicts_with = "interactive")]
    detach: bool,

    /// The instance id or name.
    #[arg(value_name = "INSTANCE", required = true)]
    instance: Option<String>,

    /// The command and its arguments (after `--`).
    #[arg(trailing_var_arg = true, value_name = "COMMAND", required = true)]
    command: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Print the output of an exec (stdout and stderr apart); with --follow, until it ends.
    Logs(LogsArgs),
}

#[derive(Debug, clap::Args)]
struct LogsArgs {
    /// Follow the output until the exec ends, resuming after a lost connection.
    #[arg(short = 'f', long)]
    follow: bool,

    /// The exec id (printed by `aegis exec --detach`).
    id: String,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let client = ctx.client();
    if let Some(Sub::Logs(logs)) = args.logs {
        return print_logs(client, &logs).await;
    }
    let instance = args.instance.clone().unwrap_or_default();
    let tty = if args.tty {
        let Some((rows, cols)) = crate::terminal::size() else {
            anyhow::bail!("-t needs a terminal on stdin; leave -t out to pipe input");
        };
        Some(aegis_api::TtySize { rows, cols })
    } else {
        None
    };
    let forward_stdin = tty.is_some() || (!args.detach && crate::stdin::wanted(args.interactive));
    let request = CreateExec {
        command: args.command,
        env: with_term(args.env, tty.is_some()),
        workdir: args.workdir,
        user: args.user,
        stdin: forward_stdin,
        tty,
    };
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut sigwinch = signal(SignalKind::window_change()).context("cannot handle SIGWINCH")?;
    let exec = client.create_exec(&instance, &request).await?;
    if args.detach {
        println!("{}", exec.id);
        return Ok(0);
    }
    if forward_stdin && !exec.state.is_ended() {
        let (client, id) = (client.clone(), exec.id.clone());
        tokio::spawn(async move {
            if let Err(e) = client.upload_exec_stdin(&id, crate::stdin::chunks()).await {
                eprintln!("aegis: cannot forward stdin to exec {id}: {e}");
            }
        });
    }
    // Restored when this function returns, whichever way: before anything more is printed.
    let raw = match tty {
        Some(_) if !exec.state.is_ended() => {
            Some(crate::terminal::RawMode::enter().context("cannot put the terminal in raw mode")?)
        }
        _ => None,
    };
    let follow = follow(client, &exec.id);
    tokio::pin!(follow);
    let mut interrupts = 0;
    loop {
        tokio::select! {
            ended = &mut follow => {
                drop(raw);
                return Ok(outcome(&ended?));
            }
            // Our terminal went away: leave; the end of our input hangs the guest's up.
            _ = sighup.recv() => return Ok(128 + libc::SIGHUP),
            _ = sigwinch.recv() => {
                if let Some((rows, cols)) = crate::terminal::size() {
                    let _ = client.resize_exec(&exec.id, rows, cols).await;
                }
            }
            _ = sigint.recv() => {
                interrupts += 1;
                if interrupts > 1 {
                    eprintln!("aegis: exec {} left running; follow it with `aegis exec logs --follow {}`", exec.id, exec.id);
                    return Ok(exit::SIGINT);
                }
                pass_signal(client, &exec.id, libc::SIGINT).await;
            }
            _ = sigterm.recv() => pass_signal(client, &exec.id, libc::SIGTERM).await,
        }
    }
}

async fn pass_signal(client: &Client, id: &str, signal: i32) {
    if let Err(e) = client.signal_exec(id, signal).await {
        // An exec that just ended cannot be signalled; its end is reported by the follower.
        if !e.is_not_found() && e.api_code() != Some(aegis_api::ErrorCode::Conflict) {
            eprintln!("aegis: cannot signal exec {id}: {e}");
        }
    }
}

/// Copies the exec's output to ours until it ends; the exec as it ended.
async fn follow(client: &Client, id: &str) -> anyhow::Result<Exec> {
    let mut follower = client.follow_exec(id, 0, 0);
    let mut sink = Sink::default();
    loop {
        match follower.next().await.map_err(|e| {
            anyhow::anyhow!(
                "lost the output of exec {id} ({}); it may still be running: follow it with \
                 `aegis exec logs --follow {id}`",
                render::chain(&e)
            )
        })? {
            ExecItem::Output { stream, data } => sink
                .write(stream, &data)
                .context("cannot write the exec's output")?,
            ExecItem::End(exec) => return Ok(*exec),
        }
    }
}

/// Says why an exec failed (if it did) and picks the exit code.
fn outcome(exec: &Exec) -> i32 {
    match exec.state {
        ExecState::Exited => {
            if let Some(error) = &exec.error {
                eprintln!("aegis: {error}");
            }
            exec.exit_code.map(exit::clamp).unwrap_or(exit::AEGIS_ERROR)
        }
        ExecState::Failed | ExecState::Running => {
            eprintln!(
                "aegis: exec {} failed: {}",
                exec.id,
                exec.error.as_deref().unwrap_or("unknown error")
            );
            exit::AEGIS_ERROR
        }
    }
}

async fn print_logs(client: &Client, args: &LogsArgs) -> anyhow::Result<i32> {
    if args.follow {
        follow(client, &args.id).await?;
        return Ok(0);
    }
    let mut feed = client.exec_output(&args.id, false, 0, 0).await?;
    let mut sink = Sink::default();
    while let Some(event) = feed.next_event().await? {
        if let aegis_api::OutputEvent::Output { stream, .. } = &event {
            let data = event
                .bytes()
                .context("the daemon sent output that is not base64")?;
            sink.write(*stream, &data)
                .context("cannot write the exec's output")?;
        }
    }
    Ok(0)
}

/// With a terminal, the command learns what kind it is, as over ssh or `docker exec -t`: our
/// own `TERM` (or `xterm` when we have none) unless `-e TERM=...` set one. Full-screen
/// programs (vim, top, less) need it.
fn with_term(mut env: Vec<(String, String)>, tty: bool) -> Vec<(String, String)> {
    if tty && !env.iter().any(|(k, _)| k == "TERM") {
        let term = std::env::var("TERM")
            .ok()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "xterm".to_string());
        env.push(("TERM".to_string(), term));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(state: ExecState, code: Option<i32>) -> Exec {
        Exec {
            id: "exec-1".into(),
            instance: "inst-1".into(),
            command: vec!["x".into()],
            state,
            exit_code: code,
            error: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
            created_at: String::new(),
        }
    }

    #[test]
    fn exit_codes_are_the_commands_or_125() {
        assert_eq!(outcome(&exec(ExecState::Exited, Some(3))), 3);
        assert_eq!(outcome(&exec(ExecState::Exited, Some(127))), 127);
        assert_eq!(outcome(&exec(ExecState::Failed, None)), 125);
    }

    #[test]
    fn a_terminal_gets_a_term_unless_one_was_given() {
        let given = vec![("TERM".to_string(), "vt100".to_string())];
        assert_eq!(with_term(given.clone(), true), given);
        assert!(with_term(vec![], false).is_empty());
        let added = with_term(vec![], true);
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].0, "TERM");
        assert!(!added[0].1.is_empty());
    }
}
