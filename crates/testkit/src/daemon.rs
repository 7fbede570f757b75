//! A real aegisd, in process, on the fake backend: the guest agent runs in-process and the
//! "guest" commands run as host processes, so the daemon's logic is tested in seconds
//! without QEMU. Real VMs are the `aegis-tests` crate's business.

use std::path::Path;
use std::sync::Arc;

use aegis_vmm::FakeBackend;
use aegisd::config::Config;
use aegisd::guest::{BootAssets, GuestAssets};
use aegisd::Daemon;

/// A daemon on the fake backend in a temporary home.
pub struct Fixture {
    pub daemon: Arc<Daemon>,
    /// The backend, to inject faults and look at the VMs it runs.
    pub fake: Arc<FakeBackend>,
    /// Removed on drop.
    pub home: tempfile::TempDir,
}

/// Starts a daemon on a new fake backend in a new temporary home.
pub async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

/// [`fixture`], letting `configure` change the daemon's config first (limits, caps).
pub async fn fixture_with(configure: impl FnOnce(&mut Config)) -> Fixture {
    let home = tempfile::tempdir().expect("temporary Aegis home");
    let fake = Arc::new(FakeBackend::new());
    let daemon = start_with(home.path(), &fake, configure).await;
    Fixture { daemon, fake, home }
}

/// Starts a daemon on `fake` in `home`: a second daemon on the same home plays a restart.
/// The router listens on a free loopback port; the guest artefacts are placeholders, which
/// the fake backend never reads.
pub async fn start(home: &Path, fake: &Arc<FakeBackend>) -> Arc<Daemon> {
    start_with(home, fake, |_| {}).await
}

/// [`start`], letting `configure` change the daemon's config first.
pub async fn start_with(
    home: &Path,
    fake: &Arc<FakeBackend>,
    configure: impl FnOnce(&mut Config),
) -> Arc<Daemon> {
    let mut config = Config::new(home.to_path_buf(), "fake")
        .unwrap_or_else(|e| panic!("daemon config for {}: {e}", home.display()));
    config.router_addr = "127.0.0.1:0".parse().expect("a socket address");
    configure(&mut config);
    let assets = BootAssets {
        kernel: "/dev/null".into(),
        initramfs: "/dev/null".into(),
        layers: vec!["/dev/null".into()],
    };
    let guest = GuestAssets::fixed(&config, assets);
    Daemon::start_with(config, fake.clone(), guest)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "start aegisd on the fake backend in {}: {e:#}",
                home.display()
            )
        })
}
