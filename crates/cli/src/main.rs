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

use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

use crate::context::Context;

const AFTER_HELP: &str = "\
Getting started:
  aegis setup                           build the guest kernel and base images (once)
  aegis up                              start the daemon
  aegis run -- echo \"hello from aegis\"  run a command in a fresh microVM
  aegis down                            stop the daemon and every VM

Exit codes: `aegis run` exits with the command's own exit code; 125 means aegis itself failed
(daemon not running, bad arguments, VM failure), 124 a task timeout, 130/143 an interrupt.
See docs/CLI.md for the full reference.";

/// Run commands in isolated, disposable microVMs.
#[derive(Debug, Parser)]
#[command(name = "aegis", version, after_help = AFTER_HELP, max_term_width = 100)]
struct Cli {
    /// Aegis home: daemon socket, logs, caches and task data [default: $AEGIS_HOME, else
    /// ~/.aegis].
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(commands::run::Args),
    Task(commands::task::Args),
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
    let ctx = Context::new(cli.home.unwrap_or_else(aegis_client::default_home));
    let code = match dispatch(&ctx, cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aegis: {}", render::error_line(&e));
            exit::AEGIS_ERROR
        }
    };
    std::process::exit(code);
}

fn dispatch(ctx: &Context, command: Command) -> anyhow::Result<i32> {
    // Setup is long, blocking work: it runs on this thread, outside any async runtime.
    if let Command::Setup(args) = command {
        return commands::setup::run(ctx, args);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match command {
            Command::Run(args) => commands::run::run(ctx, args).await,
            Command::Task(args) => commands::task::run(ctx, args).await,
            Command::Up(args) => commands::up::run(ctx, args).await,
            Command::Down(args) => commands::down::run(ctx, args).await,
            Command::Status(args) => commands::status::run(ctx, args).await,
            Command::Doctor(args) => commands::doctor::run(ctx, args).await,
            Command::Setup(_) => unreachable!("handled above"),
        }
    })
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
}
