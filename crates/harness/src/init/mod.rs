//! PID 1 of an Aegis microVM: boot the guest, then serve the host until it says Shutdown.
//!
//! Steps (docs/HARNESS.md has the long form): mount /dev /proc /sys in the initramfs, read
//! the `aegis.*` kernel arguments, find the disks by virtio-blk serial, assemble the overlay
//! root, switch into it (staying PID 1), finish the file system tree, bring `lo` up, open the
//! host channel and serve sessions with an [`aegis_harness::Agent`] until Shutdown, then
//! power off. Any failure on the way is printed on the console and powers the guest off.

mod channel;
mod cmdline;
mod console;
mod disks;
mod error;
mod mounts;
mod net;
mod power;
mod sys;
mod workspace;

use aegis_harness::{Agent, AgentConfig, SessionEnd};

pub use error::InitError;

use cmdline::BootArgs;
use error::Context as _;
use mounts::Layers;

/// Environment every process starts from (the request's env is applied on top).
fn base_env(hostname: &str) -> Vec<(String, String)> {
    [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/root"),
        ("USER", "root"),
        ("LOGNAME", "root"),
        ("SHELL", "/bin/sh"),
        ("TERM", "xterm-256color"),
        ("LANG", "C.UTF-8"),
        ("HOSTNAME", hostname),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn main() -> ! {
    if std::process::id() != 1 {
        eprintln!(
            "aegis-harness is the init (PID 1) of Aegis microVMs; it mounts disks and powers \
             the machine off, so it refuses to run as an ordinary process"
        );
        std::process::exit(2);
    }
    power::install_panic_hook();
    console::init();
    match boot() {
        Ok(layers) => power::off(Some(layers)),
        Err(e) => {
            console::say(&format!("FATAL: {e}"));
            power::off(None)
        }
    }
}

/// Everything from the initramfs to the end of the last session. Returns the layers for a
/// clean shutdown.
fn boot() -> Result<Layers, InitError> {
    if !sys::fd_is_open(2) {
        // No /dev/console in the initramfs: get one from devtmpfs for our messages.
        mounts::early()?;
        reopen_console();
    }
    mounts::early()?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").ctx("read", "/proc/cmdline")?;
    let args = cmdline::parse(&cmdline)?;
    console::set_debug(args.debug);
    console::say(&format!(
        "harness {} starting (kernel {})",
        env!("CARGO_PKG_VERSION"),
        sys::kernel_release()
    ));
    let disks = disks::find(&args)?;
    tracing::debug!(?disks, "disks");
    let layers = mounts::assemble(&disks)?;
    mounts::switch_root()?;
    mounts::finish_tree()?;
    workspace::mount(&args)?;
    setup_identity(&args)?;
    sys::umask(0o022);
    tracing::info!("root file system ready");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(InitError::Runtime)?;
    let served = runtime.block_on(serve(&args));
    // Do not wait for blocking work (an archive walk) that nobody will read any more.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    served?;
    Ok(layers)
}

fn setup_identity(args: &BootArgs) -> Result<(), InitError> {
    net::loopback_up().ctx("bring up the loopback interface", "lo")?;
    if let Err(e) = net::set_hostname(&args.hostname) {
        tracing::warn!("cannot set the host name: {e}");
    }
    mounts::write_host_files(args);
    Ok(())
}

/// Serves host sessions until one asks for Shutdown.
async fn serve(args: &BootArgs) -> Result<(), InitError> {
    let mut channel = channel::Channel::open(&args.channel)?;
    let agent = Agent::new(AgentConfig {
        pid1: true,
        base_env: base_env(&args.hostname),
        kernel_release: sys::kernel_release(),
        root: "/".into(),
    });
    loop {
        let stream = match channel.connect().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("host channel: {e}; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        tracing::info!("host connected");
        match agent.serve(stream).await {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Disconnected => continue,
        }
    }
}

/// Points stdin/stdout/stderr at /dev/console.
fn reopen_console() {
    use std::os::fd::AsRawFd;
    if let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which nothing else owns yet.
            unsafe { libc::dup2(console.as_raw_fd(), fd) };
        }
    }
}
