//! `aegis`: the command-line interface of Aegis.
//!
//! Every command lives in its own file under `commands/`. Commands return the process exit
//! code; errors travel as `anyhow` up to [`main`], which prints them as one line
//! (`aegis: <what happened>; <what to do>`) and exits 125.

mod commands;
mod context;
mod daemon;
mod exit;
mod parse;
mod progress;
mod render;
mod sink;
mod stdin;
mod terminal;

use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

use crate::context::Context;

const AFTER_HELP: &str = "\
Getting started:
  aegis setup                           build the guest kernel and base images (once)
  aegis up                              start the daemon
  aegis run -- echo \"hello from aegis\"  run a command in a fresh microVM
  aegis run --expose 8000:http -- python3 -m http.server 8000
                                        serve a port: the VM wakes on connection and
                                        pauses, then terminates, when idle
  aegis instance ls                     list served instances and their state
  aegis down                            stop the daemon and every VM

Exit codes: `aegis run` exits with the command's own exit code; 125 means aegis itself failed
(daemon not running, bad arguments, VM failure), 124 a task timeout, 130/143 an interrupt.
See docs/CLI.md for the full reference.";

/// Run commands and servers in isolated microVMs that scale to zero.
#[derive(Debug, Parser)]
#[command(name = "aegis", version, after_help = AFTER_HELP, max_term_width = 100)]
struct Cli {
    /// Aegis home: daemon socket, logs, caches and task data [default: $AEGIS_HOME, else
    /// ~/.aegis]. A relative path is taken from the current directory.
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(Box<commands::run::Args>),
    Task(commands::task::Args),
    /// Run a command in an instance's VM next to its server.
    Exec(commands::exec::Args),
    Instance(commands::instance::Args),
    App(commands::app::Args),
    Image(commands::image::Args),
    Workspace(commands::workspace::Args),
    /// Terminate an instance's VM but keep the instance: the next connection wakes it.
    #[command(after_help = commands::lifecycle::STOP_HELP)]
    Stop(commands::lifecycle::Args),
    /// Pause an instance's VM now: vCPUs stopped, RAM kept.
    #[command(after_help = commands::lifecycle::PAUSE_HELP)]
    Pause(commands::lifecycle::Args),
    /// Wake an instance now rather than on its next connection.
    #[command(after_help = commands::lifecycle::RESUME_HELP)]
    Resume(commands::lifecycle::Args),
    /// Copy files between the host and an instance (INSTANCE:/path), either way.
    #[command(after_help = commands::cp::HELP)]
    Cp(commands::cp::Args),
    Up(commands::up::Args),
    Down(commands::down::Args),
    Status(commands::status::Args),
    Doctor(commands::doctor::Args),
    Setup(commands::setup::Args),
}

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let words: Vec<String> = args[1..]
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            std::process::exit(usage_error(e, &words))
        }
    };
    if let Err(message) = check(&cli) {
        let words: Vec<String> = args[1..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let command = render::command_path(&Cli::command(), &words);
        eprintln!("aegis: {message}; see `{command} --help`");
        std::process::exit(exit::AEGIS_ERROR);
    }
    let home = match &cli.home {
        Some(dir) => aegis_api::AegisHome::at(dir),
        None => aegis_api::AegisHome::from_env(),
    };
    let ctx = match home {
        Ok(home) => Context::new(home),
        Err(e) => {
            eprintln!("aegis: {e}");
            std::process::exit(exit::AEGIS_ERROR);
        }
    };
    let code = match dispatch(&ctx, cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aegis: {}", render::error_line(&e));
            exit::AEGIS_ERROR
        }
    };
    std::process::exit(code);
}

/// Checks across arguments that clap cannot make, before anything runs.
fn check(cli: &Cli) -> Result<(), String> {
    match &cli.command {
        Command::Run(args) => args.check(),
        _ => Ok(()),
    }
}

fn dispatch(ctx: &Context, command: Command) -> anyhow::Result<i32> {
    // Setup is long, blocking work: it runs on this thread, outside any async runtime.
    if let Command::Setup(args) = command {
        return commands::setup::run(ctx, args);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        match command {
            Command::Run(args) => commands::run::run(ctx, *args).await,
            Command::Task(args) => commands::task::run(ctx, args).await,
            Command::Exec(args) => commands::exec::run(ctx, args).await,
            Command::Instance(args) => commands::instance::run(ctx, args).await,
            Command::App(args) => commands::app::run(ctx, args).await,
            Command::Image(args) => commands::image::run(ctx, args).await,
            Command::Workspace(args) => commands::workspace::run(ctx, args).await,
            Command::Stop(args) => {
                commands::lifecycle::run(ctx, args, commands::lifecycle::Action::Stop).await
            }
            Command::Pause(args) => {
                commands::lifecycle::run(ctx, args, commands::lifecycle::Action::Pause).await
            }
            Command::Resume(args) => {
                commands::lifecycle::run(ctx, args, commands::lifecycle::Action::Resume).await
            }
            Command::Cp(args) => commands::cp::run(ctx, args).await,
            Command::Up(args) => commands::up::run(ctx, args).await,
            Command::Down(args) => commands::down::run(ctx, args).await,
            Command::Status(args) => commands::status::run(ctx, args).await,
            Command::Doctor(args) => commands::doctor::run(ctx, args).await,
            Command::Setup(_) => unreachable!("handled above"),
        }
    });
    // Our stdin, forwarded to a guest command, is read on a blocking thread that may still sit
    // in read() on a terminal nobody types into: exit without waiting for it.
    runtime.shutdown_background();
    result
}

