//! Start-up, the shared daemon state, and clean shutdown.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aegis_registry::Registry;
use aegis_vmm::Backend;
use anyhow::{bail, Context};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::guest::GuestAssets;
use crate::instances::InstanceManager;
use crate::tasks::TaskManager;
use crate::workspaces::WorkspaceManager;

/// Everything a request handler or a task runner needs.
pub struct Daemon {
    pub config: Config,
    pub registry: Registry,
    pub backend: Arc<dyn Backend>,
    pub guest: GuestAssets,
    /// Pulled OCI images and their layer disks.
    pub images: Arc<crate::images::Images>,
    pub tasks: TaskManager,
    pub instances: InstanceManager,
    /// Apps and which release each serves.
    pub apps: crate::apps::AppManager,
    /// Named workspaces and who holds them.
    pub workspaces: WorkspaceManager,
    /// The router's thread-per-core workers (proxying stays off the API runtime and measured
    /// ~25% faster than tokio's work-stealing scheduler, see docs/ROUTER.md).
    pub router_workers: Arc<aegis_router::Workers>,
    /// Where the shared HTTP router port listens (set once it is bound).
    pub router_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// Cancelled when the daemon begins to shut down.
    pub shutdown: CancellationToken,
    /// Takes the places of `max_live_vms` one at a time.
    pub admission: crate::quotas::Admission,
}

impl Daemon {
    /// Builds the daemon state (directories, registry, reconciliation) without serving.
    pub async fn start(config: Config, backend: Arc<dyn Backend>) -> anyhow::Result<Arc<Daemon>> {
        let guest = GuestAssets::new(&config);
        Self::start_with(config, backend, guest).await
    }

    /// [`Daemon::start`] with explicit guest artefacts (tests with the fake backend).
    pub async fn start_with(
        config: Config,
        backend: Arc<dyn Backend>,
        guest: GuestAssets,
    ) -> anyhow::Result<Arc<Daemon>> {
        for dir in [
            config.home.root().to_path_buf(),
            config.home.run_dir(),
            config.home.tasks_dir(),
            config.home.workspaces_dir(),
        ] {
            create_private_dir(&dir)?;
        }
        let registry = Registry::open(&config.home.registry_db())
            .with_context(|| format!("cannot open the registry in {}", config.home.display()))?;
        crate::reconcile::reconcile(&config, &registry).await?;
        let images = crate::images::Images::open_with(&config.home, config.oci_limits())
            .with_context(|| format!("cannot open the image store in {}", config.home.display()))?;
        Ok(Arc::new(Daemon {
            images: Arc::new(images),
            tasks: TaskManager::default(),
            instances: InstanceManager::default(),
            apps: crate::apps::AppManager::default(),
            workspaces: WorkspaceManager::default(),
            router_workers: aegis_router::Workers::per_core()
                .context("cannot start the router worker threads")?,
            router_addr: std::sync::OnceLock::new(),
            config,
            registry,
            backend,
            guest,
            shutdown: CancellationToken::new(),
            admission: Default::default(),
        }))
    }

    /// Serves the API on `listener` until shutdown is requested, then stops every VM.
    pub async fn serve(self: &Arc<Self>, listener: UnixListener) -> anyhow::Result<()> {
        self.start_router().await?;
        self.instances.reload(self).await;
        let app = crate::api::router(self.clone());
        let token = self.shutdown.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await
            .context("API server failed")?;
        tokio::join!(
            self.tasks.shutdown(Duration::from_secs(20)),
            self.instances.shutdown(Duration::from_secs(20)),
        );
        Ok(())
    }

    /// Binds the shared HTTP router port (apps by `Host` name).
    pub async fn start_router(self: &Arc<Self>) -> anyhow::Result<()> {
        let addr = self.config.router_addr;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on the router address {addr}; choose another with --router-addr")
        })?;
        let bound = listener.local_addr()?;
        let _ = self.router_addr.set(bound);
        tracing::info!(addr = %bound, "shared HTTP router listening");
        if !bound.ip().is_loopback() {
            // The router has no authentication: whoever reaches this address reaches every
            // served app (docs/ROUTER.md, "Exposure").
            tracing::warn!(
                addr = %bound,
                "THE SHARED HTTP ROUTER LISTENS ON A NON-LOOPBACK ADDRESS: it has no \
                 authentication, so anyone who can reach {bound} can use every app served \
                 by name and wake its VMs. Use --router-addr 127.0.0.1:PORT unless you \
                 put access control in front of it"
            );
        }
        let resolver = Arc::new(crate::instances::NameResolver(Arc::downgrade(self)));
        tokio::spawn(aegis_router::serve_shared_http_on(
            self.router_workers.clone(),
            listener,
            resolver,
            self.shutdown.clone(),
        ));
        Ok(())
    }
}

/// The daemon's main: lock the home, open everything, serve until SIGTERM/SIGINT or
/// `POST /v1/shutdown`, then stop every VM and clean up.
pub async fn run(config: Config) -> anyhow::Result<()> {
    create_private_dir(config.home.root())?;
    let _lock = lock_home(&config)?;
    let report = aegis_vmm::host::probe();
    let options = aegis_vmm::BackendOptions {
        console_log_bytes: Some(config.limits.console_log_bytes),
        ..Default::default()
    };
    let backend = aegis_vmm::select::select(config.backend, &report, &options)
        .context("no usable VMM backend (run `aegis doctor` for details)")?;
    tracing::info!(backend = %backend.kind(), home = %config.home.display(), "starting aegisd");
    let daemon = Daemon::start(config.clone(), backend).await?;

    let socket = config.home.socket();
    match fs::remove_file(&socket) {
        Ok(()) => tracing::info!(socket = %socket.display(), "removed stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot remove stale socket {}: {e}", socket.display()),
    }
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {} to mode 0600", socket.display()))?;
    write_pid_file(&config)?;

    let token = daemon.shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            _ = token.cancelled() => {}
        }
        token.cancel();
    });

    let result = daemon.serve(listener).await;
    let _ = fs::remove_file(&socket);
    let _ = fs::remove_file(config.home.pid_file());
    tracing::info!("aegisd stopped");
    result
}

pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

/// An exclusive lock on the home: two daemons on one home would fight over every VM.
fn lock_home(config: &Config) -> anyhow::Result<fs::File> {
    use std::os::fd::AsRawFd;
    let path = config.home.lock_file();
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let pid = fs::read_to_string(config.home.pid_file()).unwrap_or_default();
        bail!(
            "another aegisd (pid {}) already runs for {}; stop it with `aegis down`",
            pid.trim(),
            config.home.display()
        );
    }
    Ok(file)
}

fn write_pid_file(config: &Config) -> anyhow::Result<()> {
    let path = config.home.pid_file();
    let tmp = path.with_extension("pid.tmp");
    let mut f =
        fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    writeln!(f, "{}", std::process::id())?;
    fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
