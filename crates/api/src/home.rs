//! The Aegis home: one directory holding the daemon's socket, state, caches and VM data.
//!
//! Daemon, CLI, client and image builder all find their files here, and only here: every
//! location under the home is a method of [`AegisHome`], so the layout is written down once.
//!
//! ```text
//! <home>/aegisd.sock                  API socket (0600)
//! <home>/aegisd.pid, aegisd.lock      the running daemon; the lock keeps a second one out
//! <home>/aegisd.log                   daemon output when started by `aegis up`
//! <home>/config.toml                  daemon configuration: limits (optional; docs/CONFIG.md)
//! <home>/aegis.db                     registry (SQLite)
//! <home>/tasks/<id>/                  output and artifacts of a task
//! <home>/run/<vm-id>/                 a live VM's sockets, scratch disk, console log
//! <home>/cache/kernel/<hash>/         guest kernel, by config hash
//! <home>/cache/images/<name>/         built-in base images
//! <home>/cache/initramfs/<hash>/      harness initramfs, by harness hash
//! <home>/images/                      OCI blob store
//! <home>/layers/                      one read-only disk per OCI layer
//! <home>/workspaces/<name>/           workspace data
//! <home>/snapshots/<instance-id>/     memory snapshots of an instance (a cache)
//! <home>/instances/<instance-id>/     an instance's output log, which outlives its VMs
//! ```
//!
//! Which directory is the home ([`AegisHome::from_env`]): `$AEGIS_HOME` when it is set and
//! not empty, else `$HOME/.aegis`, else `.aegis` in the user's passwd home directory. An empty
//! `AEGIS_HOME` counts as unset (as `VAR= command` is commonly used to unset). A relative
//! path, from `AEGIS_HOME` or `--home`, is taken relative to the current directory and made
//! absolute at once, so the daemon, which may run elsewhere, sees the same directory.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Environment variable naming the Aegis home.
pub const HOME_ENV: &str = "AEGIS_HOME";
/// Directory under the user's home used when [`HOME_ENV`] is not set.
pub const DEFAULT_DIR_NAME: &str = ".aegis";

/// Why no Aegis home could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// Neither `AEGIS_HOME` nor a user home directory is known.
    #[error(
        "cannot find the Aegis home: AEGIS_HOME is not set and this user has no home directory \
         (no HOME, no passwd entry); set AEGIS_HOME or pass --home"
    )]
    NoUserHome,
    /// A relative home could not be made absolute.
    #[error(
        "cannot use {} as the Aegis home: it is relative and the current directory is \
         unknown ({source}); give an absolute path",
        path.display()
    )]
    NotAbsolute {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The Aegis home directory and the layout under it. Nothing is created by this type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AegisHome {
    root: PathBuf,
}

impl AegisHome {
    /// The home at `root`, taken as given (use [`AegisHome::at`] for a path from a user).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        AegisHome { root: root.into() }
    }

    /// The home at a path a user gave: a relative path is resolved against the current
    /// directory now (lexically: symlinks and `..` are kept).
    pub fn at(dir: impl AsRef<Path>) -> Result<Self, HomeError> {
        let dir = dir.as_ref();
        std::path::absolute(dir)
            .map(AegisHome::new)
            .map_err(|source| HomeError::NotAbsolute {
                path: dir.to_path_buf(),
                source,
            })
    }

    /// The home of this process: see the module documentation for the rule.
    pub fn from_env() -> Result<Self, HomeError> {
        choose(std::env::var_os(HOME_ENV).as_deref(), user_home)
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The home's path, for messages.
    pub fn display(&self) -> std::path::Display<'_> {
        self.root.display()
    }

    /// `<home>/aegisd.sock`: the daemon's API socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("aegisd.sock")
    }

    /// `<home>/aegisd.pid`: pid of the running daemon.
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("aegisd.pid")
    }

    /// `<home>/aegisd.lock`: held by the running daemon.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("aegisd.lock")
    }

    /// `<home>/aegisd.log`: where `aegis up` sends the daemon's output.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("aegisd.log")
    }

    /// `<home>/config.toml`: the daemon's configuration file (optional; `aegisd --config`
    /// reads another).
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// `<home>/aegis.db`: the registry.
    pub fn registry_db(&self) -> PathBuf {
        self.root.join("aegis.db")
    }

    /// `<home>/tasks`: one directory per task.
    pub fn tasks_dir(&self) -> PathBuf {
        self.root.join("tasks")
    }

    /// `<home>/tasks/<id>`: output and artifacts of task `id`.
    pub fn task_dir(&self, id: &str) -> PathBuf {
        self.tasks_dir().join(id)
    }

    /// `<home>/run`: one private directory per live VM.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// `<home>/run/<vm-id>`: sockets, scratch disk and console log of one VM.
    pub fn vm_run_dir(&self, vm_id: &str) -> PathBuf {
        self.run_dir().join(vm_id)
    }

    /// `<home>/cache`: guest artefacts Aegis builds, keyed by recipe hash.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// `<home>/cache/kernel`: `<hash>/vmlinux` per guest kernel config hash.
    pub fn kernel_cache_dir(&self) -> PathBuf {
        self.cache_dir().join("kernel")
    }

    /// `<home>/cache/images`: `<name>/rootfs.ext4` per built-in base image.
    pub fn base_images_dir(&self) -> PathBuf {
        self.cache_dir().join("images")
    }

    /// `<home>/cache/initramfs`: `<hash>/initramfs.cpio` per harness hash.
    pub fn initramfs_cache_dir(&self) -> PathBuf {
        self.cache_dir().join("initramfs")
    }

    /// `<home>/images`: the OCI blob store (blobs by digest, one record per reference).
    pub fn image_store_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// `<home>/layers`: the read-only disk of each OCI layer, derived from the blobs.
    pub fn layer_disks_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// Registry logins in the Docker `config.json` shape (docs/IMAGES.md).
    pub fn registry_auth_file(&self) -> PathBuf {
        self.root.join("auth.json")
    }

    /// `<home>/workspaces`: one directory per named workspace.
    pub fn workspaces_dir(&self) -> PathBuf {
        self.root.join("workspaces")
    }

    /// `<home>/workspaces/<name>`: the data of workspace `name`.
    pub fn workspace_dir(&self, name: &str) -> PathBuf {
        self.workspaces_dir().join(name)
    }

    /// `<home>/snapshots`: memory snapshots of serve-mode instances (a cache).
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// `<home>/snapshots/<instance-id>`: the snapshot of one instance.
    pub fn instance_snapshot_dir(&self, instance_id: &str) -> PathBuf {
        self.snapshots_dir().join(instance_id)
    }

    /// `<home>/instances`: one directory per instance (its output log).
    pub fn instances_dir(&self) -> PathBuf {
        self.root.join("instances")
    }

    /// `<home>/instances/<instance-id>`.
    pub fn instance_dir(&self, instance_id: &str) -> PathBuf {
        self.instances_dir().join(instance_id)
    }
}

