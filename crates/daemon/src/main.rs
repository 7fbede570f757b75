//! `aegisd`: the Aegis daemon.

use std::path::PathBuf;

use aegis_api::AegisHome;
use anyhow::Context;
use clap::Parser;

/// The Aegis daemon: serves the API on `<home>/aegisd.sock` and runs microVMs.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Aegis home (state, caches, socket) [default: $AEGIS_HOME, else ~/.aegis]. A relative
    /// path is taken from the current directory.
    #[arg(long)]
    home: Option<PathBuf>,
    /// VMM backend: auto, qemu, firecracker, libkrun, or fake (test builds only: the `fake`
    /// cargo feature).
    #[arg(long, env = "AEGIS_BACKEND", default_value = "auto")]
    backend: String,
    /// Address of the shared HTTP router port (apps by Host name); port 0 picks a free one.
    /// The router has no authentication: an address other than loopback is logged as a
    /// warning at start-up (docs/ROUTER.md, "Exposure").
    #[arg(long, env = "AEGIS_ROUTER_ADDR", default_value = aegisd::config::DEFAULT_ROUTER_ADDR)]
    router_addr: std::net::SocketAddr,
    /// The configuration file (limits; docs/CONFIG.md) [default: <home>/config.toml, used
    /// only if it exists]. A file named here must exist. An unknown key stops the daemon.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AEGIS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let home = match &args.home {
        Some(dir) => AegisHome::at(dir)?,
        None => AegisHome::from_env()?,
    };
    let file = args.config.clone().unwrap_or_else(|| home.config_file());
    let limits = aegisd::config_file::load(&file, args.config.is_some())?;
    let mut config = aegisd::config::Config::new(home, &args.backend)?;
    config.router_addr = args.router_addr;
    config.limits = limits;
    config.config_file = file;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(aegisd::run(config))
}