/// Print a command-line error as one line (help and version as they are) and return the
/// exit code: 0 for help/version, 125 otherwise (like `docker run`).
fn usage_error(e: clap::Error, args: &[String]) -> i32 {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            exit::AEGIS_ERROR
        }
        _ => {
            let command = render::command_path(&Cli::command(), args);
            eprintln!(
                "aegis: {}",
                render::clap_error_line(&e.to_string(), &command)
            );
            exit::AEGIS_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("aegis").chain(args.iter().copied()))
    }

    #[test]
    fn run_takes_the_command_verbatim_after_its_options() {
        let cli = parse(&[
            "run",
            "--image",
            "busybox",
            "-e",
            "A=1",
            "--memory",
            "1G",
            "--timeout",
            "1m",
            "--",
            "sh",
            "-c",
            "echo --image",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.command, ["sh", "-c", "echo --image"]);
        assert_eq!(args.memory, Some(1024));
        assert_eq!(args.timeout, Some(60));
        assert_eq!(args.env, [("A".to_string(), "1".to_string())]);

        // Without `--`, everything from the first word on is the command.
        let cli = parse(&["run", "ls", "-la", "--cpus", "2"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.command, ["ls", "-la", "--cpus", "2"]);
        assert_eq!(args.cpus, None);
    }

    #[test]
    fn bad_values_are_refused_before_anything_runs() {
        for args in [
            &["run", "--memory", "0", "--", "true"][..],
            &["run", "--memory", "-5", "--", "true"],
            &["run", "--timeout", "0", "--", "true"],
            &["run", "--cpus", "0", "--", "true"],
            &["run", "--env", "1X=2", "--", "true"],
            &["run", "--workdir", "rel", "--", "true"],
            &["run"],
        ] {
            let e = parse(args).unwrap_err();
            assert_ne!(e.kind(), ErrorKind::DisplayHelp, "{args:?}");
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let command = render::command_path(&Cli::command(), &args);
            let line = render::clap_error_line(&e.to_string(), &command);
            assert!(!line.contains('\n'), "{line}");
            assert!(line.contains("aegis run --help"), "{args:?}: {line}");
        }
    }

    #[test]
    fn home_is_global() {
        let cli = parse(&["task", "ls", "--home", "/h"]).unwrap();
        assert_eq!(cli.home, Some(PathBuf::from("/h")));
    }

    #[test]
    fn expose_turns_run_into_serve_mode() {
        let cli = parse(&[
            "run",
            "--expose",
            "8000:http",
            "--expose",
            "8080:80:tcp",
            "--name",
            "web",
            "--idle-policy",
            "idle",
            "--pause-after",
            "10s",
            "--terminate-after",
            "1h",
            "--wake-timeout",
            "90s",
            "--no-loading-page",
            "-d",
            "python3",
            "-m",
            "http.server",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!()
        };
        assert!(args.serves());
        assert_eq!(args.command, ["python3", "-m", "http.server"]);
        assert_eq!(args.expose.len(), 2);
        assert_eq!(args.expose[1].host_port, Some(8080));
        assert_eq!(args.name.as_deref(), Some("web"));
        assert_eq!(
            (args.pause_after, args.terminate_after, args.wake_timeout),
            (Some(10), Some(3600), Some(90))
        );
        assert!(args.no_loading_page && args.detach);
        assert_eq!(args.check(), Ok(()));
    }

    #[test]
    fn serve_options_need_expose_and_task_options_refuse_it() {
        for args in [
            &["run", "--name", "web", "--", "true"][..],
            &["run", "--pause-after", "1m", "--", "true"],
            &["run", "--no-loading-page", "--", "true"],
        ] {
            let err = check(&parse(args).unwrap()).unwrap_err();
            assert!(err.contains("is for serve mode only"), "{args:?}: {err}");
        }
        for args in [
            &["run", "--expose", "80", "--timeout", "1m", "--", "true"][..],
            &["run", "--expose", "80", "--artifact", "/out", "--", "true"],
            &["run", "--expose", "0", "--", "true"],
            &["run", "--expose", "80:udp", "--", "true"],
            &["run", "--expose", "99999", "--", "true"],
            &[
                "run",
                "--expose",
                "80",
                "--idle-policy",
                "never",
                "--",
                "true",
            ],
            &["run", "--expose", "80", "--wake-timeout", "0", "--", "true"],
            &["run", "--expose", "80", "--pause-after", "0", "--", "true"],
            &["run", "--expose", "80", "--name", "Web", "--", "true"],
            &["run", "--expose", "80", "--name", "a b", "--", "true"],
        ] {
            let e = parse(args).unwrap_err();
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let command = render::command_path(&Cli::command(), &args);
            let line = render::clap_error_line(&e.to_string(), &command);
            assert!(!line.contains('\n'), "{line}");
            assert!(line.contains("aegis run --help"), "{args:?}: {line}");
        }
        // A guest port twice is only seen once all values are parsed.
        let cli = parse(&["run", "--expose", "80", "--expose", "80:tcp", "--", "x"]).unwrap();
        let err = check(&cli).unwrap_err();
        assert!(err.contains("guest port 80 is already exposed"), "{err}");
    }

    #[test]
    fn lifecycle_shortcuts_and_instance_subcommands_parse() {
        for args in [
            &["stop", "web"][..],
            &["pause", "web"],
            &["resume", "inst-1"],
            &["instance", "ls", "--json"],
            &["instance", "list"],
            &["instance", "inspect", "web"],
            &["instance", "logs", "-f", "web"],
            &["instance", "stop", "web"],
            &["instance", "rm", "a", "b"],
        ] {
            parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert!(parse(&["stop"]).is_err());
        assert!(parse(&["instance", "rm"]).is_err());
    }
}