/// Lets the home be passed where a path is expected (`create_dir`, `canonicalize`).
/// Locations under it have their own methods: do not join names onto it.
impl AsRef<Path> for AegisHome {
    fn as_ref(&self) -> &Path {
        &self.root
    }
}

impl From<PathBuf> for AegisHome {
    fn from(root: PathBuf) -> Self {
        AegisHome::new(root)
    }
}

impl From<&Path> for AegisHome {
    fn from(root: &Path) -> Self {
        AegisHome::new(root)
    }
}

/// The rule of [`AegisHome::from_env`], with the environment passed in so it is testable.
fn choose(
    aegis_home: Option<&OsStr>,
    user_home: impl FnOnce() -> Option<PathBuf>,
) -> Result<AegisHome, HomeError> {
    match aegis_home.filter(|v| !v.is_empty()) {
        Some(dir) => AegisHome::at(Path::new(dir)),
        None => {
            let user = user_home().ok_or(HomeError::NoUserHome)?;
            AegisHome::at(user.join(DEFAULT_DIR_NAME))
        }
    }
}

/// `$HOME` when set and not empty, else the passwd entry's home directory.
fn user_home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        // On unix `home_dir` reads $HOME, then the passwd entry: the fallback we want. Its
        // deprecation was about Windows only.
        .or_else(
            #[allow(deprecated)]
            std::env::home_dir,
        )
        .filter(|p| !p.as_os_str().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cwd() -> PathBuf {
        std::env::current_dir().unwrap()
    }

    #[test]
    fn an_absolute_aegis_home_is_used_as_it_is() {
        let home = choose(Some(OsStr::new("/srv/aegis")), || panic!("not consulted")).unwrap();
        assert_eq!(home.root(), Path::new("/srv/aegis"));
    }

    #[test]
    fn an_empty_aegis_home_counts_as_unset() {
        let home = choose(Some(OsStr::new("")), || Some("/home/u".into())).unwrap();
        assert_eq!(home.root(), Path::new("/home/u/.aegis"));
        let home = choose(None, || Some("/home/u".into())).unwrap();
        assert_eq!(home.root(), Path::new("/home/u/.aegis"));
    }

    #[test]
    fn a_relative_aegis_home_is_made_absolute_against_the_current_directory() {
        let home = choose(Some(OsStr::new("state/aegis")), || None).unwrap();
        assert_eq!(home.root(), cwd().join("state/aegis"));
        assert!(home.root().is_absolute());
        let home = AegisHome::at("./h").unwrap();
        assert_eq!(home.root(), cwd().join("h"));
    }

    #[test]
    fn a_relative_user_home_is_made_absolute_too() {
        let home = choose(None, || Some("u".into())).unwrap();
        assert_eq!(home.root(), cwd().join("u/.aegis"));
    }

    #[test]
    fn no_home_at_all_is_an_error_that_says_what_to_set() {
        let err = choose(Some(OsStr::new("")), || None).unwrap_err();
        assert!(matches!(err, HomeError::NoUserHome));
        assert!(
            err.to_string().contains("set AEGIS_HOME or pass --home"),
            "{err}"
        );
    }

    #[test]
    fn every_location_hangs_off_the_home() {
        let h = AegisHome::new("/h");
        let cases = [
            (h.socket(), "/h/aegisd.sock"),
            (h.pid_file(), "/h/aegisd.pid"),
            (h.lock_file(), "/h/aegisd.lock"),
            (h.log_file(), "/h/aegisd.log"),
            (h.config_file(), "/h/config.toml"),
            (h.registry_db(), "/h/aegis.db"),
            (h.task_dir("t1"), "/h/tasks/t1"),
            (h.vm_run_dir("vm-1"), "/h/run/vm-1"),
            (h.kernel_cache_dir(), "/h/cache/kernel"),
            (h.base_images_dir(), "/h/cache/images"),
            (h.initramfs_cache_dir(), "/h/cache/initramfs"),
            (h.image_store_dir(), "/h/images"),
            (h.layer_disks_dir(), "/h/layers"),
            (h.workspace_dir("w"), "/h/workspaces/w"),
            (h.instance_snapshot_dir("i1"), "/h/snapshots/i1"),
            (h.instance_dir("i1"), "/h/instances/i1"),
        ];
        for (got, want) in cases {
            assert_eq!(got, Path::new(want));
        }
    }
}
